//! [`StsClient`]: GetFederationToken and AssumeRole over TC3-signed JSON POSTs (reference §2).

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::policy::{Policy, PolicyError};
use crate::tc3::{self, Tc3Request};

pub const DEFAULT_ENDPOINT: &str = "https://sts.tencentcloudapi.com/";
pub const API_VERSION: &str = "2018-08-13";
const SERVICE: &str = "sts";
const JSON: &str = "application/json";

/// The largest STS answer read, in bytes. Real answers are a few KiB (the session token is at
/// most 4 KiB); an app's endpoint is admin-settable, so a hostile or broken one must not make
/// the gateway buffer without bound.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A permanent Tencent Cloud API key (an app's SecretId/SecretKey). Never logged.
#[derive(Clone)]
pub struct PermanentKey {
    pub secret_id: String,
    pub secret_key: SecretString,
}

impl PermanentKey {
    pub fn new(secret_id: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Self {
            secret_id: secret_id.into(),
            secret_key: SecretString::from(secret_key.into()),
        }
    }
}

impl fmt::Debug for PermanentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PermanentKey")
            .field("secret_id", &self.secret_id)
            .field("secret_key", &"[REDACTED]")
            .finish()
    }
}

/// Temporary credentials as STS returned them. The key and token are secrets.
#[derive(Debug, Clone)]
pub struct TemporaryCredentials {
    pub tmp_secret_id: String,
    pub tmp_secret_key: SecretString,
    pub session_token: SecretString,
    /// Unix seconds.
    pub expired_time: i64,
    /// ISO 8601 UTC; STS documents it as possibly null, in which case it is derived.
    pub expiration: String,
    pub request_id: String,
}

/// GetFederationToken parameters (reference §2.2).
#[derive(Debug, Clone)]
pub struct GetFederationToken<'a> {
    pub name: &'a str,
    pub policy: &'a Policy,
    pub duration_seconds: u64,
}

/// AssumeRole parameters (reference §2.3). stsgate always sends a policy.
#[derive(Debug, Clone)]
pub struct AssumeRole<'a> {
    pub role_arn: &'a str,
    pub role_session_name: &'a str,
    pub external_id: Option<&'a str>,
    pub policy: &'a Policy,
    pub duration_seconds: u64,
}

/// How a failure should be handled (reference §2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Rate limits, internal errors, network errors and timeouts: retry with backoff.
    Retryable,
    /// `AuthFailure.SignatureExpire`: this machine's clock is off; retrying cannot help.
    Clock,
    /// Everything else: the request or the key is wrong.
    Permanent,
}

/// Why an STS call failed. Messages never carry a key, a signature or a credential.
#[derive(Debug, thiserror::Error)]
pub enum StsError {
    #[error("STS refused the request: {code}: {message} (RequestId {request_id})")]
    Api {
        code: String,
        message: String,
        request_id: String,
    },
    #[error("STS did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed (refused, reset, TLS, DNS). The error has its URL removed; the
    /// message carries its cause chain.
    #[error("could not reach STS: {}", cause_chain(.0))]
    Network(reqwest::Error),
    #[error("STS answered HTTP {status}")]
    Http { status: u16 },
    /// The answer was longer than [`MAX_RESPONSE_BYTES`]; reading stopped there.
    #[error("STS answered with a body over {limit} bytes")]
    TooLarge { limit: usize },
    #[error("STS answered with a body that is not an STS response: {0}")]
    Decode(#[from] DecodeError),
    #[error("STS failed {attempts} times; last error: {last}")]
    RetriesExhausted { attempts: u32, last: Box<StsError> },
    /// The configured or per-app endpoint cannot be used.
    #[error("STS endpoint {endpoint:?} {reason}")]
    Endpoint {
        endpoint: String,
        reason: EndpointError,
    },
    /// The session policy fails validation; nothing was sent.
    #[error("invalid session policy: {0}")]
    Policy(#[from] PolicyError),
    /// A request header value (named, never shown) is not a valid header value.
    #[error("the {0} header value is not valid")]
    Header(&'static str),
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {}", cause_chain(.0))]
    Client(reqwest::Error),
}

/// Why an STS endpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("is not a valid URL ({0})")]
    Url(#[from] url::ParseError),
    #[error("must be http or https")]
    Scheme,
    #[error("has no host")]
    NoHost,
    #[error("must not carry a user name or password")]
    Userinfo,
}

/// Why an STS answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("it has neither Error nor Credentials and ExpiredTime")]
    Incomplete,
    /// A field no caller can use safely (a NUL or other control character, an absurd
    /// length, a time outside any calendar): the credential is refused, never handed out.
    #[error("its {0} is unusable")]
    Unusable(&'static str),
}

/// Longest TmpSecretId accepted (real ones are about 36 characters).
pub const MAX_TMP_SECRET_ID: usize = 256;
/// Longest TmpSecretKey or session token accepted.
const MAX_SECRET: usize = 16 * 1024;
/// Latest ExpiredTime accepted: 9999-12-31T23:59:59Z.
const MAX_EXPIRED_TIME: i64 = 253_402_300_799;

/// A short printable ASCII identifier (no spaces, no control characters).
fn usable_id(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
}

/// A secret that can travel in a JSON answer and an HTTP header as given.
fn usable_secret(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SECRET && !s.chars().any(char::is_control)
}

/// `error: cause: cause …`, for errors whose `Display` leaves the causes out (reqwest's do).
fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl StsError {
    pub fn class(&self) -> ErrorClass {
        match self {
            StsError::Api { code, .. } => classify_code(code),
            StsError::Timeout(_) | StsError::Network(_) => ErrorClass::Retryable,
            StsError::Http { status } if *status >= 500 || *status == 429 => ErrorClass::Retryable,
            StsError::RetriesExhausted { last, .. } => last.class(),
            StsError::Http { .. }
            | StsError::TooLarge { .. }
            | StsError::Decode(_)
            | StsError::Endpoint { .. }
            | StsError::Policy(_)
            | StsError::Header(_)
            | StsError::Client(_) => ErrorClass::Permanent,
        }
    }

    /// The STS error code, when STS answered with one (also through `RetriesExhausted`).
    pub fn code(&self) -> Option<&str> {
        match self {
            StsError::Api { code, .. } => Some(code),
            StsError::RetriesExhausted { last, .. } => last.code(),
            _ => None,
        }
    }

    /// The STS RequestId, when STS answered.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            StsError::Api { request_id, .. } => Some(request_id),
            StsError::RetriesExhausted { last, .. } => last.request_id(),
            _ => None,
        }
    }

    /// True when STS could not be reached or answered in time (as opposed to refusing).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StsError::Timeout(_) | StsError::Network(_) => true,
            StsError::Http { status } => *status >= 500,
            StsError::RetriesExhausted { last, .. } => last.is_unavailable(),
            _ => false,
        }
    }
}

/// Maps an STS error code to its retry class.
pub fn classify_code(code: &str) -> ErrorClass {
    if code.starts_with("RequestLimitExceeded")
        || code == "InvalidParameter.OverLimit"
        || code.starts_with("InternalError")
        || code == "ServiceUnavailable"
    {
        ErrorClass::Retryable
    } else if code == "AuthFailure.SignatureExpire" {
        ErrorClass::Clock
    } else {
        ErrorClass::Permanent
    }
}

/// Jittered exponential backoff for retryable failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. 1 disables retries.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No new attempt starts once this much time has passed since the first.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            budget: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// "Full jitter": a uniform delay in `[0, min(max, base * 2^(attempt-1))]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

#[derive(Debug, Clone)]
pub struct StsClientConfig {
    /// `https://sts.tencentcloudapi.com/`, a regional (`https://sts.ap-guangzhou.tencentcloudapi.com/`)
    /// or internal (`https://sts.internal.tencentcloudapi.com/`) endpoint, or an emulator.
    pub endpoint: String,
    /// The `X-TC-Region` header, e.g. `ap-guangzhou`.
    pub region: String,
    pub connect_timeout: Duration,
    /// Per attempt, from sending the request to the end of the body.
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl StsClientConfig {
    /// The longest one call can take, its retries and their backoff included: every attempt
    /// is bounded by `timeout`, and none starts once the retry budget has passed.
    pub fn longest_call(&self) -> Duration {
        let attempts = self.retry.max_attempts.max(1);
        let all = self
            .timeout
            .saturating_mul(attempts)
            .saturating_add(self.retry.max_delay.saturating_mul(attempts - 1));
        if attempts == 1 {
            all
        } else {
            all.min(self.retry.budget.saturating_add(self.timeout))
        }
    }
}

impl Default for StsClientConfig {
    fn default() -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            region: "ap-guangzhou".to_owned(),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
        }
    }
}

/// A pooled, keep-alive STS client. Cheap to clone; [`StsClient::for_endpoint`] shares the pool.
#[derive(Clone)]
pub struct StsClient {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    host: String,
    config: StsClientConfig,
}

impl fmt::Debug for StsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StsClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("region", &self.config.region)
            .finish()
    }
}

/// Checks an STS endpoint the way [`StsClient::for_endpoint`] will use it: an http(s) URL with
/// a host. Returns the URL and the `Host` value to sign. The store validates an app's endpoint
/// override with this same function, so it never saves one the client would refuse.
pub fn check_endpoint(endpoint: &str) -> Result<(reqwest::Url, String), EndpointError> {
    let url = reqwest::Url::parse(endpoint)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EndpointError::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EndpointError::Userinfo);
    }
    let host = url.host_str().ok_or(EndpointError::NoHost)?;
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    Ok((url, host))
}

fn parse_endpoint(endpoint: &str) -> Result<(reqwest::Url, String), StsError> {
    check_endpoint(endpoint).map_err(|reason| StsError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason,
    })
}

impl StsClient {
    pub fn new(config: StsClientConfig) -> Result<Self, StsError> {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("stsgate/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(StsError::Client)?;
        let (endpoint, host) = parse_endpoint(&config.endpoint)?;
        Ok(Self {
            http,
            endpoint,
            host,
            config,
        })
    }

    pub fn config(&self) -> &StsClientConfig {
        &self.config
    }

    /// The same connection pool, another endpoint and region (per-app overrides).
    pub fn for_endpoint(&self, endpoint: &str, region: &str) -> Result<Self, StsError> {
        let (url, host) = parse_endpoint(endpoint)?;
        let mut config = self.config.clone();
        config.endpoint = endpoint.to_owned();
        config.region = region.to_owned();
        Ok(Self {
            http: self.http.clone(),
            endpoint: url,
            host,
            config,
        })
    }

    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    pub async fn get_federation_token(
        &self,
        key: &PermanentKey,
        req: &GetFederationToken<'_>,
    ) -> Result<TemporaryCredentials, StsError> {
        validate_policy(req.policy)?;
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Body<'a> {
            name: &'a str,
            policy: String,
            duration_seconds: u64,
        }
        let body = Body {
            name: req.name,
            policy: req.policy.to_url_encoded(),
            duration_seconds: req.duration_seconds,
        };
        self.call(key, "GetFederationToken", &body).await
    }

    pub async fn assume_role(
        &self,
        key: &PermanentKey,
        req: &AssumeRole<'_>,
    ) -> Result<TemporaryCredentials, StsError> {
        validate_policy(req.policy)?;
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Body<'a> {
            role_arn: &'a str,
            role_session_name: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            external_id: Option<&'a str>,
            policy: String,
            duration_seconds: u64,
        }
        let body = Body {
            role_arn: req.role_arn,
            role_session_name: req.role_session_name,
            external_id: req.external_id,
            policy: req.policy.to_url_encoded(),
            duration_seconds: req.duration_seconds,
        };
        self.call(key, "AssumeRole", &body).await
    }

    async fn call<B: Serialize>(
        &self,
        key: &PermanentKey,
        action: &str,
        body: &B,
    ) -> Result<TemporaryCredentials, StsError> {
        // Serialise once: these exact bytes are hashed and sent (reference §1.8).
        let payload = serde_json::to_vec(body).expect("request bodies always serialize");
        let retry = &self.config.retry;
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let result = self.send_once(key, action, &payload).await;
            let err = match result {
                Ok(creds) => return Ok(creds),
                Err(err) => err,
            };
            tracing::debug!(
                action,
                attempt,
                sts_code = err.code(),
                sts_request_id = err.request_id(),
                error = %err,
                "STS attempt failed"
            );
            if err.class() != ErrorClass::Retryable {
                return Err(err);
            }
            let delay = retry.delay(attempt);
            if attempt >= retry.max_attempts || started.elapsed() + delay > retry.budget {
                return Err(if attempt > 1 {
                    StsError::RetriesExhausted {
                        attempts: attempt,
                        last: Box::new(err),
                    }
                } else {
                    err
                });
            }
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn send_once(
        &self,
        key: &PermanentKey,
        action: &str,
        payload: &[u8],
    ) -> Result<TemporaryCredentials, StsError> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let signed = tc3::sign(
            key.secret_key.expose_secret(),
            &Tc3Request {
                method: "POST",
                canonical_query: "",
                headers: &[("content-type", JSON), ("host", &self.host)],
                payload,
                service: SERVICE,
                timestamp,
            },
        );
        let mut headers = HeaderMap::new();
        let header = |name: &'static str, v: &str| {
            HeaderValue::from_str(v).map_err(|_| StsError::Header(name))
        };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
        headers.insert(HOST, header("Host", &self.host)?);
        headers.insert(
            AUTHORIZATION,
            header("Authorization", &signed.authorization(&key.secret_id))?,
        );
        headers.insert("X-TC-Action", header("X-TC-Action", action)?);
        headers.insert("X-TC-Version", HeaderValue::from_static(API_VERSION));
        headers.insert("X-TC-Region", header("X-TC-Region", &self.config.region)?);
        headers.insert(
            "X-TC-Timestamp",
            header("X-TC-Timestamp", &timestamp.to_string())?,
        );

        let mut response = self
            .http
            .post(self.endpoint.clone())
            .headers(headers)
            .body(payload.to_vec())
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let too_large = StsError::TooLarge {
            limit: MAX_RESPONSE_BYTES,
        };
        if response
            .content_length()
            .is_some_and(|len| len > MAX_RESPONSE_BYTES as u64)
        {
            return Err(too_large);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(e))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(too_large);
            }
            body.extend_from_slice(&chunk);
        }
        parse_response(status.as_u16(), &body)
    }

    fn transport_error(&self, e: reqwest::Error) -> StsError {
        if e.is_timeout() {
            StsError::Timeout(self.config.timeout)
        } else {
            // Strip the URL: it is not secret, but the cause chain is what helps.
            StsError::Network(e.without_url())
        }
    }
}

fn validate_policy(policy: &Policy) -> Result<(), StsError> {
    Ok(policy.validate()?)
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "Response")]
    response: RawResponse,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawResponse {
    error: Option<RawError>,
    request_id: Option<String>,
    credentials: Option<RawCredentials>,
    expired_time: Option<i64>,
    expiration: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawError {
    code: String,
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawCredentials {
    token: String,
    tmp_secret_id: String,
    tmp_secret_key: String,
}

/// Parses an STS answer. Errors arrive with HTTP 200, so the body decides (reference §2.5).
pub(crate) fn parse_response(status: u16, body: &[u8]) -> Result<TemporaryCredentials, StsError> {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(_) if status != 200 => return Err(StsError::Http { status }),
        Err(e) => return Err(DecodeError::Json(e).into()),
    };
    let r = envelope.response;
    let request_id = r.request_id.unwrap_or_default();
    if let Some(err) = r.error {
        return Err(StsError::Api {
            code: err.code,
            message: err.message,
            request_id,
        });
    }
    if status != 200 {
        return Err(StsError::Http { status });
    }
    let (Some(creds), Some(expired_time)) = (r.credentials, r.expired_time) else {
        return Err(DecodeError::Incomplete.into());
    };
    if !usable_id(&creds.tmp_secret_id, MAX_TMP_SECRET_ID) {
        return Err(DecodeError::Unusable("TmpSecretId").into());
    }
    if !(1..=MAX_EXPIRED_TIME).contains(&expired_time) {
        return Err(DecodeError::Unusable("ExpiredTime").into());
    }
    if !usable_secret(&creds.tmp_secret_key) {
        return Err(DecodeError::Unusable("TmpSecretKey").into());
    }
    if !usable_secret(&creds.token) {
        return Err(DecodeError::Unusable("Token").into());
    }
    // Expiration is informational (ExpiredTime is what counts): a broken one is derived.
    let expiration = r
        .expiration
        .filter(|s| usable_id(s, 64))
        .unwrap_or_else(|| iso8601(expired_time));
    Ok(TemporaryCredentials {
        tmp_secret_id: creds.tmp_secret_id,
        tmp_secret_key: SecretString::from(creds.tmp_secret_key),
        session_token: SecretString::from(creds.token),
        expired_time,
        expiration,
        request_id,
    })
}

/// `2023-11-14T22:13:20Z` for a Unix timestamp.
pub fn iso8601(unix: i64) -> String {
    let dt =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    dt.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_codes_as_the_reference_says() {
        for code in [
            "RequestLimitExceeded",
            "RequestLimitExceeded.UinLimitExceeded",
            "InvalidParameter.OverLimit",
            "InternalError",
            "InternalError.DbError",
            "ServiceUnavailable",
        ] {
            assert_eq!(classify_code(code), ErrorClass::Retryable, "{code}");
        }
        assert_eq!(
            classify_code("AuthFailure.SignatureExpire"),
            ErrorClass::Clock
        );
        for code in [
            "AuthFailure.SignatureFailure",
            "InvalidParameter.GrantOtherResource",
            "UnauthorizedOperation",
            "ResourceNotFound.RoleNotFound",
        ] {
            assert_eq!(classify_code(code), ErrorClass::Permanent, "{code}");
        }
    }

    #[test]
    fn parses_success_and_error_bodies() {
        let ok = br#"{"Response":{"Credentials":{"Token":"kTRt","TmpSecretId":"AKIDx","TmpSecretKey":"Eo28"},"Expiration":"2023-06-14T05:06:57Z","ExpiredTime":1686719217,"RequestId":"59a5"}}"#;
        let c = parse_response(200, ok).unwrap();
        assert_eq!(c.tmp_secret_id, "AKIDx");
        assert_eq!(c.tmp_secret_key.expose_secret(), "Eo28");
        assert_eq!(c.session_token.expose_secret(), "kTRt");
        assert_eq!(c.expired_time, 1686719217);
        assert_eq!(c.request_id, "59a5");
        assert!(
            !format!("{c:?}").contains("Eo28"),
            "Debug must not show the key"
        );

        let err = br#"{"Response":{"Error":{"Code":"InvalidParameter.GrantOtherResource","Message":"[QC_STS] cant grant other resource"},"RequestId":"r-1"}}"#;
        let e = parse_response(200, err).unwrap_err();
        assert_eq!(e.code(), Some("InvalidParameter.GrantOtherResource"));
        assert_eq!(e.request_id(), Some("r-1"));
        assert_eq!(e.class(), ErrorClass::Permanent);

        assert!(matches!(
            parse_response(502, b"<html>bad gateway</html>"),
            Err(StsError::Http { status: 502 })
        ));
        assert!(matches!(
            parse_response(200, b"{}"),
            Err(StsError::Decode(DecodeError::Json(_)))
        ));
        let incomplete = parse_response(200, br#"{"Response":{"RequestId":"x"}}"#).unwrap_err();
        assert!(
            matches!(incomplete, StsError::Decode(DecodeError::Incomplete)),
            "{incomplete:?}"
        );
        assert_eq!(incomplete.class(), ErrorClass::Permanent);
        assert!(!incomplete.is_unavailable());
    }

    #[test]
    fn unusable_answers_are_refused() {
        let body = |id: &str, expired: i64| {
            serde_json::to_vec(&serde_json::json!({"Response": {
                "Credentials": {"Token": "t", "TmpSecretId": id, "TmpSecretKey": "k"},
                "ExpiredTime": expired, "Expiration": "2023-06-14T05:06:57Z", "RequestId": "r"}}))
            .unwrap()
        };
        assert!(parse_response(200, &body("AKIDok", 1_700_000_000)).is_ok());
        for (id, expired, field) in [
            ("AKID\0x", 1_700_000_000, "TmpSecretId"),
            ("", 1_700_000_000, "TmpSecretId"),
            ("AKID x", 1_700_000_000, "TmpSecretId"),
            (&"A".repeat(5_000), 1_700_000_000, "TmpSecretId"),
            ("AKIDok", 0, "ExpiredTime"),
            ("AKIDok", -5, "ExpiredTime"),
            ("AKIDok", i64::MAX, "ExpiredTime"),
        ] {
            let e = parse_response(200, &body(id, expired)).unwrap_err();
            assert!(
                matches!(e, StsError::Decode(DecodeError::Unusable(f)) if f == field),
                "{e:?}"
            );
            assert_eq!(e.class(), ErrorClass::Permanent);
            assert!(!e.is_unavailable());
        }
        let nul_key = br#"{"Response":{"Credentials":{"Token":"t","TmpSecretId":"AKID","TmpSecretKey":"k\u0000"},"ExpiredTime":1700000000,"RequestId":"r"}}"#;
        assert!(matches!(
            parse_response(200, nul_key),
            Err(StsError::Decode(DecodeError::Unusable("TmpSecretKey")))
        ));
        let bad_expiration = br#"{"Response":{"Credentials":{"Token":"t","TmpSecretId":"AKID","TmpSecretKey":"k"},"Expiration":"2023\u0000","ExpiredTime":1700001800,"RequestId":"r"}}"#;
        assert_eq!(
            parse_response(200, bad_expiration).unwrap().expiration,
            "2023-11-14T22:43:20Z"
        );
    }

    #[test]
    fn missing_expiration_is_derived() {
        let ok = br#"{"Response":{"Credentials":{"Token":"t","TmpSecretId":"i","TmpSecretKey":"k"},"Expiration":null,"ExpiredTime":1700001800,"RequestId":"r"}}"#;
        assert_eq!(
            parse_response(200, ok).unwrap().expiration,
            "2023-11-14T22:43:20Z"
        );
    }

    #[test]
    fn the_longest_call_counts_every_attempt_and_its_backoff_within_the_budget() {
        let mut c = StsClientConfig::default();
        c.retry.max_attempts = 1;
        assert_eq!(c.longest_call(), Duration::from_secs(5));
        c.retry.max_attempts = 2;
        assert_eq!(c.longest_call(), Duration::from_secs(12));
        c.retry.max_attempts = 3;
        assert_eq!(c.longest_call(), Duration::from_secs(15));
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(800),
            budget: Duration::from_secs(10),
        };
        for _ in 0..200 {
            assert!(p.delay(1) <= Duration::from_millis(100));
            assert!(p.delay(3) <= Duration::from_millis(400));
            assert!(p.delay(30) <= Duration::from_millis(800));
        }
    }

    #[test]
    fn debug_output_hides_the_permanent_key() {
        let key = PermanentKey::new("AKIDabc", "supersecretvalue");
        assert!(!format!("{key:?}").contains("supersecretvalue"));
    }
}
