//! CORS on the credential endpoint (DESIGN §3): each app lists the exact web origins whose
//! pages may call it.
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered
//!   here, from the app resolver's cache: it never reaches the issuance path, so it writes
//!   no issuance row and counts against no rate limit. From a listed origin: 204 with the
//!   allowed methods and headers, `Access-Control-Max-Age` and the exposed headers. From any
//!   other origin, or for an unknown app: the same refusal a request would get, without CORS
//!   headers, so the browser stops there.
//! - Every other answer to a listed origin (credentials, errors, 429) carries
//!   `Access-Control-Allow-Origin` with that origin and exposes `x-request-id` and
//!   `Retry-After`, so a page can read its errors. An origin that is not listed gets no CORS
//!   header at all.
//! - Matching is byte for byte against the stored list, which holds origins in the form
//!   browsers send them (see [`policy_store::origin`]): no wildcard, no suffix match, scheme
//!   and port included. `Access-Control-Allow-Credentials` is never sent: the API takes a
//!   bearer token, not cookies.
//! - Every answer carries `Vary: Origin`, since its headers depend on it.

use actix_request_identifier::RequestId;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::ApiError;
use crate::apps::ResolvedApp;
use crate::http::PublicState;

/// Methods a page may use.
pub const ALLOWED_METHODS: &str = "GET, POST";
/// Request headers a page may send (beyond the CORS-safelisted ones).
pub const ALLOWED_HEADERS: &str = "Authorization, Content-Type";
/// Response headers a page may read (beyond the CORS-safelisted ones).
pub const EXPOSED_HEADERS: &str = "x-request-id, retry-after";
/// How long a browser may reuse a preflight's answer. Removing an origin stops its pages at
/// once all the same: the answers themselves then lack `Access-Control-Allow-Origin`.
pub const MAX_AGE_SECONDS: u32 = 600;

/// The one `Origin` header of a request, if it has exactly one.
fn origin_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut all = headers.get_all(header::ORIGIN);
    let first = all.next()?;
    all.next().is_none().then(|| first.clone())
}

/// Whether `app` lists `origin`, byte for byte.
pub fn allows(app: &ResolvedApp, origin: &HeaderValue) -> bool {
    app.app
        .allowed_origins
        .iter()
        .any(|o| o.as_bytes() == origin.as_bytes())
}

/// The headers every answer to a listed origin carries.
fn insert_allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
}

/// Adds `Vary: Origin` to whatever the answer already varies on.
fn vary_on_origin(headers: &mut HeaderMap) {
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// The middleware on `/v1/apps/{app}/credentials`.
pub async fn cors(
    id: RequestId,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(origin) = origin_of(req.headers()) else {
        let mut res = next.call(req).await?.map_into_boxed_body();
        vary_on_origin(res.headers_mut());
        return Ok(res);
    };
    let state = req
        .app_data::<web::Data<PublicState>>()
        .cloned()
        .expect("the public listener's state is registered");
    let slug = req.match_info().get("app").unwrap_or_default().to_owned();
    if req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let answer = preflight(&state, &slug, origin, id.as_str()).await;
        return Ok(req.into_response(answer));
    }
    let request = req.request().clone();
    let mut res = match next.call(req).await {
        Ok(res) => res.map_into_boxed_body(),
        // An extractor's refusal (a body that is too large): answer it here, so that the
        // page can read it too.
        Err(e) => ServiceResponse::from_err(e, request),
    };
    // The issuance path has just resolved the app: this is a cache hit (or nothing, for an
    // unknown app or a database that could not load it), never a database query.
    if let Some(app) = state.apps.cached(&slug).await
        && allows(&app, &origin)
    {
        insert_allow(res.headers_mut(), origin);
    }
    vary_on_origin(res.headers_mut());
    Ok(res)
}

/// The answer to a preflight from `origin` for the app `slug`.
async fn preflight(
    state: &PublicState,
    slug: &str,
    origin: HeaderValue,
    request_id: &str,
) -> HttpResponse {
    let deadline = tokio::time::Instant::now() + state.service.database_timeout();
    let mut answer = match state.apps.resolve(slug, deadline).await {
        Ok(Some(app)) if allows(&app, &origin) => {
            let mut answer = HttpResponse::NoContent()
                .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS))
                .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS))
                .insert_header((header::ACCESS_CONTROL_MAX_AGE, MAX_AGE_SECONDS.to_string()))
                .finish();
            insert_allow(answer.headers_mut(), origin);
            answer
        }
        Ok(Some(_)) => origin_not_allowed(&origin, request_id),
        Ok(None) => ApiError::UnknownApp.to_response(request_id),
        Err(e) => {
            tracing::warn!(app = %slug, error = %e, "preflight: cannot load app");
            ApiError::Unavailable.to_response(request_id)
        }
    };
    vary_on_origin(answer.headers_mut());
    answer
}

/// 403 for a preflight from an origin the app does not list. The browser only sees a failed
/// CORS check; the body is for whoever looks at the request in the developer tools.
fn origin_not_allowed(origin: &HeaderValue, request_id: &str) -> HttpResponse {
    let shown = String::from_utf8_lossy(origin.as_bytes());
    let message = format!(
        "the origin {shown} is not among this app's allowed origins: an admin adds it on the app's settings page (exactly as the browser sends it, scheme://host[:port])"
    );
    HttpResponse::build(StatusCode::FORBIDDEN)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "error": {"code": "origin_not_allowed", "message": message},
            "requestId": request_id,
        }))
}

/// Answers `OPTIONS` that is not a preflight (no `Access-Control-Request-Method`).
pub async fn options() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::ALLOW, "GET, POST, OPTIONS"))
        .finish()
}
