//! Refusals (issue 8 item 9): answered at once without waiting for the database, their rows
//! folded under a flood from one address, and an address that keeps failing authentication
//! cooled down before verification, without locking out the users already working there.

use std::collections::HashMap;

use policy_store::Outcome;
use serde_json::Value;

use crate::deadlines::BlackHole;
use crate::support::*;

/// `GET /v1/apps/photos/credentials` with `token`, as if from `ip` (behind a trusted proxy).
async fn from(app: &TestApp, ip: &str, token: &str) -> (u16, Value) {
    let res = app
        .http
        .get(format!("{}/v1/apps/{APP}/credentials", app.url))
        .header("x-forwarded-for", ip)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// With the database silent, a refusal is still answered for what it is (401), not 503:
/// its row does not hold up the answer. Its row is written once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_do_not_wait_for_the_database() {
    let hole = BlackHole::start().await;
    let app = TestApp::spawn_with(Options {
        db_via: Some(hole.addr),
        trust_forwarded_for: true,
        ..Options::default()
    })
    .await;
    assert_eq!(app.credentials("alice", "").await.status(), 200);
    hole.swallow();
    let (status, body) = from(&app, "192.0.2.1", "not-a-jwt").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_token");
    hole.forward();
    let rows = app.log_rows().await;
    assert!(
        rows.iter()
            .any(|r| r.outcome == Outcome::InvalidToken
                && r.source_ip.as_deref() == Some("192.0.2.1")),
        "{rows:?}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_address_cools_down_and_its_flood_is_folded() {
    let app = TestApp::spawn_with(Options {
        trust_forwarded_for: true,
        ..Options::default()
    })
    .await;
    const NAT: &str = "203.0.113.9";
    // alice works from behind the NAT address before the flood.
    assert_eq!(from(&app, NAT, &app.token("alice")).await.0, 200);

    let mut statuses: HashMap<u16, u64> = HashMap::new();
    const FLOOD: u64 = 150;
    for i in 0..FLOOD {
        let (status, _) = from(&app, NAT, &format!("garbage.{i}.token")).await;
        *statuses.entry(status).or_default() += 1;
    }
    // The first failures are verified and refused (401); the one past the limit (60 a
    // minute by default) starts the cool-down: from then on the address gets 429 before any
    // verification.
    assert_eq!(statuses.get(&401).copied(), Some(61), "{statuses:?}");
    assert_eq!(
        statuses.get(&429).copied(),
        Some(FLOOD - 61),
        "{statuses:?}"
    );

    // While it cools down: alice, known there, still gets her credential; a subject never
    // seen from that address waits; other addresses are untouched.
    assert_eq!(from(&app, NAT, &app.token("alice")).await.0, 200);
    let (status, body) = from(&app, NAT, &app.token("bob")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(
        from(&app, "198.51.100.20", &app.token("carol")).await.0,
        200
    );

    // Every refusal is in the log, most of them folded into summary rows with a count.
    let rows = app.log_rows().await;
    let nat_refusals: Vec<_> = rows
        .iter()
        .filter(|r| r.source_ip.as_deref() == Some(NAT) && r.http_status != 200)
        .collect();
    let requests: i64 = nat_refusals.iter().map(|r| i64::from(r.count)).sum();
    assert_eq!(requests, FLOOD as i64 + 1, "{nat_refusals:?}");
    assert!(
        nat_refusals.len() < 60,
        "{} rows: nothing folded",
        nat_refusals.len()
    );
    assert!(nat_refusals.iter().any(|r| r.count > 1));
    assert!(
        nat_refusals
            .iter()
            .any(|r| r.outcome == Outcome::RateLimited
                && r.error_code.as_deref() == Some("rate_limited:auth_cooldown"))
    );

    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert_eq!(metric(&metrics, "stsgate_auth_cooldowns_total"), 1);
    assert_eq!(
        metric(&metrics, "stsgate_auth_cooldown_refusals_total"),
        FLOOD - 61 + 1
    );
    assert!(metric(&metrics, "stsgate_audit_refusal_folded_total") > 0);
    app.shutdown().await;
}
