//! The policy editor: statements with actions (the COS action list plus custom ones),
//! resource patterns, conditions and the "shared by every user" mark; save-time validation
//! whose errors point at the field; a preview for a pasted JWT or claims; version history with
//! diffs, and rollback. Auditors get a read-only preview of the active policy.
//!
//! Everything works as plain form posts (`op` = save, add, remove:N, preview); `admin.js`
//! only refreshes the preview (and marks the fields at fault) as you type.

mod form;
pub(crate) mod preview;
mod versions;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use policy_store::{App, StoreError, TemplateDocument};

use super::{State, app_or_404, page, page_with, see_other};
use crate::error::AdminError;
use crate::forms::FormData;
use crate::session::CurrentUser;
use crate::view::{Layout, Zone};
pub use form::{ActionGroup, COS_ACTIONS, EditorForm};
pub use preview::PreviewView;
pub use versions::{diff, rollback, versions};

async fn user_claim(state: &State, app: &App) -> Result<String, AdminError> {
    Ok(state
        .store
        .app_auth(app.id)
        .await?
        .map(|a| a.user_claim)
        .unwrap_or_else(|| "sub".into()))
}

#[derive(Template)]
#[template(path = "admin/policy.html")]
struct EditorPage {
    layout: Layout,
    slug: String,
    active_version: Option<i32>,
    loaded_from: Option<i32>,
    editor: EditorForm,
    groups: &'static [ActionGroup],
    preview: PreviewView,
    live_errors: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "partials/_preview.html")]
struct PreviewFragment {
    preview: PreviewView,
    live_errors: Vec<(String, String)>,
}

#[derive(serde::Deserialize)]
pub struct EditorQuery {
    version: Option<i32>,
}

pub async fn editor(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    zone: Zone,
    slug: web::Path<String>,
    query: web::Query<EditorQuery>,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let (doc, loaded_from) = match query.version {
        Some(v) => (
            state
                .store
                .template_version(app.id, v)
                .await?
                .ok_or(AdminError::NotFound)?
                .document,
            Some(v),
        ),
        None => match state.store.active_template(app.id).await? {
            Some(t) => (t.document, None),
            None => (TemplateDocument::default_for_users(), None),
        },
    };
    let claim = user_claim(&state, &app).await?;
    let mut editor = EditorForm::from_document(&doc);
    // A version saved before a check was added is marked where it would now be refused.
    if let Err(errs) = doc.validate() {
        editor.apply(&doc, &errs);
    }
    let preview = preview::preview(&app, &claim, Some(&doc), "");
    page(&EditorPage {
        layout: Layout::new(&user, &zone, "apps", format!("Policy of {}", app.slug))
            .with_notice(&req),
        slug: app.slug.clone(),
        active_version: app.active_template_version,
        loaded_from,
        editor,
        groups: COS_ACTIONS,
        preview,
        live_errors: Vec::new(),
    })
}

pub async fn submit(
    state: State,
    user: CurrentUser,
    zone: Zone,
    slug: web::Path<String>,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let op = form.text("op");
    let (mut editor, doc) = EditorForm::read(&form, &op);
    let claim = user_claim(&state, &app).await?;
    let mut status = StatusCode::OK;
    if op == "save" {
        // An unreadable draft (conditions that are not JSON) already carries its errors.
        if let Some(doc) = &doc {
            let note = editor.note.clone();
            match state
                .store
                .save_template(&user.username, app.id, doc, Some(&note))
                .await
            {
                Ok(_) => {
                    return Ok(see_other(format!(
                        "/apps/{}/policy?notice=policy_saved",
                        app.slug
                    )));
                }
                Err(StoreError::Invalid(errs)) => editor.apply(doc, &errs),
                Err(e) => return Err(e.into()),
            }
        }
        status = StatusCode::UNPROCESSABLE_ENTITY;
    } else if op == "preview"
        && let Some(doc) = &doc
        && let Err(errs) = doc.validate()
    {
        editor.apply(doc, &errs);
    }
    let preview = preview::preview(&app, &claim, doc.as_ref(), &editor.preview_input);
    page_with(
        status,
        &EditorPage {
            layout: Layout::new(&user, &zone, "apps", format!("Policy of {}", app.slug)),
            slug: app.slug.clone(),
            active_version: app.active_template_version,
            loaded_from: None,
            editor,
            groups: COS_ACTIONS,
            preview,
            live_errors: Vec::new(),
        },
    )
}

/// The preview alone, for `admin.js` to swap in while typing, with the field errors of the
/// draft so that the script can mark those fields at once.
pub async fn preview_fragment(
    state: State,
    slug: web::Path<String>,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let (mut editor, doc) = EditorForm::read(&form, "preview");
    if let Some(doc) = &doc
        && let Err(errs) = doc.validate()
    {
        editor.apply(doc, &errs);
    }
    let claim = user_claim(&state, &app).await?;
    page(&PreviewFragment {
        preview: preview::preview(&app, &claim, doc.as_ref(), &editor.preview_input),
        live_errors: editor.live_errors(),
    })
}

#[derive(Template)]
#[template(path = "admin/policy_try.html")]
struct TryPage {
    layout: Layout,
    slug: String,
    version: Option<i32>,
    input: String,
    preview: PreviewView,
    live_errors: Vec<(String, String)>,
}

/// The read-only preview of the active policy (auditors too): what a pasted JWT's claims or
/// a claims object would get. Nothing is saved; the input is not kept.
pub async fn try_active(
    state: State,
    user: CurrentUser,
    zone: Zone,
    slug: web::Path<String>,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let input = form.get("preview_input").unwrap_or("").to_owned();
    let claim = user_claim(&state, &app).await?;
    let active = state.store.active_template(app.id).await?;
    let preview = match &active {
        Some(t) => preview::preview_saved(&app, &claim, &t.document, &input),
        None => PreviewView {
            state: "template",
            message: "This app has no policy yet: every request is refused with no_policy.".into(),
            ..PreviewView::default()
        },
    };
    page(&TryPage {
        layout: Layout::new(
            &user,
            &zone,
            "apps",
            format!("Try the policy of {}", app.slug),
        ),
        slug: app.slug.clone(),
        version: active.map(|t| t.version),
        // Claims JSON is shown again for editing; a pasted token is not.
        input: if input.trim_start().starts_with('{') {
            input
        } else {
            String::new()
        },
        preview,
        live_errors: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
