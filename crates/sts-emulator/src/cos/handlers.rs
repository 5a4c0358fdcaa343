//! COS operations: classification into CAM actions, authorization, and the handlers.

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

fn put_object(ctx: &Ctx<'_>, body: Bytes) -> CosResult<HttpResponse> {
    check_content_md5(ctx.req, &body)?;
    let etag = hex::encode(Md5::digest(&body));
    let (meta, headers) = object_headers(ctx.req);
    let object = ObjectMeta {
        key: ctx.target.key.clone(),
        size: body.len() as u64,
        etag: etag.clone(),
        content_type: content_type(ctx.req),
        last_modified: ctx.now,
        meta,
        headers,
        data_file: None,
    };
    ctx.state
        .cos
        .put(&ctx.target.bucket, object, body)
        .map_err(io_error)?;
    Ok(base_response(StatusCode::OK, ctx.request_id)
        .insert_header(("etag", quoted(&etag)))
        .finish())
}

/// A parsed `Range` header: `None` to serve the whole object, `Err` when unsatisfiable.
fn parse_range(raw: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = raw.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let n: u64 = last.parse().ok()?;
        if n == 0 || size == 0 {
            return Some(Err(()));
        }
        return Some(Ok((size - n.min(size), size - 1)));
    }
    let start: u64 = first.parse().ok()?;
    let end = if last.is_empty() {
        None
    } else {
        Some(last.parse::<u64>().ok()?)
    };
    if end.is_some_and(|e| e < start) {
        return None;
    }
    if start >= size {
        return Some(Err(()));
    }
    Some(Ok((start, end.map_or(size - 1, |e| e.min(size - 1)))))
}

fn get_object(ctx: &Ctx<'_>, head: bool) -> CosResult<HttpResponse> {
    let Some(object) = ctx.state.cos.get(&ctx.target.bucket, &ctx.target.key) else {
        return Err(CosError::no_such_key());
    };
    let meta = &object.meta;
    let range = header(ctx.req, "range").and_then(|r| parse_range(r, meta.size));
    let (status, start, len) = match range {
        None => (StatusCode::OK, 0, meta.size),
        Some(Ok((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Some(Err(())) => {
            return Err(CosError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                format!(
                    "The requested range is not satisfiable (object size {}).",
                    meta.size
                ),
            ));
        }
    };
    let mut builder = base_response(status, ctx.request_id);
    builder
        .insert_header(("content-type", meta.content_type.clone()))
        .insert_header(("etag", quoted(&meta.etag)))
        .insert_header(("last-modified", http_date(meta.last_modified)))
        .insert_header(("accept-ranges", "bytes"));
    for (name, value) in meta.meta.iter().chain(meta.headers.iter()) {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            builder.insert_header((n, v));
        }
    }
    if status == StatusCode::PARTIAL_CONTENT {
        builder.insert_header((
            "content-range",
            format!("bytes {start}-{}/{}", start + len - 1, meta.size),
        ));
    }
    // response-* parameters override the stored headers (GET only, as in COS).
    if !head {
        for (param, name) in [
            ("response-content-type", "content-type"),
            ("response-content-language", "content-language"),
            ("response-expires", "expires"),
            ("response-cache-control", "cache-control"),
            ("response-content-disposition", "content-disposition"),
            ("response-content-encoding", "content-encoding"),
        ] {
            if let Some(v) = ctx.query.non_empty(param)
                && let Ok(v) = HeaderValue::try_from(v)
            {
                builder.insert_header((name, v));
            }
        }
    }
    if head {
        let empty = futures_util::stream::empty::<Result<Bytes, std::io::Error>>();
        return Ok(builder.body(actix_web::body::SizedStream::new(len, empty)));
    }
    let data = object.body.read_range(start, len).map_err(io_error)?;
    Ok(builder.body(data))
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

fn get_bucket(ctx: &Ctx<'_>) -> CosResult<HttpResponse> {
    let prefix = ctx.query.get("prefix").unwrap_or_default();
    let delimiter = ctx.query.get("delimiter").unwrap_or_default();
    let marker = ctx.query.get("marker").unwrap_or_default();
    let max_keys = max_param(ctx.query, "max-keys")?;
    let url = encoding(ctx.query)?;
    let enc = |s: &str| if url { encode_url(s) } else { s.to_owned() };

    enum Entry {
        Object(String, ObjectMeta),
        Prefix(String),
    }
    let (entries, truncated) = ctx.state.cos.with_bucket(&ctx.target.bucket, |objects| {
        let mut entries: Vec<Entry> = Vec::new();
        let mut truncated = false;
        let start = if marker > prefix { marker } else { prefix };
        let lower = if start == marker && !marker.is_empty() {
            Bound::Excluded(start.to_owned())
        } else {
            Bound::Included(start.to_owned())
        };
        let mut last_prefix: Option<String> = None;
        for (key, object) in objects.range((lower, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                if key.as_str() > prefix {
                    break;
                }
                continue;
            }
            let common = (!delimiter.is_empty())
                .then(|| {
                    key[prefix.len()..]
                        .find(delimiter)
                        .map(|at| key[..prefix.len() + at + delimiter.len()].to_owned())
                })
                .flatten();
            if let Some(common) = common {
                if last_prefix.as_deref() == Some(common.as_str()) || common == marker {
                    continue;
                }
                if entries.len() == max_keys {
                    truncated = true;
                    break;
                }
                last_prefix = Some(common.clone());
                entries.push(Entry::Prefix(common));
            } else {
                if entries.len() == max_keys {
                    truncated = true;
                    break;
                }
                entries.push(Entry::Object(key.clone(), object.meta.clone()));
            }
        }
        (entries, truncated)
    });

    let mut w = Writer::new("ListBucketResult");
    w.elem("Name", &ctx.target.bucket);
    if url {
        w.elem("EncodingType", "url");
    }
    w.elem("Prefix", enc(prefix))
        .elem("Marker", enc(marker))
        .elem("MaxKeys", max_keys.to_string());
    if !delimiter.is_empty() {
        w.elem("Delimiter", enc(delimiter));
    }
    w.elem("IsTruncated", truncated.to_string());
    if truncated && let Some(last) = entries.last() {
        let next = match last {
            Entry::Object(k, _) => k,
            Entry::Prefix(p) => p,
        };
        w.elem("NextMarker", enc(next));
    }
    for entry in &entries {
        match entry {
            Entry::Object(key, meta) => {
                w.open("Contents")
                    .elem("Key", enc(key))
                    .elem("LastModified", iso_date(meta.last_modified))
                    .elem("ETag", quoted(&meta.etag))
                    .elem("Size", meta.size.to_string());
                owner(&mut w, "Owner", &ctx.target.appid);
                w.elem("StorageClass", "STANDARD").close("Contents");
            }
            Entry::Prefix(p) => {
                w.open("CommonPrefixes")
                    .elem("Prefix", enc(p))
                    .close("CommonPrefixes");
            }
        }
    }
    Ok(xml_response(ctx.request_id, w.finish("ListBucketResult")))
}

fn list_multipart_uploads(ctx: &Ctx<'_>) -> CosResult<HttpResponse> {
    let prefix = ctx.query.get("prefix").unwrap_or_default();
    let key_marker = ctx.query.get("key-marker").unwrap_or_default();
    let id_marker = ctx.query.get("upload-id-marker").unwrap_or_default();
    let max = max_param(ctx.query, "max-uploads")?;
    let url = encoding(ctx.query)?;
    let enc = |s: &str| if url { encode_url(s) } else { s.to_owned() };
    let all: Vec<UploadMeta> = ctx
        .state
        .cos
        .uploads(&ctx.target.bucket)
        .into_iter()
        .filter(|u| u.key.starts_with(prefix))
        .filter(|u| {
            key_marker.is_empty()
                || u.key.as_str() > key_marker
                || (u.key == key_marker
                    && !id_marker.is_empty()
                    && u.upload_id.as_str() > id_marker)
        })
        .collect();
    let truncated = all.len() > max;
    let shown = &all[..all.len().min(max)];
    let mut w = Writer::new("ListMultipartUploadsResult");
    w.elem("Bucket", &ctx.target.bucket);
    if url {
        w.elem("Encoding-Type", "url");
    }
    w.elem("KeyMarker", enc(key_marker))
        .elem("UploadIdMarker", id_marker)
        .elem("MaxUploads", max.to_string())
        .elem("Prefix", enc(prefix))
        .elem("IsTruncated", truncated.to_string());
    if truncated && let Some(last) = shown.last() {
        w.elem("NextKeyMarker", enc(&last.key))
            .elem("NextUploadIdMarker", &last.upload_id);
    }
    for upload in shown {
        w.open("Upload")
            .elem("Key", enc(&upload.key))
            .elem("UploadId", &upload.upload_id)
            .elem("StorageClass", "STANDARD");
        owner(&mut w, "Initiator", &upload.initiator);
        owner(&mut w, "Owner", &ctx.target.appid);
        w.elem("Initiated", iso_date(upload.initiated))
            .close("Upload");
    }
    Ok(xml_response(
        ctx.request_id,
        w.finish("ListMultipartUploadsResult"),
    ))
}

fn new_upload_id(now: i64) -> String {
    format!(
        "{now}{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn initiate(ctx: &Ctx<'_>) -> CosResult<HttpResponse> {
    let (meta, headers) = object_headers(ctx.req);
    let upload = UploadMeta {
        upload_id: new_upload_id(ctx.now),
        bucket: ctx.target.bucket.clone(),
        key: ctx.target.key.clone(),
        initiated: ctx.now,
        content_type: content_type(ctx.req),
        meta,
        headers,
        initiator: ctx.principal.secret_id().to_owned(),
    };
    let upload_id = upload.upload_id.clone();
    ctx.state.cos.create_upload(upload).map_err(io_error)?;
    let mut w = Writer::new("InitiateMultipartUploadResult");
    w.elem("Bucket", &ctx.target.bucket)
        .elem("Key", &ctx.target.key)
        .elem("UploadId", upload_id);
    Ok(xml_response(
        ctx.request_id,
        w.finish("InitiateMultipartUploadResult"),
    ))
}

fn upload_part(
    ctx: &Ctx<'_>,
    number: u32,
    upload_id: &str,
    body: Bytes,
) -> CosResult<HttpResponse> {
    check_content_md5(ctx.req, &body)?;
    let etag = hex::encode(Md5::digest(&body));
    let part = PartMeta {
        number,
        etag: etag.clone(),
        size: body.len() as u64,
        last_modified: ctx.now,
        data_file: None,
    };
    let stored = ctx
        .state
        .cos
        .put_part(&ctx.target.bucket, &ctx.target.key, upload_id, part, body)
        .map_err(io_error)?;
    if !stored {
        return Err(CosError::no_such_upload());
    }
    Ok(base_response(StatusCode::OK, ctx.request_id)
        .insert_header(("etag", quoted(&etag)))
        .finish())
}

fn list_parts(ctx: &Ctx<'_>, upload_id: &str) -> CosResult<HttpResponse> {
    let Some((upload, parts)) =
        ctx.state
            .cos
            .upload(&ctx.target.bucket, &ctx.target.key, upload_id)
    else {
        return Err(CosError::no_such_upload());
    };
    let marker: u32 = match ctx.query.non_empty("part-number-marker") {
        None => 0,
        Some(raw) => raw.parse().map_err(|_| {
            CosError::invalid_argument(format!(
                "part-number-marker must be an integer, got {raw:?}."
            ))
        })?,
    };
    let max = max_param(ctx.query, "max-parts")?;
    let url = encoding(ctx.query)?;
    let after: Vec<&PartMeta> = parts.iter().filter(|p| p.number > marker).collect();
    let truncated = after.len() > max;
    let shown = &after[..after.len().min(max)];
    let mut w = Writer::new("ListPartsResult");
    w.elem("Bucket", &ctx.target.bucket);
    if url {
        w.elem("Encoding-type", "url");
    }
    w.elem(
        "Key",
        if url {
            encode_url(&upload.key)
        } else {
            upload.key.clone()
        },
    )
    .elem("UploadId", &upload.upload_id);
    owner(&mut w, "Initiator", &upload.initiator);
    owner(&mut w, "Owner", &ctx.target.appid);
    w.elem("PartNumberMarker", marker.to_string());
    for part in shown {
        w.open("Part")
            .elem("PartNumber", part.number.to_string())
            .elem("LastModified", iso_date(part.last_modified))
            .elem("ETag", quoted(&part.etag))
            .elem("Size", part.size.to_string())
            .close("Part");
    }
    if let Some(last) = shown.last() {
        w.elem("NextPartNumberMarker", last.number.to_string());
    }
    w.elem("StorageClass", "STANDARD")
        .elem("MaxParts", max.to_string())
        .elem("IsTruncated", truncated.to_string());
    Ok(xml_response(ctx.request_id, w.finish("ListPartsResult")))
}

fn complete(ctx: &Ctx<'_>, upload_id: &str, body: &[u8]) -> CosResult<HttpResponse> {
    let text = std::str::from_utf8(body).map_err(|_| CosError::malformed_xml())?;
    let mut parts = Vec::new();
    for part in xml::elements(text, "Part").ok_or_else(CosError::malformed_xml)? {
        let number = xml::first_text(part, "PartNumber")
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(CosError::malformed_xml)?;
        let etag = xml::first_text(part, "ETag").ok_or_else(CosError::malformed_xml)?;
        parts.push((number, etag));
    }
    if parts.is_empty() {
        return Err(CosError::malformed_xml());
    }
    let result = ctx.state.cos.complete(
        &ctx.target.bucket,
        &ctx.target.key,
        upload_id,
        &parts,
        MIN_PART_SIZE,
        ctx.now,
    );
    let meta = match result {
        Ok(meta) => meta,
        Err(CompleteError::NoSuchUpload) => return Err(CosError::no_such_upload()),
        Err(CompleteError::InvalidPart(n)) => {
            return Err(CosError::new(
                StatusCode::BAD_REQUEST,
                "InvalidPart",
                format!(
                    "One or more of the specified parts could not be found or its ETag did not match (part {n})."
                ),
            ));
        }
        Err(CompleteError::InvalidPartOrder) => {
            return Err(CosError::new(
                StatusCode::BAD_REQUEST,
                "InvalidPartOrder",
                "The list of parts was not in ascending order.",
            ));
        }
        Err(CompleteError::EntityTooSmall(n)) => {
            return Err(CosError::new(
                StatusCode::BAD_REQUEST,
                "EntityTooSmall",
                format!("Part {n} is smaller than the minimum allowed part size of 1 MB."),
            ));
        }
        Err(CompleteError::Io(e)) => return Err(io_error(e)),
    };
    let region = ctx.target.region.as_deref().unwrap_or("ap-guangzhou");
    let mut w = Writer::new("CompleteMultipartUploadResult");
    w.elem(
        "Location",
        format!(
            "{}.cos.{region}.myqcloud.com/{}",
            ctx.target.bucket, ctx.target.key
        ),
    )
    .elem("Bucket", &ctx.target.bucket)
    .elem("Key", &ctx.target.key)
    .elem("ETag", quoted(&meta.etag));
    Ok(xml_response(
        ctx.request_id,
        w.finish("CompleteMultipartUploadResult"),
    ))
}

fn delete_multiple(ctx: &Ctx<'_>, body: &[u8]) -> CosResult<HttpResponse> {
    check_content_md5(ctx.req, body)?;
    let text = std::str::from_utf8(body).map_err(|_| CosError::malformed_xml())?;
    let quiet = xml::first_text(text, "Quiet").is_some_and(|q| q.eq_ignore_ascii_case("true"));
    let objects = xml::elements(text, "Object").ok_or_else(CosError::malformed_xml)?;
    if objects.is_empty() || objects.len() > MAX_KEYS {
        return Err(CosError::malformed_xml());
    }
    let mut w = Writer::new("DeleteResult");
    for object in objects {
        let key = xml::first_text(object, "Key").ok_or_else(CosError::malformed_xml)?;
        let outcome = if key.is_empty() {
            Err(CosError::invalid_argument("The key must not be empty."))
        } else {
            authorize(ctx.principal, "DeleteObject", ctx.target, &key, ctx.context).and_then(|()| {
                ctx.state
                    .cos
                    .delete(&ctx.target.bucket, &key)
                    .map_err(io_error)
            })
        };
        match outcome {
            Ok(_) if quiet => {}
            Ok(_) => {
                w.open("Deleted").elem("Key", &key).close("Deleted");
            }
            Err(e) => {
                w.open("Error")
                    .elem("Key", &key)
                    .elem("Code", e.code)
                    .elem("Message", &e.message)
                    .close("Error");
            }
        }
    }
    Ok(xml_response(ctx.request_id, w.finish("DeleteResult")))
}

/// Headers a browser may read from COS answers.
const EXPOSED: &str = "ETag, Content-Length, Content-Type, Content-Range, Last-Modified, \
     x-cos-request-id, x-cos-hash-crc64ecma, x-cos-version-id, x-cos-delete-marker";

/// CORS preflight. Real COS answers from the bucket's CORS rules; the emulator allows any
/// origin, method and header so browser apps work out of the box.
fn preflight(req: &HttpRequest, request_id: &str) -> HttpResponse {
    let mut builder = base_response(StatusCode::OK, request_id);
    builder
        .insert_header((
            "access-control-allow-methods",
            "GET, PUT, POST, DELETE, HEAD",
        ))
        .insert_header(("access-control-max-age", "600"));
    if let Some(h) = header(req, "access-control-request-headers") {
        builder.insert_header(("access-control-allow-headers", h.to_owned()));
    }
    builder.finish()
}

pub(crate) fn add_cors_headers(headers: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::try_from(origin) {
        headers.insert(HeaderName::from_static("access-control-allow-origin"), v);
        headers.insert(
            HeaderName::from_static("access-control-expose-headers"),
            HeaderValue::from_static(EXPOSED),
        );
        headers.insert(
            HeaderName::from_static("vary"),
            HeaderValue::from_static("Origin"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=90-200", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-200", 100), Some(Ok((0, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=-0", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-", 0), Some(Err(())));
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

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
