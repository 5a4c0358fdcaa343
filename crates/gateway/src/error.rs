//! The public API's errors and their one mapping to HTTP (DESIGN §3).

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::{HttpResponse, HttpResponseBuilder};
use policy_store::Outcome;
use sts_core::error_body::ErrorBody;

/// Everything the credential endpoint can refuse with. Messages are written for the client:
/// they never carry a secret, the raw token, or an internal error's text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("missing bearer token: send `Authorization: Bearer <JWT>`")]
    MissingToken,
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    #[error("{0}")]
    SubjectNotAllowed(String),
    #[error("this subject is blocked for this app")]
    SubjectBlocked,
    #[error("this app is disabled")]
    AppDisabled,
    #[error("this app has no active policy template")]
    NoPolicy,
    #[error("unknown app")]
    UnknownApp,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("rate limited: retry after {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// STS refused or failed; the STS code is included.
    #[error("STS refused the request ({sts_code})")]
    StsRefused {
        sts_code: String,
        sts_request_id: Option<String>,
    },
    #[error("STS is unavailable, retry later")]
    StsUnavailable { sts_code: Option<String> },
    #[error("the service is temporarily unavailable, retry later")]
    Unavailable,
    /// The app's own settings are unusable (e.g. its JWT keys): an operator must fix them.
    #[error("this app is misconfigured on the server; its operators have been told")]
    Misconfigured,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingToken | ApiError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            ApiError::SubjectNotAllowed(_)
            | ApiError::SubjectBlocked
            | ApiError::AppDisabled
            | ApiError::NoPolicy => StatusCode::FORBIDDEN,
            ApiError::UnknownApp => StatusCode::NOT_FOUND,
            ApiError::InvalidRequest(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::StsRefused { .. } => StatusCode::BAD_GATEWAY,
            ApiError::StsUnavailable { .. } | ApiError::Unavailable | ApiError::Misconfigured => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The stable machine-readable code in the error body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MissingToken => "missing_token",
            ApiError::InvalidToken(_) => "invalid_token",
            ApiError::SubjectNotAllowed(_) => "subject_not_allowed",
            ApiError::SubjectBlocked => "subject_blocked",
            ApiError::AppDisabled => "app_disabled",
            ApiError::NoPolicy => "no_policy",
            ApiError::UnknownApp => "unknown_app",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::StsRefused { .. } => "sts_error",
            ApiError::StsUnavailable { .. } => "sts_unavailable",
            ApiError::Unavailable => "unavailable",
            ApiError::Misconfigured => "app_misconfigured",
        }
    }

    /// What the issuance log records for this refusal.
    pub fn outcome(&self) -> Outcome {
        match self {
            ApiError::MissingToken | ApiError::InvalidToken(_) => Outcome::InvalidToken,
            ApiError::SubjectNotAllowed(_)
            | ApiError::SubjectBlocked
            | ApiError::AppDisabled
            | ApiError::NoPolicy => Outcome::Denied,
            ApiError::UnknownApp | ApiError::InvalidRequest(_) => Outcome::BadRequest,
            ApiError::RateLimited { .. } => Outcome::RateLimited,
            ApiError::StsRefused { .. } | ApiError::StsUnavailable { .. } => Outcome::UpstreamError,
            ApiError::Unavailable | ApiError::Misconfigured => Outcome::UpstreamError,
        }
    }

    /// The code stored in the issuance log: the STS code for upstream errors.
    pub fn log_code(&self) -> String {
        match self {
            ApiError::StsRefused { sts_code, .. } => sts_code.clone(),
            ApiError::StsUnavailable {
                sts_code: Some(code),
            } => code.clone(),
            ApiError::InvalidToken(reason) => format!("invalid_token:{reason}"),
            other => other.code().to_owned(),
        }
    }

    /// `{"error":{"code","message"[,"stsCode"]},"requestId"}` with the right status and headers.
    pub fn to_response(&self, request_id: &str) -> HttpResponse {
        let mut body = ErrorBody::new(self.code(), self.to_string(), request_id);
        body.error.sts_code = match self {
            ApiError::StsRefused { sts_code, .. } => Some(sts_code.clone()),
            ApiError::StsUnavailable { sts_code } => sts_code.clone(),
            _ => None,
        };
        let mut builder = HttpResponseBuilder::new(self.status());
        builder.insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")));
        match self {
            ApiError::MissingToken => {
                builder.insert_header((WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::InvalidToken(_) => {
                builder.insert_header((WWW_AUTHENTICATE, "Bearer error=\"invalid_token\""));
            }
            ApiError::RateLimited { retry_after } => {
                builder.insert_header((RETRY_AFTER, retry_after.to_string()));
            }
            ApiError::StsUnavailable { .. } | ApiError::Unavailable => {
                builder.insert_header((RETRY_AFTER, "1"));
            }
            _ => {}
        }
        builder.json(body)
    }
}
