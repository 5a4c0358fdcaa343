//! `/api/v1/apps/{slug}/policy`: template versions, save, activate (rollback), and the
//! preview that renders a template for given claims exactly as the policy page does.

use actix_web::{HttpResponse, web};
use policy_store::{PolicyTemplateVersion, TemplateDocument};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::auth::ApiCaller;
use super::error::{ApiError, ErrorBody};
use super::extract::Json;
use super::{State, app_or_404};
use crate::pages::policy::preview::{self, PreviewView};

/// One saved version of a template.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TemplateVersionView {
    pub version: i32,
    pub active: bool,
    /// `{"prefix": "users/${sub}/", "statements": [...]}` (see the README's policy templates).
    #[schema(value_type = Object)]
    pub document: TemplateDocument,
    /// Who saved it: an admin's name or `token:<name>`.
    pub author: String,
    pub note: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl TemplateVersionView {
    fn new(v: PolicyTemplateVersion, active: Option<i32>) -> Self {
        Self {
            active: active == Some(v.version),
            version: v.version,
            document: v.document,
            author: v.author,
            note: v.note,
            created_at: v.created_at,
        }
    }
}

/// A new version to save; it becomes active at once.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateSave {
    #[schema(value_type = Object)]
    pub document: TemplateDocument,
    #[serde(default)]
    pub note: Option<String>,
}

/// Which saved version to make active.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Activate {
    pub version: i32,
}

/// Claims to render a template for: a draft `document`, or the active version when left out.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// The JWT claims (not a token: nothing is verified here).
    #[schema(value_type = Object)]
    pub claims: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub document: Option<TemplateDocument>,
}

/// What those claims would get.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewResult {
    /// `ok`: rendered; `refused`: the gateway would refuse the request (`message` says why);
    /// `template`: the draft is invalid (`template_errors`).
    pub state: String,
    pub message: String,
    pub subject: String,
    /// The rendered STS policy.
    #[schema(value_type = Option<Object>)]
    pub policy: Option<serde_json::Value>,
    pub actions: Vec<String>,
    pub prefix: String,
    /// Policy size in non-space characters, and STS's limit.
    pub chars: usize,
    pub max_chars: usize,
    pub policy_hash: String,
    /// Statements every user shares, in words.
    pub shared: Vec<String>,
    pub template_errors: Vec<String>,
}

impl From<PreviewView> for PreviewResult {
    fn from(v: PreviewView) -> Self {
        Self {
            state: v.state.to_owned(),
            message: v.message,
            subject: v.subject,
            policy: v.policy,
            actions: v.actions,
            prefix: v.prefix,
            chars: v.chars,
            max_chars: v.max_chars,
            policy_hash: v.hash,
            shared: v.shared,
            template_errors: v.template_errors,
        }
    }
}

/// Every version, newest first.
#[utoipa::path(get, operation_id = "policy_versions", path = "/api/v1/apps/{slug}/policy/versions", tag = "policy",
    params(("slug" = String, Path)),
    responses((status = 200, description = "OK", body = Vec<TemplateVersionView>), (status = 404, description = "No such app, version, user or token", body = ErrorBody)),
    security(("api_token" = ["auditor"])))]
pub async fn versions(state: State, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let app = app_or_404(&state, &slug).await?;
    let active = app.active_template_version;
    let list: Vec<TemplateVersionView> = state
        .store
        .template_versions(app.id)
        .await?
        .into_iter()
        .map(|v| TemplateVersionView::new(v, active))
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

/// One version.
#[utoipa::path(get, operation_id = "policy_version", path = "/api/v1/apps/{slug}/policy/versions/{version}", tag = "policy",
    params(("slug" = String, Path), ("version" = i32, Path)),
    responses((status = 200, description = "OK", body = TemplateVersionView), (status = 404, description = "No such app, version, user or token", body = ErrorBody)),
    security(("api_token" = ["auditor"])))]
pub async fn version(
    state: State,
    path: web::Path<(String, i32)>,
) -> Result<HttpResponse, ApiError> {
    let (slug, version) = path.into_inner();
    let app = app_or_404(&state, &slug).await?;
    let v = state
        .store
        .template_version(app.id, version)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{slug} has no policy version {version}")))?;
    Ok(HttpResponse::Ok().json(TemplateVersionView::new(v, app.active_template_version)))
}

/// The active version.
#[utoipa::path(get, operation_id = "policy_active", path = "/api/v1/apps/{slug}/policy", tag = "policy",
    params(("slug" = String, Path)),
    responses((status = 200, description = "OK", body = TemplateVersionView),
        (status = 404, description = "no such app, or no policy saved yet", body = ErrorBody)),
    security(("api_token" = ["auditor"])))]
pub async fn active(state: State, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let app = app_or_404(&state, &slug).await?;
    let v = state
        .store
        .active_template(app.id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{slug} has no policy yet")))?;
    Ok(HttpResponse::Ok().json(TemplateVersionView::new(v, app.active_template_version)))
}

/// Saves a new version and makes it active. Validation errors name the field
/// (`statements[0].resources[1]`).
#[utoipa::path(post, operation_id = "policy_save", path = "/api/v1/apps/{slug}/policy/versions", tag = "policy",
    params(("slug" = String, Path)),
    request_body = TemplateSave,
    responses((status = 201, description = "Created", body = TemplateVersionView), (status = 422, description = "Invalid fields, each named in `error.fields`", body = ErrorBody)),
    security(("api_token" = ["admin"])))]
pub async fn save(
    state: State,
    caller: ApiCaller,
    slug: web::Path<String>,
    Json(body): Json<TemplateSave>,
) -> Result<HttpResponse, ApiError> {
    let app = app_or_404(&state, &slug).await?;
    let note = body
        .note
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let v = state
        .store
        .save_template(&caller.actor(), app.id, &body.document, note)
        .await?;
    let active = Some(v.version);
    Ok(HttpResponse::Created().json(TemplateVersionView::new(v, active)))
}

/// Makes a saved version active again (rollback).
#[utoipa::path(post, operation_id = "policy_activate", path = "/api/v1/apps/{slug}/policy/activate", tag = "policy",
    params(("slug" = String, Path)),
    request_body = Activate,
    responses((status = 200, description = "OK", body = TemplateVersionView), (status = 404, description = "No such app, version, user or token", body = ErrorBody)),
    security(("api_token" = ["admin"])))]
pub async fn activate(
    state: State,
    caller: ApiCaller,
    slug: web::Path<String>,
    Json(body): Json<Activate>,
) -> Result<HttpResponse, ApiError> {
    let app = app_or_404(&state, &slug).await?;
    let v = state
        .store
        .template_version(app.id, body.version)
        .await?
        .ok_or_else(|| {
            ApiError::invalid("version", format!("{slug} has no version {}", body.version))
        })?;
    state
        .store
        .activate_template(&caller.actor(), app.id, body.version)
        .await?;
    Ok(HttpResponse::Ok().json(TemplateVersionView::new(v, Some(body.version))))
}

/// Renders a draft (or the active version) for the given claims. Nothing is saved.
#[utoipa::path(post, operation_id = "policy_preview", path = "/api/v1/apps/{slug}/policy/preview", tag = "policy",
    params(("slug" = String, Path)),
    request_body = PreviewRequest,
    responses((status = 200, description = "OK", body = PreviewResult), (status = 404, description = "No such app, version, user or token", body = ErrorBody)),
    security(("api_token" = ["auditor"])))]
pub async fn preview(
    state: State,
    slug: web::Path<String>,
    Json(body): Json<PreviewRequest>,
) -> Result<HttpResponse, ApiError> {
    let app = app_or_404(&state, &slug).await?;
    let claim = state
        .store
        .app_auth(app.id)
        .await?
        .map(|a| a.user_claim)
        .unwrap_or_else(|| "sub".into());
    let input = serde_json::Value::Object(body.claims).to_string();
    let view = match &body.document {
        Some(doc) => preview::preview(&app, &claim, Some(doc), &input),
        None => {
            let active = state
                .store
                .active_template(app.id)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("{slug} has no policy yet")))?;
            preview::preview_saved(&app, &claim, &active.document, &input)
        }
    };
    Ok(HttpResponse::Ok().json(PreviewResult::from(view)))
}
