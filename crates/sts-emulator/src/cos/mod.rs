//! The COS data plane: objects, listing and multipart uploads behind COS's signature checks and
//! CAM session-policy enforcement (reference `tencent-sts.md` §3 and §6).
//!
//! One port serves STS and COS. A request is COS when its `Host` names a bucket, its first path
//! segment is a bucket of a configured APPID, or it carries a COS signature (`q-sign-algorithm`
//! in `Authorization` or the query); see [`addressing`].
//!
//! Choices where real COS's behaviour is not documented (reference §7), so a test can pin them:
//! * a temporary SecretId without its `x-cos-security-token`, or with another token:
//!   403 `InvalidAccessKeyId`;
//! * an expired temporary credential: 403 `AccessDenied`, "The temporary credential has expired";
//! * a `q-key-time` that starts before the credential was issued (60 s skew allowed):
//!   403 `AccessDenied`. Its end may run past the credential's expiry (cos-python-sdk-v5 signs
//!   `now-60;now+10000` by default); the credential's own expiry still ends access;
//! * `q-sign-time`/`q-key-time` not covering the server's time: 403 `AccessDenied`,
//!   "Request has expired" (or "is not yet valid" for a start in the future);
//! * buckets are private and have a permissive CORS configuration (any origin);
//! * `cos:prefix` is provided for GetBucket only (the documented case), `cos:content-length` is
//!   the request's Content-Length (for POST Object: the whole form).
//!
//! Operations: PUT/GET (Range)/HEAD/DELETE Object, DELETE Multiple Objects, GET Bucket,
//! HEAD Bucket, the multipart set (initiate, upload part, list parts, complete, abort, list
//! uploads) and POST Object (browser form upload with a signed policy). Other sub-resources
//! (`?acl`, `?cors`, …) and PUT Object - Copy answer 501 NotImplemented.

mod addressing;
mod auth;
mod handlers;
mod objects;
mod policy;
mod post_object;
mod xml;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::Rng;

pub(crate) use addressing::is_cos_request;
pub(crate) use objects::ObjectStore;

use crate::server::State;

/// A COS error answer: status, `Code` and `Message` of the XML body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CosError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl CosError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn access_denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "AccessDenied", message)
    }

    pub(crate) fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidArgument", message)
    }

    pub(crate) fn malformed_xml() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our published schema.",
        )
    }

    pub(crate) fn no_such_key() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        )
    }

    pub(crate) fn no_such_upload() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchUpload",
            "The specified multipart upload does not exist.",
        )
    }

    pub(crate) fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }
}

pub(crate) type CosResult<T> = Result<T, CosError>;

/// A request id in COS's style (base64 of a few underscore-joined hex fields).
fn new_request_id() -> String {
    let mut rng = rand::rng();
    let raw = format!(
        "{:x}_{:x}_{:x}_{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
        rng.random::<u32>(),
        rng.random::<u16>(),
        rng.random::<u32>()
    );
    STANDARD.encode(raw)
}

/// Every COS answer carries these.
fn base_response(status: StatusCode, request_id: &str) -> HttpResponseBuilder {
    let mut builder = HttpResponse::build(status);
    builder
        .insert_header(("x-cos-request-id", request_id.to_owned()))
        .insert_header(("server", "tencent-cos"));
    builder
}

fn error_response(err: &CosError, resource: &str, request_id: &str) -> HttpResponse {
    let trace_id = STANDARD.encode(format!("{}-{}", request_id, rand::rng().random::<u64>()));
    let body = xml::error_body(err.code, &err.message, resource, request_id, &trace_id);
    base_response(err.status, request_id)
        .insert_header(("content-type", "application/xml"))
        .body(body)
}

/// The COS endpoint: every request routed here by [`is_cos_request`].
pub(crate) async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> HttpResponse {
    let request_id = new_request_id();
    let resource = format!(
        "{}{}",
        req.headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or_default(),
        req.uri().path()
    );
    let origin = req
        .headers()
        .get("origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut response = match handlers::dispatch(&req, payload, &state, &request_id).await {
        Ok(response) => response,
        Err(err) => {
            tracing::debug!(code = err.code, message = %err.message, "COS error");
            error_response(&err, &resource, &request_id)
        }
    };
    if let Some(origin) = origin {
        handlers::add_cors_headers(response.headers_mut(), &origin);
    }
    response
}
