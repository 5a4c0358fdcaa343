//! The core path: who gets what, caching, single-flight, narrowing, formats, kill switches.

use std::collections::HashSet;

use policy_store::{AppStore, Outcome, SubjectStore, TemplateDocument, TemplateStore};
use serde_json::Value;

use crate::support::*;

fn resources(policy: &Value) -> Vec<String> {
    policy["statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["resource"].as_array().unwrap().iter())
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

fn actions(policy: &Value) -> HashSet<String> {
    policy["statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["action"].as_array().unwrap().iter())
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_gets_credentials_for_her_prefix_only() {
    let app = TestApp::spawn().await;
    let res = app.credentials("alice", "").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    let creds = &body["credentials"];
    let tmp_id = creds["tmpSecretId"].as_str().unwrap();
    assert!(tmp_id.starts_with("AKID"));
    assert!(!creds["tmpSecretKey"].as_str().unwrap().is_empty());
    assert!(!creds["sessionToken"].as_str().unwrap().is_empty());
    assert_eq!(body["bucket"], BUCKET);
    assert_eq!(body["region"], REGION);
    assert_eq!(body["prefix"], "users/alice/");
    let start = body["startTime"].as_i64().unwrap();
    assert!(
        (start - now()).abs() <= 5,
        "startTime is the gateway's clock"
    );
    // STS's clock sets expiredTime; a second may tick between minting and STS's answer.
    let lifetime = body["expiredTime"].as_i64().unwrap() - start;
    assert!((1800..=1801).contains(&lifetime), "{lifetime}");

    // What STS was asked for, as the emulator recorded it: only alice's prefix.
    let issued = app
        .emulator
        .credential(tmp_id)
        .expect("the emulator issued it");
    assert_eq!(issued.request_id, body["requestId"]);
    let policy = issued.policy.unwrap();
    let res = resources(&policy);
    assert!(!res.is_empty());
    for r in &res {
        assert_eq!(
            r,
            &format!("qcs::cos:{REGION}:uid/{APPID}:{BUCKET}/users/alice/*"),
            "{policy}"
        );
    }
    assert!(policy.to_string().find("principal").is_none());
    app.shutdown().await;
}

/// `prefix` is a path inside the caller's own home (DESIGN §3): one naming another user's
/// home is read relative to bob's (and served there), one that climbs out is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bobs_token_never_yields_alices_prefix() {
    let app = TestApp::spawn().await;
    for (query, expected) in [
        ("", Some("users/bob/")),
        ("prefix=../alice/", None),
        ("prefix=users/alice/", Some("users/bob/users/alice/")),
        ("prefix=/users/alice/x/", Some("users/bob/users/alice/x/")),
        // Bob's own home, named in full, is bob's home.
        ("prefix=users/bob/", Some("users/bob/")),
    ] {
        let res = app.credentials("bob", query).await;
        let Some(prefix) = expected else {
            assert_eq!(res.status(), 422, "{query}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "invalid_request", "{query}");
            continue;
        };
        assert_eq!(res.status(), 200, "{query}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["prefix"], prefix, "{query}");
        let issued = app
            .emulator
            .credential(body["credentials"]["tmpSecretId"].as_str().unwrap())
            .unwrap();
        let home = format!("qcs::cos:{REGION}:uid/{APPID}:{BUCKET}/{prefix}");
        let resources = resources(&issued.policy.unwrap());
        assert!(!resources.is_empty());
        for r in resources {
            assert!(r.starts_with(&home), "{query}: {r}");
        }
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_credential_is_reused() {
    let app = TestApp::spawn().await;
    let first: Value = app.credentials("alice", "").await.json().await.unwrap();
    let second: Value = app.credentials("alice", "").await.json().await.unwrap();
    assert_eq!(first["credentials"], second["credentials"]);
    assert_eq!(first["startTime"], second["startTime"]);
    assert_eq!(app.emulator.stats().issued, 1);
    // Another duration is another credential.
    let third: Value = app
        .credentials("alice", "duration_seconds=900")
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(
        first["credentials"]["tmpSecretId"],
        third["credentials"]["tmpSecretId"]
    );
    assert_eq!(
        app.outcomes().await,
        [Outcome::Issued, Outcome::Cached, Outcome::Issued]
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_identical_requests_make_one_sts_call() {
    let app = TestApp::spawn().await;
    let answers = app.credentials_at_once(vec![app.token("carol"); 50]).await;
    let mut ids = HashSet::new();
    for (status, body) in answers {
        assert_eq!(status, 200, "{body}");
        ids.insert(
            body["credentials"]["tmpSecretId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(ids.len(), 1, "everyone got the same credential");
    assert_eq!(app.emulator.stats().requests, 1, "one STS call");
    let rows = app.log_rows().await;
    assert_eq!(rows.len(), 50);
    assert_eq!(
        rows.iter().filter(|r| r.outcome == Outcome::Issued).count(),
        1
    );
    assert_eq!(
        rows.iter().filter(|r| r.outcome == Outcome::Cached).count(),
        49
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_change_takes_effect_on_the_next_request() {
    let app = TestApp::spawn().await;
    let before: Value = app.credentials("alice", "").await.json().await.unwrap();
    let mut doc = TemplateDocument::default_for_users();
    doc.prefix = "users/${sub}/docs/".into();
    doc.statements[0].resources = vec!["users/${sub}/docs/*".into()];
    let seen = app.invalidations();
    app.store
        .save_template("admin", app.app_id, &doc, Some("docs only"))
        .await
        .unwrap();
    app.wait_for_invalidations(seen + 1).await;

    let after: Value = app.credentials("alice", "").await.json().await.unwrap();
    assert_ne!(
        before["credentials"]["tmpSecretId"],
        after["credentials"]["tmpSecretId"]
    );
    assert_eq!(after["prefix"], "users/alice/docs/");
    let issued = app
        .emulator
        .credential(after["credentials"]["tmpSecretId"].as_str().unwrap())
        .unwrap();
    assert!(
        resources(&issued.policy.unwrap())
            .iter()
            .all(|r| r.ends_with("/users/alice/docs/*"))
    );
    let rows = app.log_rows().await;
    assert_eq!(rows[0].template_version, Some(2));
    assert_eq!(rows[1].template_version, Some(1));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_and_a_disable_take_effect_on_the_next_request() {
    let app = TestApp::spawn().await;
    assert_eq!(app.credentials("mallory", "").await.status(), 200);
    let seen = app.invalidations();
    app.store
        .block_subject("admin", app.app_id, "mallory", Some("abuse"))
        .await
        .unwrap();
    app.wait_for_invalidations(seen + 1).await;
    let res = app.credentials("mallory", "").await;
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "subject_blocked");
    assert!(body["credentials"].is_null());
    // Others are unaffected.
    assert_eq!(app.credentials("alice", "").await.status(), 200);

    let seen = app.invalidations();
    app.store
        .set_app_enabled("admin", app.app_id, false)
        .await
        .unwrap();
    app.wait_for_invalidations(seen + 1).await;
    let res = app.credentials("alice", "").await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "app_disabled"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_narrow_actions_and_prefix_but_never_widen() {
    let app = TestApp::spawn().await;
    let body: Value = app
        .credentials("alice", "actions=PutObject&prefix=photos/2024/")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["prefix"], "users/alice/photos/2024/");
    let policy = app
        .emulator
        .credential(body["credentials"]["tmpSecretId"].as_str().unwrap())
        .unwrap()
        .policy
        .unwrap();
    assert_eq!(
        actions(&policy),
        HashSet::from(["name/cos:PutObject".to_owned()])
    );
    assert!(
        resources(&policy)
            .iter()
            .all(|r| r.ends_with("/users/alice/photos/2024/*"))
    );

    // JSON body options work the same way.
    let res = app
        .http
        .post(format!("{}/v1/apps/{APP}/credentials", app.url))
        .bearer_auth(app.token("alice"))
        .json(&serde_json::json!({"actions": ["name/cos:GetObject"], "duration_seconds": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let lifetime = body["expiredTime"].as_i64().unwrap() - body["startTime"].as_i64().unwrap();
    assert!((600..=601).contains(&lifetime), "{lifetime}");

    let before = app.emulator.stats().requests;
    for query in [
        "actions=DeleteBucket",
        "actions=name/cos:*",
        "prefix=../bob/",
        "prefix=a*",
        "prefix=x/../../bob/",
        "duration_seconds=7201",
        "duration_seconds=0",
        "duration_seconds=soon",
        "format=xml",
        "surprise=1",
    ] {
        let res = app.credentials("alice", query).await;
        assert_eq!(res.status(), 422, "{query}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_request", "{query}");
    }
    assert_eq!(
        app.emulator.stats().requests,
        before,
        "nothing refused reached STS"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_response_formats() {
    let app = TestApp::spawn().await;
    let sdk: Value = app.credentials("alice", "").await.json().await.unwrap();
    let legacy: Value = app
        .credentials("alice", "format=legacy")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(legacy["code"], 0);
    assert_eq!(legacy["codeDesc"], "Success");
    assert_eq!(legacy["data"]["credentials"], sdk["credentials"]);
    assert_eq!(legacy["data"]["expiredTime"], sdk["expiredTime"]);
    let js: Value = app
        .credentials("alice", "format=cos-js")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(js["TmpSecretId"], sdk["credentials"]["tmpSecretId"]);
    assert_eq!(js["TmpSecretKey"], sdk["credentials"]["tmpSecretKey"]);
    assert_eq!(js["SecurityToken"], sdk["credentials"]["sessionToken"]);
    assert_eq!(js["StartTime"], sdk["startTime"]);
    assert_eq!(js["ExpiredTime"], sdk["expiredTime"]);
    // cos-js-sdk-v5 insists on 10-digit seconds.
    assert_eq!(js["ExpiredTime"].as_i64().unwrap().to_string().len(), 10);
    assert_eq!(js["StartTime"].as_i64().unwrap().to_string().len(), 10);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_apps_missing_tokens_and_health() {
    let app = TestApp::spawn().await;
    let res = app
        .get("/v1/apps/nope/credentials", Some(&app.token("alice")))
        .await;
    assert_eq!(res.status(), 404);
    assert!(res.headers().contains_key("x-request-id"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_app");
    assert!(!body["requestId"].as_str().unwrap().is_empty());

    let res = app.get(&format!("/v1/apps/{APP}/credentials"), None).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "missing_token"
    );

    let res = app.get("/no/such/route", None).await;
    assert_eq!(res.status(), 404);
    assert!(res.headers().contains_key("x-request-id"));

    assert_eq!(app.get("/healthz", None).await.status(), 200);
    assert_eq!(app.get("/readyz", None).await.status(), 200);
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("stsgate_requests_total{app=\"_unknown\",outcome=\"bad_request\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("stsgate_requests_total{app=\"photos\",outcome=\"invalid_token\"} 1"),
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    let app = TestApp::spawn_with(Options {
        rate_subject_per_minute: 3,
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(app.credentials("dave", "").await.status(), 200);
    }
    let res = app.credentials("dave", "").await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limited"
    );
    // Per subject: erin is not limited by dave's requests.
    assert_eq!(app.credentials("erin", "").await.status(), 200);
    let rows = app.log_rows().await;
    assert_eq!(
        rows.iter()
            .filter(|r| r.outcome == Outcome::RateLimited)
            .count(),
        1
    );
    app.shutdown().await;

    // Per app: STS calls per second, shared by the cluster (here one replica). Six users at
    // once: the burst is a tenth of the rate, at least one call, and the next token is due
    // half a second later, far longer than the burst takes.
    let app = TestApp::spawn_with(Options {
        rate_app_per_second: 2,
        ..Options::default()
    })
    .await;
    let tokens = (0..6).map(|i| app.token(&format!("user{i}"))).collect();
    let mut statuses: Vec<u16> = app
        .credentials_at_once(tokens)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    statuses.sort();
    assert_eq!(statuses, [200, 429, 429, 429, 429, 429]);
    assert_eq!(
        app.emulator.stats().requests,
        1,
        "only the admitted requests reached STS"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_do_not_spend_the_subjects_rate_limit() {
    let app = TestApp::spawn_with(Options {
        rate_subject_per_minute: 2,
        ..Options::default()
    })
    .await;
    // A bad duration, an action the template does not grant, a prefix that leaves home.
    for query in [
        "duration_seconds=99999",
        "actions=DeleteBucket",
        "prefix=../bob/",
    ] {
        for _ in 0..3 {
            let res = app.credentials("alice", query).await;
            assert_eq!(res.status(), 422, "{query}");
        }
    }
    // A subject the template cannot take is refused every time, never rate limited.
    for _ in 0..3 {
        let res = app.credentials("a/b", "").await;
        assert_eq!(res.status(), 403);
        assert_eq!(
            res.json::<Value>().await.unwrap()["error"]["code"],
            "subject_not_allowed"
        );
    }
    // alice's two tokens are all there.
    assert_eq!(app.credentials("alice", "").await.status(), 200);
    assert_eq!(app.credentials("alice", "").await.status(), 200);
    assert_eq!(app.credentials("alice", "").await.status(), 429);
    let rows = app.log_rows().await;
    assert_eq!(
        rows.iter()
            .filter(|r| r.outcome == Outcome::RateLimited)
            .count(),
        1
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_has_exactly_one_log_row() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    let mut send = |res: reqwest::Response| {
        ids.push(res.headers()["x-request-id"].to_str().unwrap().to_owned());
    };
    send(app.credentials("alice", "").await); // issued
    send(app.credentials("alice", "").await); // cached
    send(app.credentials("../bob", "").await); // denied
    send(
        app.get(&format!("/v1/apps/{APP}/credentials"), Some("garbage"))
            .await,
    ); // invalid token
    send(app.get("/v1/apps/ghost/credentials", Some("x")).await); // unknown app
    send(app.credentials("alice", "format=xml").await); // bad request
    let rows = app.log_rows().await;
    assert_eq!(rows.len(), ids.len());
    for id in &ids {
        assert_eq!(
            rows.iter().filter(|r| &r.request_id == id).count(),
            1,
            "{id}"
        );
    }
    let outcomes: Vec<&str> = rows.iter().rev().map(|r| r.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        [
            "issued",
            "cached",
            "denied",
            "invalid_token",
            "bad_request",
            "bad_request"
        ]
    );
    // A made-up app name stays out of the app column (and the dashboard's rows).
    let unknown = rows.iter().find(|r| r.request_id == ids[4]).unwrap();
    assert_eq!(unknown.app, "_unknown");
    assert_eq!(unknown.error_code.as_deref(), Some("unknown_app:ghost"));
    let issued = &rows[rows.len() - 1];
    assert_eq!(issued.subject.as_deref(), Some("alice"));
    assert!(
        issued
            .tmp_secret_id
            .as_deref()
            .is_some_and(|t| t.starts_with("AKID"))
    );
    assert!(issued.policy_hash.as_deref().is_some_and(|h| h.len() == 64));
    assert!(issued.sts_request_id.is_some());
    assert_eq!(issued.source_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(issued.http_status, 200);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_choose_its_request_id() {
    let app = TestApp::spawn().await;
    let first = app.credentials("alice", "").await;
    let taken = first.headers()["x-request-id"].to_str().unwrap().to_owned();
    let res = app
        .http
        .get(format!("{}/v1/apps/{APP}/credentials", app.url))
        .bearer_auth(app.token("alice"))
        .header("x-request-id", &taken)
        .send()
        .await
        .unwrap();
    assert_ne!(res.headers()["x-request-id"].to_str().unwrap(), taken);
    let rows = app.log_rows().await;
    assert_eq!(rows.iter().filter(|r| r.request_id == taken).count(), 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_the_address_it_added_is_logged() {
    let app = TestApp::spawn_with(Options {
        trust_forwarded_for: true,
        ..Options::default()
    })
    .await;
    let res = app
        .http
        .get(format!("{}/v1/apps/{APP}/credentials", app.url))
        .bearer_auth(app.token("alice"))
        // The client forged the first entry; the proxy appended the real address.
        .header("x-forwarded-for", "6.6.6.6, 203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.log_rows().await[0].source_ip.as_deref(),
        Some("203.0.113.7")
    );
    app.shutdown().await;
}

/// Issue 8 item 6: a proxy that adds its own `X-Forwarded-For` line after the client's. Only
/// the first line used to be read, so the client's forged address was logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_that_adds_a_line_its_address_is_logged() {
    let app = TestApp::spawn_with(Options {
        trust_forwarded_for: true,
        ..Options::default()
    })
    .await;
    let res = app
        .http
        .get(format!("{}/v1/apps/{APP}/credentials", app.url))
        .bearer_auth(app.token("alice"))
        // Two header lines: the client's forged one, then the proxy's.
        .header("x-forwarded-for", "6.6.6.6, 6.6.6.7")
        .header("x-forwarded-for", "198.51.100.9, 203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.log_rows().await[0].source_ip.as_deref(),
        Some("203.0.113.7")
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_without_usable_jwt_settings_is_a_server_problem_not_a_401() {
    let app = TestApp::spawn().await;
    let bare = app
        .store
        .create_app("test", &app_input("bare", &Options::default()))
        .await
        .unwrap();
    app.store
        .save_template(
            "test",
            bare.id,
            &TemplateDocument::default_for_users(),
            None,
        )
        .await
        .unwrap();
    let res = app
        .get("/v1/apps/bare/credentials", Some(&app.token("alice")))
        .await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "app_misconfigured");
    assert_eq!(app.emulator.stats().requests, 0);
    app.shutdown().await;
}

/// A load that read the app before an admin change, but finished after its notification, must
/// not be served (moka's invalidate_all does not stop a load already under way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_racing_a_change_notification_is_not_served() {
    let app = TestApp::spawn().await;
    let pool = app.store.pool().clone();
    // Hold the block-list table so the gateway's app load stops half-way, after reading the
    // app itself (still enabled).
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE blocked_subjects IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let racing = {
        let (http, url, token) = (
            app.http.clone(),
            format!("{}/v1/apps/{APP}/credentials", app.url),
            app.token("alice"),
        );
        tokio::spawn(async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    // Wait until the load is stuck on the lock.
    let mut waiting = false;
    for _ in 0..200 {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE NOT granted \
             AND relation = 'blocked_subjects'::regclass \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if n > 0 {
            waiting = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(waiting, "the app load never reached the block list");
    let seen = app.invalidations();
    app.store
        .set_app_enabled("admin", app.app_id, false)
        .await
        .unwrap();
    app.wait_for_invalidations(seen + 1).await;
    lock.rollback().await.unwrap();

    assert_eq!(racing.await.unwrap(), 403, "the stale load was served");
    let res = app.credentials("alice", "").await;
    assert_eq!(res.status(), 403, "the stale load was cached");
    app.shutdown().await;
}
