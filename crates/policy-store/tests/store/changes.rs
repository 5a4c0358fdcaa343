//! The change feed: typed events from `LISTEN stsgate_changes`, and what it does when a
//! notification cannot be read or the connection is lost.

use policy_store::{AdminUserStore, AppStore, Change, Role, SubjectStore};

use super::audit::next;
use super::{app_input, store};

#[tokio::test]
async fn every_app_change_names_its_app_and_admin_changes_do_not() {
    let (_db, store) = store().await;
    let mut feed = store.changes();
    assert_eq!(next(&mut feed).await, Change::Resync);

    let created = store.create_app("root", &app_input("new")).await.unwrap();
    assert_eq!(next(&mut feed).await, Change::App(created.id));
    store
        .set_app_enabled("root", created.id, false)
        .await
        .unwrap();
    assert_eq!(next(&mut feed).await, Change::App(created.id));
    store
        .block_subject("root", created.id, "mallory", None)
        .await
        .unwrap();
    store
        .unblock_subject("root", created.id, "mallory")
        .await
        .unwrap();
    assert_eq!(next(&mut feed).await, Change::App(created.id));
    assert_eq!(next(&mut feed).await, Change::App(created.id));

    let user = store
        .create_admin_user("root", "u", "$argon2id$v=19$x", Role::Admin)
        .await
        .unwrap();
    store
        .set_admin_user_disabled("root", user.id, true)
        .await
        .unwrap_err(); // the last admin cannot be disabled: rolled back, no notification
    store
        .set_admin_user_password("root", user.id, "$argon2id$v=19$y")
        .await
        .unwrap();
    assert_eq!(next(&mut feed).await, Change::AdminUsers);
    assert_eq!(next(&mut feed).await, Change::AdminUsers);
}

#[tokio::test]
async fn an_unreadable_notification_is_a_resync() {
    let (db, store) = store().await;
    let app = store.create_app("root", &app_input("demo")).await.unwrap();
    let mut feed = store.changes();
    assert_eq!(next(&mut feed).await, Change::Resync);

    sqlx::query("SELECT pg_notify('stsgate_changes', 'not-an-app-id')")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(next(&mut feed).await, Change::Resync);
    // The feed goes on after it.
    store.set_app_enabled("root", app.id, false).await.unwrap();
    assert_eq!(next(&mut feed).await, Change::App(app.id));
}

#[tokio::test]
async fn a_lost_connection_is_a_resync_and_the_feed_recovers() {
    let (db, store) = store().await;
    let app = store.create_app("root", &app_input("demo")).await.unwrap();
    let mut feed = store.changes();
    assert_eq!(next(&mut feed).await, Change::Resync);

    // Kill the listener's server process, as a database restart would.
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query ILIKE 'LISTEN%') t",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(killed, 1, "exactly one connection was listening");
    assert_eq!(next(&mut feed).await, Change::Resync);

    // Changes made while it reconnects may be lost (each loss is another Resync); once it is
    // listening again they arrive.
    for _ in 0..50 {
        store.set_app_enabled("root", app.id, true).await.unwrap();
        match next(&mut feed).await {
            Change::App(id) => {
                assert_eq!(id, app.id);
                return;
            }
            Change::Resync => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("the feed did not recover");
}
