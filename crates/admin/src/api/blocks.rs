//! `/api/v1/apps/{slug}/blocks`: the subjects blocked for an app (the kill switch). Subjects
//! are matched exactly as given, never trimmed.

use actix_web::{HttpResponse, web};
use policy_store::{BlockOutcome, BlockedSubject};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::auth::ApiCaller;
use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Query};
use super::{State, app_or_404};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BlockView {
    pub subject: String,
    pub reason: Option<String>,
    pub blocked_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<BlockedSubject> for BlockView {
    fn from(b: BlockedSubject) -> Self {
        Self {
            subject: b.subject,
            reason: b.reason,
            blocked_by: b.blocked_by,
            created_at: b.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    pub subject: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// What a block did.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlockResult {
    /// `blocked`, `reason_updated` or `already_blocked`.
    pub outcome: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubjectParam {
    /// The subject to unblock, exactly.
    pub subject: String,
}

/// The blocked subjects of an app.
#[utoipa::path(get, operation_id = "blocks_list", path = "/api/v1/apps/{slug}/blocks", tag = "blocks",
    params(("slug" = String, Path)),
    responses((status = 200, description = "OK", body = Vec<BlockView>), (status = 404, description = "No such app, version, user or token", body = ErrorBody)),
    security(("api_token" = ["auditor"])))]
pub async fn list(state: State, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let app = app_or_404(&state, &slug).await?;
    let list: Vec<BlockView> = state
        .store
        .blocked_subjects(app.id)
        .await?
        .into_iter()
        .map(BlockView::from)
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

/// Blocks a subject: its next request is refused with 403 `subject_blocked`.
#[utoipa::path(post, operation_id = "blocks_add", path = "/api/v1/apps/{slug}/blocks", tag = "blocks",
    params(("slug" = String, Path)),
    request_body = BlockRequest,
    responses((status = 200, description = "OK", body = BlockResult), (status = 422, description = "Invalid fields, each named in `error.fields`", body = ErrorBody)),
    security(("api_token" = ["admin"])))]
pub async fn add(
    state: State,
    caller: ApiCaller,
    slug: web::Path<String>,
    Json(body): Json<BlockRequest>,
) -> Result<HttpResponse, ApiError> {
    let app = app_or_404(&state, &slug).await?;
    if body.subject.is_empty() {
        return Err(ApiError::invalid("subject", "name the subject to block"));
    }
    let outcome = state
        .store
        .block_subject(
            &caller.actor(),
            app.id,
            &body.subject,
            body.reason.as_deref(),
        )
        .await?;
    let outcome = match outcome {
        BlockOutcome::Blocked => "blocked",
        BlockOutcome::ReasonUpdated => "reason_updated",
        BlockOutcome::AlreadyBlocked => "already_blocked",
    };
    Ok(HttpResponse::Ok().json(BlockResult {
        outcome: outcome.into(),
    }))
}

/// Unblocks a subject.
#[utoipa::path(delete, operation_id = "blocks_remove", path = "/api/v1/apps/{slug}/blocks", tag = "blocks",
    params(("slug" = String, Path), SubjectParam),
    responses((status = 204, description = "Done"), (status = 404, description = "No such app, version, user or token", body = ErrorBody)),
    security(("api_token" = ["admin"])))]
pub async fn remove(
    state: State,
    caller: ApiCaller,
    slug: web::Path<String>,
    Query(q): Query<SubjectParam>,
) -> Result<HttpResponse, ApiError> {
    let app = app_or_404(&state, &slug).await?;
    state
        .store
        .unblock_subject(&caller.actor(), app.id, &q.subject)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
