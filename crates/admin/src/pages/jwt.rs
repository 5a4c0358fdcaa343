//! An app's JWT settings, and "test a token". The HS secret is write-only.
//!
//! The settings are checked by the store with the gateway's own compile step
//! (`policy_store::jwt`); this page puts each error on the field that must change. The token
//! test verifies a pasted token with the saved settings, signature included (see
//! [`crate::token_test`]).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use policy_store::jwt::MAX_STATIC_KEYS;
use policy_store::{AppAuth, AppAuthInput, JWT_ALGORITHMS, MIN_HS_SECRET_BYTES, StoreError};
use sha2::{Digest, Sha256};

use super::{State, app_or_404, page_with, see_other};
use crate::error::AdminError;
use crate::forms::{Errors, FormData, int, lines};
use crate::session::CurrentUser;
use crate::token_test::{TokenOutcome, TokenVerdict};
use crate::view::{Layout, Zone};

pub struct JwtForm {
    pub issuer: String,
    pub audiences: String,
    pub algorithms: Vec<String>,
    pub hs_secret_stored: bool,
    pub public_keys: String,
    pub jwks_url: String,
    pub user_claim: String,
    pub leeway_seconds: String,
    pub errors: Errors,
    /// A secret was typed but the settings were not saved: it is not sent back.
    pub hs_secret_dropped: bool,
}

impl JwtForm {
    fn from_auth(a: Option<&AppAuth>) -> Self {
        match a {
            Some(a) => Self {
                issuer: a.issuer.clone().unwrap_or_default(),
                audiences: a.audiences.join("\n"),
                algorithms: a.algorithms.clone(),
                hs_secret_stored: a.hs_secret.is_some(),
                public_keys: a.public_keys.join("\n\n"),
                jwks_url: a.jwks_url.clone().unwrap_or_default(),
                user_claim: a.user_claim.clone(),
                leeway_seconds: a.leeway_seconds.to_string(),
                errors: Errors::default(),
                hs_secret_dropped: false,
            },
            // Nothing ticked: the admin chooses the algorithms their identity provider uses.
            None => Self {
                issuer: String::new(),
                audiences: String::new(),
                algorithms: Vec::new(),
                hs_secret_stored: false,
                public_keys: String::new(),
                jwks_url: String::new(),
                user_claim: "sub".into(),
                leeway_seconds: "60".into(),
                errors: Errors::default(),
                hs_secret_dropped: false,
            },
        }
    }

    pub fn allows(&self, alg: &&str) -> bool {
        self.algorithms.iter().any(|a| a == alg)
    }
}

/// Splits pasted PEM text into keys: each ends at its `-----END …-----` line and keeps the
/// optional `kid: <id>` line before it. Left-over text becomes a key of its own, so that
/// validation reports it instead of dropping it.
pub fn split_pems(text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() && current.is_empty() {
            continue;
        }
        current.push(line);
        if line.starts_with("-----END ") {
            keys.push(current.join("\n").trim().to_owned());
            current.clear();
        }
    }
    let rest = current.join("\n");
    if !rest.trim().is_empty() {
        keys.push(rest.trim().to_owned());
    }
    keys
}

#[derive(Template)]
#[template(path = "admin/jwt.html")]
struct JwtPage {
    layout: Layout,
    slug: String,
    form: JwtForm,
    all_algorithms: &'static [&'static str],
    min_hs_bytes: usize,
    /// The token test: available on this server, and its last result.
    tester: bool,
    test: Option<TestView>,
}

/// A token test's result as the page shows it.
pub struct TestView {
    pub ok: bool,
    pub headline: String,
    pub detail: Vec<String>,
    pub seen: Vec<(String, String)>,
}

impl TestView {
    fn from(v: TokenVerdict) -> Self {
        match v.outcome {
            TokenOutcome::WouldIssue {
                subject,
                prefix,
                actions,
            } => Self {
                ok: true,
                headline: "This token would get credentials.".into(),
                detail: vec![
                    format!("User: {subject}"),
                    format!("Home prefix: {prefix}"),
                    format!("{} action(s): {}", actions.len(), actions.join(", ")),
                    "Nothing was issued and nothing was logged: this was only a test.".into(),
                ],
                seen: v.seen,
            },
            TokenOutcome::Refused {
                status,
                code,
                reason,
            } => Self {
                ok: false,
                headline: format!("This token would be refused: {status} {code}."),
                detail: vec![reason],
                seen: v.seen,
            },
        }
    }

    fn note(headline: impl Into<String>) -> Self {
        Self {
            ok: false,
            headline: headline.into(),
            detail: Vec::new(),
            seen: Vec::new(),
        }
    }
}

fn jwt_page(
    (user, zone): (&CurrentUser, &Zone),
    (state, status): (&State, StatusCode),
    slug: String,
    form: JwtForm,
    test: Option<TestView>,
) -> Result<HttpResponse, AdminError> {
    page_with(
        status,
        &JwtPage {
            layout: Layout::new(user, zone, "apps", format!("JWT settings of {slug}")),
            slug,
            form,
            all_algorithms: &JWT_ALGORITHMS,
            min_hs_bytes: MIN_HS_SECRET_BYTES,
            tester: state.token_tester.is_some(),
            test,
        },
    )
}

pub async fn edit_form(
    state: State,
    user: CurrentUser,
    zone: Zone,
    slug: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let auth = state.store.app_auth(app.id).await?;
    jwt_page(
        (&user, &zone),
        (&state, StatusCode::OK),
        app.slug,
        JwtForm::from_auth(auth.as_ref()),
        None,
    )
}

/// Store errors on the fields that must change. A missing key source is reported on the
/// keys (paste one) and on the algorithms (or untick the algorithm that needs it).
fn place_errors(errors: &mut Errors, input: &AppAuthInput, errs: Vec<policy_store::FieldError>) {
    let key_source_problem = input.public_keys.len() <= MAX_STATIC_KEYS;
    for e in errs {
        if e.field == "public_keys" && key_source_problem {
            errors.add(
                "algorithms",
                format!("{}: untick it, or add its key below", e.message),
            );
        }
        errors.add(e.field, e.message);
    }
}

pub async fn update(
    state: State,
    user: CurrentUser,
    zone: Zone,
    slug: web::Path<String>,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let stored = state.store.app_auth(app.id).await?;
    let mut errors = Errors::default();
    let input = AppAuthInput {
        issuer: form.opt("issuer"),
        audiences: lines(form.get("audiences").unwrap_or("")),
        algorithms: form
            .all("algorithms")
            .into_iter()
            .map(str::to_owned)
            .collect(),
        hs_secret: form.secret("hs_secret"),
        public_keys: split_pems(form.get("public_keys").unwrap_or("")),
        jwks_url: form.opt("jwks_url"),
        user_claim: form.text("user_claim"),
        leeway_seconds: int(&form, "leeway_seconds", &mut errors),
    };
    if errors.is_empty() {
        match state
            .store
            .set_app_auth(&user.username, app.id, &input)
            .await
        {
            Ok(_) => return Ok(see_other(format!("/apps/{}?notice=saved", app.slug))),
            Err(StoreError::Invalid(errs)) => place_errors(&mut errors, &input, errs),
            Err(e) => return Err(e.into()),
        }
    }
    let view = JwtForm {
        issuer: form.text("issuer"),
        audiences: form.get("audiences").unwrap_or("").to_owned(),
        algorithms: input.algorithms,
        hs_secret_stored: stored.is_some_and(|s| s.hs_secret.is_some()),
        public_keys: form.get("public_keys").unwrap_or("").to_owned(),
        jwks_url: form.text("jwks_url"),
        user_claim: form.text("user_claim"),
        leeway_seconds: form.text("leeway_seconds"),
        errors,
        hs_secret_dropped: input.hs_secret.is_some(),
    };
    jwt_page(
        (&user, &zone),
        (&state, StatusCode::UNPROCESSABLE_ENTITY),
        app.slug,
        view,
        None,
    )
}

/// POST `/apps/{slug}/jwt/test`: verifies the pasted token with the saved settings. The
/// token is neither shown again nor logged; tests are limited per session.
pub async fn test_token(
    state: State,
    user: CurrentUser,
    zone: Zone,
    slug: web::Path<String>,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let auth = state.store.app_auth(app.id).await?;
    let settings = JwtForm::from_auth(auth.as_ref());
    let token = form.get("token").unwrap_or("").trim();
    let token = token
        .strip_prefix("Bearer ")
        .or_else(|| token.strip_prefix("bearer "))
        .unwrap_or(token)
        .trim();
    // The session's own key: its CSRF token, hashed (one window per signed-in browser).
    let session = hex::encode(Sha256::digest(user.csrf.as_bytes()));
    let (status, view) = match &state.token_tester {
        None => (
            StatusCode::OK,
            TestView::note("Token tests are not available on this server."),
        ),
        Some(_) if token.is_empty() => (
            StatusCode::UNPROCESSABLE_ENTITY,
            TestView::note("Paste a token (the JWT your app would send) to test it."),
        ),
        Some(tester) => match state.token_tests.admit(&session) {
            Err(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                TestView::note(format!(
                    "Too many token tests from this session: try again in {wait} s."
                )),
            ),
            Ok(()) => (
                StatusCode::OK,
                TestView::from(tester.test(&app.slug, token).await),
            ),
        },
    };
    tracing::info!(user = %user.username, app = %app.slug, "token test");
    jwt_page(
        (&user, &zone),
        (&state, status),
        app.slug,
        settings,
        Some(view),
    )
}

#[cfg(test)]
mod tests {
    use super::split_pems;

    #[test]
    fn splits_pasted_keys() {
        let text = "kid: a\n-----BEGIN PUBLIC KEY-----\nAAA\n-----END PUBLIC KEY-----\n\n\
                    -----BEGIN PUBLIC KEY-----\nBBB\n-----END PUBLIC KEY-----\n  \n";
        let keys = split_pems(text);
        assert_eq!(keys.len(), 2);
        assert!(keys[0].starts_with("kid: a\n-----BEGIN"));
        assert!(keys[1].ends_with("-----END PUBLIC KEY-----"));
        assert_eq!(split_pems("garbage"), ["garbage"]);
        assert!(split_pems("  \n ").is_empty());
    }
}
