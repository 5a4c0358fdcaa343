//! Schema migrations (refinery) and the connection pool.
//!
//! refinery has no sqlx driver, so this module implements refinery's async driver traits
//! for one `sqlx::PgConnection`: migrations run over the same TLS-capable Postgres stack as
//! the application (no second client, no `NoTls`). refinery takes no lock of its own; [`run`]
//! holds a session advisory lock on that connection for the whole run, so replicas starting
//! together apply each migration exactly once.

use std::str::FromStr;

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

/// Applies the pending migrations under an advisory lock; returns their names
/// (`V1__init`, …), empty when the schema was already current.
pub async fn run(database_url: &str) -> anyhow::Result<Vec<String>> {
    let options = PgConnectOptions::from_str(database_url)
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let mut conn = PgConnection::connect_with(&options)
        .await
        .context("cannot connect to PostgreSQL to run migrations")?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut conn)
        .await
        .context("cannot take the migration lock")?;

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

/// The migrations compiled into this binary, in order (`V1__init`, …).
pub fn embedded_migrations() -> Vec<String> {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(ToString::to_string)
        .collect()
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
