//! The rows stsgate keeps, as Rust types. See DESIGN §6 and `migrations/`.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::template::TemplateDocument;

pub type AppId = i64;

/// How an app obtains credentials from STS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StsMode {
    FederationToken,
    AssumeRole,
}

impl StsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StsMode::FederationToken => "federation_token",
            StsMode::AssumeRole => "assume_role",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "federation_token" => Some(Self::FederationToken),
            "assume_role" => Some(Self::AssumeRole),
            _ => None,
        }
    }
}

/// An app, with its secrets decrypted (held as `SecretString`).
#[derive(Debug, Clone)]
pub struct App {
    pub id: AppId,
    /// URL name, `[a-z0-9][a-z0-9-]{0,62}`.
    pub slug: String,
    pub name: String,
    pub enabled: bool,
    pub region: String,
    /// Full bucket name, `<name>-<appid>`.
    pub bucket: String,
    pub mode: StsMode,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub secret_id: String,
    pub secret_key: SecretString,
    /// Overrides the default STS endpoint when set.
    pub sts_endpoint: Option<String>,
    pub duration_default: i32,
    pub duration_max: i32,
    /// Reuse a cached credential while at least this many seconds remain; `None` means half
    /// of the credential's duration.
    pub min_remaining: Option<i32>,
    /// Requests per minute per subject; 0 disables the limit.
    pub rate_subject_per_minute: i32,
    /// STS calls per second for the whole app (kept under STS's 600/s); 0 disables it.
    pub rate_app_per_second: i32,
    /// Web origins whose pages may call the credential API (CORS), in the form browsers send
    /// in `Origin` (see [`crate::origin`]); empty: no browser page may.
    pub allowed_origins: Vec<String>,
    /// The active policy template version, if any was saved.
    pub active_template_version: Option<i32>,
    pub updated_at: OffsetDateTime,
}

/// What an admin submits to create or edit an app. `secret_key: None` on update keeps the
/// stored key (secrets are write-only).
#[derive(Debug, Clone)]
pub struct AppInput {
    pub slug: String,
    pub name: String,
    pub enabled: bool,
    pub region: String,
    pub bucket: String,
    pub mode: StsMode,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub secret_id: String,
    pub secret_key: Option<SecretString>,
    pub sts_endpoint: Option<String>,
    pub duration_default: i32,
    pub duration_max: i32,
    pub min_remaining: Option<i32>,
    pub rate_subject_per_minute: i32,
    pub rate_app_per_second: i32,
    /// Allowed web origins as typed, one per entry; stored normalised
    /// ([`crate::origin::normalize_origins`]).
    pub allowed_origins: Vec<String>,
}

/// JWT settings of one app, HS secret decrypted.
#[derive(Debug, Clone)]
pub struct AppAuth {
    pub app_id: AppId,
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    /// Allowed `alg` values, e.g. `["RS256", "ES256"]`.
    pub algorithms: Vec<String>,
    pub hs_secret: Option<SecretString>,
    /// PEM-encoded public keys (RSA, EC or Ed25519).
    pub public_keys: Vec<String>,
    pub jwks_url: Option<String>,
    /// The claim that names the user, `sub` by default.
    pub user_claim: String,
    pub leeway_seconds: i32,
}

/// JWT settings as submitted; `hs_secret: None` keeps the stored secret.
#[derive(Debug, Clone)]
pub struct AppAuthInput {
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub hs_secret: Option<SecretString>,
    pub public_keys: Vec<String>,
    pub jwks_url: Option<String>,
    pub user_claim: String,
    pub leeway_seconds: i32,
}

/// One saved version of an app's policy template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyTemplateVersion {
    pub app_id: AppId,
    pub version: i32,
    pub document: TemplateDocument,
    pub author: String,
    pub note: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockedSubject {
    pub app_id: AppId,
    pub subject: String,
    pub reason: Option<String>,
    pub blocked_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What [`block_subject`](crate::SubjectStore::block_subject) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockOutcome {
    /// The subject was not blocked and now is.
    Blocked,
    /// It was blocked already; its reason was replaced by the new one.
    ReasonUpdated,
    /// It was blocked already with this reason (or no new reason was given): nothing changed.
    AlreadyBlocked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "auditor" => Some(Self::Auditor),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdminUser {
    pub id: i64,
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
    pub failed_logins: i32,
    pub locked_until: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

/// What [`AdminUserStore::admit_sign_in`](crate::AdminUserStore::admit_sign_in) decided about
/// one sign-in attempt, before any password was checked.
#[derive(Debug, Clone)]
pub enum SignInAdmission {
    /// The password may be checked. The attempt is already counted as a failure (until
    /// `record_login_success` clears the count); `locked_until` is set when this attempt
    /// used the last one the window allows.
    Admitted(AdminUser),
    /// Nothing to check: the account is locked or disabled (`Some`), or no user has that name.
    Refused(Option<AdminUser>),
}

/// The outcome recorded for every credential request (DESIGN §5.7).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Issued,
    Cached,
    Denied,
    RateLimited,
    UpstreamError,
    InvalidToken,
    /// A request the gateway refused before any identity was known (bad options, unknown app).
    BadRequest,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Issued,
        Outcome::Cached,
        Outcome::Denied,
        Outcome::RateLimited,
        Outcome::UpstreamError,
        Outcome::InvalidToken,
        Outcome::BadRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Issued => "issued",
            Outcome::Cached => "cached",
            Outcome::Denied => "denied",
            Outcome::RateLimited => "rate_limited",
            Outcome::UpstreamError => "upstream_error",
            Outcome::InvalidToken => "invalid_token",
            Outcome::BadRequest => "bad_request",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// One issuance_log row. Never holds TmpSecretKey, the session token or the JWT.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct IssuanceRecord {
    /// Set by the database on insert; 0 before.
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The app slug from the URL (kept even when the app does not exist).
    pub app: String,
    pub subject: Option<String>,
    pub outcome: Outcome,
    pub http_status: i16,
    /// stsgate's error code, or the STS code for upstream errors.
    pub error_code: Option<String>,
    /// The gateway's `x-request-id`.
    pub request_id: String,
    pub sts_request_id: Option<String>,
    pub tmp_secret_id: Option<String>,
    pub policy_hash: Option<String>,
    pub template_version: Option<i32>,
    pub actions: Vec<String>,
    pub prefix: Option<String>,
    pub duration_seconds: Option<i32>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expired_time: Option<OffsetDateTime>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub latency_us: i64,
    /// How many requests the row stands for: 1, or more for a summary row into which a
    /// refusal flood from one source address was folded (same address, app, outcome and
    /// minute; the other fields are the first request's).
    pub count: i32,
}

/// Filters for searching the issuance log; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct IssuanceFilter {
    pub app: Option<String>,
    pub subject: Option<String>,
    /// Match subjects that start with `subject` instead of the exact subject.
    pub subject_prefix: bool,
    pub outcome: Option<Outcome>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    pub source_ip: Option<String>,
    pub tmp_secret_id: Option<String>,
}

/// A keyset cursor: rows strictly older than `(at, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuanceCursor {
    pub at: OffsetDateTime,
    pub id: i64,
}

/// One admin_audit row: who changed what, with before/after (secrets redacted).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AdminChange {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    /// e.g. `app.create`, `app.update`, `template.save`, `subject.block`.
    pub action: String,
    pub target: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// A signed-in admin-page session, with its user as stored now (role and disabled flag are
/// read on every request, so a change takes effect at once).
#[derive(Debug, Clone)]
pub struct AdminSession {
    pub user: AdminUser,
    /// The per-session CSRF token every state-changing request must carry.
    pub csrf_token: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// Issuance-log totals of one app over a time window (the dashboard).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AppTraffic {
    /// The app slug as logged (it may name an app that does not exist).
    pub app: String,
    pub total: i64,
    pub issued: i64,
    pub cached: i64,
    pub denied: i64,
    pub invalid_token: i64,
    pub bad_request: i64,
    pub rate_limited: i64,
    pub upstream_error: i64,
    /// 95th percentile of the request latency, in microseconds.
    pub p95_latency_us: Option<i64>,
}

/// Filters for the admin change log; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct AdminChangeFilter {
    pub actor: Option<String>,
    /// Exact action, e.g. `app.update`.
    pub action: Option<String>,
    /// Exact target: an app slug or a username.
    pub target: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
}

/// Request latencies as a histogram that merges across hours and apps: bucket `b` counts the
/// latencies up to `100 µs × 1.1^(b+1)` (the last bucket takes everything longer), so a
/// percentile read from it is the bucket's upper bound: at most 10% above the true value.
/// Stored sparse, as `{"bucket": count}` (the rollup's `latency` column).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LatencyHistogram(pub std::collections::BTreeMap<u16, i64>);

impl LatencyHistogram {
    /// The last bucket: 100 µs × 1.1^201 ≈ 35 min and beyond.
    pub const MAX_BUCKET: u16 = 200;

    /// The bucket of one latency; the SQL of the rollup computes the same.
    pub fn bucket(latency_us: i64) -> u16 {
        let b = ((latency_us.max(1) as f64 / 100.0).ln() / 1.1f64.ln()).floor();
        b.clamp(0.0, f64::from(Self::MAX_BUCKET)) as u16
    }

    /// The largest latency bucket `b` holds, in microseconds.
    pub fn upper_bound_us(b: u16) -> i64 {
        (100.0 * 1.1f64.powi(i32::from(b) + 1)).round() as i64
    }

    pub fn record(&mut self, latency_us: i64) {
        *self.0.entry(Self::bucket(latency_us)).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Self) {
        for (b, n) in &other.0 {
            *self.0.entry(*b).or_default() += n;
        }
    }

    pub fn count(&self) -> i64 {
        self.0.values().sum()
    }

    /// The `q` quantile (0..=1) as its bucket's upper bound; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<i64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        // The rank of the q-th value, 1-based (nearest-rank definition).
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as i64).max(1);
        let mut seen = 0;
        for (b, n) in &self.0 {
            seen += n;
            if seen >= rank {
                return Some(Self::upper_bound_us(*b));
            }
        }
        self.0.keys().next_back().map(|b| Self::upper_bound_us(*b))
    }
}

/// The start of the UTC hour `t` falls in (the rollup's unit).
pub fn hour_start(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    t - time::Duration::seconds(i64::from(t.minute()) * 60 + i64::from(t.second()))
        - time::Duration::nanoseconds(i64::from(t.nanosecond()))
}

/// One hour of one app's requests with one outcome (the dashboard's charts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HourlyTraffic {
    /// The start of the hour, UTC.
    #[serde(with = "time::serde::rfc3339")]
    pub hour: OffsetDateTime,
    /// The app slug as logged (it may name an app that does not exist).
    pub app: String,
    pub outcome: Outcome,
    pub requests: i64,
    pub latency: LatencyHistogram,
}

/// The subjects and source addresses with the most requests over a window, busiest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TopRequesters {
    pub subjects: Vec<(String, i64)>,
    pub source_ips: Vec<(String, i64)>,
}

// -------------------------------------------------------------------------------------------
// Cluster mode (DESIGN §8): membership, the shared STS budget, shared credentials

/// What a replica says about itself in its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: uuid::Uuid,
    /// The host name (a container or pod name) the replica runs on.
    pub host: String,
    pub public_addr: String,
    pub admin_addr: String,
    /// stsgate's version.
    pub version: String,
}

/// A replica as the membership table knows it.
#[derive(Debug, Clone)]
pub struct ClusterMember {
    pub id: uuid::Uuid,
    pub host: String,
    pub public_addr: String,
    pub admin_addr: String,
    pub version: String,
    pub started_at: OffsetDateTime,
    pub last_beat: OffsetDateTime,
    /// Milliseconds since its last beat, on the database's clock.
    pub beat_age_ms: i64,
    /// Beat within the liveness window (three beats).
    pub live: bool,
}

/// An app's cluster-wide STS budget: `per_second` calls, of which `burst` may come at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StsBudget {
    pub per_second: u32,
    pub burst: u32,
}

impl StsBudget {
    /// Seconds between two tokens (the GCRA cell's step).
    pub fn interval(self) -> f64 {
        1.0 / f64::from(self.per_second.max(1))
    }

    /// How far ahead of the clock the cell may run, in seconds (burst tokens' worth).
    pub fn ahead(self) -> f64 {
        self.interval() * f64::from(self.burst.max(1))
    }
}

/// One token of an app's cluster-wide STS budget, or how long until one is free.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BudgetGrant {
    Granted,
    /// Refused: a token is free again after this long.
    RetryAfter(std::time::Duration),
}

/// A credential in the shared table, decrypted.
#[derive(Debug, Clone)]
pub struct SharedCredential {
    pub tmp_secret_id: String,
    pub tmp_secret_key: SecretString,
    pub session_token: SecretString,
    /// Unix seconds.
    pub expired_time: i64,
    pub expiration: String,
    pub request_id: String,
    /// When it was minted (Unix seconds, the minting replica's clock).
    pub start_time: i64,
    /// Reuse ends at this Unix second.
    pub reuse_until: i64,
}

/// Which row of the shared credential table: `key` is the credential cache key, spelled out
/// (it is hashed for the row's key and is the associated data of its encryption).
#[derive(Debug, Clone, Copy)]
pub struct SharedKey<'a> {
    pub app_id: AppId,
    pub subject: &'a str,
    pub key: &'a str,
}

/// The outcome of trying to claim the mint of a shared credential.
#[derive(Debug)]
pub enum Claim {
    /// This replica mints it; the others wait for its row. `budget` is the app's STS budget's
    /// answer when the claim was asked to take a token with it and could (only a won claim
    /// takes one, and only when the budget's row was free at once); `None`: no token was
    /// taken, the caller takes it itself.
    Mine { budget: Option<BudgetGrant> },
    /// Another replica has put a reusable credential there meanwhile.
    Ready(SharedCredential),
    /// Another replica is minting it (its claim has not run out).
    Taken,
}

/// A bearer token of the admin API (`api_tokens`). The token itself is never stored: only its
/// SHA-256 (not part of this type) and its first characters, to tell tokens apart in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    pub id: i64,
    /// `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`; the change log names its changes `token:<name>`.
    pub name: String,
    pub role: Role,
    /// The token's first characters (`stsg_` and a few more): enough to recognise, not to use.
    pub prefix: String,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Updated at most once a minute.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A new API token as the store receives it: its hash, never the token.
#[derive(Debug, Clone)]
pub struct NewApiToken {
    pub name: String,
    pub role: Role,
    /// Lowercase hex SHA-256 of the token.
    pub token_hash: String,
    pub prefix: String,
    pub expires_at: Option<OffsetDateTime>,
}
