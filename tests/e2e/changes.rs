//! Change notifications through the whole path: an admin change commits, PostgreSQL notifies,
//! the gateway's feed drops exactly what changed (DESIGN §5.1, §8).

use policy_store::{AdminUserStore, AppStore, Role, SubjectStore};

use crate::support::{APP, RSA_APP, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_changed_app_is_reloaded() {
    let app = TestApp::spawn().await;
    let rsa = app.store.app_by_slug(RSA_APP).await.unwrap().unwrap();
    assert_eq!(app.credentials("alice", "").await.status(), 200);
    let loads = app.app_loads();

    // Another app changes: photos stays cached.
    let seen = app.invalidations();
    app.store
        .block_subject("admin", rsa.id, "alice", None)
        .await
        .unwrap();
    app.wait_for_invalidations(seen + 1).await;
    assert_eq!(app.credentials("alice", "").await.status(), 200);
    assert_eq!(
        app.app_loads(),
        loads,
        "{APP} was reloaded for {RSA_APP}'s change"
    );

    // photos changes: the next request sees it.
    let seen = app.invalidations();
    app.store
        .block_subject("admin", app.app_id, "alice", None)
        .await
        .unwrap();
    app.wait_for_invalidations(seen + 1).await;
    assert_eq!(app.credentials("alice", "").await.status(), 403);
    assert_eq!(app.app_loads(), loads + 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_user_changes_invalidate_nothing() {
    let app = TestApp::spawn().await;
    assert_eq!(app.credentials("alice", "").await.status(), 200);
    let loads = app.app_loads();

    let seen = app.invalidations();
    let user = app
        .store
        .create_admin_user("admin", "carol", "$argon2id$v=19$x", Role::Auditor)
        .await
        .unwrap();
    app.store
        .set_admin_user_role("admin", user.id, Role::Admin)
        .await
        .unwrap();
    app.wait_for_invalidations(seen + 2).await;
    assert_eq!(app.credentials("alice", "").await.status(), 200);
    assert_eq!(
        app.app_loads(),
        loads,
        "an admin-user change reloaded an app"
    );
    app.shutdown().await;
}

/// The listener's connection dies (as in a database restart): notifications sent meanwhile
/// are lost, so every app is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listener_flushes_every_app() {
    let app = TestApp::spawn().await;
    let pool = app.store.pool().clone();
    assert_eq!(app.credentials("alice", "").await.status(), 200);
    let loads = app.app_loads();

    let seen = app.invalidations();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query ILIKE 'LISTEN%') t",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(killed, 1, "one connection was listening");
    app.wait_for_invalidations(seen + 1).await;
    assert_eq!(app.credentials("alice", "").await.status(), 200);
    assert!(
        app.app_loads() > loads,
        "the cached app survived a lost listener"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_notification_flushes_every_app() {
    let app = TestApp::spawn().await;
    let pool = app.store.pool().clone();
    assert_eq!(app.credentials("alice", "").await.status(), 200);
    let loads = app.app_loads();
    let seen = app.invalidations();
    sqlx::query("SELECT pg_notify('stsgate_changes', 'garbage')")
        .execute(&pool)
        .await
        .unwrap();
    app.wait_for_invalidations(seen + 1).await;
    assert_eq!(app.credentials("alice", "").await.status(), 200);
    assert_eq!(app.app_loads(), loads + 1);
    app.shutdown().await;
}
