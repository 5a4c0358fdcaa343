//! Blocked subjects of an app (the per-user kill switch). Subjects are stored and matched
//! exactly as the token carries them (spaces included) and shown with visible markers for
//! what HTML would hide. Blocking and unblocking ask first, on a page of their own (no
//! JavaScript needed); the POST that follows acts.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use policy_store::{BlockOutcome, StoreError};

use super::{State, app_or_404, page, page_with, see_other};
use crate::error::AdminError;
use crate::forms::FormData;
use crate::session::CurrentUser;
use crate::shown::{self, Piece, visible};
use crate::view::{Layout, Zone, fmt_duration};

pub struct BlockRow {
    pub subject: Vec<Piece>,
    pub has_hidden: bool,
    /// The exact subject, encoded for the unblock link.
    pub key: String,
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
    (user, zone): (&CurrentUser, &Zone),
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
            .map(|t| zone.fmt(t));
        blocks.push(BlockRow {
            has_hidden: shown::has_hidden(&b.subject),
            key: shown::encode(&b.subject),
            subject: visible(&b.subject),
            reason: b.reason.unwrap_or_default(),
            blocked_by: b.blocked_by,
            created_at: zone.fmt(b.created_at),
            valid_until,
        });
    }
    page_with(
        status,
        &BlocksPage {
            layout: Layout::new(
                user,
                zone,
                "apps",
                format!("Blocked subjects of {}", app.slug),
            )
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
    zone: Zone,
    slug: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    render(
        &req,
        &state,
        (&user, &zone),
        &slug,
        StatusCode::OK,
        (String::new(), String::new(), None),
    )
    .await
}

/// The subject named by a form or query: `subject_b64` (exact, from links and confirm
/// pages) or `subject` as typed, never trimmed.
fn subject_of(form: &FormData) -> Result<String, AdminError> {
    match form.get("subject_b64").filter(|v| !v.is_empty()) {
        Some(b64) => shown::decode(b64).ok_or_else(|| {
            AdminError::BadRequest(
                "The subject in this link is damaged: go back and use the blocked-subjects page."
                    .into(),
            )
        }),
        None => Ok(form.get("subject").unwrap_or("").to_owned()),
    }
}

#[derive(Template)]
#[template(path = "admin/confirm_block.html")]
struct ConfirmBlockPage {
    layout: Layout,
    slug: String,
    /// `block` or `unblock`.
    action: &'static str,
    subject: Vec<Piece>,
    has_hidden: bool,
    key: String,
    subject_len: usize,
    reason: String,
    stored_reason: String,
    already: bool,
    duration_max: String,
}

/// GET `/apps/{slug}/blocks/confirm?subject=…&reason=…`: what will be blocked, exactly.
pub async fn confirm_block(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    zone: Zone,
    slug: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let query = FormData::parse(req.query_string().as_bytes())?;
    let subject = subject_of(&query)?;
    if subject.is_empty() {
        return render(
            &req,
            &state,
            (&user, &zone),
            &slug,
            StatusCode::OK,
            (String::new(), query.text("reason"), None),
        )
        .await;
    }
    let existing = state
        .store
        .blocked_subjects(app.id)
        .await?
        .into_iter()
        .find(|b| b.subject == subject);
    page(&ConfirmBlockPage {
        layout: Layout::new(
            &user,
            &zone,
            "apps",
            format!("Block a subject of {}", app.slug),
        ),
        slug: app.slug.clone(),
        action: "block",
        has_hidden: shown::has_hidden(&subject),
        key: shown::encode(&subject),
        subject_len: subject.chars().count(),
        subject: visible(&subject),
        reason: query.text("reason"),
        already: existing.is_some(),
        stored_reason: existing.and_then(|b| b.reason).unwrap_or_default(),
        duration_max: fmt_duration(app.duration_max.into()),
    })
}

/// GET `/apps/{slug}/blocks/remove?subject_b64=…`: what will be unblocked, exactly.
pub async fn confirm_unblock(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    zone: Zone,
    slug: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let query = FormData::parse(req.query_string().as_bytes())?;
    let subject = subject_of(&query)?;
    let existing = state
        .store
        .blocked_subjects(app.id)
        .await?
        .into_iter()
        .find(|b| b.subject == subject);
    page(&ConfirmBlockPage {
        layout: Layout::new(
            &user,
            &zone,
            "apps",
            format!("Unblock a subject of {}", app.slug),
        ),
        slug: app.slug.clone(),
        action: "unblock",
        has_hidden: shown::has_hidden(&subject),
        key: shown::encode(&subject),
        subject_len: subject.chars().count(),
        subject: visible(&subject),
        reason: String::new(),
        already: existing.is_some(),
        stored_reason: existing.and_then(|b| b.reason).unwrap_or_default(),
        duration_max: fmt_duration(app.duration_max.into()),
    })
}

pub async fn add(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    zone: Zone,
    slug: web::Path<String>,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let subject = subject_of(&form)?;
    let reason = form.text("reason");
    match state
        .store
        .block_subject(&user.username, app.id, &subject, Some(&reason))
        .await
    {
        Ok(outcome) => {
            let notice = match outcome {
                BlockOutcome::Blocked => "blocked",
                BlockOutcome::ReasonUpdated => "reason_updated",
                BlockOutcome::AlreadyBlocked => "already_blocked",
            };
            Ok(see_other(format!(
                "/apps/{}/blocks?notice={notice}",
                app.slug
            )))
        }
        Err(StoreError::Invalid(errs)) => {
            let msg = errs
                .iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>()
                .join(" ");
            render(
                &req,
                &state,
                (&user, &zone),
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
    let subject = subject_of(&form)?;
    state
        .store
        .unblock_subject(&user.username, app.id, &subject)
        .await?;
    Ok(see_other(format!(
        "/apps/{}/blocks?notice=unblocked",
        app.slug
    )))
}
