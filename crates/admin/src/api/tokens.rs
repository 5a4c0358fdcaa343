//! `/api/v1/tokens`: API tokens (admin tokens only). A new token is in the creation answer
//! and nowhere else, ever.

use actix_web::{HttpResponse, web};
use policy_store::{ApiToken, Role};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::State;
use super::auth::{ApiCaller, issue_token, parse_lifetime};
use super::error::{ApiError, ErrorBody};
use super::extract::Json;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub id: i64,
    pub name: String,
    #[schema(value_type = String, example = "auditor")]
    pub role: Role,
    /// The token's first characters, to recognise it.
    pub prefix: String,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Updated at most once a minute.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl From<ApiToken> for TokenView {
    fn from(t: ApiToken) -> Self {
        Self {
            id: t.id,
            name: t.name,
            role: t.role,
            prefix: t.prefix,
            created_by: t.created_by,
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
            revoked_at: t.revoked_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    pub name: String,
    #[schema(value_type = String, example = "auditor")]
    pub role: Role,
    /// A lifetime such as `90d`, `12h`, `2w`; never expires when left out.
    #[serde(default)]
    pub expires_in: Option<String>,
}

/// A new token: `token` is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenCreated {
    /// `stsg_…`: send it as `Authorization: Bearer <token>`. Not stored; not shown again.
    pub token: String,
    #[serde(flatten)]
    pub info: TokenView,
}

/// Reads `--expires`/`expires_in` into an expiry time.
pub fn expiry(text: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => parse_lifetime(t)
            .map(|d| Some(OffsetDateTime::now_utc() + d))
            .ok_or_else(|| {
                ApiError::invalid(
                    "expires_in",
                    "a lifetime such as 90d, 12h, 30m or 2w (at least a minute, at most ten years)",
                )
            }),
    }
}

/// Every token, revoked and expired ones included, newest first.
#[utoipa::path(get, operation_id = "tokens_list", path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, description = "OK", body = Vec<TokenView>), (status = 403, description = "The token's role may not do this", body = ErrorBody)),
    security(("api_token" = ["admin"])))]
pub async fn list(state: State) -> Result<HttpResponse, ApiError> {
    let tokens: Vec<TokenView> = state
        .store
        .list_api_tokens()
        .await?
        .into_iter()
        .map(TokenView::from)
        .collect();
    Ok(HttpResponse::Ok().json(tokens))
}

/// Creates a token.
#[utoipa::path(post, operation_id = "tokens_create", path = "/api/v1/tokens", tag = "tokens",
    request_body = TokenCreate,
    responses((status = 201, description = "Created", body = TokenCreated), (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "Invalid fields, each named in `error.fields`", body = ErrorBody)),
    security(("api_token" = ["admin"])))]
pub async fn create(
    state: State,
    caller: ApiCaller,
    Json(body): Json<TokenCreate>,
) -> Result<HttpResponse, ApiError> {
    let expires_at = expiry(body.expires_in.as_deref())?;
    let issued = issue_token(body.name.trim(), body.role, expires_at);
    let token = state
        .store
        .create_api_token(&caller.actor(), &issued.record)
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(("cache-control", "no-store"))
        .json(TokenCreated {
            token: issued.token.expose_secret().to_owned(),
            info: token.into(),
        }))
}

/// Revokes a token at once.
#[utoipa::path(delete, operation_id = "tokens_revoke", path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = i64, Path)),
    responses((status = 200, description = "OK", body = TokenView), (status = 404, description = "No such app, version, user or token", body = ErrorBody)),
    security(("api_token" = ["admin"])))]
pub async fn revoke(
    state: State,
    caller: ApiCaller,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let token = state.store.revoke_api_token(&caller.actor(), *id).await?;
    Ok(HttpResponse::Ok().json(TokenView::from(token)))
}
