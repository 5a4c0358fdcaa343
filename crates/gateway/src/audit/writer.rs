//! The issuance writers: group commit of the rows whose answer carries a credential
//! (DESIGN §5.7).
//!
//! Writer tasks take whatever rows are queued (up to `max_batch`), insert them in one
//! statement, and answer every waiter. While one batch commits the next one fills, so
//! throughput grows with load instead of paying one commit per request.
//!
//! A row and its answer always agree:
//! - Each row carries its request's deadline. A waiter that gives up while its row is still
//!   queued marks it abandoned (an atomic claim), and the writer logs it as the 503 the
//!   client got, never as `issued`/`cached`.
//! - Once a writer has claimed a row, its commit is bounded by the earliest deadline of the
//!   batch, so every waiter of the batch has its answer by its own deadline.
//! - A commit whose answer has not come by then is answered 503, and the writer keeps
//!   waiting for the database's answer: if the rows did commit after all, they are amended to
//!   what the clients got (`upstream_error`, 503, `audit_unavailable`). The same holds for a
//!   waiter that went away (its client disconnected) after its row was claimed (499,
//!   `client_gone`).
//! - A batch the database refuses for its content (not for being down) is retried row by row,
//!   so one bad row is refused alone.

use std::future::Future;
use std::pin::Pin;
use std::slice;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use policy_store::{IssuanceRecord, Outcome, Store, StoreError};
use time::OffsetDateTime;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;

use super::refusals::RefusalLane;
use super::{AuditError, CommitClock, write_idempotent_until};
use crate::metrics::Metrics;

/// The row is in the queue; its waiter is still waiting.
pub(super) const QUEUED: u8 = 0;
/// A writer has started committing it: the waiter waits for the result.
pub(super) const CLAIMED: u8 = 1;
/// Its waiter answered 503 without it: it must never be written as handed out.
pub(super) const ABANDONED: u8 = 2;

/// The code of a row whose client got 503 because its row did not commit in time.
pub const AUDIT_UNAVAILABLE: &str = "audit_unavailable";
/// The code of a row whose client went away before its answer.
pub const CLIENT_GONE: &str = "client_gone";
const CLIENT_GONE_STATUS: i16 = 499;

/// How long a writer keeps waiting for the database's answer to a commit whose waiters it
/// has already answered 503 (to amend the rows if they committed after all), and then how
/// long it keeps retrying the amendment while the database is unavailable.
const LATE_ANSWER_BACKSTOP: Duration = Duration::from_secs(60);

/// The longest one attempt at an amendment may take before it is retried.
const AMEND_ATTEMPT_AT_MOST: Duration = Duration::from_secs(10);

pub(super) struct Pending {
    pub record: IssuanceRecord,
    pub deadline: Instant,
    pub claim: Arc<AtomicU8>,
    pub done: oneshot::Sender<Result<(), AuditError>>,
}

/// `record` as the row of a request whose client got `status`/`code` instead of its
/// credential. The TmpSecretId stays: that credential was minted but never delivered.
pub(super) fn unanswered(record: IssuanceRecord, status: i16, code: &str) -> IssuanceRecord {
    IssuanceRecord {
        outcome: Outcome::UpstreamError,
        http_status: status,
        error_code: Some(code.to_owned()),
        ..record
    }
}

pub(super) struct Writer {
    /// This writer's place in `commits`.
    pub slot: usize,
    pub commits: Arc<CommitClock>,
    pub rx: Arc<Mutex<mpsc::Receiver<Pending>>>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub refusals: RefusalLane,
    pub max_batch: usize,
    /// Rows with less time left than this are not started (answered 503 at once).
    pub min_commit: Duration,
}

/// Marks a writer busy with a commit in the [`CommitClock`] for as long as it lives.
struct Busy<'a> {
    clock: &'a CommitClock,
    slot: usize,
}

impl<'a> Busy<'a> {
    fn start(clock: &'a CommitClock, slot: usize) -> Self {
        clock.start(slot);
        Self { clock, slot }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.clock.end(self.slot);
    }
}

/// A claimed row and its waiter.
struct Claimed {
    record: IssuanceRecord,
    done: oneshot::Sender<Result<(), AuditError>>,
}

impl Writer {
    pub async fn run(self) {
        let mut batch: Vec<Pending> = Vec::with_capacity(self.max_batch);
        loop {
            {
                // Hold the receiver only while gathering, so another writer can gather the
                // next batch while this one commits.
                let mut rx = self.rx.lock().await;
                if rx.recv_many(&mut batch, self.max_batch).await == 0 {
                    return; // every sender dropped and the queue is empty
                }
            }
            let (claimed, deadline) = self.claim(&mut batch);
            if let Some(deadline) = deadline {
                // Busy from the send until the rows' fate is settled (late wait and
                // amendment included); cleared on every way out, a panic's too.
                let _busy = Busy::start(&self.commits, self.slot);
                self.commit(claimed, deadline).await;
            }
        }
    }

    /// Claims the rows whose waiters still wait and have time left; logs the others as
    /// what their clients got. Returns the claimed rows and the batch's deadline.
    fn claim(&self, batch: &mut Vec<Pending>) -> (Vec<Claimed>, Option<Instant>) {
        let now = Instant::now();
        let mut claimed = Vec::with_capacity(batch.len());
        let mut deadline: Option<Instant> = None;
        for p in batch.drain(..) {
            let too_late = p.deadline.saturating_duration_since(now) < self.min_commit;
            let gone = p.done.is_closed();
            let next = if too_late || gone { ABANDONED } else { CLAIMED };
            let won = p
                .claim
                .compare_exchange(QUEUED, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            if won && next == CLAIMED {
                deadline = Some(deadline.map_or(p.deadline, |d| d.min(p.deadline)));
                claimed.push(Claimed {
                    record: p.record,
                    done: p.done,
                });
                continue;
            }
            // Given up by its waiter (which answers 503), by us just now (too little time
            // left: 503), or its client is gone.
            let _ = p.done.send(Err(AuditError::Timeout));
            self.metrics.audit_abandoned();
            let row = if won && gone && !too_late {
                unanswered(p.record, CLIENT_GONE_STATUS, CLIENT_GONE)
            } else {
                unanswered(p.record, 503, AUDIT_UNAVAILABLE)
            };
            self.refusals.push(row);
        }
        (claimed, deadline)
    }

    async fn commit(&self, claimed: Vec<Claimed>, deadline: Instant) {
        let records: Vec<IssuanceRecord> = claimed.iter().map(|c| c.record.clone()).collect();
        let insert = self.store.insert_issuance_batch(&records);
        tokio::pin!(insert);
        match self.answer_by(insert.as_mut(), deadline).await {
            Some(Ok(())) => {
                self.metrics.audit_batch(records.len(), true);
                self.answer_ok(claimed).await;
            }
            Some(Err(e)) if claimed.len() > 1 && !e.is_unavailable() => {
                // Refused for its content: find the row at fault by trying each alone.
                tracing::warn!(rows = claimed.len(), error = %e, "issuance log batch refused; retrying its rows one by one");
                self.metrics.audit_batch(records.len(), false);
                let mut rest = claimed.into_iter();
                for one in rest.by_ref() {
                    if !self.commit_alone(one, deadline).await {
                        break;
                    }
                }
                // A row that ran late or lost its connection: the database is in trouble, so
                // the rows after it are not tried (their clients get 503 now, not after its
                // settling).
                for one in rest {
                    self.give_up(one);
                }
            }
            Some(Err(e)) => {
                self.metrics.audit_batch(records.len(), false);
                self.refused(claimed, &e);
                self.settle_failed(&records, &e).await;
            }
            None => {
                tracing::error!(
                    rows = claimed.len(),
                    "issuance log batch did not commit by its requests' deadline; answering 503"
                );
                self.metrics.audit_batch(records.len(), false);
                let late: Vec<IssuanceRecord> = claimed
                    .into_iter()
                    .map(|c| {
                        let _ = c.done.send(Err(AuditError::Timeout));
                        c.record
                    })
                    .collect();
                // Learn whether it committed after all; if it did, or if its fate stays
                // unknown (an error after the COMMIT was sent, no answer at all), make the
                // rows say what the clients got. The amendment is idempotent.
                self.settle_late(insert, &late).await;
            }
        }
    }

    /// Waits (up to the backstop) for the database's answer to a commit whose waiters were
    /// answered 503, then makes its rows say so: if it committed after all, or if its fate
    /// stays unknown (an error after the commit was sent, no answer at all). The amendment is
    /// idempotent.
    async fn settle_late(
        &self,
        insert: impl Future<Output = Result<(), StoreError>>,
        late: &[IssuanceRecord],
    ) {
        let answered = match tokio::time::timeout(LATE_ANSWER_BACKSTOP, insert).await {
            Ok(answer) => {
                self.heard(&answer);
                if let Err(e) = &answer {
                    tracing::warn!(rows = late.len(), error = %e, "late issuance log batch failed")
                }
                true
            }
            Err(_) => {
                tracing::warn!(
                    rows = late.len(),
                    "late issuance log batch: still no answer"
                );
                false
            }
        };
        let amended = self.amend(late, 503, AUDIT_UNAVAILABLE).await;
        let found = amended.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        if let Some(found) = found.filter(|&n| !answered && n < late.len()) {
            // The insert we stopped waiting for may still be waiting on the server (a stalled
            // WAL flush, a lost synchronous standby) and commit after this amendment.
            let ids: Vec<&str> = late.iter().map(|r| r.request_id.as_str()).collect();
            self.metrics.audit_amend_failed(late.len() - found);
            tracing::error!(request_ids = ?ids, "late issuance log batch never answered; its rows may still commit saying the credential was handed out");
        }
    }

    /// The insert's result if it comes by `deadline` (the stall signal hears of it), `None`
    /// otherwise; the insert stays pending for [`Writer::settle_late`].
    async fn answer_by<F>(&self, insert: Pin<&mut F>, deadline: Instant) -> Option<F::Output>
    where
        F: Future<Output = Result<(), StoreError>>,
    {
        let answered = tokio::select! {
            r = insert => Some(r),
            _ = tokio::time::sleep_until(deadline) => None,
        };
        if let Some(result) = &answered {
            self.heard(result);
        }
        answered
    }

    /// Tells the stall signal that the database answered a commit: with success, or with a
    /// refusal of its own (not a broken connection, a pool timeout or a cancelled statement,
    /// which are what a stalled or missing database gives).
    fn heard(&self, result: &Result<(), StoreError>) {
        if !matches!(result, Err(e) if e.is_unavailable()) {
            self.commits.answered();
        }
    }

    /// Rows whose insert failed with the connection (their waiters were answered 503): the
    /// statement may have committed before the connection went, so make them say what the
    /// clients got. An insert the database refused, or one that never left the pool, is left
    /// alone: nothing was written.
    async fn settle_failed(&self, rows: &[IssuanceRecord], e: &StoreError) {
        if e.outcome_unknown() {
            self.amend(rows, 503, AUDIT_UNAVAILABLE).await;
        }
    }

    /// A claimed row that will not be sent: its client gets 503 now, and its row says so.
    fn give_up(&self, one: Claimed) {
        let _ = one.done.send(Err(AuditError::Timeout));
        self.metrics.audit_abandoned();
        self.refusals
            .push(unanswered(one.record, 503, AUDIT_UNAVAILABLE));
    }

    /// One row in its own statement (after its batch was refused), by the batch's deadline:
    /// a row whose turn comes too late is not sent (it is logged as the 503 its client gets),
    /// and one whose insert outlives the deadline, or loses its connection, is settled as a
    /// late batch is. Returns whether the next row may be tried.
    async fn commit_alone(&self, one: Claimed, deadline: Instant) -> bool {
        if deadline.saturating_duration_since(Instant::now()) < self.min_commit {
            self.give_up(one);
            return false;
        }
        let record = one.record.clone();
        let rows = slice::from_ref(&record);
        let insert = self.store.insert_issuance_batch(rows);
        tokio::pin!(insert);
        // Its own clock: the batch's was answered (with the refusal).
        self.commits.start(self.slot);
        match self.answer_by(insert.as_mut(), deadline).await {
            Some(Ok(())) => {
                self.answer_ok(vec![one]).await;
                true
            }
            Some(Err(e)) => {
                self.refused(vec![one], &e);
                self.settle_failed(rows, &e).await;
                !e.is_unavailable()
            }
            None => {
                let _ = one.done.send(Err(AuditError::Timeout));
                self.settle_late(insert, rows).await;
                false
            }
        }
    }

    /// The rows committed: answer their waiters; a waiter gone meanwhile gets its row
    /// amended (its client never saw the credential).
    async fn answer_ok(&self, claimed: Vec<Claimed>) {
        let mut gone = Vec::new();
        for c in claimed {
            if c.done.send(Ok(())).is_err() {
                gone.push(c.record);
            }
        }
        if !gone.is_empty() {
            self.amend(&gone, CLIENT_GONE_STATUS, CLIENT_GONE).await;
        }
    }

    /// The database refused the rows (or is down): nothing was written; the waiters answer 503.
    fn refused(&self, claimed: Vec<Claimed>, e: &StoreError) {
        if e.is_unavailable() {
            tracing::error!(rows = claimed.len(), error = %e, "issuance log batch failed");
        } else {
            tracing::error!(rows = claimed.len(), error = %e, "the database refused an issuance log row");
            self.metrics.audit_rejected(claimed.len());
        }
        for c in claimed {
            let _ = c.done.send(Err(AuditError::WriteFailed));
        }
    }

    /// Rewrites rows that may have committed as handed out to what their clients got.
    async fn amend(&self, rows: &[IssuanceRecord], status: i16, code: &str) -> Option<u64> {
        let ids: Vec<String> = rows.iter().map(|r| r.request_id.clone()).collect();
        let since = rows
            .iter()
            .map(|r| r.at)
            .min()
            .unwrap_or_else(OffsetDateTime::now_utc);
        let mut told = false;
        let amended = write_idempotent_until(
            LATE_ANSWER_BACKSTOP,
            AMEND_ATTEMPT_AT_MOST,
            || {
                self.store
                    .amend_unanswered_issuance(&ids, since, status, code)
            },
            |e| {
                // Said once, with the ids: should the process end while this retries, the
                // log still names the rows to check.
                if !std::mem::replace(&mut told, true) {
                    tracing::warn!(request_ids = ?ids, error = %e, "cannot amend issuance log rows yet; retrying");
                }
            },
        )
        .await;
        match amended {
            Ok(n) => {
                // An UPDATE that matched nothing wrote nothing: no sign that commits get through.
                if n > 0 {
                    self.commits.answered();
                }
                self.metrics.audit_amended(n);
                if n > 0 {
                    tracing::warn!(
                        rows = n,
                        code,
                        "issuance log rows committed after their clients were answered; amended"
                    );
                }
                Some(n)
            }
            Err(e) => {
                self.metrics.audit_amend_failed(ids.len());
                tracing::error!(request_ids = ?ids, error = %e, "could not amend issuance log rows whose clients got no credential");
                None
            }
        }
    }
}
