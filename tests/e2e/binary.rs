//! The real `stsgate serve` binary: logs and log rows never hold a secret, shutdown is
//! graceful, and bad configuration fails with one clear line.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use policy_store::testing::{fresh_database, test_cipher};
use policy_store::{AdminUserStore, AppStore, PgStore};
use serde_json::Value;
use sts_emulator::Faults;

use crate::process::{BIN, master_key_b64};
use crate::support::*;

/// Kills a child process by pid when a test fails before it could stop it cleanly.
pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_or_the_log_rows() {
    sts_core::install_crypto_provider();
    let db = fresh_database().await.unwrap();
    let store = PgStore::new(db.pool.clone(), test_cipher());
    let opts = Options::default();
    seed(&store, &opts).await;
    let emu = emulator();

    let Served {
        mut child,
        public,
        mut captured,
        reader,
    } = serve(&db.url, &emu, &[("RUST_LOG", "debug")]);
    let _guard = KillOnDrop(child.id());
    let http = reqwest::Client::new();
    let url = format!("http://{public}/v1/apps/{APP}/credentials");
    let app = TestAppTokens;
    let mut secrets: Vec<String> = vec![ACCOUNT_KEY.into(), HS_SECRET.into(), master_key_b64()];
    let mut requests = 0;
    for (sub, query) in [
        ("alice", ""),
        ("alice", ""),
        ("bob", "format=cos-js"),
        ("../x", ""),
        ("carol", "format=legacy"),
    ] {
        let token = app.token(sub);
        secrets.push(token.clone());
        let res = http
            .get(format!("{url}?{query}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        requests += 1;
        let body: Value = res.json().await.unwrap();
        let creds = body
            .get("credentials")
            .or_else(|| body.get("data").and_then(|d| d.get("credentials")));
        if let Some(c) = creds {
            secrets.push(c["tmpSecretKey"].as_str().unwrap().into());
            secrets.push(c["sessionToken"].as_str().unwrap().into());
        }
        if let Some(k) = body.get("TmpSecretKey") {
            secrets.push(k.as_str().unwrap().into());
            secrets.push(body["SecurityToken"].as_str().unwrap().into());
        }
    }
    // A refused token and an STS failure also get logged.
    let bad = format!("{}x", app.token("alice"));
    secrets.push(bad.clone());
    let res = http.get(&url).bearer_auth(&bad).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_token"
    );
    emu.set_faults(Faults {
        error_rate: 1.0,
        error_code: Some("InternalError".into()),
        ..Faults::default()
    })
    .unwrap();
    let res = http
        .get(&url)
        .bearer_auth(app.token("dave"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    requests += 2;

    // Graceful shutdown: SIGTERM, in-flight work done, audit flushed, exit 0.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "stsgate exited with {exit}");
    captured.push_str(&reader.join().unwrap());
    assert!(
        captured.contains("credential minted"),
        "debug logs were captured"
    );

    let rows: Vec<String> = sqlx::query_scalar("SELECT row_to_json(l)::text FROM issuance_log l")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), requests, "one row per request: {rows:#?}");
    let audit: Vec<String> = sqlx::query_scalar("SELECT row_to_json(a)::text FROM admin_audit a")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    for secret in &secrets {
        assert!(secret.len() >= 16, "a real secret: {secret}");
        assert!(
            !captured.contains(secret.as_str()),
            "a secret reached the logs"
        );
        for row in rows.iter().chain(&audit) {
            assert!(
                !row.contains(secret.as_str()),
                "a secret reached a table row: {row}"
            );
        }
    }
}

/// The access log goes through a non-blocking writer: with nobody reading stderr (a full
/// pipe), requests are still answered, and once stderr is read again every line is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_reader_holds_no_request_and_loses_no_line() {
    sts_core::install_crypto_provider();
    let db = fresh_database().await.unwrap();
    let store = PgStore::new(db.pool.clone(), test_cipher());
    seed(&store, &Options::default()).await;
    let emu = emulator();
    let mut child = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("STSGATE_MASTER_KEY", master_key_b64())
        .env("STSGATE_PUBLIC_LISTEN", "127.0.0.1:0")
        .env("STSGATE_ADMIN_LISTEN", "127.0.0.1:0")
        .env("STSGATE_STS__ENDPOINT", format!("{}/", emu.url()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child.id());
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let public = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "stsgate exited early"
        );
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["message"] == "stsgate serving"
        {
            break v["public"].as_str().unwrap().to_owned();
        }
    };

    // Far more access-log lines than a pipe holds (64 KiB, some 300 lines), none read. With
    // a blocking writer the workers stall on the full pipe and these never complete.
    const REQUESTS: usize = 3_000;
    let http = reqwest::Client::new();
    let url = format!("http://{public}/healthz");
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (http, url, next) = (http.clone(), url.clone(), next.clone());
            tokio::spawn(async move {
                let mut ok = 0;
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < REQUESTS {
                    let res = http.get(&url).send().await.unwrap();
                    ok += usize::from(res.status() == 200);
                }
                ok
            })
        })
        .collect();
    let answered = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        let mut ok = 0;
        for w in workers {
            ok += w.await.unwrap();
        }
        ok
    })
    .await
    .expect("requests hang while nobody reads stderr");
    assert_eq!(answered, REQUESTS);

    // Read stderr again and stop the gateway: every request has its line.
    let reader = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "stsgate exited with {exit}");
    let logged = reader
        .join()
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "request" && v["path"] == "/healthz")
        .count();
    assert_eq!(logged, REQUESTS, "access-log lines lost");
}

/// Tokens for the seeded app without a running `TestApp`.
/// A running `stsgate serve`, its public address, and its stderr: the lines read up to
/// "stsgate serving", and a thread collecting the rest.
pub struct Served {
    pub child: std::process::Child,
    pub public: String,
    pub captured: String,
    pub reader: std::thread::JoinHandle<String>,
}

/// Starts `stsgate serve` on `db_url` with the emulator as STS and the extra `env`, and waits
/// until it serves.
pub fn serve(db_url: &str, emu: &sts_emulator::EmulatorHandle, env: &[(&str, &str)]) -> Served {
    let mut child = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db_url)
        .env("STSGATE_MASTER_KEY", master_key_b64())
        .env("STSGATE_PUBLIC_LISTEN", "127.0.0.1:0")
        .env("STSGATE_ADMIN_LISTEN", "127.0.0.1:0")
        .env("STSGATE_STS__ENDPOINT", format!("{}/", emu.url()))
        .env("STSGATE_STS__TIMEOUT_MS", "500")
        .env("STSGATE_STS__MAX_ATTEMPTS", "1")
        // No readiness drain at SIGTERM unless a test asks for one.
        .env("STSGATE_SHUTDOWN_DRAIN_SECS", "0")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Find the public address in the JSON logs, keeping every line for the caller.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut captured = String::new();
    let public = loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("stsgate exited early:\n{captured}");
        }
        captured.push_str(&line);
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["message"] == "stsgate serving"
        {
            break v["public"].as_str().unwrap().to_owned();
        }
    };
    let reader = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    Served {
        child,
        public,
        captured,
        reader,
    }
}

/// HS256 tokens for the seeded `photos` app, without a [`TestApp`].
pub struct TestAppTokens;

impl TestAppTokens {
    pub fn token(&self, sub: &str) -> String {
        let claims = serde_json::json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 600});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(HS_SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    }
}

#[test]
fn bad_configuration_fails_with_one_clear_line() {
    let run = |envs: &[(&str, &str)]| {
        let out = Command::new(BIN)
            .arg("serve")
            .env_clear()
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    let err = run(&[]);
    assert!(err.contains("DATABASE_URL"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = run(&[("DATABASE_URL", "postgres://127.0.0.1:1/x")]);
    assert!(err.contains("STSGATE_MASTER_KEY"), "{err}");
    let err = run(&[
        ("DATABASE_URL", "postgres://127.0.0.1:1/x"),
        ("STSGATE_MASTER_KEY", "short"),
    ]);
    assert!(err.contains("STSGATE_MASTER_KEY"), "{err}");
    let err = run(&[("STSGATE_WORKERS", "lots")]);
    assert!(err.to_lowercase().contains("workers"), "{err}");
}

/// Runs the binary with the test database and key, feeding `stdin`.
fn cli(db_url: &str, args: &[&str], stdin: &str) -> std::process::Output {
    cli_with(db_url, args, stdin, &[])
}

fn cli_with(
    db_url: &str,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .env("DATABASE_URL", db_url)
        .env("STSGATE_MASTER_KEY", master_key_b64())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_create_users_and_set_templates() {
    let db = fresh_database().await.unwrap();
    let store = PgStore::new(db.pool.clone(), test_cipher());
    seed(&store, &Options::default()).await;

    let out = cli(
        &db.url,
        &[
            "admin",
            "create-user",
            "--username",
            "ops",
            "--role",
            "auditor",
        ],
        "a-long-enough-password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user = store.admin_user_by_name("ops").await.unwrap().unwrap();
    assert_eq!(user.role.as_str(), "auditor");
    assert!(user.password_hash.starts_with("$argon2id$"));
    let out = cli(
        &db.url,
        &[
            "admin",
            "create-user",
            "--username",
            "weak",
            "--role",
            "admin",
        ],
        "short\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 12"));

    let good = r#"{"prefix":"users/${sub}/","statements":[{"effect":"allow","actions":["name/cos:PutObject"],"resources":["users/${sub}/*"],"conditions":{"numeric_less_than_equal":{"cos:content-length":1024}}}]}"#;
    let out = cli(
        &db.url,
        &[
            "admin",
            "set-template",
            "--app",
            APP,
            "--file",
            "-",
            "--note",
            "cap uploads",
        ],
        good,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("version 2"));
    let app = store.app_by_slug(APP).await.unwrap().unwrap();
    assert_eq!(app.active_template_version, Some(2));

    let bad = r#"{"statements":[{"effect":"allow","actions":["name/cos:PutObject"],"resources":["users/${sub}*"]}]}"#;
    let out = cli(
        &db.url,
        &["admin", "set-template", "--app", APP, "--file", "-"],
        bad,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("statements[0].resources[0]"), "{err}");
    assert_eq!(
        store
            .app_by_slug(APP)
            .await
            .unwrap()
            .unwrap()
            .active_template_version,
        Some(2)
    );
}

/// `stsgate dev` with no DATABASE_URL: its own PostgreSQL (as the postgres user when root),
/// the emulator, the seeded demo app, dev.json; Ctrl-C stops everything; a second run reuses
/// the data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_everything_locally_and_stops_it_all() {
    sts_core::install_crypto_provider();
    let dir = std::env::temp_dir().join(format!("stsgate-dev-test-{}", uuid_like()));
    let run = || {
        Command::new(BIN)
            .args(["dev", "--data-dir"])
            .arg(&dir)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--emulator-listen",
                "127.0.0.1:0",
            ])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut passwords = Vec::new();
    for round in 0..2 {
        let _ = std::fs::remove_file(dir.join("dev.json"));
        let mut child = run();
        let _guard = KillOnDrop(child.id());
        let facts_path = dir.join("dev.json");
        let mut waited = 0;
        while !facts_path.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                panic!(
                    "dev exited ({status}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(waited < 600, "dev did not come up within 60 s");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            waited += 1;
        }
        let facts: Value =
            serde_json::from_str(&std::fs::read_to_string(&facts_path).unwrap()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&facts_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        for field in [
            "api_url",
            "admin_url",
            "admin_user",
            "admin_password",
            "app",
            "jwt_hs256_secret",
            "jwt_issuer",
            "jwt_audience",
            "sample_jwt",
            "emulator_url",
            "emulator_secret_id",
            "emulator_secret_key",
            "bucket",
            "region",
        ] {
            assert!(
                facts[field].as_str().is_some_and(|v| !v.is_empty()),
                "{field}"
            );
        }
        passwords.push(facts["admin_password"].as_str().unwrap().to_owned());
        let res = reqwest::Client::new()
            .get(format!(
                "{}/v1/apps/{}/credentials",
                facts["api_url"].as_str().unwrap(),
                facts["app"].as_str().unwrap()
            ))
            .bearer_auth(facts["sample_jwt"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "round {round}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["prefix"], "users/alice/");

        // Ctrl-C: everything stops, PostgreSQL included.
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            out.status.success(),
            "dev exit: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("curl -s -H 'Authorization: Bearer "),
            "{stdout}"
        );
        let data = if dir.join("pg/PG_VERSION").exists() {
            dir.join("pg")
        } else {
            // As root the data may live where the postgres user can reach it; the banner says.
            let line = stdout.lines().find(|l| l.contains("Database")).unwrap();
            std::path::PathBuf::from(line.split("data in ").nth(1).unwrap().trim())
        };
        assert!(
            !data.join("postmaster.pid").exists(),
            "PostgreSQL was stopped"
        );
    }
    assert_eq!(
        passwords[0], passwords[1],
        "the second run reuses the data dir"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// `stsgate retention`: `--dry-run` lists and changes nothing; the real run archives the
/// partition past `retention_days` into `archive_dir` and drops it, leaving this month alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_command_archives_then_drops_old_partitions() {
    let db = fresh_database().await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE issuance_log_y2023m03 PARTITION OF issuance_log \
         FOR VALUES FROM ('2023-03-01 00:00:00+00') TO ('2023-04-01 00:00:00+00'); \
         INSERT INTO issuance_log (at, app, outcome, http_status, request_id) VALUES \
           ('2023-03-09 08:00:00+00', 'photos', 'denied', 403, 'old-1'), \
           (now(), 'photos', 'denied', 403, 'new-1');",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let archive = std::env::temp_dir().join(format!("stsgate-e2e-archive-{}", uuid_like()));
    let env = [
        ("STSGATE_AUDIT__RETENTION_DAYS", "365"),
        ("STSGATE_AUDIT__ARCHIVE_DIR", archive.to_str().unwrap()),
    ];
    let ids = || async {
        sqlx::query_scalar::<_, String>("SELECT request_id FROM issuance_log ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap()
    };

    let out = cli_with(&db.url, &["retention", "--dry-run"], "", &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("would archive to") && stdout.contains("issuance_log_y2023m03"),
        "{stdout}"
    );
    assert_eq!(ids().await, ["new-1", "old-1"]);
    assert!(!archive.exists());

    let out = cli_with(&db.url, &["retention"], "", &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("archived 1 rows of issuance_log_y2023m03"),
        "{stdout}"
    );
    assert_eq!(ids().await, ["new-1"]);
    assert!(archive.join("issuance_log_y2023m03.ndjson.gz").is_file());
    assert!(
        archive
            .join("issuance_log_y2023m03.manifest.json")
            .is_file()
    );

    let out = cli_with(&db.url, &["retention"], "", &env);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing is past 365 days"));
    std::fs::remove_dir_all(archive).unwrap();
}
