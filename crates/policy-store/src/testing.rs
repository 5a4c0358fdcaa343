//! Test support: a fresh, migrated database per test (STYLE §6), reusable by other crates'
//! tests through the `testing` feature.
//!
//! `DATABASE_URL` names the maintenance database (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Each call creates
//! `stsgate_t_<unix secs>_<random hex>` and migrates it; databases of this form older than two
//! hours are dropped on the way, so aborted runs do not pile up.

use std::str::FromStr;

use anyhow::Context as _;
use base64::Engine as _;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, PgPool};
use time::OffsetDateTime;

use crate::crypto::{Cipher, MasterKey};
use crate::migrate;

/// The maintenance database used when `DATABASE_URL` is not set.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

const PREFIX: &str = "stsgate_t_";
const STALE_AFTER_SECS: i64 = 2 * 60 * 60;

/// A migrated database of its own.
///
/// Dropped (`DROP DATABASE … WITH (FORCE)`) when this value is dropped, unless the thread is
/// panicking (a failed test keeps its database for inspection) or `STSGATE_KEEP_TEST_DB` is
/// set. Databases left behind are removed by a later run once they are two hours old.
#[derive(Debug)]
pub struct TestDatabase {
    /// URL of the new database (same server and credentials as `DATABASE_URL`).
    pub url: String,
    pub pool: PgPool,
    /// The database name.
    pub name: String,
}

impl TestDatabase {
    /// Drops the database now (also what `Drop` does).
    pub async fn drop_database(self) -> anyhow::Result<()> {
        self.pool.close().await;
        drop_named(&self.name).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("STSGATE_KEEP_TEST_DB").is_some() {
            return;
        }
        let name = self.name.clone();
        // Drop may run inside the test's runtime, which cannot be blocked on: use a thread
        // with a runtime of its own. WITH (FORCE) ends the pool's connections.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(drop_named(&name))
        })
        .join();
    }
}

async fn drop_named(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        name.starts_with(PREFIX)
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "not a test database name"
    );
    let mut conn = maintenance_connection().await?;
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    let _ = conn.close().await;
    Ok(())
}

fn maintenance_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
}

async fn maintenance_connection() -> anyhow::Result<PgConnection> {
    let url = maintenance_url();
    let options = PgConnectOptions::from_str(&url).context("DATABASE_URL is not a valid URL")?;
    PgConnection::connect_with(&options)
        .await
        .context("cannot connect to the maintenance database (set DATABASE_URL)")
}

/// Creates, migrates and connects to a new database.
pub async fn fresh_database() -> anyhow::Result<TestDatabase> {
    let mut conn = maintenance_connection().await?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    drop_stale(&mut conn, now).await?;

    let name = format!("{PREFIX}{now}_{}", hex::encode(rand::random::<[u8; 6]>()));
    // The name is built from digits and hex only.
    crate::bootstrap::create_database(&mut conn, &name)
        .await
        .with_context(|| format!("CREATE DATABASE {name}"))?;
    let _ = conn.close().await;

    let url = with_database(&maintenance_url(), &name)?;
    migrate::run(&url).await?;
    let pool = migrate::connect_pool(&url, 5).await?;
    Ok(TestDatabase { url, pool, name })
}

async fn drop_stale(conn: &mut PgConnection, now: i64) -> anyhow::Result<()> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'stsgate\\_t\\_%'")
            .fetch_all(&mut *conn)
            .await?;
    for name in names {
        let Some(created) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<i64>().ok())
        else {
            continue;
        };
        let safe = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if safe && now - created > STALE_AFTER_SECS {
            // Another test run may be dropping it at the same moment; ignore failures.
            let _ = sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut *conn)
            .await;
        }
    }
    Ok(())
}

/// `url` with its database (path) replaced by `database`; query parameters are kept.
fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let scheme_end = url.find("://").context("DATABASE_URL has no scheme")? + 3;
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    Ok(format!("{}/{database}{query}", &base[..authority_end]))
}

/// A fixed master key (id `test`), so tests can decrypt what other tests wrote.
pub fn test_cipher() -> Cipher {
    let key = base64::engine::general_purpose::STANDARD.encode([0x42u8; 32]);
    Cipher::new(
        MasterKey::parse(&format!("test:{key}")).expect("a valid test key"),
        Vec::new(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_in_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=require", "x").unwrap(),
            "postgres://u:p@h/x?sslmode=require"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x").unwrap(),
            "postgres://h:5432/x"
        );
    }
}
