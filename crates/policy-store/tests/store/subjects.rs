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

/// Subjects are stored and matched exactly (surrounding spaces included); blocking again keeps
/// the reason unless a new one is given, which the change log records before and after.
#[tokio::test]
async fn subjects_are_exact_and_reasons_kept() {
    use policy_store::{BlockOutcome, ChangeLogStore};
    let (_db, store) = store().await;
    let app = store.create_app("root", &app_input("demo")).await.unwrap();
    assert_eq!(
        store
            .block_subject("root", app.id, " alice ", Some("spaces"))
            .await
            .unwrap(),
        BlockOutcome::Blocked
    );
    assert!(store.is_blocked(app.id, " alice ").await.unwrap());
    assert!(!store.is_blocked(app.id, "alice").await.unwrap());
    assert_eq!(
        store.blocked_subjects(app.id).await.unwrap()[0].subject,
        " alice "
    );

    let audit_rows = store.admin_changes(None, 100).await.unwrap().len();
    for again in [None, Some(""), Some("  "), Some("spaces")] {
        assert_eq!(
            store
                .block_subject("other-admin", app.id, " alice ", again)
                .await
                .unwrap(),
            BlockOutcome::AlreadyBlocked,
            "{again:?}"
        );
    }
    let kept = &store.blocked_subjects(app.id).await.unwrap()[0];
    assert_eq!(kept.reason.as_deref(), Some("spaces"));
    assert_eq!(kept.blocked_by, "root");
    assert_eq!(
        store.admin_changes(None, 100).await.unwrap().len(),
        audit_rows
    );

    assert_eq!(
        store
            .block_subject("other-admin", app.id, " alice ", Some("phishing"))
            .await
            .unwrap(),
        BlockOutcome::ReasonUpdated
    );
    let change = store.admin_changes(None, 1).await.unwrap().remove(0);
    assert_eq!(change.action, "subject.block");
    assert_eq!(change.before.unwrap()["reason"], "spaces");
    assert_eq!(change.after.unwrap()["reason"], "phishing");
    let updated = &store.blocked_subjects(app.id).await.unwrap()[0];
    assert_eq!(updated.reason.as_deref(), Some("phishing"));
    assert_eq!(updated.blocked_by, "other-admin");

    // Control characters are kept too (the pages show them with visible markers).
    store
        .block_subject("root", app.id, "tab\there", None)
        .await
        .unwrap();
    assert!(store.is_blocked(app.id, "tab\there").await.unwrap());
}
