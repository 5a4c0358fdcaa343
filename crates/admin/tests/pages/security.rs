//! Roles on every route, CSRF on every POST, escaping, lockout, cookies, headers, and no
//! stored secret on any page or export.

use std::time::Duration;

use admin::{Access, AdminConfig, ROUTES, RouteMethod};
use policy_store::{
    AdminUserStore, AppStore, IssuanceRecord, IssuanceStore, Outcome, SubjectStore,
};
use time::OffsetDateTime;

use crate::support::*;

fn public_routes() -> Vec<&'static str> {
    ROUTES
        .iter()
        .filter(|r| r.access == Access::Public && !r.is_api())
        .map(|r| r.path)
        .collect()
}

#[tokio::test]
async fn every_route_enforces_its_role() {
    let t = TestAdmin::start().await;
    // Only these may be used without signing in; a new route is never public by accident.
    let mut public = public_routes();
    public.sort();
    public.dedup();
    assert_eq!(public, ["/healthz", "/login", "/static/{name}"]);
    assert!(ROUTES.len() >= 30, "the table lists every route");

    let anon = t.browser();
    let auditor = t.auditor().await;
    let admin = t.admin().await;
    let auditor_csrf = auditor.get("/").await.csrf();
    let before = t.audit_rows().await;

    for route in ROUTES
        .iter()
        .filter(|r| r.access != Access::Public && !r.is_api())
    {
        let path = concrete(route.path, APP, t.auditor_id);
        match route.method {
            RouteMethod::Get => {
                let res = anon.get(&path).await;
                assert_eq!(res.status, 303, "anonymous GET {path}");
                assert!(res.header("location").starts_with("/login"), "{path}");

                let res = auditor.get(&path).await;
                match route.access {
                    Access::Admin => {
                        assert_eq!(res.status, 403, "auditor GET {path}");
                        assert!(res.body.contains("can only read"), "{path}");
                    }
                    _ => assert_eq!(res.status, 200, "auditor GET {path}: {}", res.body),
                }

                let res = admin.get(&path).await;
                assert_eq!(res.status, 200, "admin GET {path}: {}", res.body);
            }
            RouteMethod::Post => {
                let res = anon.post(&path, &[("csrf", "x")]).await;
                assert_eq!(res.status, 401, "anonymous POST {path}");

                if route.access == Access::Admin {
                    // A valid token does not make an auditor an admin.
                    let res = auditor
                        .post(
                            &path,
                            &[
                                ("csrf", &auditor_csrf),
                                ("enabled", "false"),
                                ("subject", "x"),
                                ("version", "1"),
                                ("role", "admin"),
                                ("disabled", "true"),
                                ("username", "mallory"),
                                ("password", "mallory-password-123"),
                            ],
                        )
                        .await;
                    assert_eq!(res.status, 403, "auditor POST {path}");
                }
            }
            other => panic!("pages answer GET and POST only, not {other:?} {path}"),
        }
    }
    assert_eq!(
        t.audit_rows().await,
        before,
        "refused requests changed nothing"
    );
    let auditor_user = t.store.admin_user_by_name("audrey").await.unwrap().unwrap();
    assert_eq!(auditor_user.role, policy_store::Role::Auditor);
    assert!(t.store.app_by_slug(APP).await.unwrap().unwrap().enabled);

    // The auditor sees the apps without edit controls.
    let page = auditor.get(&format!("/apps/{APP}")).await;
    assert!(!page.body.contains("Edit settings") && !page.body.contains("Disable app"));
    let page = auditor.get("/").await;
    assert!(!page.body.contains("href=\"/users\""));

    // The auditor's one POST: signing out.
    let res = auditor.post("/logout", &[("csrf", &auditor_csrf)]).await;
    assert_eq!(res.status, 303);
    assert_eq!(auditor.get("/").await.status, 303);

    // Unknown paths are 404 pages with a request id, for everyone.
    let res = admin.get("/no/such/page").await;
    assert_eq!(res.status, 404);
    assert!(res.body.contains(&res.header("x-request-id")));
}

#[tokio::test]
async fn posts_without_a_valid_csrf_token_are_refused() {
    let t = TestAdmin::start().await;
    let admin = t.admin().await;
    let csrf = admin.get("/").await.csrf();
    let before = t.audit_rows().await;
    let fields = [
        ("enabled", "false"),
        ("subject", "mallory"),
        ("version", "1"),
        ("role", "auditor"),
        ("disabled", "true"),
        ("username", "mallory"),
        ("password", "mallory-password-123"),
        ("op", "save"),
    ];
    for route in ROUTES
        .iter()
        .filter(|r| r.method == RouteMethod::Post && !r.is_api())
    {
        let path = concrete(route.path, APP, t.auditor_id);
        // No token, a wrong token, and a right token sent by another site.
        let res = admin.post(&path, &fields).await;
        assert_eq!(res.status, 403, "POST {path} without a token");
        let mut wrong = vec![("csrf", "forged-token-forged-token-forged-token-xx")];
        wrong.extend_from_slice(&fields);
        let res = admin.post(&path, &wrong).await;
        assert_eq!(res.status, 403, "POST {path} with a wrong token");
        let mut right = vec![("csrf", csrf.as_str())];
        right.extend_from_slice(&fields);
        for site in ["cross-site", "same-site", "none"] {
            let res = admin.post_with(&path, &right, Some(site)).await;
            assert_eq!(res.status, 403, "POST {path} from Sec-Fetch-Site {site}");
        }
    }
    assert_eq!(t.audit_rows().await, before, "nothing changed");
    assert!(t.store.app_by_slug(APP).await.unwrap().unwrap().enabled);
    assert!(!t.store.is_blocked(t.app_id, "mallory").await.unwrap());
    // The session survived (logout was refused too).
    assert_eq!(admin.get("/").await.status, 200);

    // The same request with the token, same-origin or without the header, goes through.
    let res = admin
        .post(
            &format!("/apps/{APP}/blocks"),
            &[("csrf", &csrf), ("subject", "mallory")],
        )
        .await;
    assert_eq!(res.status, 303, "{}", res.body);
    let res = admin
        .post_with(
            &format!("/apps/{APP}/blocks/remove"),
            &[("csrf", &csrf), ("subject", "mallory")],
            None,
        )
        .await;
    assert_eq!(res.status, 303, "{}", res.body);

    // The sign-in form needs its own double-submit token.
    let anon = t.browser();
    let res = anon
        .post(
            "/login",
            &[("username", "root"), ("password", ADMIN_PASSWORD)],
        )
        .await;
    assert_eq!(res.status, 403);
    let other = t.browser();
    let foreign = other.get("/login").await.csrf();
    let res = anon
        .post(
            "/login",
            &[
                ("csrf", &foreign),
                ("username", "root"),
                ("password", ADMIN_PASSWORD),
            ],
        )
        .await;
    assert_eq!(res.status, 403, "a token without its cookie");
}

#[tokio::test]
async fn stored_text_is_escaped() {
    let t = TestAdmin::start().await;
    let evil = "<script>alert(1)</script>";
    let admin = t.admin().await;
    let res = admin
        .submit(
            "/apps/_new",
            "/apps/_new",
            &[
                ("slug", "evil"),
                ("name", evil),
                ("enabled", "on"),
                ("region", "ap-guangzhou"),
                ("bucket", "examplebucket-1250000000"),
                ("mode", "federation_token"),
                ("secret_id", SECRET_ID),
                ("secret_key", SECRET_KEY),
                ("duration_default", "900"),
                ("duration_max", "3600"),
                ("min_remaining", ""),
                ("rate_subject_per_minute", "0"),
                ("rate_app_per_second", "0"),
            ],
        )
        .await;
    assert_eq!(res.status, 303, "{}", res.body);
    let app = t.store.app_by_slug("evil").await.unwrap().unwrap();
    assert_eq!(app.name, evil);
    t.store
        .block_subject("root", app.id, "<b>bob</b>", Some(evil))
        .await
        .unwrap();
    t.store
        .insert_issuance_batch(&[IssuanceRecord {
            id: 0,
            at: OffsetDateTime::now_utc(),
            app: "evil".into(),
            subject: Some("<img src=x onerror=alert(2)>".into()),
            outcome: Outcome::Denied,
            http_status: 403,
            error_code: Some("subject_not_allowed".into()),
            request_id: "req-1".into(),
            sts_request_id: None,
            tmp_secret_id: None,
            policy_hash: None,
            template_version: None,
            actions: vec![],
            prefix: None,
            duration_seconds: None,
            expired_time: None,
            source_ip: Some("10.0.0.1".into()),
            user_agent: Some("<script>ua()</script>".into()),
            latency_us: 5,
            count: 1,
        }])
        .await
        .unwrap();
    let auditor = t.auditor().await;
    for path in [
        "/",
        "/apps",
        "/apps/evil",
        "/apps/evil/edit",
        "/apps/evil/blocks",
        "/log",
        "/log?app=evil",
        "/changes",
    ] {
        let res = admin.get(path).await;
        assert_eq!(res.status, 200, "{path}");
        for raw in ["<script>alert(1)", "<img src=x", "<b>bob", "<script>ua("] {
            assert!(!res.body.contains(raw), "{path} has raw {raw}");
        }
        if path != "/apps/evil/edit" {
            let res = auditor.get(path).await;
            assert!(!res.body.contains("<script>alert(1)"), "{path}");
        }
    }
    let res = admin.get("/apps/evil").await;
    assert!(
        res.body
            .contains("&#60;script&#62;alert(1)&#60;/script&#62;")
    );
    let res = admin.get("/log?app=evil").await;
    assert!(res.body.contains("&#60;img src=x onerror=alert(2)&#62;"));
    // A page never reflects text from the URL outside escaping either.
    let res = admin
        .get("/log?subject=%3Cscript%3Exss()%3C/script%3E")
        .await;
    assert!(!res.body.contains("<script>xss()"));
    let res = admin.get("/apps?notice=%3Cscript%3E").await;
    assert_eq!(res.body.matches("<script").count(), 1, "only admin.js");
}

#[tokio::test]
async fn accounts_lock_after_repeated_failures() {
    let t = TestAdmin::start_with(AdminConfig {
        max_failed_logins: 5,
        lockout: Duration::from_secs(900),
        ..AdminConfig::default()
    })
    .await;
    let b = t.browser();
    for i in 1..=5 {
        let res = b.login("root", "wrong-password-123").await;
        assert_eq!(res.status, 401, "failure {i}");
        assert!(res.body.contains("Wrong username or password"));
    }
    let user = t.store.admin_user_by_name("root").await.unwrap().unwrap();
    assert!(user.locked_until.unwrap() > OffsetDateTime::now_utc() + time::Duration::minutes(14));
    // Locked: even the right password is refused, with the same answer.
    let res = b.login("root", ADMIN_PASSWORD).await;
    assert_eq!(res.status, 401);
    assert!(res.body.contains("Wrong username or password"));
    assert!(
        !b.cookies
            .lock()
            .unwrap()
            .contains_key("__Host-stsgate_session")
    );

    // Unknown users get exactly the same page (and take an argon2 verification too).
    let unknown = t.browser().login("nobody", "whatever-password").await;
    assert_eq!(unknown.status, 401);
    assert!(unknown.body.contains("Wrong username or password"));

    // The auditor account is not affected.
    let _ = t.auditor().await;
    // An admin page shows the lock; once it has run out, the right password works again.
    sqlx::query(
        "UPDATE admin_users SET locked_until = now() - interval '1 second' WHERE username = 'root'",
    )
    .execute(&t.db.pool)
    .await
    .unwrap();
    let res = b.login("root", ADMIN_PASSWORD).await;
    assert_eq!(res.status, 303, "{}", res.body);
    let user = t.store.admin_user_by_name("root").await.unwrap().unwrap();
    assert_eq!(user.failed_logins, 0);
    assert!(user.locked_until.is_none());
}

#[tokio::test]
async fn cookies_sessions_and_headers() {
    let t = TestAdmin::start().await;
    let b = t.browser();
    let res = b.get("/login").await;
    for (h, v) in [
        (
            "content-security-policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(res.header(h), v, "{h}");
    }
    assert!(res.header("strict-transport-security").contains("max-age"));
    assert!(!res.body.contains("<script>") && !res.body.contains("style="));

    let res = b.login("root", ADMIN_PASSWORD).await;
    assert_eq!(res.status, 303);
    let cookie = res
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-stsgate_session="))
        .expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    let first = b.cookies.lock().unwrap()["__Host-stsgate_session"].clone();
    // Stored hashed: the token itself is nowhere in the database.
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM admin_sessions")
        .fetch_all(&t.db.pool)
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0], first);
    assert_eq!(ids[0].len(), 64);

    // A new session id at every sign-in, whatever cookie the browser brought along (no
    // session fixation); the session it brought is ended.
    let b = t.browser();
    let csrf = b.get("/login").await.csrf();
    b.cookies
        .lock()
        .unwrap()
        .insert("__Host-stsgate_session".into(), first.clone());
    let res = b
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("username", "root"),
                ("password", ADMIN_PASSWORD),
            ],
        )
        .await;
    assert_eq!(res.status, 303);
    let second = b.cookies.lock().unwrap()["__Host-stsgate_session"].clone();
    assert_ne!(first, second);
    let stale = Browser::new(&t.url);
    stale
        .cookies
        .lock()
        .unwrap()
        .insert("__Host-stsgate_session".into(), first);
    assert_eq!(stale.get("/").await.status, 303);
    let page = b.get("/").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("cache-control"), "no-store");

    // Disabling a user ends their sessions at once.
    let auditor = t.auditor().await;
    assert_eq!(auditor.get("/").await.status, 200);
    let res = b
        .submit(
            "/users",
            &format!("/users/{}/disabled", t.auditor_id),
            &[("disabled", "true")],
        )
        .await;
    assert_eq!(res.status, 303, "{}", res.body);
    assert_eq!(auditor.get("/").await.status, 303);

    // Sign-out ends the session server-side.
    let csrf = page.csrf();
    let res = b.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(res.status, 303);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM admin_sessions")
        .fetch_one(&t.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);

    // The stylesheet is cacheable under its version, and only there.
    let css = b.get("/static/admin.css").await;
    assert_eq!(css.status, 200);
    assert_eq!(css.header("cache-control"), "no-cache");
    let version = page
        .body
        .split("admin.css?v=")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let css = b.get(&format!("/static/admin.css?v={version}")).await;
    assert!(css.header("cache-control").contains("immutable"));
    assert_eq!(b.get("/static/../Cargo.toml").await.status, 404);

    // Redirects after sign-in stay on this site.
    let evil = t.browser();
    let csrf = evil.get("/login?next=//evil.example/").await.csrf();
    let res = evil
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("username", "root"),
                ("password", ADMIN_PASSWORD),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(res.header("location"), "/");
}

#[tokio::test]
async fn dev_cookies_are_not_secure() {
    let t = TestAdmin::start_with(AdminConfig {
        secure_cookies: false,
        ..AdminConfig::default()
    })
    .await;
    let b = t.browser();
    let res = b.login("root", ADMIN_PASSWORD).await;
    assert_eq!(res.status, 303);
    let cookie = res
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("stsgate_session="))
        .expect("a plain session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(!cookie.contains("Secure"));
    assert!(res.header("strict-transport-security").is_empty());
    assert_eq!(b.get("/").await.status, 200);
}

#[tokio::test]
async fn no_page_or_export_contains_a_stored_secret() {
    let t = TestAdmin::start().await;
    let admin = t.admin().await;
    // An update with new secrets, and rows in every table the pages read.
    let res = admin
        .submit(
            &format!("/apps/{APP}/edit"),
            &format!("/apps/{APP}/edit"),
            &[
                ("name", "Photo app"),
                ("enabled", "on"),
                ("region", "ap-guangzhou"),
                ("bucket", "examplebucket-1250000000"),
                ("mode", "assume_role"),
                ("role_arn", "qcs::cam::uin/100000000001:roleName/stsgate"),
                ("external_id", "ext-1"),
                ("secret_id", ""),
                ("secret_key", "SecondSecretKeyValue0987654321"),
                ("duration_default", "900"),
                ("duration_max", "3600"),
                ("min_remaining", "60"),
                ("rate_subject_per_minute", "10"),
                ("rate_app_per_second", "5"),
            ],
        )
        .await;
    assert_eq!(res.status, 303, "{}", res.body);
    let res = admin
        .submit(
            &format!("/apps/{APP}/jwt"),
            &format!("/apps/{APP}/jwt"),
            &[
                ("issuer", "https://idp.example.test"),
                ("audiences", "photos-mobile"),
                ("algorithms", "HS256"),
                ("hs_secret", "another-hs-secret-that-is-long-enough-xyz"),
                ("public_keys", ""),
                ("jwks_url", ""),
                ("user_claim", "sub"),
                ("leeway_seconds", "30"),
            ],
        )
        .await;
    assert_eq!(res.status, 303, "{}", res.body);
    let app = t.store.app_by_slug(APP).await.unwrap().unwrap();
    assert_eq!(
        app.secret_id, SECRET_ID,
        "an empty SecretId keeps the stored one"
    );
    use secrecy::ExposeSecret;
    assert_eq!(
        app.secret_key.expose_secret(),
        "SecondSecretKeyValue0987654321"
    );
    t.store
        .insert_issuance_batch(&[IssuanceRecord {
            id: 0,
            at: OffsetDateTime::now_utc(),
            app: APP.into(),
            subject: Some("alice".into()),
            outcome: Outcome::Issued,
            http_status: 200,
            error_code: None,
            request_id: "req-1".into(),
            sts_request_id: Some("sts-1".into()),
            tmp_secret_id: Some("AKIDtmpTemporaryId0001".into()),
            policy_hash: Some("ab".repeat(32)),
            template_version: Some(1),
            actions: vec!["name/cos:PutObject".into()],
            prefix: Some("users/alice/".into()),
            duration_seconds: Some(900),
            expired_time: Some(OffsetDateTime::now_utc() + time::Duration::minutes(15)),
            source_ip: Some("10.0.0.1".into()),
            user_agent: Some("okhttp".into()),
            latency_us: 1234,
            count: 1,
        }])
        .await
        .unwrap();
    t.store
        .block_subject("root", t.app_id, "alice", Some("test"))
        .await
        .unwrap();

    let secrets = [
        SECRET_KEY,
        "SecondSecretKeyValue0987654321",
        HS_SECRET,
        "another-hs-secret-that-is-long-enough-xyz",
        SECRET_ID,
        ADMIN_PASSWORD,
        AUDITOR_PASSWORD,
    ];
    let hashes: Vec<String> = sqlx::query_scalar("SELECT password_hash FROM admin_users")
        .fetch_all(&t.db.pool)
        .await
        .unwrap();
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT secret_key_enc FROM apps UNION ALL SELECT hs_secret_enc FROM app_auth",
    )
    .fetch_all(&t.db.pool)
    .await
    .unwrap();
    let auditor = t.auditor().await;
    let mut pages = 0;
    for b in [&admin, &auditor] {
        for route in ROUTES
            .iter()
            .filter(|r| r.method == RouteMethod::Get && !r.is_api())
        {
            let path = concrete(route.path, APP, t.auditor_id);
            for p in [path.clone(), format!("{path}?version=1")] {
                let res = b.get(&p).await;
                if res.status != 200 {
                    continue;
                }
                pages += 1;
                for s in secrets
                    .iter()
                    .map(|s| s.to_string())
                    .chain(hashes.clone())
                    .chain(stored.clone())
                {
                    assert!(!res.body.contains(&s), "{p} shows a secret");
                }
            }
        }
        for p in [
            "/log/export.csv",
            "/log/export.json",
            "/changes?target=photos",
        ] {
            let res = b.get(p).await;
            assert_eq!(res.status, 200);
            assert!(res.body.contains("alice") || p.starts_with("/changes"));
            for s in secrets.iter().map(|s| s.to_string()).chain(hashes.clone()) {
                assert!(!res.body.contains(&s), "{p} shows a secret");
            }
        }
    }
    assert!(pages > 30, "checked {pages} pages");
    // The masked SecretId is what the pages show.
    let res = admin.get(&format!("/apps/{APP}")).await;
    assert!(res.body.contains(&policy_store::mask_secret_id(SECRET_ID)));
    let edit = admin.get(&format!("/apps/{APP}/edit")).await;
    assert!(edit.body.contains("leave empty to keep"));
}

/// The AssumeRole ExternalId guards the role against a confused deputy: an auditor never sees
/// it in full, on any page or export they can fetch or in the change log's before/after; an
/// admin still reads and keeps it through the edit form.
#[tokio::test]
async fn auditors_never_see_an_external_id() {
    const FIRST: &str = "ext-3f9c2a7be14d5086-first";
    const SECOND: &str = "ext-b71e0d94c63a2f58-second";
    let t = TestAdmin::start().await;
    let admin = t.admin().await;
    let edit = format!("/apps/{APP}/edit");
    let form = |external_id: &'static str| {
        [
            ("name", "Photo app"),
            ("enabled", "on"),
            ("region", "ap-guangzhou"),
            ("bucket", "examplebucket-1250000000"),
            ("mode", "assume_role"),
            ("role_arn", "qcs::cam::uin/100000000001:roleName/stsgate"),
            ("external_id", external_id),
            ("secret_id", ""),
            ("secret_key", ""),
            ("duration_default", "900"),
            ("duration_max", "3600"),
            ("min_remaining", ""),
            ("rate_subject_per_minute", "10"),
            ("rate_app_per_second", "5"),
        ]
    };
    // Set, then change it: the change log holds both, before and after.
    for id in [FIRST, SECOND] {
        let res = admin.submit(&edit, &edit, &form(id)).await;
        assert_eq!(res.status, 303, "{}", res.body);
    }
    let stored = t.store.app_by_slug(APP).await.unwrap().unwrap();
    assert_eq!(stored.external_id.as_deref(), Some(SECOND));

    let auditor = t.auditor().await;
    let mut paths: Vec<String> = ROUTES
        .iter()
        .filter(|r| r.method == RouteMethod::Get && r.access != Access::Admin && !r.is_api())
        .map(|r| concrete(r.path, APP, t.auditor_id))
        .collect();
    paths.extend(
        [
            "/changes",
            "/changes?target=photos",
            "/changes?action=app.update",
            "/log/export.csv",
            "/log/export.json",
        ]
        .map(String::from),
    );
    let mut fetched = 0;
    for p in &paths {
        let res = auditor.get(p).await;
        if res.status != 200 {
            continue;
        }
        fetched += 1;
        for id in [FIRST, SECOND] {
            // Nor any long stretch of it (a mask shows four characters at most).
            for part in [id, &id[4..16], &id[8..20]] {
                assert!(!res.body.contains(part), "{p} shows the ExternalId: {part}");
            }
        }
    }
    assert!(fetched >= 10, "fetched {fetched} pages");
    let page = auditor.get(&format!("/apps/{APP}")).await;
    assert!(
        page.body.contains("ExternalId <code>…cond</code>"),
        "masked"
    );
    let changes = auditor.get("/changes?target=photos").await;
    assert!(changes.body.contains("…irst") && changes.body.contains("…cond"));
    // The edit form is the admin's alone.
    assert_eq!(auditor.get(&edit).await.status, 403);

    // The admin's form still shows it and a save without touching it keeps it.
    let page = admin.get(&edit).await;
    let marker = "name=\"external_id\" value=\"";
    let start = page.body.find(marker).expect("an ExternalId field") + marker.len();
    let shown = &page.body[start..start + page.body[start..].find('"').unwrap()];
    assert_eq!(shown, SECOND);
    let res = admin.submit(&edit, &edit, &form(SECOND)).await;
    assert_eq!(res.status, 303, "{}", res.body);
    let stored = t.store.app_by_slug(APP).await.unwrap().unwrap();
    assert_eq!(stored.external_id.as_deref(), Some(SECOND));
}
