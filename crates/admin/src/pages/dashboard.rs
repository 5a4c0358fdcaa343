//! The dashboard: charts of the last 24 hours, per-app totals and the busiest subjects and
//! addresses of the last hour, day or week, and the cluster's replicas. The issuance figures
//! come from the hourly rollup, refreshed every minute up to two minutes ago, plus the rows
//! after that read live, so the page costs about the same at millions of rows a day.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use policy_store::{
    AppTraffic, HourlyTraffic, LatencyHistogram, Outcome, TopRequesters, hour_start,
};
use time::{Duration, OffsetDateTime};

use super::{State, page};
use crate::charts::{self, Charts};
use crate::error::AdminError;
use crate::session::CurrentUser;
use crate::view::{Layout, Zone, fmt_latency};

/// Rows in each of the busiest-subjects and busiest-addresses tables.
const TOP: i64 = 10;

/// The windows the dashboard offers: query value, label, length.
const WINDOWS: [(&str, &str, i64); 3] =
    [("1h", "1 h", 1), ("24h", "24 h", 24), ("7d", "7 d", 24 * 7)];

#[derive(serde::Deserialize)]
pub struct DashboardQuery {
    #[serde(default)]
    window: String,
}

/// A replica as the dashboard lists it.
pub struct Member {
    pub host: String,
    pub public_addr: String,
    pub admin_addr: String,
    pub version: String,
    pub started: String,
    /// Seconds since its last heartbeat, one decimal.
    pub beat_age: String,
    pub live: bool,
}

pub struct Row {
    pub slug: String,
    pub name: String,
    /// Known app (links to its page) or a slug only seen in the log.
    pub known: bool,
    pub enabled: bool,
    pub t: AppTraffic,
    pub p95: String,
}

#[derive(Template)]
#[template(path = "admin/dashboard.html")]
struct DashboardPage {
    layout: Layout,
    since: String,
    /// `(value, label, current)` for the window links.
    windows: Vec<(&'static str, &'static str, bool)>,
    window_label: &'static str,
    rows: Vec<Row>,
    totals: AppTraffic,
    refused: i64,
    charts: Charts,
    top: TopRequesters,
    /// When the rollup last ran, or why the figures are all live.
    rollup_note: String,
    members: Vec<Member>,
    live_members: usize,
}

/// Per-app totals over the window, with the p95 of all its requests (from the merged
/// histograms: at most 10% above the exact value).
fn per_app(rows: &[HourlyTraffic], since: OffsetDateTime) -> Vec<AppTraffic> {
    let mut apps: BTreeMap<&str, (AppTraffic, LatencyHistogram)> = BTreeMap::new();
    let first = hour_start(since);
    for r in rows.iter().filter(|r| r.hour >= first) {
        let (t, hist) = apps.entry(&r.app).or_insert_with(|| {
            (
                AppTraffic {
                    app: r.app.clone(),
                    ..AppTraffic::default()
                },
                LatencyHistogram::default(),
            )
        });
        t.total += r.requests;
        *match r.outcome {
            Outcome::Issued => &mut t.issued,
            Outcome::Cached => &mut t.cached,
            Outcome::Denied => &mut t.denied,
            Outcome::InvalidToken => &mut t.invalid_token,
            Outcome::BadRequest => &mut t.bad_request,
            Outcome::RateLimited => &mut t.rate_limited,
            Outcome::UpstreamError => &mut t.upstream_error,
        } += r.requests;
        hist.merge(&r.latency);
    }
    apps.into_values()
        .map(|(mut t, hist)| {
            t.p95_latency_us = hist.quantile(0.95);
            t
        })
        .collect()
}

pub async fn show(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    zone: Zone,
    query: web::Query<DashboardQuery>,
) -> Result<HttpResponse, AdminError> {
    let (window, label, hours) = WINDOWS
        .iter()
        .copied()
        .find(|(v, _, _)| *v == query.window)
        .unwrap_or(WINDOWS[1]);
    let now = OffsetDateTime::now_utc();
    // Whole hours: the rollup's unit.
    let since = hour_start(now - Duration::hours(hours));
    let chart_since = now - Duration::hours(charts::HOURS - 1);
    let store = &state.store;
    let hourly = store.hourly_traffic(since.min(chart_since), now).await?;
    let (apps, top, refreshed) = (
        store.list_apps().await?,
        store.top_requesters(since, now, TOP).await?,
        store.rollup_refreshed_at().await?,
    );
    let cluster = store
        .cluster_members(state.config.member_live_within)
        .await?;
    let traffic = per_app(&hourly, since);
    let members: Vec<Member> = cluster
        .iter()
        .map(|m| Member {
            host: m.host.clone(),
            public_addr: m.public_addr.clone(),
            admin_addr: m.admin_addr.clone(),
            version: m.version.clone(),
            started: zone.fmt(m.started_at),
            beat_age: format!("{:.1} s", m.beat_age_ms.max(0) as f64 / 1000.0),
            live: m.live,
        })
        .collect();
    let live_members = members.iter().filter(|m| m.live).count();
    let mut rows: Vec<Row> = apps
        .iter()
        .map(|a| {
            let t = traffic
                .iter()
                .find(|t| t.app == a.slug)
                .cloned()
                .unwrap_or_else(|| AppTraffic {
                    app: a.slug.clone(),
                    ..AppTraffic::default()
                });
            Row {
                slug: a.slug.clone(),
                name: a.name.clone(),
                known: true,
                enabled: a.enabled,
                p95: t
                    .p95_latency_us
                    .map(fmt_latency)
                    .unwrap_or_else(|| "–".into()),
                t,
            }
        })
        .collect();
    for t in traffic
        .iter()
        .filter(|t| !apps.iter().any(|a| a.slug == t.app))
    {
        rows.push(Row {
            slug: t.app.clone(),
            name: "(no such app)".into(),
            known: false,
            enabled: false,
            p95: t
                .p95_latency_us
                .map(fmt_latency)
                .unwrap_or_else(|| "–".into()),
            t: t.clone(),
        });
    }
    let mut totals = AppTraffic::default();
    for t in &traffic {
        totals.total += t.total;
        totals.issued += t.issued;
        totals.cached += t.cached;
        totals.denied += t.denied;
        totals.invalid_token += t.invalid_token;
        totals.bad_request += t.bad_request;
        totals.rate_limited += t.rate_limited;
        totals.upstream_error += t.upstream_error;
    }
    let refused = totals.denied + totals.invalid_token + totals.bad_request;
    page(&DashboardPage {
        layout: Layout::new(&user, &zone, "dashboard", "Dashboard").with_notice(&req),
        since: zone.fmt(since),
        windows: WINDOWS
            .iter()
            .map(|(v, l, _)| (*v, *l, *v == window))
            .collect(),
        window_label: label,
        rows,
        totals,
        refused,
        charts: Charts::build(&hourly, now, &zone),
        top,
        rollup_note: match refreshed {
            Some(at) => format!(
                "Figures come from the hourly rollup (last refreshed {}) and, for the last few minutes, live from the log.",
                zone.fmt(at)
            ),
            None => "The hourly rollup has not run yet: every figure is read live from the log."
                .to_owned(),
        },
        members,
        live_members,
    })
}
