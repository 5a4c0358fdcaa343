//! `/api/v1/apply` and `/api/v1/export`: apps as code over the API (`stsgate apply|export
//! --server`). The apply runs in the store's one transaction, so a file is applied whole or
//! not at all, exactly as it is when the command line talks to the database; the export
//! shows what the other routes mask (the SecretId, the ExternalId), hence admin tokens only.
//! Secrets are write-only: accepted in an apply, never exported.

use actix_web::HttpResponse;
use policy_store::{AppSpec, ApplyOptions, Plan};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::State;
use super::auth::ApiCaller;
use super::error::{ApiError, ErrorBody};
use super::extract::Json;

/// The apps to converge to, and what to do with the rest.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    pub apps: Vec<AppSpec>,
    /// Compute the plan and change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Disable the apps not listed, and unblock the subjects an app does not list.
    #[serde(default)]
    pub prune: bool,
}

/// Every app with all its settings (secrets left out).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AppsDocument {
    pub apps: Vec<AppSpec>,
}

/// Converges the apps to the request in one transaction, and says what changed (or, dry,
/// what would). Invalid fields are all reported, named `apps.<slug>.<field>`; then nothing
/// changes.
#[utoipa::path(post, operation_id = "apps_apply", path = "/api/v1/apply", tag = "apps",
    request_body = ApplyRequest,
    responses((status = 200, description = "The plan, applied unless `dry_run`", body = Plan),
        (status = 422, description = "Invalid fields, each named in `error.fields`; nothing changed", body = ErrorBody)),
    security(("api_token" = ["admin"])))]
pub async fn apply(
    state: State,
    caller: ApiCaller,
    Json(body): Json<ApplyRequest>,
) -> Result<HttpResponse, ApiError> {
    let options = ApplyOptions {
        dry_run: body.dry_run,
        prune: body.prune,
    };
    let plan = state
        .store
        .apply_specs(&caller.actor(), &body.apps, options)
        .await?;
    Ok(HttpResponse::Ok().json(plan))
}

/// Every app with all its settings, in the form `/api/v1/apply` takes (secrets left out:
/// an apply without them keeps the stored ones).
#[utoipa::path(get, operation_id = "apps_export", path = "/api/v1/export", tag = "apps",
    responses((status = 200, description = "OK", body = AppsDocument)),
    security(("api_token" = ["admin"])))]
pub async fn export(state: State) -> Result<HttpResponse, ApiError> {
    let apps = state.store.export_specs().await?;
    Ok(HttpResponse::Ok().json(AppsDocument { apps }))
}
