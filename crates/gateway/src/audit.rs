//! The issuance-log writer: group commit (DESIGN §5.7).
//!
//! Handlers hand a row to [`AuditWriter::record`] and wait. Writer tasks take whatever rows are
//! queued (up to `max_batch`), insert them in one transaction, and then answer every waiter.
//! While one batch commits the next one fills, so throughput grows with load instead of
//! paying one commit per request. A credential is only handed out once its row has
//! committed; if the database fails, every waiter of that batch gets an error (and a 503).

use std::sync::Arc;
use std::time::Duration;

use policy_store::{IssuanceRecord, Store};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Rows per transaction at most.
    pub max_batch: usize,
    /// Concurrent writer tasks (each holds at most one database connection).
    pub writers: usize,
    /// Rows waiting for a writer at most; beyond that, requests wait for room.
    pub queue: usize,
    /// How long a waiter waits for its commit before giving up (and answering 503).
    pub commit_timeout: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            max_batch: 512,
            writers: 2,
            queue: 16_384,
            commit_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum AuditError {
    #[error("the issuance log could not be written")]
    WriteFailed,
    #[error("the issuance log writer has stopped")]
    Stopped,
    #[error("the issuance log did not commit in time")]
    Timeout,
}

struct Pending {
    record: IssuanceRecord,
    done: oneshot::Sender<Result<(), AuditError>>,
}

/// A handle to the writer tasks. Cloning shares them. When every handle is dropped, the
/// writers drain what is queued, commit it, and end.
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Pending>,
    commit_timeout: Duration,
}

impl AuditWriter {
    pub fn spawn(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        config: AuditConfig,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let handles = (0..config.writers.max(1))
            .map(|_| {
                tokio::spawn(writer_loop(
                    rx.clone(),
                    store.clone(),
                    metrics.clone(),
                    config.max_batch.max(1),
                    config.commit_timeout,
                ))
            })
            .collect();
        (
            Self {
                tx,
                commit_timeout: config.commit_timeout,
            },
            handles,
        )
    }

    /// Queues a row and waits until its transaction has committed.
    pub async fn record(&self, record: IssuanceRecord) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        let work = async {
            self.tx
                .send(Pending { record, done })
                .await
                .map_err(|_| AuditError::Stopped)?;
            wait.await.map_err(|_| AuditError::Stopped)?
        };
        tokio::time::timeout(self.commit_timeout, work)
            .await
            .map_err(|_| AuditError::Timeout)?
    }
}

async fn writer_loop(
    rx: Arc<Mutex<mpsc::Receiver<Pending>>>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    max_batch: usize,
    commit_timeout: Duration,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
    loop {
        {
            // Hold the receiver only while gathering, so another writer can gather the
            // next batch while this one commits.
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut batch, max_batch).await == 0 {
                return; // every sender dropped and the queue is empty
            }
        }
        // A waiter that gave up (commit timeout) has already answered 503: its row must not
        // be written afterwards as if its credential had been handed out.
        let (records, waiters): (Vec<IssuanceRecord>, Vec<_>) = batch
            .drain(..)
            .filter(|p| !p.done.is_closed())
            .map(|p| (p.record, p.done))
            .unzip();
        if records.is_empty() {
            continue;
        }
        // Bounded: a database that drops packets must not hold a writer (and shutdown) for
        // the TCP timeout. A transaction cut short is rolled back with its connection.
        let written =
            tokio::time::timeout(commit_timeout, store.insert_issuance_batch(&records)).await;
        metrics.audit_batch(records.len(), matches!(written, Ok(Ok(()))));
        let outcome = match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::error!(rows = records.len(), error = %e, "issuance log batch failed");
                Err(AuditError::WriteFailed)
            }
            Err(_) => {
                tracing::error!(rows = records.len(), timeout = ?commit_timeout, "issuance log batch did not commit in time");
                Err(AuditError::Timeout)
            }
        };
        for done in waiters {
            let _ = done.send(outcome);
        }
    }
}
