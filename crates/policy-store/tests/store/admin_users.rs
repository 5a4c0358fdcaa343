use policy_store::{AdminUserStore, Role, StoreError};

use super::{fields, store};

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2g";

#[tokio::test]
async fn create_and_read_admin_users() {
    let (_db, store) = store().await;
    let u = store
        .create_admin_user("cli", "alice", HASH, Role::Admin)
        .await
        .unwrap();
    assert_eq!(u.username, "alice");
    assert_eq!(u.role, Role::Admin);
    assert!(!u.disabled);
    assert_eq!(u.failed_logins, 0);
    assert!(u.locked_until.is_none());
    store
        .create_admin_user("alice", "bob", HASH, Role::Auditor)
        .await
        .unwrap();

    let err = store
        .create_admin_user("cli", "alice", HASH, Role::Auditor)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("alice")),
        "{err:?}"
    );

    let read = store.admin_user_by_name("bob").await.unwrap().unwrap();
    assert_eq!(read.role, Role::Auditor);
    assert_eq!(read.password_hash, HASH);
    assert!(store.admin_user_by_name("nobody").await.unwrap().is_none());
    let all = store.list_admin_users().await.unwrap();
    assert_eq!(
        all.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(),
        ["alice", "bob"]
    );

    let err = store
        .create_admin_user("cli", "has space", "plaintext-password", Role::Admin)
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["username", "password_hash"]);
}
