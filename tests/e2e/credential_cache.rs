//! The credential cache end to end: the reuse window (`min_remaining`), a new credential after
//! an app edit, and short durations against an STS whose clock is behind ours.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use policy_store::Outcome;
use serde_json::Value;
use sts_emulator::Faults;

use crate::support::*;

/// Changes the `photos` app's durations and waits until the gateway has dropped its old copy.
async fn set_durations(app: &TestApp, default: i32, min_remaining: Option<i32>) {
    let mut input = app_input(APP, &Options::default());
    input.duration_default = default;
    input.min_remaining = min_remaining;
    app.edit_app(app.app_id, &input).await;
}

async fn tmp_secret_id(res: reqwest::Response) -> String {
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["credentials"]["tmpSecretId"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// alice's credential, asked for twice: minted once, then the same one from the cache.
async fn minted_then_reused(app: &TestApp) -> String {
    let id = tmp_secret_id(app.credentials("alice", "").await).await;
    assert_eq!(tmp_secret_id(app.credentials("alice", "").await).await, id);
    id
}

/// Two credentials were minted, each handed out twice (issued, then cached).
async fn two_mints_each_reused_once(app: &TestApp) {
    assert_eq!(app.emulator.stats().issued, 2);
    assert_eq!(
        app.outcomes().await,
        [
            Outcome::Issued,
            Outcome::Cached,
            Outcome::Issued,
            Outcome::Cached
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_is_reused_while_min_remaining_is_left_then_minted_again() {
    let app = TestApp::spawn().await;
    // Reused for 6 - 3 = 3 s of STS's clock after minting, then no longer.
    set_durations(&app, 6, Some(3)).await;

    let res = app.credentials("alice", "").await;
    assert_eq!(res.status(), 200);
    let first: Value = res.json().await.unwrap();
    let id = first["credentials"]["tmpSecretId"].as_str().unwrap();
    let reuse_until = first["expiredTime"].as_i64().unwrap() - 3;
    assert_eq!(tmp_secret_id(app.credentials("alice", "").await).await, id);

    // Past the window (wall clock, with a margin for the moment of the check).
    let until = UNIX_EPOCH + Duration::from_secs(reuse_until as u64) + Duration::from_millis(200);
    if let Ok(wait) = until.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    let second = minted_then_reused(&app).await;
    assert_ne!(second, id, "reused past min_remaining");

    two_mints_each_reused_once(&app).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_edit_mints_a_new_credential() {
    let app = TestApp::spawn().await;
    let first = minted_then_reused(&app).await;

    // Any edit (here only the display name) is a new generation of the app: nothing cached
    // before it is served after it.
    let mut input = app_input(APP, &Options::default());
    input.name = "photos, renamed".into();
    app.edit_app(app.app_id, &input).await;

    let second = minted_then_reused(&app).await;
    assert_ne!(
        second, first,
        "a credential from before the edit was served"
    );
    two_mints_each_reused_once(&app).await;
    app.shutdown().await;
}

/// With `duration_seconds=2` the reuse window is 1 s, and STS's clock 30 s behind ours puts it
/// in the past before the credential arrives. The request that minted it and every request
/// that waited for that mint get it; none is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_durations_against_a_lagging_sts_serve_every_waiter() {
    let app = TestApp::spawn().await;
    set_durations(&app, 2, None).await;
    app.emulator
        .set_faults(Faults {
            clock_offset_secs: -30,
            // Long enough for all the requests below to join the one mint.
            latency_ms: 1500,
            ..Faults::default()
        })
        .unwrap();

    let mut ids = HashSet::new();
    for (status, body) in app.credentials_at_once(vec![app.token("carol"); 20]).await {
        assert_eq!(status, 200, "{body}");
        ids.insert(
            body["credentials"]["tmpSecretId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        // STS's clock, not ours: the credential is already past its (1 s) reuse window.
        assert!(body["expiredTime"].as_i64().unwrap() < now());
    }
    assert_eq!(ids.len(), 1, "every waiter got the leader's credential");
    assert_eq!(app.emulator.stats().issued, 1);

    // Nothing past its window stays cached: the next request mints again, and is served.
    app.emulator
        .set_faults(Faults {
            clock_offset_secs: -30,
            ..Faults::default()
        })
        .unwrap();
    let next = tmp_secret_id(app.credentials("carol", "").await).await;
    assert!(!ids.contains(&next));
    let rows = app.log_rows().await;
    assert_eq!(rows.len(), 21);
    assert!(rows.iter().all(|r| r.http_status == 200));
    app.shutdown().await;
}
