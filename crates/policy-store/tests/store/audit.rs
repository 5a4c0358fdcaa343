use std::time::Duration;

use policy_store::{
    AdminUserStore, AppAuthInput, AppStore, Change, ChangeFeed, ChangeLogStore, Role, SubjectStore,
    TemplateDocument, TemplateStore,
};
use secrecy::SecretString;

use super::{SECRET_ID, SECRET_KEY, app_input, store};

const HS: &str = "hs-secret-that-is-long-enough-0123456789";

#[tokio::test]
async fn every_mutation_is_audited_without_secrets() {
    let (db, store) = store().await;
    let app = store.create_app("alice", &app_input("demo")).await.unwrap();
    let mut edit = app_input("demo");
    edit.secret_key = Some(SecretString::from("SecondSecretKeyValue0987654321"));
    store.update_app("alice", app.id, &edit).await.unwrap();
    store.set_app_enabled("bob", app.id, false).await.unwrap();
    store.set_app_enabled("bob", app.id, true).await.unwrap();
    let auth = AppAuthInput {
        issuer: None,
        audiences: vec![],
        algorithms: vec!["HS256".into()],
        hs_secret: Some(SecretString::from(HS)),
        public_keys: vec![],
        jwks_url: None,
        user_claim: "sub".into(),
        leeway_seconds: 60,
    };
    store.set_app_auth("alice", app.id, &auth).await.unwrap();
    let doc = TemplateDocument::default_for_users();
    store
        .save_template("alice", app.id, &doc, Some("v1"))
        .await
        .unwrap();
    store
        .save_template("alice", app.id, &doc, Some("v2"))
        .await
        .unwrap();
    store.activate_template("alice", app.id, 1).await.unwrap();
    store
        .block_subject("carol", app.id, "mallory", Some("abuse"))
        .await
        .unwrap();
    store
        .unblock_subject("carol", app.id, "mallory")
        .await
        .unwrap();
    store
        .create_admin_user(
            "cli",
            "dave",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA",
            Role::Auditor,
        )
        .await
        .unwrap();

    let changes = store.admin_changes(None, 100).await.unwrap();
    let actions: Vec<&str> = changes.iter().rev().map(|c| c.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "app.create",
            "app.update",
            "app.disable",
            "app.enable",
            "auth.update",
            "template.save",
            "template.save",
            "template.activate",
            "subject.block",
            "subject.unblock",
            "admin_user.create",
        ]
    );
    assert!(changes.windows(2).all(|w| w[0].id > w[1].id));
    let first = changes.last().unwrap();
    assert_eq!(
        (first.actor.as_str(), first.target.as_str()),
        ("alice", "demo")
    );
    assert!(first.before.is_none());
    assert_eq!(first.after.as_ref().unwrap()["secret_key"], "[redacted]");
    assert_eq!(changes[0].target, "dave");
    let update = &changes[changes.len() - 2];
    assert_eq!(update.after.as_ref().unwrap()["secret_key_changed"], true);

    // Keyset paging over the change log.
    let older = store.admin_changes(Some(changes[2].id), 3).await.unwrap();
    assert_eq!(
        older.iter().map(|c| c.id).collect::<Vec<_>>(),
        changes[3..6].iter().map(|c| c.id).collect::<Vec<_>>()
    );

    // No secret, plaintext or ciphertext, appears anywhere in the audit log.
    let ciphertexts: Vec<String> = sqlx::query_scalar(
        "SELECT secret_key_enc FROM apps UNION ALL SELECT hs_secret_enc FROM app_auth",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let all_json: Vec<String> = sqlx::query_scalar(
        "SELECT coalesce(before::text, '') || coalesce(after::text, '') FROM admin_audit",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let dump = all_json.concat();
    for secret in [
        SECRET_KEY,
        "SecondSecretKeyValue0987654321",
        HS,
        SECRET_ID,
        "$argon2id$",
    ] {
        assert!(!dump.contains(secret), "{secret} leaked into admin_audit");
    }
    for ct in &ciphertexts {
        assert!(!dump.contains(ct.as_str()));
        let body = ct.rsplit(':').next().unwrap();
        assert!(!dump.contains(body), "ciphertext leaked into admin_audit");
    }
    assert!(dump.contains("[redacted]"));
}

#[tokio::test]
async fn changes_are_notified() {
    let (_db, store) = store().await;
    let app = store.create_app("root", &app_input("demo")).await.unwrap();
    let mut feed = store.changes();
    // The first event after connecting says that anything may have changed.
    assert_eq!(next(&mut feed).await, Change::Resync);
    store
        .update_app("root", app.id, &app_input("demo"))
        .await
        .unwrap();
    assert_eq!(next(&mut feed).await, Change::App(app.id));

    store
        .block_subject("root", app.id, "x", None)
        .await
        .unwrap();
    assert_eq!(next(&mut feed).await, Change::App(app.id));

    // A failed (rolled back) mutation notifies nobody.
    assert!(store.create_app("root", &app_input("demo")).await.is_err());
    store
        .create_admin_user("root", "u", "$argon2id$v=19$x", Role::Admin)
        .await
        .unwrap();
    assert_eq!(next(&mut feed).await, Change::AdminUsers);
}

/// The feed's next event, within 5 s.
pub async fn next(feed: &mut ChangeFeed) -> Change {
    tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .expect("a change within 5 s")
}
