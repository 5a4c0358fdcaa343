//! The stylesheet and the small progressive-enhancement script, from `static/`, compiled in
//! (no files to ship next to the binary) and served under `/static` with a content-hash
//! version query string, so a new build is never hidden by a cached copy.

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use sha2::{Digest, Sha256};

use crate::error::AdminError;

const CSS: &str = include_str!("../../../static/admin.css");
const JS: &str = include_str!("../../../static/admin.js");

static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut h = Sha256::new();
    h.update(CSS.as_bytes());
    h.update(JS.as_bytes());
    hex::encode(h.finalize())[..12].to_owned()
});

/// The `?v=` of the asset URLs.
pub fn version() -> &'static str {
    VERSION.as_str()
}

#[derive(serde::Deserialize)]
pub struct VersionQuery {
    v: Option<String>,
}

pub async fn serve(
    name: web::Path<String>,
    query: web::Query<VersionQuery>,
) -> Result<HttpResponse, AdminError> {
    let (body, content_type) = match name.as_str() {
        "admin.css" => (CSS, "text/css; charset=utf-8"),
        "admin.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return Err(AdminError::NotFound),
    };
    let cache = if query.v.as_deref() == Some(version()) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, cache))
        .body(body))
}
