//! COS request authentication: the `q-sign-algorithm=sha1` signature in the `Authorization`
//! header or in the query string (presigned URLs), recomputed with sts-core's COS signer over
//! exactly the headers and parameters the client listed (reference §6).

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use sts_core::cos::{self, CosRequest};
use sts_core::encoding::{constant_time_eq, hmac_sha1, sha1_hex, uri_decode};

use super::addressing::{Target, host_candidates};
use super::{CosError, CosResult};
use crate::account::Account;
use crate::server::State;
use crate::store::IssuedCredential;

/// How far before issuance a temporary credential's `q-key-time` may start (clock skew).
pub(crate) const KEY_TIME_SKEW_SECS: i64 = 60;

/// Who signed the request.
#[derive(Debug, Clone)]
pub(crate) enum Principal {
    /// A configured account's permanent key: full access to its own APPID's buckets.
    Account(Account),
    /// A temporary credential the emulator's STS issued.
    Temporary(Box<IssuedCredential>),
}

impl Principal {
    pub(crate) fn appid(&self) -> &str {
        match self {
            Principal::Account(a) => &a.appid,
            Principal::Temporary(c) => &c.appid,
        }
    }

    pub(crate) fn secret_key(&self) -> &str {
        match self {
            Principal::Account(a) => &a.secret_key,
            Principal::Temporary(c) => &c.tmp_secret_key,
        }
    }

    pub(crate) fn secret_id(&self) -> &str {
        match self {
            Principal::Account(a) => &a.secret_id,
            Principal::Temporary(c) => &c.tmp_secret_id,
        }
    }
}

/// The fields of a COS authorization string.
#[derive(Debug, Default)]
struct CosAuthorization {
    algorithm: String,
    ak: String,
    sign_time: String,
    key_time: String,
    header_list: String,
    url_param_list: String,
    signature: String,
}

impl CosAuthorization {
    fn from_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        let mut auth = Self::default();
        for (k, v) in pairs {
            let slot = match k.to_ascii_lowercase().as_str() {
                "q-sign-algorithm" => &mut auth.algorithm,
                "q-ak" => &mut auth.ak,
                "q-sign-time" => &mut auth.sign_time,
                "q-key-time" => &mut auth.key_time,
                "q-header-list" => &mut auth.header_list,
                "q-url-param-list" => &mut auth.url_param_list,
                "q-signature" => &mut auth.signature,
                _ => continue,
            };
            *slot = v.trim().to_owned();
        }
        auth
    }
}

pub(crate) fn parse_window(raw: &str) -> Option<(i64, i64)> {
    let (start, end) = raw.split_once(';')?;
    Some((start.trim().parse().ok()?, end.trim().parse().ok()?))
}

fn signature_mismatch(why: &str) -> CosError {
    CosError::new(
        StatusCode::FORBIDDEN,
        "SignatureDoesNotMatch",
        format!(
            "The Signature you specified is invalid: {why}. Check your SecretKey and signing method."
        ),
    )
}

fn list(raw: &str) -> Vec<String> {
    raw.split(';')
        .map(|s| uri_decode(s.trim()).to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A request header as a string (first value), if present and valid UTF-8.
fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The session token, from the headers or the query (`x-cos-security-token` or, for CI hosts,
/// `x-ci-security-token`).
fn token<'a>(req: &'a HttpRequest, query: &'a [(String, String)]) -> Option<&'a str> {
    const NAMES: [&str; 2] = ["x-cos-security-token", "x-ci-security-token"];
    NAMES
        .iter()
        .find_map(|n| header(req, n))
        .or_else(|| {
            query
                .iter()
                .find(|(k, _)| NAMES.iter().any(|n| k.eq_ignore_ascii_case(n)))
                .map(|(_, v)| v.as_str())
        })
        .filter(|t| !t.is_empty())
}

/// Authenticates a COS request at the emulator's time `now`.
pub(crate) fn authenticate(
    req: &HttpRequest,
    query: &[(String, String)],
    target: &Target,
    state: &State,
    now: i64,
) -> CosResult<Principal> {
    let header_auth = header(req, "authorization").filter(|v| v.contains("q-sign-algorithm"));
    let auth = match header_auth {
        Some(raw) => CosAuthorization::from_pairs(raw.split('&').filter_map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim(), v))
                .or(Some((pair.trim(), "")))
        })),
        None if query
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("q-sign-algorithm")) =>
        {
            CosAuthorization::from_pairs(query.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        }
        None => {
            return Err(CosError::access_denied(
                "Access Denied. The request is not signed and the bucket is private.",
            ));
        }
    };
    let auth = CosAuthorization {
        // Header values may arrive percent-encoded by some clients.
        sign_time: uri_decode(&auth.sign_time),
        key_time: uri_decode(&auth.key_time),
        ..auth
    };
    if !auth.algorithm.eq_ignore_ascii_case("sha1") {
        return Err(CosError::access_denied(format!(
            "Access Denied. q-sign-algorithm must be sha1, got {:?}.",
            auth.algorithm
        )));
    }
    if auth.ak.is_empty() || auth.signature.is_empty() {
        return Err(CosError::access_denied(
            "Access Denied. The authorization lacks q-ak or q-signature.",
        ));
    }
    let (Some(sign_window), Some(key_window)) =
        (parse_window(&auth.sign_time), parse_window(&auth.key_time))
    else {
        return Err(CosError::access_denied(
            "Access Denied. q-sign-time and q-key-time must be `<start>;<end>` in Unix seconds.",
        ));
    };

    let principal = lookup(state, &auth.ak)?;
    verify_signature(req, query, target, &auth, principal.secret_key())?;
    check_token_and_expiry(&principal, token(req, query), now)?;
    check_window("q-sign-time", sign_window, now)?;
    check_window("q-key-time", key_window, now)?;
    check_key_time_validity(&principal, key_window)?;
    Ok(principal)
}

/// The principal a SecretId belongs to: a configured account or an issued credential.
pub(crate) fn lookup(state: &State, secret_id: &str) -> CosResult<Principal> {
    if let Some(account) = state
        .config
        .accounts
        .iter()
        .find(|a| a.secret_id == secret_id)
    {
        return Ok(Principal::Account(account.clone()));
    }
    match state.store.get(secret_id) {
        Some(cred) => Ok(Principal::Temporary(Box::new(cred))),
        None => Err(invalid_access_key_id(
            "The Access Key Id you provided does not exist in our records.",
        )),
    }
}

/// A temporary credential needs its own token and must not have expired.
pub(crate) fn check_token_and_expiry(
    principal: &Principal,
    token: Option<&str>,
    now: i64,
) -> CosResult<()> {
    let Principal::Temporary(cred) = principal else {
        return Ok(());
    };
    match token {
        None => {
            return Err(invalid_access_key_id(
                "The Access Key Id you provided is a temporary SecretId, which needs its \
                 x-cos-security-token (header or query parameter).",
            ));
        }
        Some(t) if !constant_time_eq(t, &cred.token) => {
            return Err(invalid_access_key_id(
                "The x-cos-security-token does not belong to this temporary SecretId.",
            ));
        }
        Some(_) => {}
    }
    if now > cred.expired_time {
        return Err(CosError::access_denied(format!(
            "Access Denied. The temporary credential has expired (ExpiredTime {}, server time {now}).",
            cred.expired_time
        )));
    }
    Ok(())
}

/// `q-sign-time` / `q-key-time` must cover the server's time.
pub(crate) fn check_window(name: &str, (start, end): (i64, i64), now: i64) -> CosResult<()> {
    if now > end {
        return Err(CosError::access_denied(format!(
            "Request has expired: {name} ends at {end}, server time is {now}."
        )));
    }
    if now < start {
        return Err(CosError::access_denied(format!(
            "Request is not yet valid: {name} starts at {start}, server time is {now}."
        )));
    }
    Ok(())
}

/// A temporary key's `q-key-time` must start within the credential's validity.
pub(crate) fn check_key_time_validity(
    principal: &Principal,
    (start, _): (i64, i64),
) -> CosResult<()> {
    if let Principal::Temporary(cred) = principal
        && (start < cred.issued_at - KEY_TIME_SKEW_SECS || start > cred.expired_time)
    {
        return Err(CosError::access_denied(format!(
            "Access Denied. q-key-time starts at {start}, outside the temporary credential's \
             validity [{}, {}].",
            cred.issued_at - KEY_TIME_SKEW_SECS,
            cred.expired_time
        )));
    }
    Ok(())
}

fn invalid_access_key_id(message: &str) -> CosError {
    CosError::new(StatusCode::FORBIDDEN, "InvalidAccessKeyId", message)
}

fn verify_signature(
    req: &HttpRequest,
    query: &[(String, String)],
    target: &Target,
    auth: &CosAuthorization,
    secret_key: &str,
) -> CosResult<()> {
    let header_names = list(&auth.header_list);
    let param_names = list(&auth.url_param_list);

    let mut params: Vec<(&str, &str)> = Vec::with_capacity(param_names.len());
    for name in &param_names {
        let value = query
            .iter()
            .find(|(k, _)| k.to_ascii_lowercase() == *name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| {
                signature_mismatch(&format!(
                    "parameter `{name}` in q-url-param-list is not in the request"
                ))
            })?;
        params.push((name, value));
    }

    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(header_names.len());
    let mut host_at = None;
    for name in &header_names {
        if name == "host" {
            host_at = Some(headers.len());
            headers.push((name, ""));
            continue;
        }
        let value = header(req, name).map(str::trim).ok_or_else(|| {
            signature_mismatch(&format!(
                "header `{name}` in q-header-list is not in the request"
            ))
        })?;
        headers.push((name, value));
    }

    let hosts = match host_at {
        Some(_) => host_candidates(req),
        None => vec![String::new()],
    };
    let sign_key = hex::encode(hmac_sha1(secret_key.as_bytes(), auth.key_time.as_bytes()));
    let method = req.method().as_str();
    for path in &target.sign_paths {
        for host in &hosts {
            if let Some(at) = host_at {
                headers[at].1 = host;
            }
            // sts-core builds the HttpString; the times are applied here as sent, so that a
            // q-sign-time different from q-key-time is honoured as COS defines it.
            let http_string = cos::sign(
                secret_key,
                0,
                0,
                &CosRequest {
                    method,
                    path,
                    params: &params,
                    headers: &headers,
                },
            )
            .http_string;
            let string_to_sign = format!(
                "sha1\n{}\n{}\n",
                auth.sign_time,
                sha1_hex(http_string.as_bytes())
            );
            let expected = hex::encode(hmac_sha1(sign_key.as_bytes(), string_to_sign.as_bytes()));
            if constant_time_eq(&expected, &auth.signature.to_ascii_lowercase()) {
                return Ok(());
            }
        }
    }
    Err(signature_mismatch(
        "it does not match the request's method, path, listed headers and parameters",
    ))
}
