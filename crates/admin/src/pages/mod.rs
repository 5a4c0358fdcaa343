//! The pages. Handlers render askama templates explicitly (`render()?` into an HTML
//! response) so template failures reach [`AdminError`]'s page (STYLE §9).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpResponse, web};
use askama::Template;
use policy_store::App;

use crate::AdminState;
use crate::error::AdminError;

pub mod account;
pub mod apps;
pub mod auth;
pub mod blocks;
pub mod changes;
pub mod dashboard;
pub mod jwt;
pub mod log;
pub mod policy;
pub mod tokens;
pub mod users;

pub type State = web::Data<AdminState>;

/// Renders a page with status 200.
pub fn page(t: &impl Template) -> Result<HttpResponse, AdminError> {
    page_with(StatusCode::OK, t)
}

/// Renders a page with `status` (422 for a form sent back with errors).
pub fn page_with(status: StatusCode, t: &impl Template) -> Result<HttpResponse, AdminError> {
    Ok(HttpResponse::build(status)
        .content_type(ContentType::html())
        .body(t.render()?))
}

/// 303 to `location` (after every successful POST).
pub fn see_other(location: impl Into<String>) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location.into()))
        .finish()
}

/// The app named in the path, or 404.
pub async fn app_or_404(state: &State, slug: &str) -> Result<App, AdminError> {
    state
        .store
        .app_by_slug(slug)
        .await?
        .ok_or(AdminError::NotFound)
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("ok\n")
}

/// No route here: a page, or for the API an error in the API's shape.
pub async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    use actix_web::ResponseError as _;
    if req.path().starts_with(crate::api::API_PREFIX) {
        crate::api::ApiError::NotFound("no such API route".into()).error_response()
    } else {
        AdminError::NotFound.error_response()
    }
}
