//! Sessions, roles and CSRF, enforced by the middleware every route carries.
//!
//! - The session token is 256 random bits in an HttpOnly, SameSite=Strict cookie (Secure and
//!   `__Host-` prefixed outside dev). The database keeps only its SHA-256, with a per-session
//!   CSRF token and an expiry; a new token is issued at every sign-in.
//! - State-changing requests (every POST) are refused when `Sec-Fetch-Site` says another site
//!   sent them, and unless they carry the CSRF token (form field `csrf` or header
//!   `x-csrf-token`), compared in constant time. The sign-in form, which has no session yet,
//!   uses a double-submit token (a cookie and the same value in the form).
//! - The role is read from the database on every request, so a change applies at once.

use std::future::{Ready, ready};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use base64::Engine as _;
use policy_store::Role;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use crate::AdminState;
use crate::error::AdminError;
use crate::forms::FormData;

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (sign-in, assets, health).
    Public,
    /// Any signed-in user: admins and auditors (read-only pages).
    Auditor,
    /// Admins only (everything that changes something, and the pages that do it).
    Admin,
}

/// The signed-in user of this request (set by [`guard`]).
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: i64,
    pub username: String,
    pub role: Role,
    /// The session's CSRF token, for the forms on the page.
    pub csrf: String,
}

impl CurrentUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

impl FromRequest for CurrentUser {
    type Error = AdminError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<CurrentUser>()
                .cloned()
                .ok_or(AdminError::Unauthorized),
        )
    }
}

const SESSION_COOKIE_SECURE: &str = "__Host-stsgate_session";
const SESSION_COOKIE_PLAIN: &str = "stsgate_session";
const LOGIN_COOKIE_SECURE: &str = "__Host-stsgate_login";
const LOGIN_COOKIE_PLAIN: &str = "stsgate_login";

pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        SESSION_COOKIE_SECURE
    } else {
        SESSION_COOKIE_PLAIN
    }
}

pub fn login_cookie_name(secure: bool) -> &'static str {
    if secure {
        LOGIN_COOKIE_SECURE
    } else {
        LOGIN_COOKIE_PLAIN
    }
}

/// Length of a [`random_token`]: 32 bytes in unpadded base64url.
const TOKEN_LEN: usize = 43;

/// 256 random bits, base64url.
pub fn random_token() -> String {
    let mut buf = [0u8; 32];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Whether `token` has the shape [`random_token`] gives. Anything else cannot name a session,
/// so it is turned away without asking the database.
fn well_formed_token(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the database stores for a session token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A cookie with the attributes every admin cookie gets.
pub fn cookie(
    name: &'static str,
    value: String,
    secure: bool,
    max_age_secs: i64,
) -> Cookie<'static> {
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(CookieDuration::seconds(max_age_secs))
        .finish()
}

/// An expired cookie that makes the browser drop `name`.
pub fn removal_cookie(name: &'static str, secure: bool) -> Cookie<'static> {
    cookie(name, String::new(), secure, 0)
}

fn state(req: &HttpRequest) -> Result<web::Data<AdminState>, AdminError> {
    req.app_data::<web::Data<AdminState>>()
        .cloned()
        .ok_or_else(|| AdminError::internal("AdminState missing from app data"))
}

/// The session behind the request's cookie, if it is live.
pub async fn current_session(
    req: &HttpRequest,
) -> Result<Option<policy_store::AdminSession>, AdminError> {
    let state = state(req)?;
    let name = session_cookie_name(state.config.secure_cookies);
    let Some(token) = req.cookie(name).map(|c| c.value().to_owned()) else {
        return Ok(None);
    };
    if !well_formed_token(&token) {
        return Ok(None);
    }
    Ok(state.store.admin_session(&token_hash(&token)).await?)
}

/// Refuses requests that a browser marks as sent by another site. Absent (old browsers,
/// non-browser clients) and `same-origin` pass; `none` (typed into the address bar) is not a
/// way to send a form, so state changes refuse it too.
fn cross_site(req: &HttpRequest) -> bool {
    match req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
    {
        None => false,
        Some(v) => !v.eq_ignore_ascii_case("same-origin"),
    }
}

/// Reads the body (and puts it back for the handler) to find the `csrf` field, unless the
/// token came in the `x-csrf-token` header.
async fn presented_csrf(req: &mut ServiceRequest) -> Result<Option<String>, AdminError> {
    if let Some(h) = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
    {
        return Ok(Some(h.to_owned()));
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Ok(None);
    }
    let bytes = req
        .extract::<web::Bytes>()
        .await
        .map_err(|_| AdminError::BadRequest("the form is too large".into()))?;
    let token = FormData::parse(&bytes)
        .ok()
        .and_then(|f| f.get("csrf").map(str::to_owned));
    req.set_payload(Payload::from(bytes));
    Ok(token)
}

fn wants_page(req: &ServiceRequest) -> bool {
    req.method() == Method::GET || req.method() == Method::HEAD
}

/// Where an anonymous GET is sent: the sign-in page, remembering the page asked for.
fn to_login(req: &ServiceRequest) -> HttpResponse {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = if target == "/" {
        "/login".to_owned()
    } else {
        format!(
            "/login?{}",
            serde_urlencoded::to_string([("next", target)]).unwrap_or_default()
        )
    };
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// The middleware of every route: session, role, and for POSTs the origin and CSRF checks.
/// Refusals are rendered here (inside the request-id scope, under the security headers).
pub async fn guard(
    access: Access,
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    match check(access, &mut req).await {
        Ok(None) => Ok(next.call(req).await?.map_into_boxed_body()),
        Ok(Some(res)) => Ok(req.into_response(res)),
        Err(e) => Ok(req.into_response(e.error_response())),
    }
}

/// `Ok(None)`: go on to the handler; `Ok(Some(_))`: answer this instead (a redirect).
async fn check(
    access: Access,
    req: &mut ServiceRequest,
) -> Result<Option<HttpResponse>, AdminError> {
    let state = state(req.request())?;
    let changes_state = !wants_page(req);
    if changes_state && cross_site(req.request()) {
        tracing::warn!(path = %req.path(), "refused a cross-site state-changing request");
        return Err(AdminError::Csrf);
    }
    if access == Access::Public {
        if changes_state {
            // Only the sign-in form posts without a session: double-submit token.
            let cookie = req
                .cookie(login_cookie_name(state.config.secure_cookies))
                .map(|c| c.value().to_owned());
            let presented = presented_csrf(req).await?;
            match (cookie, presented) {
                (Some(c), Some(p)) if !c.is_empty() && constant_time_eq(&c, &p) => {}
                _ => return Err(AdminError::Csrf),
            }
        }
        return Ok(None);
    }
    let Some(session) = current_session(req.request()).await? else {
        if wants_page(req) {
            return Ok(Some(to_login(req)));
        }
        return Err(AdminError::Unauthorized);
    };
    if access == Access::Admin && session.user.role != Role::Admin {
        tracing::warn!(
            user = %session.user.username,
            path = %req.path(),
            "refused: auditors can only read"
        );
        return Err(AdminError::Forbidden(format!(
            "Your role ({}) can only read: the dashboard, the issuance log, the change log and the apps. Ask an admin to make this change.",
            session.user.role.as_str()
        )));
    }
    if changes_state {
        let presented = presented_csrf(req).await?;
        if !presented.is_some_and(|p| constant_time_eq(&p, &session.csrf_token)) {
            tracing::warn!(user = %session.user.username, path = %req.path(), "refused: bad CSRF token");
            return Err(AdminError::Csrf);
        }
    }
    req.extensions_mut().insert(CurrentUser {
        id: session.user.id,
        username: session.user.username.clone(),
        role: session.user.role,
        csrf: session.csrf_token.clone(),
    });
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = random_token();
        let b = random_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43); // 32 bytes, base64url without padding
        assert!(well_formed_token(&a));
        for bad in [
            "",
            &a[1..],
            &format!("{a}A"),
            &format!("{}=", &a[1..]),
            &format!("{}+", &a[1..]),
            "' OR 1=1 --aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(!well_formed_token(bad), "{bad:?}");
        }
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
        assert!(constant_time_eq(&a, &a.clone()));
        assert!(!constant_time_eq(&a, &b));
        assert!(!constant_time_eq("abc", "abcd"));
    }
}
