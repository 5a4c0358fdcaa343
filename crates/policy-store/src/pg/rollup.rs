//! The dashboard's hourly rollup of the issuance log (`issuance_hourly`,
//! `issuance_hourly_top`, migrations V11 and V12).
//!
//! [`PgStore::refresh_rollup`] (every minute from `serve`) aggregates the log up to a
//! watermark two minutes before now, the current hour included, and records it as
//! `issuance_rollup_state.rolled_to`. Each refresh recomputes whole hours from the one the
//! previous watermark was in, and the previous hour until the watermark is ten minutes past
//! its end, so rows that commit a little after their timestamp (folded refusal summaries wait
//! for their minute to end, an unanswered issuance is amended within about three minutes)
//! are counted by the next refresh. Rows committing later than that into an hour no longer
//! recomputed are not in the rollup; `stsgate rollup` after truncating `issuance_rollup_state`
//! rebuilds the last 8 days. Reads take everything before the watermark
//! from the rollup and only the rows after it live from the log, in one snapshot, so the page
//! costs about the same at millions of rows a day and still shows a request made a second ago.

use async_trait::async_trait;
use sqlx::Row as _;
use time::{Duration, OffsetDateTime};

use super::{PgStore, decode_err};
use crate::error::{DbResult as _, Result};
use crate::model::{
    HourlyTraffic, LatencyHistogram, Outcome, TopRequesters, hour_start as hour_floor,
};

/// Serialises refreshes across replicas ('STSGROLL').
const ROLLUP_LOCK_KEY: i64 = 0x5354_5347_524f_4c4c;

/// How far back the first refresh of a database reaches (the dashboard's longest window is
/// 7 days), and how long rollup rows are kept.
const BACKFILL: Duration = Duration::days(8);
const KEEP: Duration = Duration::days(35);

/// The watermark trails now by this much: rows younger than it are always read live, so a
/// row that commits up to this long after its timestamp is never missed, not even for the
/// minute until the next refresh.
const ROLLUP_LAG: Duration = Duration::minutes(2);

/// Rows committing up to this long after their timestamp are counted by the next refresh:
/// the hour they fall in is recomputed while the watermark is less than this past it.
const LATE: Duration = Duration::minutes(10);

/// Subjects and addresses kept per hour.
const TOP_PER_HOUR: i64 = 50;

/// Per (hour, app, outcome) counts and latency histograms of the rows in `[$1, $2)`. A
/// folded refusal row stands for `count` requests. The bucket expression is
/// [`LatencyHistogram::bucket`]'s.
const HOURLY: &str = "\
    SELECT hour, app, outcome, sum(n)::bigint AS requests, jsonb_object_agg(bucket, n) AS latency \
    FROM (SELECT date_trunc('hour', at, 'UTC') AS hour, app, outcome, \
                 LEAST(200, GREATEST(0, floor(ln(GREATEST(latency_us, 1)::float8 / 100) / ln(1.1))))::int \
                   AS bucket, \
                 sum(count) AS n \
          FROM issuance_log WHERE at >= $1 AND at < $2 GROUP BY 1, 2, 3, 4) b \
    GROUP BY hour, app, outcome";

/// What one refresh did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupRefresh {
    /// The log rows recomputed: `[from, to)`. `from` is the start of an hour, `to` the new
    /// watermark (two minutes before now).
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    /// Another replica was refreshing; nothing was done.
    pub busy: bool,
}

fn hourly_from_row(row: &sqlx::postgres::PgRow) -> Result<HourlyTraffic, sqlx::Error> {
    let outcome: String = row.try_get("outcome")?;
    let latency: sqlx::types::Json<LatencyHistogram> = row.try_get("latency")?;
    Ok(HourlyTraffic {
        hour: row.try_get("hour")?,
        app: row.try_get("app")?,
        outcome: Outcome::parse(&outcome)
            .ok_or_else(|| decode_err(format!("unknown issuance outcome {outcome:?}")))?,
        requests: row.try_get("requests")?,
        latency: latency.0,
    })
}

/// One row per (hour, app, outcome), in that order: the hour the watermark is in comes both
/// from the rollup (before the watermark) and live (after it).
fn merge_hours(mut rows: Vec<HourlyTraffic>) -> Vec<HourlyTraffic> {
    rows.sort_by(|a, b| {
        (a.hour, &a.app, a.outcome.as_str()).cmp(&(b.hour, &b.app, b.outcome.as_str()))
    });
    let mut out: Vec<HourlyTraffic> = Vec::with_capacity(rows.len());
    for r in rows {
        match out.last_mut() {
            Some(last) if (last.hour, &last.app, last.outcome) == (r.hour, &r.app, r.outcome) => {
                last.requests += r.requests;
                last.latency.merge(&r.latency);
            }
            _ => out.push(r),
        }
    }
    out
}

impl PgStore {
    /// Aggregates the log into the rollup up to a new watermark, two minutes before `now`.
    /// Whole hours are recomputed from the hour of the previous watermark, or of the new one
    /// less ten minutes when that is earlier (rows commit a little after their timestamp), or 8
    /// days back on the first run. Drops rollup rows older than 35 days. Replicas may all
    /// call it: one does the work at a time.
    pub async fn refresh_rollup(&self, now: OffsetDateTime) -> Result<RollupRefresh> {
        let to = now - ROLLUP_LAG;
        let mut tx = self.pool.begin().await.db()?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(ROLLUP_LOCK_KEY)
            .fetch_one(&mut *tx)
            .await
            .db()?;
        if !locked {
            return Ok(RollupRefresh {
                from: to,
                to,
                busy: true,
            });
        }
        let last: Option<(OffsetDateTime, bool)> =
            sqlx::query_as("SELECT rolled_to, backfilled FROM issuance_rollup_state WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await
                .db()?;
        let earliest = hour_floor(to) - BACKFILL;
        let from = match last {
            Some((rolled_to, true)) => hour_floor(rolled_to.min(to - LATE)),
            _ => earliest,
        }
        .max(earliest);
        for sql in [
            "DELETE FROM issuance_hourly WHERE hour >= $1 OR hour < $2 - interval '35 days'",
            "DELETE FROM issuance_hourly_top WHERE hour >= $1 OR hour < $2 - interval '35 days'",
        ] {
            sqlx::query(sql)
                .bind(from)
                .bind(hour_floor(to))
                .execute(&mut *tx)
                .await
                .db()?;
        }
        debug_assert_eq!(KEEP, Duration::days(35));
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO issuance_hourly (hour, app, outcome, requests, latency) {HOURLY}"
        )))
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await
        .db()?;
        for (kind, key) in [("subject", "subject"), ("source_ip", "host(source_ip)")] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO issuance_hourly_top (hour, kind, key, requests) \
                 SELECT hour, '{kind}', key, n FROM ( \
                   SELECT date_trunc('hour', at, 'UTC') AS hour, {key} AS key, sum(count) AS n, \
                          row_number() OVER (PARTITION BY date_trunc('hour', at, 'UTC') \
                                             ORDER BY sum(count) DESC, {key}) AS rank \
                   FROM issuance_log WHERE at >= $1 AND at < $2 AND {key} IS NOT NULL \
                   GROUP BY 1, 2) t \
                 WHERE rank <= $3"
            )))
            .bind(from)
            .bind(to)
            .bind(TOP_PER_HOUR)
            .execute(&mut *tx)
            .await
            .db()?;
        }
        sqlx::query(
            "INSERT INTO issuance_rollup_state (id, refreshed_at, backfilled, rolled_to) \
             VALUES (1, $1, TRUE, $2) \
             ON CONFLICT (id) DO UPDATE SET refreshed_at = $1, backfilled = TRUE, rolled_to = $2",
        )
        .bind(now)
        .bind(to)
        .execute(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()?;
        Ok(RollupRefresh {
            from,
            to,
            busy: false,
        })
    }

    /// A read-only transaction that sees the rollup and the log in one snapshot, and where
    /// its live reads start, never before the window's first hour:
    /// - the watermark, when the last refresh set it (`rolled_to` is then exactly
    ///   [`ROLLUP_LAG`] before `refreshed_at`);
    /// - the start of the hour of `refreshed_at` when a version from before V12 refreshed
    ///   last (it leaves `rolled_to` alone and rolls up complete hours only), so a rolling
    ///   upgrade neither misses nor double counts;
    /// - the start of the watermark's hour when the watermark is less than [`ROLLUP_LAG`]
    ///   before the reader's `now` (the refresher's clock is ahead of this replica's): its
    ///   last minutes may still be getting rows, so that hour is read live in full.
    async fn rollup_snapshot(
        &self,
        since: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(sqlx::Transaction<'static, sqlx::Postgres>, OffsetDateTime)> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .db()?;
        let state: Option<(OffsetDateTime, OffsetDateTime)> = sqlx::query_as(
            "SELECT refreshed_at, rolled_to FROM issuance_rollup_state WHERE id = 1 AND backfilled",
        )
        .fetch_optional(&mut *tx)
        .await
        .db()?;
        let since = hour_floor(since);
        let watermark = state.map(|(refreshed_at, rolled_to)| {
            if rolled_to != refreshed_at - ROLLUP_LAG {
                hour_floor(refreshed_at)
            } else if rolled_to > now - ROLLUP_LAG {
                hour_floor(rolled_to)
            } else {
                rolled_to
            }
        });
        Ok((tx, watermark.map_or(since, |at| at.max(since))))
    }
}

#[async_trait]
impl crate::repo::RollupStore for PgStore {
    async fn hourly_traffic(
        &self,
        since: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Vec<HourlyTraffic>> {
        let (mut tx, live_from) = self.rollup_snapshot(since, now).await?;
        let mut rows = sqlx::query(
            "SELECT hour, app, outcome, requests, latency FROM issuance_hourly \
             WHERE hour >= $1 AND hour < $2",
        )
        .bind(hour_floor(since))
        .bind(live_from)
        .fetch_all(&mut *tx)
        .await
        .db()?;
        rows.extend(
            sqlx::query(sqlx::AssertSqlSafe(HOURLY))
                .bind(live_from)
                .bind(now + Duration::hours(1))
                .fetch_all(&mut *tx)
                .await
                .db()?,
        );
        tx.commit().await.db()?;
        let rows = rows
            .iter()
            .map(hourly_from_row)
            .collect::<Result<Vec<_>, _>>()
            .db()?;
        Ok(merge_hours(rows))
    }

    async fn top_requesters(
        &self,
        since: OffsetDateTime,
        now: OffsetDateTime,
        limit: i64,
    ) -> Result<TopRequesters> {
        let (mut tx, live_from) = self.rollup_snapshot(since, now).await?;
        let mut top = TopRequesters::default();
        for (kind, key, out) in [
            ("subject", "subject", &mut top.subjects),
            ("source_ip", "host(source_ip)", &mut top.source_ips),
        ] {
            *out = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT key, sum(requests)::bigint FROM ( \
                   SELECT key, requests FROM issuance_hourly_top \
                   WHERE kind = '{kind}' AND hour >= $1 AND hour < $2 \
                   UNION ALL \
                   SELECT {key}, sum(count) FROM issuance_log \
                   WHERE at >= $2 AND at < $3 AND {key} IS NOT NULL GROUP BY 1) t \
                 GROUP BY key ORDER BY 2 DESC, key LIMIT $4"
            )))
            .bind(hour_floor(since))
            .bind(live_from)
            .bind(now + Duration::hours(1))
            .bind(limit.clamp(1, 100))
            .fetch_all(&mut *tx)
            .await
            .db()?;
        }
        tx.commit().await.db()?;
        Ok(top)
    }

    async fn rollup_refreshed_at(&self) -> Result<Option<OffsetDateTime>> {
        sqlx::query_scalar("SELECT refreshed_at FROM issuance_rollup_state WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn hours_floor_in_utc_whatever_the_offset() {
        assert_eq!(
            hour_floor(datetime!(2026-11-30 12:34:56.789 UTC)),
            datetime!(2026-11-30 12:00 UTC)
        );
        // 18:04 at +05:30 is 12:34 UTC.
        assert_eq!(
            hour_floor(datetime!(2026-11-30 18:04 +05:30)),
            datetime!(2026-11-30 12:00 UTC)
        );
    }
}
