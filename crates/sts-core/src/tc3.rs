//! TC3-HMAC-SHA256, the Tencent Cloud API 3.0 request signature (reference §1).

use time::OffsetDateTime;

use crate::encoding::{hmac_sha256, sha256_hex};

pub const ALGORITHM: &str = "TC3-HMAC-SHA256";

/// Everything that goes into a TC3 signature.
#[derive(Debug, Clone)]
pub struct Tc3Request<'a> {
    /// `POST` or `GET`.
    pub method: &'a str,
    /// The canonical query string: empty for POST, the RFC 3986-encoded query for GET.
    pub canonical_query: &'a str,
    /// The headers to sign, as sent (any case, any order). Must include `content-type` and `host`.
    pub headers: &'a [(&'a str, &'a str)],
    /// The exact body bytes.
    pub payload: &'a [u8],
    /// The product's host prefix (`sts`, `cvm`).
    pub service: &'a str,
    /// `X-TC-Timestamp`, Unix seconds.
    pub timestamp: i64,
}

/// The intermediate and final values of a TC3 signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tc3Signature {
    pub canonical_request: String,
    pub hashed_canonical_request: String,
    pub credential_scope: String,
    pub string_to_sign: String,
    pub signed_headers: String,
    pub signature: String,
}

impl Tc3Signature {
    /// The `Authorization` header value.
    pub fn authorization(&self, secret_id: &str) -> String {
        format!(
            "{ALGORITHM} Credential={secret_id}/{}, SignedHeaders={}, Signature={}",
            self.credential_scope, self.signed_headers, self.signature
        )
    }
}

/// The UTC calendar date (`YYYY-MM-DD`) of a Unix timestamp. Never local time (reference §1.4).
pub fn utc_date(timestamp: i64) -> String {
    let dt = OffsetDateTime::from_unix_timestamp(timestamp).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}",
        dt.year(),
        u8::from(dt.month()),
        dt.day()
    )
}

/// Derives the signing key: `HMAC(HMAC(HMAC("TC3"+key, date), service), "tc3_request")`.
pub fn signing_key(secret_key: &str, date: &str, service: &str) -> [u8; 32] {
    let secret_date = hmac_sha256(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let secret_service = hmac_sha256(&secret_date, service.as_bytes());
    hmac_sha256(&secret_service, b"tc3_request")
}

/// Builds the canonical headers block and the signed-header list: names and values
/// lower-cased and trimmed, sorted by name.
fn canonical_headers(headers: &[(&str, &str)]) -> (String, String) {
    let mut lowered: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_lowercase()))
        .collect();
    lowered.sort();
    let block = lowered.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let names = lowered
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    (block, names)
}

/// Signs a request with the given secret key.
pub fn sign(secret_key: &str, req: &Tc3Request<'_>) -> Tc3Signature {
    let (headers_block, signed_headers) = canonical_headers(req.headers);
    let canonical_request = format!(
        "{}\n/\n{}\n{}\n{}\n{}",
        req.method.to_ascii_uppercase(),
        req.canonical_query,
        headers_block,
        signed_headers,
        sha256_hex(req.payload)
    );
    let hashed_canonical_request = sha256_hex(canonical_request.as_bytes());
    let date = utc_date(req.timestamp);
    let credential_scope = format!("{date}/{}/tc3_request", req.service);
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{credential_scope}\n{hashed_canonical_request}",
        req.timestamp
    );
    let key = signing_key(secret_key, &date, req.service);
    let signature = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));
    Tc3Signature {
        canonical_request,
        hashed_canonical_request,
        credential_scope,
        string_to_sign,
        signed_headers,
        signature,
    }
}

/// A parsed `Authorization: TC3-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tc3Authorization {
    pub secret_id: String,
    pub date: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl Tc3Authorization {
    /// Parses the header. Returns `None` when it is not a well-formed TC3 authorization.
    pub fn parse(header: &str) -> Option<Self> {
        let rest = header.strip_prefix(ALGORITHM)?.trim_start();
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (k, v) = part.trim().split_once('=')?;
            match k {
                "Credential" => credential = Some(v),
                "SignedHeaders" => signed = Some(v),
                "Signature" => signature = Some(v),
                _ => return None,
            }
        }
        let mut scope = credential?.splitn(4, '/');
        let secret_id = scope.next()?.to_owned();
        let date = scope.next()?.to_owned();
        let service = scope.next()?.to_owned();
        if scope.next()? != "tc3_request" || secret_id.is_empty() {
            return None;
        }
        Some(Self {
            secret_id,
            date,
            service,
            signed_headers: signed?.split(';').map(str::to_owned).collect(),
            signature: signature?.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference §1.9: shared inputs of vectors A, B and C.
    const DOC_BODY: &str =
        r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
    const DOC_TS: i64 = 1551113065;
    const DOC_CT: &str = "application/json; charset=utf-8";
    const CVM_HOST: &str = "cvm.tencentcloudapi.com";

    fn doc_request<'a>(headers: &'a [(&'a str, &'a str)]) -> Tc3Request<'a> {
        Tc3Request {
            method: "POST",
            canonical_query: "",
            headers,
            payload: DOC_BODY.as_bytes(),
            service: "cvm",
            timestamp: DOC_TS,
        }
    }

    #[test]
    fn doc_payload_hash() {
        assert_eq!(
            sha256_hex(DOC_BODY.as_bytes()),
            "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
    }

    #[test]
    fn date_is_utc_not_local() {
        // 2019-02-26 00:44:25 in UTC+8, but the scope date is the UTC one.
        assert_eq!(utc_date(DOC_TS), "2019-02-25");
    }

    #[test]
    fn vector_a_classic_doc_example() {
        let headers = [("Content-Type", DOC_CT), ("Host", CVM_HOST)];
        let sig = sign("Gu5t9xGARNpq86cd98joQYCN3EXAMPLE", &doc_request(&headers));
        assert_eq!(
            sig.canonical_request,
            "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n\ncontent-type;host\n35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        assert_eq!(
            sig.hashed_canonical_request,
            "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
        );
        assert_eq!(
            sig.string_to_sign,
            "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
        );
        assert_eq!(
            sig.signature,
            "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
        assert_eq!(
            sig.authorization("AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"),
            "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, SignedHeaders=content-type;host, Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
    }

    #[test]
    fn vector_a_intermediate_keys() {
        let key = "TC3Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
        let date = hmac_sha256(key.as_bytes(), b"2019-02-25");
        assert_eq!(
            hex::encode(date),
            "d1308c81fe71cfd4e06437bbc067b2b8a3d2d8c0e375d547f15c41d5214b395a"
        );
        let service = hmac_sha256(&date, b"cvm");
        assert_eq!(
            hex::encode(service),
            "3c7cb7c7795393edc14fd2e0e6434a518564b4504b88e94f5d11bf59ba3e7050"
        );
        assert_eq!(
            hex::encode(signing_key(
                "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
                "2019-02-25",
                "cvm"
            )),
            "ac658d5dde49e9bfdd14e04e062f66b05d9f637d44b8a8d845327d4a77f666b1"
        );
    }

    #[test]
    fn vector_b_masked_key_with_literal_asterisks() {
        let headers = [("Content-Type", DOC_CT), ("Host", CVM_HOST)];
        let key = "Gu5t9xGARNpq86cd98joQYCN3*******";
        let sig = sign(key, &doc_request(&headers));
        assert_eq!(
            sig.hashed_canonical_request,
            "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
        );
        assert_eq!(
            hex::encode(signing_key(key, "2019-02-25", "cvm")),
            "8aa8ab5755582f576e94bcfe383b8e29325b0ca90c3590d569221c6a63a091ed"
        );
        assert_eq!(
            sig.signature,
            "2230eefd229f582d8b1b891af7107b91597240707d778ab3738f756258d7652c"
        );
    }

    #[test]
    fn vector_c_signs_x_tc_action_lowercased() {
        let headers = [
            ("Content-Type", DOC_CT),
            ("Host", CVM_HOST),
            ("X-TC-Action", "DescribeInstances"),
        ];
        let key = "*".repeat(32);
        let sig = sign(&key, &doc_request(&headers));
        assert!(
            sig.canonical_request
                .contains("host:cvm.tencentcloudapi.com\nx-tc-action:describeinstances\n\n")
        );
        assert_eq!(sig.signed_headers, "content-type;host;x-tc-action");
        assert_eq!(
            sig.hashed_canonical_request,
            "7019a55be8395899b900fb5564e4200d984910f34794a27cb3fb7d10ff6a1e84"
        );
        assert_eq!(
            hex::encode(signing_key(&key, "2019-02-25", "cvm")),
            "b596b923aad85185e2d1f6659d2a062e0a86731226e021e61bfe06f7ed05f5af"
        );
        assert_eq!(
            sig.signature,
            "10b1a37a7301a02ca19a647ad722d5e43b4b3cff309d421d85b46093f6ab6c4f"
        );
    }

    #[test]
    fn vector_d_get_with_query() {
        let headers = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Host", CVM_HOST),
        ];
        let sig = sign(
            "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
            &Tc3Request {
                method: "GET",
                canonical_query: "Limit=10&Offset=0",
                headers: &headers,
                payload: b"",
                service: "cvm",
                timestamp: 1539084154,
            },
        );
        assert!(
            sig.canonical_request
                .ends_with("\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(
            sig.hashed_canonical_request,
            "91c9c192c14460df6c1ffc69e34e6c5e90708de2a6d282cccf957dbf1aa7f3a7"
        );
        assert_eq!(
            sig.signature,
            "5da7a33f6993f0614b047e5df4582db9e9bf4672ba50567dba16c6ccf174c474"
        );
    }

    #[test]
    fn vector_a_prime_python_sdk_content_type() {
        let headers = [("Content-Type", "application/json"), ("Host", CVM_HOST)];
        let sig = sign("Gu5t9xGARNpq86cd98joQYCN3EXAMPLE", &doc_request(&headers));
        assert_eq!(
            sig.hashed_canonical_request,
            "df142fa7176428137ac6a6b25b5efcb6b4c08a91fc30d75ecebe47877d3143d8"
        );
        assert_eq!(
            sig.signature,
            "683bd0b53659853c39699162253251192320a09b3937e27bf8e08a559b1465b8"
        );
    }

    /// Vector E: the exact body bytes the official Python SDK sent for GetFederationToken.
    pub(crate) const VECTOR_E_BODY: &str = r#"{"Name": "user42", "Policy": "%7B%22version%22%3A%222.0%22%2C%22statement%22%3A%5B%7B%22effect%22%3A%22allow%22%2C%22action%22%3A%5B%22name%2Fcos%3APutObject%22%5D%2C%22resource%22%3A%5B%22qcs%3A%3Acos%3Aap-guangzhou%3Auid%2F1250000000%3Aexamplebucket-1250000000%2Fusers%2F42%2F%2A%22%5D%7D%5D%7D", "DurationSeconds": 1800}"#;

    #[test]
    fn vector_e_sts_get_federation_token() {
        assert_eq!(
            sha256_hex(VECTOR_E_BODY.as_bytes()),
            "2467b2fe25fb063b6c0afd24784ecd8a6115a950bb51b9bb1ed8cd4151f0fc7f"
        );
        let headers = [
            ("Content-Type", "application/json"),
            ("Host", "sts.tencentcloudapi.com"),
        ];
        let sig = sign(
            "SECRETKEYEXAMPLE",
            &Tc3Request {
                method: "POST",
                canonical_query: "",
                headers: &headers,
                payload: VECTOR_E_BODY.as_bytes(),
                service: "sts",
                timestamp: 1700000000,
            },
        );
        assert_eq!(
            sig.hashed_canonical_request,
            "ee11855c63a45efc3a12758c42360b9641ba4c0b0d79d9078b7ae676509f5120"
        );
        assert_eq!(
            sig.authorization("AKIDEXAMPLE"),
            "TC3-HMAC-SHA256 Credential=AKIDEXAMPLE/2023-11-14/sts/tc3_request, SignedHeaders=content-type;host, Signature=2f754147552fffcebc664402456d4d5a0ad6c5525786aeff62dbe73250235199"
        );
    }

    #[test]
    fn authorization_header_roundtrips_through_parse() {
        let parsed = Tc3Authorization::parse(
            "TC3-HMAC-SHA256 Credential=AKIDEXAMPLE/2023-11-14/sts/tc3_request, SignedHeaders=content-type;host, Signature=abc",
        )
        .unwrap();
        assert_eq!(parsed.secret_id, "AKIDEXAMPLE");
        assert_eq!(parsed.date, "2023-11-14");
        assert_eq!(parsed.service, "sts");
        assert_eq!(parsed.signed_headers, ["content-type", "host"]);
        assert_eq!(parsed.signature, "abc");
        assert!(
            Tc3Authorization::parse(
                "TC3-HMAC-SHA256 Credential=x/y/z/other, SignedHeaders=a, Signature=b"
            )
            .is_none()
        );
        assert!(Tc3Authorization::parse("Bearer abc").is_none());
    }
}
