//! Error pages. They show what went wrong in words meant for the user and the request id;
//! internal error text goes to the log (with the same id), never to the page.

use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use policy_store::StoreError;

use crate::headers::current_request_id;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("sign in first")]
    Unauthorized,
    /// The signed-in user's role may not do this.
    #[error("forbidden")]
    Forbidden(String),
    /// A state-changing request without a valid CSRF token, or from another site.
    #[error("CSRF check failed")]
    Csrf,
    #[error("not found")]
    NotFound,
    /// A request the user can fix; the text is shown as is (escaped).
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("the database is unavailable")]
    Unavailable,
    /// Logged where it happened; the page says only that something failed.
    #[error("internal error")]
    Internal,
}

impl AdminError {
    /// Logs `detail` with the request id and returns [`AdminError::Internal`].
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(request_id = %current_request_id(), error = %detail, "admin request failed");
        AdminError::Internal
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => AdminError::NotFound,
            StoreError::Conflict(what) => AdminError::BadRequest(what),
            StoreError::Invalid(errs) => AdminError::BadRequest(
                errs.iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            e if e.is_unavailable() => {
                tracing::warn!(request_id = %current_request_id(), error = %e, "database unavailable");
                AdminError::Unavailable
            }
            e => AdminError::internal(e),
        }
    }
}

impl From<askama::Error> for AdminError {
    fn from(e: askama::Error) -> Self {
        AdminError::internal(format!("template rendering failed: {e}"))
    }
}

#[derive(Template)]
#[template(path = "errors/error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
    request_id: String,
    asset_version: &'static str,
    sign_in: bool,
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden(_) | AdminError::Csrf => StatusCode::FORBIDDEN,
            AdminError::NotFound => StatusCode::NOT_FOUND,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (title, message): (&str, String) = match self {
            AdminError::Unauthorized => (
                "Sign in required",
                "Your session has ended. Sign in again.".into(),
            ),
            AdminError::Forbidden(why) => ("Not allowed", why.clone()),
            AdminError::Csrf => (
                "Request refused",
                "This form has expired or was not sent from the admin pages. Go back, reload the page and try again."
                    .into(),
            ),
            AdminError::NotFound => ("Not found", "There is nothing at this address.".into()),
            AdminError::BadRequest(why) => ("Cannot do that", why.clone()),
            AdminError::Unavailable => (
                "Database unavailable",
                "The database cannot be reached right now. Try again in a moment.".into(),
            ),
            AdminError::Internal => (
                "Something went wrong",
                "The request failed. The error is in the server log under the request id below."
                    .into(),
            ),
        };
        let status = self.status_code();
        let page = ErrorPage {
            status: status.as_u16(),
            title,
            message: &message,
            request_id: current_request_id(),
            asset_version: crate::assets::version(),
            sign_in: matches!(self, AdminError::Unauthorized | AdminError::Csrf),
        };
        match page.render() {
            Ok(html) => HttpResponse::build(status)
                .content_type(ContentType::html())
                .body(html),
            Err(_) => HttpResponse::build(status)
                .content_type(ContentType::plaintext())
                .body(format!("{title}\nrequest id: {}\n", current_request_id())),
        }
    }
}
