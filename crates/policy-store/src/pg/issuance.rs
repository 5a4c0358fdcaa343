//! The issuance log (`issuance_log`, partitioned by month): batched inserts, keyset search,
//! the dashboard's traffic figures and how long a subject's credentials stay valid.

use std::net::IpAddr;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row as _};
use time::OffsetDateTime;

use super::{PgStore, clamp_limit, decode_err, issuance_filter};
use crate::error::{DbResult as _, FieldError, Result};
use crate::model::*;
use crate::repo::IssuanceStore;
use crate::validate::{MAX_DURATION_SECONDS, invalid_if_any};

macro_rules! issuance_columns {
    () => {
        "id, at, app, subject, outcome, http_status, error_code, request_id, sts_request_id, \
         tmp_secret_id, policy_hash, template_version, actions, prefix, duration_seconds, \
         expired_time, host(source_ip) AS source_ip, user_agent, latency_us, count"
    };
}
pub(super) use issuance_columns;

/// The columns [`issuance_from_row`] reads, for the other modules' queries.
pub(super) const ISSUANCE_COLUMNS: &str = issuance_columns!();

impl PgStore {
    /// One keyset page of the rows matching `filter`: newest first strictly before `cursor`,
    /// or (`oldest_first`) oldest first strictly after it. The log search and the export's
    /// tail share it.
    pub(super) async fn issuance_page(
        &self,
        filter: &IssuanceFilter,
        cursor: Option<IssuanceCursor>,
        limit: i64,
        oldest_first: bool,
    ) -> Result<Vec<IssuanceRecord>> {
        issuance_filter::check(filter)?;
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {ISSUANCE_COLUMNS} FROM issuance_log WHERE TRUE"
        ));
        issuance_filter::push_where(&mut qb, filter);
        let (cmp, order) = if oldest_first {
            (">", "at, id")
        } else {
            ("<", "at DESC, id DESC")
        };
        if let Some(c) = cursor {
            qb.push(format!(" AND (at, id) {cmp} ("))
                .push_bind(c.at)
                .push(", ")
                .push_bind(c.id)
                .push(")");
        }
        qb.push(format!(" ORDER BY {order} LIMIT "))
            .push_bind(clamp_limit(limit));
        let rows = qb.build().fetch_all(&self.pool).await.db()?;
        rows.iter()
            .map(issuance_from_row)
            .collect::<Result<_, _>>()
            .db()
    }

    /// Creates the issuance_log monthly partitions from this month to `months_ahead` ahead
    /// (idempotent; run at start and, say, daily). Returns how many were created.
    pub async fn ensure_partitions(&self, months_ahead: i32) -> Result<i32> {
        sqlx::query_scalar("SELECT stsgate_ensure_issuance_partitions($1)")
            .bind(months_ahead)
            .fetch_one(&self.pool)
            .await
            .db()
    }
}

/// `items` as a PostgreSQL array literal (`{"a","b\\"c"}`): every element double-quoted, with
/// `"` and `\` escaped, so commas, braces, spaces and the word NULL stay plain text.
fn text_array_literal(items: &[String]) -> String {
    let mut out = String::with_capacity(2 + items.iter().map(|a| a.len() + 3).sum::<usize>());
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

pub(super) fn issuance_from_row(row: &PgRow) -> Result<IssuanceRecord, sqlx::Error> {
    let outcome: String = row.try_get("outcome")?;
    Ok(IssuanceRecord {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        app: row.try_get("app")?,
        subject: row.try_get("subject")?,
        outcome: Outcome::parse(&outcome)
            .ok_or_else(|| decode_err(format!("unknown issuance_log.outcome {outcome:?}")))?,
        http_status: row.try_get("http_status")?,
        error_code: row.try_get("error_code")?,
        request_id: row.try_get("request_id")?,
        sts_request_id: row.try_get("sts_request_id")?,
        tmp_secret_id: row.try_get("tmp_secret_id")?,
        policy_hash: row.try_get("policy_hash")?,
        template_version: row.try_get("template_version")?,
        actions: row.try_get("actions")?,
        prefix: row.try_get("prefix")?,
        duration_seconds: row.try_get("duration_seconds")?,
        expired_time: row.try_get("expired_time")?,
        source_ip: row.try_get("source_ip")?,
        user_agent: row.try_get("user_agent")?,
        latency_us: row.try_get("latency_us")?,
        count: row.try_get("count")?,
    })
}

fn traffic_from_row(r: &PgRow) -> Result<AppTraffic, sqlx::Error> {
    Ok(AppTraffic {
        app: r.try_get("app")?,
        total: r.try_get("total")?,
        issued: r.try_get("issued")?,
        cached: r.try_get("cached")?,
        denied: r.try_get("denied")?,
        invalid_token: r.try_get("invalid_token")?,
        bad_request: r.try_get("bad_request")?,
        rate_limited: r.try_get("rate_limited")?,
        upstream_error: r.try_get("upstream_error")?,
        p95_latency_us: r.try_get("p95")?,
    })
}

#[async_trait]
impl IssuanceStore for PgStore {
    async fn insert_issuance_batch(&self, records: &[IssuanceRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut errs = Vec::new();
        for (i, r) in records.iter().enumerate() {
            if let Some(ip) = &r.source_ip
                && ip.parse::<IpAddr>().is_err()
            {
                errs.push(FieldError::new(
                    format!("records[{i}].source_ip"),
                    "an IPv4 or IPv6 address",
                ));
            }
            if r.tmp_secret_id
                .as_ref()
                .is_some_and(|t| t.chars().count() > 1024)
            {
                errs.push(FieldError::new(
                    format!("records[{i}].tmp_secret_id"),
                    "at most 1024 characters",
                ));
            }
        }
        invalid_if_any(errs)?;

        let n = records.len();
        let mut at = Vec::with_capacity(n);
        let mut app = Vec::with_capacity(n);
        let mut subject = Vec::with_capacity(n);
        let mut outcome = Vec::with_capacity(n);
        let mut http_status = Vec::with_capacity(n);
        let mut error_code = Vec::with_capacity(n);
        let mut request_id = Vec::with_capacity(n);
        let mut sts_request_id = Vec::with_capacity(n);
        let mut tmp_secret_id = Vec::with_capacity(n);
        let mut policy_hash = Vec::with_capacity(n);
        let mut template_version = Vec::with_capacity(n);
        // A ragged text[][] cannot be bound; each row's actions travel as an array literal,
        // which the server casts back (cheaper per row than unpacking JSON).
        let mut actions = Vec::with_capacity(n);
        let mut prefix = Vec::with_capacity(n);
        let mut duration_seconds = Vec::with_capacity(n);
        let mut expired_time = Vec::with_capacity(n);
        let mut source_ip = Vec::with_capacity(n);
        let mut user_agent = Vec::with_capacity(n);
        let mut latency_us = Vec::with_capacity(n);
        let mut count = Vec::with_capacity(n);
        for r in records {
            at.push(r.at);
            app.push(r.app.clone());
            subject.push(r.subject.clone());
            outcome.push(r.outcome.as_str().to_owned());
            http_status.push(r.http_status);
            error_code.push(r.error_code.clone());
            request_id.push(r.request_id.clone());
            sts_request_id.push(r.sts_request_id.clone());
            tmp_secret_id.push(r.tmp_secret_id.clone());
            policy_hash.push(r.policy_hash.clone());
            template_version.push(r.template_version);
            actions.push(text_array_literal(&r.actions));
            prefix.push(r.prefix.clone());
            duration_seconds.push(r.duration_seconds);
            expired_time.push(r.expired_time);
            source_ip.push(r.source_ip.clone());
            user_agent.push(r.user_agent.clone());
            latency_us.push(r.latency_us);
            count.push(r.count.max(1));
        }

        // One statement in its own implicit transaction: atomic, and `execute` returns only
        // after the server's commit, so without BEGIN/COMMIT it is as durable and saves two
        // round trips per batch (scripts/bench-insert).
        sqlx::query(
            "INSERT INTO issuance_log (at, app, subject, outcome, http_status, error_code, \
               request_id, sts_request_id, tmp_secret_id, policy_hash, template_version, actions, \
               prefix, duration_seconds, expired_time, source_ip, user_agent, latency_us, count) \
             SELECT u.at, u.app, u.subject, u.outcome, u.http_status, u.error_code, \
               u.request_id, u.sts_request_id, u.tmp_secret_id, u.policy_hash, u.template_version, \
               u.actions::text[], \
               u.prefix, u.duration_seconds, u.expired_time, u.source_ip::inet, u.user_agent, \
               u.latency_us, u.count \
             FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::int2[], \
               $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::int4[], \
               $12::text[], $13::text[], $14::int4[], $15::timestamptz[], $16::text[], \
               $17::text[], $18::int8[], $19::int4[]) \
             AS u(at, app, subject, outcome, http_status, error_code, request_id, \
               sts_request_id, tmp_secret_id, policy_hash, template_version, actions, prefix, \
               duration_seconds, expired_time, source_ip, user_agent, latency_us, count)",
        )
        .bind(at)
        .bind(app)
        .bind(subject)
        .bind(outcome)
        .bind(http_status)
        .bind(error_code)
        .bind(request_id)
        .bind(sts_request_id)
        .bind(tmp_secret_id)
        .bind(policy_hash)
        .bind(template_version)
        .bind(actions)
        .bind(prefix)
        .bind(duration_seconds)
        .bind(expired_time)
        .bind(source_ip)
        .bind(user_agent)
        .bind(latency_us)
        .bind(count)
        .execute(&self.pool)
        .await
        .db()?;
        Ok(())
    }

    async fn search_issuance(
        &self,
        filter: &IssuanceFilter,
        cursor: Option<IssuanceCursor>,
        limit: i64,
    ) -> Result<Vec<IssuanceRecord>> {
        self.issuance_page(filter, cursor, limit, false).await
    }

    async fn traffic_since(&self, since: OffsetDateTime) -> Result<Vec<AppTraffic>> {
        let rows = sqlx::query(
            "SELECT app, sum(count)::int8 AS total, \
               coalesce(sum(count) FILTER (WHERE outcome = 'issued'), 0)::int8 AS issued, \
               coalesce(sum(count) FILTER (WHERE outcome = 'cached'), 0)::int8 AS cached, \
               coalesce(sum(count) FILTER (WHERE outcome = 'denied'), 0)::int8 AS denied, \
               coalesce(sum(count) FILTER (WHERE outcome = 'invalid_token'), 0)::int8 AS invalid_token, \
               coalesce(sum(count) FILTER (WHERE outcome = 'bad_request'), 0)::int8 AS bad_request, \
               coalesce(sum(count) FILTER (WHERE outcome = 'rate_limited'), 0)::int8 AS rate_limited, \
               coalesce(sum(count) FILTER (WHERE outcome = 'upstream_error'), 0)::int8 AS upstream_error, \
               percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_us) AS p95 \
             FROM issuance_log WHERE at >= $1 GROUP BY app ORDER BY app",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .db()?;
        rows.iter()
            .map(traffic_from_row)
            .collect::<Result<_, _>>()
            .db()
    }

    async fn count_issuance(&self, filter: &IssuanceFilter, cap: i64) -> Result<i64> {
        issuance_filter::check(filter)?;
        let mut qb: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT count(*) FROM (SELECT 1 FROM issuance_log WHERE TRUE");
        issuance_filter::push_where(&mut qb, filter);
        qb.push(" LIMIT ")
            .push_bind(cap.max(0))
            .push(") AS matching");
        qb.build_query_scalar().fetch_one(&self.pool).await.db()
    }

    async fn latest_credential_expiry(
        &self,
        app_slug: &str,
        subject: &str,
    ) -> Result<Option<OffsetDateTime>> {
        // No credential lives longer than MAX_DURATION_SECONDS, which bounds the scan.
        Ok(sqlx::query_scalar(
            "SELECT max(expired_time) FROM issuance_log \
             WHERE subject = $2 AND app = $1 AND outcome IN ('issued', 'cached') \
               AND at > now() - make_interval(secs => $3::double precision) \
               AND expired_time > now()",
        )
        .bind(app_slug)
        .bind(subject)
        .bind(f64::from(MAX_DURATION_SECONDS))
        .fetch_one(&self.pool)
        .await
        .db()?)
    }

    async fn amend_unanswered_issuance(
        &self,
        request_ids: &[String],
        since: OffsetDateTime,
        http_status: i16,
        error_code: &str,
    ) -> Result<u64> {
        if request_ids.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(
            "UPDATE issuance_log SET outcome = 'upstream_error', http_status = $4, \
               error_code = $3 \
             WHERE request_id = ANY($1) AND at >= $2 AND outcome IN ('issued', 'cached')",
        )
        .bind(request_ids)
        .bind(since)
        .bind(error_code)
        .bind(http_status)
        .execute(&self.pool)
        .await
        .db()?;
        Ok(done.rows_affected())
    }
}
