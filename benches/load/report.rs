//! The one table `scripts/bench` prints.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::procs::CpuSplit;
use crate::wrk;

/// One measured run.
pub struct Row {
    pub name: String,
    pub report: wrk::Report,
    pub cpu: CpuSplit,
    /// The row whose req/s this one is compared with.
    pub baseline: Option<String>,
    /// The app the run used and how many requests the harness itself sent to it.
    pub app: Option<(String, u64)>,
    /// Issuance-log rows per group commit during the run (the gateway's /metrics).
    pub rows_per_commit: Option<f64>,
}

impl Row {
    pub fn new(name: &str, report: wrk::Report, cpu: CpuSplit) -> Self {
        Self {
            name: name.to_owned(),
            report,
            cpu,
            baseline: None,
            app: None,
            rows_per_commit: None,
        }
    }
}

pub struct SettingInfo {
    pub label: &'static str,
    pub rust_log: &'static str,
    pub sslmode: &'static str,
    /// (TLS, all) gateway connections to PostgreSQL after the runs.
    pub tls_connections: (i64, i64),
    pub log: String,
    pub log_bytes: u64,
}

pub struct RssFigures {
    /// (cached credentials, VmRSS KiB, the gateway's own count from /metrics).
    pub steps: Vec<(usize, u64, Option<u64>)>,
    pub credential_bytes: usize,
    pub credential_detail: String,
    pub requests: u64,
    /// Fill requests not answered 200 (they are not cached: the figures are a little low).
    pub not_200: u64,
    pub app: String,
    pub capacity: String,
}

pub struct Report {
    pub secs: u64,
    pub cores: usize,
    pub server: String,
    pub load: (String, String),
    pub settings: Vec<SettingInfo>,
    pub rows: Vec<Row>,
    /// issuance_log rows per app and outcome.
    pub counts: BTreeMap<String, BTreeMap<String, i64>>,
    /// (credentials minted, STS errors) by the emulator during the direct run.
    pub sts_minted: (u64, u64),
    pub rss: Option<RssFigures>,
    pub profile: bool,
}

/// CPU (% of one core) used outside the processes under test above which a run is flagged.
const BUSY_OTHER: f64 = 15.0;

/// The name of the emulator-direct row.
pub const STS_ROW: &str = "emulator direct (STS)";

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Report {
    fn rows_of(&self, app: &str) -> i64 {
        self.counts.get(app).map_or(0, |o| o.values().sum())
    }

    /// A note when an app's rows do not have the outcomes its run is meant to produce: one
    /// `issued` then only `cached` for a hit run, only `issued` for a miss run or the fill.
    fn outcome_note(&self, run: &str, app: &str) -> Option<String> {
        let outcomes = self.counts.get(app)?;
        let n = |o: &str| outcomes.get(o).copied().unwrap_or(0);
        let others: i64 = outcomes
            .iter()
            .filter(|(o, _)| !matches!(o.as_str(), "issued" | "cached"))
            .map(|(_, n)| n)
            .sum();
        let wrong = if app.starts_with("hit-") {
            n("issued") > 1 || others > 0
        } else {
            n("cached") > 0 || others > 0
        };
        wrong.then(|| format!("{run}: issuance_log outcomes {outcomes:?}"))
    }
}

fn rps_of(rows: &[Row], name: &str) -> Option<f64> {
    rows.iter().find(|r| r.name == name).map(|r| r.report.rps)
}

pub fn print(r: &Report) {
    println!();
    if r.profile {
        println!("UNDER PERF (profiling): these figures are perturbed; do not compare them.");
    }
    println!(
        "stsgate load benchmark: wrk -t{} -c{} -d{}s --latency; release binaries; {} cores; {}; \
         load average {} before, {} after",
        wrk::THREADS,
        wrk::CONNECTIONS,
        r.secs,
        r.cores,
        r.server,
        r.load.0,
        r.load.1
    );
    println!("gateway settings (restarted between them; stdout and stderr to a file):");
    for s in &r.settings {
        println!(
            "  {:<13} RUST_LOG {:<13} sslmode {:<15} PostgreSQL connections using TLS: {} of {}; \
             {:.0} MB of log output, {}",
            s.label,
            s.rust_log,
            s.sslmode,
            s.tls_connections.0,
            s.tls_connections.1,
            s.log_bytes as f64 / 1e6,
            s.log
        );
    }
    println!();
    println!(
        "{:<26} {:>9} {:>9} {:>9} {:>7} {:>7} {:>5} {:>9} {:>15} {:>8} {:>15}  CPU % of one core:   gw  sts   pg  wrk other",
        "run",
        "req/s",
        "p50",
        "p99",
        "p99/p50",
        "non-2xx",
        "err",
        "answered",
        "log rows (diff)",
        "rows/txn",
        "ratio",
    );
    let mut notes = Vec::new();
    for row in &r.rows {
        let w = &row.report;
        let ratio = row
            .baseline
            .as_ref()
            .and_then(|b| Some((b, rps_of(&r.rows, b)?)))
            .map_or_else(
                || "baseline".to_owned(),
                |(b, base)| {
                    let short = if b.starts_with("healthz") {
                        "healthz"
                    } else {
                        "STS"
                    };
                    format!("{:.2} x {short}", w.rps / base)
                },
            );
        let (answered, rows) = match &row.app {
            Some((app, extra)) => {
                let answered = w.answered + extra;
                let rows = r.rows_of(app);
                notes.extend(r.outcome_note(&row.name, app));
                let diff = rows - answered as i64;
                if diff < 0 {
                    notes.push(format!(
                        "{}: {} answered requests have no issuance_log row",
                        row.name, -diff
                    ));
                }
                (answered.to_string(), format!("{rows} ({diff:+})"))
            }
            None => (w.answered.to_string(), "-".to_owned()),
        };
        if w.non_2xx + w.socket_errors > 0 {
            notes.push(format!(
                "{}: {} error answers and {} socket errors (STSGATE_BENCH_KEEP_LOGS=1 keeps the \
                 gateway's log in target/bench)",
                row.name, w.non_2xx, w.socket_errors
            ));
        }
        if row.cpu.other > BUSY_OTHER {
            notes.push(format!(
                "{}: something else used {:.0}% of a core during the run: rerun when the \
                 machine is quiet",
                row.name, row.cpu.other
            ));
        }
        if w.tokens_wrapped > 0 {
            notes.push(format!(
                "{}: the token list ran out {} times, so some requests were hits",
                row.name, w.tokens_wrapped
            ));
        }
        let c = &row.cpu;
        println!(
            "{:<26} {:>9.0} {:>9} {:>9} {:>7.1} {:>7} {:>5} {:>9} {:>15} {:>8} {:>15}  {:>22.0} {:>4.0} {:>4.0} {:>4.0} {:>5.0}",
            row.name,
            w.rps,
            ms(w.p50),
            ms(w.p99),
            w.p99.as_secs_f64() / w.p50.as_secs_f64().max(1e-9),
            w.non_2xx,
            w.socket_errors,
            answered,
            rows,
            row.rows_per_commit
                .map_or_else(|| "-".to_owned(), |n| format!("{n:.1}")),
            ratio,
            c.gateway,
            c.emulator,
            c.postgres,
            c.wrk,
            c.other
        );
    }

    println!();
    let (minted, errors) = r.sts_minted;
    let sts_answered = r
        .rows
        .iter()
        .find(|x| x.name == STS_ROW)
        .map_or(0, |x| x.report.answered);
    println!(
        "emulator direct: {minted} credentials minted for {sts_answered} requests answered, \
         {errors} STS errors"
    );
    if minted < sts_answered {
        notes.push(format!(
            "emulator direct: only {minted} of {sts_answered} answers were credentials"
        ));
    }
    let cost = |kind: &str, a: &str, b: &str| {
        let a = rps_of(&r.rows, &format!("{kind}, {a}"))?;
        let b = rps_of(&r.rows, &format!("{kind}, {b}"))?;
        Some(format!("{:.2}", a / b))
    };
    for kind in ["cache hit", "cache miss"] {
        if let (Some(all), Some(log), Some(tls)) = (
            cost(kind, "default", "warn, no TLS"),
            cost(kind, "log, no TLS", "warn, no TLS"),
            cost(kind, "default", "log, no TLS"),
        ) {
            println!(
                "{kind:<10} req/s ratios: default / (warn, no TLS) = {all}; access log: \
                 (log, no TLS) / (warn, no TLS) = {log}; TLS: default / (log, no TLS) = {tls}"
            );
        }
    }

    if let Some(rss) = &r.rss {
        notes.extend(rss_lines(rss, r));
    }
    println!(
        "rows/txn: issuance-log rows per group commit during the run (the gateway's /metrics)."
    );
    println!(
        "log rows (diff): rows minus requests answered (harness warm-up included); up to {} \
         requests in flight when wrk stops are answered and logged after wrk stops counting.",
        wrk::CONNECTIONS
    );
    for n in notes {
        println!("WARNING: {n}");
    }
}

/// The RSS part of the table; returns its warnings.
fn rss_lines(rss: &RssFigures, r: &Report) -> Option<String> {
    println!(
        "gateway RSS (warn, no TLS, cache.credential_entries={}); a credential's own bytes: \
         {} ({}):",
        rss.capacity, rss.credential_bytes, rss.credential_detail
    );
    let mut prev: Option<(usize, u64)> = None;
    for &(n, kib, counted) in &rss.steps {
        let counted = counted.map_or("?".to_owned(), |c| c.to_string());
        match prev {
            None => println!(
                "  {n:>7} cached credentials: {:>7.1} MiB (gateway's count {counted})",
                mib(kib)
            ),
            Some((pn, pkib)) => {
                let per = (kib as f64 - pkib as f64) * 1024.0 / (n - pn) as f64;
                println!(
                    "  {n:>7} cached credentials: {:>7.1} MiB (gateway's count {counted}): \
                     {per:.0} bytes per entry since {pn} = {:.2} x the credential's own bytes",
                    mib(kib),
                    per / rss.credential_bytes.max(1) as f64
                );
            }
        }
        prev = Some((n, kib));
    }
    let rows = r.rows_of(&rss.app);
    println!(
        "  issuance_log rows for the fill: {rows} for {} requests answered ({:+})",
        rss.requests,
        rows - rss.requests as i64
    );
    if rss.not_200 > 0 {
        return Some(format!(
            "RSS fill: {} of {} requests were not answered 200 (see the gateway's log)",
            rss.not_200, rss.requests
        ));
    }
    r.outcome_note("RSS fill", &rss.app)
}

/// Only the RSS part (`STSGATE_BENCH_ONLY=rss`).
pub fn print_rss(rss: &RssFigures, counts: &BTreeMap<String, BTreeMap<String, i64>>) {
    let r = Report {
        secs: 0,
        cores: 0,
        server: String::new(),
        load: (String::new(), String::new()),
        settings: Vec::new(),
        rows: Vec::new(),
        counts: counts.clone(),
        sts_minted: (0, 0),
        rss: None,
        profile: false,
    };
    if let Some(note) = rss_lines(rss, &r) {
        println!("WARNING: {note}");
    }
}
