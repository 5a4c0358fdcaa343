use policy_store::{AppStore, StoreError, SubjectStore};

use super::{app_input, fields, store};

#[tokio::test]
async fn block_and_unblock() {
    let (_db, store) = store().await;
    let app = store.create_app("root", &app_input("demo")).await.unwrap();
    let other = store.create_app("root", &app_input("other")).await.unwrap();
    assert!(!store.is_blocked(app.id, "mallory").await.unwrap());

    store
        .block_subject("root", app.id, "mallory", Some("abuse"))
        .await
        .unwrap();
    assert!(store.is_blocked(app.id, "mallory").await.unwrap());
    // Scoped by app.
    assert!(!store.is_blocked(other.id, "mallory").await.unwrap());
    // Blocking again updates the reason.
    store
        .block_subject("admin2", app.id, "mallory", Some("still abuse"))
        .await
        .unwrap();
    store
        .block_subject("root", app.id, "eve", None)
        .await
        .unwrap();
    let list = store.blocked_subjects(app.id).await.unwrap();
    assert_eq!(list.len(), 2);
    let mallory = list.iter().find(|b| b.subject == "mallory").unwrap();
    assert_eq!(mallory.reason.as_deref(), Some("still abuse"));
    assert_eq!(mallory.blocked_by, "admin2");
    assert!(store.blocked_subjects(other.id).await.unwrap().is_empty());

    store
        .unblock_subject("root", app.id, "mallory")
        .await
        .unwrap();
    assert!(!store.is_blocked(app.id, "mallory").await.unwrap());
    // Unblocking again is a no-op.
    store
        .unblock_subject("root", app.id, "mallory")
        .await
        .unwrap();
    assert!(store.is_blocked(app.id, "eve").await.unwrap());

    assert!(matches!(
        store.block_subject("root", 999_999, "x", None).await,
        Err(StoreError::NotFound)
    ));
    let err = store
        .block_subject("root", app.id, "", None)
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["subject"]);
}
