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

/// Three hours ago, one hour ago and a minute into this hour, two apps, several outcomes.
/// Returns the start of the current hour: the tests pick their own `now` in it.
async fn seeded() -> (policy_store::testing::TestDatabase, PgStore, OffsetDateTime) {
    let (db, store) = store().await;
    let hour = this_hour(OffsetDateTime::now_utc());
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
    rows.push(row(
        hour + Duration::minutes(1),
        "photos",
        Outcome::Issued,
        "alice",
        50_000,
    ));
    store.insert_issuance_batch(&rows).await.unwrap();
    (db, store, hour)
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

/// What the log says with no rollup at all: the reference every rollup read must equal.
/// Forgets the watermark for one read, then puts it back.
async fn all_live(
    store: &PgStore,
    since: OffsetDateTime,
    now: OffsetDateTime,
) -> Vec<HourlyTraffic> {
    let (refreshed_at, rolled_to): (OffsetDateTime, OffsetDateTime) =
        sqlx::query_as("DELETE FROM issuance_rollup_state RETURNING refreshed_at, rolled_to")
            .fetch_one(store.pool())
            .await
            .unwrap();
    let live = store.hourly_traffic(since, now).await.unwrap();
    sqlx::query(
        "INSERT INTO issuance_rollup_state (id, refreshed_at, backfilled, rolled_to) \
         VALUES (1, $1, TRUE, $2)",
    )
    .bind(refreshed_at)
    .bind(rolled_to)
    .execute(store.pool())
    .await
    .unwrap();
    live
}

#[tokio::test]
async fn rollup_and_live_reads_agree_and_late_rows_are_counted() {
    let (_db, store, hour) = seeded().await;
    let since = hour - Duration::hours(23);
    let early = hour + Duration::minutes(4);

    // Never refreshed: everything is read live.
    assert_eq!(store.rollup_refreshed_at().await.unwrap(), None);
    let live = store.hourly_traffic(since, early).await.unwrap();
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

    // The first refresh backfills up to a watermark two minutes before now, this hour's
    // first minutes included.
    let refresh = store.refresh_rollup(early).await.unwrap();
    assert!(!refresh.busy);
    assert_eq!(
        (refresh.from, refresh.to),
        (hour - Duration::days(8), early - Duration::minutes(2)),
        "the first refresh backfills"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM issuance_hourly")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(stored, 4, "three complete-hour groups and this hour's one");
    let rolled = store.hourly_traffic(since, early).await.unwrap();
    assert_eq!(rolled, live, "histograms included");

    // Three rows commit after that refresh: one late in the previous hour, one late before
    // the watermark, one after it. The one after it is read live at once.
    store
        .insert_issuance_batch(&[
            row(
                hour - Duration::minutes(1),
                "photos",
                Outcome::Cached,
                "bob",
                300,
            ),
            row(
                hour + Duration::seconds(90),
                "photos",
                Outcome::Issued,
                "carol",
                40_000,
            ),
            row(
                hour + Duration::minutes(3),
                "photos",
                Outcome::Issued,
                "dave",
                45_000,
            ),
        ])
        .await
        .unwrap();
    let now = summary(&store.hourly_traffic(since, early).await.unwrap());
    assert!(
        now.contains(&(hour.unix_timestamp(), "photos".into(), "issued", 2)),
        "the row after the watermark is live, the late ones wait for the refresh: {now:?}"
    );

    // The next refresh, less than ten minutes into the hour, recomputes the previous hour too.
    let next = hour + Duration::minutes(5);
    let refresh = store.refresh_rollup(next).await.unwrap();
    assert_eq!(
        (refresh.from, refresh.to),
        (hour - Duration::hours(1), next - Duration::minutes(2))
    );
    let after = store.hourly_traffic(since, next).await.unwrap();
    for want in [
        (
            (hour - Duration::hours(1)).unix_timestamp(),
            "photos".to_owned(),
            "cached",
            11,
        ),
        (hour.unix_timestamp(), "photos".into(), "issued", 3),
    ] {
        assert!(summary(&after).contains(&want), "{want:?} in {after:?}");
    }
    assert_eq!(after, all_live(&store, since, next).await);

    // Later in the hour only the current hour is recomputed, and a row a second old is read
    // live next to the rolled-up part of its hour: one row per (hour, app, outcome).
    let later = hour + Duration::minutes(30);
    let refresh = store.refresh_rollup(later).await.unwrap();
    assert_eq!(
        (refresh.from, refresh.to),
        (hour, later - Duration::minutes(2))
    );
    store
        .insert_issuance_batch(&[row(
            later - Duration::seconds(1),
            "photos",
            Outcome::Issued,
            "erin",
            30_000,
        )])
        .await
        .unwrap();
    let merged = store.hourly_traffic(since, later).await.unwrap();
    assert!(
        summary(&merged).contains(&(hour.unix_timestamp(), "photos".into(), "issued", 4)),
        "{:?}",
        summary(&merged)
    );
    assert_eq!(merged, all_live(&store, since, later).await);

    // A window that starts later leaves the older hours out.
    let short = store
        .hourly_traffic(later - Duration::minutes(90), later)
        .await
        .unwrap();
    assert!(
        short.iter().all(|r| r.hour >= hour - Duration::hours(1)),
        "{:?}",
        summary(&short)
    );
}

#[tokio::test]
async fn a_stale_rollup_catches_up_and_never_widens_the_window() {
    let (_db, store, hour) = seeded().await;
    let early = hour + Duration::minutes(4);
    store.refresh_rollup(early).await.unwrap();

    // No refresh for three hours while rows keep coming.
    let mut rows = Vec::new();
    for h in 1..=3 {
        for (i, who) in ["frank", "grace"].iter().enumerate() {
            rows.push(row(
                hour + Duration::hours(h) + Duration::minutes(7 * i as i64 + 3),
                "photos",
                Outcome::Cached,
                who,
                400,
            ));
        }
    }
    store.insert_issuance_batch(&rows).await.unwrap();
    let late = hour + Duration::hours(3) + Duration::minutes(30);
    let since = late - Duration::hours(24);

    // A window that starts after the stale watermark reads nothing from before the window.
    let window = hour + Duration::hours(2);
    let recent = store.hourly_traffic(window, late).await.unwrap();
    assert!(
        recent.iter().all(|r| r.hour >= window),
        "{:?}",
        summary(&recent)
    );
    assert_eq!(recent.iter().map(|r| r.requests).sum::<i64>(), 4);
    let top = store.top_requesters(window, late, 10).await.unwrap();
    assert_eq!(
        top.subjects,
        [("frank".to_owned(), 2), ("grace".to_owned(), 2)]
    );

    // The next refresh recomputes every hour since the old watermark: no hole is left.
    let refresh = store.refresh_rollup(late).await.unwrap();
    assert_eq!(
        (refresh.from, refresh.to),
        (hour, late - Duration::minutes(2))
    );
    let stored: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(requests), 0)::bigint FROM issuance_hourly WHERE hour >= $1",
    )
    .bind(hour + Duration::hours(1))
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(stored, 6, "the three hours without a refresh are rolled up");
    assert_eq!(
        store.hourly_traffic(since, late).await.unwrap(),
        all_live(&store, since, late).await
    );
}

/// The state upsert of a version from before V12: it does not name the watermark column.
async fn old_version_marks_refreshed(store: &PgStore, at: OffsetDateTime) {
    sqlx::query(
        "INSERT INTO issuance_rollup_state (id, refreshed_at, backfilled) VALUES (1, $1, TRUE) \
         ON CONFLICT (id) DO UPDATE SET refreshed_at = $1, backfilled = TRUE",
    )
    .bind(at)
    .execute(store.pool())
    .await
    .unwrap();
}

#[tokio::test]
async fn readers_stay_exact_with_an_older_version_or_a_fast_clock_refreshing() {
    let (_db, store, hour) = seeded().await;
    let now = hour + Duration::minutes(30);
    let since = now - Duration::hours(24);
    store.refresh_rollup(now).await.unwrap();
    let expected = all_live(&store, since, now).await;

    // A replica of a version before V12 refreshes: complete hours only, and the watermark
    // column left as it was (its upsert does not name it). Its statements, replayed.
    for sql in [
        "DELETE FROM issuance_hourly WHERE hour >= date_trunc('hour', $1::timestamptz, 'UTC') - interval '2 hours'",
        "DELETE FROM issuance_hourly_top WHERE hour >= date_trunc('hour', $1::timestamptz, 'UTC') - interval '2 hours'",
    ] {
        sqlx::query(sql)
            .bind(now)
            .execute(store.pool())
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO issuance_hourly (hour, app, outcome, requests, latency) \
         SELECT date_trunc('hour', at, 'UTC'), app, outcome, sum(count), \
                jsonb_object_agg(b, n) FROM ( \
           SELECT at, app, outcome, count, \
                  LEAST(200, GREATEST(0, floor(ln(GREATEST(latency_us, 1)::float8 / 100) / ln(1.1))))::int AS b, \
                  1 AS n FROM issuance_log \
           WHERE at >= date_trunc('hour', $1::timestamptz, 'UTC') - interval '2 hours' \
             AND at < date_trunc('hour', $1::timestamptz, 'UTC')) t \
         GROUP BY 1, 2, 3",
    )
    .bind(now)
    .execute(store.pool())
    .await
    .unwrap();
    old_version_marks_refreshed(&store, now + Duration::seconds(20)).await;
    let during_upgrade = store.hourly_traffic(since, now).await.unwrap();
    assert_eq!(summary(&during_upgrade), summary(&expected));
    // The same when the older version inserted the state row itself: the column's default.
    sqlx::query("DELETE FROM issuance_rollup_state")
        .execute(store.pool())
        .await
        .unwrap();
    old_version_marks_refreshed(&store, now + Duration::seconds(20)).await;
    let inserted_by_old = store.hourly_traffic(since, now).await.unwrap();
    assert_eq!(summary(&inserted_by_old), summary(&expected));

    // The refresher's clock runs ahead of this reader's: the watermark's hour is read live
    // in full, so a row the reader's clock calls two minutes old is not lost.
    store
        .refresh_rollup(now + Duration::minutes(5))
        .await
        .unwrap();
    store
        .insert_issuance_batch(&[row(
            now - Duration::minutes(1),
            "photos",
            Outcome::Issued,
            "heidi",
            30_000,
        )])
        .await
        .unwrap();
    let skewed = summary(&store.hourly_traffic(since, now).await.unwrap());
    assert!(
        skewed.contains(&(hour.unix_timestamp(), "photos".into(), "issued", 2)),
        "{skewed:?}"
    );
}

#[tokio::test]
async fn percentiles_from_the_rollup_are_within_their_bound() {
    let (_db, store, hour) = seeded().await;
    let now = hour + Duration::minutes(30);
    store.refresh_rollup(now).await.unwrap();
    let rows = store
        .hourly_traffic(now - Duration::hours(24), now)
        .await
        .unwrap();
    let issued = rows
        .iter()
        .find(|r| r.outcome == Outcome::Issued && r.hour < hour)
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
    let (_db, store, hour) = seeded().await;
    let now = hour + Duration::minutes(30);
    store.refresh_rollup(now).await.unwrap();
    // After the watermark: read live and added to this hour's rolled-up part.
    store
        .insert_issuance_batch(&[row(
            now - Duration::seconds(1),
            "photos",
            Outcome::Issued,
            "alice",
            30_000,
        )])
        .await
        .unwrap();
    let top = store
        .top_requesters(now - Duration::hours(24), now, 10)
        .await
        .unwrap();
    // alice: 40 three hours ago and 1 this hour from the rollup, 1 live.
    assert_eq!(
        top.subjects,
        [
            ("alice".to_owned(), 42),
            ("bob".to_owned(), 10),
            ("mallory".to_owned(), 10)
        ]
    );
    assert_eq!(top.source_ips[0], ("198.51.100.5".to_owned(), 42));
    let one = store
        .top_requesters(now - Duration::hours(24), now, 1)
        .await
        .unwrap();
    assert_eq!(one.subjects.len(), 1);
}

#[tokio::test]
async fn a_refresh_running_elsewhere_is_left_alone() {
    let (_db, store, hour) = seeded().await;
    let now = hour + Duration::minutes(30);
    let mut other = store.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(6004515768980425804)")
        .execute(&mut *other)
        .await
        .unwrap();
    assert!(store.refresh_rollup(now).await.unwrap().busy);
    other.rollback().await.unwrap();
    assert!(!store.refresh_rollup(now).await.unwrap().busy);
}
