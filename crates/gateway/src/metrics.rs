//! Prometheus metrics in the text exposition format, labelled per app.
//!
//! Only apps that exist get their own label value; requests for unknown apps are counted
//! under `app="_unknown"` so a client cannot grow the label set.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use policy_store::Outcome;

/// Latency bucket bounds, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if s <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += s;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"{bound}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// One app's request counters, by outcome, and its latency histogram.
#[derive(Default)]
struct AppRequests {
    by_outcome: [u64; Outcome::ALL.len()],
    latency: Histogram,
}

#[derive(Default)]
pub struct Metrics {
    /// Looked up by `&str`, so the hot path allocates only for an app's first request.
    requests: Mutex<BTreeMap<String, AppRequests>>,
    sts_calls: Mutex<BTreeMap<(String, &'static str), u64>>,
    sts_latency: Mutex<BTreeMap<String, Histogram>>,
    audit_batches: AtomicU64,
    audit_rows: AtomicU64,
    audit_failures: AtomicU64,
    /// Live replicas, this one included (membership).
    cluster_members: AtomicU64,
    /// Local misses answered through the shared credential table, by result.
    shared_credentials: Mutex<BTreeMap<&'static str, u64>>,
}

/// Prometheus label values escape `\`, `"` and newlines.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn request(&self, app: &str, outcome: Outcome, latency: Duration) {
        let mut requests = self.requests.lock().unwrap();
        let entry = match requests.get_mut(app) {
            Some(e) => e,
            None => requests.entry(app.to_owned()).or_default(),
        };
        entry.by_outcome[outcome as usize] += 1;
        entry.latency.observe(latency);
    }

    /// `result` is `ok`, `error` (STS refused) or `unavailable`.
    pub fn sts_call(&self, app: &str, result: &'static str, latency: Duration) {
        *self
            .sts_calls
            .lock()
            .unwrap()
            .entry((app.to_owned(), result))
            .or_default() += 1;
        self.sts_latency
            .lock()
            .unwrap()
            .entry(app.to_owned())
            .or_default()
            .observe(latency);
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
    /// replica claimed the mint), `gave_up` (waited out another's claim) or `error`.
    pub fn shared_credential(&self, result: &'static str) {
        *self
            .shared_credentials
            .lock()
            .unwrap()
            .entry(result)
            .or_default() += 1;
    }

    pub fn render(&self, cache_entries: u64) -> String {
        let mut out = String::new();
        out.push_str("# HELP stsgate_requests_total Credential requests by app and outcome.\n");
        out.push_str("# TYPE stsgate_requests_total counter\n");
        let requests = self.requests.lock().unwrap();
        for (app, r) in requests.iter() {
            for outcome in Outcome::ALL {
                let n = r.by_outcome[outcome as usize];
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
        for (app, r) in requests.iter() {
            r.latency.render(
                &mut out,
                "stsgate_request_duration_seconds",
                &format!("app=\"{}\"", escape(app)),
            );
        }
        drop(requests);
        out.push_str("# HELP stsgate_sts_calls_total STS calls by app and result.\n");
        out.push_str("# TYPE stsgate_sts_calls_total counter\n");
        for ((app, result), n) in self.sts_calls.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "stsgate_sts_calls_total{{app=\"{}\",result=\"{result}\"}} {n}",
                escape(app)
            );
        }
        out.push_str("# HELP stsgate_sts_duration_seconds STS call latency, retries included.\n");
        out.push_str("# TYPE stsgate_sts_duration_seconds histogram\n");
        for (app, h) in self.sts_latency.lock().unwrap().iter() {
            h.render(
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
        out.push_str("# HELP stsgate_shared_credentials_total Local cache misses looked up in the cluster's shared credential table, by result.\n");
        out.push_str("# TYPE stsgate_shared_credentials_total counter\n");
        for (result, n) in self.shared_credentials.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "stsgate_shared_credentials_total{{result=\"{result}\"}} {n}"
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
