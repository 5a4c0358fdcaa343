//! Cluster mode's tables: membership, the shared STS budget, shared credentials.

use std::time::Duration;

use policy_store::{
    AppStore, BudgetGrant, Claim, ClusterStore, MemberInfo, SharedCredential, SharedKey, StsBudget,
    SubjectStore,
};
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use super::{app_input, store};

fn member(n: u8) -> MemberInfo {
    MemberInfo {
        id: Uuid::new_v4(),
        host: format!("host-{n}"),
        public_addr: format!("10.0.0.{n}:8080"),
        admin_addr: format!("10.0.0.{n}:8081"),
        version: "test".into(),
    }
}

fn credential(id: &str, reuse_for: i64) -> SharedCredential {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    SharedCredential {
        tmp_secret_id: id.into(),
        tmp_secret_key: SecretString::from(format!("{id}-key")),
        session_token: SecretString::from(format!("{id}-token")),
        expired_time: now + reuse_for + 600,
        expiration: "2030-01-01T00:00:00Z".into(),
        request_id: "req".into(),
        start_time: now,
        reuse_until: now + reuse_for,
    }
}

fn rate(per_second: u32, burst: u32) -> StsBudget {
    StsBudget { per_second, burst }
}

#[tokio::test]
async fn members_are_live_until_they_miss_their_beats_or_leave() {
    let (db, store) = store().await;
    let (a, b) = (member(1), member(2));
    let window = Duration::from_secs(3);
    store.heartbeat(&a, window).await.unwrap();
    let seen = store.heartbeat(&b, window).await.unwrap();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|m| m.live));
    assert_eq!(seen[0].host, "host-1");

    // b's last beat was 4 s ago (three beats missed): listed, but out.
    sqlx::query("UPDATE cluster_members SET last_beat = now() - interval '4 s' WHERE id = $1")
        .bind(b.id)
        .execute(&db.pool)
        .await
        .unwrap();
    let seen = store.heartbeat(&a, window).await.unwrap();
    let out = seen.iter().find(|m| m.id == b.id).unwrap();
    assert!(!out.live && out.beat_age_ms >= 4000, "{out:?}");
    assert_eq!(seen.iter().filter(|m| m.live).count(), 1);

    // A beat brings it back; leaving removes it.
    store.heartbeat(&b, window).await.unwrap();
    store.leave_cluster(a.id).await.unwrap();
    let seen = store.cluster_members(window).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].id, b.id);
}

#[tokio::test]
async fn the_budget_grants_the_burst_then_refuses_with_the_wait() {
    let (_db, store) = store().await;
    let app = store.create_app("root", &app_input("demo")).await.unwrap();
    let other = store.create_app("root", &app_input("other")).await.unwrap();
    // 1 call a second, a burst of 3: three at once, the fourth waits about a second.
    for _ in 0..3 {
        assert_eq!(
            store.take_sts_budget(app.id, rate(1, 3)).await.unwrap(),
            BudgetGrant::Granted
        );
    }
    match store.take_sts_budget(app.id, rate(1, 3)).await.unwrap() {
        BudgetGrant::RetryAfter(wait) => {
            assert!(
                wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
                "{wait:?}"
            )
        }
        granted => panic!("a fourth call was granted: {granted:?}"),
    }
    // Per app.
    assert_eq!(
        store.take_sts_budget(other.id, rate(1, 1)).await.unwrap(),
        BudgetGrant::Granted
    );
}

#[tokio::test]
async fn one_replica_claims_a_mint_and_the_others_get_its_credential() {
    let (db, store) = store().await;
    let app = store.create_app("root", &app_input("demo")).await.unwrap();
    let key = SharedKey {
        app_id: app.id,
        subject: "alice",
        key: "1|2|3|h|900|alice",
    };
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let claim = Duration::from_secs(5);
    assert!(store.shared_credential(key).await.unwrap().is_none());
    assert!(matches!(
        store
            .claim_shared_credential(key, a, claim, None)
            .await
            .unwrap(),
        Claim::Mine { budget: None }
    ));
    assert!(matches!(
        store
            .claim_shared_credential(key, b, claim, None)
            .await
            .unwrap(),
        Claim::Taken
    ));
    // A replica takes over its own claim at once (a mint of its that failed or was cancelled
    // and left the claim behind); the others still wait for it.
    assert!(matches!(
        store
            .claim_shared_credential(key, a, claim, None)
            .await
            .unwrap(),
        Claim::Mine { budget: None }
    ));
    assert!(matches!(
        store
            .claim_shared_credential(key, b, claim, None)
            .await
            .unwrap(),
        Claim::Taken
    ));
    store
        .put_shared_credential(key, &credential("one", 300))
        .await
        .unwrap();
    match store
        .claim_shared_credential(key, b, claim, None)
        .await
        .unwrap()
    {
        Claim::Ready(c) => {
            assert_eq!(c.tmp_secret_id, "one");
            assert_eq!(c.session_token.expose_secret(), "one-token");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store
            .claim_shared_credential(key, a, claim, None)
            .await
            .unwrap(),
        Claim::Ready(_)
    ));
    // Sealed: no secret in the clear, and the row does not open under another key.
    let sealed: String = sqlx::query_scalar("SELECT sealed FROM shared_credentials")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(!sealed.contains("one-key") && !sealed.contains("one-token"));
    sqlx::query("UPDATE shared_credentials SET key_hash = encode(sha256('other'), 'hex')")
        .execute(&db.pool)
        .await
        .unwrap();
    let moved = SharedKey {
        key: "other",
        ..key
    };
    assert!(store.shared_credential(moved).await.is_err());
}

#[tokio::test]
async fn failed_and_expired_claims_and_stale_credentials_are_taken_over() {
    let (db, store) = store().await;
    let app = store.create_app("root", &app_input("demo")).await.unwrap();
    let key = SharedKey {
        app_id: app.id,
        subject: "alice",
        key: "k",
    };
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let claim = Duration::from_secs(5);
    assert!(matches!(
        store
            .claim_shared_credential(key, a, claim, None)
            .await
            .unwrap(),
        Claim::Mine { budget: None }
    ));
    // a's mint failed: released, so b takes over at once.
    store.release_shared_claim(key, a).await.unwrap();
    assert!(matches!(
        store
            .claim_shared_credential(key, b, claim, None)
            .await
            .unwrap(),
        Claim::Mine { budget: None }
    ));
    // b died: once its claim has run out, a takes over.
    sqlx::query("UPDATE shared_credentials SET claim_until = now() - interval '1 s'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(matches!(
        store
            .claim_shared_credential(key, a, claim, None)
            .await
            .unwrap(),
        Claim::Mine { budget: None }
    ));
    // A credential past its reuse window is neither served nor kept from a new mint, and
    // the purge removes it.
    store
        .put_shared_credential(key, &credential("old", -1))
        .await
        .unwrap();
    assert!(store.shared_credential(key).await.unwrap().is_none());
    assert!(matches!(
        store
            .claim_shared_credential(key, b, claim, None)
            .await
            .unwrap(),
        Claim::Mine { budget: None }
    ));
    store
        .put_shared_credential(key, &credential("old", -1))
        .await
        .unwrap();
    assert_eq!(store.purge_cluster_rows().await.unwrap(), 1);
}

/// The claim is one statement that also reads the credential (when not won) and takes the
/// STS budget's token (only when won): every state of the row, against the real database,
/// and the budget cell after each claim.
#[tokio::test]
async fn one_statement_claims_reads_and_takes_the_budget_only_when_won() {
    let (db, store) = store().await;
    let app = store.create_app("root", &app_input("demo")).await.unwrap();
    let key = SharedKey {
        app_id: app.id,
        subject: "alice",
        key: "1|2|3|h|900|alice",
    };
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let claim = Duration::from_secs(5);
    // One call a second, a thousand at once; the cell is moved by hand where a test needs it
    // (so that no step depends on how fast the machine is).
    let budget = Some(rate(1, 1000));
    let tat = || {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, f64>("SELECT tat FROM sts_budget WHERE app_id = $1")
                .bind(app.id)
                .fetch_optional(&pool)
                .await
                .unwrap()
        }
    };
    let expire_claim = || {
        let pool = db.pool.clone();
        async move {
            sqlx::query("UPDATE shared_credentials SET claim_until = now() - interval '1 s'")
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    let granted = |c: Claim| {
        matches!(
            c,
            Claim::Mine {
                budget: Some(BudgetGrant::Granted)
            }
        )
    };

    // No budget row yet (the app's first STS call): won, but the token is left to the
    // caller's own statement, which makes the row.
    assert_eq!(tat().await, None);
    let c = store.claim_shared_credential(key, a, claim, budget).await;
    assert!(matches!(c.unwrap(), Claim::Mine { budget: None }));
    assert_eq!(tat().await, None);
    store.take_sts_budget(app.id, rate(1, 1000)).await.unwrap();
    store.release_shared_claim(key, a).await.unwrap();

    // No row: won, with a token.
    let before = tat().await;
    let c = store.claim_shared_credential(key, a, claim, budget).await;
    assert!(granted(c.unwrap()));
    assert_ne!(tat().await, before, "no token was taken");
    // A minute ahead of the clock: each token now moves it by exactly one interval.
    sqlx::query("UPDATE sts_budget SET tat = tat + 60")
        .execute(&db.pool)
        .await
        .unwrap();
    let first = tat().await.unwrap();

    // Another replica's live claim: taken, no token.
    let c = store.claim_shared_credential(key, b, claim, budget).await;
    assert!(matches!(c.unwrap(), Claim::Taken));
    assert_eq!(tat().await, Some(first));

    // This replica's own claim: won again, a second token.
    let c = store.claim_shared_credential(key, a, claim, budget).await;
    assert!(granted(c.unwrap()));
    assert_eq!(tat().await, Some(first + 1.0));

    // A live credential: ready, for anyone (its minter included), no token; and a read only:
    // the row is neither locked nor written (its xmax, the last locker or updater, stays).
    store
        .put_shared_credential(key, &credential("live", 300))
        .await
        .unwrap();
    let xmax = || {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT xmax::text FROM shared_credentials")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let put = xmax().await;
    for me in [a, b] {
        match store.claim_shared_credential(key, me, claim, budget).await {
            Ok(Claim::Ready(c)) => {
                assert_eq!(c.tmp_secret_id, "live");
                assert_eq!(c.tmp_secret_key.expose_secret(), "live-key");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(xmax().await, put, "a ready claim locked the row");
    assert_eq!(tat().await, Some(first + 1.0));

    // A credential past its reuse window: claimed, with a token.
    store
        .put_shared_credential(key, &credential("stale", -1))
        .await
        .unwrap();
    let c = store.claim_shared_credential(key, b, claim, budget).await;
    assert!(granted(c.unwrap()));
    assert_eq!(tat().await, Some(first + 2.0));
    let c = store.claim_shared_credential(key, a, claim, budget).await;
    assert!(matches!(c.unwrap(), Claim::Taken));

    // Another replica's claim that ran out: claimed, with a token.
    expire_claim().await;
    let c = store.claim_shared_credential(key, a, claim, budget).await;
    assert!(granted(c.unwrap()));
    assert_eq!(tat().await, Some(first + 3.0));

    // The budget used up (the cell 2,000 s ahead, the burst 1,000): the claim is won (and
    // held until released), the token refused with the wait, and the cell does not move.
    expire_claim().await;
    sqlx::query("UPDATE sts_budget SET tat = extract(epoch FROM now()) + 2000")
        .execute(&db.pool)
        .await
        .unwrap();
    let used_up = tat().await;
    match store.claim_shared_credential(key, b, claim, budget).await {
        Ok(Claim::Mine {
            budget: Some(BudgetGrant::RetryAfter(wait)),
        }) => assert!(
            wait > Duration::from_secs(990) && wait <= Duration::from_secs(1001),
            "{wait:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(tat().await, used_up);
    let c = store.claim_shared_credential(key, a, claim, budget).await;
    assert!(matches!(c.unwrap(), Claim::Taken));
    store.release_shared_claim(key, b).await.unwrap();

    // Without a budget: won, nothing taken.
    let c = store.claim_shared_credential(key, a, claim, None).await;
    assert!(matches!(c.unwrap(), Claim::Mine { budget: None }));
    assert_eq!(tat().await, used_up);

    // The budget's row locked by another transaction: the claim does not wait for it. It is
    // won and committed at once (another replica sees it), and the token is left to the caller.
    store.release_shared_claim(key, a).await.unwrap();
    let mut lock = db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM sts_budget WHERE app_id = $1 FOR UPDATE")
        .bind(app.id)
        .execute(&mut *lock)
        .await
        .unwrap();
    let c = tokio::time::timeout(
        Duration::from_secs(2),
        store.claim_shared_credential(key, a, claim, budget),
    )
    .await
    .expect("the claim waited for the budget's row lock");
    assert!(matches!(c.unwrap(), Claim::Mine { budget: None }));
    let c = store.claim_shared_credential(key, b, claim, budget).await;
    assert!(matches!(c.unwrap(), Claim::Taken));
    lock.rollback().await.unwrap();
    assert_eq!(tat().await, used_up);

    // A row that does not open under its key fails the claim instead of serving it.
    store
        .put_shared_credential(key, &credential("live", 300))
        .await
        .unwrap();
    sqlx::query("UPDATE shared_credentials SET sealed = sealed || 'x'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(
        store
            .claim_shared_credential(key, b, claim, budget)
            .await
            .is_err()
    );
}

/// Replicas claiming one new key at once: exactly one wins, and only it takes a token.
#[tokio::test]
async fn concurrent_claims_have_one_winner_and_take_one_token() {
    let (db, store) = store().await;
    let app = store.create_app("root", &app_input("demo")).await.unwrap();
    // The budget's row is there (the app has made an STS call) and due now.
    store.take_sts_budget(app.id, rate(1, 8)).await.unwrap();
    sqlx::query("UPDATE sts_budget SET tat = 0")
        .execute(&db.pool)
        .await
        .unwrap();
    let store = std::sync::Arc::new(store);
    let claims = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let key = SharedKey {
                app_id: app.id,
                subject: "alice",
                key: "race",
            };
            store
                .claim_shared_credential(
                    key,
                    Uuid::new_v4(),
                    Duration::from_secs(5),
                    Some(rate(1, 8)),
                )
                .await
                .unwrap()
        })
    });
    let mut won = 0;
    for claim in claims {
        match claim.await.unwrap() {
            Claim::Mine {
                budget: Some(BudgetGrant::Granted),
            } => won += 1,
            Claim::Taken => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(won, 1);
    // One token: the cell is one interval ahead of the clock at most.
    let ahead: f64 = sqlx::query_scalar(
        "SELECT tat - extract(epoch FROM clock_timestamp())::float8 FROM sts_budget WHERE app_id = $1",
    )
    .bind(app.id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(ahead > 0.0 && ahead <= 1.0, "{ahead}");
}

#[tokio::test]
async fn blocking_a_subject_or_disabling_the_app_purges_their_shared_credentials() {
    let (_db, store) = store().await;
    let app = store.create_app("root", &app_input("demo")).await.unwrap();
    let key = |subject, key| SharedKey {
        app_id: app.id,
        subject,
        key,
    };
    for (s, k) in [("alice", "ka"), ("bob", "kb")] {
        store
            .put_shared_credential(key(s, k), &credential(s, 300))
            .await
            .unwrap();
    }
    store
        .block_subject("root", app.id, "alice", None)
        .await
        .unwrap();
    assert!(
        store
            .shared_credential(key("alice", "ka"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .shared_credential(key("bob", "kb"))
            .await
            .unwrap()
            .is_some()
    );
    store.set_app_enabled("root", app.id, false).await.unwrap();
    assert!(
        store
            .shared_credential(key("bob", "kb"))
            .await
            .unwrap()
            .is_none()
    );
}

/// Cluster coordination commits without waiting for the WAL flush; everything else (the
/// issuance log above all) keeps the server's `synchronous_commit`.
#[tokio::test]
async fn only_coordination_skips_the_wal_flush() {
    let db = policy_store::testing::fresh_database().await.unwrap();
    let store = policy_store::PgStore::connect(
        &db.url,
        &policy_store::PoolOptions::default(),
        policy_store::testing::test_cipher(),
    )
    .await
    .unwrap();
    let setting = |pool: &sqlx::PgPool| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SHOW synchronous_commit")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let server = setting(&db.pool).await;
    assert_eq!(
        setting(store.pool()).await,
        server,
        "the main pool keeps the server's setting"
    );
    assert_eq!(setting(store.coordination()).await, "off");

    // The coordination statements work over it: a beat makes a live member.
    let me = member(1);
    let members = store.heartbeat(&me, Duration::from_secs(3)).await.unwrap();
    assert!(members.iter().any(|m| m.id == me.id && m.live));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM cluster_members")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}
