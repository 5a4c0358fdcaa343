use policy_store::{AppAuthInput, AppStore, ChangeLogStore, StoreError, StsMode};
use secrecy::{ExposeSecret, SecretString};

use super::{SECRET_ID, SECRET_KEY, app_input, fields, store};

#[tokio::test]
async fn app_crud() {
    let (_db, store) = store().await;
    let app = store.create_app("root", &app_input("demo")).await.unwrap();
    assert!(app.id > 0);
    assert_eq!(app.slug, "demo");
    assert_eq!(app.secret_key.expose_secret(), SECRET_KEY);
    assert_eq!(app.active_template_version, None);
    assert!(app.enabled);

    let by_slug = store.app_by_slug("demo").await.unwrap().unwrap();
    assert_eq!(by_slug.id, app.id);
    assert_eq!(by_slug.secret_key.expose_secret(), SECRET_KEY);
    assert_eq!(store.app_by_id(app.id).await.unwrap().unwrap().slug, "demo");
    assert!(store.app_by_slug("nope").await.unwrap().is_none());
    assert!(store.app_by_id(app.id + 1000).await.unwrap().is_none());

    store
        .create_app("root", &app_input("another"))
        .await
        .unwrap();
    let all = store.list_apps().await.unwrap();
    assert_eq!(
        all.iter().map(|a| a.slug.as_str()).collect::<Vec<_>>(),
        ["another", "demo"]
    );

    let mut edit = app_input("demo");
    edit.name = "Renamed".into();
    edit.mode = StsMode::AssumeRole;
    edit.role_arn = Some("qcs::cam::uin/100000000001:roleName/stsgate".into());
    edit.sts_endpoint = Some("http://127.0.0.1:9000".into());
    edit.min_remaining = Some(300);
    let updated = store.update_app("root", app.id, &edit).await.unwrap();
    assert_eq!(updated.name, "Renamed");
    assert_eq!(updated.mode, StsMode::AssumeRole);
    assert_eq!(updated.min_remaining, Some(300));
    assert_eq!(
        updated.sts_endpoint.as_deref(),
        Some("http://127.0.0.1:9000")
    );
    assert!(updated.updated_at >= app.updated_at);

    store.set_app_enabled("root", app.id, false).await.unwrap();
    assert!(!store.app_by_id(app.id).await.unwrap().unwrap().enabled);
    store.set_app_enabled("root", app.id, true).await.unwrap();
    assert!(store.app_by_id(app.id).await.unwrap().unwrap().enabled);

    assert!(matches!(
        store.update_app("root", 999_999, &edit).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.set_app_enabled("root", 999_999, true).await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn validation_names_the_fields() {
    let (_db, store) = store().await;
    let mut bad = app_input("Bad Slug");
    bad.name = " ".into();
    bad.region = "gz".into();
    bad.bucket = "nobucketappid".into();
    bad.mode = StsMode::AssumeRole;
    bad.secret_id = "has space".into();
    bad.secret_key = None;
    bad.sts_endpoint = Some("ftp://example.com".into());
    bad.duration_default = 0;
    bad.duration_max = 200_000;
    bad.min_remaining = Some(-1);
    bad.rate_subject_per_minute = -1;
    bad.rate_app_per_second = -5;
    let err = store.create_app("root", &bad).await.unwrap_err();
    assert_eq!(
        fields(&err),
        [
            "slug",
            "name",
            "region",
            "bucket",
            "role_arn",
            "secret_id",
            "secret_key",
            "sts_endpoint",
            "duration_default",
            "duration_max",
            "min_remaining",
            "rate_subject_per_minute",
            "rate_app_per_second",
        ]
    );
    // The message never carries the secret.
    let mut with_secret = app_input("ok");
    with_secret.duration_default = 9000;
    let err = store.create_app("root", &with_secret).await.unwrap_err();
    assert_eq!(fields(&err), ["duration_default"]);
    assert!(!err.to_string().contains(SECRET_KEY));
    assert!(store.list_apps().await.unwrap().is_empty());
}

#[tokio::test]
async fn duplicate_slug_is_a_conflict() {
    let (_db, store) = store().await;
    store.create_app("root", &app_input("demo")).await.unwrap();
    let err = store
        .create_app("root", &app_input("demo"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("demo")),
        "{err:?}"
    );
    let other = store.create_app("root", &app_input("other")).await.unwrap();
    let err = store
        .update_app("root", other.id, &app_input("demo"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}

#[tokio::test]
async fn secrets_are_encrypted_at_rest_and_kept_on_update() {
    let (db, store) = store().await;
    let app = store.create_app("root", &app_input("demo")).await.unwrap();
    let raw: String = sqlx::query_scalar("SELECT secret_key_enc FROM apps WHERE id = $1")
        .bind(app.id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(raw.starts_with("v1:test:"), "{raw}");
    assert!(!raw.contains(SECRET_KEY));

    // Update without a secret keeps the stored one (same ciphertext).
    let mut edit = app_input("demo");
    edit.secret_key = None;
    edit.name = "x".into();
    let updated = store.update_app("root", app.id, &edit).await.unwrap();
    assert_eq!(updated.secret_key.expose_secret(), SECRET_KEY);
    let raw_after: String = sqlx::query_scalar("SELECT secret_key_enc FROM apps WHERE id = $1")
        .bind(app.id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(raw_after, raw);

    // A new secret replaces it.
    edit.secret_key = Some(SecretString::from("NewSecretKeyValue1234567890"));
    let updated = store.update_app("root", app.id, &edit).await.unwrap();
    assert_eq!(
        updated.secret_key.expose_secret(),
        "NewSecretKeyValue1234567890"
    );

    // The ciphertext is bound to the app: copied onto another app it does not decrypt.
    let other = store.create_app("root", &app_input("other")).await.unwrap();
    sqlx::query("UPDATE apps SET secret_key_enc = $1 WHERE id = $2")
        .bind(&raw)
        .bind(other.id)
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(matches!(
        store.app_by_id(other.id).await,
        Err(StoreError::Crypto(_))
    ));
    assert_eq!(app.secret_id, SECRET_ID);
}

#[tokio::test]
async fn app_auth_with_encrypted_hs_secret() {
    let (db, store) = store().await;
    let app = store.create_app("root", &app_input("demo")).await.unwrap();
    assert!(store.app_auth(app.id).await.unwrap().is_none());
    let hs = "an-hs256-secret-of-at-least-32-bytes!!";
    let mut input = AppAuthInput {
        issuer: Some("https://issuer.example".into()),
        audiences: vec!["mobile".into()],
        algorithms: vec!["HS256".into(), "HS256".into()],
        hs_secret: Some(SecretString::from(hs)),
        public_keys: vec![],
        jwks_url: None,
        user_claim: "sub".into(),
        leeway_seconds: 30,
    };
    let auth = store.set_app_auth("root", app.id, &input).await.unwrap();
    assert_eq!(auth.hs_secret.as_ref().unwrap().expose_secret(), hs);
    assert_eq!(auth.algorithms, ["HS256"]);
    let raw: String = sqlx::query_scalar("SELECT hs_secret_enc FROM app_auth WHERE app_id = $1")
        .bind(app.id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(raw.starts_with("v1:") && !raw.contains(hs));

    // Without a new secret the stored one is kept.
    input.hs_secret = None;
    input.leeway_seconds = 10;
    input.jwks_url = Some("https://issuer.example/jwks.json".into());
    input.algorithms = vec!["HS256".into(), "RS256".into()];
    let auth = store.set_app_auth("root", app.id, &input).await.unwrap();
    assert_eq!(auth.hs_secret.as_ref().unwrap().expose_secret(), hs);
    assert_eq!(auth.leeway_seconds, 10);
    let read = store.app_auth(app.id).await.unwrap().unwrap();
    assert_eq!(read.hs_secret.unwrap().expose_secret(), hs);
    assert_eq!(
        read.jwks_url.as_deref(),
        Some("https://issuer.example/jwks.json")
    );

    // Validation names the fields.
    let bad = AppAuthInput {
        issuer: None,
        audiences: vec![" ".into()],
        algorithms: vec!["none".into(), "ES256".into()],
        hs_secret: Some(SecretString::from("short")),
        public_keys: vec!["not a pem".into()],
        jwks_url: Some("file:///etc/passwd".into()),
        user_claim: "bad claim".into(),
        leeway_seconds: -1,
    };
    let err = store.set_app_auth("root", app.id, &bad).await.unwrap_err();
    assert_eq!(
        fields(&err),
        [
            "algorithms",
            "public_keys[0]",
            "jwks_url",
            "issuer",
            "audiences",
            "user_claim",
            "leeway_seconds"
        ]
    );
    // A short HS secret is refused once an HS algorithm is allowed.
    let short = AppAuthInput {
        algorithms: vec!["HS256".into()],
        hs_secret: Some(SecretString::from("short")),
        ..input.clone()
    };
    let err = store
        .set_app_auth("root", app.id, &short)
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["hs_secret"]);
    // HS algorithms need a secret when none is stored.
    let other = store.create_app("root", &app_input("other")).await.unwrap();
    let mut no_secret = input.clone();
    no_secret.algorithms = vec!["HS512".into()];
    let err = store
        .set_app_auth("root", other.id, &no_secret)
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["hs_secret"]);
    assert!(matches!(
        store.set_app_auth("root", 999_999, &input).await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn master_key_rotation() {
    use base64::Engine as _;
    use policy_store::{Cipher, MasterKey, PgStore};

    let (db, old_store) = store().await;
    let app = old_store
        .create_app("root", &app_input("demo"))
        .await
        .unwrap();

    let new_key = MasterKey::parse(&format!(
        "next:{}",
        base64::engine::general_purpose::STANDARD.encode([9u8; 32])
    ))
    .unwrap();
    // Without the old key the secret cannot be read, and the error names the key id.
    let new_only = PgStore::new(db.pool.clone(), Cipher::new(new_key.clone(), vec![]));
    let err = new_only.app_by_id(app.id).await.unwrap_err();
    assert!(err.to_string().contains("\"test\""), "{err}");
    // With it as a previous key it can; the next update re-encrypts under the new key.
    let rotated = PgStore::new(
        db.pool.clone(),
        Cipher::new(new_key, vec![policy_store::testing::test_cipher().current]),
    );
    assert_eq!(
        rotated
            .app_by_id(app.id)
            .await
            .unwrap()
            .unwrap()
            .secret_key
            .expose_secret(),
        SECRET_KEY
    );
    let mut edit = app_input("demo");
    edit.secret_key = None;
    rotated.update_app("root", app.id, &edit).await.unwrap();
    let raw: String = sqlx::query_scalar("SELECT secret_key_enc FROM apps WHERE id = $1")
        .bind(app.id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(raw.starts_with("v1:next:"), "{raw}");
    assert_eq!(
        new_only
            .app_by_id(app.id)
            .await
            .unwrap()
            .unwrap()
            .secret_key
            .expose_secret(),
        SECRET_KEY
    );
}

/// Issue 8 item 4: settings the store accepted but the gateway refused took the app down with
/// 503 `app_misconfigured`. The store now runs the gateway's own compile step.
#[tokio::test]
async fn the_store_refuses_jwt_settings_the_gateway_would_refuse() {
    use policy_store::jwt::{CompileOptions, CompiledJwt};

    let (_db, store) = store().await;
    let app = store.create_app("root", &app_input("demo")).await.unwrap();
    let good = AppAuthInput {
        issuer: Some("https://idp.example".into()),
        audiences: vec!["mobile".into()],
        algorithms: vec!["RS256".into()],
        hs_secret: None,
        public_keys: vec![],
        jwks_url: Some("https://idp.example/jwks.json".into()),
        user_claim: "sub".into(),
        leeway_seconds: 60,
    };
    let saved = store.set_app_auth("root", app.id, &good).await.unwrap();
    // What the store saved, the gateway compiles.
    assert!(CompiledJwt::compile(&saved, CompileOptions::default()).is_ok());

    let refused = |f: fn(&mut AppAuthInput)| {
        let mut input = good.clone();
        f(&mut input);
        input
    };
    for (input, field) in [
        // The store allowed 0..=3600, the gateway at most 600.
        (refused(|i| i.leeway_seconds = 900), "leeway_seconds"),
        // http is allowed only on loopback, and loopback only when configured.
        (
            refused(|i| i.jwks_url = Some("http://example.com/jwks.json".into())),
            "jwks_url",
        ),
        (
            refused(|i| i.jwks_url = Some("https://127.0.0.1:8443/jwks".into())),
            "jwks_url",
        ),
        (
            refused(|i| i.jwks_url = Some("https://169.254.169.254/latest".into())),
            "jwks_url",
        ),
        // Keys from an identity provider need an issuer and an audience (confused deputy).
        (refused(|i| i.issuer = None), "issuer"),
        (refused(|i| i.audiences.clear()), "audiences"),
    ] {
        let err = store
            .set_app_auth("root", app.id, &input)
            .await
            .unwrap_err();
        assert!(fields(&err).contains(&field.to_owned()), "{field}: {err}");
        let as_gateway = policy_store::AppAuth {
            app_id: app.id,
            issuer: input.issuer.clone(),
            audiences: input.audiences.clone(),
            algorithms: input.algorithms.clone(),
            hs_secret: None,
            public_keys: input.public_keys.clone(),
            jwks_url: input.jwks_url.clone(),
            user_claim: input.user_claim.clone(),
            leeway_seconds: input.leeway_seconds,
        };
        assert!(
            CompiledJwt::compile(&as_gateway, CompileOptions::default()).is_err(),
            "{field}: the gateway must refuse it too"
        );
    }
    // Nothing refused was saved.
    let stored = store.app_auth(app.id).await.unwrap().unwrap();
    assert_eq!(stored.leeway_seconds, 60);
    assert_eq!(
        stored.jwks_url.as_deref(),
        Some("https://idp.example/jwks.json")
    );

    // A store configured like `stsgate dev` accepts a loopback JWKS, as its gateway does.
    let dev_store = store.clone().with_jwt_options(CompileOptions {
        allow_loopback_jwks: true,
    });
    let loopback = refused(|i| i.jwks_url = Some("http://127.0.0.1:9999/jwks".into()));
    dev_store
        .set_app_auth("root", app.id, &loopback)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_store_refuses_an_sts_endpoint_the_client_would_refuse() {
    let (_db, store) = store().await;
    let mut input = app_input("demo");
    input.sts_endpoint = Some("https://user:pw@sts.tencentcloudapi.com/".into());
    let err = store.create_app("root", &input).await.unwrap_err();
    assert_eq!(fields(&err), ["sts_endpoint"]);
    input.sts_endpoint = Some("https://sts.ap-shanghai.tencentcloudapi.com/".into());
    store.create_app("root", &input).await.unwrap();
}

/// Allowed origins are stored as browsers send them, the change is in the change log, and a
/// list with a wildcard or a path is refused whole with the line at fault.
#[tokio::test]
async fn allowed_origins_are_normalised_audited_and_checked() {
    let (_db, store) = store().await;
    let app = store.create_app("root", &app_input("web")).await.unwrap();
    assert!(
        app.allowed_origins.is_empty(),
        "none until an admin lists some"
    );

    let mut edit = app_input("web");
    edit.allowed_origins = [
        "HTTPS://App.Example.com:443/",
        "",
        "http://localhost:5173",
        "https://app.example.com",
    ]
    .map(str::to_owned)
    .to_vec();
    let saved = store.update_app("root", app.id, &edit).await.unwrap();
    assert_eq!(
        saved.allowed_origins,
        ["https://app.example.com", "http://localhost:5173"]
    );
    let read = store.app_by_slug("web").await.unwrap().unwrap();
    assert_eq!(read.allowed_origins, saved.allowed_origins);
    let changes = store.admin_changes(None, 10).await.unwrap();
    let update = changes.iter().find(|c| c.action == "app.update").unwrap();
    assert_eq!(
        update.after.as_ref().unwrap()["allowed_origins"],
        serde_json::json!(["https://app.example.com", "http://localhost:5173"])
    );
    assert_eq!(
        update.before.as_ref().unwrap()["allowed_origins"],
        serde_json::json!([])
    );

    let mut bad = app_input("web");
    bad.allowed_origins = [
        "https://ok.example.com",
        "https://*.example.com",
        "https://app.example.com/upload",
    ]
    .map(str::to_owned)
    .to_vec();
    let err = store.update_app("root", app.id, &bad).await.unwrap_err();
    assert_eq!(fields(&err), ["allowed_origins", "allowed_origins"]);
    let text = err.to_string();
    assert!(
        text.contains("line 2 “https://*.example.com”: wildcards are not allowed"),
        "{text}"
    );
    assert!(
        text.contains("line 3 “https://app.example.com/upload”: an origin has no path"),
        "{text}"
    );
    // Nothing was saved.
    let kept = store.app_by_slug("web").await.unwrap().unwrap();
    assert_eq!(kept.allowed_origins, saved.allowed_origins);
}
