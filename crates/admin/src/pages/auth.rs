//! Sign-in and sign-out.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use policy_store::AdminUser;
use secrecy::SecretString;
use time::OffsetDateTime;

use super::{State, page_with, see_other};
use crate::error::AdminError;
use crate::forms::FormData;
use crate::password;
use crate::session::{
    self, CurrentUser, cookie, login_cookie_name, random_token, removal_cookie,
    session_cookie_name, token_hash,
};

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage {
    asset_version: &'static str,
    csrf: String,
    next: String,
    username: String,
    error: Option<String>,
    dev_hint: bool,
}

#[derive(serde::Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// Only local paths: never `//host`, `/\host` or a scheme.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.starts_with("/login")
                && n.len() <= 2048
                && !n.chars().any(|c| c.is_control() || c == '\\') =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// Renders the sign-in form with a fresh double-submit token.
fn login_page(
    state: &State,
    status: StatusCode,
    next: String,
    username: String,
    error: Option<String>,
) -> Result<HttpResponse, AdminError> {
    let secure = state.config.secure_cookies;
    let csrf = random_token();
    let mut res = page_with(
        status,
        &LoginPage {
            asset_version: crate::assets::version(),
            csrf: csrf.clone(),
            next,
            username,
            error,
            dev_hint: !secure,
        },
    )?;
    res.add_cookie(&cookie(login_cookie_name(secure), csrf, secure, 3600))
        .map_err(AdminError::internal)?;
    Ok(res)
}

pub async fn login_form(
    req: HttpRequest,
    state: State,
    query: web::Query<NextQuery>,
) -> Result<HttpResponse, AdminError> {
    let next = safe_next(query.next.as_deref());
    if session::current_session(&req).await?.is_some() {
        return Ok(see_other(next));
    }
    login_page(&state, StatusCode::OK, next, String::new(), None)
}

fn is_locked(user: &AdminUser) -> bool {
    user.locked_until
        .is_some_and(|t| t > OffsetDateTime::now_utc())
}

pub async fn login(
    req: HttpRequest,
    state: State,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let username = form.text("username");
    let password = SecretString::from(form.get("password").unwrap_or("").to_owned());
    let next = safe_next(form.get("next"));
    let user = if username.is_empty() || username.chars().count() > 64 {
        None
    } else {
        state.store.admin_user_by_name(&username).await?
    };
    // Exactly one argon2 verification on every path, so timing tells nothing.
    let usable = user.as_ref().filter(|u| !u.disabled && !is_locked(u));
    let ok = match usable {
        Some(u) => password::verify_password(password, u.password_hash.clone()).await,
        None => password::verify_dummy(password).await,
    };

    let config = &state.config;
    if let (true, Some(u)) = (ok, usable) {
        state.store.record_login_success(u.id).await?;
        // A new session id at every sign-in; whatever session the browser had is ended.
        if let Some(old) = req.cookie(session_cookie_name(config.secure_cookies)) {
            state
                .store
                .delete_admin_session(&token_hash(old.value()))
                .await?;
        }
        if let Err(e) = state.store.delete_expired_admin_sessions().await {
            tracing::warn!(error = %e, "could not sweep expired admin sessions");
        }
        let token = random_token();
        let ttl = config.session_ttl.as_secs().max(60) as i64;
        state
            .store
            .create_admin_session(u.id, &token_hash(&token), &random_token(), ttl)
            .await?;
        tracing::info!(user = %u.username, role = u.role.as_str(), "admin signed in");
        let mut res = see_other(next);
        res.add_cookie(&cookie(
            session_cookie_name(config.secure_cookies),
            token,
            config.secure_cookies,
            ttl,
        ))
        .map_err(AdminError::internal)?;
        res.add_cookie(&removal_cookie(
            login_cookie_name(config.secure_cookies),
            config.secure_cookies,
        ))
        .map_err(AdminError::internal)?;
        return Ok(res);
    }

    if let Some(u) = usable {
        let after = state
            .store
            .record_login_failure(
                u.id,
                config.max_failed_logins,
                config.lockout.as_secs() as i64,
            )
            .await?;
        if is_locked(&after) {
            tracing::warn!(user = %u.username, failures = after.failed_logins, "admin account locked after repeated sign-in failures");
        } else {
            tracing::info!(user = %u.username, failures = after.failed_logins, "admin sign-in failed");
        }
    } else {
        tracing::info!("admin sign-in refused (unknown, disabled or locked account)");
    }
    login_page(
        &state,
        StatusCode::UNAUTHORIZED,
        next,
        username,
        Some(format!(
            "Wrong username or password. After {} failures in a row an account is locked for {}.",
            config.max_failed_logins,
            crate::view::fmt_duration(config.lockout.as_secs() as i64)
        )),
    )
}

pub async fn logout(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
) -> Result<HttpResponse, AdminError> {
    let secure = state.config.secure_cookies;
    if let Some(c) = req.cookie(session_cookie_name(secure)) {
        state
            .store
            .delete_admin_session(&token_hash(c.value()))
            .await?;
    }
    tracing::info!(user = %user.username, "admin signed out");
    let mut res = see_other("/login");
    res.add_cookie(&removal_cookie(session_cookie_name(secure), secure))
        .map_err(AdminError::internal)?;
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_local() {
        assert_eq!(safe_next(Some("/apps/demo")), "/apps/demo");
        assert_eq!(safe_next(Some("/log?app=a&b=c")), "/log?app=a&b=c");
        for bad in [
            "//evil.example",
            "/\\evil",
            "https://evil",
            "javascript:alert(1)",
            "/login",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
