//! COS request signing, `q-sign-algorithm=sha1` (reference §6).

use crate::encoding::{hmac_sha1, sha1_hex, uri_encode};

/// What goes into a COS signature.
#[derive(Debug, Clone)]
pub struct CosRequest<'a> {
    pub method: &'a str,
    /// The **decoded** path, e.g. `/exampleobject(腾讯云)`.
    pub path: &'a str,
    /// Query parameters to sign, decoded (`("acl", "")` for `?acl`).
    pub params: &'a [(&'a str, &'a str)],
    /// Headers to sign, decoded.
    pub headers: &'a [(&'a str, &'a str)],
}

/// A computed COS signature and the lists that go beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosSignature {
    pub key_time: String,
    pub header_list: String,
    pub url_param_list: String,
    pub http_string: String,
    pub string_to_sign: String,
    pub signature: String,
}

impl CosSignature {
    /// The `Authorization` header value (or, URL-encoded, the presigned query string).
    pub fn authorization(&self, secret_id: &str) -> String {
        format!(
            "q-sign-algorithm=sha1&q-ak={secret_id}&q-sign-time={kt}&q-key-time={kt}&q-header-list={}&q-url-param-list={}&q-signature={}",
            self.header_list,
            self.url_param_list,
            self.signature,
            kt = self.key_time,
        )
    }
}

/// Lower-cases and encodes keys, encodes values, sorts by key; returns `(k=v&…, k;…)`.
fn canonical_pairs(pairs: &[(&str, &str)]) -> (String, String) {
    let mut encoded: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (uri_encode(&k.to_lowercase()), uri_encode(v)))
        .collect();
    encoded.sort();
    let joined = encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let list = encoded
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    (joined, list)
}

/// Signs a COS request for the key time `start;end` with the given (temporary) secret key.
pub fn sign(secret_key: &str, start: i64, end: i64, req: &CosRequest<'_>) -> CosSignature {
    let key_time = format!("{start};{end}");
    let sign_key = hex::encode(hmac_sha1(secret_key.as_bytes(), key_time.as_bytes()));
    let (http_params, url_param_list) = canonical_pairs(req.params);
    let (http_headers, header_list) = canonical_pairs(req.headers);
    let http_string = format!(
        "{}\n{}\n{http_params}\n{http_headers}\n",
        req.method.to_lowercase(),
        req.path
    );
    let string_to_sign = format!("sha1\n{key_time}\n{}\n", sha1_hex(http_string.as_bytes()));
    let signature = hex::encode(hmac_sha1(sign_key.as_bytes(), string_to_sign.as_bytes()));
    CosSignature {
        key_time,
        header_list,
        url_param_list,
        http_string,
        string_to_sign,
        signature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_ID: &str = "AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q";
    const SECRET_KEY: &str = "BQYIM75p8x0iWVFSIgqEKwFprpRSVHlz";
    const HOST: &str = "examplebucket-1250000000.cos.ap-beijing.myqcloud.com";
    const PATH: &str = "/exampleobject(腾讯云)";

    #[test]
    fn put_vector() {
        let headers = [
            ("Date", "Thu, 16 May 2019 06:45:51 GMT"),
            ("Content-Type", "text/plain"),
            ("Content-Length", "13"),
            ("Content-MD5", "mQ/fVh815F3k6TAUm8m0eg=="),
            ("x-cos-acl", "private"),
            ("x-cos-grant-read", "uin=\"100000000011\""),
            ("Host", HOST),
        ];
        let req = CosRequest {
            method: "PUT",
            path: PATH,
            params: &[],
            headers: &headers,
        };
        let sig = sign(SECRET_KEY, 1557989151, 1557996351, &req);
        assert_eq!(
            hex::encode(hmac_sha1(SECRET_KEY.as_bytes(), b"1557989151;1557996351")),
            "eb2519b498b02ac213cb1f3d1a3d27a3b3c9bc5f"
        );
        assert_eq!(
            sig.header_list,
            "content-length;content-md5;content-type;date;host;x-cos-acl;x-cos-grant-read"
        );
        assert_eq!(
            sig.string_to_sign,
            "sha1\n1557989151;1557996351\n8b2751e77f43a0995d6e9eb9477f4b685cca4172\n"
        );
        assert_eq!(sig.signature, "3b8851a11a569213c17ba8fa7dcf2abec6935172");
    }

    #[test]
    fn get_vector() {
        let headers = [("Date", "Thu, 16 May 2019 06:55:53 GMT"), ("Host", HOST)];
        let params = [
            ("response-content-type", "application/octet-stream"),
            ("response-cache-control", "max-age=600"),
        ];
        let req = CosRequest {
            method: "GET",
            path: PATH,
            params: &params,
            headers: &headers,
        };
        let sig = sign(SECRET_KEY, 1557989753, 1557996953, &req);
        assert_eq!(
            hex::encode(hmac_sha1(SECRET_KEY.as_bytes(), b"1557989753;1557996953")),
            "937914bf490e9e8c189836aad2052e4feeb35eaf"
        );
        assert_eq!(
            sig.url_param_list,
            "response-cache-control;response-content-type"
        );
        assert_eq!(
            sig.string_to_sign,
            "sha1\n1557989753;1557996953\n54ecfe22f59d3514fdc764b87a32d8133ea611e6\n"
        );
        assert_eq!(
            sig.authorization(SECRET_ID),
            "q-sign-algorithm=sha1&q-ak=AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q&q-sign-time=1557989753;1557996953&q-key-time=1557989753;1557996953&q-header-list=date;host&q-url-param-list=response-cache-control;response-content-type&q-signature=01681b8c9d798a678e43b685a9f1bba0f6c0e012"
        );
    }

    #[test]
    fn token_vector() {
        let headers = [("Host", HOST), ("x-cos-security-token", "TOKEN123")];
        let params = [
            ("response-content-type", "application/octet-stream"),
            ("response-cache-control", "max-age=600"),
        ];
        let req = CosRequest {
            method: "GET",
            path: PATH,
            params: &params,
            headers: &headers,
        };
        let sig = sign(SECRET_KEY, 1557989753, 1557996953, &req);
        assert_eq!(sig.header_list, "host;x-cos-security-token");
        assert_eq!(sig.signature, "d4c7d69baa54a8898feb1c1622e233bf45b885b8");
    }
}
