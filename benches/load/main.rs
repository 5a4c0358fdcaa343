//! Load benchmark of the release binaries, driven from outside by wrk (`scripts/bench`).
//!
//! One run measures, with `wrk -t2 -c64 -d<STSGATE_BENCH_SECS>s --latency`:
//!   - the emulator called directly with one TC3-signed GetFederationToken replayed (the STS
//!     ceiling: every replay mints a credential);
//!   - for each of three gateway settings (restarting the gateway between them): `/healthz`
//!     (the in-process ceiling), a cache hit (one user's JWT repeated) and a cache miss (a new
//!     subject on every request, from pre-generated JWTs that never repeat within a run).
//!     The settings: the defaults a README user gets (info access log written to a file,
//!     `DATABASE_URL` without `sslmode`, so TLS where the server offers it), the access log on
//!     without TLS, and `RUST_LOG=warn` without TLS;
//!   - the gateway's RSS with 0, 100k and 300k cached credentials, against the credential's
//!     own size;
//!   - `issuance_log` rows per run against the requests answered;
//!   - paced cache hits with no flood and under a flood of about 2,000 refused requests a
//!     second from one other address and from many (`flood.rs`).
//!
//! Prints one table; asserts nothing about speed. `-- --profile` instead records `perf` call
//! graphs of the gateway under the default-settings hit and miss loads (`scripts/profile`).

mod flood;
mod procs;
mod report;
mod seed;
mod wrk;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use policy_store::testing::fresh_database;
use serde_json::Value;
use sqlx::Connection as _;

use procs::{BIN, CpuSample, CpuSplit, Proc};
use report::{Row, RssFigures, SettingInfo};

/// One way of configuring the gateway.
pub struct Setting {
    pub key: &'static str,
    pub label: &'static str,
    /// `RUST_LOG` unset: the default `info` filter, so one access-log line per request.
    pub info_log: bool,
    /// `DATABASE_URL` without `sslmode` (sqlx's default `prefer`: TLS when the server has it).
    pub tls: bool,
}

pub const SETTINGS: [Setting; 3] = [
    Setting {
        key: "default",
        label: "default",
        info_log: true,
        tls: true,
    },
    Setting {
        key: "log",
        label: "log, no TLS",
        info_log: true,
        tls: false,
    },
    Setting {
        key: "warn",
        label: "warn, no TLS",
        info_log: false,
        tls: false,
    },
];

/// Cached credentials at which the gateway's RSS is read.
const RSS_STEPS: [usize; 2] = [100_000, 300_000];

struct Bench {
    dir: PathBuf,
    db_url: String,
    emulator_url: String,
    emulator_pid: u32,
    http: reqwest::Client,
    cores: usize,
    secs: u64,
    profile: bool,
}

impl Bench {
    /// Cache misses on the gateway at `gw` (app `miss-<key>`): a new subject on every request,
    /// never repeated within the run.
    async fn measure_miss(
        &self,
        gw: Option<(u32, &str)>,
        key: &str,
        label: &str,
        direct_rps: f64,
    ) -> Row {
        let (_, base) = gw.expect("a gateway");
        let miss_app = format!("miss-{key}");
        let per_thread = (direct_rps * self.secs as f64 * 0.75) as usize + 2_000;
        let files = self.dir.join(format!("tokens-{key}-"));
        seed::token_files(&files, &miss_app, wrk::THREADS, per_thread);
        let script = wrk::token_script(
            &self.dir.join("miss.lua"),
            &format!("/v1/apps/{miss_app}/credentials"),
            &files,
        );
        let (r, cpu, per_commit) = self
            .measure("miss", gw, base, wrk::Load::Script(&script))
            .await;
        seed::remove_token_files(&files, wrk::THREADS);
        let mut row = Row::new(&format!("cache miss, {label}"), r, cpu);
        row.rows_per_commit = per_commit;
        row.app = Some((miss_app, 0));
        row.baseline = Some(report::STS_ROW.into());
        row
    }
}

/// The miss path of a replica in a cluster: the default settings with a second replica's
/// membership row (fresh for the next hour, removed afterwards), so the gateway counts two
/// live members and claims each miss's mint in the shared credential table, as every replica
/// of a cluster does, instead of taking the lone replica's path.
async fn measure_cluster_miss(bench: &Bench, http: &reqwest::Client, direct_rps: f64) -> Row {
    let mut db = sqlx::PgConnection::connect(&bench.db_url).await.unwrap();
    sqlx::query(
        "INSERT INTO cluster_members (id, host, public_addr, admin_addr, version, last_beat) \
         VALUES ($1::uuid, 'bench-peer', '127.0.0.1:1', '127.0.0.1:2', 'bench', \
                 now() + interval '1 hour')",
    )
    .bind(PEER)
    .execute(&mut db)
    .await
    .unwrap();
    let (mut gateway, base) = bench.start_gateway(&SETTINGS[0], CLUSTER_KEY, &[]);
    gateway.wait_ready(http, &format!("{base}/readyz")).await;
    let mut members = None;
    for _ in 0..100 {
        let text = metrics_text(http, &base).await.unwrap_or_default();
        members = metric(&text, "stsgate_cluster_members");
        if members == Some(2.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if members != Some(2.0) {
        gateway.stop();
        panic!("the gateway never counted the peer (stsgate_cluster_members {members:?})");
    }
    let gw = Some((gateway.pid(), base.as_str()));
    let row = bench
        .measure_miss(gw, CLUSTER_KEY, CLUSTER_LABEL, direct_rps)
        .await;
    let log = gateway.log.clone();
    gateway.stop();
    if std::env::var_os("STSGATE_BENCH_KEEP_LOGS").is_none() {
        let _ = std::fs::remove_file(&log);
    }
    sqlx::query("DELETE FROM cluster_members WHERE id = $1::uuid")
        .bind(PEER)
        .execute(&mut db)
        .await
        .unwrap();
    row
}

/// The second replica of [`measure_cluster_miss`].
const PEER: &str = "00000000-0000-4000-8000-00000000be2c";
const CLUSTER_KEY: &str = "cluster";
const CLUSTER_LABEL: &str = "in a cluster";

fn with_sslmode_disable(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}sslmode=disable")
}

impl Bench {
    /// Starts `stsgate serve` with `setting`; its output goes to `target/bench/gateway-<log>.log`.
    fn start_gateway(
        &self,
        setting: &Setting,
        log: &str,
        extra: &[(&str, &str)],
    ) -> (Proc, String) {
        let public = procs::free_port();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .env(
                "DATABASE_URL",
                if setting.tls {
                    self.db_url.clone()
                } else {
                    with_sslmode_disable(&self.db_url)
                },
            )
            .env("STSGATE_MASTER_KEY", seed::master_key())
            .env("STSGATE_PUBLIC_LISTEN", format!("127.0.0.1:{public}"))
            .env(
                "STSGATE_ADMIN_LISTEN",
                format!("127.0.0.1:{}", procs::free_port()),
            )
            .env("STSGATE_STS__ENDPOINT", format!("{}/", self.emulator_url));
        if !setting.info_log {
            cmd.env("RUST_LOG", "warn");
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        // `STSGATE_BENCH_GATEWAY_ENV="K=V K=V"`: more settings for every gateway started (to
        // see what one costs; the table then no longer shows the defaults).
        if let Ok(more) = std::env::var("STSGATE_BENCH_GATEWAY_ENV") {
            for pair in more.split_whitespace() {
                let (k, v) = pair
                    .split_once('=')
                    .expect("STSGATE_BENCH_GATEWAY_ENV holds K=V pairs");
                cmd.env(k, v);
            }
        }
        let log = self.dir.join(format!("gateway-{log}.log"));
        let proc = Proc::spawn(&format!("gateway ({})", setting.label), cmd, &self.dir, log);
        (proc, format!("http://127.0.0.1:{public}"))
    }

    fn cpu(&self, gateway: Option<u32>) -> CpuSample {
        CpuSample::take(gateway, self.emulator_pid)
    }

    /// One wrk run, with the CPU split and the gateway's group commits measured around it
    /// (and `perf record` on the gateway when profiling).
    async fn measure(
        &self,
        name: &str,
        gateway: Option<(u32, &str)>,
        url: &str,
        load: wrk::Load<'_>,
    ) -> (wrk::Report, CpuSplit, Option<f64>) {
        let pid = gateway.map(|g| g.0);
        let perf = match (self.profile, pid) {
            (true, Some(pid)) => Some(start_perf(pid, &self.dir.join(format!("perf-{name}.data")))),
            _ => None,
        };
        let commits_before = match gateway {
            Some((_, base)) => audit_counters(&self.http, base).await,
            None => None,
        };
        let before = self.cpu(pid);
        let report = wrk::run(url, self.secs, load);
        let after = self.cpu(pid);
        if let Some(perf) = perf {
            stop_perf(perf);
        }
        let commits_after = match gateway {
            Some((_, base)) => audit_counters(&self.http, base).await,
            None => None,
        };
        let rows_per_commit = match (commits_before, commits_after) {
            (Some((b0, r0)), Some((b1, r1))) if b1 > b0 => Some((r1 - r0) / (b1 - b0)),
            _ => None,
        };
        (
            report,
            CpuSplit::between(&before, &after, self.cores),
            rows_per_commit,
        )
    }
}

/// `perf record` of `pid` with DWARF call graphs (Rust code has no frame pointers).
fn start_perf(pid: u32, out: &Path) -> Child {
    // Otherwise perf keeps the previous recording as <out>.old.
    let _ = std::fs::remove_file(out);
    let child = Command::new("perf")
        .args(["record", "-F", "499", "--call-graph", "dwarf,16384", "-p"])
        .arg(pid.to_string())
        .arg("-o")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting perf (scripts/profile checks it is installed)");
    std::thread::sleep(Duration::from_millis(500));
    child
}

fn stop_perf(mut perf: Child) {
    procs::signal(perf.id(), "INT");
    let _ = perf.wait();
}

async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> (u16, Value) {
    let r = http.get(url).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Bytes of the credential itself as returned: session token, TmpSecretId, TmpSecretKey and
/// the STS RequestId.
fn credential_bytes(body: &Value) -> (usize, String) {
    let len = |v: &Value| v.as_str().map_or(0, str::len);
    let c = &body["credentials"];
    let parts = [
        ("token", len(&c["sessionToken"])),
        ("tmpSecretId", len(&c["tmpSecretId"])),
        ("tmpSecretKey", len(&c["tmpSecretKey"])),
        ("requestId", len(&body["requestId"])),
    ];
    let detail = parts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(" + ");
    (parts.iter().map(|p| p.1).sum(), detail)
}

/// Sends `count` requests for distinct subjects `<prefix>-<n>` (64 at a time); returns how
/// many were not answered 200 (a 503 is a correct answer when the database stalls, so it is
/// reported, not fatal: a panic here would lose the whole table).
async fn fill(http: &reqwest::Client, url: &str, prefix: &str, count: usize) -> u64 {
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let key = Arc::new(seed::jwt_key());
    let now = seed::unix_now();
    let workers: Vec<_> = (0..wrk::CONNECTIONS)
        .map(|_| {
            let (http, url, prefix) = (http.clone(), url.to_owned(), prefix.to_owned());
            let (next, failed, key) = (next.clone(), failed.clone(), key.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        return;
                    }
                    let token = seed::jwt(&key, &format!("{prefix}-{n}"), now);
                    let ok = http
                        .get(&url)
                        .bearer_auth(token)
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    failed.load(Ordering::Relaxed)
}

async fn metrics_text(http: &reqwest::Client, base: &str) -> Option<String> {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The gateway's own count of cached credentials (`/metrics`).
async fn cache_entries(http: &reqwest::Client, base: &str) -> Option<u64> {
    let text = metrics_text(http, base).await?;
    metric(&text, "stsgate_credential_cache_entries").map(|v| v as u64)
}

/// (group commits, rows) of the issuance log so far (`/metrics`).
async fn audit_counters(http: &reqwest::Client, base: &str) -> Option<(f64, f64)> {
    let text = metrics_text(http, base).await?;
    Some((
        metric(&text, "stsgate_audit_batches_total")?,
        metric(&text, "stsgate_audit_rows_total")?,
    ))
}

/// Connections of the database other than this one, and how many of them use TLS.
async fn tls_connections(db_url: &str) -> (i64, i64) {
    let mut conn = sqlx::PgConnection::connect(&with_sslmode_disable(db_url))
        .await
        .unwrap();
    let row: (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*)
         FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid
         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    row
}

async fn emulator_issued(http: &reqwest::Client, emulator_url: &str) -> (u64, u64) {
    let stats: Value = http
        .get(format!("{emulator_url}/_emulator/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let errors = stats["errors"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
    (stats["issued"].as_u64().unwrap_or(0), errors)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    sts_core::install_crypto_provider();
    let profile = std::env::args().any(|a| a == "--profile");
    // `STSGATE_BENCH_ONLY=rss` or `=flood` runs only that part; `=paths` only the baselines,
    // the default settings' hit and miss and the miss in a cluster (for working on them).
    let only = std::env::var("STSGATE_BENCH_ONLY").ok();
    if let Some(part) = &only {
        assert!(
            ["rss", "flood", "paths"].contains(&part.as_str()),
            "STSGATE_BENCH_ONLY is rss, flood or paths, not {part:?}"
        );
    }
    let paths_only = only.as_deref() == Some("paths");
    let only = only.filter(|_| !paths_only);
    let secs: u64 = std::env::var("STSGATE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .expect("the binary lives in target/<profile>/")
        .join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    let load_before = procs::load_average();

    // Database and apps: one app per gateway run, so the issuance log counts per run.
    let db = fresh_database().await.expect("a scratch database");
    let (server_ssl, server_version): (String, String) =
        sqlx::query_as("SELECT current_setting('ssl'), current_setting('server_version')")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let mut apps = vec!["rss".to_owned(), flood::APP.to_owned()];
    for s in &SETTINGS {
        apps.push(format!("hit-{}", s.key));
        apps.push(format!("miss-{}", s.key));
    }
    apps.push(format!("miss-{CLUSTER_KEY}"));
    for app in &apps {
        seed::create_app(&db.pool, app).await;
    }
    // Only the gateway's connections remain, for the TLS check.
    db.pool.close().await;

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(wrk::CONNECTIONS)
        .build()
        .unwrap();

    let emulator_port = procs::free_port();
    let mut emulator_cmd = Command::new(BIN);
    emulator_cmd
        .args([
            "emulator",
            "--listen",
            &format!("127.0.0.1:{emulator_port}"),
        ])
        .args(["--account", &seed::emulator_account()])
        // The STS stand-in must not throttle the miss path (its default is 600/s per account).
        .args(["--rate-limit", "100000000"])
        .env("RUST_LOG", "warn");
    let mut emulator = Proc::spawn("emulator", emulator_cmd, &dir, dir.join("emulator.log"));
    let emulator_url = format!("http://127.0.0.1:{emulator_port}");
    emulator
        .wait_ready(&http, &format!("{emulator_url}/_emulator/stats"))
        .await;

    let bench = Bench {
        dir: dir.clone(),
        db_url: db.url.clone(),
        emulator_url: emulator_url.clone(),
        emulator_pid: emulator.pid(),
        http: http.clone(),
        cores,
        secs,
        profile,
    };
    let mut rows: Vec<Row> = Vec::new();
    if let Some(part) = &only {
        if part == "rss" {
            report::print_rss(&measure_rss(&bench).await, &count_rows(&db.url).await);
        } else {
            let flood = flood::measure(&bench).await;
            flood::print(&flood);
        }
        emulator.stop();
        return;
    }

    // The STS ceiling: one signed request replayed.
    let (headers, body) = seed::signed_federation_request(&format!("127.0.0.1:{emulator_port}"));
    let mut check = http.post(format!("{emulator_url}/")).body(body.clone());
    for (k, v) in &headers {
        check = check.header(*k, v);
    }
    let answer = check.send().await.unwrap().text().await.unwrap();
    assert!(
        answer.contains("TmpSecretId"),
        "the signed request was refused: {answer}"
    );
    let script = wrk::post_script(&dir.join("sts.lua"), &headers, &body);
    let (issued_before, errors_before) = emulator_issued(&http, &emulator_url).await;
    let (direct, cpu, _) = bench
        .measure(
            "sts",
            None,
            &format!("{emulator_url}/"),
            wrk::Load::Script(&script),
        )
        .await;
    let (issued_after, errors_after) = emulator_issued(&http, &emulator_url).await;
    let direct_rps = direct.rps;
    rows.push(Row::new(report::STS_ROW, direct, cpu));
    let sts_minted = (issued_after - issued_before, errors_after - errors_before);

    let mut infos = Vec::new();
    for setting in &SETTINGS {
        if (profile || paths_only) && setting.key != "default" {
            continue;
        }
        let (mut gateway, base) = bench.start_gateway(setting, setting.key, &[]);
        gateway.wait_ready(&http, &format!("{base}/readyz")).await;
        let gw = Some((gateway.pid(), base.as_str()));

        let healthz_name = format!("healthz, {}", setting.label);
        if !profile {
            let (r, cpu, _) = bench
                .measure(
                    "healthz",
                    gw,
                    &format!("{base}/healthz"),
                    wrk::Load::Get { headers: &[] },
                )
                .await;
            rows.push(Row::new(&healthz_name, r, cpu));
        }

        // Cache hit: one user. The harness's first request mints the credential.
        let hit_app = format!("hit-{}", setting.key);
        let hit_url = format!("{base}/v1/apps/{hit_app}/credentials");
        let token = seed::jwt(&seed::jwt_key(), "alice", seed::unix_now());
        let (status, first) = get_json(&http, &hit_url, &token).await;
        assert_eq!(status, 200, "cache-hit warm-up: {first}");
        let bearer = format!("Bearer {token}");
        let (r, cpu, per_commit) = bench
            .measure(
                "hit",
                gw,
                &hit_url,
                wrk::Load::Get {
                    headers: &[("Authorization", &bearer)],
                },
            )
            .await;
        let mut row = Row::new(&format!("cache hit, {}", setting.label), r, cpu);
        row.rows_per_commit = per_commit;
        row.app = Some((hit_app, 1));
        if !profile {
            row.baseline = Some(healthz_name.clone());
        }
        rows.push(row);

        rows.push(
            bench
                .measure_miss(gw, setting.key, setting.label, direct_rps)
                .await,
        );

        let (tls, conns) = tls_connections(&bench.db_url).await;
        let log = gateway.log.clone();
        gateway.stop();
        let log_bytes = std::fs::metadata(&log).map_or(0, |m| m.len());
        let keep = std::env::var_os("STSGATE_BENCH_KEEP_LOGS").is_some();
        if !keep {
            // Hundreds of MB per setting: keep only the size.
            let _ = std::fs::remove_file(&log);
        }
        infos.push(SettingInfo {
            label: setting.label,
            rust_log: if setting.info_log {
                "unset (info)"
            } else {
                "warn"
            },
            sslmode: if setting.tls {
                "unset (prefer)"
            } else {
                "disable"
            },
            tls_connections: (tls, conns),
            log: if keep {
                log.display().to_string()
            } else {
                "removed (STSGATE_BENCH_KEEP_LOGS=1 keeps it)".into()
            },
            log_bytes,
        });
    }

    if !profile {
        rows.push(measure_cluster_miss(&bench, &http, direct_rps).await);
    }

    let (rss, flood) = if profile || paths_only {
        (None, None)
    } else {
        (
            Some(measure_rss(&bench).await),
            Some(flood::measure(&bench).await),
        )
    };
    emulator.stop();

    // Durable rows against the requests answered, per app (every gateway is stopped, so every
    // row that will ever be written has been).
    let counts = count_rows(&db.url).await;
    let load_after = procs::load_average();
    report::print(&report::Report {
        secs,
        cores,
        server: format!("PostgreSQL {server_version}, ssl={server_ssl}"),
        load: (load_before, load_after),
        settings: infos,
        rows,
        counts,
        sts_minted,
        rss,
        profile,
    });
    if let Some(flood) = &flood {
        flood::print(flood);
    }
    if profile {
        println!(
            "\nperf data: {}/perf-hit.data, perf-miss.data",
            dir.display()
        );
    }
    drop(db);
}

async fn measure_rss(bench: &Bench) -> RssFigures {
    let capacity = (RSS_STEPS[1] + RSS_STEPS[1] / 3).to_string();
    let setting = &SETTINGS[2];
    let (mut gateway, base) = bench.start_gateway(
        setting,
        "rss",
        &[("STSGATE_CACHE__CREDENTIAL_ENTRIES", &capacity)],
    );
    gateway
        .wait_ready(&bench.http, &format!("{base}/readyz"))
        .await;
    let url = format!("{base}/v1/apps/rss/credentials");
    let pid = gateway.pid();
    let mut rss = vec![(
        0,
        procs::vm_rss_kib(pid),
        cache_entries(&bench.http, &base).await,
    )];
    let token = seed::jwt(&seed::jwt_key(), "rss-first", seed::unix_now());
    let (status, body) = get_json(&bench.http, &url, &token).await;
    assert_eq!(status, 200, "RSS warm-up: {body}");
    let (own, detail) = credential_bytes(&body);
    let mut done = 1;
    let mut not_200 = 0;
    for step in RSS_STEPS {
        not_200 += fill(&bench.http, &url, &format!("rss{done}"), step - done).await;
        done = step;
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss.push((
            step,
            procs::vm_rss_kib(pid),
            cache_entries(&bench.http, &base).await,
        ));
    }
    let log = gateway.log.clone();
    gateway.stop();
    if std::env::var_os("STSGATE_BENCH_KEEP_LOGS").is_none() {
        let _ = std::fs::remove_file(log);
    }
    RssFigures {
        steps: rss,
        credential_bytes: own,
        credential_detail: detail,
        requests: done as u64,
        not_200,
        app: "rss".into(),
        capacity,
    }
}

/// issuance_log rows per app and outcome.
async fn count_rows(db_url: &str) -> BTreeMap<String, BTreeMap<String, i64>> {
    let mut conn = sqlx::PgConnection::connect(&with_sslmode_disable(db_url))
        .await
        .unwrap();
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT app, outcome, count(*) FROM issuance_log GROUP BY app, outcome")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let _ = conn.close().await;
    let mut counts: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (app, outcome, n) in rows {
        counts.entry(app).or_default().insert(outcome, n);
    }
    counts
}
