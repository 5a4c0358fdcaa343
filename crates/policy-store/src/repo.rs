//! The repository traits the gateway and admin pages talk to: one per aggregate, and
//! [`Store`], which is all of them (so `Arc<dyn Store>` works everywhere).

use async_trait::async_trait;

pub use crate::error::{FieldError, Result, StoreError};
use crate::model::*;
use crate::spec::{AppSpec, ApplyOptions, Plan};
use crate::template::TemplateDocument;

/// Everything stsgate reads and writes. Every app-scoped query is scoped by app id.
/// Mutations take the acting admin's name and write an `admin_audit` row in the same
/// transaction, with secrets redacted, and notify other replicas (`NOTIFY stsgate_changes`).
///
/// Implemented for every type that implements the aggregate traits below; bring the one you
/// call into scope when calling on a concrete store (`PgStore`).
pub trait Store:
    HealthStore
    + AppStore
    + TemplateStore
    + SubjectStore
    + AdminUserStore
    + AdminPrefsStore
    + IssuanceStore
    + RollupStore
    + ChangeLogStore
    + ClusterStore
    + ApiTokenStore
    + IssuanceTailStore
    + AppsAsCodeStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: HealthStore
        + AppStore
        + TemplateStore
        + SubjectStore
        + AdminUserStore
        + AdminPrefsStore
        + IssuanceStore
        + RollupStore
        + ChangeLogStore
        + ClusterStore
        + ApiTokenStore
        + IssuanceTailStore
        + AppsAsCodeStore
        + Send
        + Sync
        + 'static
{
}

#[async_trait]
pub trait HealthStore: Send + Sync {
    /// `SELECT 1`.
    async fn ping(&self) -> Result<()>;
}

/// Apps and their JWT settings.
#[async_trait]
pub trait AppStore: Send + Sync {
    async fn app_by_slug(&self, slug: &str) -> Result<Option<App>>;
    async fn app_by_id(&self, id: AppId) -> Result<Option<App>>;
    async fn list_apps(&self) -> Result<Vec<App>>;
    async fn create_app(&self, actor: &str, input: &AppInput) -> Result<App>;
    async fn update_app(&self, actor: &str, id: AppId, input: &AppInput) -> Result<App>;
    async fn set_app_enabled(&self, actor: &str, id: AppId, enabled: bool) -> Result<()>;

    // JWT settings
    async fn app_auth(&self, id: AppId) -> Result<Option<AppAuth>>;
    async fn set_app_auth(&self, actor: &str, id: AppId, input: &AppAuthInput) -> Result<AppAuth>;
}

/// Policy templates: versions, the active one, rollback.
#[async_trait]
pub trait TemplateStore: Send + Sync {
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
}

/// Subjects blocked per app (the kill switch).
#[async_trait]
pub trait SubjectStore: Send + Sync {
    async fn is_blocked(&self, id: AppId, subject: &str) -> Result<bool>;
    /// Blocks `subject` exactly as given. Blocking a blocked subject again keeps its reason,
    /// unless a different non-empty reason is given (recorded before/after).
    async fn block_subject(
        &self,
        actor: &str,
        id: AppId,
        subject: &str,
        reason: Option<&str>,
    ) -> Result<BlockOutcome>;
    async fn unblock_subject(&self, actor: &str, id: AppId, subject: &str) -> Result<()>;
    async fn blocked_subjects(&self, id: AppId) -> Result<Vec<BlockedSubject>>;
}

/// Admin users, their sign-in lockout counters and server-side sessions.
#[async_trait]
pub trait AdminUserStore: Send + Sync {
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

    // Sign-in: lockout counters and server-side sessions
    /// Admits one sign-in attempt for `username` before its password is checked, in one
    /// atomic statement: an enabled, unlocked user's attempt is counted as a failure right
    /// away, and the `max_failures`-th such attempt locks the account for `lock_secs` seconds.
    /// So however many attempts arrive at once, at most `max_failures` passwords are checked
    /// per lockout window. A live lock is never extended. Every call writes exactly one row
    /// (the user's, or a decoy row for unknown names), whatever the outcome.
    async fn admit_sign_in(
        &self,
        username: &str,
        max_failures: i32,
        lock_secs: i64,
    ) -> Result<SignInAdmission>;
    /// After a correct password: clears the failure count and any lockout.
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
}

/// An admin user's own display preferences (not a security setting: no change-log row).
#[async_trait]
pub trait AdminPrefsStore: Send + Sync {
    /// The user's display time zone (an IANA name), `None` for UTC.
    async fn admin_display_timezone(&self, user_id: i64) -> Result<Option<String>>;
    /// Sets (or, with `None`, clears) the user's display time zone. The caller checks the
    /// name against its time-zone database; the store only bounds it.
    async fn set_admin_display_timezone(&self, user_id: i64, zone: Option<&str>) -> Result<()>;
}

/// The dashboard's hourly figures: from the rollup up to its watermark (two minutes before its
/// last refresh), the rows after it live.
#[async_trait]
pub trait RollupStore: Send + Sync {
    /// Requests per (hour, app, outcome) with latency histograms, from the hour of `since` up
    /// to `now` (the current hour included, as far as it has gone).
    async fn hourly_traffic(
        &self,
        since: time::OffsetDateTime,
        now: time::OffsetDateTime,
    ) -> Result<Vec<HourlyTraffic>>;
    /// The `limit` subjects and source addresses with the most requests from the hour of
    /// `since` to `now`. The rolled-up part of each hour counts only its 50 busiest, so a
    /// long tail of small ones can be missing: good for spotting a hot client, not for
    /// billing.
    async fn top_requesters(
        &self,
        since: time::OffsetDateTime,
        now: time::OffsetDateTime,
        limit: i64,
    ) -> Result<TopRequesters>;
    /// When the rollup was last refreshed (`None`: never; the figures are then all live).
    async fn rollup_refreshed_at(&self) -> Result<Option<time::OffsetDateTime>>;
}

/// The issuance log: group-committed inserts, search, the dashboard's traffic figures.
#[async_trait]
pub trait IssuanceStore: Send + Sync {
    /// Inserts the rows in one transaction; returns when it has committed.
    async fn insert_issuance_batch(&self, records: &[IssuanceRecord]) -> Result<()>;
    /// Newest first, strictly older than `cursor` when given.
    async fn search_issuance(
        &self,
        filter: &IssuanceFilter,
        cursor: Option<IssuanceCursor>,
        limit: i64,
    ) -> Result<Vec<IssuanceRecord>>;

    /// How many rows match `filter`, counting at most `cap` (the page says "more than").
    async fn count_issuance(&self, filter: &IssuanceFilter, cap: i64) -> Result<i64>;

    /// Per-app totals and p95 latency of the rows logged at or after `since`.
    async fn traffic_since(&self, since: time::OffsetDateTime) -> Result<Vec<AppTraffic>>;
    /// The latest `expired_time` of credentials handed to `subject` by the app `app_slug`
    /// that are still valid (the blocked-subjects page says how long they stay usable).
    async fn latest_credential_expiry(
        &self,
        app_slug: &str,
        subject: &str,
    ) -> Result<Option<time::OffsetDateTime>>;
    /// Rewrites the `issued`/`cached` rows of `request_ids` logged at or after `since` as
    /// what their clients actually got: `upstream_error` with `http_status` and `error_code`
    /// (the TmpSecretId stays: minted, never delivered). For a commit whose answer came too late (its client was answered
    /// 503 meanwhile) or whose client went away. Returns how many rows changed.
    async fn amend_unanswered_issuance(
        &self,
        request_ids: &[String],
        since: time::OffsetDateTime,
        http_status: i16,
        error_code: &str,
    ) -> Result<u64>;
}

/// The admin change log (`admin_audit`), written by every mutation above.
#[async_trait]
pub trait ChangeLogStore: Send + Sync {
    /// Newest first, strictly older than `before_id` when given.
    async fn admin_changes(&self, before_id: Option<i64>, limit: i64) -> Result<Vec<AdminChange>>;
    /// Like [`ChangeLogStore::admin_changes`], narrowed by `filter`.
    async fn search_admin_changes(
        &self,
        filter: &AdminChangeFilter,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AdminChange>>;
}

/// Cluster mode (DESIGN §8): the replicas' membership, each app's cluster-wide STS budget and
/// the credentials replicas share. Written by the gateway itself, never by admins.
#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// Records a beat for `me` (registering it on the first) and returns every member seen
    /// in the last hour, oldest first; `live` says which beat within `live_within`.
    async fn heartbeat(
        &self,
        me: &MemberInfo,
        live_within: std::time::Duration,
    ) -> Result<Vec<ClusterMember>>;
    /// The members seen in the last hour, as [`ClusterStore::heartbeat`] returns them.
    async fn cluster_members(&self, live_within: std::time::Duration)
    -> Result<Vec<ClusterMember>>;
    /// Removes `id` from the membership (a graceful shutdown).
    async fn leave_cluster(&self, id: uuid::Uuid) -> Result<()>;

    /// Takes one token of the app's STS budget. One atomic statement; a replica holds no
    /// tokens.
    async fn take_sts_budget(&self, id: AppId, budget: StsBudget) -> Result<BudgetGrant>;

    /// A reusable credential under `key`, if a replica has put one there.
    async fn shared_credential(&self, key: SharedKey<'_>) -> Result<Option<SharedCredential>>;
    /// Claims the mint of `key` for `me` for `claim_for`, unless a reusable credential is
    /// there (`Ready`, with it: read only, the row is neither locked nor written) or another
    /// replica's claim is still running (`Taken`). With
    /// `budget`, a won claim also takes one token of the app's STS budget
    /// ([`ClusterStore::take_sts_budget`]) and says how that went, unless the budget's row is
    /// locked (or not there yet): it never waits for it, and the caller takes the token
    /// itself. One statement (one round trip) whatever the outcome.
    async fn claim_shared_credential(
        &self,
        key: SharedKey<'_>,
        me: uuid::Uuid,
        claim_for: std::time::Duration,
        budget: Option<StsBudget>,
    ) -> Result<Claim>;
    /// Stores a minted credential under `key` (ending the claim).
    async fn put_shared_credential(
        &self,
        key: SharedKey<'_>,
        credential: &SharedCredential,
    ) -> Result<()>;
    /// Gives up `me`'s claim on `key` (the mint failed), so a waiter can take it over.
    async fn release_shared_claim(&self, key: SharedKey<'_>, me: uuid::Uuid) -> Result<()>;
    /// Deletes credentials past their reuse window, claims abandoned for a minute, and
    /// members not seen for an hour. Returns how many credential rows went.
    async fn purge_cluster_rows(&self) -> Result<u64>;
}

/// Bearer tokens of the admin API. Creating and revoking write the change log.
#[async_trait]
pub trait ApiTokenStore: Send + Sync {
    /// Stores a token (its hash). A live token with the same name is a conflict.
    async fn create_api_token(&self, actor: &str, token: &NewApiToken) -> Result<ApiToken>;
    /// Every token, revoked and expired ones included, newest first.
    async fn list_api_tokens(&self) -> Result<Vec<ApiToken>>;
    async fn api_token_by_id(&self, id: i64) -> Result<Option<ApiToken>>;
    /// Revokes a token at once. Revoking a revoked token changes nothing.
    async fn revoke_api_token(&self, actor: &str, id: i64) -> Result<ApiToken>;
    /// The live (not revoked, not expired) token with this hash, and records its use: the
    /// last-used time is written at most once a minute, in the same statement.
    async fn use_api_token(&self, token_hash: &str) -> Result<Option<ApiToken>>;
}

/// The issuance log read oldest first, for tailing (`follow=true` exports).
#[async_trait]
pub trait IssuanceTailStore: Send + Sync {
    /// Rows matching `filter` strictly newer than `after` (by `(at, id)`), oldest first.
    async fn issuance_after(
        &self,
        filter: &IssuanceFilter,
        after: Option<IssuanceCursor>,
        limit: i64,
    ) -> Result<Vec<IssuanceRecord>>;
}

/// Apps as code (`stsgate apply` / `export`, `POST /api/v1/apply`).
#[async_trait]
pub trait AppsAsCodeStore: Send + Sync {
    /// Every app with all its settings, secrets left out, by slug.
    async fn export_specs(&self) -> Result<Vec<AppSpec>>;
    /// Converges the store to `specs` in one transaction and returns what changed (or, with
    /// `dry_run`, what would). Every spec is validated with the writers' own checks before
    /// anything is written; any invalid field fails the whole apply with
    /// [`StoreError::Invalid`], every field named `apps.<slug>.<field>`. Writes go through the
    /// same writers as the pages, so each change has its change-log row under `actor`.
    async fn apply_specs(
        &self,
        actor: &str,
        specs: &[AppSpec],
        options: ApplyOptions,
    ) -> Result<Plan>;
}
