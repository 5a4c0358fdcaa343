//! [`PgStore`]: the [`Store`](crate::Store) traits over PostgreSQL (sqlx), one module per
//! aggregate.
//!
//! Runtime-checked queries (`sqlx::query`), no `query!` macros. Every app-scoped statement
//! filters by app id. Every mutation runs in one transaction that also writes an
//! `admin_audit` row (secrets redacted) and `pg_notify('stsgate_changes', <app id>)`.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};

use crate::crypto::Cipher;
use crate::error::{DatabaseError, DbResult as _, FieldError, Result, StoreError};
use crate::repo::HealthStore;

mod admin_prefs;
mod admin_users;
mod api_tokens;
mod apply;
mod apps;
mod change_log;
mod cluster;
mod feed;
mod issuance;
mod issuance_filter;
mod issuance_tail;
mod retention;
mod rollup;
mod subjects;
mod templates;

pub use feed::{Change, ChangeFeed};
pub use retention::{
    ArchiveFiles, DroppedPartition, MonthlyPartition, RETENTION_LOCK_KEY, RetentionError,
    RetentionPolicy, RetentionReport,
};
pub use rollup::RollupRefresh;

/// The `LISTEN/NOTIFY` channel for admin changes. The payload is the app id, or `admin`
/// for admin-user changes.
pub const CHANGES_CHANNEL: &str = "stsgate_changes";

/// Payload of notifications about admin users.
pub const ADMIN_NOTIFY_PAYLOAD: &str = "admin";

use crate::redact::REDACTED;

/// Longest `limit` honoured by the list queries.
pub const MAX_PAGE: i64 = 10_000;

/// How [`PgStore::connect`] sizes and bounds its connection pool.
///
/// Callers on a request path bound each call with a deadline of their own (the gateway's
/// `database_timeout`); the server-side timeouts here are the backstop that makes PostgreSQL
/// itself give up on work nobody waits for any more, and they apply to every connection of
/// the pool (admin queries included, so keep them above the slowest legitimate query).
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: u32,
    /// How long a query waits for a free connection before it fails as timed out.
    pub acquire_timeout: Duration,
    /// PostgreSQL's `statement_timeout`: a statement running longer is cancelled by the
    /// server (SQLSTATE 57014, reported as [`DbErrorKind::TimedOut`](crate::DbErrorKind)).
    /// `None` keeps the server's setting.
    pub statement_timeout: Option<Duration>,
    /// PostgreSQL's `idle_in_transaction_session_timeout`: a session idle inside a transaction
    /// for longer is ended, releasing its locks. `None` keeps the server's setting.
    pub idle_in_transaction_timeout: Option<Duration>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Some(Duration::from_secs(30)),
            idle_in_transaction_timeout: Some(Duration::from_secs(60)),
        }
    }
}

/// The Postgres implementation of the store traits. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Cluster coordination (membership beats, the STS budget, shared-credential claims and
    /// rows): connections whose commits do not wait for the WAL flush (see
    /// [`coordination_pool`]). Never used for the issuance log or admin data.
    coordination: PgPool,
    cipher: Arc<Cipher>,
    /// How JWT settings are checked before they are saved: the gateway compiles them with the
    /// same options, so the store never accepts what the gateway would refuse.
    jwt: crate::jwt::CompileOptions,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects a pool to `database_url` (parsed once, never logged) and opens one
    /// connection to check that the database answers.
    pub async fn connect(
        database_url: &str,
        options: &PoolOptions,
        cipher: Cipher,
    ) -> Result<Self> {
        let pool = connect_pool(database_url, options).await.db()?;
        let coordination = coordination_pool(database_url, options).db()?;
        Ok(Self {
            pool,
            coordination,
            cipher: Arc::new(cipher),
            jwt: Default::default(),
        })
    }

    /// Checks JWT settings with these options when saving them (pass the gateway's).
    pub fn with_jwt_options(mut self, options: crate::jwt::CompileOptions) -> Self {
        self.jwt = options;
        self
    }

    /// A store over a pool the caller built (tests share their database's pool).
    #[cfg(any(test, feature = "testing"))]
    pub fn new(pool: PgPool, cipher: Cipher) -> Self {
        Self {
            coordination: pool.clone(),
            pool,
            cipher: Arc::new(cipher),
            jwt: Default::default(),
        }
    }

    /// The pool, for tests that look at the database directly.
    #[cfg(any(test, feature = "testing"))]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The cluster's coordination pool (see [`coordination_pool`]), for tests.
    #[cfg(any(test, feature = "testing"))]
    pub fn coordination(&self) -> &PgPool {
        &self.coordination
    }

    /// Follows [`CHANGES_CHANNEL`]: see [`ChangeFeed`]. Connects on the first
    /// [`ChangeFeed::next`].
    pub fn changes(&self) -> ChangeFeed {
        ChangeFeed::new(self.pool.clone())
    }
}

/// A pool for `database_url`, which is parsed once into `PgConnectOptions`.
pub(crate) async fn connect_pool(
    database_url: &str,
    options: &PoolOptions,
) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect_options(database_url, options)?)
        .await
}

/// Connections at most in the [`coordination_pool`].
const COORDINATION_CONNECTIONS: u32 = 4;

/// The cluster's coordination pool: connected on first use (commands that never coordinate
/// open nothing), at most [`COORDINATION_CONNECTIONS`], with `synchronous_commit = off`.
///
/// What it writes is soft state whose loss in a database crash costs nothing that matters: a
/// membership beat (the next one comes within a second), a slice of an STS budget (at worst
/// a few calls too many in the second after a crash) and a shared-credential row (at worst
/// one extra mint). Such a commit is visible to every other session at once and durable
/// within `wal_writer_delay` (3 × 200 ms at worst); it just does not wait for the flush.
/// Without this, every cache miss waited for three WAL flushes besides its own
/// issuance-log row, and all misses of one app queued behind one flush per call on the
/// budget row's lock. The issuance log is untouched: its commits still wait for the flush,
/// and since the WAL is written in order, flushing one of them flushes every coordination
/// commit before it.
pub(crate) fn coordination_pool(
    database_url: &str,
    options: &PoolOptions,
) -> Result<PgPool, sqlx::Error> {
    let connect = connect_options(database_url, options)?.options([("synchronous_commit", "off")]);
    Ok(PgPoolOptions::new()
        .max_connections(options.max_connections.clamp(1, COORDINATION_CONNECTIONS))
        .acquire_timeout(options.acquire_timeout)
        .connect_lazy_with(connect))
}

fn connect_options(
    database_url: &str,
    options: &PoolOptions,
) -> Result<PgConnectOptions, sqlx::Error> {
    let mut connect = PgConnectOptions::from_str(database_url)?;
    // Sent as startup parameters: every connection of the pool has them from its first query.
    let timeouts = [
        ("statement_timeout", options.statement_timeout),
        (
            "idle_in_transaction_session_timeout",
            options.idle_in_transaction_timeout,
        ),
    ];
    for (name, value) in timeouts {
        if let Some(t) = value {
            // At least 1 ms: 0 would mean "no timeout" to PostgreSQL.
            connect = connect.options([(name, format!("{}ms", t.as_millis().max(1)))]);
        }
    }
    Ok(connect)
}

// -------------------------------------------------------------------------------------------
// Helpers shared by the aggregates' writers

/// Records an admin change in `admin_audit`, in the caller's transaction.
async fn audit(
    conn: &mut PgConnection,
    actor: &str,
    action: &str,
    target: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO admin_audit (actor, action, target, before, after) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(before)
    .bind(after)
    .execute(conn)
    .await
    .db()?;
    Ok(())
}

/// Delivered to listeners when the transaction commits.
async fn notify(conn: &mut PgConnection, payload: &str) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANGES_CHANNEL)
        .bind(payload)
        .execute(conn)
        .await
        .db()?;
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
    StoreError::Database(DatabaseError::from_sqlx(&e))
}

/// A stored value this binary cannot read (an enum column with an unknown value).
fn decode_err(msg: String) -> sqlx::Error {
    sqlx::Error::Decode(msg.into())
}

fn clamp_limit(limit: i64) -> i64 {
    limit.clamp(1, MAX_PAGE)
}

#[async_trait]
impl HealthStore for PgStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.db()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DbErrorKind;
    use crate::testing::fresh_database;

    #[tokio::test]
    async fn pool_connections_carry_the_server_side_timeouts() {
        let db = fresh_database().await.unwrap();
        let pool = connect_pool(
            &db.url,
            &PoolOptions {
                max_connections: 1,
                statement_timeout: Some(Duration::from_millis(300)),
                idle_in_transaction_timeout: Some(Duration::from_secs(7)),
                ..PoolOptions::default()
            },
        )
        .await
        .unwrap();
        let shown: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(shown, "7s");
        // The server cancels the statement; the store reports it as timed out.
        let err = sqlx::query("SELECT pg_sleep(5)")
            .execute(&pool)
            .await
            .db()
            .unwrap_err();
        match &err {
            StoreError::Database(e) => assert_eq!(e.kind(), DbErrorKind::TimedOut, "{err}"),
            other => panic!("{other:?}"),
        }
        // The connection is still usable afterwards.
        sqlx::query("SELECT 1").execute(&pool).await.unwrap();
        pool.close().await;
    }
}
