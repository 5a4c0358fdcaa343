//! Schema migrations (refinery) and the connection pool.
//!
//! refinery has no sqlx driver, so this module implements refinery's async driver traits
//! for one `sqlx::PgConnection`: migrations run over the same TLS-capable Postgres stack as
//! the application (no second client, no `NoTls`). refinery takes no lock of its own; [`run`]
//! holds a session advisory lock on that connection for the whole run, so replicas starting
//! together apply each migration exactly once.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use refinery_core::Migration;
use refinery_core::traits::r#async::{AsyncMigrate, AsyncQuery, AsyncTransaction};
#[cfg(any(test, feature = "testing"))]
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, Row as _};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// `pg_advisory_lock` key held while migrating: the bytes of "STSGMIGR".
pub const MIGRATION_LOCK_KEY: i64 = 0x5354_5347_4d49_4752;

/// How long [`run_with`] waits before giving up with a clear error.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Connecting to PostgreSQL (a server that accepts but never answers must not hang the
    /// start).
    pub connect_timeout: Duration,
    /// Waiting for the migration lock, held by another replica that is migrating (or by a
    /// session that never let go). PostgreSQL's `lock_timeout` ends the wait on the server; a
    /// client-side bound of the same length plus `connect_timeout` covers a server that went
    /// silent.
    pub lock_timeout: Duration,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            lock_timeout: Duration::from_secs(60),
        }
    }
}

/// Why migrating could not start: waits that ran out (each says what to do).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("PostgreSQL did not answer within {0:?} when connecting to run migrations")]
    ConnectTimeout(Duration),
    #[error(
        "another session has held the migration lock for more than {0:?} (another stsgate \
         replica may still be migrating): retry, or raise migration_lock_timeout_secs"
    )]
    LockTimeout(Duration),
    #[error("PostgreSQL stopped answering while the migration lock was being taken")]
    Silent,
}

/// [`run_with`] and the default [`MigrateOptions`].
pub async fn run(database_url: &str) -> anyhow::Result<Vec<String>> {
    run_with(database_url, &MigrateOptions::default()).await
}

/// One connection for `purpose` (said in the error), bounded by `options.connect_timeout`.
async fn connect(
    database_url: &str,
    options: &MigrateOptions,
    purpose: &str,
) -> anyhow::Result<PgConnection> {
    let connect_options = PgConnectOptions::from_str(database_url)
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    tokio::time::timeout(
        options.connect_timeout,
        PgConnection::connect_with(&connect_options),
    )
    .await
    .map_err(|_| MigrateError::ConnectTimeout(options.connect_timeout))?
    .with_context(|| format!("cannot connect to PostgreSQL {purpose}"))
}

/// Applies the pending migrations under an advisory lock; returns their names
/// (`V1__init`, …), empty when the schema was already current. Connecting and taking the
/// lock are bounded by `options`; the migrations themselves are not (an index build on a
/// large table may legitimately take long).
pub async fn run_with(database_url: &str, options: &MigrateOptions) -> anyhow::Result<Vec<String>> {
    let mut conn = connect(database_url, options, "to run migrations").await?;
    lock(&mut conn, options).await?;

    let result = embedded::migrations::runner()
        .run_async(&mut SqlxMigrations { conn: &mut conn })
        .await;

    // Closing the session would release the lock too; unlock explicitly all the same.
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut conn)
        .await;
    let report = result.context("database migration failed")?;
    unlocked.context("cannot release the migration lock")?;
    let _ = conn.close().await;

    let applied: Vec<String> = report
        .applied_migrations()
        .iter()
        .map(ToString::to_string)
        .collect();
    for name in &applied {
        tracing::info!(migration = %name, "applied database migration");
    }
    Ok(applied)
}

/// Takes the session advisory lock [`MIGRATION_LOCK_KEY`] within `options.lock_timeout`.
async fn lock(conn: &mut PgConnection, options: &MigrateOptions) -> anyhow::Result<()> {
    let set_lock_timeout = |ms: u128| {
        sqlx::query("SELECT set_config('lock_timeout', $1, false)").bind(format!("{ms}ms"))
    };
    let bound = options.lock_timeout + options.connect_timeout;
    let taken = tokio::time::timeout(bound, async {
        // At least 1 ms: 0 would mean "wait forever".
        set_lock_timeout(options.lock_timeout.as_millis().max(1))
            .execute(&mut *conn)
            .await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut *conn)
            .await?;
        // The migrations' own lock waits keep the server's default.
        set_lock_timeout(0).execute(&mut *conn).await
    })
    .await
    .map_err(|_| MigrateError::Silent)?;
    match taken {
        Ok(_) => Ok(()),
        // lock_not_available
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
            Err(MigrateError::LockTimeout(options.lock_timeout).into())
        }
        Err(e) => Err(e).context("cannot take the migration lock"),
    }
}

/// The schema is not the one this binary's migrations make (see [`check_schema`]).
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the database has no stsgate schema (no refinery_schema_history table): run \
         `stsgate migrate` first"
    )]
    Unmigrated,
    #[error(
        "the database is behind this stsgate: it lacks {}; run `stsgate migrate` with this \
         version (or upgrade the servers, which migrate at start) first", .0.join(", ")
    )]
    Behind(Vec<String>),
    #[error(
        "the database is ahead of this stsgate: it has {}, which this version does not know; \
         use the stsgate version the servers run", .0.join(", ")
    )]
    Ahead(Vec<String>),
    #[error(
        "the database's {} differs from this stsgate's (a different build of the same \
         version number): use the stsgate version the servers run", .0.join(", ")
    )]
    Divergent(Vec<String>),
}

/// Checks, without changing anything, that the database's schema is exactly the one this
/// binary's migrations make: for the commands that read or write apps (`apply`, `export`)
/// but must not migrate a production database ahead of (or behind) its running servers.
/// Connecting is bounded by `options.connect_timeout`.
pub async fn check_schema(database_url: &str, options: &MigrateOptions) -> anyhow::Result<()> {
    let mut conn = connect(database_url, options, "to check the schema version").await?;
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('refinery_schema_history') IS NOT NULL")
            .fetch_one(&mut conn)
            .await
            .context("checking the schema version")?;
    if !exists {
        return Err(SchemaError::Unmigrated.into());
    }
    let applied: Vec<(i32, String, String)> = sqlx::query_as(
        "SELECT version, name, checksum FROM refinery_schema_history ORDER BY version",
    )
    .fetch_all(&mut conn)
    .await
    .context("reading the schema version")?;
    let _ = conn.close().await;
    let runner = embedded::migrations::runner();
    let embedded = runner.get_migrations();
    let name = |v: i32, n: &str| format!("V{v}__{n}");
    let ahead: Vec<String> = applied
        .iter()
        .filter(|(v, _, _)| !embedded.iter().any(|m| m.version() == *v))
        .map(|(v, n, _)| name(*v, n))
        .collect();
    if !ahead.is_empty() {
        return Err(SchemaError::Ahead(ahead).into());
    }
    let divergent: Vec<String> = applied
        .iter()
        .filter(|(v, n, sum)| {
            embedded
                .iter()
                .any(|m| m.version() == *v && (m.name() != n || m.checksum().to_string() != *sum))
        })
        .map(|(v, n, _)| name(*v, n))
        .collect();
    if !divergent.is_empty() {
        return Err(SchemaError::Divergent(divergent).into());
    }
    let mut behind: Vec<&Migration> = embedded
        .iter()
        .filter(|m| !applied.iter().any(|(v, _, _)| *v == m.version()))
        .collect();
    behind.sort_by_key(|m| m.version());
    if !behind.is_empty() {
        return Err(SchemaError::Behind(behind.iter().map(ToString::to_string).collect()).into());
    }
    Ok(())
}

/// The migrations compiled into this binary, in order (`V1__init`, …).
pub fn embedded_migrations() -> Vec<String> {
    let runner = embedded::migrations::runner();
    let mut migrations: Vec<_> = runner.get_migrations().iter().collect();
    // By version number (V10 after V5), as they are applied; the file names sort otherwise.
    migrations.sort_by_key(|m| m.version());
    migrations.into_iter().map(ToString::to_string).collect()
}

/// A pool of `max_connections` for `database_url`, for tests that query a database directly.
#[cfg(any(test, feature = "testing"))]
pub async fn connect_pool(database_url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options = crate::PoolOptions {
        max_connections,
        ..crate::PoolOptions::default()
    };
    crate::pg::connect_pool(database_url, &options).await
}

/// refinery's driver traits over one sqlx connection.
struct SqlxMigrations<'c> {
    conn: &'c mut PgConnection,
}

impl AsyncTransaction for SqlxMigrations<'_> {
    type Error = sqlx::Error;

    /// Runs the statements in one transaction (refinery: one migration plus its history row).
    async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
        &'a mut self,
        queries: T,
    ) -> Result<usize, Self::Error> {
        let mut tx = self.conn.begin().await?;
        let mut count = 0;
        for query in queries {
            // Migration files and refinery's own history statements: trusted, compiled-in SQL.
            // raw_sql uses the simple-query protocol, which allows several statements and
            // dollar-quoted function bodies.
            sqlx::raw_sql(AssertSqlSafe(query))
                .execute(&mut *tx)
                .await?;
            count += 1;
        }
        tx.commit().await?;
        Ok(count)
    }
}

impl AsyncQuery<Vec<Migration>> for SqlxMigrations<'_> {
    async fn query<'a>(&'a mut self, query: &'a str) -> Result<Vec<Migration>, Self::Error> {
        // refinery's history query (`SELECT version, name, applied_on, checksum FROM …`).
        let rows = sqlx::raw_sql(AssertSqlSafe(query))
            .fetch_all(&mut *self.conn)
            .await?;
        let mut applied = Vec::with_capacity(rows.len());
        for row in rows {
            let version: i32 = row.try_get(0)?;
            let name: String = row.try_get(1)?;
            let applied_on: String = row.try_get(2)?;
            let checksum: String = row.try_get(3)?;
            let applied_on = OffsetDateTime::parse(&applied_on, &Rfc3339)
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            let checksum = checksum
                .parse::<u64>()
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            applied.push(Migration::applied(version, name, applied_on, checksum));
        }
        Ok(applied)
    }
}

impl AsyncMigrate for SqlxMigrations<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fresh_database;

    /// Bounds a test that would hang on a regression.
    async fn within<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .expect("no answer within 20 s")
    }

    #[tokio::test]
    async fn a_held_migration_lock_ends_the_wait_with_a_clear_error() {
        let db = fresh_database().await.unwrap();
        let mut holder = db.pool.acquire().await.unwrap();
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut *holder)
            .await
            .unwrap();
        let options = MigrateOptions {
            lock_timeout: Duration::from_millis(300),
            ..MigrateOptions::default()
        };
        let err = within(run_with(&db.url, &options)).await.unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<MigrateError>(),
                Some(MigrateError::LockTimeout(_))
            ),
            "{err:#}"
        );
        assert!(err.to_string().contains("migration lock"), "{err}");

        // Once it is let go, migrating goes ahead (nothing left to apply).
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut *holder)
            .await
            .unwrap();
        assert!(
            within(run_with(&db.url, &options))
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_fails_the_connect_with_a_clear_error() {
        // Accepts connections and never says a word.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let options = MigrateOptions {
            connect_timeout: Duration::from_millis(300),
            ..MigrateOptions::default()
        };
        let err = within(run_with(&format!("postgres://postgres@{addr}/x"), &options))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<MigrateError>(),
                Some(MigrateError::ConnectTimeout(_))
            ),
            "{err:#}"
        );
        silent.abort();
    }
}
