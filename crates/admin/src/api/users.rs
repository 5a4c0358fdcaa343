//! `/api/v1/users`: admin users (admin tokens only). Passwords are write-only and hashed
//! with argon2id as on the pages; the store refuses to leave no enabled admin.

use actix_web::{HttpResponse, web};
use policy_store::{AdminUser, Role};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::State;
use super::auth::ApiCaller;
use super::error::{ApiError, ErrorBody};
use super::extract::Json;
use crate::password::{self, MIN_PASSWORD_LEN, PasswordError};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: i64,
    pub username: String,
    #[schema(value_type = String, example = "auditor")]
    pub role: Role,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub locked_until: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<AdminUser> for UserView {
    fn from(u: AdminUser) -> Self {
        Self {
            id: u.id,
            username: u.username,
            role: u.role,
            disabled: u.disabled,
            locked_until: u.locked_until,
            created_at: u.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    pub username: String,
    #[schema(value_type = String, example = "auditor")]
    pub role: Role,
    /// Write-only; at least 12 characters.
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

/// Changes to a user; fields left out stay as they are. Disabling signs the user out.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[schema(value_type = Option<String>, example = "admin")]
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    /// Write-only; signs the user out.
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
}

async fn hash(password: SecretString) -> Result<String, ApiError> {
    password::hash_password(password)
        .await
        .map_err(|e| match e {
            PasswordError::TooShort => ApiError::invalid(
                "password",
                format!("at least {MIN_PASSWORD_LEN} characters"),
            ),
            PasswordError::Hash => ApiError::internal("password hashing failed"),
        })
}

/// Every admin user.
#[utoipa::path(get, operation_id = "users_list", path = "/api/v1/users", tag = "users",
    responses((status = 200, description = "OK", body = Vec<UserView>), (status = 403, description = "The token's role may not do this", body = ErrorBody)),
    security(("api_token" = ["admin"])))]
pub async fn list(state: State) -> Result<HttpResponse, ApiError> {
    let users: Vec<UserView> = state
        .store
        .list_admin_users()
        .await?
        .into_iter()
        .map(UserView::from)
        .collect();
    Ok(HttpResponse::Ok().json(users))
}

/// Creates an admin or auditor.
#[utoipa::path(post, operation_id = "users_create", path = "/api/v1/users", tag = "users",
    request_body = UserCreate,
    responses((status = 201, description = "Created", body = UserView), (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "Invalid fields, each named in `error.fields`", body = ErrorBody)),
    security(("api_token" = ["admin"])))]
pub async fn create(
    state: State,
    caller: ApiCaller,
    Json(body): Json<UserCreate>,
) -> Result<HttpResponse, ApiError> {
    let phc = hash(body.password).await?;
    let user = state
        .store
        .create_admin_user(&caller.actor(), body.username.trim(), &phc, body.role)
        .await?;
    Ok(HttpResponse::Created().json(UserView::from(user)))
}

/// Changes a user's role, disables or enables them, or resets their password.
#[utoipa::path(patch, operation_id = "users_update", path = "/api/v1/users/{id}", tag = "users",
    params(("id" = i64, Path)),
    request_body = UserPatch,
    responses((status = 200, description = "OK", body = UserView), (status = 404, description = "No such app, version, user or token", body = ErrorBody),
        (status = 422, description = "Invalid fields, each named in `error.fields`", body = ErrorBody)),
    security(("api_token" = ["admin"])))]
pub async fn update(
    state: State,
    caller: ApiCaller,
    id: web::Path<i64>,
    Json(body): Json<UserPatch>,
) -> Result<HttpResponse, ApiError> {
    let id = *id;
    let actor = caller.actor();
    // Checked before anything changes: a short password must not leave half a change.
    let phc = match body.password {
        Some(p) => Some(hash(p).await?),
        None => None,
    };
    let mut user = state
        .store
        .admin_user_by_id(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user with id {id}")))?;
    if let Some(role) = body.role
        && role != user.role
    {
        user = state.store.set_admin_user_role(&actor, id, role).await?;
    }
    if let Some(disabled) = body.disabled
        && disabled != user.disabled
    {
        user = state
            .store
            .set_admin_user_disabled(&actor, id, disabled)
            .await?;
    }
    if let Some(phc) = phc {
        user = state
            .store
            .set_admin_user_password(&actor, id, &phc)
            .await?;
    }
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}
