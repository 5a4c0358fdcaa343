//! What the admin pages need from the store: sessions, lockout counters, user management,
//! dashboard totals, change-log filters.

use policy_store::testing::TestDatabase;
use policy_store::{
    AdminChangeFilter, AdminUser, AdminUserStore, ChangeLogStore, IssuanceFilter, IssuanceRecord,
    IssuanceStore, Outcome, Role, SignInAdmission, StoreError,
};
use time::{Duration, OffsetDateTime};

use super::{fields, store};

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2g";
const HASH2: &str = "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXJzYWx0$b3RoZXJoYXNob3RoZXJoYXNo";

#[tokio::test]
async fn sessions_live_until_expiry_or_disable() {
    let (db, store) = store().await;
    let u = store
        .create_admin_user("cli", "alice", HASH, Role::Admin)
        .await
        .unwrap();
    store
        .create_admin_user("cli", "root", HASH, Role::Admin)
        .await
        .unwrap();
    store
        .create_admin_session(u.id, "hash-1", "csrf-1", 3600)
        .await
        .unwrap();
    let s = store.admin_session("hash-1").await.unwrap().unwrap();
    assert_eq!(s.user.username, "alice");
    assert_eq!(s.csrf_token, "csrf-1");
    assert!(s.expires_at > OffsetDateTime::now_utc() + Duration::minutes(59));
    assert!(store.admin_session("hash-2").await.unwrap().is_none());
    // The same id twice is a conflict, never a takeover.
    assert!(matches!(
        store.create_admin_session(u.id, "hash-1", "x", 60).await,
        Err(StoreError::Conflict(_))
    ));

    // Expired sessions are not returned and are swept.
    store
        .create_admin_session(u.id, "hash-old", "csrf-old", 1)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE admin_sessions SET expires_at = now() - interval '1 second' WHERE id = 'hash-old'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert!(store.admin_session("hash-old").await.unwrap().is_none());
    assert_eq!(store.delete_expired_admin_sessions().await.unwrap(), 1);

    // A role change shows on the next request.
    store
        .set_admin_user_role("root", u.id, Role::Auditor)
        .await
        .unwrap();
    let s = store.admin_session("hash-1").await.unwrap().unwrap();
    assert_eq!(s.user.role, Role::Auditor);

    // Disabling ends every session of the user.
    store
        .set_admin_user_disabled("root", u.id, true)
        .await
        .unwrap();
    assert!(store.admin_session("hash-1").await.unwrap().is_none());
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM admin_sessions")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);

    // Logout.
    let root = store.admin_user_by_name("root").await.unwrap().unwrap();
    store
        .create_admin_session(root.id, "hash-r", "csrf-r", 60)
        .await
        .unwrap();
    store.delete_admin_session("hash-r").await.unwrap();
    assert!(store.admin_session("hash-r").await.unwrap().is_none());
}

fn admitted(a: SignInAdmission) -> AdminUser {
    match a {
        SignInAdmission::Admitted(u) => u,
        other => panic!("expected Admitted, got {other:?}"),
    }
}

async fn decoy_writes(db: &TestDatabase) -> i64 {
    sqlx::query_scalar("SELECT unknown_user_attempts FROM admin_sign_in_decoy")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn attempts_are_counted_before_checking_and_lock_the_account() {
    let (db, store) = store().await;
    let u = store
        .create_admin_user("cli", "alice", HASH, Role::Admin)
        .await
        .unwrap();
    for n in 1..=4 {
        let after = admitted(store.admit_sign_in("alice", 5, 900).await.unwrap());
        assert_eq!(after.failed_logins, n);
        assert!(after.locked_until.is_none(), "locked after {n}");
    }
    store.record_login_success(u.id).await.unwrap();
    let fresh = store.admin_user_by_id(u.id).await.unwrap().unwrap();
    assert_eq!(fresh.failed_logins, 0);

    for _ in 0..4 {
        admitted(store.admit_sign_in("alice", 5, 900).await.unwrap());
    }
    // The 5th attempt is still checked, and locks the account for the ones after it.
    let last = admitted(store.admit_sign_in("alice", 5, 900).await.unwrap());
    let until = last.locked_until.expect("locked by the 5th attempt");
    assert!(until > OffsetDateTime::now_utc() + Duration::minutes(14));
    // Attempts while locked are refused and do not extend the lock.
    let SignInAdmission::Refused(Some(again)) = store.admit_sign_in("alice", 5, 900).await.unwrap()
    else {
        panic!("a locked account refuses");
    };
    assert_eq!(again.locked_until, Some(until));
    // A correct password on the last admitted attempt still signs in: success clears the lock.
    store.record_login_success(u.id).await.unwrap();
    admitted(store.admit_sign_in("alice", 5, 900).await.unwrap());

    // Once a lock has run out, counting starts over.
    for _ in 0..5 {
        let _ = store.admit_sign_in("alice", 5, 900).await.unwrap();
    }
    sqlx::query("UPDATE admin_users SET locked_until = now() - interval '1 second'")
        .execute(&db.pool)
        .await
        .unwrap();
    let after = admitted(store.admit_sign_in("alice", 5, 900).await.unwrap());
    assert_eq!(after.failed_logins, 1);
    assert!(after.locked_until.is_none());

    // A password reset lifts a lock and ends sessions.
    for _ in 0..5 {
        let _ = store.admit_sign_in("alice", 5, 900).await.unwrap();
    }
    store
        .create_admin_session(u.id, "h", "c", 600)
        .await
        .unwrap();
    let reset = store
        .set_admin_user_password("root", u.id, HASH2)
        .await
        .unwrap();
    assert_eq!(reset.password_hash, HASH2);
    assert_eq!(reset.failed_logins, 0);
    assert!(reset.locked_until.is_none());
    assert!(store.admin_session("h").await.unwrap().is_none());
    let err = store
        .set_admin_user_password("root", u.id, "plaintext")
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["password_hash"]);
    admitted(store.admit_sign_in("alice", 5, 900).await.unwrap());
}

/// Issue 8: however many attempts arrive at once, only `max_failures` are admitted.
#[tokio::test]
async fn concurrent_attempts_admit_at_most_the_limit() {
    let (_db, store) = store().await;
    store
        .create_admin_user("cli", "alice", HASH, Role::Admin)
        .await
        .unwrap();
    let store = std::sync::Arc::new(store);
    let attempts: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.admit_sign_in("alice", 5, 900).await.unwrap() })
        })
        .collect();
    let mut admitted = 0;
    for a in attempts {
        if let SignInAdmission::Admitted(_) = a.await.unwrap() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);
    let user = store.admin_user_by_name("alice").await.unwrap().unwrap();
    assert!(user.locked_until.is_some());
}

/// Every attempt writes one row, whoever it names: the user's, or the decoy for unknown names.
#[tokio::test]
async fn refused_attempts_write_one_row_too() {
    let (db, store) = store().await;
    let u = store
        .create_admin_user("cli", "alice", HASH, Role::Admin)
        .await
        .unwrap();
    store
        .create_admin_user("cli", "bob", HASH, Role::Admin)
        .await
        .unwrap();
    let xmin = |name: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT xmin::text FROM admin_users WHERE username = $1",
            )
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };

    assert!(matches!(
        store.admit_sign_in("nobody", 5, 900).await.unwrap(),
        SignInAdmission::Refused(None)
    ));
    assert!(matches!(
        store.admit_sign_in("", 5, 900).await.unwrap(),
        SignInAdmission::Refused(None)
    ));
    assert_eq!(decoy_writes(&db).await, 2);

    store
        .set_admin_user_disabled("bob", u.id, true)
        .await
        .unwrap();
    let before = xmin("alice").await;
    let SignInAdmission::Refused(Some(disabled)) =
        store.admit_sign_in("alice", 5, 900).await.unwrap()
    else {
        panic!("a disabled account refuses");
    };
    assert!(disabled.disabled);
    assert_eq!(
        disabled.failed_logins, 0,
        "a disabled account's count is left alone"
    );
    assert_ne!(
        xmin("alice").await,
        before,
        "the row was written all the same"
    );
    assert_eq!(
        decoy_writes(&db).await,
        2,
        "known names never touch the decoy"
    );
}

#[tokio::test]
async fn user_changes_are_audited_and_keep_an_admin() {
    let (_db, store) = store().await;
    let a = store
        .create_admin_user("cli", "alice", HASH, Role::Admin)
        .await
        .unwrap();
    let b = store
        .create_admin_user("alice", "bob", HASH, Role::Auditor)
        .await
        .unwrap();
    // The only admin can be neither demoted nor disabled.
    let err = store
        .set_admin_user_role("alice", a.id, Role::Auditor)
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["role"]);
    let err = store
        .set_admin_user_disabled("alice", a.id, true)
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["role"]);

    store
        .set_admin_user_role("alice", b.id, Role::Admin)
        .await
        .unwrap();
    store
        .set_admin_user_disabled("alice", b.id, true)
        .await
        .unwrap();
    // A disabled admin does not count.
    assert!(
        store
            .set_admin_user_role("alice", a.id, Role::Auditor)
            .await
            .is_err()
    );
    store
        .set_admin_user_disabled("alice", b.id, false)
        .await
        .unwrap();
    store
        .set_admin_user_password("alice", b.id, HASH2)
        .await
        .unwrap();
    // No-op changes are not audited.
    store
        .set_admin_user_role("alice", b.id, Role::Admin)
        .await
        .unwrap();

    let changes = store.admin_changes(None, 100).await.unwrap();
    let actions: Vec<&str> = changes.iter().rev().map(|c| c.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "admin_user.create",
            "admin_user.create",
            "admin_user.role",
            "admin_user.disable",
            "admin_user.enable",
            "admin_user.password",
        ]
    );
    let all = serde_json::to_string(&changes).unwrap();
    assert!(
        !all.contains(HASH2) && !all.contains("b3RoZXJoYXNo"),
        "{all}"
    );
    let role = changes
        .iter()
        .find(|c| c.action == "admin_user.role")
        .unwrap();
    assert_eq!(role.target, "bob");
    assert_eq!(role.before.as_ref().unwrap()["role"], "auditor");
    assert_eq!(role.after.as_ref().unwrap()["role"], "admin");

    // Filters.
    let by_target = store
        .search_admin_changes(
            &AdminChangeFilter {
                target: Some("bob".into()),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(by_target.len(), 5);
    let by_action = store
        .search_admin_changes(
            &AdminChangeFilter {
                action: Some("admin_user.create".into()),
                actor: Some("cli".into()),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(by_action.len(), 1);
    assert_eq!(by_action[0].target, "alice");
    // Keyset: strictly older than the cursor.
    let page = store
        .search_admin_changes(&AdminChangeFilter::default(), Some(by_target[1].id), 100)
        .await
        .unwrap();
    assert!(page.iter().all(|c| c.id < by_target[1].id));
    let future = store
        .search_admin_changes(
            &AdminChangeFilter {
                from: Some(OffsetDateTime::now_utc() + Duration::hours(1)),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert!(future.is_empty());
    assert!(
        store.admin_user_by_id(b.id).await.unwrap().is_some()
            && store.admin_user_by_id(-1).await.unwrap().is_none()
    );
}

fn row(
    app: &str,
    subject: &str,
    outcome: Outcome,
    at: OffsetDateTime,
    latency_us: i64,
) -> IssuanceRecord {
    let issued = matches!(outcome, Outcome::Issued | Outcome::Cached);
    IssuanceRecord {
        id: 0,
        at,
        app: app.into(),
        subject: Some(subject.into()),
        outcome,
        http_status: if issued { 200 } else { 403 },
        error_code: None,
        request_id: format!("r-{app}-{latency_us}"),
        sts_request_id: None,
        tmp_secret_id: issued.then(|| format!("AKIDtmp{latency_us}")),
        policy_hash: None,
        template_version: None,
        actions: vec![],
        prefix: None,
        duration_seconds: issued.then_some(1800),
        expired_time: issued.then(|| at + Duration::minutes(30)),
        source_ip: Some("10.0.0.7".into()),
        user_agent: None,
        latency_us,
        count: 1,
    }
}

#[tokio::test]
async fn dashboard_totals_and_credential_expiry() {
    let (_db, store) = store().await;
    let now = OffsetDateTime::now_utc();
    let mut rows = Vec::new();
    for i in 1..=100 {
        rows.push(row(
            "alpha",
            "alice",
            Outcome::Issued,
            now - Duration::minutes(i),
            i * 1000,
        ));
    }
    rows.push(row(
        "alpha",
        "bob",
        Outcome::Cached,
        now - Duration::minutes(5),
        1,
    ));
    rows.push(row("alpha", "bob", Outcome::Denied, now, 2));
    rows.push(row("alpha", "bob", Outcome::RateLimited, now, 3));
    rows.push(row("alpha", "bob", Outcome::UpstreamError, now, 4));
    rows.push(row("alpha", "bob", Outcome::InvalidToken, now, 5));
    rows.push(row("beta", "carol", Outcome::BadRequest, now, 6));
    // Outside the window.
    rows.push(row(
        "alpha",
        "dave",
        Outcome::Issued,
        now - Duration::hours(25),
        7,
    ));
    store.insert_issuance_batch(&rows).await.unwrap();

    let traffic = store
        .traffic_since(now - Duration::hours(24))
        .await
        .unwrap();
    assert_eq!(traffic.len(), 2);
    let alpha = &traffic[0];
    assert_eq!(alpha.app, "alpha");
    assert_eq!(
        (alpha.total, alpha.issued, alpha.cached, alpha.denied),
        (105, 100, 1, 1)
    );
    assert_eq!(
        (
            alpha.rate_limited,
            alpha.upstream_error,
            alpha.invalid_token,
            alpha.bad_request
        ),
        (1, 1, 1, 0)
    );
    // 105 latencies: 1..=5 and 1000..=100000; the 95th percentile is the 100th value.
    assert_eq!(alpha.p95_latency_us, Some(95_000));
    assert_eq!(traffic[1].app, "beta");
    assert_eq!(traffic[1].bad_request, 1);

    // alice's newest credential (1 minute ago, 30 minutes) is the one that lasts longest.
    let until = store
        .latest_credential_expiry("alpha", "alice")
        .await
        .unwrap()
        .unwrap();
    let expected = now - Duration::minutes(1) + Duration::minutes(30);
    assert!((until - expected).abs() < Duration::seconds(1), "{until}");
    assert!(
        store
            .latest_credential_expiry("beta", "alice")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .latest_credential_expiry("alpha", "dave")
            .await
            .unwrap()
            .is_none()
    );

    // Exact-address and CIDR source filters find the same rows.
    let exact = store
        .search_issuance(
            &IssuanceFilter {
                source_ip: Some("10.0.0.7".into()),
                app: Some("beta".into()),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    let block = store
        .search_issuance(
            &IssuanceFilter {
                source_ip: Some("10.0.0.0/24".into()),
                app: Some("beta".into()),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(exact.len(), 1);
    assert_eq!(exact, block);
}
