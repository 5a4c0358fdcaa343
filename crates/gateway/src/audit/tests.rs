//! The writers against a real database (a fresh one per test): batching, the deadline and
//! the late commit, one bad row, shutdown drain, a stopped writer, and the refusal lane's
//! folding.

use std::sync::Arc;
use std::time::Duration;

use policy_store::testing::{TestDatabase, fresh_store};
use policy_store::{IssuanceFilter, IssuanceRecord, IssuanceStore, Outcome, PgStore, Store};
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;
use crate::metrics::Metrics;

fn row(request_id: &str, outcome: Outcome) -> IssuanceRecord {
    let issued = matches!(outcome, Outcome::Issued | Outcome::Cached);
    IssuanceRecord {
        id: 0,
        at: OffsetDateTime::now_utc(),
        app: "photos".into(),
        subject: Some("alice".into()),
        outcome,
        http_status: if issued { 200 } else { 401 },
        error_code: None,
        request_id: request_id.into(),
        sts_request_id: None,
        tmp_secret_id: issued.then(|| format!("AKID{request_id}")),
        policy_hash: None,
        template_version: None,
        actions: vec![],
        prefix: None,
        duration_seconds: None,
        expired_time: None,
        source_ip: Some("192.0.2.7".into()),
        user_agent: None,
        latency_us: 1,
        count: 1,
    }
}

struct Fixture {
    db: TestDatabase,
    store: Arc<PgStore>,
    metrics: Arc<Metrics>,
    writer: AuditWriter,
    handles: Vec<JoinHandle<()>>,
}

impl Fixture {
    async fn new(config: AuditConfig) -> Self {
        let (db, store) = fresh_store().await.unwrap();
        let store = Arc::new(store);
        let metrics = Arc::new(Metrics::default());
        let dyn_store: Arc<dyn Store> = store.clone();
        let (writer, handles) = AuditWriter::spawn(dyn_store, metrics.clone(), config);
        Self {
            db,
            store,
            metrics,
            writer,
            handles,
        }
    }

    /// Drops the handle and waits until the writers have written everything and ended.
    async fn drain(self) -> (TestDatabase, Arc<PgStore>, Arc<Metrics>) {
        drop(self.writer);
        for h in self.handles {
            h.await.unwrap();
        }
        (self.db, self.store, self.metrics)
    }
}

async fn rows(store: &PgStore) -> Vec<IssuanceRecord> {
    store
        .search_issuance(&IssuanceFilter::default(), None, 10_000)
        .await
        .unwrap()
}

fn metric(metrics: &Metrics, name: &str) -> u64 {
    let text = metrics.render(0);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in {text}"))
}

/// A trigger that refuses every row inserted with request id `poison`.
async fn refuse_poison(pool: &sqlx::PgPool) {
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.request_id = 'poison' THEN RAISE EXCEPTION 'poisoned row'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER refuse_poison BEFORE INSERT ON issuance_log \
         FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    )
    .execute(pool)
    .await
    .unwrap();
}

fn config(writers: usize) -> AuditConfig {
    AuditConfig {
        writers,
        commit_timeout: Duration::from_secs(5),
        ..AuditConfig::default()
    }
}

#[tokio::test]
async fn rows_queued_together_commit_in_one_batch() {
    let f = Fixture::new(config(1)).await;
    let waiters: Vec<_> = (0..50)
        .map(|i| {
            let w = f.writer.clone();
            tokio::spawn(async move {
                w.record_within(row(&format!("r{i}"), Outcome::Issued))
                    .await
            })
        })
        .collect();
    for w in waiters {
        w.await.unwrap().unwrap();
    }
    let (_db, store, metrics) = f.drain().await;
    assert_eq!(rows(&store).await.len(), 50);
    assert_eq!(metric(&metrics, "stsgate_audit_rows_total"), 50);
    let batches = metric(&metrics, "stsgate_audit_batches_total");
    assert!(batches < 50, "50 rows took {batches} batches");
}

/// The database holds the insert past the requests' deadline: both waiters answer 503 by
/// their deadline, and neither row is left saying `issued` once the database lets go (one
/// had its commit under way and is amended; the other was still queued and is logged as
/// the 503 it got).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_past_the_deadline_never_leaves_an_issued_row() {
    let f = Fixture::new(config(1)).await;
    let mut lock = f.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE issuance_log IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_millis(400);
    let (w1, w2) = (f.writer.clone(), f.writer.clone());
    let first = tokio::spawn(async move {
        w1.record(row("late-commit", Outcome::Issued), deadline)
            .await
    });
    // Queued behind the blocked batch (one writer).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = tokio::spawn(async move {
        w2.record(row("late-queued", Outcome::Cached), deadline)
            .await
    });
    assert_eq!(first.await.unwrap(), Err(AuditError::Timeout));
    assert_eq!(second.await.unwrap(), Err(AuditError::Timeout));
    let answered = Instant::now();
    assert!(
        answered < deadline + ANSWER_GRACE,
        "answered after its deadline"
    );

    lock.rollback().await.unwrap();
    let (_db, store, metrics) = f.drain().await;
    let rows = rows(&store).await;
    for id in ["late-commit", "late-queued"] {
        let r = rows
            .iter()
            .find(|r| r.request_id == id)
            .unwrap_or_else(|| panic!("no row for {id}: {rows:?}"));
        assert_eq!(r.outcome, Outcome::UpstreamError, "{id}");
        assert_eq!(r.http_status, 503, "{id}");
        assert_eq!(r.error_code.as_deref(), Some(AUDIT_UNAVAILABLE), "{id}");
    }
    assert_eq!(metric(&metrics, "stsgate_audit_amended_total"), 1);
    assert_eq!(metric(&metrics, "stsgate_audit_abandoned_total"), 1);
}

/// A commit lands after its waiter got 503, and then the database refuses the amendment as
/// unavailable (SQLSTATE 57P03, as while it restarts) more times than a write is otherwise
/// retried: the writer keeps at it, and the row ends up saying what the client got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amendment_outlasts_a_database_that_is_unavailable_for_a_while() {
    let f = Fixture::new(config(1)).await;
    sqlx::raw_sql(
        "CREATE SEQUENCE amend_attempts; \
         CREATE FUNCTION refuse_amendments() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF nextval('amend_attempts') <= 6 THEN \
           RAISE EXCEPTION 'not yet' USING ERRCODE = '57P03'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER refuse_amendments BEFORE UPDATE ON issuance_log \
         FOR EACH ROW EXECUTE FUNCTION refuse_amendments()",
    )
    .execute(&f.db.pool)
    .await
    .unwrap();
    let mut lock = f.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE issuance_log IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_millis(300);
    let answer = f
        .writer
        .record(row("late", Outcome::Issued), deadline)
        .await;
    assert_eq!(answer, Err(AuditError::Timeout));
    lock.commit().await.unwrap();

    let (db, store, metrics) = f.drain().await;
    let rows = rows(&store).await;
    let late = rows.iter().find(|r| r.request_id == "late").unwrap();
    assert_eq!(late.outcome, Outcome::UpstreamError, "{late:?}");
    assert_eq!(late.http_status, 503);
    let attempts: i64 = sqlx::query_scalar("SELECT last_value FROM amend_attempts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 7, "refused six times, then let through");
    assert_eq!(metric(&metrics, "stsgate_audit_amended_total"), 1);
}

/// A row the database refuses (here a trigger refuses one request id) fails alone; the
/// rows that shared its batch commit.
#[tokio::test]
async fn a_row_the_database_refuses_fails_alone() {
    let f = Fixture::new(config(1)).await;
    refuse_poison(&f.db.pool).await;
    let ids: Vec<String> = (0..9)
        .map(|i| format!("good{i}"))
        .chain(["poison".to_owned()])
        .collect();
    let waiters: Vec<_> = ids
        .iter()
        .map(|id| {
            let (w, id) = (f.writer.clone(), id.clone());
            tokio::spawn(
                async move { (id.clone(), w.record_within(row(&id, Outcome::Issued)).await) },
            )
        })
        .collect();
    for w in waiters {
        let (id, result) = w.await.unwrap();
        if id == "poison" {
            assert_eq!(result, Err(AuditError::WriteFailed));
        } else {
            assert_eq!(result, Ok(()), "{id}");
        }
    }
    let (_db, store, metrics) = f.drain().await;
    let mut written: Vec<String> = rows(&store)
        .await
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    written.sort();
    assert_eq!(written, ids[..9].to_vec());
    assert_eq!(metric(&metrics, "stsgate_audit_rejected_rows_total"), 1);
}

/// Every row queued when the last handle goes is written before the writers end, and every
/// waiter gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_every_queued_row() {
    let f = Fixture::new(config(2)).await;
    let waiters: Vec<_> = (0..200)
        .map(|i| {
            let w = f.writer.clone();
            tokio::spawn(async move {
                w.record_within(row(&format!("d{i}"), Outcome::Issued))
                    .await
            })
        })
        .collect();
    f.writer.refusal(row("refused", Outcome::InvalidToken));
    // Shut down while the waiters are still in flight: the writers end only once they are.
    let (_db, store, _metrics) = f.drain().await;
    for w in waiters {
        assert_eq!(w.await.unwrap(), Ok(()));
    }
    let rows = rows(&store).await;
    assert_eq!(rows.len(), 201);
    assert!(rows.iter().any(|r| r.request_id == "refused"));
}

/// With the writers gone, a credential's row cannot be written: the caller hears so at once
/// (and answers 503) instead of waiting for its deadline.
#[tokio::test]
async fn a_stopped_writer_refuses_at_once() {
    let f = Fixture::new(config(1)).await;
    for h in &f.handles {
        h.abort();
    }
    for h in f.handles {
        assert!(h.await.unwrap_err().is_cancelled());
    }
    let far = Instant::now() + Duration::from_secs(600);
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        f.writer.record(row("orphan", Outcome::Issued), far),
    )
    .await
    .expect("answered before the deadline");
    assert_eq!(result, Err(AuditError::Stopped));
    assert!(rows(&f.store).await.is_empty());
}

/// A flood from one source address is folded into summary rows; another address's rows are
/// written one by one; no refusal is lost.
#[tokio::test]
async fn a_refusal_flood_is_folded_and_counted() {
    let f = Fixture::new(AuditConfig {
        refusals: RefusalConfig {
            per_ip_per_second: 5,
            ..RefusalConfig::default()
        },
        ..config(1)
    })
    .await;
    for i in 0..100 {
        f.writer
            .refusal(row(&format!("flood{i}"), Outcome::InvalidToken));
    }
    for i in 0..3 {
        let mut other = row(&format!("other{i}"), Outcome::InvalidToken);
        other.source_ip = Some("198.51.100.9".into());
        f.writer.refusal(other);
    }
    let (_db, store, metrics) = f.drain().await;
    let rows = rows(&store).await;
    let flood: Vec<_> = rows
        .iter()
        .filter(|r| r.source_ip.as_deref() == Some("192.0.2.7"))
        .collect();
    let total: i32 = flood.iter().map(|r| r.count).sum();
    assert_eq!(total, 100, "{flood:?}");
    // At most a burst written one by one, plus a summary per minute the flood touched.
    assert!(flood.len() <= 5 + 2, "{} rows", flood.len());
    assert!(flood.iter().any(|r| r.count > 1));
    let other = rows
        .iter()
        .filter(|r| r.source_ip.as_deref() == Some("198.51.100.9"));
    assert!(other.clone().all(|r| r.count == 1));
    assert_eq!(other.count(), 3);
    let folded = metric(&metrics, "stsgate_audit_refusal_folded_total");
    let single = metric(&metrics, "stsgate_audit_refusal_rows_total");
    assert_eq!(folded + single, 103);
    assert!(metric(&metrics, "stsgate_audit_refusal_summary_rows_total") >= 1);
}

/// The stall signal: a commit counts as overdue only while the database has answered no
/// commit since it was sent. One writer stuck on a dead connection while the other's commits
/// are answered is not a stall; a commit nothing has answered for longer than the bound is.
#[tokio::test(start_paused = true)]
async fn a_commit_is_overdue_only_while_the_database_answers_nothing() {
    let clock = CommitClock::new(2);
    let bound = Duration::from_millis(500);
    assert_eq!(clock.unanswered_for(), Duration::ZERO);
    clock.start(0);
    tokio::time::advance(Duration::from_millis(400)).await;
    assert!(clock.unanswered_for() <= bound, "not yet");
    tokio::time::advance(Duration::from_millis(200)).await;
    assert!(clock.unanswered_for() > bound, "no answer for 600 ms");
    // The other writer's commit is answered: the database is alive, writer 0 is just stuck.
    clock.start(1);
    clock.answered();
    clock.end(1);
    assert_eq!(clock.unanswered_for(), Duration::ZERO);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        clock.unanswered_for(),
        Duration::ZERO,
        "still stuck, not a stall"
    );
    // A commit sent after the last answer starts its own clock.
    clock.start(1);
    tokio::time::advance(Duration::from_millis(600)).await;
    assert!(clock.unanswered_for() >= Duration::from_millis(600));
    clock.end(1);
    clock.end(0);
    assert_eq!(clock.unanswered_for(), Duration::ZERO);
}

/// An amendment attempt that gets no answer in time (here its UPDATE waits on a row lock) is
/// retried, not given up: the row ends up saying what its client got once the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amendment_attempt_that_times_out_is_retried() {
    let f = Fixture::new(config(1)).await;
    f.writer
        .record_within(row("held", Outcome::Issued))
        .await
        .unwrap();
    let mut lock = f.db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM issuance_log WHERE request_id = 'held' FOR UPDATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        lock.commit().await.unwrap();
    });
    let ids = vec!["held".to_owned()];
    let since = OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let mut retried = 0;
    let amended = write_idempotent_until(
        Duration::from_secs(20),
        Duration::from_millis(300),
        || {
            f.store
                .amend_unanswered_issuance(&ids, since, 503, AUDIT_UNAVAILABLE)
        },
        |_| retried += 1,
    )
    .await;
    release.await.unwrap();
    assert!(amended.is_ok(), "{amended:?}");
    assert!(retried >= 1, "no attempt timed out");
    let (_db, store, _) = f.drain().await;
    let held = rows(&store).await;
    let held = held.iter().find(|r| r.request_id == "held").unwrap();
    assert_eq!(held.outcome, Outcome::UpstreamError, "{held:?}");
    assert_eq!(held.http_status, 503);
}

/// A refusal row the database refuses for its content (a trigger refuses one request id)
/// loses only itself: the refusal rows that shared its batch are written one by one.
#[tokio::test]
async fn a_refusal_row_the_database_refuses_fails_alone() {
    let f = Fixture::new(config(1)).await;
    refuse_poison(&f.db.pool).await;
    // From different addresses, so none is folded into a summary; queued together.
    for (i, id) in ["a", "b", "poison", "c", "d"].into_iter().enumerate() {
        let mut refusal = row(id, Outcome::InvalidToken);
        refusal.source_ip = Some(format!("198.51.100.{}", i + 1));
        f.writer.refusal(refusal);
    }
    let (_db, store, metrics) = f.drain().await;
    let mut written: Vec<String> = rows(&store)
        .await
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    written.sort();
    assert_eq!(written, ["a", "b", "c", "d"]);
    assert_eq!(metric(&metrics, "stsgate_audit_refusal_rows_total"), 4);
    let dropped = metrics.render(0);
    assert!(
        dropped
            .lines()
            .any(|l| l.starts_with("stsgate_audit_refusal_dropped_total") && l.ends_with(" 1")),
        "{dropped}"
    );
}
