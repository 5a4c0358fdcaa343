//! `/api/v1/changes`: the admin change log, newest first, with the change-log page's filters.

use actix_web::HttpResponse;
use policy_store::{AdminChange, AdminChangeFilter, FieldError};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use super::State;
use super::error::{ApiError, ErrorBody};
use super::extract::Query;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChangeParams {
    /// An admin's name or `token:<name>`.
    pub actor: Option<String>,
    /// e.g. `app.update`, `template.save`, `subject.block`.
    pub action: Option<String>,
    /// An app slug or a username.
    pub target: Option<String>,
    /// RFC 3339.
    pub from: Option<String>,
    /// RFC 3339, exclusive.
    pub to: Option<String>,
    /// The `next` value of the previous page.
    pub before: Option<i64>,
    /// 1 to 1000, default 100.
    pub limit: Option<i64>,
}

/// One page of the change log.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangePage {
    pub items: Vec<AdminChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
}

/// The change log, newest first (before/after values have secrets redacted).
#[utoipa::path(get, operation_id = "changes_list", path = "/api/v1/changes", tag = "changes",
    params(ChangeParams),
    responses((status = 200, description = "OK", body = ChangePage), (status = 422, description = "Invalid fields, each named in `error.fields`", body = ErrorBody)),
    security(("api_token" = ["auditor"])))]
pub async fn list(state: State, Query(q): Query<ChangeParams>) -> Result<HttpResponse, ApiError> {
    let mut errs = Vec::new();
    let mut time = |field: &str, v: &Option<String>| {
        v.as_deref()
            .and_then(|v| match OffsetDateTime::parse(v.trim(), &Rfc3339) {
                Ok(t) => Some(t),
                Err(_) => {
                    errs.push(FieldError::new(
                        field,
                        "an RFC 3339 time such as 2024-05-01T13:00:00Z",
                    ));
                    None
                }
            })
    };
    let from = time("from", &q.from);
    let to = time("to", &q.to);
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        errs.push(FieldError::new("limit", format!("1 to {MAX_LIMIT}")));
    }
    if !errs.is_empty() {
        return Err(ApiError::Invalid(errs));
    }
    let keep = |v: Option<String>| v.filter(|s| !s.is_empty());
    let filter = AdminChangeFilter {
        actor: keep(q.actor),
        action: keep(q.action),
        target: keep(q.target),
        from,
        to,
    };
    let items = state
        .store
        .search_admin_changes(&filter, q.before, limit)
        .await?;
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|c| c.id))
        .flatten();
    Ok(HttpResponse::Ok().json(ChangePage { items, next }))
}
