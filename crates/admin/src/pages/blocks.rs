//! Blocked subjects of an app (the per-user kill switch).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use policy_store::StoreError;

use super::{State, app_or_404, page_with, see_other};
use crate::error::AdminError;
use crate::forms::FormData;
use crate::session::CurrentUser;
use crate::view::{Layout, fmt_duration, fmt_time};

pub struct BlockRow {
    pub subject: String,
    pub reason: String,
    pub blocked_by: String,
    pub created_at: String,
    /// When the last credential issued to the subject stops working, if one still does.
    pub valid_until: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/blocks.html")]
struct BlocksPage {
    layout: Layout,
    slug: String,
    duration_max: String,
    blocks: Vec<BlockRow>,
    subject: String,
    reason: String,
    error: Option<String>,
}

async fn render(
    req: &HttpRequest,
    state: &State,
    user: &CurrentUser,
    slug: &str,
    status: StatusCode,
    (subject, reason, error): (String, String, Option<String>),
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(state, slug).await?;
    let mut blocks = Vec::new();
    for b in state.store.blocked_subjects(app.id).await? {
        let valid_until = state
            .store
            .latest_credential_expiry(&app.slug, &b.subject)
            .await?
            .map(fmt_time);
        blocks.push(BlockRow {
            subject: b.subject,
            reason: b.reason.unwrap_or_default(),
            blocked_by: b.blocked_by,
            created_at: fmt_time(b.created_at),
            valid_until,
        });
    }
    page_with(
        status,
        &BlocksPage {
            layout: Layout::new(user, "apps", format!("Blocked subjects of {}", app.slug))
                .with_notice(req),
            slug: app.slug,
            duration_max: fmt_duration(app.duration_max.into()),
            blocks,
            subject,
            reason,
            error,
        },
    )
}

pub async fn list(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    slug: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    render(
        &req,
        &state,
        &user,
        &slug,
        StatusCode::OK,
        (String::new(), String::new(), None),
    )
    .await
}

pub async fn add(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    slug: web::Path<String>,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let subject = form.text("subject");
    let reason = form.text("reason");
    match state
        .store
        .block_subject(&user.username, app.id, &subject, Some(&reason))
        .await
    {
        Ok(()) => Ok(see_other(format!(
            "/apps/{}/blocks?notice=blocked",
            app.slug
        ))),
        Err(StoreError::Invalid(errs)) => {
            let msg = errs
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            render(
                &req,
                &state,
                &user,
                &slug,
                StatusCode::UNPROCESSABLE_ENTITY,
                (subject, reason, Some(msg)),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn remove(
    state: State,
    user: CurrentUser,
    slug: web::Path<String>,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let subject = form.get("subject").unwrap_or("").to_owned();
    state
        .store
        .unblock_subject(&user.username, app.id, &subject)
        .await?;
    Ok(see_other(format!(
        "/apps/{}/blocks?notice=unblocked",
        app.slug
    )))
}
