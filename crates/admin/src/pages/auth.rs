//! Sign-in and sign-out.

use std::net::IpAddr;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use policy_store::{AdminUser, SignInAdmission};
use secrecy::SecretString;

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

/// Where a sign-in came from: the peer, or behind a trusted reverse proxy the last entry of
/// the last `X-Forwarded-For` line (the one that proxy added; earlier ones are the client's).
/// (The public API's rule, `gateway::http::source_ip`; the two crates share no code.)
fn source_ip(req: &HttpRequest, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for
        && let Some(last) = req
            .headers()
            .get_all("x-forwarded-for")
            .last()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
        && let Ok(ip) = last.trim().parse()
    {
        return Some(ip);
    }
    req.peer_addr().map(|a| a.ip())
}

/// The username the database is asked about: one that cannot exist stands for any name that
/// is not a possible username, so every attempt runs the same statement.
fn lookup_name(username: &str) -> &str {
    if username.chars().count() > 64 {
        ""
    } else {
        username
    }
}

pub async fn login(
    req: HttpRequest,
    state: State,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let config = &state.config;
    let username = form.text("username");
    let password = SecretString::from(form.get("password").unwrap_or("").to_owned());
    let next = safe_next(form.get("next"));

    // Budgets first: a flood is answered before any database work or hashing.
    let source = source_ip(&req, config.trust_forwarded_for);
    if let Err(refusal) = state.sign_in_budget.take(source) {
        let retry_after = (refusal.wait.as_secs_f64().ceil() as u64).max(1);
        if let Some(refused) = refusal.report {
            tracing::warn!(source_ip = ?source, refused, "admin sign-in attempts refused with 429: too many attempts (one line per 10 s at most)");
        }
        let mut res = login_page(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            next,
            username,
            Some(format!(
                "Too many sign-in attempts. Try again in {}.",
                crate::view::fmt_duration(retry_after as i64)
            )),
        )?;
        res.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
        return Ok(res);
    }

    // The database admits (and counts) the attempt before any password is checked, so at most
    // `max_failed_logins` passwords are checked per lockout window however many attempts
    // arrive at once. Every path runs this one statement and exactly one argon2
    // verification, so neither the database work nor the timing tells which names exist.
    let admission = state
        .store
        .admit_sign_in(
            lookup_name(&username),
            config.max_failed_logins,
            config.lockout.as_secs() as i64,
        )
        .await?;
    let ok = match &admission {
        SignInAdmission::Admitted(u) => {
            password::verify_password(password, u.password_hash.clone()).await
        }
        SignInAdmission::Refused(_) => password::verify_dummy(password).await,
    };

    match admission {
        SignInAdmission::Admitted(u) if ok => return signed_in(&req, &state, &u, next).await,
        SignInAdmission::Admitted(u) if u.locked_until.is_some() => {
            tracing::warn!(user = %u.username, failures = u.failed_logins, "admin account locked after repeated sign-in failures");
        }
        SignInAdmission::Admitted(u) => {
            tracing::info!(user = %u.username, failures = u.failed_logins, "admin sign-in failed");
        }
        SignInAdmission::Refused(Some(u)) => {
            let reason = if u.disabled { "disabled" } else { "locked" };
            tracing::info!(user = %u.username, reason, "admin sign-in refused");
        }
        // The name is not logged: it may be a password typed into the wrong field.
        SignInAdmission::Refused(None) => {
            tracing::info!(reason = "unknown user", "admin sign-in refused");
        }
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

/// A correct password: clear the count, end whatever session the browser had, start a new one.
async fn signed_in(
    req: &HttpRequest,
    state: &State,
    u: &AdminUser,
    next: String,
) -> Result<HttpResponse, AdminError> {
    let config = &state.config;
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
    Ok(res)
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
