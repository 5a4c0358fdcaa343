use policy_store::{AppStore, ChangeLogStore, StoreError, TemplateDocument, TemplateStore};
use serde_json::json;

use super::{app_input, fields, store};

#[tokio::test]
async fn save_versions_and_roll_back() {
    let (_db, store) = store().await;
    let app = store.create_app("root", &app_input("demo")).await.unwrap();
    assert!(store.active_template(app.id).await.unwrap().is_none());

    let v1_doc = TemplateDocument::default_for_users();
    let v1 = store
        .save_template("alice", app.id, &v1_doc, Some("first"))
        .await
        .unwrap();
    assert_eq!(v1.version, 1);
    assert_eq!(v1.author, "alice");
    assert_eq!(v1.note.as_deref(), Some("first"));
    assert_eq!(v1.document, v1_doc);

    let mut v2_doc = v1_doc.clone();
    v2_doc.statements[0].actions.truncate(1);
    let v2 = store
        .save_template("bob", app.id, &v2_doc, None)
        .await
        .unwrap();
    assert_eq!(v2.version, 2);

    let active = store.active_template(app.id).await.unwrap().unwrap();
    assert_eq!(active.version, 2);
    assert_eq!(active.document, v2_doc);
    assert_eq!(
        store
            .app_by_id(app.id)
            .await
            .unwrap()
            .unwrap()
            .active_template_version,
        Some(2)
    );
    let versions = store.template_versions(app.id).await.unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(
        store
            .template_version(app.id, 1)
            .await
            .unwrap()
            .unwrap()
            .document,
        v1_doc
    );
    assert!(store.template_version(app.id, 3).await.unwrap().is_none());

    // Rollback.
    store.activate_template("root", app.id, 1).await.unwrap();
    assert_eq!(
        store
            .active_template(app.id)
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
    assert!(matches!(
        store.activate_template("root", app.id, 7).await,
        Err(StoreError::NotFound)
    ));
    // Versions are per app.
    let other = store.create_app("root", &app_input("other")).await.unwrap();
    assert!(matches!(
        store.activate_template("root", other.id, 1).await,
        Err(StoreError::NotFound)
    ));
    let o1 = store
        .save_template("root", other.id, &v1_doc, None)
        .await
        .unwrap();
    assert_eq!(o1.version, 1);
    assert!(store.template_versions(other.id).await.unwrap().len() == 1);
}

#[tokio::test]
async fn invalid_templates_are_refused_with_field_paths() {
    let (_db, store) = store().await;
    let app = store.create_app("root", &app_input("demo")).await.unwrap();
    let doc: TemplateDocument = serde_json::from_value(json!({
        "statements": [
            { "effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["users/${sub}*"] },
            { "effect": "allow", "actions": ["*"], "resources": ["qcs::cos:ap-guangzhou:uid/1:b-1/x"] }
        ]
    }))
    .unwrap();
    let err = store
        .save_template("root", app.id, &doc, None)
        .await
        .unwrap_err();
    assert_eq!(
        fields(&err),
        [
            "statements[0].resources[0]",
            "statements[1].actions[0]",
            "statements[1].resources[0]"
        ]
    );
    assert!(store.template_versions(app.id).await.unwrap().is_empty());
    assert!(matches!(
        store
            .save_template(
                "root",
                999_999,
                &TemplateDocument::default_for_users(),
                None
            )
            .await,
        Err(StoreError::NotFound)
    ));
}

/// The change log records the version that became active (not "cleared"), and the reasons of
/// the statements marked shared; an unmarked grant beyond the home prefix is never saved.
#[tokio::test]
async fn saving_records_the_active_version_and_shared_reasons() {
    let (_db, store) = store().await;
    let app = store.create_app("root", &app_input("demo")).await.unwrap();
    let mut doc: TemplateDocument = serde_json::from_value(json!({
        "prefix": "users/${sub}/",
        "statements": [
            { "effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["users/${sub}/*"] },
            { "effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["*"] }
        ]
    }))
    .unwrap();
    let err = store
        .save_template("root", app.id, &doc, None)
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["statements[1].resources[0]"]);
    assert!(store.template_versions(app.id).await.unwrap().is_empty());

    doc.statements[1].shared = Some(policy_store::Shared {
        reason: "the catalogue is public".into(),
    });
    for expected in [1, 2] {
        let saved = store
            .save_template("root", app.id, &doc, Some("with a public catalogue"))
            .await
            .unwrap();
        assert_eq!(saved.version, expected);
        assert_eq!(
            saved.document.statements[1].shared,
            doc.statements[1].shared
        );
        let change = store.admin_changes(None, 1).await.unwrap().remove(0);
        assert_eq!(change.action, "template.save");
        let before = change.before.unwrap();
        let after = change.after.unwrap();
        assert_eq!(
            before["active_version"],
            if expected == 1 { json!(null) } else { json!(1) }
        );
        assert_eq!(after["active_version"], json!(expected));
        assert_eq!(
            after["shared"],
            json!([{ "statement": 2, "reason": "the catalogue is public" }])
        );
        assert_eq!(
            after["document"]["statements"][1]["shared"]["reason"],
            "the catalogue is public"
        );
    }
}
