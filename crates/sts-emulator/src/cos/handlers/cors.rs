//! CORS: the emulator answers preflights from any origin and exposes the headers browsers need.

use super::*;

/// Headers a browser may read from COS answers.
const EXPOSED: &str = "ETag, Content-Length, Content-Type, Content-Range, Last-Modified, \
     x-cos-request-id, x-cos-hash-crc64ecma, x-cos-version-id, x-cos-delete-marker";

/// CORS preflight. Real COS answers from the bucket's CORS rules; the emulator allows any
/// origin, method and header so browser apps work out of the box.
pub(super) fn preflight(req: &HttpRequest, request_id: &str) -> HttpResponse {
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
