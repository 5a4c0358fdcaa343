//! The dashboard's hourly rollup of the issuance log (`issuance_hourly`,
//! `issuance_hourly_top`, migration V11).
//!
//! Complete hours are aggregated into the rollup by [`PgStore::refresh_rollup`] (every
//! minute from `serve`; the last two hours are recomputed each time, so rows that commit a
//! little after their timestamp are counted). Reads take complete hours from the rollup and
//! the hours since its last refresh live from the log, so the page stays fast at millions of
//! rows a day and still shows a request made a second ago.

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
    /// The hours recomputed: `[from, to)`.
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

impl PgStore {
    /// Recomputes the complete hours the rollup may lack: the last two (rows commit a little
    /// after their timestamp), back to the hour of the previous refresh, or 8 days on the
    /// first run. Drops rollup rows older than 35 days. Replicas may all call it: one does
    /// the work at a time.
    pub async fn refresh_rollup(&self, now: OffsetDateTime) -> Result<RollupRefresh> {
        let to = hour_floor(now);
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
        let last: Option<(OffsetDateTime, bool)> = sqlx::query_as(
            "SELECT refreshed_at, backfilled FROM issuance_rollup_state WHERE id = 1",
        )
        .fetch_optional(&mut *tx)
        .await
        .db()?;
        let from = match last {
            Some((at, true)) => (hour_floor(at) - Duration::hours(1)).min(to - Duration::hours(2)),
            _ => to - BACKFILL,
        }
        .max(to - BACKFILL);
        for sql in [
            "DELETE FROM issuance_hourly WHERE hour >= $1 OR hour < $2 - interval '35 days'",
            "DELETE FROM issuance_hourly_top WHERE hour >= $1 OR hour < $2 - interval '35 days'",
        ] {
            sqlx::query(sql)
                .bind(from)
                .bind(to)
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
            "INSERT INTO issuance_rollup_state (id, refreshed_at, backfilled) VALUES (1, $1, TRUE) \
             ON CONFLICT (id) DO UPDATE SET refreshed_at = $1, backfilled = TRUE",
        )
        .bind(now)
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

    /// Where live reads start: the hour the rollup was last refreshed in (it holds only the
    /// hours before it), never later than the current hour.
    async fn live_from(
        &self,
        since: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<OffsetDateTime> {
        let refreshed: Option<OffsetDateTime> =
            sqlx::query_scalar("SELECT refreshed_at FROM issuance_rollup_state WHERE id = 1")
                .fetch_optional(&self.pool)
                .await
                .db()?;
        let since = hour_floor(since);
        Ok(match refreshed {
            Some(at) => hour_floor(at).min(hour_floor(now)).max(since),
            None => since,
        })
    }
}

#[async_trait]
impl crate::repo::RollupStore for PgStore {
    async fn hourly_traffic(
        &self,
        since: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Vec<HourlyTraffic>> {
        let live_from = self.live_from(since, now).await?;
        let mut rows = sqlx::query(
            "SELECT hour, app, outcome, requests, latency FROM issuance_hourly \
             WHERE hour >= $1 AND hour < $2",
        )
        .bind(hour_floor(since))
        .bind(live_from)
        .fetch_all(&self.pool)
        .await
        .db()?;
        rows.extend(
            sqlx::query(sqlx::AssertSqlSafe(HOURLY))
                .bind(live_from)
                .bind(now + Duration::hours(1))
                .fetch_all(&self.pool)
                .await
                .db()?,
        );
        let mut out = rows
            .iter()
            .map(hourly_from_row)
            .collect::<Result<Vec<_>, _>>()
            .db()?;
        out.sort_by(|a, b| {
            (a.hour, &a.app, a.outcome.as_str()).cmp(&(b.hour, &b.app, b.outcome.as_str()))
        });
        Ok(out)
    }

    async fn top_requesters(
        &self,
        since: OffsetDateTime,
        now: OffsetDateTime,
        limit: i64,
    ) -> Result<TopRequesters> {
        let live_from = self.live_from(since, now).await?;
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
            .fetch_all(&self.pool)
            .await
            .db()?;
        }
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
