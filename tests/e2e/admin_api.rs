//! The admin API end to end, as a new operator would use it (issue 11): `stsgate serve`, a
//! token from the CLI, two apps set up through the API, credentials for a user of each from
//! the public API, both issuances found through the API's log query and NDJSON export, a
//! template change through the API that the next credential follows, and a revoked token.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jsonwebtoken::{EncodingKey, Header};
use policy_store::testing::fresh_database;
use serde_json::{Value, json};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_stsgate");

fn master_key() -> String {
    use base64::Engine;
    format!(
        "test:{}",
        base64::engine::general_purpose::STANDARD.encode([0x42u8; 32])
    )
}

fn command(db_url: &str) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db_url)
        .env("STSGATE_MASTER_KEY", master_key());
    c
}

/// Runs a CLI command; its stdout, or a panic with its stderr.
fn cli(db_url: &str, args: &[&str]) -> String {
    let out = command(db_url).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "stsgate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn jwt(sub: &str, aud: &str) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &json!({"sub": sub, "aud": aud, "iat": now(), "exp": now() + 600}),
        &EncodingKey::from_secret(HS_SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
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

/// Retries `f` until it returns `Some`, for at most 20 s (the issuance log commits in batches
/// and replicas learn about changes through NOTIFY: both take a moment).
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

fn template(action: &str) -> Value {
    json!({"prefix": "users/${sub}/", "statements": [
        {"effect": "allow", "actions": [format!("name/cos:{action}")], "resources": ["users/${sub}/*"]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sets_up_two_apps_through_the_api_and_follows_their_log() {
    sts_core::install_crypto_provider();
    let db = fresh_database().await.unwrap();
    let emu = emulator();
    let mut child = command(&db.url)
        .arg("serve")
        .env("STSGATE_PUBLIC_LISTEN", "127.0.0.1:0")
        .env("STSGATE_ADMIN_LISTEN", "127.0.0.1:0")
        .env("STSGATE_STS__ENDPOINT", format!("{}/", emu.url()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let _server = Server(child);
    let (public, admin) = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "stsgate exited early"
        );
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["message"] == "stsgate serving"
        {
            break (
                format!("http://{}", v["public"].as_str().unwrap()),
                format!("http://{}/api/v1", v["admin"].as_str().unwrap()),
            );
        }
    };
    std::thread::spawn(move || for _ in stderr.lines() {});
    let http = reqwest::Client::new();

    // A token from the CLI, printed once on stdout.
    let out = cli(
        &db.url,
        &[
            "admin",
            "create-token",
            "--name",
            "e2e",
            "--role",
            "admin",
            "--expires",
            "1d",
        ],
    );
    let token = out.trim().to_owned();
    assert!(token.starts_with("stsg_") && !token.contains('\n'), "{out}");

    // Two apps, their JWT settings and templates, through the API.
    for (slug, bucket) in [("alpha", BUCKET), ("beta", "betabucket-1250000000")] {
        let (status, body) = call(
            http.post(format!("{admin}/apps")),
            &token,
            Some(
                json!({"slug": slug, "name": slug, "region": REGION, "bucket": bucket,
                "mode": "federation_token", "secret_id": ACCOUNT_ID, "secret_key": ACCOUNT_KEY}),
            ),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = call(
            http.put(format!("{admin}/apps/{slug}/jwt")),
            &token,
            Some(json!({"algorithms": ["HS256"], "hs_secret": HS_SECRET, "audiences": [slug]})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = call(
            http.post(format!("{admin}/apps/{slug}/policy/versions")),
            &token,
            Some(json!({"document": template("GetObject")})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }

    // Credentials for a user of each app, from the public API.
    let credential = |app: &'static str, sub: &'static str, actions: Option<&'static str>| {
        let http = http.clone();
        let public = public.clone();
        async move {
            let mut url = format!("{public}/v1/apps/{app}/credentials");
            if let Some(a) = actions {
                url.push_str(&format!("?actions={a}"));
            }
            let res = http
                .get(url)
                .bearer_auth(jwt(sub, app))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    let (status, alice) = credential("alpha", "alice", None).await;
    assert_eq!(status, 200, "{alice}");
    assert_eq!(alice["prefix"], "users/alice/");
    let (status, bob) = credential("beta", "bob", None).await;
    assert_eq!(status, 200, "{bob}");
    assert_eq!(bob["bucket"], "betabucket-1250000000");

    // Both issuances, through the log query and the NDJSON export.
    for (app, sub, cred) in [("alpha", "alice", &alice), ("beta", "bob", &bob)] {
        let tmp = cred["credentials"]["tmpSecretId"]
            .as_str()
            .unwrap()
            .to_owned();
        let row = eventually("the issuance is in the log", || {
            let (http, url, token) = (
                http.clone(),
                format!("{admin}/log?app={app}&subject={sub}"),
                token.clone(),
            );
            async move {
                let (status, page) = call(http.get(url), &token, None).await;
                assert_eq!(status, 200, "{page}");
                page["items"].as_array().and_then(|i| i.first().cloned())
            }
        })
        .await;
        assert_eq!(
            (row["outcome"].as_str(), row["tmp_secret_id"].as_str()),
            (Some("issued"), Some(tmp.as_str()))
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
    let rows: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut apps: Vec<&str> = rows.iter().map(|r| r["app"].as_str().unwrap()).collect();
    apps.sort();
    assert_eq!(apps, ["alpha", "beta"]);

    // alpha's template now grants PutObject instead: the next credential follows it.
    let (status, _) = credential("alpha", "alice", Some("PutObject")).await;
    assert_eq!(
        status, 422,
        "GetObject only so far: an action the template does not grant"
    );
    let (status, v) = call(
        http.post(format!("{admin}/apps/alpha/policy/versions")),
        &token,
        Some(json!({"document": template("PutObject"), "note": "uploads"})),
    )
    .await;
    assert_eq!((status, v["version"].as_i64()), (201, Some(2)), "{v}");
    let cred = eventually("the gateway follows the new template", || {
        let c = credential("alpha", "alice", Some("PutObject"));
        async move {
            let (status, body) = c.await;
            (status == 200).then_some(body)
        }
    })
    .await;
    assert_eq!(cred["prefix"], "users/alice/");
    let row = eventually("the new issuance is logged with version 2", || {
        let (http, url, token) = (
            http.clone(),
            format!("{admin}/log?app=alpha&outcome=issued&limit=1"),
            token.clone(),
        );
        async move {
            let (_, page) = call(http.get(url), &token, None).await;
            page["items"]
                .as_array()
                .and_then(|i| i.first().cloned())
                .filter(|r| r["template_version"] == 2)
        }
    })
    .await;
    assert!(row["actions"].to_string().contains("PutObject"), "{row}");
    let (_, changes) = call(
        http.get(format!("{admin}/changes?actor=token:e2e")),
        &token,
        None,
    )
    .await;
    // Two apps with JWT settings and a template each, and the new version.
    assert_eq!(changes["items"].as_array().unwrap().len(), 7, "{changes}");

    // Revoked with the CLI: the API refuses the token at once.
    let listed = cli(&db.url, &["admin", "list-tokens"]);
    assert!(
        listed.contains("e2e") && listed.contains("active") && !listed.contains(&token),
        "{listed}"
    );
    cli(&db.url, &["admin", "revoke-token", "e2e"]);
    let (status, err) = call(http.get(format!("{admin}/apps")), &token, None).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("invalid_token"))
    );
    assert!(cli(&db.url, &["admin", "list-tokens"]).contains("revoked"));
}
