//! Load benchmark: the release `stsgate serve` against the release emulator, on this machine.
//!
//! Run with `scripts/bench` (it starts PostgreSQL). Prints figures; asserts nothing on time.
//! Runs of `STSGATE_BENCH_SECS` (default 10) seconds each, 64 connections:
//!   - baseline: GetFederationToken straight to the emulator (StsClient, TC3-signed), as fast
//!     as it goes and paced at 500/s;
//!   - cache hit: one user repeating, through the gateway, as fast as it goes (every request
//!     gets its durable issuance-log row before the answer);
//!   - cache miss: a new subject on every request, so every request calls STS: paced at 500/s
//!     (STS allows 600/s per account) and as fast as it goes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::{EncodingKey, Header};
use policy_store::PgStore;
use policy_store::testing::{SeedApp, fresh_database, seed_app, test_cipher};
use serde_json::{Value, json};
use sts_core::{CosResource, Effect, PermanentKey, Policy, Statement, StsClient, StsClientConfig};

const BIN: &str = env!("CARGO_BIN_EXE_stsgate");
const CONNECTIONS: usize = 64;
/// Cache misses call STS, whose quota is 600/s per account: latency is compared at a rate a
/// real app can reach, below saturation.
const PACED_RATE: f64 = 500.0;
const ACCOUNT_ID: &str = "AKIDBENCHACCOUNT";
const ACCOUNT_KEY: &str = "bench-permanent-secret-key-0123456789";
const HS_SECRET: &str = "bench-hs256-secret-that-is-long-enough-0";

struct Figures {
    name: &'static str,
    requests: u64,
    errors: u64,
    secs: f64,
    p50: Duration,
    p99: Duration,
}

impl Figures {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs `CONNECTIONS` workers calling `call` until `secs` have passed. With `rate`, calls are
/// paced (open loop): call n is due at `n / rate` seconds, and its latency counts from then,
/// so a slow answer cannot hide the queueing it causes.
async fn load<F, Fut>(name: &'static str, secs: u64, rate: Option<f64>, call: F) -> Figures
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (call, counter, errors) = (call.clone(), counter.clone(), errors.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(64 * 1024);
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let t = match rate {
                        Some(r) => {
                            let due = started + Duration::from_secs_f64(n as f64 / r);
                            if due >= deadline {
                                break;
                            }
                            tokio::time::sleep_until(due.into()).await;
                            due
                        }
                        None => Instant::now(),
                    };
                    if !call(n).await {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    Figures {
        name,
        requests: all.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        secs,
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
    }
}

fn spawn_and_wait(cmd: &mut Command, ready: impl Fn(&str) -> Option<String>) -> (Child, String) {
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    for lines in [
        Box::new(stdout.lines()) as Box<dyn Iterator<Item = std::io::Result<String>> + Send>,
        Box::new(stderr.lines()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100))
            && let Some(found) = ready(&line)
        {
            // Keep draining so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in rx {});
            return (child, found);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{cmd:?} did not become ready");
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn with_sslmode_disable(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}sslmode=disable")
}

fn token(sub: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &Header::default(),
        &json!({"sub": sub, "iss": "bench", "aud": "bench", "iat": now, "exp": now + 3600}),
        &EncodingKey::from_secret(HS_SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    sts_core::install_crypto_provider();
    let secs: u64 = std::env::var("STSGATE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);

    let (mut emulator, emulator_url) = spawn_and_wait(
        Command::new(BIN).args([
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--account",
            &format!("{ACCOUNT_ID}:{ACCOUNT_KEY}:1250000000"),
            // The benchmark measures stsgate, not STS's 600/s quota.
            "--rate-limit",
            "1000000",
        ]),
        |line| {
            line.strip_prefix("stsgate emulator listening on ")
                .map(str::to_owned)
        },
    );

    let db = fresh_database().await.unwrap();
    let store = PgStore::new(db.pool.clone(), test_cipher());
    let seed = SeedApp {
        secret_id: ACCOUNT_ID.into(),
        secret_key: ACCOUNT_KEY.into(),
        issuer: "bench".into(),
        audience: "bench".into(),
        hs_secret: Some(HS_SECRET.into()),
        ..SeedApp::new("bench")
    };
    seed_app(&store, "bench", &seed).await.unwrap();

    use base64::Engine;
    let master_key = format!(
        "test:{}",
        base64::engine::general_purpose::STANDARD.encode([0x42u8; 32])
    );
    let (mut gateway, public) = spawn_and_wait(
        Command::new(BIN)
            .arg("serve")
            // Loopback: no TLS to PostgreSQL (sqlx would otherwise negotiate it with a server
            // that has ssl=on, as Debian's does).
            .env("DATABASE_URL", with_sslmode_disable(&db.url))
            .env("STSGATE_MASTER_KEY", &master_key)
            .env("STSGATE_PUBLIC_LISTEN", "127.0.0.1:0")
            .env("STSGATE_ADMIN_LISTEN", "127.0.0.1:0")
            .env("STSGATE_WORKERS", "2")
            .env("STSGATE_STS__ENDPOINT", format!("{emulator_url}/"))
            .env("RUST_LOG", "warn,stsgate=info"),
        |line| {
            let v: Value = serde_json::from_str(line).ok()?;
            (v["message"] == "stsgate serving").then(|| v["public"].as_str().unwrap().to_owned())
        },
    );
    let url = format!("http://{public}/v1/apps/bench/credentials");

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .unwrap();

    // 1. Baseline: the emulator, called directly.
    let sts = StsClient::new(StsClientConfig {
        endpoint: format!("{emulator_url}/"),
        ..StsClientConfig::default()
    })
    .unwrap();
    let res = CosResource::new("ap-guangzhou", "examplebucket-1250000000").unwrap();
    let key = PermanentKey::new(ACCOUNT_ID, ACCOUNT_KEY);
    let direct_call = move |n: u64| {
        let (sts, key) = (sts.clone(), key.clone());
        let policy = Policy::new(vec![Statement::new(
            Effect::Allow,
            vec!["name/cos:PutObject".into()],
            vec![res.object(&format!("users/u{n}/*"))],
        )]);
        async move {
            sts.get_federation_token(
                &key,
                &sts_core::GetFederationToken {
                    name: "bench",
                    policy: &policy,
                    duration_seconds: 1800,
                },
            )
            .await
            .is_ok()
        }
    };
    let direct = load("emulator direct, max", secs, None, direct_call.clone()).await;
    let direct_paced = load(
        "emulator direct, 500/s",
        secs,
        Some(PACED_RATE),
        direct_call,
    )
    .await;

    // 2. Cache hit: one user repeating.
    let hit_token = token("alice");
    let (h, u, t) = (http.clone(), url.clone(), hit_token.clone());
    let hit = load("gateway cache hit, max", secs, None, move |_| {
        let (h, u, t) = (h.clone(), u.clone(), t.clone());
        async move {
            h.get(u)
                .bearer_auth(t)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;

    // 3. Cache miss: a new subject each time.
    // Subjects are unique across both miss runs.
    let offset = Arc::new(AtomicU64::new(0));
    let miss_call = move |n: u64| {
        let (h, u) = (http.clone(), url.clone());
        let t = token(&format!(
            "user{}-{n}",
            offset.fetch_add(1, Ordering::Relaxed)
        ));
        async move {
            h.get(u)
                .bearer_auth(t)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    };
    let miss_paced = load(
        "gateway cache miss, 500/s",
        secs,
        Some(PACED_RATE),
        miss_call.clone(),
    )
    .await;
    let miss = load("gateway cache miss, max", secs, None, miss_call).await;

    let rss = peak_rss_kib(gateway.id());
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM issuance_log")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &gateway.id().to_string()])
        .status();
    let _ = gateway.wait();
    let _ = emulator.kill();
    let _ = emulator.wait();

    println!(
        "\nstsgate benchmark: {CONNECTIONS} connections, {secs} s per run, one machine ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<30} {:>10} {:>8} {:>10} {:>10}",
        "run", "req/s", "errors", "p50", "p99"
    );
    for f in [&direct, &hit, &miss, &direct_paced, &miss_paced] {
        println!(
            "{:<30} {:>10.0} {:>8} {:>10.3?} {:>10.3?}",
            f.name,
            f.rps(),
            f.errors,
            f.p50,
            f.p99
        );
    }
    println!("\nratios against the baseline measured in this run:");
    println!(
        "  cache hit  req/s = {:.2} x baseline",
        hit.rps() / direct.rps()
    );
    println!(
        "  cache miss req/s = {:.2} x baseline",
        miss.rps() / direct.rps()
    );
    println!(
        "  at {PACED_RATE}/s (under STS's 600/s quota): cache miss p50 {:.3?} vs direct {:.3?}: adds {:.3?} ({:.2} x)",
        miss_paced.p50,
        direct_paced.p50,
        miss_paced.p50.saturating_sub(direct_paced.p50),
        miss_paced.p50.as_secs_f64() / direct_paced.p50.as_secs_f64().max(1e-9)
    );
    println!("gateway peak RSS: {:.1} MiB", rss as f64 / 1024.0);
    println!(
        "issuance_log rows: {rows} (gateway requests: {})",
        hit.requests + miss.requests + miss_paced.requests
    );
}
