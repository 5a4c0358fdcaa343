//! The repository trait the gateway and admin pages talk to.

use async_trait::async_trait;

use crate::model::*;
use crate::template::TemplateDocument;

/// A validation failure that points at the offending field (`statements[0].resources[1]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique constraint (e.g. an app slug or username that already exists).
    #[error("already exists: {0}")]
    Conflict(String),
    /// Input that fails validation, with the fields at fault.
    #[error("invalid input: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// A stored secret could not be decrypted (wrong or missing master key).
    #[error("cannot decrypt a stored secret: {0}")]
    Crypto(#[from] crate::crypto::CryptoError),
    /// The database could not be reached or failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// True when the database is unreachable (the gateway answers 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
                    | sqlx::Error::WorkerCrashed
            )
        ) || matches!(self, StoreError::Database(sqlx::Error::Database(e)) if e.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything stsgate reads and writes. Every app-scoped query is scoped by app id.
/// Mutations take the acting admin's name and write an `admin_audit` row in the same
/// transaction, with secrets redacted, and notify other replicas (`NOTIFY stsgate_changes`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `SELECT 1`.
    async fn ping(&self) -> Result<()>;

    // Apps
    async fn app_by_slug(&self, slug: &str) -> Result<Option<App>>;
    async fn app_by_id(&self, id: AppId) -> Result<Option<App>>;
    async fn list_apps(&self) -> Result<Vec<App>>;
    async fn create_app(&self, actor: &str, input: &AppInput) -> Result<App>;
    async fn update_app(&self, actor: &str, id: AppId, input: &AppInput) -> Result<App>;
    async fn set_app_enabled(&self, actor: &str, id: AppId, enabled: bool) -> Result<()>;

    // JWT settings
    async fn app_auth(&self, id: AppId) -> Result<Option<AppAuth>>;
    async fn set_app_auth(&self, actor: &str, id: AppId, input: &AppAuthInput) -> Result<AppAuth>;

    // Policy templates
    /// Validates, stores a new version and makes it active.
    async fn save_template(
        &self,
        actor: &str,
        id: AppId,
        document: &TemplateDocument,
        note: Option<&str>,
    ) -> Result<PolicyTemplateVersion>;
    async fn active_template(&self, id: AppId) -> Result<Option<PolicyTemplateVersion>>;
    /// Newest first.
    async fn template_versions(&self, id: AppId) -> Result<Vec<PolicyTemplateVersion>>;
    async fn template_version(
        &self,
        id: AppId,
        version: i32,
    ) -> Result<Option<PolicyTemplateVersion>>;
    /// Makes an older version active again (rollback).
    async fn activate_template(&self, actor: &str, id: AppId, version: i32) -> Result<()>;

    // Blocked subjects
    async fn is_blocked(&self, id: AppId, subject: &str) -> Result<bool>;
    async fn block_subject(
        &self,
        actor: &str,
        id: AppId,
        subject: &str,
        reason: Option<&str>,
    ) -> Result<()>;
    async fn unblock_subject(&self, actor: &str, id: AppId, subject: &str) -> Result<()>;
    async fn blocked_subjects(&self, id: AppId) -> Result<Vec<BlockedSubject>>;

    // Admin users
    async fn create_admin_user(
        &self,
        actor: &str,
        username: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<AdminUser>;
    async fn admin_user_by_name(&self, username: &str) -> Result<Option<AdminUser>>;
    async fn admin_user_by_id(&self, id: i64) -> Result<Option<AdminUser>>;
    async fn list_admin_users(&self) -> Result<Vec<AdminUser>>;
    /// Changes a user's role. Refuses to leave no enabled admin.
    async fn set_admin_user_role(&self, actor: &str, id: i64, role: Role) -> Result<AdminUser>;
    /// Disables (and signs out) or re-enables a user; enabling also lifts a lockout.
    /// Refuses to leave no enabled admin.
    async fn set_admin_user_disabled(
        &self,
        actor: &str,
        id: i64,
        disabled: bool,
    ) -> Result<AdminUser>;
    /// Replaces the password hash (argon2id PHC), lifts a lockout and signs the user out.
    async fn set_admin_user_password(
        &self,
        actor: &str,
        id: i64,
        password_hash: &str,
    ) -> Result<AdminUser>;

    // Admin sign-in: lockout counters and server-side sessions
    /// Counts a failed sign-in; the `max_failures`-th failure in a row locks the account for
    /// `lock_secs` seconds. Returns the user as updated.
    async fn record_login_failure(
        &self,
        user_id: i64,
        max_failures: i32,
        lock_secs: i64,
    ) -> Result<AdminUser>;
    /// Clears the failure counter and any lockout.
    async fn record_login_success(&self, user_id: i64) -> Result<()>;
    /// Stores a session under the hash of its token (the token itself is never stored).
    async fn create_admin_session(
        &self,
        user_id: i64,
        token_hash: &str,
        csrf_token: &str,
        ttl_secs: i64,
    ) -> Result<()>;
    /// A live session: not expired, its user not disabled.
    async fn admin_session(&self, token_hash: &str) -> Result<Option<AdminSession>>;
    async fn delete_admin_session(&self, token_hash: &str) -> Result<()>;
    /// Removes expired sessions; returns how many.
    async fn delete_expired_admin_sessions(&self) -> Result<u64>;

    // Issuance log
    /// Inserts the rows in one transaction; returns when it has committed.
    async fn insert_issuance_batch(&self, records: &[IssuanceRecord]) -> Result<()>;
    /// Newest first, strictly older than `cursor` when given.
    async fn search_issuance(
        &self,
        filter: &IssuanceFilter,
        cursor: Option<IssuanceCursor>,
        limit: i64,
    ) -> Result<Vec<IssuanceRecord>>;

    /// Per-app totals and p95 latency of the rows logged at or after `since`.
    async fn traffic_since(&self, since: time::OffsetDateTime) -> Result<Vec<AppTraffic>>;
    /// The latest `expired_time` of credentials handed to `subject` by the app `app_slug`
    /// that are still valid (the blocked-subjects page says how long they stay usable).
    async fn latest_credential_expiry(
        &self,
        app_slug: &str,
        subject: &str,
    ) -> Result<Option<time::OffsetDateTime>>;

    // Admin change log
    /// Newest first, strictly older than `before_id` when given.
    async fn admin_changes(&self, before_id: Option<i64>, limit: i64) -> Result<Vec<AdminChange>>;
    /// Like [`Store::admin_changes`], narrowed by `filter`.
    async fn search_admin_changes(
        &self,
        filter: &AdminChangeFilter,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AdminChange>>;
}
