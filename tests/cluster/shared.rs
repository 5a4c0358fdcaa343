//! One credential per (user, policy) across the cluster, and kill switches made on one
//! replica's admin listener refused on the others.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::support::{APP, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_sts_call_for_fifty_requests_and_kill_switches_reach_every_replica() {
    // A short app TTL: it is what covers a lost notification.
    let mut cluster =
        Cluster::start(&Options::default(), &[("STSGATE_CACHE__APP_TTL_SECS", "2")]).await;
    let since = now_ms();

    // 50 identical requests at once, spread over the three replicas.
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (http, replica) = (cluster.http.clone(), i % REPLICAS);
            let url = cluster.url(replica);
            tokio::spawn(async move { fetch(&http, replica, &url, "alice").await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    let first = answers[0].tmp_secret_id().unwrap().to_owned();
    assert!(
        answers
            .iter()
            .all(|a| a.tmp_secret_id() == Some(first.as_str()))
    );
    let calls = cluster.calls_since(since).len();
    println!(
        "single mint: 50 concurrent identical requests over 3 replicas -> {calls} STS call(s)"
    );
    assert_eq!(calls, 1);
    let outcomes: Vec<(String, i64)> =
        sqlx::query_as("SELECT outcome::text, count(*) FROM issuance_log GROUP BY 1 ORDER BY 1")
            .fetch_all(&cluster.db.pool)
            .await
            .unwrap();
    assert_eq!(
        outcomes,
        [("cached".to_owned(), 49), ("issued".to_owned(), 1)]
    );
    assert_eq!(cluster.shared_rows().await, 1);
    let sealed: String = sqlx::query_scalar("SELECT sealed FROM shared_credentials")
        .fetch_one(&cluster.db.pool)
        .await
        .unwrap();
    assert!(!sealed.contains(&first), "the credential is sealed");

    // Block alice on replica 0's admin listener: the others refuse her within 1 s, and her
    // shared credential is gone.
    let mut admin = cluster.admin(0).await;
    // The dashboard lists the replicas.
    let (status, dashboard) = admin.get("/").await;
    assert_eq!(status, 200);
    assert!(
        dashboard.contains("3 live"),
        "the dashboard does not count 3 live replicas"
    );
    for replica in cluster.replicas.iter().flatten() {
        assert!(
            dashboard.contains(&replica.public),
            "{} is not listed",
            replica.public
        );
    }
    let blocks = format!("/apps/{APP}/blocks");
    let (status, _) = admin
        .submit(
            &blocks,
            &blocks,
            &[("subject", "alice"), ("reason", "cluster test")],
        )
        .await;
    assert_eq!(status, 303);
    let blocked_at = Instant::now();
    for replica in 1..REPLICAS {
        let took = refused_within(&cluster, replica, "alice", "subject_blocked", blocked_at).await;
        println!("block made on replica 0 refused on replica {replica} after {took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    assert_eq!(
        cluster.shared_rows().await,
        0,
        "alice's shared credential was purged"
    );

    // bob gets a credential everywhere; then the app is disabled on replica 0.
    for replica in 0..REPLICAS {
        assert_eq!(cluster.credentials(replica, "bob").await.status, 200);
    }
    assert_eq!(cluster.shared_rows().await, 1);
    let page = format!("/apps/{APP}");
    let (status, _) = admin
        .submit(&page, &format!("{page}/enabled"), &[("enabled", "false")])
        .await;
    assert_eq!(status, 303);
    let disabled_at = Instant::now();
    for replica in 1..REPLICAS {
        let took = refused_within(&cluster, replica, "bob", "app_disabled", disabled_at).await;
        println!("disable made on replica 0 refused on replica {replica} after {took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    assert_eq!(
        cluster.shared_rows().await,
        0,
        "the app's shared credentials were purged"
    );

    // A lost notification: a block written without NOTIFY is still enforced once the app's
    // cache entry expires (the TTL, 2 s here).
    let (status, _) = admin
        .submit(&page, &format!("{page}/enabled"), &[("enabled", "true")])
        .await;
    assert_eq!(status, 303);
    for replica in 0..REPLICAS {
        ok_within(&cluster, replica, "carol").await;
    }
    sqlx::query(
        "INSERT INTO blocked_subjects (app_id, subject, blocked_by) \
         SELECT id, 'carol', 'silent' FROM apps WHERE slug = $1",
    )
    .bind(APP)
    .execute(&cluster.db.pool)
    .await
    .unwrap();
    let silent_at = Instant::now();
    for replica in 0..REPLICAS {
        let took = refused_within(&cluster, replica, "carol", "subject_blocked", silent_at).await;
        println!("block without a notification refused on replica {replica} after {took:?}");
    }
    assert!(cluster.stop());
}

/// Asks `replica` for `sub`'s credential until it is refused with `code` (bounded at 10 s);
/// how long after `since` that was.
async fn refused_within(
    cluster: &Cluster,
    replica: usize,
    sub: &str,
    code: &str,
    since: Instant,
) -> Duration {
    while since.elapsed() < Duration::from_secs(10) {
        let a = cluster.credentials(replica, sub).await;
        if a.body["error"]["code"] == code {
            return since.elapsed();
        }
        assert_eq!(a.status, 200, "{a:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("replica {replica} still serves {sub} after 10 s");
}

/// Asks `replica` for `sub`'s credential until it is served (bounded at 10 s).
async fn ok_within(cluster: &Cluster, replica: usize, sub: &str) {
    let since = Instant::now();
    while since.elapsed() < Duration::from_secs(10) {
        if cluster.credentials(replica, sub).await.status == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("replica {replica} does not serve {sub} after 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_miss_path_with_and_without_the_shared_table_and_a_wait_within_the_deadline() {
    let mut cluster = Cluster::start(&Options::default(), &[]).await;
    let mut without = cluster.spawn_replica(&[("STSGATE_CLUSTER__SHARED_CREDENTIALS", "false")]);
    let base_without = without.public_url();
    let base_with = cluster.url(0);
    // Warm both (app cache, connections), then time sequential misses (unique subjects).
    for (base, tag) in [(&base_with, "w"), (&base_without, "o")] {
        assert_eq!(
            fetch(&cluster.http, 0, base, &format!("warm-{tag}"))
                .await
                .status,
            200
        );
    }
    let n = 40;
    let mut figures = Vec::new();
    for (base, label) in [(&base_with, "with"), (&base_without, "without")] {
        let started = Instant::now();
        for i in 0..n {
            let a = fetch(&cluster.http, 0, base, &format!("{label}-{i}")).await;
            assert_eq!(a.status, 200, "{a:?}");
        }
        figures.push((label, started.elapsed() / n));
    }
    for (label, mean) in &figures {
        println!(
            "miss path {label} the shared table: {mean:?} per request (mean of {n}, debug build)"
        );
    }
    // Without the table, nothing was written there for its misses.
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM shared_credentials WHERE sealed IS NOT NULL")
            .fetch_one(&cluster.db.pool)
            .await
            .unwrap();
    assert_eq!(rows, i64::from(n) + 1);
    assert!(without.terminate());

    // Waiting for another replica's row draws from the request's one database deadline: a
    // replica with a 1 s deadline does not wait out a peer's 3.5 s STS call (nor mint a
    // second credential); it answers 503, and its client's retry finds the peer's row.
    let mut short = cluster.spawn_replica(&[("STSGATE_DATABASE_TIMEOUT_MS", "1000")]);
    let base_short = short.public_url();
    assert_eq!(
        fetch(&cluster.http, 3, &base_short, "warm-s").await.status,
        200
    );
    cluster
        .emulator
        .set_faults(sts_emulator::Faults {
            latency_ms: 3500,
            ..Default::default()
        })
        .unwrap();
    let calls = cluster.emulator.stats().requests;
    let claimer = {
        let (http, url) = (cluster.http.clone(), cluster.url(0));
        tokio::spawn(async move { fetch(&http, 0, &url, "slow-mint").await })
    };
    // Replica 0 has claimed the mint and waits on STS.
    let since = Instant::now();
    while cluster.emulator.stats().requests == calls {
        assert!(since.elapsed() < Duration::from_secs(10), "no STS call");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let asked = Instant::now();
    let waiter = fetch(&cluster.http, 3, &base_short, "slow-mint").await;
    let took = asked.elapsed();
    println!(
        "a miss waiting for another replica's 3.5 s mint, 1 s database deadline: {} after {took:?}",
        waiter.status
    );
    assert_eq!(waiter.status, 503, "{waiter:?}");
    assert_eq!(waiter.body["error"]["code"], "unavailable");
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    let minted = claimer.await.unwrap();
    assert_eq!(minted.status, 200, "{minted:?}");
    cluster
        .emulator
        .set_faults(sts_emulator::Faults::default())
        .unwrap();
    let retried = fetch(&cluster.http, 3, &base_short, "slow-mint").await;
    assert_eq!(retried.status, 200, "{retried:?}");
    assert_eq!(retried.tmp_secret_id(), minted.tmp_secret_id());
    assert_eq!(
        cluster.emulator.stats().requests,
        calls + 1,
        "the waiter minted a credential of its own"
    );
    assert!(short.terminate());
    assert!(cluster.stop());
}

/// A mint that failed because the request's database deadline ran out (its STS budget
/// statement blocked behind a row lock) still releases its claim: the next request for the
/// same credential, on another replica or the same one, is not stuck behind it. The claim
/// timeout is long here (20 s), so a claim left in place would make both answer 503 at their
/// own 3 s deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mint_that_ran_out_of_time_leaves_no_claim_behind() {
    let opts = Options {
        rate_app_per_second: 600,
        ..Options::default()
    };
    let mut cluster =
        Cluster::start(&opts, &[("STSGATE_CLUSTER__CLAIM_TIMEOUT_MS", "20000")]).await;
    for replica in 0..2 {
        let warm = cluster
            .credentials(replica, &format!("warm-{replica}"))
            .await;
        assert_eq!(warm.status, 200, "{warm:?}");
    }
    let app: i64 = sqlx::query_scalar("SELECT app_id FROM sts_budget")
        .fetch_one(&cluster.db.pool)
        .await
        .unwrap();
    for (failing, next) in [(0, 1), (1, 1)] {
        let sub = format!("blocked-{failing}-{next}");
        // The app's budget row is locked: replica `failing` claims the mint, then waits on the
        // budget until its deadline runs out.
        let mut lock = cluster.db.pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM sts_budget WHERE app_id = $1 FOR UPDATE")
            .bind(app)
            .execute(&mut *lock)
            .await
            .unwrap();
        let calls = cluster.emulator.stats().requests;
        let failed = cluster.credentials(failing, &sub).await;
        assert_eq!(failed.status, 503, "{failed:?}");
        assert_eq!(cluster.emulator.stats().requests, calls, "STS was called");
        lock.rollback().await.unwrap();
        let asked = Instant::now();
        let served = cluster.credentials(next, &sub).await;
        println!(
            "after a mint on replica {failing} ran out of time, replica {next}: {} after {:?}",
            served.status,
            asked.elapsed()
        );
        assert_eq!(served.status, 200, "{served:?}");
        assert_eq!(cluster.emulator.stats().requests, calls + 1);
    }
    assert!(cluster.stop());
}
