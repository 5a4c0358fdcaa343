//! Apps as code (`AppsAsCodeStore`): the plan, secrets compared without being shown, pruning,
//! and a refused spec changing nothing.

use policy_store::testing::{SeedApp, seed_app};
use policy_store::{
    AppSpec, AppStore, ApplyOptions, AppsAsCodeStore, BlockSpec, ChangeLogStore, ChangeOp,
    PlanAction, StoreError, SubjectStore,
};
use secrecy::{ExposeSecret as _, SecretString};

use super::{fields, store};

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

/// An apply holds row locks on every app while it plans and writes; issuance must not wait
/// for them: a cache miss claims a `shared_credentials` row, whose foreign key to `apps`
/// takes `FOR KEY SHARE` on the app's row.
#[tokio::test]
async fn an_apply_s_locks_let_issuance_claim_credentials() {
    use sqlx::Connection as _;

    let (db, store) = store().await;
    let demo = seed_app(&store, "root", &SeedApp::new("demo"))
        .await
        .unwrap();
    let mut apply_tx = db.pool.begin().await.unwrap();
    policy_store::testing::lock_apps_as_apply(&store, &mut apply_tx)
        .await
        .unwrap();

    let mut issuer = db.pool.acquire().await.unwrap();
    let mut claim = issuer.begin().await.unwrap();
    // Fails fast, instead of waiting, if the claim is blocked.
    sqlx::query("SET LOCAL lock_timeout = '2s'")
        .execute(&mut *claim)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO shared_credentials (key_hash, app_id, subject_hash, claim_until) \
         VALUES ('k', $1, 's', now() + interval '1 minute')",
    )
    .bind(demo.id)
    .execute(&mut *claim)
    .await
    .expect("the claim is not blocked by the apply's locks");
    claim.commit().await.unwrap();

    // The locks still keep other writers of the app out.
    let mut page = issuer.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '100ms'")
        .execute(&mut *page)
        .await
        .unwrap();
    let err = sqlx::query("UPDATE apps SET name = 'x' WHERE id = $1")
        .bind(demo.id)
        .execute(&mut *page)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("55P03"),
        "lock_not_available: {err}"
    );
    page.rollback().await.unwrap();
    apply_tx.rollback().await.unwrap();
}

#[tokio::test]
async fn a_spec_blocks_at_most_the_documented_number_of_subjects() {
    let (_db, store) = store().await;
    seed_app(&store, "root", &SeedApp::new("demo"))
        .await
        .unwrap();
    let mut spec = store.export_specs().await.unwrap().remove(0);
    spec.blocked_subjects = (0..=policy_store::MAX_BLOCKED_SUBJECTS)
        .map(|i| BlockSpec {
            subject: format!("user-{i}"),
            reason: None,
        })
        .collect();
    let err = store
        .apply_specs("apply:t", &[spec.clone()], APPLY)
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["apps.demo.blocked_subjects"]);

    // At the limit, with a duplicate at the end: found, and named by its index.
    spec.blocked_subjects
        .truncate(policy_store::MAX_BLOCKED_SUBJECTS);
    let last = spec.blocked_subjects.len() - 1;
    spec.blocked_subjects[last].subject = "user-0".into();
    let err = store
        .apply_specs("apply:t", &[spec], APPLY)
        .await
        .unwrap_err();
    assert_eq!(
        fields(&err),
        [format!("apps.demo.blocked_subjects[{last}].subject")]
    );
}

/// `enabled` left out keeps the stored value: an automated apply does not re-enable an app an
/// admin disabled. A new app left without it is enabled; export writes it.
#[tokio::test]
async fn enabled_left_out_keeps_what_is_stored() {
    let (_db, store) = store().await;
    let seed = SeedApp::new("demo");
    let demo = seed_app(&store, "root", &seed).await.unwrap();
    let mut spec = store.export_specs().await.unwrap().remove(0);
    assert_eq!(spec.enabled, Some(true), "export writes it");
    spec.enabled = None;
    store
        .set_app_enabled("admin", demo.id, false)
        .await
        .unwrap();

    let plan = store
        .apply_specs("apply:t", &[spec.clone()], APPLY)
        .await
        .unwrap();
    assert!(plan.is_empty(), "{plan:?}");
    assert!(!store.app_by_slug("demo").await.unwrap().unwrap().enabled);

    let mut fresh = spec.clone();
    fresh.slug = "fresh".into();
    fresh.secret_key = Some(SecretString::from(seed.secret_key.clone()));
    fresh.jwt = None;
    store
        .apply_specs("apply:t", &[spec.clone(), fresh], APPLY)
        .await
        .unwrap();
    assert!(store.app_by_slug("fresh").await.unwrap().unwrap().enabled);

    // Given, it is applied.
    spec.enabled = Some(true);
    let plan = store.apply_specs("apply:t", &[spec], APPLY).await.unwrap();
    assert_eq!(plan.apps[0].changes[0].field, "enabled");
    assert!(store.app_by_slug("demo").await.unwrap().unwrap().enabled);
}
