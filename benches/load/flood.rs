//! Legitimate cache hits under a flood of refused requests (issue 8): the p50/p99 of paced
//! cache hits from one address with no flood, then while about 2,000 refused requests a second
//! arrive from another address, then from a new address on every request (so no per-address
//! cool-down can help and every refusal goes through the refusal lane). One gateway with the
//! default settings plus `STSGATE_TRUST_FORWARDED_FOR=true`, so wrk can speak for many
//! addresses through `X-Forwarded-For`.

use std::collections::BTreeMap;
use std::time::Duration;

use jsonwebtoken::EncodingKey;
use sqlx::Connection as _;

use crate::wrk::{self, Load, Shape};
use crate::{Bench, SETTINGS, metrics_text, seed, with_sslmode_disable};

/// The app the flood runs use.
pub const APP: &str = "flood";
const LEGIT_IP: &str = "192.0.2.10";
const FLOOD_IP: &str = "203.0.113.7";
/// Legitimate load: 10 connections, each waiting 10 ms between answer and next request (at
/// most 1,000 req/s).
const LEGIT: Shape = Shape {
    threads: 1,
    connections: 10,
};
const LEGIT_DELAY_MS: u32 = 10;
/// The flood: 20 connections, 9 ms apart, about 2,000 req/s when answered in about 1 ms.
const FLOOD: Shape = Shape {
    threads: 1,
    connections: 20,
};
const FLOOD_DELAY_MS: u32 = 9;

/// Counters of `/metrics` read around each run (sums over labels).
const COUNTERS: [(&str, &str); 5] = [
    ("cool-down 429", "stsgate_auth_cooldown_refusals_total"),
    ("refusal rows", "stsgate_audit_refusal_rows_total"),
    ("summary rows", "stsgate_audit_refusal_summary_rows_total"),
    ("folded", "stsgate_audit_refusal_folded_total"),
    ("dropped", "stsgate_audit_refusal_dropped_total"),
];

pub struct FloodRun {
    pub name: &'static str,
    pub legit: wrk::Report,
    pub flood: Option<wrk::Report>,
    /// Increase of each of [`COUNTERS`] over the run.
    pub counters: Vec<f64>,
}

pub struct FloodReport {
    pub runs: Vec<FloodRun>,
    /// issuance_log of the flood app: outcome → (rows, requests they stand for).
    pub log: BTreeMap<String, (i64, i64)>,
    pub log_bytes: u64,
}

/// Sum of every sample of `name` (all label sets).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .sum()
}

async fn counters(bench: &Bench, base: &str) -> Vec<f64> {
    let text = metrics_text(&bench.http, base).await.unwrap_or_default();
    COUNTERS.iter().map(|(_, m)| metric_sum(&text, m)).collect()
}

pub async fn measure(bench: &Bench) -> FloodReport {
    let setting = &SETTINGS[0];
    let (mut gateway, base) =
        bench.start_gateway(setting, "flood", &[("STSGATE_TRUST_FORWARDED_FOR", "true")]);
    gateway
        .wait_ready(&bench.http, &format!("{base}/readyz"))
        .await;

    let path = format!("/v1/apps/{APP}/credentials");
    let token = seed::jwt(&seed::jwt_key(), "alice", seed::unix_now());
    // The warm-up mints the credential the runs hit (from the legitimate address).
    let warm = bench
        .http
        .get(format!("{base}{path}"))
        .bearer_auth(&token)
        .header("x-forwarded-for", LEGIT_IP)
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 200, "flood warm-up");

    let bearer = format!("Bearer {token}");
    let legit_script = wrk::paced_script(
        &bench.dir.join("legit.lua"),
        &path,
        &[("Authorization", &bearer), ("X-Forwarded-For", LEGIT_IP)],
        LEGIT_DELAY_MS,
    );
    // Well-formed HS256 tokens for a real subject, signed with the wrong key: the most work
    // a refusal can cost (parse, HMAC, compare) before the cool-down starts.
    let forged = seed::jwt(
        &EncodingKey::from_secret(b"not the app's secret").expect("an HS256 key"),
        "alice",
        seed::unix_now(),
    );
    let one_ip = wrk::flood_script(
        &bench.dir.join("flood-one.lua"),
        &path,
        &forged,
        Some(FLOOD_IP),
        FLOOD_DELAY_MS,
    );
    let many_ips = wrk::flood_script(
        &bench.dir.join("flood-many.lua"),
        &path,
        &forged,
        None,
        FLOOD_DELAY_MS,
    );

    let mut runs = Vec::new();
    let plan: [(&'static str, Option<&std::path::Path>); 3] = [
        ("no flood", None),
        ("flood from one address", Some(&one_ip)),
        ("flood from a new address each time", Some(&many_ips)),
    ];
    for (name, flood) in plan {
        let before = counters(bench, &base).await;
        let secs = bench.secs;
        let url = base.clone();
        // The flood starts first and runs a second longer on each side of the measured run.
        let flood_run = flood.map(|script| {
            let (url, script) = (url.clone(), script.to_owned());
            std::thread::spawn(move || {
                wrk::run_shaped(&url, secs + 2, FLOOD, Load::Script(&script))
            })
        });
        if flood_run.is_some() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let legit = wrk::run_shaped(&url, secs, LEGIT, Load::Script(&legit_script));
        let flood = flood_run.map(|t| t.join().expect("the flood's wrk"));
        let after = counters(bench, &base).await;
        runs.push(FloodRun {
            name,
            legit,
            flood,
            counters: after.iter().zip(&before).map(|(a, b)| a - b).collect(),
        });
    }

    let log_path = gateway.log.clone();
    gateway.stop();
    let log_bytes = std::fs::metadata(&log_path).map_or(0, |m| m.len());
    if std::env::var_os("STSGATE_BENCH_KEEP_LOGS").is_none() {
        let _ = std::fs::remove_file(&log_path);
    }
    FloodReport {
        runs,
        log: log_counts(&bench.db_url).await,
        log_bytes,
    }
}

async fn log_counts(db_url: &str) -> BTreeMap<String, (i64, i64)> {
    let mut conn = sqlx::PgConnection::connect(&with_sslmode_disable(db_url))
        .await
        .unwrap();
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT outcome, count(*), sum(count)::bigint FROM issuance_log WHERE app = $1 \
         GROUP BY outcome",
    )
    .bind(APP)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    rows.into_iter().map(|(o, r, n)| (o, (r, n))).collect()
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn statuses(r: &wrk::Report) -> String {
    r.statuses
        .iter()
        .map(|(s, n)| format!("{s}×{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn print(r: &FloodReport) {
    println!();
    println!(
        "flood (issue 8): legitimate cache hits from {LEGIT_IP}, paced (wrk -t{} -c{}, {} ms \
         between requests per connection), while refused requests (HS256 tokens signed with \
         the wrong key) arrive paced at up to {}/s (wrk -t{} -c{}, {} ms apart) from {FLOOD_IP} \
         or from a new address of 198.18.0.0/15 each time; default settings plus \
         STSGATE_TRUST_FORWARDED_FOR=true.",
        LEGIT.threads,
        LEGIT.connections,
        LEGIT_DELAY_MS,
        FLOOD.connections * 1000 / FLOOD_DELAY_MS as usize,
        FLOOD.threads,
        FLOOD.connections,
        FLOOD_DELAY_MS,
    );
    let base = r.runs.first().map(|run| run.legit.p99);
    println!(
        "{:<36} {:>9} {:>8} {:>8} {:>9} {:>16} {:>9} {:<20} {}",
        "run",
        "hit req/s",
        "p50 ms",
        "p99 ms",
        "p99 ×",
        "hit statuses",
        "flood/s",
        "flood statuses",
        COUNTERS
            .iter()
            .map(|(label, _)| *label)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    for run in &r.runs {
        let ratio = match base {
            Some(b) if !b.is_zero() => {
                format!("{:.2}", run.legit.p99.as_secs_f64() / b.as_secs_f64())
            }
            _ => "-".into(),
        };
        let (flood_rps, flood_statuses) = match &run.flood {
            Some(f) => (
                format!("{:.0}", f.rps),
                format!(
                    "{}{}",
                    statuses(f),
                    if f.socket_errors > 0 {
                        format!(" sock-err×{}", f.socket_errors)
                    } else {
                        String::new()
                    }
                ),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<36} {:>9.0} {:>8} {:>8} {:>9} {:>16} {:>9} {:<20} {}",
            run.name,
            run.legit.rps,
            ms(run.legit.p50),
            ms(run.legit.p99),
            ratio,
            statuses(&run.legit),
            flood_rps,
            flood_statuses,
            run.counters
                .iter()
                .map(|v| format!("{v:.0}"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        if run.legit.socket_errors > 0 {
            println!(
                "WARNING: {}: {} socket errors on the legitimate load",
                run.name, run.legit.socket_errors
            );
        }
    }
    println!(
        "issuance_log of app {APP} (outcome: rows, requests they stand for): {}; gateway log \
         {} MB",
        r.log
            .iter()
            .map(|(o, (rows, n))| format!("{o}: {rows}, {n}"))
            .collect::<Vec<_>>()
            .join("; "),
        r.log_bytes / 1_000_000
    );
}
