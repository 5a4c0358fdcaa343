//! Prometheus metrics in the text exposition format, labelled per app.
//!
//! Only apps that exist get their own label value; requests for unknown apps are counted
//! under `app="_unknown"` so a client cannot grow the label set.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use policy_store::Outcome;

/// Latency bucket bounds, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A latency histogram of lock-free counters: an observation is three relaxed increments
/// (its own bucket, the count and the sum), and rendering adds the buckets up.
#[derive(Default)]
struct Histogram {
    /// Observations per bucket (not cumulative); the last one is above every bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS.partition_point(|bound| *bound < s);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// One app's request counters, by outcome, and its latency histogram.
#[derive(Default)]
struct AppRequests {
    by_outcome: [AtomicU64; Outcome::ALL.len()],
    latency: Histogram,
}

/// STS call results, in the order they are rendered.
const STS_RESULTS: [&str; 3] = ["error", "ok", "unavailable"];

/// One app's STS calls by result, and their latency.
#[derive(Default)]
struct StsCalls {
    by_result: [AtomicU64; STS_RESULTS.len()],
    latency: Histogram,
}

/// Per-app series: a read lock and relaxed increments per request; the write lock only for
/// an app's first request.
struct PerApp<T>(RwLock<BTreeMap<String, Arc<T>>>);

impl<T: Default> Default for PerApp<T> {
    fn default() -> Self {
        Self(RwLock::default())
    }
}

impl<T: Default> PerApp<T> {
    fn get(&self, app: &str) -> Arc<T> {
        if let Some(t) = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(app)
        {
            return t.clone();
        }
        let mut all = self.0.write().unwrap_or_else(PoisonError::into_inner);
        all.entry(app.to_owned()).or_default().clone()
    }

    fn snapshot(&self) -> Vec<(String, Arc<T>)> {
        let all = self.0.read().unwrap_or_else(PoisonError::into_inner);
        all.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

#[derive(Default)]
pub struct Metrics {
    /// Looked up by `&str`, so the hot path allocates only for an app's first request.
    requests: PerApp<AppRequests>,
    sts_calls: PerApp<StsCalls>,
    audit_batches: AtomicU64,
    audit_rows: AtomicU64,
    audit_failures: AtomicU64,
    /// Live replicas, this one included (membership).
    cluster_members: AtomicU64,
    /// Local misses answered through the shared credential table, by result.
    shared_credentials: Mutex<BTreeMap<&'static str, u64>>,
    audit_abandoned: AtomicU64,
    mints_refused_stalled: AtomicU64,
    audit_amended: AtomicU64,
    audit_amend_failures: AtomicU64,
    audit_rejected_rows: AtomicU64,
    refusal_rows_written: AtomicU64,
    refusal_summary_rows: AtomicU64,
    refusal_folded: AtomicU64,
    refusal_dropped: [AtomicU64; RefusalDrop::ALL.len()],
    auth_cooldowns: AtomicU64,
    auth_cooldown_refusals: AtomicU64,
}

/// Why refusal rows were not written (`stsgate_audit_refusal_dropped_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalDrop {
    /// The insert failed or did not answer in time.
    WriteFailed,
    /// A new summary row was needed while `max_summaries` were being counted.
    SummariesFull,
    /// The lane had already stopped (shutdown).
    Stopped,
}

impl RefusalDrop {
    const ALL: [RefusalDrop; 3] = [
        RefusalDrop::WriteFailed,
        RefusalDrop::SummariesFull,
        RefusalDrop::Stopped,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RefusalDrop::WriteFailed => "write_failed",
            RefusalDrop::SummariesFull => "summaries_full",
            RefusalDrop::Stopped => "stopped",
        }
    }
}

/// Prometheus label values escape `\`, `"` and newlines.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn request(&self, app: &str, outcome: Outcome, latency: Duration) {
        let entry = self.requests.get(app);
        entry.by_outcome[outcome as usize].fetch_add(1, Ordering::Relaxed);
        entry.latency.observe(latency);
    }

    /// `result` is `ok`, `error` (STS refused) or `unavailable`.
    pub fn sts_call(&self, app: &str, result: &'static str, latency: Duration) {
        let calls = self.sts_calls.get(app);
        let i = STS_RESULTS.iter().position(|r| *r == result);
        // An unknown result is a bug in the caller: count it as an error rather than lose it.
        calls.by_result[i.unwrap_or(0)].fetch_add(1, Ordering::Relaxed);
        calls.latency.observe(latency);
    }

    pub fn audit_batch(&self, rows: usize, ok: bool) {
        self.audit_batches.fetch_add(1, Ordering::Relaxed);
        self.audit_rows.fetch_add(rows as u64, Ordering::Relaxed);
        if !ok {
            self.audit_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn set_cluster_members(&self, live: u64) {
        self.cluster_members.store(live, Ordering::Relaxed);
    }

    /// `result` of a local miss in the shared credential table: `hit` (another replica's
    /// credential), `waited` (after waiting for another replica's mint), `minted` (this
    /// replica claimed the mint), `gave_up` (waited out another's claim), `error`, or
    /// `deadline` (the request's database deadline ran out there: answered 503).
    pub fn shared_credential(&self, result: &'static str) {
        *self
            .shared_credentials
            .lock()
            .unwrap()
            .entry(result)
            .or_default() += 1;
    }

    /// A row whose waiter answered 503 (or went away) before its commit started.
    pub fn audit_abandoned(&self) {
        self.audit_abandoned.fetch_add(1, Ordering::Relaxed);
    }

    /// A miss answered 503 without calling STS: an issuance-log commit was overdue.
    pub fn mint_refused_stalled(&self) {
        self.mints_refused_stalled.fetch_add(1, Ordering::Relaxed);
    }

    /// Rows that committed after their clients were answered, rewritten to what they got.
    pub fn audit_amended(&self, rows: u64) {
        self.audit_amended.fetch_add(rows, Ordering::Relaxed);
    }

    pub fn audit_amend_failed(&self, rows: usize) {
        self.audit_amend_failures
            .fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// Rows the database refused on their own (after their batch was retried row by row).
    pub fn audit_rejected(&self, rows: usize) {
        self.audit_rejected_rows
            .fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub fn refusal_written(&self, rows: usize, summaries: bool) {
        let counter = if summaries {
            &self.refusal_summary_rows
        } else {
            &self.refusal_rows_written
        };
        counter.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub fn refusal_folded(&self) {
        self.refusal_folded.fetch_add(1, Ordering::Relaxed);
    }

    pub fn refusal_dropped(&self, reason: RefusalDrop, requests: u64) {
        self.refusal_dropped[reason as usize].fetch_add(requests, Ordering::Relaxed);
    }

    /// A source address entered its authentication-failure cool-down.
    pub fn auth_cooldown_started(&self) {
        self.auth_cooldowns.fetch_add(1, Ordering::Relaxed);
    }

    /// A request answered 429 by the cool-down, before its token was verified.
    pub fn auth_cooldown_refused(&self) {
        self.auth_cooldown_refusals.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, cache_entries: u64) -> String {
        let mut out = String::new();
        out.push_str("# HELP stsgate_requests_total Credential requests by app and outcome.\n");
        out.push_str("# TYPE stsgate_requests_total counter\n");
        let requests = self.requests.snapshot();
        for (app, r) in &requests {
            for outcome in Outcome::ALL {
                let n = r.by_outcome[outcome as usize].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "stsgate_requests_total{{app=\"{}\",outcome=\"{}\"}} {n}",
                        escape(app),
                        outcome.as_str()
                    );
                }
            }
        }
        out.push_str("# HELP stsgate_request_duration_seconds Credential request latency.\n");
        out.push_str("# TYPE stsgate_request_duration_seconds histogram\n");
        for (app, r) in &requests {
            r.latency.render(
                &mut out,
                "stsgate_request_duration_seconds",
                &format!("app=\"{}\"", escape(app)),
            );
        }
        out.push_str("# HELP stsgate_sts_calls_total STS calls by app and result.\n");
        out.push_str("# TYPE stsgate_sts_calls_total counter\n");
        let sts_calls = self.sts_calls.snapshot();
        for (app, calls) in &sts_calls {
            for (result, n) in STS_RESULTS.iter().zip(&calls.by_result) {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "stsgate_sts_calls_total{{app=\"{}\",result=\"{result}\"}} {n}",
                        escape(app)
                    );
                }
            }
        }
        out.push_str("# HELP stsgate_sts_duration_seconds STS call latency, retries included.\n");
        out.push_str("# TYPE stsgate_sts_duration_seconds histogram\n");
        for (app, calls) in &sts_calls {
            calls.latency.render(
                &mut out,
                "stsgate_sts_duration_seconds",
                &format!("app=\"{}\"", escape(app)),
            );
        }
        let _ = writeln!(
            out,
            "# HELP stsgate_credential_cache_entries Cached credentials on this replica.\n# TYPE stsgate_credential_cache_entries gauge\nstsgate_credential_cache_entries {cache_entries}"
        );
        let _ = writeln!(
            out,
            "# HELP stsgate_audit_batches_total Issuance-log group commits.\n# TYPE stsgate_audit_batches_total counter\nstsgate_audit_batches_total {}",
            self.audit_batches.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP stsgate_audit_rows_total Issuance-log rows written or attempted.\n# TYPE stsgate_audit_rows_total counter\nstsgate_audit_rows_total {}",
            self.audit_rows.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP stsgate_audit_failures_total Issuance-log batches that failed to commit.\n# TYPE stsgate_audit_failures_total counter\nstsgate_audit_failures_total {}",
            self.audit_failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP stsgate_cluster_members Live replicas in the cluster, this one included.\n# TYPE stsgate_cluster_members gauge\nstsgate_cluster_members {}",
            self.cluster_members.load(Ordering::Relaxed)
        );
        out.push_str("# HELP stsgate_shared_credentials_total Local cache misses by what the cluster's shared credential table gave (alone: the replica was the only live one and did not use it).\n");
        out.push_str("# TYPE stsgate_shared_credentials_total counter\n");
        for (result, n) in self.shared_credentials.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "stsgate_shared_credentials_total{{result=\"{result}\"}} {n}"
            );
        }
        for (name, help, v) in [
            (
                "stsgate_audit_abandoned_total",
                "Credential rows not committed because their request's deadline passed (answered 503) or the client left while queued.",
                &self.audit_abandoned,
            ),
            (
                "stsgate_mints_refused_stalled_total",
                "Cache misses answered 503 without an STS call because an issuance-log commit had waited half the database deadline (a stalled database).",
                &self.mints_refused_stalled,
            ),
            (
                "stsgate_audit_amended_total",
                "Credential rows that committed after their client was answered without the credential, rewritten to what the client got.",
                &self.audit_amended,
            ),
            (
                "stsgate_audit_amend_failures_total",
                "Credential rows that may have committed after their client got no credential and could not be amended (see the error log).",
                &self.audit_amend_failures,
            ),
            (
                "stsgate_audit_rejected_rows_total",
                "Credential rows the database refused on their own (answered 503).",
                &self.audit_rejected_rows,
            ),
            (
                "stsgate_audit_refusal_rows_total",
                "Refusal rows written one per request.",
                &self.refusal_rows_written,
            ),
            (
                "stsgate_audit_refusal_summary_rows_total",
                "Summary rows written for folded refusals.",
                &self.refusal_summary_rows,
            ),
            (
                "stsgate_audit_refusal_folded_total",
                "Refusals folded into a summary row (source address over its rate, or the lane full).",
                &self.refusal_folded,
            ),
            (
                "stsgate_auth_cooldowns_total",
                "Times a source address entered its authentication-failure cool-down.",
                &self.auth_cooldowns,
            ),
            (
                "stsgate_auth_cooldown_refusals_total",
                "Requests answered 429 by an authentication-failure cool-down, before token verification.",
                &self.auth_cooldown_refusals,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP stsgate_audit_refusal_dropped_total Refusals whose row (or summary) could not be written, by reason.\n# TYPE stsgate_audit_refusal_dropped_total counter\n");
        for reason in RefusalDrop::ALL {
            let _ = writeln!(
                out,
                "stsgate_audit_refusal_dropped_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                self.refusal_dropped[reason as usize].load(Ordering::Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms_per_app() {
        let m = Metrics::default();
        m.request("demo", Outcome::Issued, Duration::from_millis(3));
        m.request("demo", Outcome::Cached, Duration::from_micros(200));
        m.request("demo", Outcome::Cached, Duration::from_micros(300));
        m.sts_call("demo", "ok", Duration::from_millis(2));
        let text = m.render(1);
        assert!(text.contains("stsgate_requests_total{app=\"demo\",outcome=\"cached\"} 2"));
        assert!(text.contains("stsgate_requests_total{app=\"demo\",outcome=\"issued\"} 1"));
        assert!(text.contains("stsgate_request_duration_seconds_count{app=\"demo\"} 3"));
        assert!(
            text.contains("stsgate_request_duration_seconds_bucket{app=\"demo\",le=\"0.0005\"} 2")
        );
        assert!(text.contains("stsgate_sts_calls_total{app=\"demo\",result=\"ok\"} 1"));
        assert!(text.contains("stsgate_credential_cache_entries 1"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
