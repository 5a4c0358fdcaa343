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
use crate::model::{App, AppAuthInput, AppInput, StsMode};
use crate::repo::{AppStore, StoreError, TemplateStore};
use crate::template::TemplateDocument;

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

/// A fresh database and a store over its pool, with the [`test_cipher`].
pub async fn fresh_store() -> anyhow::Result<(TestDatabase, crate::PgStore)> {
    let db = fresh_database().await?;
    let store = crate::PgStore::new(db.pool.clone(), test_cipher());
    Ok((db, store))
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

/// What [`seed_app`] creates: an app in `ap-guangzhou` / `examplebucket-1250000000`, its JWT
/// settings and the default per-user template (`users/${sub}/*`). [`SeedApp::new`] gives an
/// HS256 app; change the fields a test cares about.
#[derive(Debug, Clone)]
pub struct SeedApp {
    pub slug: String,
    pub name: String,
    pub secret_id: String,
    pub secret_key: String,
    pub rate_subject_per_minute: i32,
    pub rate_app_per_second: i32,
    pub issuer: String,
    pub audience: String,
    pub algorithms: Vec<String>,
    pub hs_secret: Option<String>,
    /// PEM public keys, each optionally preceded by a `kid: NAME` line.
    pub public_keys: Vec<String>,
    pub leeway_seconds: i32,
    /// The first template version's note.
    pub template_note: Option<String>,
    /// Web origins allowed to call the credential API (none by default).
    pub allowed_origins: Vec<String>,
}

impl SeedApp {
    pub const REGION: &str = "ap-guangzhou";
    pub const BUCKET: &str = "examplebucket-1250000000";

    /// An enabled HS256 app named after its slug, without rate limits.
    pub fn new(slug: &str) -> Self {
        Self {
            slug: slug.to_owned(),
            name: slug.to_owned(),
            secret_id: "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE".to_owned(),
            secret_key: "Gu5t9xGARNpq86cd98joQYCN3EXAMPLEkey".to_owned(),
            rate_subject_per_minute: 0,
            rate_app_per_second: 0,
            issuer: "https://idp.example.test".to_owned(),
            audience: "photos-mobile".to_owned(),
            algorithms: vec!["HS256".to_owned()],
            hs_secret: Some("seed-hs256-secret-that-is-long-enough-0123".to_owned()),
            public_keys: Vec::new(),
            leeway_seconds: 60,
            template_note: None,
            allowed_origins: Vec::new(),
        }
    }

    /// The app as the store takes it.
    pub fn app_input(&self) -> AppInput {
        AppInput {
            slug: self.slug.clone(),
            name: self.name.clone(),
            enabled: true,
            region: Self::REGION.to_owned(),
            bucket: Self::BUCKET.to_owned(),
            mode: StsMode::FederationToken,
            role_arn: None,
            external_id: None,
            secret_id: self.secret_id.clone(),
            secret_key: Some(self.secret_key.clone().into()),
            sts_endpoint: None,
            duration_default: 1800,
            duration_max: 7200,
            min_remaining: None,
            rate_subject_per_minute: self.rate_subject_per_minute,
            rate_app_per_second: self.rate_app_per_second,
            allowed_origins: self.allowed_origins.clone(),
        }
    }

    /// The JWT settings as the store takes them.
    pub fn auth_input(&self) -> AppAuthInput {
        AppAuthInput {
            issuer: Some(self.issuer.clone()),
            audiences: vec![self.audience.clone()],
            algorithms: self.algorithms.clone(),
            hs_secret: self.hs_secret.clone().map(Into::into),
            public_keys: self.public_keys.clone(),
            jwks_url: None,
            user_claim: "sub".to_owned(),
            leeway_seconds: self.leeway_seconds,
        }
    }
}

/// Creates the app, its JWT settings and its first template as `actor`.
pub async fn seed_app<S>(store: &S, actor: &str, seed: &SeedApp) -> Result<App, StoreError>
where
    S: AppStore + TemplateStore + ?Sized,
{
    let app = store.create_app(actor, &seed.app_input()).await?;
    store
        .set_app_auth(actor, app.id, &seed.auth_input())
        .await?;
    store
        .save_template(
            actor,
            app.id,
            &TemplateDocument::default_for_users(),
            seed.template_note.as_deref(),
        )
        .await?;
    // Re-read: saving the template moved the active version.
    store.app_by_id(app.id).await?.ok_or(StoreError::NotFound)
}

/// Takes, on `tx`, the row locks `apply_specs` holds on every app while it validates and
/// writes (so a test can check what they block).
pub async fn lock_apps_as_apply(
    store: &crate::PgStore,
    tx: &mut PgConnection,
) -> Result<(), StoreError> {
    store.apps_in(tx, true).await.map(drop)
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
