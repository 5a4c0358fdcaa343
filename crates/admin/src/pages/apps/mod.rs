//! Apps: list, create, edit, enable/disable, and the read-only app page auditors see.
//! Secrets are write-only: the SecretKey is never sent back, the SecretId only masked. The
//! AssumeRole ExternalId is shown in full only in the edit form (admins only), masked
//! everywhere else.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use policy_store::{
    App, AppInput, IssuanceFilter, IssuanceRecord, MAX_DURATION_SECONDS, StoreError, StsMode,
    mask_secret_id, validate_app,
};

use super::{State, app_or_404, page, page_with, see_other};
use crate::error::AdminError;
use crate::forms::{Errors, FormData, int, opt_int};
use crate::session::CurrentUser;
use crate::shown::{self, Piece, visible};
use crate::view::{Layout, Zone, fmt_duration};

mod integration;
pub use integration::Integration;

/// One row of the apps list.
pub struct AppRow {
    pub slug: String,
    pub name: String,
    pub enabled: bool,
    pub region: String,
    pub bucket: String,
    pub mode: &'static str,
    pub secret_id: String,
    pub durations: String,
    pub policy_version: String,
}

/// An AssumeRole ExternalId as every page but the edit form shows it: its last four
/// characters, and only when at least twelve stay hidden. Enough to tell two apart, never
/// enough to use one.
pub fn mask_external_id(external_id: &str) -> String {
    let n = external_id.chars().count();
    if n < 16 {
        return "[redacted]".to_owned();
    }
    let tail: String = external_id.chars().skip(n - 4).collect();
    format!("…{tail}")
}

fn mode_label(mode: StsMode) -> &'static str {
    match mode {
        StsMode::FederationToken => "GetFederationToken",
        StsMode::AssumeRole => "AssumeRole",
    }
}

#[derive(Template)]
#[template(path = "admin/apps.html")]
struct AppsPage {
    layout: Layout,
    apps: Vec<AppRow>,
}

pub async fn list(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    zone: Zone,
) -> Result<HttpResponse, AdminError> {
    let apps = state
        .store
        .list_apps()
        .await?
        .into_iter()
        .map(|a| AppRow {
            mode: mode_label(a.mode),
            secret_id: mask_secret_id(&a.secret_id),
            durations: format!(
                "{} (max {})",
                fmt_duration(a.duration_default.into()),
                fmt_duration(a.duration_max.into())
            ),
            policy_version: a
                .active_template_version
                .map(|v| format!("v{v}"))
                .unwrap_or_else(|| "none".into()),
            slug: a.slug,
            name: a.name,
            enabled: a.enabled,
            region: a.region,
            bucket: a.bucket,
        })
        .collect();
    page(&AppsPage {
        layout: Layout::new(&user, &zone, "apps", "Apps").with_notice(&req),
        apps,
    })
}

/// The app form's values as typed (secrets never included).
pub struct AppForm {
    pub creating: bool,
    pub slug: String,
    pub name: String,
    pub enabled: bool,
    pub region: String,
    pub bucket: String,
    pub mode: String,
    pub role_arn: String,
    pub external_id: String,
    /// What was typed into the SecretId field (empty on edit: the stored one is kept).
    pub secret_id: String,
    /// The stored SecretId, masked (edit only).
    pub secret_id_masked: Option<String>,
    pub sts_endpoint: String,
    pub duration_default: String,
    pub duration_max: String,
    pub min_remaining: String,
    pub rate_subject_per_minute: String,
    pub rate_app_per_second: String,
    /// The allowed web origins, one per line.
    pub allowed_origins: String,
    pub errors: Errors,
}

impl AppForm {
    fn blank() -> Self {
        Self {
            creating: true,
            slug: String::new(),
            name: String::new(),
            enabled: true,
            region: "ap-guangzhou".into(),
            bucket: String::new(),
            mode: "federation_token".into(),
            role_arn: String::new(),
            external_id: String::new(),
            secret_id: String::new(),
            secret_id_masked: None,
            sts_endpoint: String::new(),
            duration_default: "1800".into(),
            duration_max: "7200".into(),
            min_remaining: String::new(),
            rate_subject_per_minute: "60".into(),
            rate_app_per_second: "100".into(),
            allowed_origins: String::new(),
            errors: Errors::default(),
        }
    }

    fn from_app(a: &App) -> Self {
        Self {
            creating: false,
            slug: a.slug.clone(),
            name: a.name.clone(),
            enabled: a.enabled,
            region: a.region.clone(),
            bucket: a.bucket.clone(),
            mode: a.mode.as_str().into(),
            role_arn: a.role_arn.clone().unwrap_or_default(),
            external_id: a.external_id.clone().unwrap_or_default(),
            secret_id: String::new(),
            secret_id_masked: Some(mask_secret_id(&a.secret_id)),
            sts_endpoint: a.sts_endpoint.clone().unwrap_or_default(),
            duration_default: a.duration_default.to_string(),
            duration_max: a.duration_max.to_string(),
            min_remaining: a.min_remaining.map(|m| m.to_string()).unwrap_or_default(),
            rate_subject_per_minute: a.rate_subject_per_minute.to_string(),
            rate_app_per_second: a.rate_app_per_second.to_string(),
            allowed_origins: a.allowed_origins.join("\n"),
            errors: Errors::default(),
        }
    }

    /// Reads the posted form and checks it, reporting every problem at once: a field that
    /// is not a number gets its own error, and the others are still checked (with a harmless
    /// stand-in for the unreadable ones). `stored` is the app being edited (its slug and,
    /// when the field is left empty, its SecretId are kept).
    fn read(form: &FormData, stored: Option<&App>) -> (Self, Option<AppInput>) {
        let mut errors = Errors::default();
        let slug = match stored {
            Some(a) => a.slug.clone(),
            None => form.text("slug"),
        };
        let mode_text = form.text("mode");
        let mode = StsMode::parse(&mode_text);
        if mode.is_none() {
            errors.add("mode", "choose GetFederationToken or AssumeRole");
        }
        let typed_secret_id = form.text("secret_id");
        let secret_id = match (typed_secret_id.is_empty(), stored) {
            (true, Some(a)) => a.secret_id.clone(),
            _ => typed_secret_id.clone(),
        };
        let mut input = AppInput {
            slug: slug.clone(),
            name: form.text("name"),
            enabled: form.checked("enabled"),
            region: form.text("region"),
            bucket: form.text("bucket"),
            mode: mode.unwrap_or(StsMode::FederationToken),
            role_arn: form.opt("role_arn"),
            external_id: form.opt("external_id"),
            secret_id,
            secret_key: form.secret("secret_key"),
            sts_endpoint: form.opt("sts_endpoint"),
            duration_default: int(form, "duration_default", &mut errors),
            duration_max: int(form, "duration_max", &mut errors),
            min_remaining: opt_int(form, "min_remaining", &mut errors),
            rate_subject_per_minute: int(form, "rate_subject_per_minute", &mut errors),
            rate_app_per_second: int(form, "rate_app_per_second", &mut errors),
            // Every line, blank ones included, so that errors name the lines the admin sees.
            allowed_origins: form
                .get("allowed_origins")
                .unwrap_or("")
                .lines()
                .map(str::to_owned)
                .collect(),
        };
        // Stand-ins that pass every rule, so that an unreadable number hides no other error.
        if errors.has("duration_max") {
            input.duration_max = MAX_DURATION_SECONDS;
        }
        if errors.has("duration_default") {
            input.duration_default = input.duration_max.clamp(1, MAX_DURATION_SECONDS);
        }
        let unreadable = errors.clone();
        for e in validate_app(&input, stored.is_none()) {
            if !unreadable.has(&e.field) {
                errors.add(e.field, e.message);
            }
        }
        let view = Self {
            creating: stored.is_none(),
            slug,
            name: form.text("name"),
            enabled: input.enabled,
            region: input.region.clone(),
            bucket: input.bucket.clone(),
            mode: mode_text,
            role_arn: form.text("role_arn"),
            external_id: form.text("external_id"),
            secret_id: typed_secret_id,
            secret_id_masked: stored.map(|a| mask_secret_id(&a.secret_id)),
            sts_endpoint: form.text("sts_endpoint"),
            duration_default: form.text("duration_default"),
            duration_max: form.text("duration_max"),
            min_remaining: form.text("min_remaining"),
            rate_subject_per_minute: form.text("rate_subject_per_minute"),
            rate_app_per_second: form.text("rate_app_per_second"),
            allowed_origins: form.get("allowed_origins").unwrap_or("").to_owned(),
            errors,
        };
        let ok = view.errors.is_empty();
        (view, ok.then_some(input))
    }
}

#[derive(Template)]
#[template(path = "admin/app_form.html")]
struct AppFormPage {
    layout: Layout,
    form: AppForm,
}

fn form_page(
    (user, zone): (&CurrentUser, &Zone),
    status: StatusCode,
    form: AppForm,
) -> Result<HttpResponse, AdminError> {
    let title = if form.creating {
        "New app".to_owned()
    } else {
        format!("Edit {}", form.slug)
    };
    page_with(
        status,
        &AppFormPage {
            layout: Layout::new(user, zone, "apps", title),
            form,
        },
    )
}

pub async fn new_form(user: CurrentUser, zone: Zone) -> Result<HttpResponse, AdminError> {
    form_page((&user, &zone), StatusCode::OK, AppForm::blank())
}

/// Turns store refusals into field errors on the form; other errors pass through.
fn refused(form: &mut AppForm, e: StoreError) -> Result<(), AdminError> {
    match e {
        StoreError::Invalid(errs) => {
            form.errors.extend_store(errs);
            Ok(())
        }
        StoreError::Conflict(msg) => {
            form.errors.add("slug", msg);
            Ok(())
        }
        other => Err(other.into()),
    }
}

pub async fn create(
    state: State,
    user: CurrentUser,
    zone: Zone,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let (mut view, input) = AppForm::read(&form, None);
    if let Some(input) = input {
        match state.store.create_app(&user.username, &input).await {
            Ok(app) => {
                return Ok(see_other(format!("/apps/{}?notice=created", app.slug)));
            }
            Err(e) => refused(&mut view, e)?,
        }
    }
    form_page((&user, &zone), StatusCode::UNPROCESSABLE_ENTITY, view)
}

pub async fn edit_form(
    state: State,
    user: CurrentUser,
    zone: Zone,
    slug: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    form_page((&user, &zone), StatusCode::OK, AppForm::from_app(&app))
}

pub async fn update(
    state: State,
    user: CurrentUser,
    zone: Zone,
    slug: web::Path<String>,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let (mut view, input) = AppForm::read(&form, Some(&app));
    if let Some(input) = input {
        match state.store.update_app(&user.username, app.id, &input).await {
            Ok(app) => return Ok(see_other(format!("/apps/{}?notice=saved", app.slug))),
            Err(e) => refused(&mut view, e)?,
        }
    }
    form_page((&user, &zone), StatusCode::UNPROCESSABLE_ENTITY, view)
}

pub async fn set_enabled(
    state: State,
    user: CurrentUser,
    slug: web::Path<String>,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let enabled = match form.get("enabled") {
        Some("true") => true,
        Some("false") => false,
        _ => {
            return Err(AdminError::BadRequest(
                "Use the Enable or Disable button on the app's page.".into(),
            ));
        }
    };
    state
        .store
        .set_app_enabled(&user.username, app.id, enabled)
        .await?;
    let notice = if enabled { "enabled" } else { "disabled" };
    Ok(see_other(format!("/apps/{}?notice={notice}", app.slug)))
}

/// The JWT settings as shown on the app page (never the HS secret).
pub struct AuthView {
    pub issuer: String,
    pub audiences: String,
    pub algorithms: String,
    pub hs_secret_stored: bool,
    pub public_keys: usize,
    pub jwks_url: String,
    pub user_claim: String,
    pub leeway_seconds: i32,
}

pub struct LogRow {
    pub at: String,
    pub subject: Vec<Piece>,
    /// `app=…&subject=…` for the "this subject in the log" link.
    pub subject_query: String,
    /// The exact subject, encoded for the block link; empty when there is none.
    pub subject_key: String,
    pub outcome: &'static str,
    pub status: i16,
    pub source_ip: String,
}

impl LogRow {
    fn from(r: &IssuanceRecord, zone: &Zone) -> Self {
        let subject = r.subject.clone().unwrap_or_default();
        Self {
            at: zone.fmt(r.at),
            subject_query: serde_urlencoded::to_string([
                ("app", r.app.as_str()),
                ("subject", subject.as_str()),
            ])
            .unwrap_or_default(),
            subject_key: if subject.is_empty() {
                String::new()
            } else {
                shown::encode(&subject)
            },
            subject: visible(&subject),
            outcome: r.outcome.as_str(),
            status: r.http_status,
            source_ip: r.source_ip.clone().unwrap_or_default(),
        }
    }
}

/// The app's settings for display: no secret is in here, so no template can show one.
pub struct AppView {
    pub slug: String,
    pub name: String,
    pub enabled: bool,
    pub region: String,
    pub bucket: String,
    pub role_arn: String,
    /// Masked ([`mask_external_id`]).
    pub external_id: String,
    pub sts_endpoint: String,
    pub rate_subject_per_minute: i32,
    pub rate_app_per_second: i32,
    pub allowed_origins: Vec<String>,
}

impl AppView {
    fn from(a: &App) -> Self {
        Self {
            slug: a.slug.clone(),
            name: a.name.clone(),
            enabled: a.enabled,
            region: a.region.clone(),
            bucket: a.bucket.clone(),
            role_arn: a.role_arn.clone().unwrap_or_default(),
            external_id: a
                .external_id
                .as_deref()
                .map(mask_external_id)
                .unwrap_or_default(),
            sts_endpoint: a.sts_endpoint.clone().unwrap_or_default(),
            rate_subject_per_minute: a.rate_subject_per_minute,
            rate_app_per_second: a.rate_app_per_second,
            allowed_origins: a.allowed_origins.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/app.html")]
struct AppPage {
    layout: Layout,
    app: AppView,
    mode: &'static str,
    secret_id: String,
    durations: String,
    min_remaining: String,
    auth: Option<AuthView>,
    policy_json: Option<serde_json::Value>,
    policy_version: String,
    blocked: usize,
    recent: Vec<LogRow>,
    integration: Integration,
}

pub async fn show(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    zone: Zone,
    slug: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let stored_auth = state.store.app_auth(app.id).await?;
    let integration = Integration::new(
        &app,
        stored_auth.as_ref(),
        state.config.public_url.as_deref(),
    );
    let auth = stored_auth.map(|a| AuthView {
        issuer: a.issuer.unwrap_or_default(),
        audiences: a.audiences.join(", "),
        algorithms: a.algorithms.join(", "),
        hs_secret_stored: a.hs_secret.is_some(),
        public_keys: a.public_keys.len(),
        jwks_url: a.jwks_url.unwrap_or_default(),
        user_claim: a.user_claim,
        leeway_seconds: a.leeway_seconds,
    });
    let template = state.store.active_template(app.id).await?;
    let policy_version = template
        .as_ref()
        .map(|t| format!("v{} by {}, {}", t.version, t.author, zone.fmt(t.created_at)))
        .unwrap_or_default();
    let policy_json = template
        .map(|t| serde_json::to_value(&t.document))
        .transpose()
        .map_err(AdminError::internal)?;
    let blocked = state.store.blocked_subjects(app.id).await?.len();
    let recent = state
        .store
        .search_issuance(
            &IssuanceFilter {
                app: Some(app.slug.clone()),
                ..IssuanceFilter::default()
            },
            None,
            10,
        )
        .await?
        .iter()
        .map(|r| LogRow::from(r, &zone))
        .collect();
    page(&AppPage {
        layout: Layout::new(&user, &zone, "apps", app.name.clone()).with_notice(&req),
        integration,
        mode: mode_label(app.mode),
        secret_id: mask_secret_id(&app.secret_id),
        durations: format!(
            "default {}, max {}",
            fmt_duration(app.duration_default.into()),
            fmt_duration(app.duration_max.into())
        ),
        min_remaining: app
            .min_remaining
            .map(|m| fmt_duration(m.into()))
            .unwrap_or_else(|| "half of the duration".into()),
        auth,
        policy_json,
        policy_version,
        blocked,
        recent,
        app: AppView::from(&app),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_show_at_most_their_last_four_characters() {
        assert_eq!(mask_external_id("ext-7f3a9c2e4b1d8a6f"), "…8a6f");
        assert_eq!(mask_external_id("0123456789abcdef"), "…cdef");
        for short in ["", "ext-1", "0123456789abcde"] {
            assert_eq!(mask_external_id(short), "[redacted]");
        }
        assert_eq!(mask_external_id("éééééééééééééééé€€€€"), "…€€€€");
    }
}
