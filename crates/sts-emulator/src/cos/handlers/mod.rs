//! COS operations: classification into CAM actions, authorization, and dispatch to the
//! handlers, one module per family (objects, listing, multipart, CORS).

mod cors;
mod listing;
mod multipart;
mod objects;

pub(crate) use cors::add_cors_headers;
use cors::preflight;
use listing::{get_bucket, list_multipart_uploads};
use multipart::{complete, initiate, list_parts, upload_part};
use objects::{delete_multiple, get_object, put_object};

use std::collections::BTreeMap;
use std::ops::Bound;

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use md5::{Digest, Md5};
use sts_core::encoding::uri_encode;
use time::OffsetDateTime;
use time::macros::format_description;

use super::addressing::{self, Target};
use super::auth::{self, Principal};
use super::objects::{CompleteError, ObjectMeta, PartMeta, UploadMeta};
use super::policy::{self, Check, Decision, RequestContext};
use super::post_object;
use super::xml::{self, Writer};
use super::{CosError, CosResult, base_response};
use crate::server::State;

/// COS's largest single PUT (and part): 5 GB.
pub(crate) const MAX_BODY: u64 = 5 * 1024 * 1024 * 1024;
/// Every part but the last must be at least 1 MB.
pub(crate) const MIN_PART_SIZE: u64 = 1024 * 1024;
const MAX_PART_NUMBER: u32 = 10_000;
const MAX_KEYS: usize = 1000;

/// Sub-resources COS has but the emulator does not implement.
const UNSUPPORTED_SUBRESOURCES: &[&str] = &[
    "acl",
    "cors",
    "policy",
    "lifecycle",
    "tagging",
    "versioning",
    "versions",
    "location",
    "website",
    "referer",
    "logging",
    "restore",
    "append",
    "select",
    "replication",
    "domain",
    "inventory",
    "encryption",
    "object-lock",
    "intelligenttiering",
];

/// Headers stored with an object and returned on GET/HEAD.
pub(crate) const STORED_HEADERS: &[&str] = &[
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    GetBucket,
    ListMultipartUploads,
    HeadBucket,
    DeleteMultipleObjects,
    PutObject,
    GetObject,
    HeadObject,
    DeleteObject,
    InitiateMultipartUpload,
    UploadPart { number: u32, upload_id: String },
    ListParts { upload_id: String },
    CompleteMultipartUpload { upload_id: String },
    AbortMultipartUpload { upload_id: String },
    PostObject,
}

impl Op {
    /// The CAM action name, without `name/cos:`.
    fn action(&self) -> &'static str {
        match self {
            Op::GetBucket => "GetBucket",
            Op::ListMultipartUploads => "ListMultipartUploads",
            Op::HeadBucket => "HeadBucket",
            Op::DeleteMultipleObjects | Op::DeleteObject => "DeleteObject",
            Op::PutObject => "PutObject",
            Op::GetObject => "GetObject",
            Op::HeadObject => "HeadObject",
            Op::InitiateMultipartUpload => "InitiateMultipartUpload",
            Op::UploadPart { .. } => "UploadPart",
            Op::ListParts { .. } => "ListParts",
            Op::CompleteMultipartUpload { .. } => "CompleteMultipartUpload",
            Op::AbortMultipartUpload { .. } => "AbortMultipartUpload",
            Op::PostObject => "PostObject",
        }
    }
}

/// Decoded query pairs, in order. `+` is a space (form encoding, as `requests` writes it).
fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| sts_core::encoding::uri_decode(&s.replace('+', " "));
            (decode(k), decode(v))
        })
        .collect()
}

struct Query(Vec<(String, String)>);

impl Query {
    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A parameter that counts only when non-empty.
    fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }
}

fn not_implemented(what: &str) -> CosError {
    CosError::new(
        StatusCode::NOT_IMPLEMENTED,
        "NotImplemented",
        format!("{what} is not implemented by the stsgate emulator."),
    )
}

fn upload_id(query: &Query) -> CosResult<String> {
    query
        .non_empty("uploadId")
        .map(str::to_owned)
        .ok_or_else(|| CosError::invalid_argument("uploadId must not be empty."))
}

fn classify(req: &HttpRequest, target: &Target, query: &Query) -> CosResult<Op> {
    let method = req.method().as_str();
    if let Some(sub) = UNSUPPORTED_SUBRESOURCES.iter().find(|s| query.has(s)) {
        return Err(not_implemented(&format!("The `?{sub}` sub-resource")));
    }
    if target.key.is_empty() {
        return match method {
            "GET" if query.has("uploads") => Ok(Op::ListMultipartUploads),
            "GET" => Ok(Op::GetBucket),
            "HEAD" => Ok(Op::HeadBucket),
            "POST" if query.has("delete") => Ok(Op::DeleteMultipleObjects),
            "POST" => {
                let form = req
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|ct| ct.starts_with("multipart/form-data"));
                if form {
                    Ok(Op::PostObject)
                } else {
                    Err(CosError::method_not_allowed(
                        "POST on a bucket takes `?delete` or a multipart/form-data POST Object.",
                    ))
                }
            }
            "PUT" | "DELETE" => Err(CosError::method_not_allowed(
                "Buckets exist implicitly in the emulator: PUT Bucket and DELETE Bucket are not allowed.",
            )),
            other => Err(CosError::method_not_allowed(format!(
                "The method {other} is not allowed against a bucket."
            ))),
        };
    }
    match method {
        "PUT" if query.has("uploadId") || query.has("partNumber") => {
            let raw = query.get("partNumber").unwrap_or_default();
            let number = raw
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
                .ok_or_else(|| {
                    CosError::invalid_argument(format!(
                        "partNumber must be an integer between 1 and {MAX_PART_NUMBER}, got {raw:?}."
                    ))
                })?;
            Ok(Op::UploadPart {
                number,
                upload_id: upload_id(query)?,
            })
        }
        "PUT" if req.headers().contains_key("x-cos-copy-source") => {
            Err(not_implemented("PUT Object - Copy"))
        }
        "PUT" => Ok(Op::PutObject),
        "GET" if query.has("uploadId") => Ok(Op::ListParts {
            upload_id: upload_id(query)?,
        }),
        "GET" => Ok(Op::GetObject),
        "HEAD" => Ok(Op::HeadObject),
        "DELETE" if query.has("uploadId") => Ok(Op::AbortMultipartUpload {
            upload_id: upload_id(query)?,
        }),
        "DELETE" => Ok(Op::DeleteObject),
        "POST" if query.has("uploads") => Ok(Op::InitiateMultipartUpload),
        "POST" if query.has("uploadId") => Ok(Op::CompleteMultipartUpload {
            upload_id: upload_id(query)?,
        }),
        other => Err(CosError::method_not_allowed(format!(
            "The method {other} is not allowed against this resource."
        ))),
    }
}

fn entity_too_large() -> CosError {
    CosError::new(
        StatusCode::BAD_REQUEST,
        "EntityTooLarge",
        format!(
            "Your proposed upload exceeds the maximum allowed object size of {MAX_BODY} bytes."
        ),
    )
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> CosResult<Bytes> {
    let declared = header(req, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(entity_too_large());
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(64 * 1024 * 1024) as usize);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            CosError::new(
                StatusCode::BAD_REQUEST,
                "IncompleteBody",
                format!("The request body could not be read: {e}."),
            )
        })?;
        if (buf.len() + chunk.len()) as u64 > MAX_BODY {
            return Err(entity_too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Checks the principal may perform `action` on `key` (empty: the bucket itself).
pub(crate) fn authorize(
    principal: &Principal,
    action: &str,
    target: &Target,
    key: &str,
    context: &RequestContext,
) -> CosResult<()> {
    if principal.appid() != target.appid {
        return Err(CosError::access_denied(format!(
            "Access Denied. The bucket {} belongs to another APPID.",
            target.bucket
        )));
    }
    let Principal::Temporary(cred) = principal else {
        return Ok(());
    };
    // An AssumeRole credential without a session policy has the role's permissions, which the
    // emulator does not model: it gets the account's own buckets.
    let Some(policy) = &cred.policy else {
        return Ok(());
    };
    let decision = policy::evaluate(
        policy,
        &Check {
            action,
            region: target.region.as_deref(),
            appid: &target.appid,
            bucket: &target.bucket,
            key,
            context,
        },
    );
    let resource = format!(
        "qcs::cos:{}:uid/{}:{}/{key}",
        target.region.as_deref().unwrap_or("<any region>"),
        target.appid,
        target.bucket
    );
    match decision {
        Decision::Allow => Ok(()),
        Decision::ExplicitDeny => Err(CosError::access_denied(format!(
            "Access Denied. A deny statement of the session policy matches name/cos:{action} on {resource}."
        ))),
        Decision::NotAllowed => Err(CosError::access_denied(format!(
            "Access Denied. No statement of the session policy allows name/cos:{action} on {resource}."
        ))),
    }
}

/// Handles one COS request end to end (errors become XML answers in the caller).
pub(crate) async fn dispatch(
    req: &HttpRequest,
    payload: web::Payload,
    state: &State,
    request_id: &str,
) -> CosResult<HttpResponse> {
    let target = addressing::resolve(req, state)?;
    if req.method().as_str() == "OPTIONS" {
        return Ok(preflight(req, request_id));
    }
    let query = Query(parse_query(req.query_string()));
    let op = classify(req, &target, &query)?;
    let body = read_body(req, payload).await?;
    let now = state.now();
    if op == Op::PostObject {
        return post_object::handle(req, &target, body, state, request_id, now);
    }
    let principal = auth::authenticate(req, &query.0, &target, state, now)?;

    let content_length = header(req, "content-length")
        .and_then(|v| v.trim().parse().ok())
        .or_else(|| matches!(req.method().as_str(), "PUT" | "POST").then_some(body.len() as u64));
    let context = RequestContext {
        peer_ip: req.peer_addr().map(|a| a.ip()),
        content_length,
        content_type: header(req, "content-type").map(str::to_owned),
        prefix: (op == Op::GetBucket)
            .then(|| query.get("prefix").map(str::to_owned))
            .flatten(),
    };
    if op != Op::DeleteMultipleObjects {
        authorize(&principal, op.action(), &target, &target.key, &context)?;
    }
    let ctx = Ctx {
        req,
        state,
        target: &target,
        query: &query,
        request_id,
        now,
        principal: &principal,
        context: &context,
    };
    match op {
        Op::GetBucket => get_bucket(&ctx),
        Op::ListMultipartUploads => list_multipart_uploads(&ctx),
        Op::HeadBucket => Ok(base_response(StatusCode::OK, request_id).finish()),
        Op::DeleteMultipleObjects => delete_multiple(&ctx, &body),
        Op::PutObject => put_object(&ctx, body),
        Op::GetObject => get_object(&ctx, false),
        Op::HeadObject => get_object(&ctx, true),
        Op::DeleteObject => {
            state
                .cos
                .delete(&target.bucket, &target.key)
                .map_err(io_error)?;
            Ok(base_response(StatusCode::NO_CONTENT, request_id).finish())
        }
        Op::InitiateMultipartUpload => initiate(&ctx),
        Op::UploadPart { number, upload_id } => upload_part(&ctx, number, &upload_id, body),
        Op::ListParts { upload_id } => list_parts(&ctx, &upload_id),
        Op::CompleteMultipartUpload { upload_id } => complete(&ctx, &upload_id, &body),
        Op::PostObject => unreachable!("handled before authentication"),
        Op::AbortMultipartUpload { upload_id } => {
            if !state
                .cos
                .abort(&target.bucket, &target.key, &upload_id)
                .map_err(io_error)?
            {
                return Err(CosError::no_such_upload());
            }
            Ok(base_response(StatusCode::NO_CONTENT, request_id).finish())
        }
    }
}

struct Ctx<'a> {
    req: &'a HttpRequest,
    state: &'a State,
    target: &'a Target,
    query: &'a Query,
    request_id: &'a str,
    now: i64,
    principal: &'a Principal,
    context: &'a RequestContext,
}

pub(crate) fn io_error(e: std::io::Error) -> CosError {
    tracing::error!(error = %e, "COS storage error");
    CosError::internal("The emulator could not read or write its storage.")
}

fn http_date(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .format(format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .unwrap_or_default()
}

fn iso_date(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].000Z"
        ))
        .unwrap_or_default()
}

fn xml_response(request_id: &str, body: String) -> HttpResponse {
    base_response(StatusCode::OK, request_id)
        .insert_header(("content-type", "application/xml"))
        .body(body)
}

/// `x-cos-meta-*` and the stored standard headers of a write request.
fn object_headers(req: &HttpRequest) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut meta = BTreeMap::new();
    let mut stored = BTreeMap::new();
    for (name, value) in req.headers() {
        let Ok(value) = value.to_str() else {
            continue;
        };
        let name = name.as_str();
        if name.starts_with("x-cos-meta-") {
            meta.insert(name.to_owned(), value.to_owned());
        } else if STORED_HEADERS.contains(&name) {
            stored.insert(name.to_owned(), value.to_owned());
        }
    }
    (meta, stored)
}

fn content_type(req: &HttpRequest) -> String {
    header(req, "content-type")
        .filter(|v| !v.is_empty())
        .unwrap_or("application/octet-stream")
        .to_owned()
}

fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

fn check_content_md5(req: &HttpRequest, body: &[u8]) -> CosResult<()> {
    use base64::Engine;
    let Some(claimed) = header(req, "content-md5") else {
        return Ok(());
    };
    let Ok(claimed) = base64::engine::general_purpose::STANDARD.decode(claimed.trim()) else {
        return Err(CosError::new(
            StatusCode::BAD_REQUEST,
            "InvalidDigest",
            "The Content-MD5 you specified is not valid base64.",
        ));
    };
    if claimed.as_slice() != Md5::digest(body).as_slice() {
        return Err(CosError::new(
            StatusCode::BAD_REQUEST,
            "BadDigest",
            "The Content-MD5 you specified did not match what we received.",
        ));
    }
    Ok(())
}

fn encode_url(s: &str) -> String {
    uri_encode(s).replace("%2F", "/")
}

fn owner(w: &mut Writer, tag: &str, id: &str) {
    w.open(tag)
        .elem("ID", id)
        .elem("DisplayName", id)
        .close(tag);
}

fn encoding(query: &Query) -> CosResult<bool> {
    match query.non_empty("encoding-type") {
        None => Ok(false),
        Some("url") => Ok(true),
        Some(other) => Err(CosError::invalid_argument(format!(
            "encoding-type must be url, got {other:?}."
        ))),
    }
}

fn max_param(query: &Query, name: &str) -> CosResult<usize> {
    match query.non_empty(name) {
        None => Ok(MAX_KEYS),
        Some(raw) => raw.parse::<usize>().map(|n| n.min(MAX_KEYS)).map_err(|_| {
            CosError::invalid_argument(format!("{name} must be an integer, got {raw:?}."))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(http_date(1557989151), "Thu, 16 May 2019 06:45:51 GMT");
        assert_eq!(iso_date(1557989151), "2019-05-16T06:45:51.000Z");
    }

    #[test]
    fn queries() {
        let q = parse_query("prefix=a+b%2Fc&uploads&max-keys=");
        assert_eq!(
            q,
            vec![
                ("prefix".to_owned(), "a b/c".to_owned()),
                ("uploads".to_owned(), String::new()),
                ("max-keys".to_owned(), String::new())
            ]
        );
    }
}
