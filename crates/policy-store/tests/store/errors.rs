//! Database failures reach callers as an opaque `DatabaseError` with a kind to act on.

use std::time::Duration;

use policy_store::testing::test_cipher;
use policy_store::{AdminUserStore, DbErrorKind, HealthStore, PgStore, PoolOptions, StoreError};

use super::store;

fn kind(err: &StoreError) -> DbErrorKind {
    match err {
        StoreError::Database(e) => e.kind(),
        other => panic!("expected a database error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = PgStore::connect(
        &format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        &PoolOptions {
            max_connections: 1,
            acquire_timeout: Duration::from_secs(1),
            ..PoolOptions::default()
        },
        test_cipher(),
    )
    .await
    .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        matches!(kind(&err), DbErrorKind::Unavailable | DbErrorKind::TimedOut),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_closed_pool_is_unavailable() {
    let (db, store) = store().await;
    store.ping().await.unwrap();
    db.pool.close().await;
    let err = store.ping().await.unwrap_err();
    assert_eq!(kind(&err), DbErrorKind::Unavailable);
    assert!(err.is_unavailable());
}

#[tokio::test]
async fn a_foreign_key_violation_is_a_constraint_error_without_row_values() {
    let (_db, store) = store().await;
    let err = store
        .create_admin_session(424_242, "hash-of-a-token", "csrf", 60)
        .await
        .unwrap_err();
    assert_eq!(kind(&err), DbErrorKind::Constraint);
    assert!(!err.is_unavailable());
    let text = err.to_string();
    assert!(text.contains("23503"), "{text}");
    // PostgreSQL's DETAIL ("Key (user_id)=(424242) is not present …") is left out.
    assert!(!text.contains("424242"), "{text}");
}
