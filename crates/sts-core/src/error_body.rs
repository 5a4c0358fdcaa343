//! The error body both of stsgate's HTTP APIs answer with (the credential API and the admin
//! API), so clients parse one shape:
//! `{"error":{"code","message"[,"fields"][,"stsCode"]},"requestId"}`.

use serde::Serialize;
use utoipa::ToSchema;

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldProblem {
    /// The field at fault, as named in the request (`statements[0].resources[1]`).
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_token`, `invalid_request`, `not_found`.
    pub code: String,
    /// For people; never carries a secret.
    pub message: String,
    /// Validation errors, one per field (admin API, `invalid_request` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<FieldProblem>>,
    /// The STS error code (credential API, upstream errors only).
    #[serde(rename = "stsCode", skip_serializing_if = "Option::is_none")]
    pub sts_code: Option<String>,
}

/// Every error of both APIs has this shape.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    /// The response's `x-request-id`; the server log has the details under it.
    #[serde(rename = "requestId")]
    pub request_id: String,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>, request_id: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
                fields: None,
                sts_code: None,
            },
            request_id: request_id.into(),
        }
    }
}
