//! The admin API (`/api/v1`) over real HTTP against the real database: bearer tokens only,
//! roles from the route table, the pages' validation, secrets write-only, `token:<name>` in
//! the change log, and the issuance log's search and NDJSON export.

use admin::api::auth::issue_token;
use admin::{Access, ROUTES, RouteMethod};
use policy_store::{ApiTokenStore, IssuanceRecord, IssuanceStore, Outcome, Role};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::support::*;

/// A bearer-token client of the API.
struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    fn new(t: &TestAdmin, token: Option<&str>) -> Self {
        Self {
            base: t.url.clone(),
            token: token.map(str::to_owned),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
    async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }
    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }
}

async fn token(t: &TestAdmin, name: &str, role: Role) -> String {
    let issued = issue_token(name, role, None);
    t.store
        .create_api_token("test", &issued.record)
        .await
        .unwrap();
    issued.token.expose_secret().to_owned()
}

fn method(m: RouteMethod) -> reqwest::Method {
    match m {
        RouteMethod::Get => reqwest::Method::GET,
        RouteMethod::Post => reqwest::Method::POST,
        RouteMethod::Put => reqwest::Method::PUT,
        RouteMethod::Patch => reqwest::Method::PATCH,
        RouteMethod::Delete => reqwest::Method::DELETE,
    }
}

fn api_path(path: &str, id: i64) -> String {
    concrete(path, APP, id).replace("{version}", "1")
}

#[tokio::test]
async fn api_routes_take_bearer_tokens_only_with_the_route_tables_roles() {
    let t = TestAdmin::start().await;
    let admin_token = token(&t, "ci", Role::Admin).await;
    let auditor_token = token(&t, "reader", Role::Auditor).await;
    let api_routes: Vec<_> = ROUTES.iter().filter(|r| r.is_api()).collect();
    assert!(api_routes.len() >= 25, "the API is in the route table");
    let public: Vec<_> = api_routes
        .iter()
        .filter(|r| r.access == Access::Public)
        .map(|r| r.path)
        .collect();
    assert_eq!(public, ["/api/v1/openapi.json"]);

    let anon = Api::new(&t, None);
    let forged = Api::new(&t, Some("stsg_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    let auditor = Api::new(&t, Some(&auditor_token));
    let admin = Api::new(&t, Some(&admin_token));
    // A signed-in admin's browser session: cookies never authorize the API.
    let browser = t.admin().await;
    let before = t.audit_rows().await;

    for r in api_routes.iter().filter(|r| r.access != Access::Public) {
        // An id that names no token or user: admin calls that get through answer 404.
        let path = api_path(r.path, 987_654);
        let m = method(r.method);
        let body = Some(json!({}));
        let (status, err) = anon.send(m.clone(), &path, body.clone()).await;
        assert_eq!(status, 401, "anonymous {m} {path}");
        assert_eq!(err["error"]["code"], "missing_token", "{path}");
        assert!(
            err["requestId"].as_str().is_some_and(|id| id.len() > 8),
            "{err}"
        );

        let (status, err) = forged.send(m.clone(), &path, body.clone()).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (401, Some("invalid_token")),
            "{path}"
        );

        let res = match r.method {
            RouteMethod::Get => Some(browser.get(&path).await),
            RouteMethod::Post => Some(browser.post(&path, &[]).await),
            _ => None,
        };
        if let Some(res) = res {
            assert_eq!(res.status, 401, "a session cookie on {m} {path}");
        }

        let (status, err) = auditor.send(m.clone(), &path, body.clone()).await;
        match r.access {
            Access::Admin => {
                assert_eq!(status, 403, "auditor token {m} {path}");
                assert_eq!(err["error"]["code"], "forbidden");
            }
            _ => assert!(
                [200, 404, 422].contains(&status),
                "auditor token {m} {path}: {status} {err}"
            ),
        }
        if r.method == RouteMethod::Get {
            let (status, body) = admin.get(&path).await;
            assert!(
                [200, 404].contains(&status),
                "admin GET {path}: {status} {body}"
            );
        }
    }
    assert_eq!(
        t.audit_rows().await,
        before,
        "refused requests changed nothing"
    );

    // Tokens never open a page.
    for r in ROUTES
        .iter()
        .filter(|r| !r.is_api() && r.access != Access::Public && r.method == RouteMethod::Get)
    {
        let path = concrete(r.path, APP, t.auditor_id);
        let res = admin
            .http
            .get(format!("{}{path}", t.url))
            .bearer_auth(&admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 303, "a token on the page {path}");
    }

    // An unknown API path answers in the API's shape.
    let (status, err) = admin.get("/api/v1/nothing-here").await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn apps_policies_blocks_and_users_through_the_api() {
    let t = TestAdmin::start().await;
    let api = Api::new(&t, Some(&token(&t, "deploy", Role::Admin).await));

    // Validation errors name the fields, as on the pages.
    let (status, err) = api
        .post(
            "/api/v1/apps",
            json!({"slug": "Bad Slug", "name": "", "region": "ap-guangzhou", "bucket": "nope",
                   "mode": "federation_token", "secret_id": "AKIDx", "secret_key": "k",
                   "duration_default": 99999999}),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    let fields: Vec<&str> = err["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    for f in ["slug", "bucket", "duration_default"] {
        assert!(fields.contains(&f), "{f} in {fields:?}");
    }
    let (status, err) = api
        .post("/api/v1/apps", json!({"slug": "x", "sluggo": 1}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(err["error"]["fields"][0]["field"], "sluggo", "{err}");

    let new_key = "second-app-secret-key-EXAMPLE-0123";
    let (status, app) = api
        .post(
            "/api/v1/apps",
            json!({"slug": "videos", "name": "Videos", "region": "ap-shanghai",
                   "bucket": "videos-1250000000", "mode": "federation_token",
                   "secret_id": "AKIDvideosEXAMPLEEXAMPLE0001", "secret_key": new_key}),
        )
        .await;
    assert_eq!(status, 201, "{app}");
    assert_eq!(app["duration_default"], 1800);
    let (status, _) = api
        .post(
            "/api/v1/apps",
            json!({"slug": "videos", "name": "V", "region": "ap-shanghai",
            "bucket": "videos-1250000000", "mode": "federation_token",
            "secret_id": "AKIDvideosEXAMPLEEXAMPLE0001", "secret_key": new_key}),
        )
        .await;
    assert_eq!(status, 409);

    let (status, app) = api
        .patch(
            "/api/v1/apps/videos",
            json!({"duration_max": 3600, "name": "Videos 2"}),
        )
        .await;
    assert_eq!(status, 200, "{app}");
    assert_eq!(
        (app["duration_max"].as_i64(), app["name"].as_str()),
        (Some(3600), Some("Videos 2"))
    );
    assert_eq!(
        app["region"], "ap-shanghai",
        "fields left out keep their value"
    );
    let (_, app) = api.post("/api/v1/apps/videos/disable", json!({})).await;
    assert_eq!(app["enabled"], false);
    let (_, app) = api.post("/api/v1/apps/videos/enable", json!({})).await;
    assert_eq!(app["enabled"], true);

    let (status, jwt) = api
        .put(
            "/api/v1/apps/videos/jwt",
            json!({"algorithms": ["HS256"], "hs_secret": HS_SECRET, "audiences": ["videos"]}),
        )
        .await;
    assert_eq!(status, 200, "{jwt}");
    assert_eq!(jwt["has_hs_secret"], true);
    let (status, err) = api
        .put(
            "/api/v1/apps/videos/jwt",
            json!({"algorithms": ["HS256"], "hs_secret": "short"}),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["fields"][0]["field"], "hs_secret");

    let doc = json!({"prefix": "users/${sub}/", "statements": [
        {"effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["users/${sub}/*"]}]});
    let (status, v) = api
        .post(
            "/api/v1/apps/videos/policy/versions",
            json!({"document": doc, "note": "v1"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        (v["version"].as_i64(), v["active"].as_bool()),
        (Some(1), Some(true))
    );
    let bad = json!({"prefix": "users/${sub}/", "statements": [
        {"effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["users/${sub}/*", "*"]}]});
    let (status, err) = api
        .post(
            "/api/v1/apps/videos/policy/versions",
            json!({"document": bad}),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    assert!(
        err["error"]["fields"][0]["field"]
            .as_str()
            .unwrap()
            .starts_with("statements[0]"),
        "{err}"
    );
    let doc2 = json!({"prefix": "users/${sub}/", "statements": [
        {"effect": "allow", "actions": ["name/cos:PutObject"], "resources": ["users/${sub}/*"]}]});
    let (status, _) = api
        .post(
            "/api/v1/apps/videos/policy/versions",
            json!({"document": doc2}),
        )
        .await;
    assert_eq!(status, 201);
    let (_, preview) = api
        .post(
            "/api/v1/apps/videos/policy/preview",
            json!({"claims": {"sub": "alice"}}),
        )
        .await;
    assert_eq!(preview["state"], "ok", "{preview}");
    assert_eq!(preview["prefix"], "users/alice/");
    assert!(
        preview["actions"].to_string().contains("PutObject"),
        "{preview}"
    );
    let (_, preview) = api
        .post(
            "/api/v1/apps/videos/policy/preview",
            json!({"claims": {"sub": "bob"}, "document": doc}),
        )
        .await;
    assert!(
        preview["actions"].to_string().contains("GetObject"),
        "{preview}"
    );
    let (status, _) = api
        .post("/api/v1/apps/videos/policy/activate", json!({"version": 1}))
        .await;
    assert_eq!(status, 200);
    let (_, active) = api.get("/api/v1/apps/videos/policy").await;
    assert_eq!(active["version"], 1);
    let (_, versions) = api.get("/api/v1/apps/videos/policy/versions").await;
    assert_eq!(versions.as_array().unwrap().len(), 2);

    let (_, r) = api
        .post(
            "/api/v1/apps/videos/blocks",
            json!({"subject": " mallory ", "reason": "abuse"}),
        )
        .await;
    assert_eq!(r["outcome"], "blocked");
    let (_, blocks) = api.get("/api/v1/apps/videos/blocks").await;
    assert_eq!(blocks[0]["subject"], " mallory ", "subjects are exact");
    let (status, _) = api
        .delete("/api/v1/apps/videos/blocks?subject=%20mallory%20")
        .await;
    assert_eq!(status, 204);

    let (status, user) = api
        .post(
            "/api/v1/users",
            json!({"username": "ops", "role": "auditor", "password": "short"}),
        )
        .await;
    assert_eq!(
        (status, user["error"]["fields"][0]["field"].as_str()),
        (422, Some("password"))
    );
    let (status, user) = api
        .post(
            "/api/v1/users",
            json!({"username": "ops", "role": "auditor",
            "password": "ops-password-0123456"}),
        )
        .await;
    assert_eq!(status, 201, "{user}");
    let id = user["id"].as_i64().unwrap();
    let (_, user) = api
        .patch(&format!("/api/v1/users/{id}"), json!({"disabled": true}))
        .await;
    assert_eq!(user["disabled"], true);
    let (status, err) = api
        .patch(
            &format!("/api/v1/users/{}", t.admin_id),
            json!({"role": "auditor"}),
        )
        .await;
    assert_eq!(status, 422, "the last admin stays: {err}");

    // Every change is the token's, and no secret is ever sent back.
    let (_, changes) = api
        .get("/api/v1/changes?actor=token:deploy&limit=1000")
        .await;
    let actions: Vec<&str> = changes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    for a in [
        "app.create",
        "app.update",
        "template.save",
        "subject.block",
        "admin_user.create",
    ] {
        assert!(
            actions.iter().any(|x| x.starts_with(a)),
            "{a} in {actions:?}"
        );
    }
    for path in [
        "/api/v1/apps",
        "/api/v1/apps/videos",
        "/api/v1/apps/videos/jwt",
        "/api/v1/changes",
    ] {
        let (_, body) = api.get(path).await;
        let text = body.to_string();
        for secret in [
            new_key,
            HS_SECRET,
            SECRET_KEY,
            "AKIDvideosEXAMPLEEXAMPLE0001",
        ] {
            assert!(!text.contains(secret), "{path} shows a secret");
        }
    }
}

#[tokio::test]
async fn revoked_and_expired_tokens_are_refused_and_use_is_recorded() {
    let t = TestAdmin::start().await;
    let secret = token(&t, "short-lived", Role::Auditor).await;
    let api = Api::new(&t, Some(&secret));
    let (status, _) = api.get("/api/v1/apps").await;
    assert_eq!(status, 200);
    let listed = t.store.list_api_tokens().await.unwrap();
    let tok = listed.iter().find(|x| x.name == "short-lived").unwrap();
    assert!(tok.last_used_at.is_some(), "use is recorded");
    let stored: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM api_tokens")
        .fetch_all(&t.db.pool)
        .await
        .unwrap();
    assert!(
        stored
            .iter()
            .all(|h| h.len() == 64 && !secret.contains(h.as_str()))
    );

    // Expired: refused.
    sqlx::query("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(tok.id)
        .execute(&t.db.pool)
        .await
        .unwrap();
    let (status, err) = api.get("/api/v1/apps").await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("invalid_token"))
    );

    // Revoked through the API by an admin token: refused at once, and in the change log.
    let admin_secret = token(&t, "root-ci", Role::Admin).await;
    let admin = Api::new(&t, Some(&admin_secret));
    let (status, created) = admin
        .post(
            "/api/v1/tokens",
            json!({"name": "shipper", "role": "auditor", "expires_in": "90d"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let shipper = Api::new(&t, created["token"].as_str());
    assert_eq!(shipper.get("/api/v1/log").await.0, 200);
    let (_, list) = admin.get("/api/v1/tokens").await;
    assert!(
        !list
            .to_string()
            .contains(created["token"].as_str().unwrap()),
        "shown once"
    );
    let (status, _) = admin
        .delete(&format!("/api/v1/tokens/{}", created["id"]))
        .await;
    assert_eq!(status, 200);
    assert_eq!(shipper.get("/api/v1/log").await.0, 401);
    let (_, changes) = admin.get("/api/v1/changes?action=api_token.revoke").await;
    assert_eq!(changes["items"][0]["actor"], "token:root-ci");
    assert_eq!(changes["items"][0]["target"], "shipper");
    let (status, err) = admin
        .post(
            "/api/v1/tokens",
            json!({"name": "x", "role": "admin", "expires_in": "forever"}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["fields"][0]["field"].as_str()),
        (422, Some("expires_in"))
    );
}

fn record(app: &str, subject: &str, at: OffsetDateTime) -> IssuanceRecord {
    IssuanceRecord {
        id: 0,
        at,
        app: app.into(),
        subject: Some(subject.into()),
        outcome: Outcome::Issued,
        http_status: 200,
        error_code: None,
        request_id: format!("req-{subject}"),
        sts_request_id: None,
        tmp_secret_id: Some(format!("AKIDtmp{subject}")),
        policy_hash: None,
        template_version: Some(1),
        actions: vec!["name/cos:GetObject".into()],
        prefix: Some(format!("users/{subject}/")),
        duration_seconds: Some(1800),
        expired_time: None,
        source_ip: Some("10.1.2.3".into()),
        user_agent: None,
        latency_us: 1234,
        count: 1,
    }
}

#[tokio::test]
async fn issuance_log_search_pages_and_ndjson_export_with_follow() {
    let t = TestAdmin::start().await;
    let secret = token(&t, "shipper", Role::Auditor).await;
    let api = Api::new(&t, Some(&secret));
    let now = OffsetDateTime::now_utc();
    let rows: Vec<_> = (0..5)
        .map(|i| record(APP, &format!("u{i}"), now - time::Duration::seconds(60 - i)))
        .collect();
    t.store.insert_issuance_batch(&rows).await.unwrap();

    let (status, page) = api.get(&format!("/api/v1/log?app={APP}&limit=2")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["subject"], "u4", "newest first");
    let next = page["next"].as_str().unwrap().to_owned();
    let (_, page2) = api
        .get(&format!("/api/v1/log?app={APP}&limit=2&before={next}"))
        .await;
    assert_eq!(page2["items"][0]["subject"], "u2");
    let (_, one) = api.get("/api/v1/log?subject=u3").await;
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
    let (status, err) = api.get("/api/v1/log?from=yesterday&outcome=great").await;
    assert_eq!(status, 422);
    let fields = err["error"]["fields"].to_string();
    assert!(
        fields.contains("from") && fields.contains("outcome"),
        "{fields}"
    );

    let res = api
        .http
        .get(format!("{}/api/v1/log/export.ndjson?app={APP}", t.url))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let text = res.text().await.unwrap();
    let subjects: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["subject"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(subjects, ["u4", "u3", "u2", "u1", "u0"]);

    // follow=true from a time: the rows since then oldest first, then new ones as they come.
    let from = (now - time::Duration::seconds(58))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut res = api
        .http
        .get(format!(
            "{}/api/v1/log/export.ndjson?{}",
            t.url,
            serde_urlencoded::to_string([
                ("follow", "true"),
                ("from", from.as_str()),
                ("app", APP)
            ])
            .unwrap()
        ))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut lines = Vec::new();
    let mut buf = String::new();
    let mut inserted = false;
    while lines.len() < 5 {
        let chunk = res.chunk().await.unwrap().expect("the stream stays open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(i) = buf.find('\n') {
            let line: String = buf.drain(..=i).collect();
            let v: Value = serde_json::from_str(line.trim()).unwrap();
            lines.push(v["subject"].as_str().unwrap().to_owned());
        }
        if lines.len() >= 3 && !inserted {
            inserted = true;
            let late = vec![
                record(APP, "new1", OffsetDateTime::now_utc()),
                record("other-app", "not-mine", OffsetDateTime::now_utc()),
                record(APP, "new2", OffsetDateTime::now_utc()),
            ];
            t.store.insert_issuance_batch(&late).await.unwrap();
        }
    }
    assert_eq!(lines, ["u2", "u3", "u4", "new1", "new2"]);
}

#[tokio::test]
async fn the_tokens_page_creates_shows_once_lists_and_revokes() {
    let t = TestAdmin::start().await;
    let admin = t.admin().await;
    let page = admin.get("/tokens").await;
    assert_eq!(page.status, 200);
    let csrf = page.csrf();
    let res = admin
        .post(
            "/tokens",
            &[
                ("csrf", &csrf),
                ("name", "bad name"),
                ("role", "admin"),
                ("expires", ""),
            ],
        )
        .await;
    assert_eq!(res.status, 422);
    assert!(res.body.contains("Name:"), "{}", res.body);
    let res = admin
        .post(
            "/tokens",
            &[
                ("csrf", &csrf),
                ("name", "nightly"),
                ("role", "auditor"),
                ("expires", "30d"),
            ],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.header("cache-control"), "no-store");
    let start = res.body.find("stsg_").expect("the new token is shown");
    let secret: String = res.body[start..].chars().take(48).collect();
    // Shown once: the list has only its first characters.
    let list = admin.get("/tokens").await;
    assert!(!list.body.contains(&secret));
    assert!(list.body.contains(&secret[..11]));
    assert!(list.body.contains("never"), "not used yet");
    let api = Api::new(&t, Some(&secret));
    assert_eq!(api.get("/api/v1/apps").await.0, 200);
    assert_eq!(
        api.post("/api/v1/apps/photos/disable", json!({})).await.0,
        403,
        "auditor"
    );
    // The auditor pages cannot reach it.
    let auditor = t.auditor().await;
    assert_eq!(auditor.get("/tokens").await.status, 403);

    let id = t.store.list_api_tokens().await.unwrap()[0].id;
    let res = admin
        .post(&format!("/tokens/{id}/revoke"), &[("csrf", &csrf)])
        .await;
    assert_eq!(res.status, 303);
    assert_eq!(api.get("/api/v1/apps").await.0, 401);
    let list = admin.get("/tokens").await;
    assert!(list.body.contains("revoked"));
    let changes: Vec<(String, String)> = sqlx::query_as(
        "SELECT actor, action FROM admin_audit WHERE target = 'nightly' ORDER BY id",
    )
    .fetch_all(&t.db.pool)
    .await
    .unwrap();
    assert_eq!(
        changes,
        [
            ("root".to_owned(), "api_token.create".to_owned()),
            ("root".to_owned(), "api_token.revoke".to_owned())
        ]
    );
}
