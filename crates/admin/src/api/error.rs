//! The admin API's errors, in the public credential API's shape:
//! `{"error":{"code","message"[,"fields":[{"field","message"}]]},"requestId"}`.

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, WWW_AUTHENTICATE};
use actix_web::{HttpResponse, ResponseError};
use policy_store::{FieldError, StoreError};
pub use sts_core::error_body::{ErrorBody, ErrorDetail, FieldProblem};

use crate::headers::current_request_id;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing bearer token: send `Authorization: Bearer <API token>`")]
    MissingToken,
    #[error("invalid token: unknown, revoked or expired")]
    InvalidToken,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Input that fails validation; every problem names its field.
    #[error("the request has {} invalid field(s)", .0.len())]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    BadRequest(String),
    #[error("the service is temporarily unavailable, retry later")]
    Unavailable,
    /// Logged where it happened; the client gets only the request id.
    #[error("internal error: see the server log under this request id")]
    Internal,
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid(vec![FieldError::new(field, message)])
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(request_id = %current_request_id(), error = %detail, "admin API request failed");
        ApiError::Internal
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MissingToken => "missing_token",
            ApiError::InvalidToken => "invalid_token",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Invalid(_) => "invalid_request",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal => "internal",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("not found".into()),
            StoreError::Conflict(what) => ApiError::Conflict(what),
            StoreError::Invalid(errs) => ApiError::Invalid(errs),
            e if e.is_unavailable() => {
                tracing::warn!(request_id = %current_request_id(), error = %e, "database unavailable");
                ApiError::Unavailable
            }
            e => ApiError::internal(e),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MissingToken | ApiError::InvalidToken => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let fields = match self {
            ApiError::Invalid(errs) => Some(
                errs.iter()
                    .map(|e| FieldProblem {
                        field: e.field.clone(),
                        message: e.message.clone(),
                    })
                    .collect(),
            ),
            _ => None,
        };
        let message = match self {
            ApiError::Invalid(errs) => errs
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message,
                fields,
                sts_code: None,
            },
            request_id: current_request_id(),
        };
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((CACHE_CONTROL, "no-store"));
        match self {
            ApiError::MissingToken => {
                res.insert_header((WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::InvalidToken => {
                res.insert_header((WWW_AUTHENTICATE, "Bearer error=\"invalid_token\""));
            }
            _ => {}
        }
        res.json(body)
    }
}
