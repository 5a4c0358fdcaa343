//! [`PgStore`]: the [`Store`] trait over PostgreSQL (sqlx).
//!
//! Runtime-checked queries (`sqlx::query`), no `query!` macros. Every app-scoped statement
//! filters by app id. Every mutation runs in one transaction that also writes an
//! `admin_audit` row (secrets redacted) and `pg_notify('stsgate_changes', <app id>)`.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sqlx::postgres::{PgListener, PgRow};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row as _};
use time::OffsetDateTime;

use crate::crypto::Cipher;
use crate::model::*;
use crate::repo::{FieldError, Result, Store, StoreError};
use crate::template::TemplateDocument;

/// The `LISTEN/NOTIFY` channel for admin changes. The payload is the app id, or `admin`
/// for admin-user changes.
pub const CHANGES_CHANNEL: &str = "stsgate_changes";

/// Payload of notifications about admin users.
pub const ADMIN_NOTIFY_PAYLOAD: &str = "admin";

const REDACTED: &str = "[redacted]";
const FIELD_SECRET_KEY: &str = "secret_key";
const FIELD_HS_SECRET: &str = "hs_secret";

/// Longest `limit` honoured by the list queries.
pub const MAX_PAGE: i64 = 10_000;

/// Longest STS credential lifetime accepted for an app, in seconds (36 h).
pub const MAX_DURATION_SECONDS: i32 = 129_600;

/// JWT algorithms an app may allow.
pub const JWT_ALGORITHMS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

macro_rules! app_columns {
    () => {
        "id, slug, name, enabled, region, bucket, mode, role_arn, external_id, secret_id, \
         secret_key_enc, sts_endpoint, duration_default, duration_max, min_remaining, \
         rate_subject_per_minute, rate_app_per_second, active_template_version, updated_at"
    };
}

macro_rules! auth_columns {
    () => {
        "app_id, issuer, audiences, algorithms, hs_secret_enc, public_keys, jwks_url, \
         user_claim, leeway_seconds"
    };
}

macro_rules! template_columns {
    () => {
        "app_id, version, document, author, note, created_at"
    };
}

macro_rules! admin_user_columns {
    () => {
        "id, username, password_hash, role, disabled, failed_logins, locked_until, created_at"
    };
}

macro_rules! issuance_columns {
    () => {
        "id, at, app, subject, outcome, http_status, error_code, request_id, sts_request_id, \
         tmp_secret_id, policy_hash, template_version, actions, prefix, duration_seconds, \
         expired_time, host(source_ip) AS source_ip, user_agent, latency_us"
    };
}

/// The Postgres implementation of [`Store`]. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    cipher: Arc<Cipher>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    pub fn new(pool: PgPool, cipher: Cipher) -> Self {
        Self {
            pool,
            cipher: Arc::new(cipher),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the issuance_log monthly partitions from this month to `months_ahead` ahead
    /// (idempotent; run at start and, say, daily). Returns how many were created.
    pub async fn ensure_partitions(&self, months_ahead: i32) -> Result<i32> {
        Ok(
            sqlx::query_scalar("SELECT stsgate_ensure_issuance_partitions($1)")
                .bind(months_ahead)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// A listener subscribed to [`CHANGES_CHANNEL`].
    pub async fn listen_changes(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        Ok(listener)
    }

    fn app_from_row(&self, row: &PgRow) -> Result<App> {
        let raw = AppRow::from_row(row)?;
        let secret_key = self
            .cipher
            .decrypt(raw.id, FIELD_SECRET_KEY, &raw.secret_key_enc)?;
        Ok(App {
            id: raw.id,
            slug: raw.slug,
            name: raw.name,
            enabled: raw.enabled,
            region: raw.region,
            bucket: raw.bucket,
            mode: raw.mode,
            role_arn: raw.role_arn,
            external_id: raw.external_id,
            secret_id: raw.secret_id,
            secret_key,
            sts_endpoint: raw.sts_endpoint,
            duration_default: raw.duration_default,
            duration_max: raw.duration_max,
            min_remaining: raw.min_remaining,
            rate_subject_per_minute: raw.rate_subject_per_minute,
            rate_app_per_second: raw.rate_app_per_second,
            active_template_version: raw.active_template_version,
            updated_at: raw.updated_at,
        })
    }

    fn auth_from_row(&self, row: &PgRow) -> Result<AppAuth> {
        let raw = AuthRow::from_row(row)?;
        let hs_secret = raw
            .hs_secret_enc
            .as_deref()
            .map(|enc| self.cipher.decrypt(raw.app_id, FIELD_HS_SECRET, enc))
            .transpose()?;
        Ok(AppAuth {
            app_id: raw.app_id,
            issuer: raw.issuer,
            audiences: raw.audiences,
            algorithms: raw.algorithms,
            hs_secret,
            public_keys: raw.public_keys,
            jwks_url: raw.jwks_url,
            user_claim: raw.user_claim,
            leeway_seconds: raw.leeway_seconds,
        })
    }

    /// Re-encrypts a stored secret under the current key if it was written by an old one.
    fn rotate(&self, app_id: AppId, field: &str, stored: &str) -> Option<String> {
        if !self.cipher.needs_rotation(stored) {
            return None;
        }
        let plain = self.cipher.decrypt(app_id, field, stored).ok()?;
        Some(self.cipher.encrypt(app_id, field, plain.expose_secret()))
    }
}

// -------------------------------------------------------------------------------------------
// Raw rows (secrets still encrypted)

struct AppRow {
    id: AppId,
    slug: String,
    name: String,
    enabled: bool,
    region: String,
    bucket: String,
    mode: StsMode,
    role_arn: Option<String>,
    external_id: Option<String>,
    secret_id: String,
    secret_key_enc: String,
    sts_endpoint: Option<String>,
    duration_default: i32,
    duration_max: i32,
    min_remaining: Option<i32>,
    rate_subject_per_minute: i32,
    rate_app_per_second: i32,
    active_template_version: Option<i32>,
    updated_at: OffsetDateTime,
}

fn decode_err(msg: String) -> sqlx::Error {
    sqlx::Error::Decode(msg.into())
}

impl AppRow {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let mode: String = row.try_get("mode")?;
        Ok(Self {
            id: row.try_get("id")?,
            slug: row.try_get("slug")?,
            name: row.try_get("name")?,
            enabled: row.try_get("enabled")?,
            region: row.try_get("region")?,
            bucket: row.try_get("bucket")?,
            mode: StsMode::parse(&mode)
                .ok_or_else(|| decode_err(format!("unknown apps.mode {mode:?}")))?,
            role_arn: row.try_get("role_arn")?,
            external_id: row.try_get("external_id")?,
            secret_id: row.try_get("secret_id")?,
            secret_key_enc: row.try_get("secret_key_enc")?,
            sts_endpoint: row.try_get("sts_endpoint")?,
            duration_default: row.try_get("duration_default")?,
            duration_max: row.try_get("duration_max")?,
            min_remaining: row.try_get("min_remaining")?,
            rate_subject_per_minute: row.try_get("rate_subject_per_minute")?,
            rate_app_per_second: row.try_get("rate_app_per_second")?,
            active_template_version: row.try_get("active_template_version")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    /// The audit-log view: no secret key (not even its ciphertext), SecretId masked.
    fn audit_json(&self) -> Value {
        json!({
            "id": self.id,
            "slug": self.slug,
            "name": self.name,
            "enabled": self.enabled,
            "region": self.region,
            "bucket": self.bucket,
            "mode": self.mode.as_str(),
            "role_arn": self.role_arn,
            "external_id": self.external_id,
            "secret_id": mask_secret_id(&self.secret_id),
            "secret_key": REDACTED,
            "sts_endpoint": self.sts_endpoint,
            "duration_default": self.duration_default,
            "duration_max": self.duration_max,
            "min_remaining": self.min_remaining,
            "rate_subject_per_minute": self.rate_subject_per_minute,
            "rate_app_per_second": self.rate_app_per_second,
            "active_template_version": self.active_template_version,
        })
    }
}

/// `AKID…wxyz`: enough to recognise a key, not enough to use it.
pub fn mask_secret_id(secret_id: &str) -> String {
    let n = secret_id.chars().count();
    if n <= 12 {
        return REDACTED.to_owned();
    }
    let head: String = secret_id.chars().take(4).collect();
    let tail: String = secret_id.chars().skip(n - 4).collect();
    format!("{head}…{tail}")
}

struct AuthRow {
    app_id: AppId,
    issuer: Option<String>,
    audiences: Vec<String>,
    algorithms: Vec<String>,
    hs_secret_enc: Option<String>,
    public_keys: Vec<String>,
    jwks_url: Option<String>,
    user_claim: String,
    leeway_seconds: i32,
}

impl AuthRow {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            app_id: row.try_get("app_id")?,
            issuer: row.try_get("issuer")?,
            audiences: row.try_get("audiences")?,
            algorithms: row.try_get("algorithms")?,
            hs_secret_enc: row.try_get("hs_secret_enc")?,
            public_keys: row.try_get("public_keys")?,
            jwks_url: row.try_get("jwks_url")?,
            user_claim: row.try_get("user_claim")?,
            leeway_seconds: row.try_get("leeway_seconds")?,
        })
    }

    fn audit_json(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "audiences": self.audiences,
            "algorithms": self.algorithms,
            "hs_secret": self.hs_secret_enc.as_ref().map(|_| REDACTED),
            "public_keys": self.public_keys,
            "jwks_url": self.jwks_url,
            "user_claim": self.user_claim,
            "leeway_seconds": self.leeway_seconds,
        })
    }
}

fn template_from_row(row: &PgRow) -> Result<PolicyTemplateVersion, sqlx::Error> {
    let Json(document): Json<TemplateDocument> = row.try_get("document")?;
    Ok(PolicyTemplateVersion {
        app_id: row.try_get("app_id")?,
        version: row.try_get("version")?,
        document,
        author: row.try_get("author")?,
        note: row.try_get("note")?,
        created_at: row.try_get("created_at")?,
    })
}

fn admin_user_from_row(row: &PgRow) -> Result<AdminUser, sqlx::Error> {
    let role: String = row.try_get("role")?;
    Ok(AdminUser {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        role: Role::parse(&role)
            .ok_or_else(|| decode_err(format!("unknown admin_users.role {role:?}")))?,
        disabled: row.try_get("disabled")?,
        failed_logins: row.try_get("failed_logins")?,
        locked_until: row.try_get("locked_until")?,
        created_at: row.try_get("created_at")?,
    })
}

fn issuance_from_row(row: &PgRow) -> Result<IssuanceRecord, sqlx::Error> {
    let outcome: String = row.try_get("outcome")?;
    Ok(IssuanceRecord {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        app: row.try_get("app")?,
        subject: row.try_get("subject")?,
        outcome: Outcome::parse(&outcome)
            .ok_or_else(|| decode_err(format!("unknown issuance_log.outcome {outcome:?}")))?,
        http_status: row.try_get("http_status")?,
        error_code: row.try_get("error_code")?,
        request_id: row.try_get("request_id")?,
        sts_request_id: row.try_get("sts_request_id")?,
        tmp_secret_id: row.try_get("tmp_secret_id")?,
        policy_hash: row.try_get("policy_hash")?,
        template_version: row.try_get("template_version")?,
        actions: row.try_get("actions")?,
        prefix: row.try_get("prefix")?,
        duration_seconds: row.try_get("duration_seconds")?,
        expired_time: row.try_get("expired_time")?,
        source_ip: row.try_get("source_ip")?,
        user_agent: row.try_get("user_agent")?,
        latency_us: row.try_get("latency_us")?,
    })
}

fn admin_change_from_row(row: &PgRow) -> Result<AdminChange, sqlx::Error> {
    Ok(AdminChange {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        before: row.try_get("before")?,
        after: row.try_get("after")?,
    })
}

// -------------------------------------------------------------------------------------------
// Transaction helpers

async fn audit(
    conn: &mut PgConnection,
    actor: &str,
    action: &str,
    target: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO admin_audit (actor, action, target, before, after) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(before)
    .bind(after)
    .execute(conn)
    .await?;
    Ok(())
}

/// Delivered to listeners when the transaction commits.
async fn notify(conn: &mut PgConnection, payload: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANGES_CHANNEL)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

/// Unique violations become `Conflict(what)`; failed CHECKs become `Invalid`.
fn map_db_error(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return StoreError::Conflict(what());
        }
        if db.is_check_violation() {
            let field = db.constraint().unwrap_or("input").to_owned();
            return StoreError::Invalid(vec![FieldError::new(
                field,
                "violates a database constraint",
            )]);
        }
    }
    StoreError::Database(e)
}

/// Locks every admin user row (serialising role and disable changes, so two admins cannot
/// demote each other at once) and returns the one with `id`.
async fn lock_admin_users(conn: &mut PgConnection, id: i64) -> Result<AdminUser> {
    sqlx::query("SELECT 1 FROM admin_users ORDER BY id FOR UPDATE")
        .execute(&mut *conn)
        .await?;
    let row = sqlx::query(concat!(
        "SELECT ",
        admin_user_columns!(),
        " FROM admin_users WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    Ok(admin_user_from_row(&row)?)
}

/// Refuses a change that would leave no enabled admin besides `id`.
async fn ensure_another_admin(conn: &mut PgConnection, id: i64) -> Result<()> {
    let others: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM admin_users WHERE role = 'admin' AND NOT disabled AND id <> $1",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    if others == 0 {
        return Err(StoreError::Invalid(vec![FieldError::new(
            "role",
            "this is the last enabled admin; make another user admin first",
        )]));
    }
    Ok(())
}

fn clamp_limit(limit: i64) -> i64 {
    limit.clamp(1, MAX_PAGE)
}

// -------------------------------------------------------------------------------------------
// Validation

/// `Some("")` and whitespace-only become `None` (HTML forms send empty strings).
fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

pub(crate) fn valid_slug(slug: &str) -> bool {
    let b = slug.as_bytes();
    (1..=63).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(rest) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty()
                && !host.contains('@')
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

fn token_like(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn validate_app(input: &AppInput, creating: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !valid_slug(&input.slug) {
        errs.push(FieldError::new(
            "slug",
            "1 to 63 characters of a-z, 0-9 and `-`, starting with a letter or digit",
        ));
    }
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        errs.push(FieldError::new("name", "1 to 200 characters"));
    }
    match sts_core::CosResource::new(&input.region, &input.bucket) {
        Ok(_) => {}
        Err(sts_core::PolicyError::Region(_)) => {
            errs.push(FieldError::new(
                "region",
                "a long region name such as ap-guangzhou",
            ));
            if sts_core::policy::appid_of_bucket(&input.bucket).is_none() {
                errs.push(FieldError::new(
                    "bucket",
                    "the full bucket name, `<name>-<appid>` (e.g. examplebucket-1250000000)",
                ));
            }
        }
        Err(_) => errs.push(FieldError::new(
            "bucket",
            "the full bucket name, `<name>-<appid>` (e.g. examplebucket-1250000000)",
        )),
    }
    match (input.mode, non_empty(&input.role_arn)) {
        (StsMode::AssumeRole, None) => errs.push(FieldError::new(
            "role_arn",
            "required for assume_role (e.g. qcs::cam::uin/100000000001:roleName/stsgate)",
        )),
        (_, Some(arn)) if !arn.starts_with("qcs::cam::") || !token_like(&arn) => {
            errs.push(FieldError::new(
                "role_arn",
                "a role ARN such as qcs::cam::uin/100000000001:roleName/stsgate",
            ))
        }
        _ => {}
    }
    if let Some(ext) = non_empty(&input.external_id)
        && ext.chars().count() > 256
    {
        errs.push(FieldError::new("external_id", "at most 256 characters"));
    }
    if !token_like(&input.secret_id) || input.secret_id.len() > 256 {
        errs.push(FieldError::new(
            "secret_id",
            "the permanent key's SecretId (no spaces)",
        ));
    }
    match &input.secret_key {
        None if creating => errs.push(FieldError::new("secret_key", "required")),
        Some(k) if !token_like(k.expose_secret()) || k.expose_secret().len() > 256 => errs.push(
            FieldError::new("secret_key", "the permanent key's SecretKey (no spaces)"),
        ),
        _ => {}
    }
    if let Some(url) = non_empty(&input.sts_endpoint)
        && !is_http_url(&url)
    {
        errs.push(FieldError::new(
            "sts_endpoint",
            "an http(s) URL such as https://sts.tencentcloudapi.com",
        ));
    }
    let range = 1..=MAX_DURATION_SECONDS;
    if !range.contains(&input.duration_default) {
        errs.push(FieldError::new(
            "duration_default",
            format!("between 1 and {MAX_DURATION_SECONDS} seconds"),
        ));
    }
    if !range.contains(&input.duration_max) {
        errs.push(FieldError::new(
            "duration_max",
            format!("between 1 and {MAX_DURATION_SECONDS} seconds"),
        ));
    } else if input.duration_default > input.duration_max {
        errs.push(FieldError::new(
            "duration_default",
            "must not exceed duration_max",
        ));
    }
    if let Some(m) = input.min_remaining
        && (m < 0 || m > input.duration_max)
    {
        errs.push(FieldError::new(
            "min_remaining",
            "between 0 and duration_max seconds (empty: half of the duration)",
        ));
    }
    if input.rate_subject_per_minute < 0 {
        errs.push(FieldError::new(
            "rate_subject_per_minute",
            "0 (no limit) or more",
        ));
    }
    if input.rate_app_per_second < 0 {
        errs.push(FieldError::new(
            "rate_app_per_second",
            "0 (no limit) or more",
        ));
    }
    errs
}

fn valid_claim_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Minimum HS secret length: as long as the SHA-256 output (RFC 7518 §3.2).
pub const MIN_HS_SECRET_BYTES: usize = 32;

fn validate_auth(input: &AppAuthInput, has_stored_hs: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if input.algorithms.is_empty() {
        errs.push(FieldError::new(
            "algorithms",
            "allow at least one algorithm (e.g. RS256 or HS256)",
        ));
    }
    for (i, alg) in input.algorithms.iter().enumerate() {
        if !JWT_ALGORITHMS.contains(&alg.as_str()) {
            errs.push(FieldError::new(
                format!("algorithms[{i}]"),
                format!(
                    "unknown algorithm; use one of {}",
                    JWT_ALGORITHMS.join(", ")
                ),
            ));
        }
    }
    let uses_hs = input.algorithms.iter().any(|a| a.starts_with("HS"));
    let uses_asym = input
        .algorithms
        .iter()
        .any(|a| !a.starts_with("HS") && JWT_ALGORITHMS.contains(&a.as_str()));
    match &input.hs_secret {
        Some(s) if s.expose_secret().len() < MIN_HS_SECRET_BYTES => errs.push(FieldError::new(
            "hs_secret",
            format!("at least {MIN_HS_SECRET_BYTES} bytes"),
        )),
        None if uses_hs && !has_stored_hs => errs.push(FieldError::new(
            "hs_secret",
            "required when an HS algorithm is allowed",
        )),
        _ => {}
    }
    for (i, pem) in input.public_keys.iter().enumerate() {
        if !(pem.contains("-----BEGIN ") && pem.contains("-----END ")) {
            errs.push(FieldError::new(
                format!("public_keys[{i}]"),
                "a PEM public key (-----BEGIN PUBLIC KEY----- …)",
            ));
        }
    }
    let jwks = non_empty(&input.jwks_url);
    if let Some(url) = &jwks
        && !is_http_url(url)
    {
        errs.push(FieldError::new("jwks_url", "an http(s) URL"));
    }
    if uses_asym && input.public_keys.is_empty() && jwks.is_none() {
        errs.push(FieldError::new(
            "public_keys",
            "an RS/PS/ES/EdDSA algorithm needs public keys or a JWKS URL",
        ));
    }
    for (i, aud) in input.audiences.iter().enumerate() {
        if aud.trim().is_empty() {
            errs.push(FieldError::new(
                format!("audiences[{i}]"),
                "must not be empty",
            ));
        }
    }
    if !valid_claim_name(&input.user_claim) {
        errs.push(FieldError::new(
            "user_claim",
            "a claim name such as sub (A-Z a-z 0-9 _ . : -)",
        ));
    }
    if !(0..=3600).contains(&input.leeway_seconds) {
        errs.push(FieldError::new("leeway_seconds", "between 0 and 3600"));
    }
    errs
}

fn validate_subject(subject: &str) -> Result<()> {
    if subject.is_empty() || subject.len() > 1024 {
        return Err(StoreError::Invalid(vec![FieldError::new(
            "subject",
            "1 to 1024 bytes",
        )]));
    }
    Ok(())
}

fn invalid_if_any(errs: Vec<FieldError>) -> Result<()> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Invalid(errs))
    }
}

/// Parses `1.2.3.4`, `2001:db8::1` or a CIDR such as `10.0.0.0/8`.
fn valid_ip_or_cidr(s: &str) -> bool {
    match s.split_once('/') {
        None => s.parse::<IpAddr>().is_ok(),
        Some((addr, bits)) => match (addr.parse::<IpAddr>(), bits.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
            (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
            _ => false,
        },
    }
}

// -------------------------------------------------------------------------------------------

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn app_by_slug(&self, slug: &str) -> Result<Option<App>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            app_columns!(),
            " FROM apps WHERE slug = $1"
        ))
        .bind(slug)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| self.app_from_row(&r)).transpose()
    }

    async fn app_by_id(&self, id: AppId) -> Result<Option<App>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            app_columns!(),
            " FROM apps WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| self.app_from_row(&r)).transpose()
    }

    async fn list_apps(&self) -> Result<Vec<App>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            app_columns!(),
            " FROM apps ORDER BY slug"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| self.app_from_row(r)).collect()
    }

    async fn create_app(&self, actor: &str, input: &AppInput) -> Result<App> {
        invalid_if_any(validate_app(input, true))?;
        let secret_key = input.secret_key.as_ref().expect("validated");
        let mut tx = self.pool.begin().await?;
        // Take the id first: the ciphertext is bound to it (associated data).
        let id: i64 = sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('apps', 'id'))")
            .fetch_one(&mut *tx)
            .await?;
        let secret_key_enc = self
            .cipher
            .encrypt(id, FIELD_SECRET_KEY, secret_key.expose_secret());
        let row = sqlx::query(concat!(
            "INSERT INTO apps (id, slug, name, enabled, region, bucket, mode, role_arn, \
             external_id, secret_id, secret_key_enc, sts_endpoint, duration_default, \
             duration_max, min_remaining, rate_subject_per_minute, rate_app_per_second) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
             RETURNING ",
            app_columns!()
        ))
        .bind(id)
        .bind(&input.slug)
        .bind(input.name.trim())
        .bind(input.enabled)
        .bind(&input.region)
        .bind(&input.bucket)
        .bind(input.mode.as_str())
        .bind(non_empty(&input.role_arn))
        .bind(non_empty(&input.external_id))
        .bind(&input.secret_id)
        .bind(&secret_key_enc)
        .bind(non_empty(&input.sts_endpoint))
        .bind(input.duration_default)
        .bind(input.duration_max)
        .bind(input.min_remaining)
        .bind(input.rate_subject_per_minute)
        .bind(input.rate_app_per_second)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            map_db_error(e, || {
                format!("an app with slug {:?} already exists", input.slug)
            })
        })?;
        let raw = AppRow::from_row(&row)?;
        audit(
            &mut tx,
            actor,
            "app.create",
            &raw.slug,
            None,
            Some(raw.audit_json()),
        )
        .await?;
        notify(&mut tx, &id.to_string()).await?;
        let app = self.app_from_row(&row)?;
        tx.commit().await?;
        Ok(app)
    }

    async fn update_app(&self, actor: &str, id: AppId, input: &AppInput) -> Result<App> {
        invalid_if_any(validate_app(input, false))?;
        let mut tx = self.pool.begin().await?;
        let before = sqlx::query(concat!(
            "SELECT ",
            app_columns!(),
            " FROM apps WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let before = AppRow::from_row(&before)?;
        let secret_key_changed = input.secret_key.is_some();
        let secret_key_enc = match &input.secret_key {
            Some(k) => Some(self.cipher.encrypt(id, FIELD_SECRET_KEY, k.expose_secret())),
            None => self.rotate(id, FIELD_SECRET_KEY, &before.secret_key_enc),
        };
        let row = sqlx::query(concat!(
            "UPDATE apps SET slug = $2, name = $3, enabled = $4, region = $5, bucket = $6, \
             mode = $7, role_arn = $8, external_id = $9, secret_id = $10, \
             secret_key_enc = COALESCE($11, secret_key_enc), sts_endpoint = $12, \
             duration_default = $13, duration_max = $14, min_remaining = $15, \
             rate_subject_per_minute = $16, rate_app_per_second = $17, updated_at = now() \
             WHERE id = $1 RETURNING ",
            app_columns!()
        ))
        .bind(id)
        .bind(&input.slug)
        .bind(input.name.trim())
        .bind(input.enabled)
        .bind(&input.region)
        .bind(&input.bucket)
        .bind(input.mode.as_str())
        .bind(non_empty(&input.role_arn))
        .bind(non_empty(&input.external_id))
        .bind(&input.secret_id)
        .bind(secret_key_enc)
        .bind(non_empty(&input.sts_endpoint))
        .bind(input.duration_default)
        .bind(input.duration_max)
        .bind(input.min_remaining)
        .bind(input.rate_subject_per_minute)
        .bind(input.rate_app_per_second)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            map_db_error(e, || {
                format!("an app with slug {:?} already exists", input.slug)
            })
        })?;
        let after = AppRow::from_row(&row)?;
        let mut after_json = after.audit_json();
        after_json["secret_key_changed"] = Value::Bool(secret_key_changed);
        audit(
            &mut tx,
            actor,
            "app.update",
            &after.slug,
            Some(before.audit_json()),
            Some(after_json),
        )
        .await?;
        notify(&mut tx, &id.to_string()).await?;
        let app = self.app_from_row(&row)?;
        tx.commit().await?;
        Ok(app)
    }

    async fn set_app_enabled(&self, actor: &str, id: AppId, enabled: bool) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let (slug, was): (String, bool) =
            sqlx::query_as("SELECT slug, enabled FROM apps WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound)?;
        sqlx::query("UPDATE apps SET enabled = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(enabled)
            .execute(&mut *tx)
            .await?;
        let action = if enabled { "app.enable" } else { "app.disable" };
        audit(
            &mut tx,
            actor,
            action,
            &slug,
            Some(json!({ "enabled": was })),
            Some(json!({ "enabled": enabled })),
        )
        .await?;
        notify(&mut tx, &id.to_string()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn app_auth(&self, id: AppId) -> Result<Option<AppAuth>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            auth_columns!(),
            " FROM app_auth WHERE app_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| self.auth_from_row(&r)).transpose()
    }

    async fn set_app_auth(&self, actor: &str, id: AppId, input: &AppAuthInput) -> Result<AppAuth> {
        let mut tx = self.pool.begin().await?;
        let slug: String = sqlx::query_scalar("SELECT slug FROM apps WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let before = sqlx::query(concat!(
            "SELECT ",
            auth_columns!(),
            " FROM app_auth WHERE app_id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| AuthRow::from_row(&r))
        .transpose()?;
        let stored_hs = before.as_ref().and_then(|b| b.hs_secret_enc.clone());
        invalid_if_any(validate_auth(input, stored_hs.is_some()))?;

        let hs_secret_enc = match (&input.hs_secret, &stored_hs) {
            (Some(s), _) => Some(self.cipher.encrypt(id, FIELD_HS_SECRET, s.expose_secret())),
            (None, Some(stored)) => self.rotate(id, FIELD_HS_SECRET, stored),
            (None, None) => None,
        };
        let mut algorithms: Vec<String> = Vec::with_capacity(input.algorithms.len());
        for a in &input.algorithms {
            if !algorithms.contains(a) {
                algorithms.push(a.clone());
            }
        }
        let audiences: Vec<String> = input
            .audiences
            .iter()
            .map(|a| a.trim().to_owned())
            .collect();
        let row = sqlx::query(concat!(
            "INSERT INTO app_auth (app_id, issuer, audiences, algorithms, hs_secret_enc, \
             public_keys, jwks_url, user_claim, leeway_seconds) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (app_id) DO UPDATE SET issuer = EXCLUDED.issuer, \
             audiences = EXCLUDED.audiences, algorithms = EXCLUDED.algorithms, \
             hs_secret_enc = COALESCE(EXCLUDED.hs_secret_enc, app_auth.hs_secret_enc), \
             public_keys = EXCLUDED.public_keys, jwks_url = EXCLUDED.jwks_url, \
             user_claim = EXCLUDED.user_claim, leeway_seconds = EXCLUDED.leeway_seconds, \
             updated_at = now() \
             RETURNING ",
            auth_columns!()
        ))
        .bind(id)
        .bind(non_empty(&input.issuer))
        .bind(&audiences)
        .bind(&algorithms)
        .bind(hs_secret_enc)
        .bind(&input.public_keys)
        .bind(non_empty(&input.jwks_url))
        .bind(&input.user_claim)
        .bind(input.leeway_seconds)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| map_db_error(e, || "JWT settings already exist".into()))?;
        let after = AuthRow::from_row(&row)?;
        let mut after_json = after.audit_json();
        after_json["hs_secret_changed"] = Value::Bool(input.hs_secret.is_some());
        audit(
            &mut tx,
            actor,
            "auth.update",
            &slug,
            before.as_ref().map(AuthRow::audit_json),
            Some(after_json),
        )
        .await?;
        notify(&mut tx, &id.to_string()).await?;
        let auth = self.auth_from_row(&row)?;
        tx.commit().await?;
        Ok(auth)
    }

    async fn save_template(
        &self,
        actor: &str,
        id: AppId,
        document: &TemplateDocument,
        note: Option<&str>,
    ) -> Result<PolicyTemplateVersion> {
        document.validate().map_err(StoreError::Invalid)?;
        let note = note.map(str::trim).filter(|n| !n.is_empty());
        let mut tx = self.pool.begin().await?;
        // Locking the app row serialises version numbering per app.
        let (slug, active): (String, Option<i32>) = sqlx::query_as(
            "SELECT slug, active_template_version FROM apps WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let row = sqlx::query(concat!(
            "INSERT INTO policy_templates (app_id, version, document, author, note) \
             SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4 \
             FROM policy_templates WHERE app_id = $1 \
             RETURNING ",
            template_columns!()
        ))
        .bind(id)
        .bind(Json(document))
        .bind(actor)
        .bind(note)
        .fetch_one(&mut *tx)
        .await?;
        let saved = template_from_row(&row)?;
        sqlx::query(
            "UPDATE apps SET active_template_version = $2, updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(saved.version)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            actor,
            "template.save",
            &slug,
            Some(json!({ "active_version": active })),
            Some(json!({ "version": saved.version, "note": note, "document": document })),
        )
        .await?;
        notify(&mut tx, &id.to_string()).await?;
        tx.commit().await?;
        Ok(saved)
    }

    async fn active_template(&self, id: AppId) -> Result<Option<PolicyTemplateVersion>> {
        let row = sqlx::query(
            "SELECT t.app_id, t.version, t.document, t.author, t.note, t.created_at \
             FROM apps a JOIN policy_templates t \
               ON t.app_id = a.id AND t.version = a.active_template_version \
             WHERE a.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| template_from_row(&r)).transpose()?)
    }

    async fn template_versions(&self, id: AppId) -> Result<Vec<PolicyTemplateVersion>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            template_columns!(),
            " FROM policy_templates WHERE app_id = $1 ORDER BY version DESC"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(template_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn template_version(
        &self,
        id: AppId,
        version: i32,
    ) -> Result<Option<PolicyTemplateVersion>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            template_columns!(),
            " FROM policy_templates WHERE app_id = $1 AND version = $2"
        ))
        .bind(id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| template_from_row(&r)).transpose()?)
    }

    async fn activate_template(&self, actor: &str, id: AppId, version: i32) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let (slug, active): (String, Option<i32>) = sqlx::query_as(
            "SELECT slug, active_template_version FROM apps WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM policy_templates WHERE app_id = $1 AND version = $2)",
        )
        .bind(id)
        .bind(version)
        .fetch_one(&mut *tx)
        .await?;
        if !exists {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "UPDATE apps SET active_template_version = $2, updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            actor,
            "template.activate",
            &slug,
            Some(json!({ "active_version": active })),
            Some(json!({ "active_version": version })),
        )
        .await?;
        notify(&mut tx, &id.to_string()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn is_blocked(&self, id: AppId, subject: &str) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM blocked_subjects WHERE app_id = $1 AND subject = $2)",
        )
        .bind(id)
        .bind(subject)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn block_subject(
        &self,
        actor: &str,
        id: AppId,
        subject: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        validate_subject(subject)?;
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        let mut tx = self.pool.begin().await?;
        let slug: String = sqlx::query_scalar("SELECT slug FROM apps WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        sqlx::query(
            "INSERT INTO blocked_subjects (app_id, subject, reason, blocked_by) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (app_id, subject) DO UPDATE \
             SET reason = EXCLUDED.reason, blocked_by = EXCLUDED.blocked_by",
        )
        .bind(id)
        .bind(subject)
        .bind(reason)
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            actor,
            "subject.block",
            &slug,
            None,
            Some(json!({ "subject": subject, "reason": reason })),
        )
        .await?;
        notify(&mut tx, &id.to_string()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Unblocking a subject that is not blocked is a no-op (no audit row).
    async fn unblock_subject(&self, actor: &str, id: AppId, subject: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let slug: String = sqlx::query_scalar("SELECT slug FROM apps WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let removed: Option<Option<String>> = sqlx::query_scalar(
            "DELETE FROM blocked_subjects WHERE app_id = $1 AND subject = $2 RETURNING reason",
        )
        .bind(id)
        .bind(subject)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(reason) = removed else {
            return Ok(());
        };
        audit(
            &mut tx,
            actor,
            "subject.unblock",
            &slug,
            Some(json!({ "subject": subject, "reason": reason })),
            None,
        )
        .await?;
        notify(&mut tx, &id.to_string()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn blocked_subjects(&self, id: AppId) -> Result<Vec<BlockedSubject>> {
        let rows: Vec<(i64, String, Option<String>, String, OffsetDateTime)> = sqlx::query_as(
            "SELECT app_id, subject, reason, blocked_by, created_at FROM blocked_subjects \
             WHERE app_id = $1 ORDER BY created_at DESC, subject",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(app_id, subject, reason, blocked_by, created_at)| BlockedSubject {
                    app_id,
                    subject,
                    reason,
                    blocked_by,
                    created_at,
                },
            )
            .collect())
    }

    async fn create_admin_user(
        &self,
        actor: &str,
        username: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<AdminUser> {
        let mut errs = Vec::new();
        if username.is_empty()
            || username.chars().count() > 64
            || username
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            errs.push(FieldError::new("username", "1 to 64 characters, no spaces"));
        }
        if !password_hash.starts_with("$argon2id$") {
            errs.push(FieldError::new(
                "password_hash",
                "an argon2id PHC string (never a plaintext password)",
            ));
        }
        invalid_if_any(errs)?;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!(
            "INSERT INTO admin_users (username, password_hash, role) VALUES ($1, $2, $3) RETURNING ",
            admin_user_columns!()
        ))
        .bind(username)
        .bind(password_hash)
        .bind(role.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| map_db_error(e, || format!("an admin user named {username:?} already exists")))?;
        let user = admin_user_from_row(&row)?;
        audit(
            &mut tx,
            actor,
            "admin_user.create",
            username,
            None,
            Some(json!({ "username": username, "role": role.as_str(), "disabled": false })),
        )
        .await?;
        notify(&mut tx, ADMIN_NOTIFY_PAYLOAD).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn admin_user_by_name(&self, username: &str) -> Result<Option<AdminUser>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            admin_user_columns!(),
            " FROM admin_users WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| admin_user_from_row(&r)).transpose()?)
    }

    async fn list_admin_users(&self) -> Result<Vec<AdminUser>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            admin_user_columns!(),
            " FROM admin_users ORDER BY username"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(admin_user_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn insert_issuance_batch(&self, records: &[IssuanceRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut errs = Vec::new();
        for (i, r) in records.iter().enumerate() {
            if let Some(ip) = &r.source_ip
                && ip.parse::<IpAddr>().is_err()
            {
                errs.push(FieldError::new(
                    format!("records[{i}].source_ip"),
                    "an IPv4 or IPv6 address",
                ));
            }
            if r.tmp_secret_id
                .as_ref()
                .is_some_and(|t| t.chars().count() > 1024)
            {
                errs.push(FieldError::new(
                    format!("records[{i}].tmp_secret_id"),
                    "at most 1024 characters",
                ));
            }
        }
        invalid_if_any(errs)?;

        let n = records.len();
        let mut at = Vec::with_capacity(n);
        let mut app = Vec::with_capacity(n);
        let mut subject = Vec::with_capacity(n);
        let mut outcome = Vec::with_capacity(n);
        let mut http_status = Vec::with_capacity(n);
        let mut error_code = Vec::with_capacity(n);
        let mut request_id = Vec::with_capacity(n);
        let mut sts_request_id = Vec::with_capacity(n);
        let mut tmp_secret_id = Vec::with_capacity(n);
        let mut policy_hash = Vec::with_capacity(n);
        let mut template_version = Vec::with_capacity(n);
        // A ragged text[][] cannot be bound; each row's actions travel as a JSON array.
        let mut actions = Vec::with_capacity(n);
        let mut prefix = Vec::with_capacity(n);
        let mut duration_seconds = Vec::with_capacity(n);
        let mut expired_time = Vec::with_capacity(n);
        let mut source_ip = Vec::with_capacity(n);
        let mut user_agent = Vec::with_capacity(n);
        let mut latency_us = Vec::with_capacity(n);
        for r in records {
            at.push(r.at);
            app.push(r.app.clone());
            subject.push(r.subject.clone());
            outcome.push(r.outcome.as_str().to_owned());
            http_status.push(r.http_status);
            error_code.push(r.error_code.clone());
            request_id.push(r.request_id.clone());
            sts_request_id.push(r.sts_request_id.clone());
            tmp_secret_id.push(r.tmp_secret_id.clone());
            policy_hash.push(r.policy_hash.clone());
            template_version.push(r.template_version);
            actions.push(serde_json::to_string(&r.actions).expect("strings serialize"));
            prefix.push(r.prefix.clone());
            duration_seconds.push(r.duration_seconds);
            expired_time.push(r.expired_time);
            source_ip.push(r.source_ip.clone());
            user_agent.push(r.user_agent.clone());
            latency_us.push(r.latency_us);
        }

        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO issuance_log (at, app, subject, outcome, http_status, error_code, \
               request_id, sts_request_id, tmp_secret_id, policy_hash, template_version, actions, \
               prefix, duration_seconds, expired_time, source_ip, user_agent, latency_us) \
             SELECT u.at, u.app, u.subject, u.outcome, u.http_status, u.error_code, \
               u.request_id, u.sts_request_id, u.tmp_secret_id, u.policy_hash, u.template_version, \
               ARRAY(SELECT e.a FROM jsonb_array_elements_text(u.actions::jsonb) \
                     WITH ORDINALITY AS e(a, i) ORDER BY e.i), \
               u.prefix, u.duration_seconds, u.expired_time, u.source_ip::inet, u.user_agent, \
               u.latency_us \
             FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::int2[], \
               $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::int4[], \
               $12::text[], $13::text[], $14::int4[], $15::timestamptz[], $16::text[], \
               $17::text[], $18::int8[]) \
             AS u(at, app, subject, outcome, http_status, error_code, request_id, \
               sts_request_id, tmp_secret_id, policy_hash, template_version, actions, prefix, \
               duration_seconds, expired_time, source_ip, user_agent, latency_us)",
        )
        .bind(at)
        .bind(app)
        .bind(subject)
        .bind(outcome)
        .bind(http_status)
        .bind(error_code)
        .bind(request_id)
        .bind(sts_request_id)
        .bind(tmp_secret_id)
        .bind(policy_hash)
        .bind(template_version)
        .bind(actions)
        .bind(prefix)
        .bind(duration_seconds)
        .bind(expired_time)
        .bind(source_ip)
        .bind(user_agent)
        .bind(latency_us)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn search_issuance(
        &self,
        filter: &IssuanceFilter,
        cursor: Option<IssuanceCursor>,
        limit: i64,
    ) -> Result<Vec<IssuanceRecord>> {
        if let Some(ip) = &filter.source_ip
            && !valid_ip_or_cidr(ip.trim())
        {
            return Err(StoreError::Invalid(vec![FieldError::new(
                "source_ip",
                "an IP address or a CIDR block such as 10.0.0.0/8",
            )]));
        }
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(concat!(
            "SELECT ",
            issuance_columns!(),
            " FROM issuance_log WHERE TRUE"
        ));
        if let Some(app) = &filter.app {
            qb.push(" AND app = ").push_bind(app.clone());
        }
        if let Some(subject) = &filter.subject {
            qb.push(" AND subject = ").push_bind(subject.clone());
        }
        if let Some(outcome) = filter.outcome {
            qb.push(" AND outcome = ").push_bind(outcome.as_str());
        }
        if let Some(from) = filter.from {
            qb.push(" AND at >= ").push_bind(from);
        }
        if let Some(to) = filter.to {
            qb.push(" AND at < ").push_bind(to);
        }
        if let Some(ip) = &filter.source_ip {
            let ip = ip.trim();
            // An exact address walks (source_ip, at, id) in order; a block is a range scan.
            let op = if ip.contains('/') { " <<= " } else { " = " };
            qb.push(" AND source_ip")
                .push(op)
                .push_bind(ip.to_owned())
                .push("::inet");
        }
        if let Some(t) = &filter.tmp_secret_id {
            qb.push(" AND tmp_secret_id = ").push_bind(t.clone());
        }
        if let Some(c) = cursor {
            qb.push(" AND (at, id) < (")
                .push_bind(c.at)
                .push(", ")
                .push_bind(c.id)
                .push(")");
        }
        qb.push(" ORDER BY at DESC, id DESC LIMIT ")
            .push_bind(clamp_limit(limit));
        let rows = qb.build().fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(issuance_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn admin_changes(&self, before_id: Option<i64>, limit: i64) -> Result<Vec<AdminChange>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, before, after FROM admin_audit \
             WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(before_id)
        .bind(clamp_limit(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(admin_change_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn admin_user_by_id(&self, id: i64) -> Result<Option<AdminUser>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            admin_user_columns!(),
            " FROM admin_users WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| admin_user_from_row(&r)).transpose()?)
    }

    async fn set_admin_user_role(&self, actor: &str, id: i64, role: Role) -> Result<AdminUser> {
        let mut tx = self.pool.begin().await?;
        let before = lock_admin_users(&mut tx, id).await?;
        if before.role == Role::Admin && role != Role::Admin && !before.disabled {
            ensure_another_admin(&mut tx, id).await?;
        }
        let row = sqlx::query(concat!(
            "UPDATE admin_users SET role = $2, updated_at = now() WHERE id = $1 RETURNING ",
            admin_user_columns!()
        ))
        .bind(id)
        .bind(role.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let after = admin_user_from_row(&row)?;
        if before.role != after.role {
            audit(
                &mut tx,
                actor,
                "admin_user.role",
                &after.username,
                Some(json!({ "role": before.role.as_str() })),
                Some(json!({ "role": after.role.as_str() })),
            )
            .await?;
            notify(&mut tx, ADMIN_NOTIFY_PAYLOAD).await?;
        }
        tx.commit().await?;
        Ok(after)
    }

    async fn set_admin_user_disabled(
        &self,
        actor: &str,
        id: i64,
        disabled: bool,
    ) -> Result<AdminUser> {
        let mut tx = self.pool.begin().await?;
        let before = lock_admin_users(&mut tx, id).await?;
        if disabled && before.role == Role::Admin && !before.disabled {
            ensure_another_admin(&mut tx, id).await?;
        }
        let row = sqlx::query(concat!(
            "UPDATE admin_users SET disabled = $2, updated_at = now(), \
             failed_logins = CASE WHEN $2 THEN failed_logins ELSE 0 END, \
             locked_until = CASE WHEN $2 THEN locked_until ELSE NULL END \
             WHERE id = $1 RETURNING ",
            admin_user_columns!()
        ))
        .bind(id)
        .bind(disabled)
        .fetch_one(&mut *tx)
        .await?;
        let after = admin_user_from_row(&row)?;
        if disabled {
            sqlx::query("DELETE FROM admin_sessions WHERE user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if before.disabled != disabled {
            let action = if disabled {
                "admin_user.disable"
            } else {
                "admin_user.enable"
            };
            audit(
                &mut tx,
                actor,
                action,
                &after.username,
                Some(json!({ "disabled": before.disabled })),
                Some(json!({ "disabled": disabled })),
            )
            .await?;
            notify(&mut tx, ADMIN_NOTIFY_PAYLOAD).await?;
        }
        tx.commit().await?;
        Ok(after)
    }

    async fn set_admin_user_password(
        &self,
        actor: &str,
        id: i64,
        password_hash: &str,
    ) -> Result<AdminUser> {
        if !password_hash.starts_with("$argon2id$") {
            return Err(StoreError::Invalid(vec![FieldError::new(
                "password_hash",
                "an argon2id PHC string (never a plaintext password)",
            )]));
        }
        let mut tx = self.pool.begin().await?;
        lock_admin_users(&mut tx, id).await?;
        let row = sqlx::query(concat!(
            "UPDATE admin_users SET password_hash = $2, failed_logins = 0, locked_until = NULL, \
             updated_at = now() WHERE id = $1 RETURNING ",
            admin_user_columns!()
        ))
        .bind(id)
        .bind(password_hash)
        .fetch_one(&mut *tx)
        .await?;
        let after = admin_user_from_row(&row)?;
        sqlx::query("DELETE FROM admin_sessions WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // Neither the password nor its hash is recorded.
        audit(
            &mut tx,
            actor,
            "admin_user.password",
            &after.username,
            Some(json!({ "password": REDACTED })),
            Some(json!({ "password": REDACTED, "sessions_ended": true })),
        )
        .await?;
        notify(&mut tx, ADMIN_NOTIFY_PAYLOAD).await?;
        tx.commit().await?;
        Ok(after)
    }

    async fn record_login_failure(
        &self,
        user_id: i64,
        max_failures: i32,
        lock_secs: i64,
    ) -> Result<AdminUser> {
        // A lock that has run out starts a fresh count; a live lock is never extended here.
        let row = sqlx::query(concat!(
            "UPDATE admin_users SET \
               failed_logins = CASE WHEN locked_until IS NOT NULL AND locked_until <= now() \
                                    THEN 1 ELSE failed_logins + 1 END, \
               locked_until = CASE \
                 WHEN locked_until IS NOT NULL AND locked_until > now() THEN locked_until \
                 WHEN (CASE WHEN locked_until IS NOT NULL AND locked_until <= now() \
                            THEN 1 ELSE failed_logins + 1 END) >= $2 \
                   THEN now() + make_interval(secs => $3::double precision) \
                 ELSE NULL END \
             WHERE id = $1 RETURNING ",
            admin_user_columns!()
        ))
        .bind(user_id)
        .bind(max_failures.max(1))
        .bind(lock_secs.max(1) as f64)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(admin_user_from_row(&row)?)
    }

    async fn record_login_success(&self, user_id: i64) -> Result<()> {
        sqlx::query(
            "UPDATE admin_users SET failed_logins = 0, locked_until = NULL \
             WHERE id = $1 AND (failed_logins <> 0 OR locked_until IS NOT NULL)",
        )
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn create_admin_session(
        &self,
        user_id: i64,
        token_hash: &str,
        csrf_token: &str,
        ttl_secs: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO admin_sessions (id, user_id, csrf_token, expires_at) \
             VALUES ($1, $2, $3, now() + make_interval(secs => $4::double precision))",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(csrf_token)
        .bind(ttl_secs.max(1) as f64)
        .execute(&self.pool)
        .await
        .map_err(|e| map_db_error(e, || "that session already exists".into()))?;
        Ok(())
    }

    async fn admin_session(&self, token_hash: &str) -> Result<Option<AdminSession>> {
        // `last_seen_at` is refreshed at most once a minute, so page views stay read-only
        // for the database most of the time.
        let row = sqlx::query(
            "WITH s AS ( \
               SELECT s.id, s.user_id, s.csrf_token, s.created_at, s.expires_at, s.last_seen_at \
               FROM admin_sessions s JOIN admin_users u ON u.id = s.user_id \
               WHERE s.id = $1 AND s.expires_at > now() AND NOT u.disabled), \
             touched AS ( \
               UPDATE admin_sessions t SET last_seen_at = now() FROM s \
               WHERE t.id = s.id AND s.last_seen_at < now() - interval '1 minute') \
             SELECT s.csrf_token, s.created_at AS session_created_at, s.expires_at, \
               u.id, u.username, u.password_hash, u.role, u.disabled, u.failed_logins, \
               u.locked_until, u.created_at \
             FROM s JOIN admin_users u ON u.id = s.user_id",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(AdminSession {
            user: admin_user_from_row(&row)?,
            csrf_token: row.try_get("csrf_token")?,
            created_at: row.try_get("session_created_at")?,
            expires_at: row.try_get("expires_at")?,
        }))
    }

    async fn delete_admin_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM admin_sessions WHERE id = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_expired_admin_sessions(&self) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= now()")
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn traffic_since(&self, since: OffsetDateTime) -> Result<Vec<AppTraffic>> {
        let rows = sqlx::query(
            "SELECT app, count(*) AS total, \
               count(*) FILTER (WHERE outcome = 'issued') AS issued, \
               count(*) FILTER (WHERE outcome = 'cached') AS cached, \
               count(*) FILTER (WHERE outcome = 'denied') AS denied, \
               count(*) FILTER (WHERE outcome = 'invalid_token') AS invalid_token, \
               count(*) FILTER (WHERE outcome = 'bad_request') AS bad_request, \
               count(*) FILTER (WHERE outcome = 'rate_limited') AS rate_limited, \
               count(*) FILTER (WHERE outcome = 'upstream_error') AS upstream_error, \
               percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_us) AS p95 \
             FROM issuance_log WHERE at >= $1 GROUP BY app ORDER BY app",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AppTraffic {
                    app: r.try_get("app")?,
                    total: r.try_get("total")?,
                    issued: r.try_get("issued")?,
                    cached: r.try_get("cached")?,
                    denied: r.try_get("denied")?,
                    invalid_token: r.try_get("invalid_token")?,
                    bad_request: r.try_get("bad_request")?,
                    rate_limited: r.try_get("rate_limited")?,
                    upstream_error: r.try_get("upstream_error")?,
                    p95_latency_us: r.try_get("p95")?,
                })
            })
            .collect()
    }

    async fn latest_credential_expiry(
        &self,
        app_slug: &str,
        subject: &str,
    ) -> Result<Option<OffsetDateTime>> {
        // No credential lives longer than MAX_DURATION_SECONDS, which bounds the scan.
        Ok(sqlx::query_scalar(
            "SELECT max(expired_time) FROM issuance_log \
             WHERE subject = $2 AND app = $1 AND outcome IN ('issued', 'cached') \
               AND at > now() - make_interval(secs => $3::double precision) \
               AND expired_time > now()",
        )
        .bind(app_slug)
        .bind(subject)
        .bind(f64::from(MAX_DURATION_SECONDS))
        .fetch_one(&self.pool)
        .await?)
    }

    async fn search_admin_changes(
        &self,
        filter: &AdminChangeFilter,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AdminChange>> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
            "SELECT id, at, actor, action, target, before, after FROM admin_audit WHERE TRUE",
        );
        if let Some(actor) = &filter.actor {
            qb.push(" AND actor = ").push_bind(actor.clone());
        }
        if let Some(action) = &filter.action {
            qb.push(" AND action = ").push_bind(action.clone());
        }
        if let Some(target) = &filter.target {
            qb.push(" AND target = ").push_bind(target.clone());
        }
        if let Some(from) = filter.from {
            qb.push(" AND at >= ").push_bind(from);
        }
        if let Some(to) = filter.to {
            qb.push(" AND at < ").push_bind(to);
        }
        if let Some(before) = before_id {
            qb.push(" AND id < ").push_bind(before);
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(clamp_limit(limit));
        let rows = qb.build().fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(admin_change_from_row)
            .collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_ids_are_masked() {
        assert_eq!(
            mask_secret_id("AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"),
            "AKID…MPLE"
        );
        assert_eq!(mask_secret_id("short"), REDACTED);
    }

    #[test]
    fn ip_filters() {
        for ok in ["1.2.3.4", "10.0.0.0/8", "2001:db8::1", "2001:db8::/32"] {
            assert!(valid_ip_or_cidr(ok), "{ok}");
        }
        for bad in [
            "",
            "1.2.3",
            "10.0.0.0/33",
            "x/8",
            "1.2.3.4/",
            "1.2.3.4; DROP",
        ] {
            assert!(!valid_ip_or_cidr(bad), "{bad}");
        }
    }

    #[test]
    fn urls_and_slugs() {
        assert!(is_http_url("https://sts.tencentcloudapi.com"));
        assert!(is_http_url("http://127.0.0.1:9000/"));
        assert!(!is_http_url("ftp://x"));
        assert!(!is_http_url("https://"));
        assert!(!is_http_url("https://user@host/"));
        assert!(valid_slug("demo-1"));
        assert!(!valid_slug("-demo"));
        assert!(!valid_slug("Demo"));
        assert!(!valid_slug(&"a".repeat(64)));
    }
}
