//! Issue 11's end-to-end flow, as a new operator runs it: start `stsgate serve`, create a
//! token with the CLI, `apply` the README's example file (two apps) through the admin API,
//! get credentials for a user of each app from the public API, find both issuances through
//! the API's log query and NDJSON export, change one app's template through the API and see
//! the next credential follow it (in the session policy the emulator received), then revoke
//! the token and see the API refuse it.

use std::future::Future;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use jsonwebtoken::{EncodingKey, Header};
use policy_store::sub_hash;
use policy_store::testing::fresh_database;
use serde_json::{Value, json};
use sts_emulator::{EmulatorConfig, EmulatorHandle};

use crate::apply::*;
use crate::process::{ServeProcess, master_key_b64};
use crate::support::now;

/// The emulator, knowing the permanent key the example file names.
fn example_emulator() -> EmulatorHandle {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    sts_emulator::start(
        EmulatorConfig {
            accounts: vec![
                format!("AKIDEXAMPLEPHOTOS0001:{PHOTOS_SECRET_KEY}:1250000000")
                    .parse()
                    .unwrap(),
            ],
            workers: 1,
            ..EmulatorConfig::default()
        },
        listener,
    )
    .unwrap()
}

/// A user's token from the example's identity provider.
fn user_jwt(sub: &str, audience: &str, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &json!({"sub": sub, "iss": "https://idp.example.com", "aud": audience,
                "iat": now(), "exp": now() + 600}),
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// Retries `f` until it returns `Some`, for at most 20 s (the issuance log commits in batches;
/// the gateway learns of a change through NOTIFY).
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn call(req: reqwest::RequestBuilder, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = req.bearer_auth(token);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_operator_applies_two_apps_from_a_file_and_follows_them() {
    sts_core::install_crypto_provider();
    let db = fresh_database().await.unwrap();
    let emu = example_emulator();
    let mut serve = ServeProcess::start(&db.url, &emu.url(), &[]);
    let (public, admin) = (serve.public_url(), format!("{}/api/v1", serve.admin_url()));
    let http = reqwest::Client::new();
    let dir = temp_dir("operator");
    let env = example_env();

    // 1. A token with the CLI, kept in a file (never on a command line).
    let token_path = token_file(&db.url, &dir, "ops");
    let token = std::fs::read_to_string(&token_path).unwrap();
    let ops = Mode::Server {
        admin_url: serve.admin_url(),
        token_file: token_path,
    };

    // 2. The example file, previewed and then applied through the admin API.
    let plan = ok(ops.run(&["apply", "-f", EXAMPLE, "--dry-run"], &env));
    assert!(plan.contains("Dry run: 2 to create"), "{plan}");
    let out = ok(ops.run(&["apply", "-f", EXAMPLE], &env));
    assert!(out.contains("Applied: 2 to create"), "{out}");
    let out = ok(ops.run(&["apply", "-f", EXAMPLE], &env));
    assert!(out.contains("No changes"), "{out}");

    // 3. Credentials for a user of each app, from the public API.
    let credential = |app: &'static str, sub: &'static str, query: &'static str| {
        let (http, public) = (http.clone(), public.clone());
        let jwt = match app {
            "photos" => user_jwt(sub, "photos-mobile", PHOTOS_JWT_SECRET),
            _ => user_jwt(sub, "videos-web", VIDEOS_JWT_SECRET),
        };
        async move {
            let res = http
                .get(format!("{public}/v1/apps/{app}/credentials{query}"))
                .bearer_auth(jwt)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    let (status, alice) = credential("photos", "alice", "").await;
    assert_eq!(status, 200, "{alice}");
    assert_eq!(
        (alice["bucket"].as_str(), alice["prefix"].as_str()),
        (Some("photos-1250000000"), Some("users/alice/"))
    );
    let (status, bob) = credential("videos", "bob", "").await;
    assert_eq!(status, 200, "{bob}");
    let bob_prefix = format!("u/{}/", sub_hash("bob"));
    assert_eq!(bob["prefix"].as_str(), Some(bob_prefix.as_str()));
    // The file's block list is in force too.
    let (status, _) = credential("photos", "mallory", "").await;
    assert_eq!(status, 403);

    // 4. Both issuances, through the log query and the NDJSON export.
    for (app, sub, cred) in [("photos", "alice", &alice), ("videos", "bob", &bob)] {
        let tmp = cred["credentials"]["tmpSecretId"].as_str().unwrap();
        let row = eventually("the issuance is in the log", || {
            let (req, token) = (
                http.get(format!("{admin}/log?app={app}&subject={sub}")),
                token.clone(),
            );
            async move {
                let (status, page) = call(req, &token, None).await;
                assert_eq!(status, 200, "{page}");
                page["items"].as_array().and_then(|i| i.first().cloned())
            }
        })
        .await;
        assert_eq!(
            (row["outcome"].as_str(), row["tmp_secret_id"].as_str()),
            (Some("issued"), Some(tmp))
        );
    }
    let export = http
        .get(format!("{admin}/log/export.ndjson?outcome=issued"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut issued: Vec<(String, String)> = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|r| {
            (
                r["app"].as_str().unwrap().to_owned(),
                r["tmp_secret_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    issued.sort();
    let tmp = |c: &Value| c["credentials"]["tmpSecretId"].as_str().unwrap().to_owned();
    assert_eq!(
        issued,
        [("photos".into(), tmp(&alice)), ("videos".into(), tmp(&bob))]
    );

    // 5. videos' template changed through the API: the next credential follows it.
    let policy_of = |c: &Value| emu.credential(&tmp(c)).unwrap().policy.unwrap().to_string();
    assert!(
        !policy_of(&bob).contains("PutObject"),
        "{}",
        policy_of(&bob)
    );
    let (status, _) = credential("videos", "bob", "?actions=PutObject").await;
    assert_eq!(status, 422, "the file's template grants GetObject only");
    let (status, v) = call(
        http.post(format!("{admin}/apps/videos/policy/versions")),
        &token,
        Some(
            json!({"note": "uploads", "document": {"prefix": "u/${sub_hash}/", "statements": [
            {"effect": "allow", "actions": ["name/cos:GetObject", "name/cos:PutObject"],
             "resources": ["u/${sub_hash}/*"]}]}}),
        ),
    )
    .await;
    assert_eq!((status, v["version"].as_i64()), (201, Some(2)), "{v}");
    let uploads = eventually("the gateway follows the new template", || {
        let c = credential("videos", "bob", "?actions=PutObject");
        async move {
            let (status, body) = c.await;
            (status == 200).then_some(body)
        }
    })
    .await;
    let policy = policy_of(&uploads);
    assert!(
        policy.contains("name/cos:PutObject") && !policy.contains("name/cos:GetObject"),
        "narrowed to what was asked, within the new template: {policy}"
    );
    assert!(
        policy.contains(&format!("videos-1250000000/{bob_prefix}*")),
        "{policy}"
    );

    // The file no longer matches: a dry run shows the drift, field by field.
    let drift = ok(ops.run(&["apply", "-f", EXAMPLE, "--dry-run"], &env));
    assert!(
        drift.contains("= app photos (unchanged)")
            && drift.contains("~ app videos (update)")
            && drift.contains("    ~ template:"),
        "{drift}"
    );

    // 6. The token revoked with the CLI: the API refuses it at once, apply included.
    ok(stsgate(&[
        ("DATABASE_URL", &db.url),
        ("STSGATE_MASTER_KEY", &master_key_b64()),
    ])
    .args(["admin", "revoke-token", "ops"])
    .output()
    .unwrap());
    let (status, err) = call(http.get(format!("{admin}/apps")), &token, None).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("invalid_token"))
    );
    let out = ops.run(&["apply", "-f", EXAMPLE, "--dry-run"], &env);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("401 invalid_token"), "{err}");

    assert!(serve.terminate());
    std::fs::remove_dir_all(&dir).unwrap();
}
