//! What a first-time operator meets: refused dangerous settings, errors on the right field
//! and all at once, confirmations without JavaScript, exact subjects, the log's
//! troubleshooting aids, time zones, and the integration card and token test.

use policy_store::{
    AdminPrefsStore, AppStore, ChangeLogStore, IssuanceRecord, IssuanceStore, Outcome,
    SubjectStore, TemplateStore,
};
use time::OffsetDateTime;

use crate::support::*;

/// A two-statement draft whose second statement grants `resource`.
fn draft<'a>(
    csrf: &'a str,
    resource: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![
        ("csrf", csrf),
        ("statement_count", "2"),
        ("prefix", "users/${sub}/"),
        ("st0_effect", "allow"),
        ("st0_actions", "name/cos:GetObject"),
        ("st0_resources", "users/${sub}/*"),
        ("st1_effect", "allow"),
        ("st1_actions", "name/cos:GetObject"),
        ("st1_resources", resource),
        ("note", "with a shared statement"),
    ];
    form.extend_from_slice(extra);
    form
}

#[tokio::test]
async fn a_grant_beyond_the_home_prefix_needs_a_shared_mark_and_is_flagged() {
    let t = TestAdmin::start().await;
    let admin = t.admin().await;
    let path = format!("/apps/{APP}/policy");
    let csrf = admin.get(&path).await.csrf();

    // `*` saves nothing, and says why on the resource.
    let mut save = draft(&csrf, "*", &[]);
    save.push(("op", "save"));
    let res = admin.post(&path, &save).await;
    assert_eq!(res.status, 422);
    assert!(
        res.body
            .contains("line 1 “*”: this is outside the user&#39;s home prefix users/${sub}/"),
        "{}",
        res.body
    );
    assert_eq!(t.store.template_versions(t.app_id).await.unwrap().len(), 1);

    // The live preview carries the same error for the script to mark the field at once.
    let res = admin
        .post(&format!("{path}/preview"), &draft(&csrf, "*", &[]))
        .await;
    assert!(
        res.body.contains("data-field=\"st1_resources\""),
        "{}",
        res.body
    );
    assert!(
        res.body
            .contains("Statement 2, resource 1: this is outside")
    );
    // Conditions that are not JSON are marked live too (no Save needed).
    let res = admin
        .post(
            &format!("{path}/preview"),
            &draft(&csrf, "users/${sub}/x", &[("st1_conditions", "{nope")]),
        )
        .await;
    assert!(
        res.body.contains("data-field=\"st1_conditions\""),
        "{}",
        res.body
    );

    // Marked without a reason: refused on the reason.
    let mut save = draft(
        &csrf,
        "*",
        &[("st1_shared", "on"), ("st1_shared_reason", "")],
    );
    save.push(("op", "save"));
    let res = admin.post(&path, &save).await;
    assert_eq!(res.status, 422);
    assert!(res.body.contains("say why every user of the app may reach"));

    // Marked with a reason: saved; the reason is in the version and the change log.
    let mut save = draft(
        &csrf,
        "*",
        &[
            ("st1_shared", "on"),
            ("st1_shared_reason", "public catalogue"),
        ],
    );
    save.push(("op", "save"));
    let res = admin.post(&path, &save).await;
    assert_eq!(res.status, 303, "{}", res.body);
    let active = t.store.active_template(t.app_id).await.unwrap().unwrap();
    assert_eq!(
        active.document.statements[1]
            .shared
            .as_ref()
            .unwrap()
            .reason,
        "public catalogue"
    );
    let change = t.store.admin_changes(None, 1).await.unwrap().remove(0);
    assert_eq!(change.after.as_ref().unwrap()["active_version"], 2);
    assert_eq!(
        change.after.unwrap()["shared"][0]["reason"],
        "public catalogue"
    );

    // The preview flags the shared statement, and the versions page says so.
    let res = admin
        .post(
            &format!("{path}/preview"),
            &draft(
                &csrf,
                "*",
                &[
                    ("st1_shared", "on"),
                    ("st1_shared_reason", "public catalogue"),
                    ("preview_input", "{\"sub\": \"alice\"}"),
                ],
            ),
        )
        .await;
    assert!(
        res.body
            .contains("Statement 2 is shared by every user: public catalogue"),
        "{}",
        res.body
    );
    assert!(res.body.contains("every user</span>"));
    let versions = admin.get(&format!("{path}/versions")).await;
    assert!(versions.body.contains("shared by every user"));
    assert!(
        versions
            .body
            .contains("Statement 2 is shared by every user: public catalogue")
    );
    assert!(
        versions.body.contains("own prefix only"),
        "v1 stays in the user's prefix"
    );

    // The change log shows the real new active version, not "cleared".
    let log = admin.get("/changes?action=template.save").await;
    assert!(log.body.contains("Policy saved"));
    assert!(log.body.contains("<th>active_version</th><td class=\"del\">1</td><td class=\"arrow\">→</td><td class=\"add\">2</td>"), "{}", log.body);

    // The diff has one line per line (no doubled blank lines).
    let diff = admin.get(&format!("{path}/diff?from=1&to=2")).await;
    assert!(
        !diff.body.contains("</span>\n<span"),
        "lines are blocks already"
    );

    // Auditors may try the active policy (read-only).
    let auditor = t.auditor().await;
    let page = auditor.get(&format!("{path}/try")).await;
    assert_eq!(page.status, 200);
    let csrf_a = page.csrf();
    let res = auditor
        .post(
            &format!("{path}/try"),
            &[("csrf", &csrf_a), ("preview_input", "{\"sub\": \"bob\"}")],
        )
        .await;
    assert_eq!(res.status, 200);
    assert!(res.body.contains("users/bob/"), "{}", res.body);
    assert!(res.body.contains("Statement 2 is shared by every user"));
}

#[tokio::test]
async fn the_app_form_shows_every_error_at_once_in_plain_words() {
    let t = TestAdmin::start().await;
    let admin = t.admin().await;
    let form = [
        ("slug", "media"),
        ("name", "   "),
        ("region", "ap-shanghai"),
        ("bucket", "mediabucket"),
        ("mode", "federation_token"),
        ("secret_id", "AKIDmediaSecretId000000000001"),
        ("secret_key", "media-secret-key-value-000000"),
        ("duration_default", "1800"),
        ("duration_max", "abc"),
        ("min_remaining", ""),
        ("rate_subject_per_minute", "30"),
        ("rate_app_per_second", "1000"),
        ("enabled", "on"),
    ];
    let res = admin.submit("/apps/_new", "/apps/_new", &form).await;
    assert_eq!(res.status, 422);
    for message in [
        "enter a whole number (digits only)",
        "give the app a name",
        "add the APPID",
        "at most 600",
    ] {
        assert!(res.body.contains(message), "{message}:\n{}", res.body);
    }
    assert!(!res.body.contains("duration_max:"));
    assert!(!res.body.contains('`'));
}

#[tokio::test]
async fn jwt_settings_put_errors_on_the_field_to_change_and_test_tokens() {
    let t = TestAdmin::start().await;
    let admin = t.admin().await;
    // A new app's JWT page ticks no algorithm.
    let mut input = policy_store::testing::SeedApp::new("fresh").app_input();
    input.slug = "fresh".into();
    t.store.create_app("root", &input).await.unwrap();
    let page = admin.get("/apps/fresh/jwt").await;
    assert!(
        !page.body.contains(" checked>"),
        "nothing ticked by default"
    );

    // RS256 and HS256 ticked, no key, no issuer: errors on algorithms, issuer, audiences,
    // and a note that the typed HS secret must be typed again.
    let csrf = page.csrf();
    let res = admin
        .post(
            "/apps/fresh/jwt",
            &[
                ("csrf", &csrf),
                ("issuer", ""),
                ("audiences", ""),
                ("algorithms", "HS256"),
                ("algorithms", "RS256"),
                ("hs_secret", "hs-secret-that-is-long-enough-0123456789abc"),
                ("public_keys", ""),
                ("jwks_url", ""),
                ("user_claim", "sub"),
                ("leeway_seconds", "60"),
            ],
        )
        .await;
    assert_eq!(res.status, 422);
    let b = &res.body;
    let algorithms = b.find("Allowed algorithms").unwrap();
    let keys = b.find("<legend>Keys</legend>").unwrap();
    let on_algorithms = &b[algorithms..keys];
    assert!(
        on_algorithms
            .contains("RS256 is allowed, so paste a public key or set a JWKS URL: untick it"),
        "{on_algorithms}"
    );
    let claims = &b[..algorithms];
    assert!(
        claims.contains("the identity provider&#39;s issuer"),
        "{claims}"
    );
    assert!(claims.contains("at least one audience"));
    assert!(b.contains("id=\"hs-secret-dropped\""));
    assert!(!b.contains("hs-secret-that-is-long-enough"));

    // The token test: a verdict, never the token again, limited per session.
    let page = admin.get(&format!("/apps/{APP}/jwt")).await;
    let csrf = page.csrf();
    let good = "good.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW5ldmVyLXNob3du";
    let res = admin
        .post(
            &format!("/apps/{APP}/jwt/test"),
            &[("csrf", &csrf), ("token", good)],
        )
        .await;
    assert_eq!(res.status, 200);
    assert!(res.body.contains("This token would get credentials."));
    assert!(res.body.contains("users/alice/"));
    assert!(
        !res.body.contains("c2lnbmF0dXJlLW5ldmVyLXNob3du"),
        "the token is not echoed"
    );
    let res = admin
        .post(
            &format!("/apps/{APP}/jwt/test"),
            &[("csrf", &csrf), ("token", "Bearer bad.e30.c2ln")],
        )
        .await;
    assert!(
        res.body
            .contains("This token would be refused: 401 invalid_token:wrong_audience.")
    );
    assert!(res.body.contains("audience is “other”"));
    let before = t.audit_rows().await;
    let mut limited = false;
    for _ in 0..12 {
        let res = admin
            .post(
                &format!("/apps/{APP}/jwt/test"),
                &[("csrf", &csrf), ("token", good)],
            )
            .await;
        if res.status == 429 {
            assert!(res.body.contains("Too many token tests from this session"));
            limited = true;
            break;
        }
    }
    assert!(limited, "tests are limited per session");
    // Another session has its own allowance; nothing was written anywhere.
    let other = t.admin().await;
    let csrf2 = other.get(&format!("/apps/{APP}/jwt")).await.csrf();
    let res = other
        .post(
            &format!("/apps/{APP}/jwt/test"),
            &[("csrf", &csrf2), ("token", good)],
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(t.audit_rows().await, before);
    let rows = t
        .store
        .search_issuance(&Default::default(), None, 10)
        .await
        .unwrap();
    assert!(rows.is_empty(), "a token test writes no issuance row");
}

#[tokio::test]
async fn blocking_asks_first_and_keeps_subjects_and_reasons_exact() {
    let t = TestAdmin::start().await;
    let admin = t.admin().await;
    // The block form asks first (a GET page), showing the surrounding spaces.
    let page = admin
        .get(&format!(
            "/apps/{APP}/blocks/confirm?subject=+alice+&reason=abuse"
        ))
        .await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("<span class=\"mark\" title=\"a space\">␣</span>alice<span class=\"mark\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("(7 characters)"));
    assert!(
        !t.store.is_blocked(t.app_id, " alice ").await.unwrap(),
        "asking changes nothing"
    );
    let csrf = page.csrf();
    let key = "IGFsaWNlIA"; // base64url(" alice ")
    assert!(page.body.contains(key));
    let res = admin
        .post(
            &format!("/apps/{APP}/blocks"),
            &[("csrf", &csrf), ("subject_b64", key), ("reason", "abuse")],
        )
        .await;
    assert_eq!(res.status, 303);
    assert_eq!(
        res.header("location"),
        format!("/apps/{APP}/blocks?notice=blocked")
    );
    assert!(t.store.is_blocked(t.app_id, " alice ").await.unwrap());
    assert!(!t.store.is_blocked(t.app_id, "alice").await.unwrap());

    // Blocking again without a reason keeps it, and says so.
    let res = admin
        .post(
            &format!("/apps/{APP}/blocks"),
            &[("csrf", &csrf), ("subject_b64", key)],
        )
        .await;
    assert_eq!(
        res.header("location"),
        format!("/apps/{APP}/blocks?notice=already_blocked")
    );
    let list = admin
        .get(&format!("/apps/{APP}/blocks?notice=already_blocked"))
        .await;
    assert!(
        list.body
            .contains("already blocked; its reason is unchanged")
    );
    assert!(list.body.contains("<td>abuse</td>"));
    assert_eq!(
        t.store.blocked_subjects(t.app_id).await.unwrap()[0]
            .reason
            .as_deref(),
        Some("abuse")
    );

    // Unblocking asks first too, then acts on the exact subject.
    assert!(
        list.body
            .contains(&format!("/apps/{APP}/blocks/remove?subject_b64={key}"))
    );
    let page = admin
        .get(&format!("/apps/{APP}/blocks/remove?subject_b64={key}"))
        .await;
    assert!(page.body.contains("Unblock this subject"));
    assert!(t.store.is_blocked(t.app_id, " alice ").await.unwrap());
    let res = admin
        .post(
            &format!("/apps/{APP}/blocks/remove"),
            &[("csrf", &page.csrf()), ("subject_b64", key)],
        )
        .await;
    assert_eq!(res.status, 303);
    assert!(!t.store.is_blocked(t.app_id, " alice ").await.unwrap());
}

#[tokio::test]
async fn user_changes_ask_first_and_auditors_are_not_sent_to_an_admin() {
    let t = TestAdmin::start().await;
    let admin = t.admin().await;
    let users = admin.get("/users").await;
    assert!(
        users
            .body
            .contains(&format!("/users/{}/password", t.auditor_id))
    );
    assert!(
        users
            .body
            .contains(&format!("/users/{}/disabled", t.auditor_id))
    );
    assert!(!users.body.contains("type=\"password\" name=\"password\" autocomplete=\"new-password\" minlength=\"12\" required placeholder"));
    let page = admin
        .get(&format!("/users/{}/disabled", t.auditor_id))
        .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Disable audrey"));
    assert!(page.body.contains("signed out everywhere"));
    let page = admin
        .get(&format!("/users/{}/password", t.auditor_id))
        .await;
    assert!(page.body.contains("Reset the password"));
    assert!(
        page.body
            .contains("ends every session of <strong>audrey</strong>")
    );
    // Nothing changed by asking.
    let audrey = policy_store::AdminUserStore::admin_user_by_id(&*t.store, t.auditor_id)
        .await
        .unwrap()
        .unwrap();
    assert!(!audrey.disabled);

    let auditor = t.auditor().await;
    let page = auditor.get("/users").await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("Ask an admin"));
    assert!(!page.body.contains("root"), "no user list for auditors");
    assert!(page.body.contains("/account"));
}

async fn log_rows(t: &TestAdmin, rows: &[(&str, &str, Outcome, Option<&str>)]) {
    let now = OffsetDateTime::now_utc();
    let records: Vec<IssuanceRecord> = rows
        .iter()
        .enumerate()
        .map(|(i, (app, subject, outcome, error))| IssuanceRecord {
            id: 0,
            at: now - time::Duration::seconds(i as i64),
            app: (*app).into(),
            subject: Some((*subject).into()),
            outcome: *outcome,
            http_status: if *outcome == Outcome::Issued {
                200
            } else {
                401
            },
            error_code: error.map(str::to_owned),
            request_id: format!("req-{i}"),
            sts_request_id: None,
            tmp_secret_id: None,
            policy_hash: None,
            template_version: None,
            actions: Vec::new(),
            prefix: None,
            duration_seconds: None,
            expired_time: None,
            source_ip: Some("10.0.0.1".into()),
            user_agent: None,
            latency_us: 100,
            count: 1,
        })
        .collect();
    t.store.insert_issuance_batch(&records).await.unwrap();
}

#[tokio::test]
async fn the_log_counts_matches_searches_by_prefix_and_links_subjects() {
    let t = TestAdmin::start().await;
    log_rows(
        &t,
        &[
            (APP, "alice", Outcome::Issued, None),
            (APP, "alice2", Outcome::Issued, None),
            (
                APP,
                "bob",
                Outcome::InvalidToken,
                Some("invalid_token:wrong_audience aud=\"other\" iss=\"https://idp\" alg=HS256"),
            ),
            (
                "_unknown",
                "x",
                Outcome::BadRequest,
                Some("unknown_app:nope"),
            ),
        ],
    )
    .await;
    let admin = t.admin().await;
    let page = admin.get("/log?subject=alice").await;
    assert!(page.body.contains("1 matching request<"), "{}", page.body);
    assert!(!page.body.contains("tick “starts with this”"));
    let page = admin.get("/log?subject=ali&starts=on").await;
    assert!(page.body.contains("2 matching requests"));
    let page = admin.get("/log?subject=ali").await;
    assert!(
        page.body.contains("tick “starts with this”"),
        "the hint when exact finds nothing"
    );
    // Subjects link to their own filter and (for admins) to blocking them.
    let page = admin.get("/log").await;
    assert!(page.body.contains("4 matching requests"));
    assert!(page.body.contains("href=\"/log?subject=bob\""));
    assert!(
        page.body
            .contains(&format!("/apps/{APP}/blocks/confirm?subject_b64=Ym9i"))
    );
    // What arrived in a refused token is shown.
    assert!(
        page.body.contains("aud=&#34;other&#34;") || page.body.contains("aud=&quot;other&quot;"),
        "{}",
        page.body
    );
    // The dashboard's _unknown link keeps its filter visible.
    let page = admin.get("/log?app=_unknown").await;
    assert!(page.body.contains(
        "<option value=\"_unknown\" selected>_unknown (names of apps that do not exist)</option>"
    ));
    assert!(page.body.contains("1 matching request<"));
    // From after To is said, not silently empty.
    let page = admin
        .get("/log?from=2024-05-02T00%3A00&to=2024-05-01T00%3A00")
        .await;
    assert!(page.body.contains("From is after To"));
    // Auditors get the filter links but no block links.
    let auditor = t.auditor().await;
    let page = auditor.get("/log").await;
    assert!(page.body.contains("href=\"/log?subject=bob\""));
    assert!(!page.body.contains("blocks/confirm"));
}

#[tokio::test]
async fn times_follow_each_users_zone_and_the_dashboard_offers_windows() {
    let t = TestAdmin::start().await;
    let admin = t.admin().await;
    let page = admin.get("/account").await;
    assert!(page.body.contains("times in UTC"));
    let csrf = page.csrf();
    let res = admin
        .post(
            "/account",
            &[("csrf", &csrf), ("display_timezone", "Mars/Base")],
        )
        .await;
    assert_eq!(res.status, 422);
    assert!(res.body.contains("Not a time zone this server knows"));
    let res = admin
        .post(
            "/account",
            &[("csrf", &csrf), ("display_timezone", "Asia/Shanghai")],
        )
        .await;
    assert_eq!(res.status, 303);
    assert_eq!(
        t.store
            .admin_display_timezone(t.admin_id)
            .await
            .unwrap()
            .as_deref(),
        Some("Asia/Shanghai")
    );
    let page = admin.get("/changes").await;
    assert!(page.body.contains("times in Asia/Shanghai"));
    assert!(
        page.body.contains("+08:00"),
        "times carry the zone's offset"
    );
    assert!(page.body.contains("From (Asia/Shanghai)"));
    // Another user keeps UTC.
    let auditor = t.auditor().await;
    assert!(auditor.get("/changes").await.body.contains("times in UTC"));

    for (window, label) in [("1h", "last 1 h"), ("24h", "last 24 h"), ("7d", "last 7 d")] {
        let page = admin.get(&format!("/?window={window}")).await;
        assert!(page.body.contains(label), "{window}");
        assert!(
            page.body
                .contains(&format!("href=\"/?window={window}\" aria-current=\"page\""))
        );
    }
}

#[tokio::test]
async fn the_app_page_has_an_integration_card_without_secrets() {
    let t = TestAdmin::start().await;
    let admin = t.admin().await;
    let page = admin.get(&format!("/apps/{APP}")).await;
    assert!(page.body.contains("Integration: what to hand the app"));
    assert!(
        page.body
            .contains(&format!("https://YOUR-GATEWAY/v1/apps/{APP}/credentials"))
    );
    assert!(page.body.contains("iss: exactly https://idp.example.test"));
    assert!(page.body.contains("aud: one of photos-mobile"));
    assert!(page.body.contains("format=cos-js"));
    assert!(page.body.contains("CosS3Client"));
    assert!(
        page.body.contains("data-copy=\"int-curl\" hidden"),
        "copy buttons need the script"
    );
    for secret in [SECRET_KEY, HS_SECRET] {
        assert!(!page.body.contains(secret));
    }
    let _ = t.store.app_by_slug(APP).await.unwrap();
}
