//! `bootstrap::wait_and_create_database`, against the test server.

use std::time::Duration;

use policy_store::bootstrap::{BootstrapError, wait_and_create_database};
use policy_store::testing::DEFAULT_DATABASE_URL;

fn maintenance_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
}

#[tokio::test]
async fn creates_a_missing_database_once() {
    let (db, _store) = super::store().await;
    // Named like the test databases, so a later run drops it if this test fails.
    let name = format!("{}_boot", db.name);
    let url = maintenance_url();
    wait_and_create_database(&url, &name, Duration::from_secs(5))
        .await
        .unwrap();
    // Already there: nothing to do, no error.
    wait_and_create_database(&url, &name, Duration::from_secs(5))
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(exists);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{name}\" WITH (FORCE)"
    )))
    .execute(&db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn gives_up_at_the_deadline_when_nothing_listens() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let err = wait_and_create_database(&url, "stsgate", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, BootstrapError::Unreachable { .. }), "{err:?}");
}

#[tokio::test]
async fn a_refusal_is_not_waited_out() {
    // The same server as another, unknown role.
    let base = maintenance_url();
    let (scheme, rest) = base.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let url = format!("{scheme}://stsgate_no_such_role@{host}");
    let err = wait_and_create_database(&url, "stsgate", Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(matches!(err, BootstrapError::Refused(_)), "{err:?}");
}

#[tokio::test]
async fn refuses_names_it_would_have_to_escape() {
    for bad in ["", "Stsgate", "a\"b", "x; DROP DATABASE postgres"] {
        let err = wait_and_create_database(&maintenance_url(), bad, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, BootstrapError::InvalidName(_)), "{err:?}");
    }
}
