//! Request ids and security headers for every admin response, error pages included.

use std::time::Instant;

use actix_request_identifier::RequestId;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;

/// No inline scripts or styles, nothing from elsewhere, never framed.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                       img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; \
                       base-uri 'none'";

tokio::task_local! {
    /// Set while a request is handled, so error pages can show it.
    static REQUEST_ID: String;
}

/// The current request's id (for error pages rendered without the request at hand).
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".to_owned())
}

/// Makes the request's id (given by `RequestIdentifier`, which runs outside this) current for
/// the handler, the route guard and the error pages they render, and writes the admin access
/// log line once the response is ready.
///
/// `RequestIdentifier` gives every request a new UUID, never the client's (as on the public
/// listener: a client cannot make its requests look like someone else's in the log), and
/// echoes it as `x-request-id`.
pub async fn request_scope(
    id: RequestId,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = id.as_str().to_owned();
    let (started, method, path) = (Instant::now(), req.method().clone(), req.path().to_owned());
    let res = REQUEST_ID.scope(id.clone(), next.call(req)).await?;
    let (status, latency_us) = (res.status().as_u16(), started.elapsed().as_micros() as u64);
    tracing::info!(request_id = %id, %method, %path, status, latency_us, "admin request");
    Ok(res.map_into_boxed_body())
}

/// CSP, no framing, no sniffing, no referrer, and `no-store` unless the handler chose a
/// cache policy (the versioned stylesheet does).
pub async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let secure = req
        .app_data::<actix_web::web::Data<crate::AdminState>>()
        .is_some_and(|s| s.config.secure_cookies);
    let mut res = next.call(req).await?.map_into_boxed_body();
    let h = res.headers_mut();
    let set = |h: &mut header::HeaderMap, name: HeaderName, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(
        h,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        h,
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    set(
        h,
        HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=(), payment=()",
    );
    if secure {
        set(
            h,
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        );
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use actix_request_identifier::RequestIdentifier;
    use actix_web::middleware::from_fn;
    use actix_web::{App, test, web};

    use super::*;

    #[actix_web::test]
    async fn every_response_carries_a_fresh_id_that_error_pages_can_show() {
        let app = test::init_service(
            App::new()
                .route("/", web::get().to(|| async { current_request_id() }))
                .wrap(from_fn(request_scope))
                .wrap(RequestIdentifier::with_uuid()),
        )
        .await;
        let mut seen = Vec::new();
        for _ in 0..2 {
            // A client-sent id is neither reused nor echoed.
            let req = test::TestRequest::get()
                .uri("/")
                .insert_header(("x-request-id", "forged-by-the-client"))
                .to_request();
            let res = test::call_service(&app, req).await;
            let id = res.headers().get("x-request-id").unwrap().to_str().unwrap();
            let id = id.to_owned();
            assert_ne!(id, "forged-by-the-client");
            assert_eq!(id.len(), 36, "a UUID: {id}");
            // The handler ran inside the id's scope.
            assert_eq!(test::read_body(res).await, id.as_bytes());
            seen.push(id);
        }
        assert_ne!(seen[0], seen[1]);
    }
}
