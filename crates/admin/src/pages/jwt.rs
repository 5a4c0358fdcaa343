//! An app's JWT settings. The HS secret is write-only.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use policy_store::{AppAuth, AppAuthInput, JWT_ALGORITHMS, MIN_HS_SECRET_BYTES, StoreError};

use super::{State, app_or_404, page_with, see_other};
use crate::error::AdminError;
use crate::forms::{Errors, FormData, int, lines};
use crate::session::CurrentUser;
use crate::view::Layout;

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
            },
            None => Self {
                issuer: String::new(),
                audiences: String::new(),
                algorithms: vec!["RS256".into()],
                hs_secret_stored: false,
                public_keys: String::new(),
                jwks_url: String::new(),
                user_claim: "sub".into(),
                leeway_seconds: "60".into(),
                errors: Errors::default(),
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
}

fn jwt_page(
    user: &CurrentUser,
    status: StatusCode,
    slug: String,
    form: JwtForm,
) -> Result<HttpResponse, AdminError> {
    page_with(
        status,
        &JwtPage {
            layout: Layout::new(user, "apps", format!("JWT settings of {slug}")),
            slug,
            form,
            all_algorithms: &JWT_ALGORITHMS,
            min_hs_bytes: MIN_HS_SECRET_BYTES,
        },
    )
}

pub async fn edit_form(
    state: State,
    user: CurrentUser,
    slug: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let auth = state.store.app_auth(app.id).await?;
    jwt_page(
        &user,
        StatusCode::OK,
        app.slug,
        JwtForm::from_auth(auth.as_ref()),
    )
}

pub async fn update(
    state: State,
    user: CurrentUser,
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
            Err(StoreError::Invalid(errs)) => errors.extend_store(errs),
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
    };
    jwt_page(&user, StatusCode::UNPROCESSABLE_ENTITY, app.slug, view)
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
