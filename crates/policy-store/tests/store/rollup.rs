//! The dashboard's hourly rollup against a real database: the same figures whether they come
//! live from the log or from the rollup, late rows counted, percentiles within their bound.

use policy_store::{
    HourlyTraffic, IssuanceRecord, IssuanceStore, LatencyHistogram, Outcome, PgStore, RollupStore,
};
use time::{Duration, OffsetDateTime};

use super::store;

fn row(
    at: OffsetDateTime,
    app: &str,
    outcome: Outcome,
    subject: &str,
    latency_us: i64,
) -> IssuanceRecord {
    IssuanceRecord {
        id: 0,
        at,
        app: app.into(),
        subject: Some(subject.into()),
        outcome,
        http_status: if matches!(outcome, Outcome::Issued | Outcome::Cached) {
            200
        } else {
            403
        },
        error_code: None,
        request_id: format!("r-{}", at.unix_timestamp_nanos()),
        sts_request_id: None,
        tmp_secret_id: None,
        policy_hash: None,
        template_version: None,
        actions: vec![],
        prefix: None,
        duration_seconds: None,
        expired_time: None,
        source_ip: Some(format!("198.51.100.{}", subject.len())),
        user_agent: None,
        latency_us,
        count: 1,
    }
}

fn this_hour(now: OffsetDateTime) -> OffsetDateTime {
    now.replace_minute(0)
        .unwrap()
        .replace_second(0)
        .unwrap()
        .replace_nanosecond(0)
        .unwrap()
}

/// Three hours ago, one hour ago and this hour, two apps, several outcomes.
async fn seeded() -> (policy_store::testing::TestDatabase, PgStore, OffsetDateTime) {
    let (db, store) = store().await;
    let now = OffsetDateTime::now_utc();
    let hour = this_hour(now);
    let mut rows = Vec::new();
    for i in 0..40 {
        let at = hour - Duration::hours(3) + Duration::seconds(i * 60);
        rows.push(row(
            at,
            "photos",
            Outcome::Issued,
            "alice",
            20_000 + i * 1000,
        ));
    }
    for i in 0..10 {
        let at = hour - Duration::hours(1) + Duration::seconds(i * 5);
        rows.push(row(at, "photos", Outcome::Cached, "bob", 300));
        rows.push(row(at, "notes", Outcome::InvalidToken, "mallory", 150));
    }
    // This hour, never later than now.
    rows.push(row(hour, "photos", Outcome::Issued, "alice", 50_000));
    store.insert_issuance_batch(&rows).await.unwrap();
    (db, store, now)
}

fn summary(rows: &[HourlyTraffic]) -> Vec<(i64, String, &'static str, i64)> {
    rows.iter()
        .map(|r| {
            (
                r.hour.unix_timestamp(),
                r.app.clone(),
                r.outcome.as_str(),
                r.requests,
            )
        })
        .collect()
}

#[tokio::test]
async fn rollup_and_live_reads_agree_and_late_rows_are_counted() {
    let (_db, store, now) = seeded().await;
    let since = now - Duration::hours(24);
    let hour = this_hour(now);

    // Never refreshed: everything is read live.
    assert_eq!(store.rollup_refreshed_at().await.unwrap(), None);
    let live = store.hourly_traffic(since, now).await.unwrap();
    let expected = vec![
        (
            (hour - Duration::hours(3)).unix_timestamp(),
            "photos".to_owned(),
            "issued",
            40,
        ),
        (
            (hour - Duration::hours(1)).unix_timestamp(),
            "notes".to_owned(),
            "invalid_token",
            10,
        ),
        (
            (hour - Duration::hours(1)).unix_timestamp(),
            "photos".to_owned(),
            "cached",
            10,
        ),
        (hour.unix_timestamp(), "photos".to_owned(), "issued", 1),
    ];
    assert_eq!(summary(&live), expected);

    // Refreshed: complete hours come from the rollup, the current hour stays live.
    let refresh = store.refresh_rollup(now).await.unwrap();
    assert!(!refresh.busy);
    assert_eq!(refresh.to, hour);
    assert_eq!(
        refresh.from,
        hour - Duration::days(8),
        "the first refresh backfills"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM issuance_hourly")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        stored, 3,
        "three (hour, app, outcome) groups of complete hours"
    );
    let rolled = store.hourly_traffic(since, now).await.unwrap();
    assert_eq!(summary(&rolled), expected);
    assert_eq!(rolled, live, "histograms included");

    // A row of the previous hour that commits late, and one in this hour: the next refresh
    // recomputes the last two hours, and the current hour is always live.
    store
        .insert_issuance_batch(&[
            row(
                hour - Duration::minutes(1),
                "photos",
                Outcome::Cached,
                "bob",
                300,
            ),
            row(hour, "photos", Outcome::Issued, "carol", 40_000),
        ])
        .await
        .unwrap();
    let refresh = store.refresh_rollup(now).await.unwrap();
    assert_eq!(refresh.from, hour - Duration::hours(2));
    let after = summary(&store.hourly_traffic(since, now).await.unwrap());
    assert!(
        after.contains(&(
            (hour - Duration::hours(1)).unix_timestamp(),
            "photos".into(),
            "cached",
            11
        )),
        "{after:?}"
    );
    assert!(
        after.contains(&(hour.unix_timestamp(), "photos".into(), "issued", 2)),
        "{after:?}"
    );

    // A window that starts later leaves the older hours out.
    let short = store
        .hourly_traffic(now - Duration::minutes(90), now)
        .await
        .unwrap();
    assert!(
        short.iter().all(|r| r.hour >= hour - Duration::hours(1)),
        "{:?}",
        summary(&short)
    );
}

#[tokio::test]
async fn percentiles_from_the_rollup_are_within_their_bound() {
    let (_db, store, now) = seeded().await;
    store.refresh_rollup(now).await.unwrap();
    let rows = store
        .hourly_traffic(now - Duration::hours(24), now)
        .await
        .unwrap();
    let issued = rows
        .iter()
        .find(|r| r.outcome == Outcome::Issued && r.hour < this_hour(now))
        .unwrap();
    // 40 latencies 20 ms, 21 ms, … 59 ms: p50 is 39 ms and p95 is 58 ms (nearest rank).
    for (q, exact) in [(0.5, 39_000), (0.95, 58_000)] {
        let got = issued.latency.quantile(q).unwrap();
        assert!(
            got >= exact && got <= exact * 11 / 10,
            "q{q}: {got} vs {exact}"
        );
    }
    let mut merged = LatencyHistogram::default();
    for r in &rows {
        merged.merge(&r.latency);
    }
    assert_eq!(merged.count(), rows.iter().map(|r| r.requests).sum::<i64>());
}

#[tokio::test]
async fn top_requesters_merge_rollup_and_live_hours() {
    let (_db, store, now) = seeded().await;
    store.refresh_rollup(now).await.unwrap();
    let top = store
        .top_requesters(now - Duration::hours(24), now, 10)
        .await
        .unwrap();
    // alice: 40 from the rollup + 1 live.
    assert_eq!(
        top.subjects,
        [
            ("alice".to_owned(), 41),
            ("bob".to_owned(), 10),
            ("mallory".to_owned(), 10)
        ]
    );
    assert_eq!(top.source_ips[0], ("198.51.100.5".to_owned(), 41));
    let one = store
        .top_requesters(now - Duration::hours(24), now, 1)
        .await
        .unwrap();
    assert_eq!(one.subjects.len(), 1);
}

#[tokio::test]
async fn a_refresh_running_elsewhere_is_left_alone() {
    let (_db, store, now) = seeded().await;
    let mut other = store.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(6004515768980425804)")
        .execute(&mut *other)
        .await
        .unwrap();
    assert!(store.refresh_rollup(now).await.unwrap().busy);
    other.rollback().await.unwrap();
    assert!(!store.refresh_rollup(now).await.unwrap().busy);
}
