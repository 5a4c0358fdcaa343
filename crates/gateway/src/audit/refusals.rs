//! The refusal lane: rows of answers that carry no credential (DESIGN §5.7).
//!
//! A refusal is answered at once; its row goes to a bounded queue with its own writer task,
//! so a flood of garbage tokens or made-up app names never shares a queue, a writer or a
//! wait with issuance rows. Rows from one source address beyond `per_ip_per_second`, and
//! rows that find the queue full, are folded into one summary row per (address, app,
//! outcome, minute) whose `count` says how many requests it stands for. A summary row is
//! written once its minute is over (and at shutdown). Nothing is dropped silently: rows that
//! cannot be written or folded are counted in `/metrics` and logged.

use std::collections::HashMap;
use std::slice;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use policy_store::{IssuanceRecord, Outcome, Store};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{CommitClock, WriteError, write_with_retries};
use crate::metrics::{Metrics, RefusalDrop};
use crate::ratelimit::RateLimiter;

#[derive(Debug, Clone)]
pub struct RefusalConfig {
    /// Refusal rows waiting for the writer at most; beyond that they are folded.
    pub queue: usize,
    /// Rows per insert at most.
    pub max_batch: usize,
    /// Refusal rows a second from one source address written one by one; beyond that
    /// (bursts of as many allowed) they are folded into summary rows. 0: never fold by rate.
    pub per_ip_per_second: u32,
    /// Summary rows being counted at most (distinct address, app, outcome, minute); rows
    /// for a new one beyond that are dropped and counted.
    pub max_summaries: usize,
}

impl Default for RefusalConfig {
    fn default() -> Self {
        Self {
            queue: 8_192,
            max_batch: 512,
            per_ip_per_second: 20,
            max_summaries: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FoldKey {
    source_ip: Option<String>,
    app: String,
    outcome: Outcome,
    /// Unix minute of the row's time.
    minute: i64,
}

/// The first row folded under a key, with how many rows it stands for.
struct Summary {
    first: IssuanceRecord,
    count: i32,
}

struct Shared {
    metrics: Arc<Metrics>,
    per_ip: RateLimiter,
    per_ip_per_second: u32,
    max_summaries: usize,
    summaries: Mutex<HashMap<FoldKey, Summary>>,
}

/// What travels down the lane. Nearly every item is a row: boxing it would allocate once per
/// refusal to save queue memory only on the rare flush.
#[allow(clippy::large_enum_variant)]
enum Item {
    Row(IssuanceRecord),
    /// Write what was queued before, and every summary, then answer.
    Flush(oneshot::Sender<()>),
}

/// A handle to the refusal lane; cloning shares it. The writer ends once every handle is
/// dropped, after writing what is queued and every summary.
#[derive(Clone)]
pub struct RefusalLane {
    tx: mpsc::Sender<Item>,
    shared: Arc<Shared>,
}

fn unix_minute(at: OffsetDateTime) -> i64 {
    at.unix_timestamp().div_euclid(60)
}

impl RefusalLane {
    /// The lane and its writer task; a batch insert is bounded by `commit_timeout`.
    /// Its commits tell `commits` that the database answers.
    pub(crate) fn spawn(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        config: RefusalConfig,
        commit_timeout: Duration,
        commits: Arc<CommitClock>,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let shared = Arc::new(Shared {
            metrics,
            per_ip: RateLimiter::new(100_000, Duration::from_secs(60)),
            per_ip_per_second: config.per_ip_per_second,
            max_summaries: config.max_summaries.max(1),
            summaries: Mutex::default(),
        });
        let writer = LaneWriter {
            rx,
            shared: shared.clone(),
            store,
            commit_timeout,
            max_batch: config.max_batch.max(1),
            commits,
        };
        (Self { tx, shared }, tokio::spawn(writer.run()))
    }

    /// Queues a row without waiting: written as is while its source address stays under
    /// the rate and the queue has room, folded into a summary row otherwise.
    pub fn push(&self, record: IssuanceRecord) {
        let s = &self.shared;
        let under_rate = s
            .per_ip
            .check(
                &record.source_ip,
                s.per_ip_per_second,
                Duration::from_secs(1),
            )
            .is_ok();
        if !under_rate {
            self.fold(record);
            return;
        }
        match self.tx.try_send(Item::Row(record)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Item::Row(record))) => self.fold(record),
            Err(_) => s.metrics.refusal_dropped(RefusalDrop::Stopped, 1),
        }
    }

    /// Waits until every row queued before, and every summary row so far (its minute over
    /// or not), has been written or counted as dropped.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Item::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    fn fold(&self, record: IssuanceRecord) {
        let s = &self.shared;
        let key = FoldKey {
            source_ip: record.source_ip.clone(),
            app: record.app.clone(),
            outcome: record.outcome,
            minute: unix_minute(record.at),
        };
        let mut summaries = s.summaries.lock().unwrap_or_else(PoisonError::into_inner);
        let len = summaries.len();
        match summaries.get_mut(&key) {
            Some(summary) => summary.count = summary.count.saturating_add(1),
            None if len < s.max_summaries => {
                summaries.insert(
                    key,
                    Summary {
                        first: record,
                        count: 1,
                    },
                );
            }
            None => {
                drop(summaries);
                s.metrics.refusal_dropped(RefusalDrop::SummariesFull, 1);
                return;
            }
        }
        drop(summaries);
        s.metrics.refusal_folded();
    }
}

impl Shared {
    /// The summaries of minutes before `before_minute` (all with `None`), as rows.
    fn take_summaries(&self, before_minute: Option<i64>) -> Vec<IssuanceRecord> {
        let mut summaries = self
            .summaries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let done: Vec<FoldKey> = summaries
            .keys()
            .filter(|k| before_minute.is_none_or(|m| k.minute < m))
            .cloned()
            .collect();
        done.into_iter()
            .filter_map(|k| summaries.remove(&k))
            .map(|s| IssuanceRecord {
                count: s.count,
                ..s.first
            })
            .collect()
    }
}

struct LaneWriter {
    rx: mpsc::Receiver<Item>,
    shared: Arc<Shared>,
    store: Arc<dyn Store>,
    commit_timeout: Duration,
    max_batch: usize,
    commits: Arc<CommitClock>,
}

impl LaneWriter {
    async fn run(mut self) {
        let mut items = Vec::with_capacity(self.max_batch);
        let mut rows = Vec::with_capacity(self.max_batch);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut items, self.max_batch) => {
                    if n == 0 {
                        break;
                    }
                    let mut flushes = Vec::new();
                    for item in items.drain(..) {
                        match item {
                            Item::Row(r) => rows.push(r),
                            Item::Flush(done) => flushes.push(done),
                        }
                    }
                    self.write(&rows, false).await;
                    rows.clear();
                    if !flushes.is_empty() {
                        self.write_summaries(None).await;
                        for done in flushes {
                            let _ = done.send(());
                        }
                    }
                }
                _ = tick.tick() => {
                    let now = unix_minute(OffsetDateTime::now_utc());
                    self.write_summaries(Some(now)).await;
                }
            }
        }
        self.write_summaries(None).await;
    }

    async fn write_summaries(&self, before_minute: Option<i64>) {
        let summaries = self.shared.take_summaries(before_minute);
        for chunk in summaries.chunks(self.max_batch) {
            self.write(chunk, true).await;
        }
    }

    async fn write(&self, rows: &[IssuanceRecord], summaries: bool) {
        if rows.is_empty() {
            return;
        }
        match self.attempt(rows, summaries).await {
            Ok(()) => {}
            Err(WriteError::Store(e)) if rows.len() > 1 && !e.is_unavailable() => {
                // Refused for its content: each row alone, so a bad row loses only itself.
                tracing::warn!(rows = rows.len(), error = %e, "refusal rows refused; writing them one by one");
                for row in rows {
                    if let Err(e) = self.attempt(slice::from_ref(row), summaries).await {
                        self.dropped(slice::from_ref(row), &e);
                    }
                }
            }
            Err(e) => self.dropped(rows, &e),
        }
    }

    async fn attempt(&self, rows: &[IssuanceRecord], summaries: bool) -> Result<(), WriteError> {
        write_with_retries(self.commit_timeout, || {
            self.store.insert_issuance_batch(rows)
        })
        .await?;
        self.commits.answered();
        self.shared.metrics.refusal_written(rows.len(), summaries);
        Ok(())
    }

    fn dropped(&self, rows: &[IssuanceRecord], problem: &WriteError) {
        let requests: u64 = rows
            .iter()
            .map(|r| u64::from(r.count.max(1).unsigned_abs()))
            .sum();
        self.shared
            .metrics
            .refusal_dropped(RefusalDrop::WriteFailed, requests);
        tracing::error!(rows = rows.len(), requests, error = %problem, "refusal rows could not be written to the issuance log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ip: &str, at: OffsetDateTime) -> IssuanceRecord {
        IssuanceRecord {
            id: 0,
            at,
            app: "_unknown".into(),
            subject: None,
            outcome: Outcome::BadRequest,
            http_status: 404,
            error_code: Some("unknown_app".into()),
            request_id: "r".into(),
            sts_request_id: None,
            tmp_secret_id: None,
            policy_hash: None,
            template_version: None,
            actions: vec![],
            prefix: None,
            duration_seconds: None,
            expired_time: None,
            source_ip: Some(ip.into()),
            user_agent: None,
            latency_us: 1,
            count: 1,
        }
    }

    #[test]
    fn summaries_are_taken_only_once_their_minute_is_over() {
        let metrics = Arc::new(Metrics::default());
        let shared = Shared {
            metrics,
            per_ip: RateLimiter::new(10, Duration::from_secs(60)),
            per_ip_per_second: 1,
            max_summaries: 2,
            summaries: Mutex::default(),
        };
        let t = OffsetDateTime::from_unix_timestamp(600).unwrap();
        let key = |ip: &str, t| FoldKey {
            source_ip: Some(ip.into()),
            app: "_unknown".into(),
            outcome: Outcome::BadRequest,
            minute: unix_minute(t),
        };
        shared.summaries.lock().unwrap().insert(
            key("10.0.0.1", t),
            Summary {
                first: row("10.0.0.1", t),
                count: 7,
            },
        );
        assert!(shared.take_summaries(Some(unix_minute(t))).is_empty());
        let rows = shared.take_summaries(Some(unix_minute(t) + 1));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].count, 7);
        assert!(shared.take_summaries(None).is_empty());
    }
}
