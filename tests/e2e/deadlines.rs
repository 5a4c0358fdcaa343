//! Every database call on a request path has a deadline (DESIGN §5.8): against a database
//! that silently stops answering, or a load stuck behind a lock, the answer is a clean 503
//! within the configured `database_timeout`, and service resumes by itself.
//!
//! The bounds asserted are behavioural, not performance figures: generously above the 1 s
//! deadline, well below the 10 s that two stacked 5 s bounds used to take.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use policy_store::testing::seed_app;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(1);
const BOUND: Duration = Duration::from_secs(3);

/// A TCP proxy in front of PostgreSQL that can go silent: while silent it accepts
/// connections and reads nothing from either side, forwards nothing and closes nothing (a
/// network that drops every packet). [`BlackHole::forward`] lets everything through again,
/// bytes waiting in the sockets included, as TCP does once a partition heals.
pub struct BlackHole {
    pub addr: SocketAddr,
    forwarding: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    /// In front of the server `DATABASE_URL` names (every test database lives there).
    pub async fn start() -> Self {
        let target = database_server();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (forwarding, rx) = watch::channel(true);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (target, mut rx) = (target.clone(), rx.clone());
                tokio::spawn(async move {
                    // A connection made while silent is accepted but goes nowhere yet.
                    if rx.wait_for(|on| *on).await.is_err() {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        pipe(client_read, server_write, rx.clone()),
                        pipe(server_read, client_write, rx),
                    );
                });
            }
        });
        Self {
            addr,
            forwarding,
            task,
        }
    }

    pub fn swallow(&self) {
        self.forwarding.send_replace(false);
    }

    pub fn forward(&self) {
        self.forwarding.send_replace(true);
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` while forwarding is on; while it is off, reads nothing.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut on: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if on.wait_for(|on| *on).await.is_err() {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            // Gone silent while waiting: stop reading (a read is safe to abandon).
            _ = on.wait_for(|on| !*on) => continue,
        };
        // Bytes read just as the proxy went silent wait with the rest.
        if on.wait_for(|on| *on).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// Sends `GET path` and returns the status, the body and how long the answer took.
async fn timed(app: &TestApp, path: &str, token: Option<&str>) -> (u16, String, Duration) {
    let started = Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(30), app.get(path, token))
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer within 30 s"));
    let status = res.status().as_u16();
    let body = res.text().await.unwrap();
    (status, body, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_database_gets_503_within_the_deadline_and_service_resumes() {
    let hole = BlackHole::start().await;
    let app = TestApp::spawn_with(Options {
        db_via: Some(hole.addr),
        database_timeout: DEADLINE,
        ..Options::default()
    })
    .await;
    // `photos` is loaded and alice's credential cached; `albums` exists but was never loaded.
    assert_eq!(app.credentials("alice", "").await.status(), 200);
    let seen = app.invalidations();
    seed_app(
        &*app.store,
        "test",
        &seed_options("albums", &Options::default()),
    )
    .await
    .unwrap();
    app.wait_for_invalidations(seen + 1).await;

    hole.swallow();
    let alice = app.token("alice");
    let bob = app.token("bob");
    for (what, path, token) in [
        (
            "a cached credential",
            format!("/v1/apps/{APP}/credentials"),
            &alice,
        ),
        (
            "a credential to mint",
            format!("/v1/apps/{APP}/credentials"),
            &bob,
        ),
        (
            "an app not loaded yet",
            "/v1/apps/albums/credentials".to_owned(),
            &alice,
        ),
    ] {
        let (status, body, took) = timed(&app, &path, Some(token)).await;
        assert_eq!(status, 503, "{what}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "unavailable", "{what}");
        assert!(body.get("credentials").is_none());
        assert!(took < BOUND, "{what}: answered after {took:?}");
    }
    let (status, _, took) = timed(&app, "/readyz", None).await;
    assert_eq!(status, 503);
    assert!(took < BOUND, "/readyz answered after {took:?}");

    hole.forward();
    let mut resumed = false;
    for _ in 0..40 {
        let res = app.get("/v1/apps/albums/credentials", Some(&alice)).await;
        if res.status() == 200 {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        resumed,
        "service did not resume once the database answered again"
    );
    assert_eq!(app.get("/readyz", None).await.status(), 200);
    assert_eq!(app.credentials("bob", "").await.status(), 200);
    app.shutdown().await;
}

/// A query on a connection already acquired, waiting on the server (here for a lock an admin
/// transaction holds), is bounded by the same deadline, and by nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_load_stuck_behind_a_lock_answers_503_within_the_deadline() {
    let app = TestApp::spawn_with(Options {
        database_timeout: DEADLINE,
        ..Options::default()
    })
    .await;
    let pool = app.store.pool().clone();
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE blocked_subjects IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();

    let path = format!("/v1/apps/{APP}/credentials");
    let (status, body, took) = timed(&app, &path, Some(&app.token("alice"))).await;
    assert_eq!(status, 503, "{body}");
    assert!(took < BOUND, "answered after {took:?}");
    let (status, _, took) = timed(&app, &path, Some(&app.token("bob"))).await;
    assert_eq!(status, 503);
    assert!(took < BOUND, "a second request answered after {took:?}");

    lock.rollback().await.unwrap();
    assert_eq!(app.credentials("alice", "").await.status(), 200);
    app.shutdown().await;
}

/// A cache miss against a database that goes silent: every cluster step of the miss (the
/// shared credential's claim, with the app's STS budget) and the issuance-log commit
/// draw from the request's one deadline, so the answer is a 503 within that deadline (plus
/// slack), and no STS call is made for a credential that could not be logged. Before, each
/// step had a deadline of its own: the budget fell back to the replica's share after 1 s, the
/// shared table was skipped after another, STS was called, and the commit waited a third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_against_a_silent_database_draws_every_step_from_one_deadline() {
    let hole = BlackHole::start().await;
    let app = TestApp::spawn_with(Options {
        db_via: Some(hole.addr),
        database_timeout: DEADLINE,
        // `photos` has an STS budget: its miss's claim takes the budget's token with it.
        rate_app_per_second: 50,
        ..Options::default()
    })
    .await;
    // `albums` has none: its miss's claim is on the shared credential table alone.
    seed_app(
        &*app.store,
        "test",
        &seed_options("albums", &Options::default()),
    )
    .await
    .unwrap();
    let alice = app.token("alice");
    for slug in [APP, "albums"] {
        let path = format!("/v1/apps/{slug}/credentials");
        let mut status = 0;
        for _ in 0..40 {
            status = app.get(&path, Some(&alice)).await.status().as_u16();
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, 200, "{slug} does not serve alice");
    }
    let sts_calls = app.emulator.stats().requests;

    hole.swallow();
    let bob = app.token("bob");
    let mut refused = Vec::new();
    for (slug, first_step) in [
        (APP, "the claim with the STS budget"),
        ("albums", "the claim"),
    ] {
        let path = format!("/v1/apps/{slug}/credentials");
        let started = Instant::now();
        let res = tokio::time::timeout(Duration::from_secs(30), app.get(&path, Some(&bob)))
            .await
            .unwrap_or_else(|_| panic!("{slug}: no answer within 30 s"));
        let took = started.elapsed();
        let status = res.status().as_u16();
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        let body: Value = res.json().await.unwrap();
        println!("a miss stalled at {first_step} answered {status} after {took:?}");
        assert_eq!(status, 503, "{slug}: {body}");
        assert_eq!(body["error"]["code"], "unavailable", "{slug}");
        assert!(body.get("credentials").is_none());
        assert!(
            took < DEADLINE + Duration::from_secs(3),
            "{slug}: answered after {took:?}"
        );
        refused.push(id);
    }
    assert_eq!(
        app.emulator.stats().requests,
        sts_calls,
        "STS was called for a credential that could not be logged"
    );

    hole.forward();
    for slug in [APP, "albums"] {
        let path = format!("/v1/apps/{slug}/credentials");
        let mut status = 0;
        for _ in 0..40 {
            status = app.get(&path, Some(&bob)).await.status().as_u16();
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(status, 200, "{slug} did not resume");
    }
    // The refused requests left no credential row behind.
    let rows = app.log_rows().await;
    for id in &refused {
        for row in rows.iter().filter(|r| &r.request_id == id) {
            assert_eq!(row.http_status, 503, "{row:?}");
            assert!(row.tmp_secret_id.is_none(), "{row:?}");
        }
    }
    app.shutdown().await;
}

/// A lone replica (its beat counts it the only live one, so a miss on an app without an STS
/// budget makes no database step before STS) against a database that goes silent: its first
/// miss calls STS and meets the stall at its commit (503 within the deadline; once the
/// database answers, the row says 503 too). While that commit waits, further misses are
/// answered 503 without calling STS, and service resumes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_replica_stops_calling_sts_once_a_commit_is_overdue() {
    let hole = BlackHole::start().await;
    let app = TestApp::spawn_with(Options {
        db_via: Some(hole.addr),
        database_timeout: DEADLINE,
        ..Options::default()
    })
    .await;
    let gateway = app.gateway.as_ref().unwrap();
    let (stop, beats) = app.beat_alone().await;
    assert_eq!(app.credentials("alice", "").await.status(), 200);
    let calls = app.emulator.stats().requests;
    let path = format!("/v1/apps/{APP}/credentials");

    hole.swallow();
    let bob = app.token("bob");
    let res = tokio::time::timeout(Duration::from_secs(30), app.get(&path, Some(&bob)))
        .await
        .expect("an answer within 30 s");
    assert_eq!(res.status(), 503);
    let bob_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(
        app.emulator.stats().requests,
        calls + 1,
        "the first miss calls STS"
    );
    for sub in ["carol", "dave"] {
        let (status, body, took) = timed(&app, &path, Some(&app.token(sub))).await;
        assert_eq!(status, 503, "{sub}: {body}");
        assert!(
            took < DEADLINE,
            "{sub}: waited {took:?} for a database known to be stalled"
        );
    }
    assert_eq!(
        app.emulator.stats().requests,
        calls + 1,
        "STS was called while a commit was overdue"
    );
    let refused = gateway.metrics.render(0).lines().find_map(|l| {
        l.strip_prefix("stsgate_mints_refused_stalled_total ")?
            .parse::<u64>()
            .ok()
    });
    assert_eq!(refused, Some(2));

    hole.forward();
    let erin = app.token("erin");
    let mut status = 0;
    for _ in 0..40 {
        status = app.get(&path, Some(&erin)).await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status, 200, "service did not resume");
    // Bob's credential was minted but never delivered: once its late commit is answered,
    // its row is amended to the 503 he got.
    let bob_row = app
        .row_once(&bob_id, |r| r.http_status == 503)
        .await
        .expect("bob's row");
    assert_eq!(bob_row.http_status, 503, "{bob_row:?}");
    assert!(bob_row.tmp_secret_id.is_some(), "minted, never delivered");
    stop.cancel();
    beats.await.unwrap();
    app.shutdown().await;
}
