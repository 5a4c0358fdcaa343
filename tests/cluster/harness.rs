//! A cluster of `stsgate serve` processes, a load balancer's view of it, and the figures.

use std::time::{Duration, Instant};

use policy_store::testing::{TestDatabase, fresh_database, test_cipher};
use policy_store::{AdminUserStore, PgStore, Role};
use secrecy::SecretString;
use serde_json::{Value, json};
use sts_emulator::EmulatorHandle;
use tokio::sync::{Mutex, MutexGuard};

use crate::process::{AdminBrowser, ServeProcess};
use crate::support::{APP, Options, emulator, hs256_token, seed};

/// The tests measure rates on a small machine: one cluster at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

pub const REPLICAS: usize = 3;
pub const ADMIN_PASSWORD: &str = "cluster-admin-password-0123";

pub struct Cluster {
    pub db: TestDatabase,
    pub emulator: EmulatorHandle,
    /// `None` once killed or stopped.
    pub replicas: Vec<Option<ServeProcess>>,
    pub http: reqwest::Client,
    env: Vec<(String, String)>,
    _serial: MutexGuard<'static, ()>,
}

/// One credential request's answer as a client saw it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub replica: usize,
    /// 0: no HTTP answer (connection refused or cut).
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn tmp_secret_id(&self) -> Option<&str> {
        self.body["credentials"]["tmpSecretId"].as_str()
    }
}

impl Cluster {
    /// Three replicas on a fresh database with the `photos` app seeded with `opts`, each
    /// started with `env` on top of the defaults; returns once each counts three members.
    pub async fn start(opts: &Options, env: &[(&str, &str)]) -> Self {
        let serial = SERIAL.lock().await;
        sts_core::install_crypto_provider();
        let db = fresh_database().await.unwrap();
        let store = PgStore::new(db.pool.clone(), test_cipher());
        seed(&store, opts).await;
        let hash = admin::password::hash_password(SecretString::from(ADMIN_PASSWORD))
            .await
            .unwrap();
        store
            .create_admin_user("test", "root", &hash, Role::Admin)
            .await
            .unwrap();
        let mut all_env: Vec<(String, String)> = [
            ("STSGATE_DATABASE_MAX_CONNECTIONS", "6"),
            ("STSGATE_WORKERS", "2"),
            ("STSGATE_STS__MAX_ATTEMPTS", "1"),
            ("STSGATE_SHUTDOWN_TIMEOUT_SECS", "10"),
            // No readiness drain unless a test asks for one (the rolling restart does).
            ("STSGATE_SHUTDOWN_DRAIN_SECS", "0"),
            ("RUST_LOG", "warn,stsgate=info"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        all_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut cluster = Self {
            db,
            emulator: emulator(),
            replicas: Vec::new(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            env: all_env,
            _serial: serial,
        };
        for _ in 0..REPLICAS {
            let r = cluster.spawn_replica(&[]);
            cluster.replicas.push(Some(r));
        }
        for i in 0..REPLICAS {
            cluster.wait_for_members(i, REPLICAS as u64).await;
        }
        cluster
    }

    /// Another replica on the same database and emulator, with `env` on top.
    pub fn spawn_replica(&self, env: &[(&str, &str)]) -> ServeProcess {
        let mut all: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        all.extend_from_slice(env);
        ServeProcess::start(&self.db.url, &self.emulator.url(), &all)
    }

    pub fn url(&self, replica: usize) -> String {
        self.replicas[replica]
            .as_ref()
            .expect("a running replica")
            .public_url()
    }

    /// `stsgate_cluster_members` on `replica`'s `/metrics`.
    pub async fn members(&self, replica: usize) -> u64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.url(replica)))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("stsgate_cluster_members "))
            .expect("stsgate_cluster_members in /metrics")
            .trim()
            .parse()
            .unwrap()
    }

    /// Waits (bounded at 15 s) until `replica` counts `n` live members; how long it took.
    pub async fn wait_for_members(&self, replica: usize, n: u64) -> Duration {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            if self.members(replica).await == n {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "replica {replica} never counted {n} members (now {})",
            self.members(replica).await
        );
    }

    /// `GET /v1/apps/photos/credentials` as `sub` on `replica`.
    pub async fn credentials(&self, replica: usize, sub: &str) -> Answer {
        fetch(&self.http, replica, &self.url(replica), sub).await
    }

    /// An admin signed in on `replica`'s admin listener.
    pub async fn admin(&self, replica: usize) -> AdminBrowser {
        let base = self.replicas[replica].as_ref().unwrap().admin_url();
        let mut admin = AdminBrowser::new(base);
        admin.sign_in("root", ADMIN_PASSWORD).await;
        admin
    }

    /// The emulator's STS calls at or after `since_ms` (Unix ms), as arrival times.
    pub fn calls_since(&self, since_ms: i64) -> Vec<i64> {
        self.emulator
            .calls_since(since_ms)
            .into_iter()
            .map(|c| c.at_ms)
            .collect()
    }

    /// Every `tmp_secret_id` in the issuance log.
    pub async fn logged_secret_ids(&self) -> std::collections::HashSet<String> {
        sqlx::query_scalar::<_, String>(
            "SELECT tmp_secret_id FROM issuance_log WHERE tmp_secret_id IS NOT NULL",
        )
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
    }

    pub async fn shared_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM shared_credentials")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// Stops every replica gracefully; true when all exited cleanly.
    pub fn stop(&mut self) -> bool {
        let mut clean = true;
        for r in self.replicas.iter_mut().filter_map(Option::take) {
            let mut r = r;
            clean &= r.terminate();
        }
        clean
    }
}

pub async fn fetch(http: &reqwest::Client, replica: usize, base: &str, sub: &str) -> Answer {
    let sent = http
        .get(format!("{base}/v1/apps/{APP}/credentials"))
        .bearer_auth(hs256_token(json!({ "sub": sub })))
        .send()
        .await;
    match sent {
        Ok(res) => {
            let status = res.status().as_u16();
            let body = res.json::<Value>().await.unwrap_or(Value::Null);
            Answer {
                replica,
                status,
                body,
            }
        }
        Err(e) => Answer {
            replica,
            status: 0,
            body: json!({ "error": e.to_string() }),
        },
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The most calls in any window of `window_ms` (each call opens one), and how many calls.
pub fn busiest_window(calls: &[i64], window_ms: i64) -> usize {
    let mut sorted = calls.to_vec();
    sorted.sort_unstable();
    let mut best = 0;
    let mut end = 0;
    for start in 0..sorted.len() {
        while end < sorted.len() && sorted[end] < sorted[start] + window_ms {
            end += 1;
        }
        best = best.max(end - start);
    }
    best
}

#[test]
fn the_busiest_window_is_found() {
    assert_eq!(busiest_window(&[0, 500, 999, 1000, 1500, 1600], 1000), 4);
    assert_eq!(busiest_window(&[], 1000), 0);
}
