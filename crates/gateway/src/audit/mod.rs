//! The issuance log's two writers (DESIGN §5.7).
//!
//! - Answers that carry a credential wait for their row to commit ([`AuditWriter::record`]):
//!   a credential is never handed out without its durable row, and a row never says `issued`
//!   or `cached` unless its client got the credential (see [`writer`]).
//! - Refusals are answered at once; their rows go through a separate bounded lane with its
//!   own writer that never delays issuance rows, and a flood from one source address is
//!   folded into summary rows with a count (see [`refusals`]).

mod clean;
mod refusals;
mod writer;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use policy_store::{IssuanceRecord, Store, StoreError};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use clean::{clean, log_text};
pub use refusals::{RefusalConfig, RefusalLane};
pub use writer::{AUDIT_UNAVAILABLE, CLIENT_GONE};

use crate::metrics::Metrics;
use writer::{ABANDONED, Pending, QUEUED, Writer, unanswered};

#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Rows per transaction at most.
    pub max_batch: usize,
    /// Concurrent writer tasks (each holds at most one database connection).
    pub writers: usize,
    /// Rows waiting for a writer at most; beyond that, requests wait for room (within their
    /// deadline).
    pub queue: usize,
    /// The default deadline of [`AuditWriter::record_within`] and of a refusal batch's
    /// commit.
    pub commit_timeout: Duration,
    /// The refusal lane.
    pub refusals: RefusalConfig,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            max_batch: 512,
            writers: 2,
            queue: 16_384,
            commit_timeout: Duration::from_secs(5),
            refusals: RefusalConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("the issuance log could not be written")]
    WriteFailed,
    #[error("the issuance log writer has stopped")]
    Stopped,
    #[error("the issuance log did not commit in time")]
    Timeout,
}

/// A handle to the writer tasks. Cloning shares them. When every handle is dropped, the
/// writers drain what is queued, commit it, and end.
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Pending>,
    refusals: RefusalLane,
    metrics: Arc<Metrics>,
    commit_timeout: Duration,
    commits: Arc<CommitClock>,
}

/// When each issuance writer's current commit was sent, and when the database last answered
/// one (an issuance row's, a refusal row's or an amendment that wrote): a commit that has waited long with no answer from the database since it was sent (to
/// it or to any other commit) says the database has stalled, before any request's deadline
/// runs out. A writer stuck on one dead connection while the others commit is not a stall.
pub(crate) struct CommitClock {
    base: Instant,
    /// Per writer: microseconds from `base` to the start of the commit it is busy with (its
    /// late wait and amendment included), plus one; 0 when idle.
    started: Vec<AtomicU64>,
    /// Microseconds from `base` to the database's last answer to a commit, plus one.
    answered: AtomicU64,
}

impl CommitClock {
    fn new(writers: usize) -> Self {
        Self {
            base: Instant::now(),
            started: (0..writers).map(|_| AtomicU64::new(0)).collect(),
            answered: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_micros() as u64 + 1
    }

    /// Writer `slot` has sent a commit.
    pub(crate) fn start(&self, slot: usize) {
        self.started[slot].store(self.now(), Ordering::Relaxed);
    }

    /// Writer `slot` is done with its commit (answered or given up on).
    pub(crate) fn end(&self, slot: usize) {
        self.started[slot].store(0, Ordering::Relaxed);
    }

    /// The database answered a commit (with success or with an error of its own).
    pub(crate) fn answered(&self) {
        self.answered.fetch_max(self.now(), Ordering::Relaxed);
    }

    /// How long the oldest commit the database has not answered since it was sent has
    /// waited (zero when there is none).
    fn unanswered_for(&self) -> Duration {
        let answered = self.answered.load(Ordering::Relaxed);
        let oldest = self
            .started
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&at| at > answered)
            .min();
        oldest.map_or(Duration::ZERO, |at| {
            Duration::from_micros(self.now().saturating_sub(at))
        })
    }
}

/// How long a waiter whose row's commit has started waits past its deadline for the
/// writer's answer (which the writer sends by the batch's deadline, at most the waiter's).
const ANSWER_GRACE: Duration = Duration::from_secs(1);

impl AuditWriter {
    /// Spawns the issuance writers and the refusal lane's writer. The handles end once every
    /// [`AuditWriter`] is dropped and what was queued is written; join them in order.
    pub fn spawn(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        config: AuditConfig,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let commits = Arc::new(CommitClock::new(config.writers.max(1)));
        let (refusals, refusal_writer) = RefusalLane::spawn(
            store.clone(),
            metrics.clone(),
            config.refusals.clone(),
            config.commit_timeout,
            commits.clone(),
        );
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let min_commit = (config.commit_timeout / 20).max(Duration::from_millis(5));
        let mut handles: Vec<JoinHandle<()>> = (0..config.writers.max(1))
            .map(|slot| {
                tokio::spawn(
                    Writer {
                        slot,
                        commits: commits.clone(),
                        rx: rx.clone(),
                        store: store.clone(),
                        metrics: metrics.clone(),
                        refusals: refusals.clone(),
                        max_batch: config.max_batch.max(1),
                        min_commit,
                    }
                    .run(),
                )
            })
            .collect();
        // Last: it drains what the issuance writers hand it on their way out.
        handles.push(refusal_writer);
        (
            Self {
                tx,
                refusals,
                metrics,
                commit_timeout: config.commit_timeout,
                commits,
            },
            handles,
        )
    }

    /// An issuance-log commit has waited longer than `after` with no answer from the
    /// database, to it or to any commit since it was sent: the database has stalled, and a
    /// new row would not commit in time either.
    pub fn commit_overdue(&self, after: Duration) -> bool {
        self.commits.unanswered_for() > after
    }

    /// Queues a refusal's row and returns at once (see [`RefusalLane::push`]).
    pub fn refusal(&self, record: IssuanceRecord) {
        self.refusals.push(clean(record));
    }

    /// Waits until every refusal row queued so far, and every summary row, is written (tests,
    /// and anything that must read its own refusals back).
    pub async fn flush_refusals(&self) {
        self.refusals.flush().await;
    }

    /// [`AuditWriter::record`] with the configured commit timeout from now.
    pub async fn record_within(&self, record: IssuanceRecord) -> Result<(), AuditError> {
        self.record(record, Instant::now() + self.commit_timeout)
            .await
    }

    /// Queues the row of an answer that carries a credential and waits until it has
    /// committed, at most until `deadline` (the request's own; queueing and the commit share
    /// it). On `Err` the client must get 503, and the row is never left saying `issued` or
    /// `cached`: it is logged as that 503 (best effort) or, when its commit had started,
    /// amended if it committed after all.
    pub async fn record(
        &self,
        record: IssuanceRecord,
        deadline: Instant,
    ) -> Result<(), AuditError> {
        let record = clean(record);
        let permit = match tokio::time::timeout_at(deadline, self.tx.reserve()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(AuditError::Stopped),
            Err(_) => {
                self.metrics.audit_abandoned();
                self.refusals
                    .push(unanswered(record, 503, AUDIT_UNAVAILABLE));
                return Err(AuditError::Timeout);
            }
        };
        let claim = Arc::new(AtomicU8::new(QUEUED));
        let (done, mut wait) = oneshot::channel();
        permit.send(Pending {
            record,
            deadline,
            claim: claim.clone(),
            done,
        });
        match tokio::time::timeout_at(deadline, &mut wait).await {
            Ok(answer) => answer.unwrap_or(Err(AuditError::Stopped)),
            Err(_) => {
                if claim
                    .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    // Still queued: the writer will log it as the 503 we answer.
                    return Err(AuditError::Timeout);
                }
                // Its commit has started and is bounded by a deadline no later than ours.
                match tokio::time::timeout(ANSWER_GRACE, wait).await {
                    Ok(answer) => answer.unwrap_or(Err(AuditError::Stopped)),
                    // The writer amends the row when it finds us gone.
                    Err(_) => Err(AuditError::Timeout),
                }
            }
        }
    }
}

/// Why a background write (an amendment, refusal rows) failed.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// Attempts at a background write while the database reports itself unavailable: a pooled
/// connection dies with the runtime that opened it (an HTTP worker's, at shutdown), and the
/// next attempt gets a fresh one.
const WRITE_ATTEMPTS: u32 = 3;

/// Runs `write` (each attempt bounded by `timeout`) until it succeeds, fails for another
/// reason than unavailability (a timeout included), or [`WRITE_ATTEMPTS`] have been made.
async fn write_with_retries<T, F, Fut>(timeout: Duration, mut write: F) -> Result<T, WriteError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 1;
    loop {
        let error = match tokio::time::timeout(timeout, write()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if e.is_unavailable() => WriteError::Store(e),
            Ok(Err(e)) => return Err(e.into()),
            // Not retried: the write may still land, and a retry would write it twice.
            Err(_) => return Err(WriteError::TimedOut(timeout)),
        };
        if attempt >= WRITE_ATTEMPTS {
            return Err(error);
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs an idempotent `write` (an amendment: running it twice changes nothing more), each
/// attempt bounded by `attempt_at_most`, until it succeeds, fails for another reason than
/// unavailability, or `give_up_after` has passed; `retrying` hears of each failed attempt
/// that is retried.
/// Unlike [`write_with_retries`], an attempt that gets no answer in time is retried too, and
/// the attempts back off (100 ms doubling to 2 s) instead of stopping at a count: a database
/// that stalls, or a pool whose connections are all stuck in a stall, for longer than a few
/// attempts must not leave a row saying `issued` for a client that got 503.
async fn write_idempotent_until<T, F, Fut>(
    give_up_after: Duration,
    attempt_at_most: Duration,
    mut write: F,
    mut retrying: impl FnMut(&WriteError),
) -> Result<T, WriteError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let give_up = Instant::now() + give_up_after;
    let mut pause = Duration::from_millis(100);
    loop {
        let left = give_up.saturating_duration_since(Instant::now());
        let bound = left.min(attempt_at_most);
        let error = match tokio::time::timeout(bound, write()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if e.is_unavailable() => WriteError::Store(e),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => WriteError::TimedOut(bound),
        };
        if Instant::now() + pause >= give_up {
            return Err(error);
        }
        retrying(&error);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests;
