//! API tokens (admins only): the list with last use, create (the token is shown once, in the
//! answer to the form, never in a URL) and revoke.

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use policy_store::{ApiToken, Role, StoreError};
use secrecy::ExposeSecret as _;
use time::OffsetDateTime;

use super::{State, page_with, see_other};
use crate::api::auth::issue_token;
use crate::api::tokens::expiry;
use crate::error::AdminError;
use crate::forms::FormData;
use crate::session::CurrentUser;
use crate::view::{Layout, Zone};

pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub role: &'static str,
    pub prefix: String,
    /// `active`, `revoked` or `expired`.
    pub status: &'static str,
    pub last_used: String,
    pub expires: String,
    pub created: String,
}

impl TokenRow {
    fn new(t: ApiToken, zone: &Zone, now: OffsetDateTime) -> Self {
        let status = if t.revoked_at.is_some() {
            "revoked"
        } else if t.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        };
        Self {
            id: t.id,
            role: t.role.as_str(),
            prefix: t.prefix,
            status,
            last_used: t
                .last_used_at
                .map_or_else(|| "never".into(), |at| zone.fmt(at)),
            expires: t
                .expires_at
                .map_or_else(|| "never".into(), |at| zone.fmt(at)),
            created: format!("{} by {}", zone.fmt(t.created_at), t.created_by),
            name: t.name,
        }
    }
}

pub struct Created {
    pub name: String,
    pub token: String,
}

#[derive(Template)]
#[template(path = "admin/tokens.html")]
struct TokensPage {
    layout: Layout,
    tokens: Vec<TokenRow>,
    created: Option<Created>,
    error: Option<String>,
    new_name: String,
    new_role: String,
    new_expires: String,
}

struct Shown {
    created: Option<Created>,
    error: Option<String>,
    form: (String, String, String),
}

async fn render(
    req: &HttpRequest,
    state: &State,
    (user, zone): (&CurrentUser, &Zone),
    status: StatusCode,
    shown: Shown,
) -> Result<HttpResponse, AdminError> {
    let now = OffsetDateTime::now_utc();
    let tokens = state
        .store
        .list_api_tokens()
        .await?
        .into_iter()
        .map(|t| TokenRow::new(t, zone, now))
        .collect();
    let (new_name, new_role, new_expires) = shown.form;
    let mut res = page_with(
        status,
        &TokensPage {
            layout: Layout::new(user, zone, "tokens", "API tokens").with_notice(req),
            tokens,
            created: shown.created,
            error: shown.error,
            new_name,
            new_role,
            new_expires,
        },
    )?;
    // The page may hold a new token: no cache keeps it.
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

pub async fn list(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    zone: Zone,
) -> Result<HttpResponse, AdminError> {
    let shown = Shown {
        created: None,
        error: None,
        form: (String::new(), "auditor".into(), "90d".into()),
    };
    render(&req, &state, (&user, &zone), StatusCode::OK, shown).await
}

pub async fn create(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    zone: Zone,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let name = form.text("name");
    let role_text = form.text("role");
    let expires_text = form.text("expires");
    let result = async {
        let role = Role::parse(&role_text).ok_or("Choose a role: admin or auditor.".to_owned())?;
        let expires_at = expiry(Some(&expires_text)).map_err(|_| {
            "Expires after: enter a lifetime such as 90d, 12h or 2w, or leave it empty.".to_owned()
        })?;
        let issued = issue_token(&name, role, expires_at);
        match state
            .store
            .create_api_token(&user.username, &issued.record)
            .await
        {
            Ok(t) => Ok(Created {
                name: t.name,
                token: issued.token.expose_secret().to_owned(),
            }),
            Err(StoreError::Invalid(errs)) => Err(errs
                .iter()
                .map(|e| match e.field.as_str() {
                    "name" => format!("Name: {}.", e.message),
                    _ => e.message.clone(),
                })
                .collect::<Vec<_>>()
                .join(" ")),
            Err(StoreError::Conflict(m)) => {
                Err(format!("{m}: choose another name or revoke it first."))
            }
            Err(e) => Err(AdminError::from(e).to_string()),
        }
    }
    .await;
    let (status, shown) = match result {
        Ok(created) => {
            tracing::info!(user = %user.username, token = %created.name, "API token created");
            (
                StatusCode::OK,
                Shown {
                    created: Some(created),
                    error: None,
                    form: (String::new(), "auditor".into(), "90d".into()),
                },
            )
        }
        Err(msg) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Shown {
                created: None,
                error: Some(msg),
                form: (name, role_text, expires_text),
            },
        ),
    };
    render(&req, &state, (&user, &zone), status, shown).await
}

pub async fn revoke(
    state: State,
    user: CurrentUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, AdminError> {
    state.store.revoke_api_token(&user.username, *id).await?;
    Ok(see_other("/tokens?notice=token_revoked"))
}
