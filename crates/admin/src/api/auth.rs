//! Bearer API tokens: how they look, how they are stored, and the guard of every `/api/v1`
//! route.
//!
//! A token is `stsg_` and 256 random bits (base64url). The database keeps its SHA-256 and its
//! first characters. Only the `Authorization: Bearer` header authorizes the API: a session
//! cookie never does (so the API needs no CSRF token), and a token never opens a page.

use std::future::{Ready, ready};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, ResponseError, web};
use policy_store::{ApiToken, NewApiToken, Role};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use super::error::ApiError;
use crate::AdminState;
use crate::session::{Access, random_token, token_hash};

/// Every API token starts with this.
pub const TOKEN_PREFIX: &str = "stsg_";
/// Characters of a token kept to recognise it in lists (`stsg_` and six more).
const SHOWN_PREFIX_LEN: usize = TOKEN_PREFIX.len() + 6;
/// `stsg_` and 43 base64url characters.
const TOKEN_LEN: usize = TOKEN_PREFIX.len() + 43;

/// A freshly made token: the secret (shown once) and what the store keeps.
pub struct IssuedToken {
    pub token: SecretString,
    pub record: NewApiToken,
}

/// Makes a new token named `name`.
pub fn issue_token(name: &str, role: Role, expires_at: Option<OffsetDateTime>) -> IssuedToken {
    let token = format!("{TOKEN_PREFIX}{}", random_token());
    let record = NewApiToken {
        name: name.to_owned(),
        role,
        token_hash: token_hash(&token),
        prefix: token[..SHOWN_PREFIX_LEN].to_owned(),
        expires_at,
    };
    IssuedToken {
        token: SecretString::from(token),
        record,
    }
}

/// Reads a lifetime such as `90d`, `12h`, `30m` or `2w` (at least a minute, at most ten
/// years).
pub fn parse_lifetime(text: &str) -> Option<time::Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().ok()?;
    let secs = match unit {
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        "w" => n.checked_mul(7 * 86_400)?,
        _ => return None,
    };
    (60..=10 * 366 * 86_400)
        .contains(&secs)
        .then(|| time::Duration::seconds(secs))
}

fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token.starts_with(TOKEN_PREFIX)
        && token[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Who is calling the API: a live token.
#[derive(Debug, Clone)]
pub struct ApiCaller {
    pub token: ApiToken,
}

impl ApiCaller {
    /// How the change log names this caller's changes: `token:<name>`.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token.name)
    }

    pub fn role(&self) -> Role {
        self.token.role
    }
}

impl FromRequest for ApiCaller {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<ApiCaller>()
                .cloned()
                .ok_or(ApiError::MissingToken),
        )
    }
}

/// The presented bearer token, if the header has one.
fn bearer(req: &ServiceRequest) -> Option<SecretString> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| SecretString::from(token.trim().to_owned()))
}

/// The middleware of every `/api/v1` route: a live token whose role the route allows.
pub async fn guard(
    access: Access,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    match check(access, &req).await {
        Ok(()) => Ok(next.call(req).await?.map_into_boxed_body()),
        Err(e) => Ok(req.into_response(e.error_response())),
    }
}

async fn check(access: Access, req: &ServiceRequest) -> Result<(), ApiError> {
    if access == Access::Public {
        return Ok(());
    }
    let state = req
        .app_data::<web::Data<AdminState>>()
        .cloned()
        .ok_or_else(|| ApiError::internal("AdminState missing from app data"))?;
    let Some(token) = bearer(req) else {
        return Err(ApiError::MissingToken);
    };
    if !well_formed(token.expose_secret()) {
        return Err(ApiError::InvalidToken);
    }
    let Some(token) = state
        .store
        .use_api_token(&token_hash(token.expose_secret()))
        .await?
    else {
        tracing::warn!(path = %req.path(), "refused an unknown, revoked or expired API token");
        return Err(ApiError::InvalidToken);
    };
    if access == Access::Admin && token.role != Role::Admin {
        tracing::warn!(token = %token.name, path = %req.path(), "refused: auditor token");
        return Err(ApiError::Forbidden(format!(
            "this token's role ({}) can only read; this route needs an admin token",
            token.role.as_str()
        )));
    }
    req.extensions_mut().insert(ApiCaller { token });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_a_prefix_and_are_stored_as_hashes() {
        let a = issue_token("ci", Role::Admin, None);
        let b = issue_token("ci", Role::Admin, None);
        let secret = a.token.expose_secret();
        assert!(secret.starts_with("stsg_"));
        assert!(well_formed(secret));
        assert_ne!(secret, b.token.expose_secret());
        assert_eq!(a.record.token_hash, token_hash(secret));
        assert!(!a.record.token_hash.contains(&secret[5..]));
        assert_eq!(a.record.prefix, &secret[..11]);
        for bad in [
            "",
            "stsg_",
            &secret[1..],
            &format!("{secret}x"),
            &secret.replace("stsg_", "stsx_"),
        ] {
            assert!(!well_formed(bad), "{bad:?}");
        }
    }

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("90d"), Some(time::Duration::days(90)));
        assert_eq!(parse_lifetime("12h"), Some(time::Duration::hours(12)));
        assert_eq!(parse_lifetime("2w"), Some(time::Duration::weeks(2)));
        assert_eq!(parse_lifetime("5m"), Some(time::Duration::minutes(5)));
        for bad in [
            "",
            "d",
            "90",
            "0d",
            "30s",
            "-1d",
            "99999999999999999999d",
            "20000d",
        ] {
            assert_eq!(parse_lifetime(bad), None, "{bad:?}");
        }
    }
}
