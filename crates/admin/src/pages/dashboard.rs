//! The dashboard: the issuance log of the last hour, day or week, per app, and the cluster's
//! replicas.

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use policy_store::AppTraffic;
use time::{Duration, OffsetDateTime};

use super::{State, page};
use crate::error::AdminError;
use crate::session::CurrentUser;
use crate::view::{Layout, Zone, fmt_latency};

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
    members: Vec<Member>,
    live_members: usize,
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
    let since = OffsetDateTime::now_utc() - Duration::hours(hours);
    let (apps, traffic, cluster) = (
        state.store.list_apps().await?,
        state.store.traffic_since(since).await?,
        state
            .store
            .cluster_members(state.config.member_live_within)
            .await?,
    );
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
        members,
        live_members,
    })
}
