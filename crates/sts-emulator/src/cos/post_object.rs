//! POST Object: a browser form upload (`multipart/form-data`) authenticated by a signed policy
//! document instead of a request signature (COS doc 436/14690).
//!
//! Form fields: `key` (`${filename}` is replaced by the file's name), `policy` (base64 JSON),
//! `q-sign-algorithm=sha1`, `q-ak`, `q-key-time`, `q-signature`, `x-cos-security-token` with
//! temporary keys, optional `Content-Type`, `Cache-Control`, …, `x-cos-meta-*`,
//! `success_action_status` (200, 201 or the default 204) and `success_action_redirect`; `file`
//! last. `q-signature = HMAC-SHA1(HMAC-SHA1(SecretKey, q-key-time) as hex, SHA1(policy JSON) as
//! hex)`. The policy's `expiration` and `conditions` (`{"field": value}`, `["eq", "$f", v]`,
//! `["starts-with", "$f", prefix]`, `["content-length-range", min, max]`) are enforced, then
//! the session policy as `name/cos:PostObject` on the object. For a `cos:content-length`
//! condition the request's Content-Length counts (the form, not just the file).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use md5::{Digest, Md5};
use serde_json::Value;
use sts_core::encoding::{constant_time_eq, hmac_sha1, sha1_hex, uri_encode};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::addressing::Target;
use super::auth;
use super::handlers::{STORED_HEADERS, authorize, io_error};
use super::objects::ObjectMeta;
use super::policy::RequestContext;
use super::xml::Writer;
use super::{CosError, CosResult, base_response};
use crate::server::State;

struct FormPart {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    data: Bytes,
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|at| at + from)
}

fn malformed(why: &str) -> CosError {
    CosError::new(
        StatusCode::BAD_REQUEST,
        "MalformedPOSTRequest",
        format!("The body of your POST request is not well-formed multipart/form-data: {why}."),
    )
}

/// A `name="value"` parameter of a header such as Content-Disposition.
fn header_param(header: &str, param: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(param)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn parse_form(content_type: &str, body: &Bytes) -> CosResult<Vec<FormPart>> {
    let boundary = header_param(content_type, "boundary")
        .filter(|b| !b.is_empty())
        .ok_or_else(|| malformed("no boundary"))?;
    let delimiter = format!("--{boundary}");
    let next = format!("\r\n--{boundary}");
    let mut at =
        find(body, delimiter.as_bytes(), 0).ok_or_else(|| malformed("no parts"))? + delimiter.len();
    let mut parts = Vec::new();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            return Ok(parts);
        }
        let headers_start = at + 2; // CRLF after the delimiter
        let headers_end = find(body, b"\r\n\r\n", headers_start)
            .ok_or_else(|| malformed("unterminated part headers"))?;
        let headers = String::from_utf8_lossy(&body[headers_start..headers_end]);
        let data_start = headers_end + 4;
        let data_end = find(body, next.as_bytes(), data_start)
            .ok_or_else(|| malformed("unterminated part"))?;
        let mut name = None;
        let mut filename = None;
        let mut part_type = None;
        for line in headers.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("content-disposition") {
                name = header_param(v, "name");
                filename = header_param(v, "filename");
            } else if k.trim().eq_ignore_ascii_case("content-type") {
                part_type = Some(v.trim().to_owned());
            }
        }
        parts.push(FormPart {
            name: name.ok_or_else(|| malformed("a part has no name"))?,
            filename,
            content_type: part_type,
            data: body.slice(data_start..data_end),
        });
        at = data_end + next.len();
    }
}

fn policy_failed(why: impl Into<String>) -> CosError {
    CosError::access_denied(format!("Invalid according to Policy: {}", why.into()))
}

/// Handles a POST Object request end to end.
pub(crate) fn handle(
    req: &HttpRequest,
    target: &Target,
    body: Bytes,
    state: &State,
    request_id: &str,
    now: i64,
) -> CosResult<HttpResponse> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let parts = parse_form(content_type, &body)?;
    let file = parts
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case("file"))
        .ok_or_else(|| CosError::invalid_argument("The form has no `file` field."))?;
    let fields: Vec<(String, String)> = parts
        .iter()
        .filter(|p| !p.name.eq_ignore_ascii_case("file"))
        .map(|p| {
            (
                p.name.to_ascii_lowercase(),
                String::from_utf8_lossy(&p.data).into_owned(),
            )
        })
        .collect();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let key = field("key")
        .ok_or_else(|| CosError::invalid_argument("The form has no `key` field."))?
        .replace("${filename}", file.filename.as_deref().unwrap_or_default());
    if key.is_empty() {
        return Err(CosError::invalid_argument("The key must not be empty."));
    }

    // Authentication: the signed policy.
    let (Some(policy_b64), Some(ak), Some(key_time), Some(signature)) = (
        field("policy"),
        field("q-ak"),
        field("q-key-time"),
        field("q-signature"),
    ) else {
        return Err(CosError::access_denied(
            "Access Denied. A POST Object form needs policy, q-ak, q-key-time and q-signature; \
             the bucket is private.",
        ));
    };
    if !field("q-sign-algorithm")
        .unwrap_or("sha1")
        .eq_ignore_ascii_case("sha1")
    {
        return Err(CosError::access_denied(
            "Access Denied. q-sign-algorithm must be sha1.",
        ));
    }
    let principal = auth::lookup(state, ak.trim())?;
    let policy_raw = STANDARD
        .decode(policy_b64.trim())
        .map_err(|_| policy_failed("the policy is not base64"))?;
    let sign_key = hex::encode(hmac_sha1(
        principal.secret_key().as_bytes(),
        key_time.trim().as_bytes(),
    ));
    let expected = hex::encode(hmac_sha1(
        sign_key.as_bytes(),
        sha1_hex(&policy_raw).as_bytes(),
    ));
    if !constant_time_eq(&expected, &signature.trim().to_ascii_lowercase()) {
        return Err(CosError::new(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The Signature you specified is invalid: it does not match the policy and q-key-time.",
        ));
    }
    let token = field("x-cos-security-token").or_else(|| {
        req.headers()
            .get("x-cos-security-token")
            .and_then(|v| v.to_str().ok())
    });
    auth::check_token_and_expiry(&principal, token, now)?;
    let window = auth::parse_window(key_time)
        .ok_or_else(|| CosError::access_denied("Access Denied. q-key-time is malformed."))?;
    auth::check_window("q-key-time", window, now)?;
    auth::check_key_time_validity(&principal, window)?;

    // The policy document.
    let policy: Value =
        serde_json::from_slice(&policy_raw).map_err(|_| policy_failed("the policy is not JSON"))?;
    let expiration = policy
        .get("expiration")
        .and_then(Value::as_str)
        .and_then(|e| OffsetDateTime::parse(e, &Rfc3339).ok())
        .ok_or_else(|| policy_failed("the policy needs an ISO 8601 `expiration`"))?;
    if now > expiration.unix_timestamp() {
        return Err(policy_failed("Policy expired."));
    }
    let lookup = |name: &str| -> Option<String> {
        let name = name.trim_start_matches('$').to_ascii_lowercase();
        match name.as_str() {
            "key" => Some(key.clone()),
            "bucket" => Some(target.bucket.clone()),
            "q-sign-time" => field("q-sign-time")
                .or(field("q-key-time"))
                .map(str::to_owned),
            other => field(other).map(str::to_owned),
        }
    };
    for condition in policy
        .get("conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        check_condition(condition, &lookup, file.data.len() as u64)?;
    }

    // Authorization: the session policy, as name/cos:PostObject on the object.
    let object_type = field("content-type")
        .map(str::to_owned)
        .or_else(|| file.content_type.clone())
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let context = RequestContext {
        peer_ip: req.peer_addr().map(|a| a.ip()),
        content_length: req
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .or(Some(body.len() as u64)),
        content_type: Some(object_type.clone()),
        prefix: None,
    };
    authorize(&principal, "PostObject", target, &key, &context)?;

    let etag = hex::encode(Md5::digest(&file.data));
    let meta = fields
        .iter()
        .filter(|(k, _)| k.starts_with("x-cos-meta-"))
        .cloned()
        .collect();
    let headers = fields
        .iter()
        .filter(|(k, _)| STORED_HEADERS.contains(&k.as_str()))
        .cloned()
        .collect();
    state
        .cos
        .put(
            &target.bucket,
            ObjectMeta {
                key: key.clone(),
                size: file.data.len() as u64,
                etag: etag.clone(),
                content_type: object_type,
                last_modified: now,
                meta,
                headers,
                data_file: None,
            },
            file.data.clone(),
        )
        .map_err(io_error)?;

    let region = target.region.as_deref().unwrap_or("ap-guangzhou");
    let location = format!(
        "http://{}.cos.{region}.myqcloud.com/{}",
        target.bucket,
        uri_encode(&key).replace("%2F", "/")
    );
    let quoted = format!("\"{etag}\"");
    if let Some(redirect) = field("success_action_redirect").filter(|r| !r.is_empty()) {
        let sep = if redirect.contains('?') { '&' } else { '?' };
        let to = format!(
            "{redirect}{sep}bucket={}&key={}&etag={}",
            uri_encode(&target.bucket),
            uri_encode(&key),
            uri_encode(&quoted)
        );
        return Ok(base_response(StatusCode::SEE_OTHER, request_id)
            .insert_header(("location", to))
            .insert_header(("etag", quoted))
            .finish());
    }
    let status = match field("success_action_status") {
        Some("200") => StatusCode::OK,
        Some("201") => StatusCode::CREATED,
        _ => StatusCode::NO_CONTENT,
    };
    let mut builder = base_response(status, request_id);
    builder
        .insert_header(("etag", quoted.clone()))
        .insert_header(("location", location.clone()));
    if status == StatusCode::CREATED {
        let mut w = Writer::new("PostResponse");
        w.elem("Location", &location)
            .elem("Bucket", &target.bucket)
            .elem("Key", &key)
            .elem("ETag", &quoted);
        return Ok(builder
            .insert_header(("content-type", "application/xml"))
            .body(w.finish("PostResponse")));
    }
    Ok(builder.finish())
}

fn check_condition(
    condition: &Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    file_size: u64,
) -> CosResult<()> {
    let as_text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match condition {
        Value::Object(map) => {
            for (name, want) in map {
                let want = as_text(want)
                    .ok_or_else(|| policy_failed(format!("bad condition on {name}")))?;
                if lookup(name).as_deref() != Some(want.as_str()) {
                    return Err(policy_failed(format!(
                        "Policy Condition failed: [\"eq\", \"${name}\", \"{want}\"]"
                    )));
                }
            }
            Ok(())
        }
        Value::Array(items) => {
            let op = items.first().and_then(Value::as_str).unwrap_or_default();
            match op.to_ascii_lowercase().as_str() {
                "eq" | "starts-with" if items.len() == 3 => {
                    let name = items[1].as_str().unwrap_or_default();
                    let want = as_text(&items[2]).unwrap_or_default();
                    let have = lookup(name).unwrap_or_default();
                    let ok = if op.eq_ignore_ascii_case("eq") {
                        have == want
                    } else {
                        have.starts_with(&want)
                    };
                    if ok {
                        Ok(())
                    } else {
                        Err(policy_failed(format!(
                            "Policy Condition failed: [\"{op}\", \"{name}\", \"{want}\"]"
                        )))
                    }
                }
                "content-length-range" if items.len() == 3 => {
                    let bound = |v: &Value| {
                        v.as_u64()
                            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                    };
                    match (bound(&items[1]), bound(&items[2])) {
                        (Some(min), Some(max)) if (min..=max).contains(&file_size) => Ok(()),
                        (Some(_), Some(_)) => Err(CosError::new(
                            StatusCode::BAD_REQUEST,
                            if file_size > bound(&items[2]).unwrap_or(0) {
                                "EntityTooLarge"
                            } else {
                                "EntityTooSmall"
                            },
                            format!(
                                "Your proposed upload of {file_size} bytes is outside the policy's content-length-range."
                            ),
                        )),
                        _ => Err(policy_failed("bad content-length-range")),
                    }
                }
                _ => Err(policy_failed(format!("unknown condition {condition}"))),
            }
        }
        _ => Err(policy_failed(format!("unknown condition {condition}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let body = Bytes::from_static(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\na/${filename}\r\n\
              --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.png\"\r\n\
              Content-Type: image/png\r\n\r\n\x00\x01\r\n--\r\n--XyZ--\r\n",
        );
        let parts = parse_form("multipart/form-data; boundary=XyZ", &body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "key");
        assert_eq!(&parts[0].data[..], b"a/${filename}");
        assert_eq!(parts[1].filename.as_deref(), Some("p.png"));
        assert_eq!(parts[1].content_type.as_deref(), Some("image/png"));
        assert_eq!(&parts[1].data[..], b"\x00\x01\r\n--");
        assert!(parse_form("multipart/form-data", &body).is_err());
        assert!(parse_form("multipart/form-data; boundary=\"XyZ\"", &body).is_ok());
    }
}
