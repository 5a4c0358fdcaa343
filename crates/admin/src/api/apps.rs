//! `/api/v1/apps`: list, show, create, update, enable/disable, and the JWT settings. The
//! SecretKey and the HS secret are write-only; the SecretId and ExternalId are shown masked,
//! as on the pages. Validation is the pages' own (`validate_app`, the store's checks), with
//! the same field names.

use actix_web::{HttpResponse, web};
use policy_store::{App, AppAuth, AppAuthInput, AppInput, StsMode, mask_secret_id, validate_app};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::auth::ApiCaller;
use super::error::{ApiError, ErrorBody};
use super::extract::Json;
use super::{State, app_or_404};
use crate::pages::apps::mask_external_id;

/// An app as the API shows it (secrets left out).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AppView {
    pub slug: String,
    pub name: String,
    pub enabled: bool,
    pub region: String,
    /// Full bucket name, `<name>-<appid>`.
    pub bucket: String,
    #[schema(value_type = String, example = "federation_token")]
    pub mode: StsMode,
    pub role_arn: Option<String>,
    /// Masked: its last four characters at most.
    pub external_id: Option<String>,
    /// Masked.
    pub secret_id: String,
    pub sts_endpoint: Option<String>,
    pub duration_default: i32,
    pub duration_max: i32,
    pub min_remaining: Option<i32>,
    pub rate_subject_per_minute: i32,
    pub rate_app_per_second: i32,
    pub active_template_version: Option<i32>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<&App> for AppView {
    fn from(a: &App) -> Self {
        Self {
            slug: a.slug.clone(),
            name: a.name.clone(),
            enabled: a.enabled,
            region: a.region.clone(),
            bucket: a.bucket.clone(),
            mode: a.mode,
            role_arn: a.role_arn.clone(),
            external_id: a.external_id.as_deref().map(mask_external_id),
            secret_id: mask_secret_id(&a.secret_id),
            sts_endpoint: a.sts_endpoint.clone(),
            duration_default: a.duration_default,
            duration_max: a.duration_max,
            min_remaining: a.min_remaining,
            rate_subject_per_minute: a.rate_subject_per_minute,
            rate_app_per_second: a.rate_app_per_second,
            active_template_version: a.active_template_version,
            updated_at: a.updated_at,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_duration() -> i32 {
    1800
}
fn default_duration_max() -> i32 {
    7200
}
fn default_rate_subject() -> i32 {
    60
}
fn default_rate_app() -> i32 {
    100
}

/// A new app. Defaults are the new-app form's.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppCreate {
    /// Exact web origins (`https://app.example.com`) whose pages may call the credential API
    /// from a browser (CORS).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    pub slug: String,
    pub name: String,
    #[serde(default = "default_true")]
    pub enabled: bool,
    pub region: String,
    pub bucket: String,
    #[schema(value_type = String, example = "federation_token")]
    pub mode: StsMode,
    #[serde(default)]
    pub role_arn: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    pub secret_id: String,
    /// Write-only.
    #[schema(value_type = String, format = Password)]
    pub secret_key: SecretString,
    #[serde(default)]
    pub sts_endpoint: Option<String>,
    #[serde(default = "default_duration")]
    pub duration_default: i32,
    #[serde(default = "default_duration_max")]
    pub duration_max: i32,
    #[serde(default)]
    pub min_remaining: Option<i32>,
    #[serde(default = "default_rate_subject")]
    pub rate_subject_per_minute: i32,
    #[serde(default = "default_rate_app")]
    pub rate_app_per_second: i32,
}

/// Changes to an app: fields left out keep their value. For `role_arn`, `external_id`,
/// `sts_endpoint` an empty string clears the value; `min_remaining: 0` goes back to the
/// default (half the duration). `secret_key` is write-only and kept when left out.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppPatch {
    /// Replaces the allowed web origins when given.
    pub allowed_origins: Option<Vec<String>>,
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    #[schema(value_type = Option<String>, example = "assume_role")]
    pub mode: Option<StsMode>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub secret_id: Option<String>,
    #[schema(value_type = Option<String>, format = Password)]
    pub secret_key: Option<SecretString>,
    pub sts_endpoint: Option<String>,
    pub duration_default: Option<i32>,
    pub duration_max: Option<i32>,
    pub min_remaining: Option<i32>,
    pub rate_subject_per_minute: Option<i32>,
    pub rate_app_per_second: Option<i32>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

impl AppCreate {
    fn into_input(self) -> AppInput {
        AppInput {
            slug: self.slug.trim().to_owned(),
            name: self.name.trim().to_owned(),
            enabled: self.enabled,
            region: self.region.trim().to_owned(),
            bucket: self.bucket.trim().to_owned(),
            mode: self.mode,
            role_arn: non_empty(self.role_arn),
            external_id: non_empty(self.external_id),
            secret_id: self.secret_id.trim().to_owned(),
            secret_key: Some(self.secret_key),
            sts_endpoint: non_empty(self.sts_endpoint),
            duration_default: self.duration_default,
            duration_max: self.duration_max,
            min_remaining: self.min_remaining,
            rate_subject_per_minute: self.rate_subject_per_minute,
            rate_app_per_second: self.rate_app_per_second,
            allowed_origins: self.allowed_origins,
        }
    }
}

impl AppPatch {
    /// The stored app with these changes.
    fn apply(self, a: &App) -> AppInput {
        let or_keep = |new: Option<String>, old: &Option<String>| match new {
            Some(v) => non_empty(Some(v)),
            None => old.clone(),
        };
        AppInput {
            slug: a.slug.clone(),
            name: self
                .name
                .map_or_else(|| a.name.clone(), |v| v.trim().to_owned()),
            enabled: self.enabled.unwrap_or(a.enabled),
            region: self
                .region
                .map_or_else(|| a.region.clone(), |v| v.trim().to_owned()),
            bucket: self
                .bucket
                .map_or_else(|| a.bucket.clone(), |v| v.trim().to_owned()),
            mode: self.mode.unwrap_or(a.mode),
            role_arn: or_keep(self.role_arn, &a.role_arn),
            external_id: or_keep(self.external_id, &a.external_id),
            secret_id: self
                .secret_id
                .map_or_else(|| a.secret_id.clone(), |v| v.trim().to_owned()),
            secret_key: self.secret_key,
            sts_endpoint: or_keep(self.sts_endpoint, &a.sts_endpoint),
            duration_default: self.duration_default.unwrap_or(a.duration_default),
            duration_max: self.duration_max.unwrap_or(a.duration_max),
            min_remaining: match self.min_remaining {
                Some(0) => None,
                Some(m) => Some(m),
                None => a.min_remaining,
            },
            rate_subject_per_minute: self
                .rate_subject_per_minute
                .unwrap_or(a.rate_subject_per_minute),
            rate_app_per_second: self.rate_app_per_second.unwrap_or(a.rate_app_per_second),
            allowed_origins: self
                .allowed_origins
                .unwrap_or_else(|| a.allowed_origins.clone()),
        }
    }
}

fn checked(input: AppInput, creating: bool) -> Result<AppInput, ApiError> {
    let errs = validate_app(&input, creating);
    if errs.is_empty() {
        Ok(input)
    } else {
        Err(ApiError::Invalid(errs))
    }
}

/// Every app.
#[utoipa::path(get, operation_id = "apps_list", path = "/api/v1/apps", tag = "apps",
    responses((status = 200, description = "OK", body = Vec<AppView>), (status = 401, description = "Missing, unknown, revoked or expired API token", body = ErrorBody)),
    security(("api_token" = ["auditor"])))]
pub async fn list(state: State) -> Result<HttpResponse, ApiError> {
    let apps: Vec<AppView> = state
        .store
        .list_apps()
        .await?
        .iter()
        .map(AppView::from)
        .collect();
    Ok(HttpResponse::Ok().json(apps))
}

/// One app.
#[utoipa::path(get, operation_id = "apps_show", path = "/api/v1/apps/{slug}", tag = "apps",
    params(("slug" = String, Path)),
    responses((status = 200, description = "OK", body = AppView), (status = 404, description = "No such app, version, user or token", body = ErrorBody)),
    security(("api_token" = ["auditor"])))]
pub async fn show(state: State, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let app = app_or_404(&state, &slug).await?;
    Ok(HttpResponse::Ok().json(AppView::from(&app)))
}

/// Creates an app.
#[utoipa::path(post, operation_id = "apps_create", path = "/api/v1/apps", tag = "apps",
    request_body = AppCreate,
    responses((status = 201, description = "Created", body = AppView), (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "invalid fields, each named", body = ErrorBody)),
    security(("api_token" = ["admin"])))]
pub async fn create(
    state: State,
    caller: ApiCaller,
    Json(body): Json<AppCreate>,
) -> Result<HttpResponse, ApiError> {
    let input = checked(body.into_input(), true)?;
    let app = state.store.create_app(&caller.actor(), &input).await?;
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/api/v1/apps/{}", app.slug)))
        .json(AppView::from(&app)))
}

/// Changes an app (fields left out keep their value).
#[utoipa::path(patch, operation_id = "apps_update", path = "/api/v1/apps/{slug}", tag = "apps",
    params(("slug" = String, Path)),
    request_body = AppPatch,
    responses((status = 200, description = "OK", body = AppView), (status = 404, description = "No such app, version, user or token", body = ErrorBody),
        (status = 422, description = "Invalid fields, each named in `error.fields`", body = ErrorBody)),
    security(("api_token" = ["admin"])))]
pub async fn update(
    state: State,
    caller: ApiCaller,
    slug: web::Path<String>,
    Json(body): Json<AppPatch>,
) -> Result<HttpResponse, ApiError> {
    let app = app_or_404(&state, &slug).await?;
    let input = checked(body.apply(&app), false)?;
    let app = state
        .store
        .update_app(&caller.actor(), app.id, &input)
        .await?;
    Ok(HttpResponse::Ok().json(AppView::from(&app)))
}

async fn set_enabled(
    state: State,
    caller: ApiCaller,
    slug: &str,
    enabled: bool,
) -> Result<HttpResponse, ApiError> {
    let app = app_or_404(&state, slug).await?;
    state
        .store
        .set_app_enabled(&caller.actor(), app.id, enabled)
        .await?;
    let app = app_or_404(&state, slug).await?;
    Ok(HttpResponse::Ok().json(AppView::from(&app)))
}

/// Enables an app.
#[utoipa::path(post, operation_id = "apps_enable", path = "/api/v1/apps/{slug}/enable", tag = "apps",
    params(("slug" = String, Path)),
    responses((status = 200, description = "OK", body = AppView), (status = 404, description = "No such app, version, user or token", body = ErrorBody)),
    security(("api_token" = ["admin"])))]
pub async fn enable(
    state: State,
    caller: ApiCaller,
    slug: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_enabled(state, caller, &slug, true).await
}

/// Disables an app: its users get 403 `app_disabled` at once.
#[utoipa::path(post, operation_id = "apps_disable", path = "/api/v1/apps/{slug}/disable", tag = "apps",
    params(("slug" = String, Path)),
    responses((status = 200, description = "OK", body = AppView), (status = 404, description = "No such app, version, user or token", body = ErrorBody)),
    security(("api_token" = ["admin"])))]
pub async fn disable(
    state: State,
    caller: ApiCaller,
    slug: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_enabled(state, caller, &slug, false).await
}

/// An app's JWT settings (the HS secret is write-only: only whether one is stored).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JwtView {
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub has_hs_secret: bool,
    /// PEM public keys.
    pub public_keys: Vec<String>,
    pub jwks_url: Option<String>,
    pub user_claim: String,
    pub leeway_seconds: i32,
}

impl JwtView {
    fn from_auth(a: Option<&AppAuth>) -> Self {
        match a {
            Some(a) => Self {
                issuer: a.issuer.clone(),
                audiences: a.audiences.clone(),
                algorithms: a.algorithms.clone(),
                has_hs_secret: a.hs_secret.is_some(),
                public_keys: a.public_keys.clone(),
                jwks_url: a.jwks_url.clone(),
                user_claim: a.user_claim.clone(),
                leeway_seconds: a.leeway_seconds,
            },
            None => Self {
                issuer: None,
                audiences: Vec::new(),
                algorithms: Vec::new(),
                has_hs_secret: false,
                public_keys: Vec::new(),
                jwks_url: None,
                user_claim: "sub".into(),
                leeway_seconds: 60,
            },
        }
    }
}

fn default_user_claim() -> String {
    "sub".into()
}
fn default_leeway() -> i32 {
    60
}

/// JWT settings to save (they replace the stored ones, except a left-out `hs_secret`, which
/// keeps the stored secret).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtInput {
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    /// e.g. `["RS256", "ES256"]`.
    pub algorithms: Vec<String>,
    /// Write-only.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password)]
    pub hs_secret: Option<SecretString>,
    #[serde(default)]
    pub public_keys: Vec<String>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    #[serde(default = "default_leeway")]
    pub leeway_seconds: i32,
}

/// An app's JWT settings.
#[utoipa::path(get, operation_id = "apps_jwt", path = "/api/v1/apps/{slug}/jwt", tag = "apps",
    params(("slug" = String, Path)),
    responses((status = 200, description = "OK", body = JwtView), (status = 404, description = "No such app, version, user or token", body = ErrorBody)),
    security(("api_token" = ["admin"])))]
pub async fn jwt(state: State, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let app = app_or_404(&state, &slug).await?;
    let auth = state.store.app_auth(app.id).await?;
    Ok(HttpResponse::Ok().json(JwtView::from_auth(auth.as_ref())))
}

/// Saves an app's JWT settings (checked as the gateway compiles them).
#[utoipa::path(put, operation_id = "apps_set_jwt", path = "/api/v1/apps/{slug}/jwt", tag = "apps",
    params(("slug" = String, Path)),
    request_body = JwtInput,
    responses((status = 200, description = "OK", body = JwtView), (status = 404, description = "No such app, version, user or token", body = ErrorBody),
        (status = 422, description = "Invalid fields, each named in `error.fields`", body = ErrorBody)),
    security(("api_token" = ["admin"])))]
pub async fn set_jwt(
    state: State,
    caller: ApiCaller,
    slug: web::Path<String>,
    Json(body): Json<JwtInput>,
) -> Result<HttpResponse, ApiError> {
    let app = app_or_404(&state, &slug).await?;
    let input = AppAuthInput {
        issuer: non_empty(body.issuer),
        audiences: body.audiences,
        algorithms: body.algorithms,
        hs_secret: body.hs_secret,
        public_keys: body.public_keys,
        jwks_url: non_empty(body.jwks_url),
        user_claim: body.user_claim.trim().to_owned(),
        leeway_seconds: body.leeway_seconds,
    };
    let auth = state
        .store
        .set_app_auth(&caller.actor(), app.id, &input)
        .await?;
    Ok(HttpResponse::Ok().json(JwtView::from_auth(Some(&auth))))
}
