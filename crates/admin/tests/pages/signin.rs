//! Sign-in under attack (issue 8): the lockout cannot be raced, every path does the same
//! database work, floods are answered 429 before any work, and garbage session cookies never
//! reach the database.

use std::sync::atomic::Ordering;
use std::time::Duration;

use admin::AdminConfig;
use policy_store::AdminUserStore;
use sqlx::Connection as _;

use crate::support::*;

/// Budgets out of the way, for tests about what happens behind them.
fn unthrottled() -> AdminConfig {
    AdminConfig {
        sign_in_per_source_per_minute: 10_000,
        sign_in_per_minute: 10_000,
        ..AdminConfig::default()
    }
}

/// A browser holding the sign-in form's double-submit token, ready to POST.
async fn sign_in_form(t: &TestAdmin) -> (Browser, String) {
    let b = t.browser();
    let csrf = b.get("/login").await.csrf();
    (b, csrf)
}

async fn post_login(b: &Browser, csrf: &str, username: &str, password: &str) -> Resp {
    b.post(
        "/login",
        &[
            ("csrf", csrf),
            ("username", username),
            ("password", password),
            ("next", "/"),
        ],
    )
    .await
}

/// Sessions of this database waiting for a lock.
async fn lock_waiters(t: &TestAdmin) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(&t.db.pool)
    .await
    .unwrap()
}

async fn wait_for_lock_waiters(t: &TestAdmin, n: i64) {
    for _ in 0..1200 {
        if lock_waiters(t).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} sign-in attempts never queued on the user's row");
}

/// Issue 8 item 2: 19 wrong passwords and then the right one, all in flight at once, used to
/// sign in after the account had locked (the lock was checked before argon2, on a row read
/// before the lock). Each attempt is now admitted by the database before its password is
/// checked, so only the first 5 are checked.
///
/// To make "the right one comes last" exact, the test holds root's row locked while the
/// attempts arrive: each one queues on it in arrival order (on today's code and before the
/// fix alike), and is let go when the test has seen all 20 waiting.
///
/// PostgreSQL wakes the queued attempts in arrival order almost always, but does not promise
/// it: once in many runs the right password is admitted among the first five and, correctly,
/// signs in. Before the fix it signed in every time, so the test fails only when it does so
/// on three fresh databases in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_attempts_cannot_outrun_the_lockout() {
    for _ in 0..3 {
        if !right_password_signed_in_after_a_queued_burst().await {
            return;
        }
    }
    panic!("the right password, queued after 19 wrong ones, signed in on 3 of 3 tries");
}

/// One burst of 19 wrong passwords and then the right one, all queued at once. Returns
/// whether the right one signed in; every other attempt is refused and the account ends
/// locked either way.
async fn right_password_signed_in_after_a_queued_burst() -> bool {
    let t = TestAdmin::start_with_pool(
        AdminConfig {
            max_failed_logins: 5,
            lockout: Duration::from_secs(900),
            ..unthrottled()
        },
        24,
    )
    .await;
    let mut forms = Vec::new();
    for _ in 0..20 {
        forms.push(sign_in_form(&t).await);
    }
    let right = forms.pop().unwrap();

    let mut holder = sqlx::PgConnection::connect(&t.db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT 1 FROM admin_users WHERE username = 'root' FOR UPDATE")
        .execute(&mut holder)
        .await
        .unwrap();

    let mut attempts = Vec::new();
    for (b, csrf) in forms {
        attempts.push(tokio::spawn(async move {
            post_login(&b, &csrf, "root", "wrong-password-123").await
        }));
    }
    wait_for_lock_waiters(&t, 19).await;
    attempts.push(tokio::spawn(async move {
        let (b, csrf) = right;
        post_login(&b, &csrf, "root", ADMIN_PASSWORD).await
    }));
    wait_for_lock_waiters(&t, 20).await;
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

    let last = attempts.len() - 1;
    let mut signed_in = false;
    for (i, attempt) in attempts.into_iter().enumerate() {
        let res = attempt.await.unwrap();
        let session = res
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("__Host-stsgate_session="));
        if i == last && res.status == 303 {
            assert!(session, "a 303 without a session: {}", res.body);
            signed_in = true;
            continue;
        }
        assert_eq!(res.status, 401, "attempt {i}: {}", res.body);
        assert!(!session, "attempt {i} got a session");
    }
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM admin_sessions")
        .fetch_one(&t.db.pool)
        .await
        .unwrap();
    assert_eq!(sessions, i64::from(signed_in));
    let root = t.store.admin_user_by_name("root").await.unwrap().unwrap();
    assert!(root.locked_until.is_some(), "the account is locked");
    signed_in
}

#[tokio::test]
async fn the_right_password_after_a_few_wrong_ones_signs_in() {
    let t = TestAdmin::start_with(unthrottled()).await;
    let b = t.browser();
    for _ in 0..3 {
        assert_eq!(b.login("root", "wrong-password-123").await.status, 401);
    }
    let res = b.login("root", ADMIN_PASSWORD).await;
    assert_eq!(res.status, 303, "{}", res.body);
    assert_eq!(b.get("/").await.status, 200);
    let root = t.store.admin_user_by_name("root").await.unwrap().unwrap();
    assert_eq!(root.failed_logins, 0);
    assert!(root.locked_until.is_none());
}

/// The known-user path used to do one more database round trip (the failure count) than the
/// unknown-user path. Every refused or failed sign-in now makes exactly one: the admission
/// statement (which writes the user's row, or a decoy row for unknown names).
#[tokio::test]
async fn every_failed_sign_in_does_the_same_database_work() {
    let t = TestAdmin::start_with(AdminConfig {
        max_failed_logins: 2,
        ..unthrottled()
    })
    .await;
    let decoy = || async {
        sqlx::query_scalar::<_, i64>("SELECT unknown_user_attempts FROM admin_sign_in_decoy")
            .fetch_one(&t.db.pool)
            .await
            .unwrap()
    };
    let calls = || t.server_db_calls.load(Ordering::SeqCst);
    t.store
        .set_admin_user_disabled("test", t.auditor_id, true)
        .await
        .unwrap();
    let long_name = "x".repeat(65);
    let cases: [(&str, &str); 6] = [
        ("root", "wrong-password-123"),   // known, counted
        ("nobody", "wrong-password-123"), // unknown
        ("audrey", AUDITOR_PASSWORD),     // disabled, even with its right password
        ("root", "wrong-password-123"),   // known, counted, locks
        ("root", ADMIN_PASSWORD),         // locked, even with the right password
        (&long_name, "wrong-password-123"),
    ];
    for (username, password) in cases {
        let (b, csrf) = sign_in_form(&t).await;
        let before = calls();
        let res = post_login(&b, &csrf, username, password).await;
        assert_eq!(res.status, 401, "{username}: {}", res.body);
        assert_eq!(calls() - before, 1, "database calls for {username}");
    }
    assert_eq!(decoy().await, 2, "the unknown and the overlong name");
}

/// Issue 8 "also check": sign-in attempts beyond a source's budget, or beyond everybody's,
/// are answered 429 before any database work (and so before any argon2 work).
#[tokio::test]
async fn sign_in_floods_get_429_before_any_work() {
    // Budgets refill one attempt every 30 s (per source) and 20 s (everybody): far longer than
    // this test takes, so no refill happens in between.
    let t = TestAdmin::start_with(AdminConfig {
        sign_in_per_source_per_minute: 2,
        sign_in_per_minute: 3,
        trust_forwarded_for: true,
        ..AdminConfig::default()
    })
    .await;
    let calls = || t.server_db_calls.load(Ordering::SeqCst);
    let attempt = |source: &'static str| {
        let t = &t;
        async move {
            let (b, csrf) = sign_in_form(t).await;
            let before = calls();
            let res = b
                .post_with_headers(
                    "/login",
                    &[
                        ("csrf", &csrf),
                        ("username", "root"),
                        ("password", "wrong-password-123"),
                    ],
                    // A client-written line, then the proxy's: the proxy's counts.
                    &[
                        ("x-forwarded-for", "203.0.113.250"),
                        ("x-forwarded-for", source),
                    ],
                )
                .await;
            (res, calls() - before)
        }
    };
    let retry_after = |res: &Resp| res.header("retry-after").parse::<u64>().unwrap();
    for _ in 0..2 {
        let (res, db) = attempt("198.51.100.1").await;
        assert_eq!((res.status, db), (401, 1));
    }
    let (res, db) = attempt("198.51.100.1").await;
    assert_eq!(res.status, 429, "{}", res.body);
    assert_eq!(db, 0, "no database work for a refused attempt");
    assert!((1..=30).contains(&retry_after(&res)), "{:?}", res.headers);
    assert!(
        res.body.contains("Too many sign-in attempts"),
        "{}",
        res.body
    );

    // Another source has its own budget, until everybody's (3 a minute) is spent.
    let (res, _) = attempt("198.51.100.2").await;
    assert_eq!(res.status, 401);
    let (res, db) = attempt("198.51.100.3").await;
    assert_eq!((res.status, db), (429, 0));
    assert!((1..=20).contains(&retry_after(&res)), "{:?}", res.headers);
}

/// Issue 8 "also check": a session cookie that cannot be a session token is turned away
/// without a query; only well-formed ones are looked up.
#[tokio::test]
async fn garbage_session_cookies_never_reach_the_database() {
    let t = TestAdmin::start().await;
    let calls = || t.server_db_calls.load(Ordering::SeqCst);
    let garbage = [
        "x".to_owned(),
        "' OR 1=1 --".to_owned(),
        "A".repeat(42),
        "A".repeat(44),
        "A".repeat(100),
        format!("{}+", "A".repeat(42)),
    ];
    for token in &garbage {
        let b = t.browser();
        b.cookies
            .lock()
            .unwrap()
            .insert("__Host-stsgate_session".into(), token.clone());
        let before = calls();
        assert_eq!(b.get("/").await.status, 303, "{token}");
        assert_eq!(b.get("/login").await.status, 200, "{token}");
        assert_eq!(b.post("/logout", &[]).await.status, 401, "{token}");
        assert_eq!(calls() - before, 0, "{token:?} reached the database");
    }
    // A well-formed token is looked up (and found to be no session).
    let b = t.browser();
    b.cookies
        .lock()
        .unwrap()
        .insert("__Host-stsgate_session".into(), "A".repeat(43));
    let before = calls();
    assert_eq!(b.get("/").await.status, 303);
    assert_eq!(calls() - before, 1);
}
