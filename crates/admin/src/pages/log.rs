//! The issuance log: filters, keyset pagination, and CSV/JSON export of the current filter,
//! streamed from the database in keyset batches (never collected in memory).

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use policy_store::{IssuanceCursor, IssuanceFilter, IssuanceRecord, Outcome, Store, StoreError};
use time::OffsetDateTime;

use super::{State, page};
use crate::error::AdminError;
use crate::session::CurrentUser;
use crate::shown::{self, Piece, visible};
use crate::view::{Layout, Zone, fmt_latency};

/// Rows per page.
const PAGE: i64 = 50;
/// Matching rows counted at most (the page then says "more than").
const COUNT_CAP: i64 = 10_000;
/// Rows per database query while exporting.
pub const EXPORT_BATCH: i64 = 1000;

/// The filter as it appears in the URL.
#[derive(Debug, Default, Clone, serde::Deserialize, serde::Serialize)]
pub struct LogQuery {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    /// `on`: subjects that start with `subject`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub starts: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tmp_secret_id: String,
    /// Keyset cursor: `<unix microseconds>_<id>` of the last row of the previous page.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub before: String,
}

fn opt(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

impl LogQuery {
    /// The store filter, or the problems with the query (shown above the table), all at once.
    /// Times are read in `zone`; "to" includes its whole minute (or second).
    pub fn filter(&self, zone: &Zone) -> Result<IssuanceFilter, Vec<String>> {
        let mut errors = Vec::new();
        let example = format!("a date and time such as 2024-05-01T13:00 ({})", zone.name());
        let from = opt(&self.from).and_then(|v| {
            let t = zone.parse_input(&v);
            if t.is_none() {
                errors.push(format!("From: enter {example}."));
            }
            t
        });
        let to = opt(&self.to).and_then(|v| {
            let t = zone.parse_input_end(&v);
            if t.is_none() {
                errors.push(format!("To: enter {example}."));
            }
            t
        });
        if let (Some(f), Some(t)) = (from, to)
            && f >= t
        {
            errors.push("From is after To, so nothing can match: swap them.".into());
        }
        let outcome = match opt(&self.outcome) {
            None => None,
            Some(o) => match Outcome::parse(&o) {
                Some(o) => Some(o),
                None => {
                    errors.push("Outcome: choose one from the list.".into());
                    None
                }
            },
        };
        if errors.is_empty() {
            Ok(IssuanceFilter {
                app: opt(&self.app),
                // Subjects are matched exactly as typed: spaces are part of a subject.
                subject: Some(self.subject.clone()).filter(|s| !s.is_empty()),
                subject_prefix: !self.starts.is_empty(),
                outcome,
                from,
                to,
                source_ip: opt(&self.ip),
                tmp_secret_id: opt(&self.tmp_secret_id),
            })
        } else {
            Err(errors)
        }
    }

    fn cursor(&self) -> Option<IssuanceCursor> {
        parse_cursor(&self.before)
    }

    /// This filter as a query string, with another cursor (or none).
    fn with_before(&self, before: Option<&IssuanceCursor>) -> String {
        let mut q = self.clone();
        q.before = before.map(format_cursor).unwrap_or_default();
        serde_urlencoded::to_string(&q).unwrap_or_default()
    }
}

/// A keyset cursor as it appears in URLs: `<unix microseconds>_<id>`.
pub fn format_cursor(c: &IssuanceCursor) -> String {
    format!("{}_{}", c.at.unix_timestamp_nanos() / 1000, c.id)
}

/// Reads [`format_cursor`]'s text; `None` when it is not one.
pub fn parse_cursor(text: &str) -> Option<IssuanceCursor> {
    let (micros, id) = text.split_once('_')?;
    let micros: i128 = micros.parse().ok()?;
    Some(IssuanceCursor {
        at: OffsetDateTime::from_unix_timestamp_nanos(micros.checked_mul(1000)?).ok()?,
        id: id.parse().ok()?,
    })
}

pub struct LogRow {
    pub at: String,
    pub app: String,
    pub subject: Vec<Piece>,
    /// The exact subject, encoded for the block link; empty when there is none.
    pub subject_key: String,
    /// The subject as a filter value (exact, for the "filter by this subject" link).
    pub subject_query: String,
    pub outcome: &'static str,
    pub status: i16,
    pub error_code: String,
    pub tmp_secret_id: String,
    pub source_ip: String,
    pub latency: String,
    pub request_id: String,
    pub detail: String,
    /// How many requests the row stands for when it is a folded summary (more than one).
    pub folded: Option<i32>,
}

impl LogRow {
    fn from(r: &IssuanceRecord, zone: &Zone) -> Self {
        let mut detail = Vec::new();
        if let Some(p) = &r.prefix {
            detail.push(format!("prefix {p}"));
        }
        if let Some(d) = r.duration_seconds {
            detail.push(format!("{d} s"));
        }
        if let Some(t) = r.expired_time {
            detail.push(format!("expires {}", zone.fmt(t)));
        }
        if let Some(v) = r.template_version {
            detail.push(format!("policy v{v}"));
        }
        if let Some(s) = &r.sts_request_id {
            detail.push(format!("STS {s}"));
        }
        if let Some(ua) = &r.user_agent {
            detail.push(ua.clone());
        }
        let subject = r.subject.clone().unwrap_or_default();
        Self {
            at: zone.fmt(r.at),
            app: r.app.clone(),
            subject_key: if subject.is_empty() {
                String::new()
            } else {
                shown::encode(&subject)
            },
            subject_query: serde_urlencoded::to_string([("subject", subject.as_str())])
                .unwrap_or_default(),
            subject: visible(&subject),
            outcome: r.outcome.as_str(),
            status: r.http_status,
            error_code: r.error_code.clone().unwrap_or_default(),
            tmp_secret_id: r.tmp_secret_id.clone().unwrap_or_default(),
            source_ip: r.source_ip.clone().unwrap_or_default(),
            latency: fmt_latency(r.latency_us),
            request_id: r.request_id.clone(),
            detail: detail.join(" · "),
            folded: (r.count > 1).then_some(r.count),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/log.html")]
struct LogPage {
    layout: Layout,
    q: LogQuery,
    apps: Vec<String>,
    /// The filter's app when no app has that slug (`_unknown`): still shown as selected.
    other_app: Option<String>,
    outcomes: Vec<&'static str>,
    errors: Vec<String>,
    rows: Vec<LogRow>,
    /// "1 234 matching requests" / "more than 10 000 …"; `None` when the filter is invalid.
    count: Option<String>,
    more_open: bool,
    paged: bool,
    first_url: String,
    older_url: Option<String>,
    csv_url: String,
    json_url: String,
    now_input: String,
}

pub async fn search(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    zone: Zone,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, AdminError> {
    let q = query.into_inner();
    let mut errors = Vec::new();
    let mut rows = Vec::new();
    let mut older_url = None;
    let mut count = None;
    match q.filter(&zone) {
        Ok(filter) => match state
            .store
            .search_issuance(&filter, q.cursor(), PAGE + 1)
            .await
        {
            Ok(mut found) => {
                let n = state.store.count_issuance(&filter, COUNT_CAP + 1).await?;
                count = Some(count_text(n));
                let more = found.len() as i64 > PAGE;
                found.truncate(PAGE as usize);
                if more && let Some(last) = found.last() {
                    older_url = Some(format!(
                        "/log?{}",
                        q.with_before(Some(&IssuanceCursor {
                            at: last.at,
                            id: last.id
                        }))
                    ));
                }
                rows = found.iter().map(|r| LogRow::from(r, &zone)).collect();
            }
            Err(StoreError::Invalid(errs)) => {
                errors.extend(errs.into_iter().map(|e| match e.field.as_str() {
                    "source_ip" => format!("Source IP: enter {}.", e.message),
                    _ => e.message,
                }))
            }
            Err(e) => return Err(e.into()),
        },
        Err(errs) => errors = errs,
    }
    let filter_only = q.with_before(None);
    let apps: Vec<String> = state
        .store
        .list_apps()
        .await?
        .into_iter()
        .map(|a| a.slug)
        .collect();
    let other_app = opt(&q.app).filter(|a| !apps.contains(a));
    page(&LogPage {
        layout: Layout::new(&user, &zone, "log", "Issuance log").with_notice(&req),
        other_app,
        count,
        more_open: [&q.from, &q.to, &q.ip, &q.tmp_secret_id]
            .iter()
            .any(|v| !v.trim().is_empty()),
        paged: !q.before.is_empty(),
        first_url: format!("/log?{filter_only}"),
        csv_url: format!("/log/export.csv?{filter_only}"),
        json_url: format!("/log/export.json?{filter_only}"),
        apps,
        outcomes: Outcome::ALL.iter().map(|o| o.as_str()).collect(),
        errors,
        rows,
        older_url,
        now_input: zone.input(OffsetDateTime::now_utc()),
        q,
    })
}

/// `1 row`, `1,234 matching rows`, `more than 10,000 matching rows`.
fn count_text(n: i64) -> String {
    fn grouped(n: i64) -> String {
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    }
    match n {
        1 => "1 matching request".into(),
        n if n > COUNT_CAP => format!("more than {} matching requests", grouped(COUNT_CAP)),
        n => format!("{} matching requests", grouped(n)),
    }
}

// ---------------------------------------------------------------------------------------------
// Export

/// The filtered rows, newest first, `EXPORT_BATCH` per query: each query starts after the
/// last row of the one before (keyset), so memory stays flat however many rows match.
pub fn batches(
    store: Arc<dyn Store>,
    mut filter: IssuanceFilter,
) -> impl futures_util::Stream<Item = Result<Vec<IssuanceRecord>, StoreError>> {
    // Rows logged after the export started are not part of it.
    let now = OffsetDateTime::now_utc();
    filter.to = Some(filter.to.map_or(now, |t| t.min(now)));
    stream::try_unfold(
        (store, filter, None::<IssuanceCursor>, false),
        |(store, filter, cursor, done)| async move {
            if done {
                return Ok(None);
            }
            let rows = store.search_issuance(&filter, cursor, EXPORT_BATCH).await?;
            if rows.is_empty() {
                return Ok(None);
            }
            let last = rows.last().map(|r| IssuanceCursor { at: r.at, id: r.id });
            let done = (rows.len() as i64) < EXPORT_BATCH;
            Ok(Some((rows, (store, filter, last, done))))
        },
    )
}

/// `count` is last so that files read by position before it was added still parse.
const CSV_COLUMNS: [&str; 20] = [
    "id",
    "at",
    "app",
    "subject",
    "outcome",
    "http_status",
    "error_code",
    "request_id",
    "sts_request_id",
    "tmp_secret_id",
    "policy_hash",
    "template_version",
    "actions",
    "prefix",
    "duration_seconds",
    "expired_time",
    "source_ip",
    "user_agent",
    "latency_us",
    "count",
];

/// Leading characters a spreadsheet takes as the start of a formula (OWASP, CSV injection).
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// One CSV cell (RFC 4180), always quoted so that no character inside (`,`, `;`, `|`, quotes,
/// line breaks) can end it, whatever separator the spreadsheet expects. Text a spreadsheet
/// would run as a formula gets a leading `'` inside the quotes.
fn csv_cell(out: &mut String, value: &str) {
    out.push('"');
    if value.starts_with(FORMULA_START) {
        out.push('\'');
    }
    out.push_str(&value.replace('"', "\"\""));
    out.push('"');
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn csv_line(cells: &[impl AsRef<str>]) -> String {
    let mut out = String::with_capacity(256);
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_cell(&mut out, c.as_ref());
    }
    out.push_str("\r\n");
    out
}

pub fn csv_row(r: &IssuanceRecord) -> String {
    let opt_num = |v: Option<i32>| v.map(|v| v.to_string()).unwrap_or_default();
    let cells = [
        r.id.to_string(),
        rfc3339(r.at),
        r.app.clone(),
        r.subject.clone().unwrap_or_default(),
        r.outcome.as_str().to_owned(),
        r.http_status.to_string(),
        r.error_code.clone().unwrap_or_default(),
        r.request_id.clone(),
        r.sts_request_id.clone().unwrap_or_default(),
        r.tmp_secret_id.clone().unwrap_or_default(),
        r.policy_hash.clone().unwrap_or_default(),
        opt_num(r.template_version),
        r.actions.join(" "),
        r.prefix.clone().unwrap_or_default(),
        opt_num(r.duration_seconds),
        r.expired_time.map(rfc3339).unwrap_or_default(),
        r.source_ip.clone().unwrap_or_default(),
        r.user_agent.clone().unwrap_or_default(),
        r.latency_us.to_string(),
        r.count.to_string(),
    ];
    csv_line(&cells)
}

pub fn export_error(e: StoreError) -> std::io::Error {
    tracing::error!(error = %e, "issuance-log export failed mid-stream");
    std::io::Error::other("export failed")
}

fn attachment(ext: &str) -> String {
    let now = OffsetDateTime::now_utc();
    format!(
        "attachment; filename=\"issuance-log-{:04}{:02}{:02}-{:02}{:02}{:02}.{ext}\"",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// `1.2.3.4`, `2001:db8::1`, or a CIDR block such as `10.0.0.0/8` (as the store accepts).
fn valid_ip_or_cidr(s: &str) -> bool {
    use std::net::IpAddr;
    match s.split_once('/') {
        None => s.parse::<IpAddr>().is_ok(),
        Some((addr, bits)) => match (addr.parse::<IpAddr>(), bits.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
            (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
            _ => false,
        },
    }
}

fn export_filter(query: &LogQuery, zone: &Zone) -> Result<IssuanceFilter, AdminError> {
    let filter = query
        .filter(zone)
        .map_err(|errs| AdminError::BadRequest(errs.join(" ")))?;
    // Checked before the response starts: a refusal mid-stream would truncate the file.
    if let Some(ip) = &filter.source_ip
        && !valid_ip_or_cidr(ip)
    {
        return Err(AdminError::BadRequest(
            "Source IP: enter an IP address or a CIDR block such as 10.0.0.0/8.".into(),
        ));
    }
    Ok(filter)
}

pub async fn export_csv(
    state: State,
    user: CurrentUser,
    zone: Zone,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, AdminError> {
    let filter = export_filter(&query, &zone)?;
    tracing::info!(user = %user.username, filter = ?filter, "issuance-log CSV export");
    let header = Bytes::from(csv_line(&CSV_COLUMNS));
    let body = stream::once(async { Ok::<_, std::io::Error>(header) }).chain(
        batches(state.store.clone(), filter)
            .map_err(export_error)
            .map_ok(|rows| {
                let mut out = String::with_capacity(rows.len() * 256);
                for r in &rows {
                    out.push_str(&csv_row(r));
                }
                Bytes::from(out)
            }),
    );
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/csv; charset=utf-8"))
        .insert_header((header::CONTENT_DISPOSITION, attachment("csv")))
        .streaming(body))
}

pub async fn export_json(
    state: State,
    user: CurrentUser,
    zone: Zone,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, AdminError> {
    let filter = export_filter(&query, &zone)?;
    tracing::info!(user = %user.username, filter = ?filter, "issuance-log JSON export");
    let rows = batches(state.store.clone(), filter)
        .map_err(export_error)
        .enumerate()
        .map(|(i, batch)| {
            batch.and_then(|rows| {
                let mut out = String::with_capacity(rows.len() * 512);
                for (j, r) in rows.iter().enumerate() {
                    out.push_str(if i == 0 && j == 0 { "\n" } else { ",\n" });
                    out.push_str(&serde_json::to_string(r).map_err(std::io::Error::other)?);
                }
                Ok(Bytes::from(out))
            })
        });
    let body = stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"[")) })
        .chain(rows)
        .chain(stream::once(async { Ok(Bytes::from_static(b"\n]\n")) }));
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::CONTENT_DISPOSITION, attachment("json")))
        .streaming(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(value: &str) -> String {
        let mut s = String::new();
        csv_cell(&mut s, value);
        s
    }

    #[test]
    fn csv_cells_are_always_quoted_and_defused() {
        for (value, want) in [
            ("plain", "\"plain\""),
            ("", "\"\""),
            ("a,\"b\"", "\"a,\"\"b\"\"\""),
            ("=HYPERLINK(\"x\")", "\"'=HYPERLINK(\"\"x\"\")\""),
            (
                "Mozilla/5.0;=HYPERLINK(A1);=1+1;",
                "\"Mozilla/5.0;=HYPERLINK(A1);=1+1;\"",
            ),
            ("a|=cmd|' /C calc'!A0", "\"a|=cmd|' /C calc'!A0\""),
            ("line\n=1+1\r\n@SUM(A1)", "\"line\n=1+1\r\n@SUM(A1)\""),
            ("+1", "\"'+1\""),
            ("-1", "\"'-1\""),
            ("@x", "\"'@x\""),
            ("\t=1", "\"'\t=1\""),
            ("\r=1", "\"'\r=1\""),
            ("'quoted", "\"'quoted\""),
        ] {
            assert_eq!(cell(value), want, "{value:?}");
        }
    }

    #[test]
    fn cursors_roundtrip() {
        let c = IssuanceCursor {
            at: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_000).unwrap(),
            id: 42,
        };
        let q = LogQuery {
            app: "demo".into(),
            ..LogQuery::default()
        };
        let s = q.with_before(Some(&c));
        assert_eq!(s, "app=demo&before=1700000000123456_42");
        let back: LogQuery = serde_urlencoded::from_str(&s).unwrap();
        assert_eq!(back.cursor(), Some(c));
        assert!(
            LogQuery {
                before: "x_1".into(),
                ..LogQuery::default()
            }
            .cursor()
            .is_none()
        );
        let bad = LogQuery {
            from: "yesterday".into(),
            outcome: "maybe".into(),
            ..LogQuery::default()
        };
        assert_eq!(bad.filter(&Zone::UTC).unwrap_err().len(), 2);
    }

    #[test]
    fn time_filters_are_inclusive_checked_and_read_in_the_users_zone() {
        let at = |s: &str| {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
        };
        let q = LogQuery {
            from: "2024-05-01T12:00".into(),
            to: "2024-05-01T12:00".into(),
            ..LogQuery::default()
        };
        // The "to" minute is included: a one-minute window, not an empty one.
        let f = q.filter(&Zone::UTC).unwrap();
        assert_eq!(f.from, Some(at("2024-05-01T12:00:00Z")));
        assert_eq!(f.to, Some(at("2024-05-01T12:01:00Z")));
        // In Shanghai the same wall-clock times are eight hours earlier in UTC.
        let f = q.filter(&Zone::named("Asia/Shanghai").unwrap()).unwrap();
        assert_eq!(f.from, Some(at("2024-05-01T04:00:00Z")));
        // From after To finds nothing: said, not silently empty.
        let swapped = LogQuery {
            from: "2024-05-02T00:00".into(),
            to: "2024-05-01T00:00".into(),
            ..LogQuery::default()
        };
        let errs = swapped.filter(&Zone::UTC).unwrap_err();
        assert_eq!(errs, ["From is after To, so nothing can match: swap them."]);
        // Subjects are exact (spaces kept); "starts" asks for a prefix match.
        let q = LogQuery {
            subject: " alice".into(),
            starts: "on".into(),
            ..LogQuery::default()
        };
        let f = q.filter(&Zone::UTC).unwrap();
        assert_eq!(f.subject.as_deref(), Some(" alice"));
        assert!(f.subject_prefix);
    }

    #[test]
    fn counts_read_well() {
        assert_eq!(count_text(0), "0 matching requests");
        assert_eq!(count_text(1), "1 matching request");
        assert_eq!(count_text(1234), "1,234 matching requests");
        assert_eq!(count_text(10_001), "more than 10,000 matching requests");
    }
}
