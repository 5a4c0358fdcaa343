//! policy-store against a real PostgreSQL: one runner, a fresh database per test.
//! Needs `DATABASE_URL` pointing at a maintenance database (default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

mod admin_pages;
mod admin_users;
mod apply;
mod apps;
mod audit;
mod bootstrap;
mod changes;
mod cluster;
mod errors;
mod issuance;
mod log_search;
mod migrations;
mod pool;
mod retention;
mod rollup;
mod subjects;
mod templates;

use policy_store::testing::{TestDatabase, fresh_database, test_cipher};
use policy_store::{AppInput, PgStore, StsMode};
use secrecy::SecretString;

pub const SECRET_KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
pub const SECRET_ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";

pub async fn store() -> (TestDatabase, PgStore) {
    let db = fresh_database().await.expect("a fresh test database");
    let store = PgStore::new(db.pool.clone(), test_cipher());
    (db, store)
}

pub fn app_input(slug: &str) -> AppInput {
    AppInput {
        slug: slug.to_owned(),
        name: format!("App {slug}"),
        enabled: true,
        region: "ap-guangzhou".into(),
        bucket: "examplebucket-1250000000".into(),
        mode: StsMode::FederationToken,
        role_arn: None,
        external_id: None,
        secret_id: SECRET_ID.into(),
        secret_key: Some(SecretString::from(SECRET_KEY)),
        sts_endpoint: None,
        duration_default: 1800,
        duration_max: 7200,
        min_remaining: None,
        rate_subject_per_minute: 60,
        rate_app_per_second: 100,
        allowed_origins: Vec::new(),
    }
}

pub fn fields(err: &policy_store::StoreError) -> Vec<String> {
    match err {
        policy_store::StoreError::Invalid(errs) => errs.iter().map(|e| e.field.clone()).collect(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}
