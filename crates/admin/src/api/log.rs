//! `/api/v1/log`: the issuance log with the log page's filters and keyset cursors, and the
//! streamed NDJSON export, which with `follow=true` keeps the response open and tails new rows
//! (for a log shipper).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::header;
use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use policy_store::{
    IssuanceCursor, IssuanceFilter, IssuanceRecord, Outcome, Store, valid_ip_or_cidr,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use super::State;
use super::auth::ApiCaller;
use super::error::{ApiError, ErrorBody};
use super::extract::Query;
use crate::pages::log::{EXPORT_BATCH, batches, export_error, format_cursor, parse_cursor};

/// Rows per page by default, and at most.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;
/// How often a `follow=true` export looks for new rows.
const FOLLOW_POLL: Duration = Duration::from_secs(1);
/// How far back a `follow=true` export looks again for rows that committed late (a replica's
/// batch commits after a newer row of another's was already sent).
const FOLLOW_LATE: time::Duration = time::Duration::seconds(10);

/// The log page's filters. Times are RFC 3339 (`2024-05-01T13:00:00Z`); `to` is exclusive.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    /// App slug.
    pub app: Option<String>,
    /// Exact subject, or a prefix with `subject_prefix=true`.
    pub subject: Option<String>,
    #[serde(default)]
    pub subject_prefix: bool,
    /// `issued`, `cached`, `denied`, `rate_limited`, `upstream_error`, `invalid_token` or
    /// `bad_request`.
    pub outcome: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// An IP address or a CIDR block.
    pub source_ip: Option<String>,
    pub tmp_secret_id: Option<String>,
    /// The `next` cursor of the previous page.
    pub before: Option<String>,
    /// Rows per page (1 to 1000, default 100).
    pub limit: Option<i64>,
    /// Export only: keep streaming new rows, oldest first from `from` (default: now).
    #[serde(default)]
    pub follow: bool,
}

fn time_param(
    field: &str,
    v: &Option<String>,
    errs: &mut Vec<policy_store::FieldError>,
) -> Option<OffsetDateTime> {
    let v = v.as_deref()?.trim();
    match OffsetDateTime::parse(v, &Rfc3339) {
        Ok(t) => Some(t),
        Err(_) => {
            errs.push(policy_store::FieldError::new(
                field,
                "an RFC 3339 time such as 2024-05-01T13:00:00Z",
            ));
            None
        }
    }
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.clone().filter(|s| !s.is_empty())
}

impl LogParams {
    /// The store filter, or every problem with the query at once.
    fn filter(&self) -> Result<IssuanceFilter, ApiError> {
        let mut errs = Vec::new();
        let from = time_param("from", &self.from, &mut errs);
        let to = time_param("to", &self.to, &mut errs);
        let outcome = match non_empty(&self.outcome) {
            None => None,
            Some(o) => Outcome::parse(&o).or_else(|| {
                errs.push(policy_store::FieldError::new(
                    "outcome",
                    format!("one of {}", Outcome::ALL.map(Outcome::as_str).join(", ")),
                ));
                None
            }),
        };
        if let Some(ip) = non_empty(&self.source_ip)
            && !valid_ip_or_cidr(ip.trim())
        {
            errs.push(policy_store::FieldError::new(
                "source_ip",
                "an IP address or a CIDR block such as 10.0.0.0/8",
            ));
        }
        if let Some(before) = &self.before
            && parse_cursor(before).is_none()
        {
            errs.push(policy_store::FieldError::new(
                "before",
                "the `next` value of a previous page",
            ));
        }
        if let Some(limit) = self.limit
            && !(1..=MAX_LIMIT).contains(&limit)
        {
            errs.push(policy_store::FieldError::new(
                "limit",
                format!("1 to {MAX_LIMIT}"),
            ));
        }
        if !errs.is_empty() {
            return Err(ApiError::Invalid(errs));
        }
        Ok(IssuanceFilter {
            app: non_empty(&self.app),
            subject: non_empty(&self.subject),
            subject_prefix: self.subject_prefix,
            outcome,
            from,
            to,
            source_ip: non_empty(&self.source_ip).map(|s| s.trim().to_owned()),
            tmp_secret_id: non_empty(&self.tmp_secret_id),
        })
    }
}

/// One page of the issuance log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogPage {
    pub items: Vec<IssuanceRecord>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Searches the issuance log, newest first, one page at a time.
#[utoipa::path(get, operation_id = "log_search", path = "/api/v1/log", tag = "log",
    params(LogParams),
    responses((status = 200, description = "OK", body = LogPage), (status = 422, description = "Invalid fields, each named in `error.fields`", body = ErrorBody)),
    security(("api_token" = ["auditor"])))]
pub async fn search(state: State, Query(q): Query<LogParams>) -> Result<HttpResponse, ApiError> {
    let filter = q.filter()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    let cursor = q.before.as_deref().and_then(parse_cursor);
    let items = state.store.search_issuance(&filter, cursor, limit).await?;
    let next = (items.len() as i64 == limit)
        .then(|| {
            items
                .last()
                .map(|r| format_cursor(&IssuanceCursor { at: r.at, id: r.id }))
        })
        .flatten();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(LogPage { items, next }))
}

fn ndjson(rows: &[IssuanceRecord]) -> Result<Bytes, std::io::Error> {
    let mut out = Vec::with_capacity(rows.len() * 512);
    for r in rows {
        serde_json::to_writer(&mut out, r).map_err(std::io::Error::other)?;
        out.push(b'\n');
    }
    Ok(Bytes::from(out))
}

/// The tail of a `follow=true` export: where it is, and the rows it sent lately (which the
/// look-back for late commits must not send twice).
struct Tail {
    store: Arc<dyn Store>,
    filter: IssuanceFilter,
    cursor: IssuanceCursor,
    sent: HashSet<(i128, i64)>,
    /// Look at once instead of after a pause.
    first: bool,
}

impl Tail {
    /// The next rows not sent yet, oldest first; waits while there are none.
    async fn next(mut self) -> Result<Option<(Vec<IssuanceRecord>, Self)>, std::io::Error> {
        loop {
            if !self.first {
                tokio::time::sleep(FOLLOW_POLL).await;
            }
            self.first = false;
            let mut out = Vec::new();
            let mut after = IssuanceCursor {
                at: self.cursor.at - FOLLOW_LATE,
                id: i64::MIN,
            };
            loop {
                let rows = self
                    .store
                    .issuance_after(&self.filter, Some(after), EXPORT_BATCH)
                    .await
                    .map_err(export_error)?;
                let full = rows.len() as i64 == EXPORT_BATCH;
                if let Some(last) = rows.last() {
                    after = IssuanceCursor {
                        at: last.at,
                        id: last.id,
                    };
                }
                for r in rows {
                    // Everything since the horizon that was sent is in `sent`.
                    if self.sent.insert((r.at.unix_timestamp_nanos(), r.id)) {
                        out.push(r);
                    }
                }
                if !full || out.len() as i64 >= EXPORT_BATCH {
                    break;
                }
            }
            if let Some(newest) = out.iter().map(|r| (r.at, r.id)).max() {
                if newest > (self.cursor.at, self.cursor.id) {
                    self.cursor = IssuanceCursor {
                        at: newest.0,
                        id: newest.1,
                    };
                }
                let horizon = (self.cursor.at - FOLLOW_LATE).unix_timestamp_nanos();
                self.sent.retain(|(at, _)| *at >= horizon);
                // A full batch: more may be waiting, so the next one comes without a pause.
                self.first = out.len() as i64 >= EXPORT_BATCH;
                return Ok(Some((out, self)));
            }
        }
    }
}

/// Streams the matching rows as NDJSON (one JSON object a line), newest first, and ends. With
/// `follow=true` it streams oldest first from `from` (default: now) and keeps the response
/// open, sending new rows as they are logged.
#[utoipa::path(get, operation_id = "log_export", path = "/api/v1/log/export.ndjson", tag = "log",
    params(LogParams),
    responses((status = 200, description = "one IssuanceRecord per line",
            content_type = "application/x-ndjson", body = IssuanceRecord),
        (status = 422, description = "Invalid fields, each named in `error.fields`", body = ErrorBody)),
    security(("api_token" = ["auditor"])))]
pub async fn export(
    state: State,
    caller: ApiCaller,
    Query(q): Query<LogParams>,
) -> Result<HttpResponse, ApiError> {
    let filter = q.filter()?;
    tracing::info!(token = %caller.token.name, follow = q.follow, filter = ?filter, "issuance-log NDJSON export");
    let mut res = HttpResponse::Ok();
    res.insert_header((header::CONTENT_TYPE, "application/x-ndjson"))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if !q.follow {
        let body = batches(state.store.clone(), filter)
            .map_err(export_error)
            .and_then(|rows| async move { ndjson(&rows) });
        return Ok(res.streaming(body));
    }
    let start = filter.from.unwrap_or_else(OffsetDateTime::now_utc);
    let tail = Tail {
        store: state.store.clone(),
        filter: IssuanceFilter {
            from: Some(start),
            ..filter
        },
        cursor: IssuanceCursor {
            at: start,
            id: i64::MIN,
        },
        sent: HashSet::new(),
        first: true,
    };
    let body = stream::try_unfold(tail, Tail::next).and_then(|rows| async move { ndjson(&rows) });
    // The server's own flush: each batch is sent as it is produced.
    Ok(res
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body.boxed_local()))
}
