//! What an admin does with the pages: apps, JWT settings, the policy editor with its
//! preview, versions, diff and rollback, blocked subjects, users, and the change log.

use policy_store::{AdminUserStore, AppStore, Role, StsMode, SubjectStore, TemplateStore};
use secrecy::ExposeSecret;

use crate::support::*;

fn app_form<'a>(name: &'a str, mode: &'a str, duration_max: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("name", name),
        ("enabled", "on"),
        ("region", "ap-shanghai"),
        ("bucket", "media-1250000000"),
        ("mode", mode),
        ("role_arn", ""),
        ("external_id", ""),
        ("sts_endpoint", "http://127.0.0.1:9100/"),
        ("duration_default", "600"),
        ("duration_max", duration_max),
        ("min_remaining", ""),
        ("rate_subject_per_minute", "30"),
        ("rate_app_per_second", "50"),
    ]
}

#[tokio::test]
async fn apps_are_created_edited_and_disabled() {
    let t = TestAdmin::start().await;
    let admin = t.admin().await;

    // Validation errors point at the field and keep what was typed, never a secret.
    let mut form = app_form("Media", "assume_role", "99999999");
    form.extend([
        ("slug", "media"),
        ("secret_id", "AKIDmediaSecretId000000000001"),
        ("secret_key", "media-secret-key-value-000000"),
    ]);
    let res = admin.submit("/apps/_new", "/apps/_new", &form).await;
    assert_eq!(res.status, 422);
    assert!(
        res.body.contains("AssumeRole needs the role to assume"),
        "{}",
        res.body
    );
    assert!(res.body.contains("from 1 to 129600 (36 hours)"));
    assert!(res.body.contains("value=\"Media\""));
    assert!(!res.body.contains("media-secret-key-value-000000"));
    assert!(t.store.app_by_slug("media").await.unwrap().is_none());

    let mut form = app_form("Media", "federation_token", "3600");
    form.extend([
        ("slug", "media"),
        ("secret_id", "AKIDmediaSecretId000000000001"),
        ("secret_key", "media-secret-key-value-000000"),
    ]);
    let res = admin.submit("/apps/_new", "/apps/_new", &form).await;
    assert_eq!(res.status, 303, "{}", res.body);
    assert_eq!(res.header("location"), "/apps/media?notice=created");
    let app = t.store.app_by_slug("media").await.unwrap().unwrap();
    assert_eq!(app.region, "ap-shanghai");
    assert_eq!(app.sts_endpoint.as_deref(), Some("http://127.0.0.1:9100/"));
    assert_eq!(app.duration_max, 3600);
    let page = admin.get("/apps/media?notice=created").await;
    assert!(page.body.contains("Created."));
    assert!(page.body.contains("AKID…0001"));

    // A duplicate slug is an error on the slug field.
    let res = admin.submit("/apps/_new", "/apps/_new", &form).await;
    assert_eq!(res.status, 422);
    assert!(res.body.contains("already exists"));

    // Edit: AssumeRole with a role; secrets left empty are kept.
    let mut form = app_form("Media v2", "assume_role", "7200");
    form.extend([
        ("role_arn", "qcs::cam::uin/100000000001:roleName/media"),
        ("external_id", "ext-42"),
        ("secret_id", ""),
        ("secret_key", ""),
    ]);
    form.retain(|(k, v)| !(["role_arn", "external_id"].contains(k) && v.is_empty()));
    let res = admin
        .submit("/apps/media/edit", "/apps/media/edit", &form)
        .await;
    assert_eq!(res.status, 303, "{}", res.body);
    let app = t.store.app_by_slug("media").await.unwrap().unwrap();
    assert_eq!(app.name, "Media v2");
    assert_eq!(app.mode, StsMode::AssumeRole);
    assert_eq!(app.external_id.as_deref(), Some("ext-42"));
    assert_eq!(app.secret_id, "AKIDmediaSecretId000000000001");
    assert_eq!(
        app.secret_key.expose_secret(),
        "media-secret-key-value-000000"
    );

    // Disable and enable.
    let res = admin
        .submit(
            "/apps/media",
            "/apps/media/enabled",
            &[("enabled", "false")],
        )
        .await;
    assert_eq!(res.status, 303);
    assert!(!t.store.app_by_slug("media").await.unwrap().unwrap().enabled);
    let page = admin.get("/apps").await;
    assert!(page.body.contains("disabled"));
    let res = admin
        .submit("/apps/media", "/apps/media/enabled", &[("enabled", "true")])
        .await;
    assert_eq!(res.status, 303);
    assert!(t.store.app_by_slug("media").await.unwrap().unwrap().enabled);

    // JWT settings: errors per field, then a JWKS app; the HS secret is write-only.
    let res = admin
        .submit(
            "/apps/media/jwt",
            "/apps/media/jwt",
            &[
                ("issuer", ""),
                ("audiences", "a\nb"),
                ("algorithms", "RS256"),
                ("algorithms", "HS256"),
                ("hs_secret", "short"),
                ("public_keys", "not a key"),
                ("jwks_url", "ftp://x"),
                ("user_claim", "sub"),
                ("leeway_seconds", "60"),
            ],
        )
        .await;
    assert_eq!(res.status, 422);
    for msg in [
        "at least 32 bytes",
        "not a PEM public key",
        "must be an https URL",
        "the identity provider&#39;s issuer",
    ] {
        assert!(res.body.contains(msg), "{msg}: {}", res.body);
    }
    assert!(!res.body.contains("value=\"short\""));
    let res = admin
        .submit(
            "/apps/media/jwt",
            "/apps/media/jwt",
            &[
                ("issuer", "https://idp.example.test"),
                ("audiences", "a\n\nb\n"),
                ("algorithms", "RS256"),
                ("algorithms", "ES256"),
                ("hs_secret", ""),
                ("public_keys", ""),
                ("jwks_url", "https://idp.example.test/jwks.json"),
                ("user_claim", "uid"),
                ("leeway_seconds", "30"),
            ],
        )
        .await;
    assert_eq!(res.status, 303, "{}", res.body);
    let auth = t.store.app_auth(app.id).await.unwrap().unwrap();
    assert_eq!(auth.audiences, ["a", "b"]);
    assert_eq!(auth.algorithms, ["RS256", "ES256"]);
    assert_eq!(auth.user_claim, "uid");
    assert!(auth.hs_secret.is_none());
    let page = admin.get("/apps/media/jwt").await;
    assert!(page.body.contains("value=\"RS256\" checked"));
    assert!(page.body.contains("https://idp.example.test/jwks.json"));

    // The change log has it all, with before and after, filtered by target.
    let page = admin.get("/changes?target=media").await;
    for action in [
        "app.create",
        "app.update",
        "app.disable",
        "app.enable",
        "auth.update",
    ] {
        assert!(page.body.contains(action), "{action}");
    }
    assert!(page.body.contains("Media v2"));
    let page = admin.get("/changes?action=app.disable").await;
    assert!(!page.body.contains("app.create</code>"));
    let page = admin.get("/changes?from=yesterday").await;
    assert!(page.body.contains("a date and time"));
}

#[tokio::test]
async fn the_policy_editor_validates_previews_diffs_and_rolls_back() {
    let t = TestAdmin::start().await;
    let admin = t.admin().await;
    let page = admin.get(&format!("/apps/{APP}/policy")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("value=\"name/cos:PutObject\" checked"));
    assert!(page.body.contains("users/${sub}/*"));
    let csrf = page.csrf();
    let path = format!("/apps/{APP}/policy");

    // A variable not followed by `/` is refused, and the error names the line.
    let bad = [
        ("csrf", csrf.as_str()),
        ("statement_count", "1"),
        ("prefix", "users/${sub}/"),
        ("st0_effect", "allow"),
        ("st0_actions", "name/cos:GetObject"),
        ("st0_custom_actions", "name/cos:GetObjectTagging\nbogus"),
        ("st0_resources", "users/${sub}/*\nusers/${sub}*"),
        ("st0_conditions", ""),
        ("note", "broken"),
        ("op", "save"),
    ];
    let res = admin.post(&path, &bad).await;
    assert_eq!(res.status, 422, "{}", res.body);
    assert!(
        res.body
            .contains("line 2 “users/${sub}*”: put a / right after ${sub}"),
        "{}",
        res.body
    );
    assert!(
        res.body
            .contains("“bogus”: write a COS action as name/cos:")
    );
    assert!(res.body.contains("href=\"#st-0\""));
    assert_eq!(t.store.template_versions(t.app_id).await.unwrap().len(), 1);

    // Conditions that are not JSON are pointed at too.
    let mut unreadable = bad.to_vec();
    unreadable.retain(|(k, _)| {
        *k != "st0_conditions" && *k != "st0_resources" && *k != "st0_custom_actions"
    });
    unreadable.extend([
        ("st0_resources", "users/${sub}/*"),
        ("st0_conditions", "{nope"),
    ]);
    let res = admin.post(&path, &unreadable).await;
    assert_eq!(res.status, 422);
    assert!(res.body.contains("this is not valid JSON"));

    // Add and remove statements without saving.
    let mut add = unreadable.clone();
    add.retain(|(k, _)| *k != "op" && *k != "st0_conditions");
    add.push(("op", "add"));
    let res = admin.post(&path, &add).await;
    assert_eq!(res.status, 200);
    assert!(res.body.contains("Statement 2"));
    assert!(res.body.contains("name=\"statement_count\" value=\"2\""));

    // The preview: a JWT is decoded without verification, a claims object works too,
    // and a subject that cannot be substituted is refused with its reason.
    let good = [
        ("csrf", csrf.as_str()),
        ("statement_count", "2"),
        ("prefix", "users/${sub}/"),
        ("st0_effect", "allow"),
        ("st0_actions", "name/cos:PutObject"),
        ("st0_actions", "name/cos:GetObject"),
        ("st0_resources", "users/${sub}/*"),
        (
            "st0_conditions",
            "{\"numeric_less_than_equal\": {\"cos:content-length\": 1048576}}",
        ),
        ("st1_effect", "allow"),
        ("st1_actions", "name/cos:GetBucket"),
        ("st1_resources", "/"),
        (
            "st1_conditions",
            "{\"string_like\": {\"cos:prefix\": \"users/${sub}/*\"}}",
        ),
        ("note", "uploads up to 1 MiB"),
    ];
    // header {"alg":"HS256","typ":"JWT"}, payload {"sub":"alice"}, a made-up signature.
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSJ9.bm90LWEtc2lnbmF0dXJl";
    let mut with_jwt = good.to_vec();
    with_jwt.push(("preview_input", jwt));
    let res = admin
        .post(&format!("/apps/{APP}/policy/preview"), &with_jwt)
        .await;
    assert_eq!(res.status, 200);
    assert!(res.body.contains("NOT verified"));
    assert!(
        res.body.contains(
            "qcs::cos:ap-guangzhou:uid/1250000000:examplebucket-1250000000/users/alice/*"
        )
    );
    assert!(res.body.contains("users/alice/"));
    assert!(res.body.contains("cos:content-length"));
    assert!(!res.body.contains("<html"), "a fragment");
    let mut with_claims = good.to_vec();
    with_claims.extend([
        ("preview_input", "{\"sub\": \"../bob\"}"),
        ("op", "preview"),
    ]);
    let res = admin.post(&path, &with_claims).await;
    assert_eq!(res.status, 200);
    assert!(res.body.contains("refused with 403"), "{}", res.body);
    assert!(res.body.contains("${sub_hash}"));
    assert!(
        res.body.contains("value=\"uploads up to 1 MiB\""),
        "the draft is kept"
    );
    let mut no_sub = good.to_vec();
    no_sub.push(("preview_input", "{\"uid\": \"x\"}"));
    let res = admin
        .post(&format!("/apps/{APP}/policy/preview"), &no_sub)
        .await;
    assert!(res.body.contains("no string or integer “sub”"));

    // Save: a new active version.
    let mut save = good.to_vec();
    save.push(("op", "save"));
    let res = admin.post(&path, &save).await;
    assert_eq!(res.status, 303, "{}", res.body);
    let active = t.store.active_template(t.app_id).await.unwrap().unwrap();
    assert_eq!(active.version, 2);
    assert_eq!(active.author, "root");
    assert_eq!(active.note.as_deref(), Some("uploads up to 1 MiB"));
    assert_eq!(active.document.statements.len(), 2);
    assert_eq!(active.document.statements[1].resources, ["/"]);

    // History, diff, rollback.
    let page = admin.get(&format!("/apps/{APP}/policy/versions")).await;
    assert!(page.body.contains("v2") && page.body.contains("active"));
    assert!(page.body.contains("Roll back to v1"));
    let diff = admin
        .get(&format!("/apps/{APP}/policy/diff?from=1&to=2"))
        .await;
    assert_eq!(diff.status, 200);
    assert!(diff.body.contains("<span class=\"add\">+"), "{}", diff.body);
    assert!(diff.body.contains("<span class=\"del\">-"));
    assert!(diff.body.contains("name/cos:GetBucket"));
    let res = admin
        .submit(
            &format!("/apps/{APP}/policy/versions"),
            &format!("/apps/{APP}/policy/rollback"),
            &[("version", "1")],
        )
        .await;
    assert_eq!(res.status, 303);
    assert_eq!(
        t.store
            .app_by_slug(APP)
            .await
            .unwrap()
            .unwrap()
            .active_template_version,
        Some(1)
    );
    // Editing from an old version loads it.
    let page = admin.get(&format!("/apps/{APP}/policy?version=2")).await;
    assert!(page.body.contains("Loaded from v2"));
    assert!(page.body.contains("numeric_less_than_equal"));
    assert_eq!(
        admin
            .get(&format!("/apps/{APP}/policy/diff?from=1&to=99"))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn blocks_and_users() {
    let t = TestAdmin::start().await;
    let admin = t.admin().await;
    let blocks = format!("/apps/{APP}/blocks");
    let page = admin.get(&blocks).await;
    assert!(page.body.contains("stay valid until they expire"));
    assert!(page.body.contains("2 h"), "the app's maximum duration");
    let res = admin
        .submit(
            &blocks,
            &blocks,
            &[("subject", "mallory"), ("reason", "abuse")],
        )
        .await;
    assert_eq!(res.status, 303);
    assert!(t.store.is_blocked(t.app_id, "mallory").await.unwrap());
    let page = admin.get(&blocks).await;
    assert!(page.body.contains("mallory") && page.body.contains("abuse"));
    assert!(page.body.contains("none still valid"));
    let res = admin.submit(&blocks, &blocks, &[("subject", "")]).await;
    assert_eq!(res.status, 422);
    let res = admin
        .submit(
            &blocks,
            &format!("{blocks}/remove"),
            &[("subject", "mallory")],
        )
        .await;
    assert_eq!(res.status, 303);
    assert!(!t.store.is_blocked(t.app_id, "mallory").await.unwrap());

    // Users: create, refuse a short password, change role, reset password, disable.
    let res = admin
        .submit(
            "/users",
            "/users",
            &[
                ("username", "carol"),
                ("role", "auditor"),
                ("password", "short"),
            ],
        )
        .await;
    assert_eq!(res.status, 422);
    assert!(res.body.contains("at least 12 characters"));
    let res = admin
        .submit(
            "/users",
            "/users",
            &[
                ("username", "carol"),
                ("role", "auditor"),
                ("password", "carol-password-123"),
            ],
        )
        .await;
    assert_eq!(res.status, 303, "{}", res.body);
    let carol = t.store.admin_user_by_name("carol").await.unwrap().unwrap();
    assert_eq!(carol.role, Role::Auditor);
    let carol_browser = t.browser();
    assert_eq!(
        carol_browser
            .login("carol", "carol-password-123")
            .await
            .status,
        303
    );
    assert_eq!(
        carol_browser.get(&format!("/apps/{APP}/edit")).await.status,
        403
    );
    let res = admin
        .submit(
            "/users",
            &format!("/users/{}/role", carol.id),
            &[("role", "admin")],
        )
        .await;
    assert_eq!(res.status, 303);
    // The new role applies to the live session at once.
    assert_eq!(
        carol_browser.get(&format!("/apps/{APP}/edit")).await.status,
        200
    );
    let res = admin
        .submit(
            "/users",
            &format!("/users/{}/password", carol.id),
            &[("password", "carol-new-password-456")],
        )
        .await;
    assert_eq!(res.status, 303);
    assert_eq!(carol_browser.get("/").await.status, 303, "signed out");
    assert_eq!(
        t.browser()
            .login("carol", "carol-password-123")
            .await
            .status,
        401
    );
    assert_eq!(
        t.browser()
            .login("carol", "carol-new-password-456")
            .await
            .status,
        303
    );
    // An admin cannot disable themselves; the last admin cannot be demoted.
    let res = admin
        .submit(
            "/users",
            &format!("/users/{}/disabled", t.admin_id),
            &[("disabled", "true")],
        )
        .await;
    assert_eq!(res.status, 422);
    assert!(res.body.contains("your own account"));
    let res = admin
        .submit(
            "/users",
            &format!("/users/{}/disabled", carol.id),
            &[("disabled", "true")],
        )
        .await;
    assert_eq!(res.status, 303);
    let res = admin
        .submit(
            "/users",
            &format!("/users/{}/role", t.admin_id),
            &[("role", "auditor")],
        )
        .await;
    assert_eq!(res.status, 422);
    assert!(res.body.contains("last enabled admin"));
    let page = admin.get("/changes").await;
    for action in [
        "admin_user.create",
        "admin_user.role",
        "admin_user.password",
        "admin_user.disable",
        "subject.block",
        "subject.unblock",
    ] {
        assert!(page.body.contains(action), "{action}");
    }
}

/// Issue 13: the app form's allowed origins. A wildcard or a path is an error on the field
/// naming the line, the typed text is kept; good ones are saved as browsers send them and
/// shown on the app page and its integration card.
#[tokio::test]
async fn allowed_origins_are_edited_on_the_app_form() {
    let t = TestAdmin::start().await;
    let admin = t.admin().await;
    let edit = format!("/apps/{APP}/edit");
    let mut form = app_form("Photo app", "federation_token", "7200");
    form.extend([
        ("secret_id", ""),
        ("secret_key", ""),
        (
            "allowed_origins",
            "https://app.example.com\r\nhttps://*.example.com\r\n",
        ),
    ]);
    let res = admin.submit(&edit, &edit, &form).await;
    assert_eq!(res.status, 422, "{}", res.body);
    assert!(
        res.body
            .contains("line 2 “https://*.example.com”: wildcards are not allowed"),
        "{}",
        res.body
    );
    assert!(
        res.body
            .contains(">https://app.example.com\r\nhttps://*.example.com")
    );
    let app = t.store.app_by_slug(APP).await.unwrap().unwrap();
    assert!(app.allowed_origins.is_empty(), "nothing saved");

    form.retain(|(k, _)| *k != "allowed_origins");
    form.push((
        "allowed_origins",
        "HTTPS://App.Example.com:443/\r\n\r\nhttp://localhost:5173",
    ));
    let res = admin.submit(&edit, &edit, &form).await;
    assert_eq!(res.status, 303, "{}", res.body);
    let app = t.store.app_by_slug(APP).await.unwrap().unwrap();
    assert_eq!(
        app.allowed_origins,
        ["https://app.example.com", "http://localhost:5173"]
    );
    let page = admin.get(&format!("/apps/{APP}")).await;
    assert!(
        page.body
            .contains("<code>https://app.example.com</code> · <code>http://localhost:5173</code>"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("Allowed from <code>https://app.example.com</code>")
    );
    let form_page = admin.get(&edit).await;
    assert!(
        form_page
            .body
            .contains(">https://app.example.com\nhttp://localhost:5173</textarea>"),
        "{}",
        form_page.body
    );
}
