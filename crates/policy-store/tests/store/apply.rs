//! Apps as code (`AppsAsCodeStore`): the plan, secrets compared without being shown, pruning,
//! and a refused spec changing nothing.

use policy_store::testing::{SeedApp, seed_app};
use policy_store::{
    AppSpec, AppStore, ApplyOptions, AppsAsCodeStore, BlockSpec, ChangeLogStore, ChangeOp,
    PlanAction, StoreError, SubjectStore,
};
use secrecy::{ExposeSecret as _, SecretString};

use super::store;

const APPLY: ApplyOptions = ApplyOptions {
    dry_run: false,
    prune: false,
};

async fn change_count(store: &policy_store::PgStore) -> usize {
    store.admin_changes(None, 1000).await.unwrap().len()
}

#[tokio::test]
async fn secrets_are_compared_never_shown_and_rewritten_only_when_they_differ() {
    let (_db, store) = store().await;
    let seed = SeedApp::new("demo");
    seed_app(&store, "root", &seed).await.unwrap();
    let mut spec = store.export_specs().await.unwrap().remove(0);
    assert!(spec.secret_key.is_none(), "exported without its secret");

    // The stored key, given again: no change.
    spec.secret_key = Some(SecretString::from(seed.secret_key.clone()));
    let before = change_count(&store).await;
    let plan = store
        .apply_specs("apply:t", &[spec.clone()], APPLY)
        .await
        .unwrap();
    assert!(plan.is_empty() && !plan.applied, "{plan:?}");
    assert_eq!(change_count(&store).await, before);

    // A new key: one change, shown as such, and stored.
    spec.secret_key = Some(SecretString::from("a-brand-new-permanent-secret-key"));
    let plan = store
        .apply_specs("apply:t", &[spec.clone()], APPLY)
        .await
        .unwrap();
    let change = &plan.apps[0].changes;
    assert_eq!(change.len(), 1, "{change:?}");
    assert_eq!(
        (
            change[0].field.as_str(),
            change[0].op,
            change[0].after.clone()
        ),
        ("secret_key", ChangeOp::Change, Some("(changed)".into()))
    );
    assert!(
        !serde_json::to_string(&plan)
            .unwrap()
            .contains("a-brand-new")
    );
    let app = store.app_by_slug("demo").await.unwrap().unwrap();
    assert_eq!(
        app.secret_key.expose_secret(),
        "a-brand-new-permanent-secret-key"
    );
    let logged = store.admin_changes(None, 1).await.unwrap().remove(0);
    assert_eq!(
        (logged.actor.as_str(), logged.action.as_str()),
        ("apply:t", "app.update")
    );
    assert_eq!(logged.after.unwrap()["secret_key_changed"], true);
}

#[tokio::test]
async fn pruning_disables_unlisted_apps_and_unblocks_unlisted_subjects() {
    let (_db, store) = store().await;
    let demo = seed_app(&store, "root", &SeedApp::new("demo"))
        .await
        .unwrap();
    seed_app(&store, "root", &SeedApp::new("legacy"))
        .await
        .unwrap();
    store
        .block_subject("root", demo.id, "eve", Some("from the pages"))
        .await
        .unwrap();
    let mut spec: AppSpec = store
        .export_specs()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.slug == "demo")
        .unwrap();
    spec.blocked_subjects = vec![BlockSpec {
        subject: "mallory".into(),
        reason: None,
    }];

    // Without prune: mallory is blocked, eve and legacy are left alone and reported.
    let plan = store
        .apply_specs("apply:t", &[spec.clone()], APPLY)
        .await
        .unwrap();
    assert_eq!(plan.unmanaged, ["legacy"]);
    assert_eq!(plan.apps[0].action, PlanAction::Update);
    assert!(plan.apps[0].notes[0].contains("\"eve\""), "{plan:?}");
    assert!(store.is_blocked(demo.id, "eve").await.unwrap());
    assert!(store.is_blocked(demo.id, "mallory").await.unwrap());

    // With prune: eve is unblocked and legacy disabled (not deleted).
    let prune = ApplyOptions {
        dry_run: false,
        prune: true,
    };
    let plan = store
        .apply_specs("apply:t", &[spec.clone()], prune)
        .await
        .unwrap();
    assert!(plan.unmanaged.is_empty());
    let legacy = plan.apps.iter().find(|a| a.slug == "legacy").unwrap();
    assert_eq!(legacy.action, PlanAction::Disable);
    assert!(!store.is_blocked(demo.id, "eve").await.unwrap());
    assert!(!store.app_by_slug("legacy").await.unwrap().unwrap().enabled);
    let plan = store.apply_specs("apply:t", &[spec], prune).await.unwrap();
    assert!(plan.is_empty(), "converged: {plan:?}");

    // An empty spec never prunes everything.
    let err = store.apply_specs("apply:t", &[], prune).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(f) if f[0].field == "apps"),
        "{err}"
    );
    assert!(store.app_by_slug("demo").await.unwrap().unwrap().enabled);
}

#[tokio::test]
async fn a_refused_spec_changes_nothing_and_names_every_field() {
    let (_db, store) = store().await;
    seed_app(&store, "root", &SeedApp::new("demo"))
        .await
        .unwrap();
    let good = store.export_specs().await.unwrap().remove(0);
    let mut changed = good.clone();
    changed.duration_max = 3600;
    let mut new_app = good.clone();
    new_app.slug = "fresh".into();
    new_app.duration_default = 99_999_999;
    let before = change_count(&store).await;
    let err = store
        .apply_specs(
            "apply:t",
            &[changed.clone(), new_app.clone(), changed],
            APPLY,
        )
        .await
        .unwrap_err();
    let StoreError::Invalid(fields) = err else {
        panic!("{err}")
    };
    let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
    assert!(names.contains(&"apps.fresh.duration_default"), "{names:?}");
    assert!(
        names.contains(&"apps.fresh.secret_key"),
        "a new app needs its key: {names:?}"
    );
    assert!(names.contains(&"apps.demo"), "listed twice: {names:?}");
    assert_eq!(change_count(&store).await, before);
    assert_eq!(
        store
            .app_by_slug("demo")
            .await
            .unwrap()
            .unwrap()
            .duration_max,
        7200
    );
    assert!(store.app_by_slug("fresh").await.unwrap().is_none());
}
