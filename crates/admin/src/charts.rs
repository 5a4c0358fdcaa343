//! The dashboard's charts as plain SVG, computed here and drawn by `partials/_chart.html`:
//! no JavaScript, no inline styles (the CSP allows neither), colours from CSS classes.
//!
//! Every chart is hourly over the last 24 hours: requests stacked by outcome, the latency of
//! issuances (cache misses, so STS's time included) at p50 and p95, and the cache hit ratio.

use policy_store::{HourlyTraffic, LatencyHistogram, Outcome, hour_start};
use time::{Duration, OffsetDateTime};

use crate::view::{Zone, fmt_latency};

/// The drawing area, in SVG user units (the `viewBox`; the page scales it to its width).
/// Sized so the three charts side by side on a desktop, or one per row on a phone, show
/// their 12-unit labels at 9 to 12 px.
const WIDTH: f64 = 480.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;

/// How many hours the charts span.
pub const HOURS: i64 = 24;

/// The stacking order, bottom up, with the legend's words.
const OUTCOMES: [(Outcome, &str); 7] = [
    (Outcome::Issued, "issued"),
    (Outcome::Cached, "from cache"),
    (Outcome::Denied, "denied"),
    (Outcome::InvalidToken, "invalid token"),
    (Outcome::BadRequest, "bad request"),
    (Outcome::RateLimited, "rate limited"),
    (Outcome::UpstreamError, "upstream error"),
];

pub struct Tick {
    pub at: f64,
    pub label: String,
}

pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub class: &'static str,
    /// Shown on hover (`<title>`).
    pub title: String,
}

pub struct Path {
    pub class: &'static str,
    /// SVG path data; a gap in the data starts a new `M`.
    pub d: String,
    /// Single points (an hour with no neighbour) drawn as dots.
    pub dots: Vec<(f64, f64, String)>,
}

pub struct Chart {
    pub id: &'static str,
    pub title: &'static str,
    /// What the chart says, for screen readers (`aria-label`).
    pub summary: String,
    pub view_box: String,
    pub left: f64,
    pub right: f64,
    pub bottom: f64,
    pub y_ticks: Vec<Tick>,
    pub x_ticks: Vec<Tick>,
    pub rects: Vec<Rect>,
    pub paths: Vec<Path>,
    /// `(css class, label)`.
    pub legend: Vec<(&'static str, &'static str)>,
    pub empty: bool,
}

/// One hour of the 24, with everything in it merged over apps.
#[derive(Default, Clone)]
struct Hour {
    by_outcome: [i64; OUTCOMES.len()],
    /// Latencies of issuances (misses).
    issued_latency: LatencyHistogram,
}

pub struct Charts {
    pub requests: Chart,
    pub latency: Chart,
    pub hit_ratio: Chart,
}

impl Charts {
    /// The 24 hours ending with the current one, in `zone` for the labels.
    pub fn build(rows: &[HourlyTraffic], now: OffsetDateTime, zone: &Zone) -> Self {
        let current = hour_start(now);
        let first = current - Duration::hours(HOURS - 1);
        let mut hours = vec![Hour::default(); HOURS as usize];
        for r in rows {
            let i = (r.hour - first).whole_hours();
            let Some(h) = usize::try_from(i).ok().and_then(|i| hours.get_mut(i)) else {
                continue;
            };
            if let Some(k) = OUTCOMES.iter().position(|(o, _)| *o == r.outcome) {
                h.by_outcome[k] += r.requests;
            }
            if r.outcome == Outcome::Issued {
                h.issued_latency.merge(&r.latency);
            }
        }
        let labels: Vec<String> = (0..HOURS)
            .map(|i| zone.hour_label(first + Duration::hours(i)))
            .collect();
        Self {
            requests: requests_chart(&hours, &labels),
            latency: latency_chart(&hours, &labels),
            hit_ratio: hit_ratio_chart(&hours, &labels),
        }
    }
}

fn slot_width() -> f64 {
    (WIDTH - LEFT - RIGHT) / HOURS as f64
}

fn slot_center(i: usize) -> f64 {
    LEFT + slot_width() * (i as f64 + 0.5)
}

fn y_of(value: f64, max: f64) -> f64 {
    let plot = HEIGHT - TOP - BOTTOM;
    TOP + plot - plot * (value / max).clamp(0.0, 1.0)
}

/// A round tick step (1, 2, 2.5 or 5 × 10ⁿ) so that four steps reach `max`; whole numbers
/// at least when `whole` (counts).
fn nice_step(max: f64, whole: bool) -> f64 {
    let raw = if max > 0.0 { max / 4.0 } else { 0.25 };
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    if whole { step.ceil().max(1.0) } else { step }
}

/// The axis top: four round steps.
fn nice_max(max: f64, whole: bool) -> f64 {
    nice_step(max, whole) * 4.0
}

fn y_ticks(max: f64, label: impl Fn(f64) -> String) -> Vec<Tick> {
    (0..=4)
        .map(|i| {
            let v = max * f64::from(i) / 4.0;
            Tick {
                at: y_of(v, max),
                label: label(v),
            }
        })
        .collect()
}

/// Every third hour labelled, so they fit at phone width.
fn x_ticks(labels: &[String]) -> Vec<Tick> {
    labels
        .iter()
        .enumerate()
        .filter(|(i, _)| (labels.len() - 1 - i).is_multiple_of(3))
        .map(|(i, l)| Tick {
            at: slot_center(i),
            label: l.clone(),
        })
        .collect()
}

fn frame(id: &'static str, title: &'static str, summary: String, labels: &[String]) -> Chart {
    Chart {
        id,
        title,
        summary,
        view_box: format!("0 0 {WIDTH} {HEIGHT}"),
        left: LEFT,
        right: WIDTH - RIGHT,
        bottom: HEIGHT - BOTTOM,
        y_ticks: Vec::new(),
        x_ticks: x_ticks(labels),
        rects: Vec::new(),
        paths: Vec::new(),
        legend: Vec::new(),
        empty: false,
    }
}

fn count_label(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

fn outcome_class(o: Outcome) -> &'static str {
    match o {
        Outcome::Issued => "c-issued",
        Outcome::Cached => "c-cached",
        Outcome::Denied => "c-denied",
        Outcome::InvalidToken => "c-invalid",
        Outcome::BadRequest => "c-bad-request",
        Outcome::RateLimited => "c-limited",
        Outcome::UpstreamError => "c-upstream",
    }
}

fn requests_chart(hours: &[Hour], labels: &[String]) -> Chart {
    let totals: Vec<i64> = hours.iter().map(|h| h.by_outcome.iter().sum()).collect();
    let total: i64 = totals.iter().sum();
    let max = nice_max(totals.iter().copied().max().unwrap_or(0) as f64, true);
    let mut chart = frame(
        "chart-requests",
        "Requests per hour, by outcome",
        format!("{total} credential requests in the last 24 hours, per hour and outcome"),
        labels,
    );
    chart.y_ticks = y_ticks(max, count_label);
    let w = slot_width() * 0.72;
    for (i, h) in hours.iter().enumerate() {
        let mut below = 0i64;
        for (k, (outcome, word)) in OUTCOMES.iter().enumerate() {
            let n = h.by_outcome[k];
            if n == 0 {
                continue;
            }
            let (y_top, y_bottom) = (y_of((below + n) as f64, max), y_of(below as f64, max));
            chart.rects.push(Rect {
                x: slot_center(i) - w / 2.0,
                y: y_top,
                w,
                h: (y_bottom - y_top).max(1.0),
                class: outcome_class(*outcome),
                title: format!("{}: {n} {word}", labels[i]),
            });
            below += n;
        }
    }
    chart.legend = OUTCOMES
        .iter()
        .filter(|(o, _)| hours.iter().any(|h| h.by_outcome[index_of(*o)] > 0))
        .map(|(o, word)| (outcome_class(*o), *word))
        .collect();
    chart.empty = total == 0;
    chart
}

fn index_of(o: Outcome) -> usize {
    OUTCOMES.iter().position(|(x, _)| *x == o).unwrap_or(0)
}

/// A line through the hours that have a value; gaps split it.
fn line(
    values: &[Option<f64>],
    max: f64,
    class: &'static str,
    labels: &[String],
    fmt: impl Fn(f64) -> String,
) -> Path {
    let mut d = String::new();
    let mut dots = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let Some(v) = v else { continue };
        let (x, y) = (slot_center(i), y_of(*v, max));
        let joined = i > 0 && values[i - 1].is_some();
        d.push_str(&format!("{}{x:.1} {y:.1} ", if joined { "L" } else { "M" }));
        let alone = !joined && values.get(i + 1).is_none_or(|n| n.is_none());
        if alone {
            dots.push((x, y, format!("{}: {}", labels[i], fmt(*v))));
        }
    }
    Path {
        class,
        d: d.trim_end().to_owned(),
        dots,
    }
}

fn latency_chart(hours: &[Hour], labels: &[String]) -> Chart {
    let p50: Vec<Option<f64>> = hours
        .iter()
        .map(|h| h.issued_latency.quantile(0.5).map(|v| v as f64))
        .collect();
    let p95: Vec<Option<f64>> = hours
        .iter()
        .map(|h| h.issued_latency.quantile(0.95).map(|v| v as f64))
        .collect();
    let max = nice_max(p95.iter().flatten().copied().fold(0.0, f64::max), false);
    let worst = p95.iter().flatten().copied().fold(0.0, f64::max);
    let mut chart = frame(
        "chart-latency",
        "Issuance latency (cache misses, STS included)",
        format!(
            "p50 and p95 latency of issued credentials per hour; the highest p95 is {}",
            fmt_latency(worst as i64)
        ),
        labels,
    );
    let fmt = |v: f64| fmt_latency(v as i64);
    chart.y_ticks = y_ticks(max, fmt);
    chart.paths = vec![
        line(&p95, max, "l-p95", labels, fmt),
        line(&p50, max, "l-p50", labels, fmt),
    ];
    chart.legend = vec![("l-p50", "p50"), ("l-p95", "p95")];
    chart.empty = p50.iter().all(Option::is_none);
    chart
}

fn hit_ratio_chart(hours: &[Hour], labels: &[String]) -> Chart {
    let ratios: Vec<Option<f64>> = hours
        .iter()
        .map(|h| {
            let (issued, cached) = (
                h.by_outcome[index_of(Outcome::Issued)],
                h.by_outcome[index_of(Outcome::Cached)],
            );
            (issued + cached > 0).then(|| 100.0 * cached as f64 / (issued + cached) as f64)
        })
        .collect();
    let (issued, cached): (i64, i64) = hours.iter().fold((0, 0), |(i, c), h| {
        (
            i + h.by_outcome[index_of(Outcome::Issued)],
            c + h.by_outcome[index_of(Outcome::Cached)],
        )
    });
    let overall = if issued + cached > 0 {
        format!("{:.0}%", 100.0 * cached as f64 / (issued + cached) as f64)
    } else {
        "no credentials".to_owned()
    };
    let mut chart = frame(
        "chart-hit-ratio",
        "Cache hit ratio",
        format!("share of credentials served from the cache per hour; {overall} over 24 hours"),
        labels,
    );
    let pct = |v: f64| format!("{v:.0}%");
    chart.y_ticks = y_ticks(100.0, pct);
    chart.paths = vec![line(&ratios, 100.0, "l-ratio", labels, pct)];
    chart.legend = vec![("l-ratio", "served from cache")];
    chart.empty = ratios.iter().all(Option::is_none);
    chart
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn traffic(hour: OffsetDateTime, outcome: Outcome, n: i64, latency_us: i64) -> HourlyTraffic {
        let mut latency = LatencyHistogram::default();
        for _ in 0..n {
            latency.record(latency_us);
        }
        HourlyTraffic {
            hour,
            app: "photos".into(),
            outcome,
            requests: n,
            latency,
        }
    }

    #[test]
    fn bars_stack_by_outcome_in_their_hour() {
        let now = datetime!(2026-11-30 12:34 UTC);
        let rows = [
            traffic(datetime!(2026-11-30 12:00 UTC), Outcome::Issued, 30, 40_000),
            traffic(datetime!(2026-11-30 12:00 UTC), Outcome::Cached, 10, 300),
            traffic(datetime!(2026-11-30 10:00 UTC), Outcome::Denied, 5, 200),
            // Outside the 24 hours: ignored.
            traffic(datetime!(2026-11-29 11:00 UTC), Outcome::Issued, 99, 1),
        ];
        let charts = Charts::build(&rows, now, &Zone::UTC);
        let r = &charts.requests;
        assert_eq!(r.rects.len(), 3);
        // The current hour is the last slot; its two segments share x and touch.
        let (issued, cached) = (&r.rects[1], &r.rects[2]);
        assert_eq!(issued.class, "c-issued");
        assert_eq!(cached.class, "c-cached");
        assert_eq!(issued.x, cached.x);
        assert!((cached.y + cached.h - issued.y).abs() < 1e-9, "stacked");
        assert!(issued.x > r.rects[0].x);
        assert_eq!(issued.title, "12:00: 30 issued");
        // 40 is the tallest bar; the axis tops at 40, in steps of 10.
        assert_eq!(r.y_ticks.last().unwrap().label, "40");
        assert_eq!(r.y_ticks[1].label, "10");
        assert!(r.summary.starts_with("45 credential requests"));
        assert!(!r.empty);

        // One hour of issuances: a dot, not a line; 10 of the 40 credentials came from cache.
        assert_eq!(charts.latency.paths[1].dots.len(), 1);
        assert!(
            charts.hit_ratio.summary.contains("25%"),
            "{}",
            charts.hit_ratio.summary
        );
    }

    #[test]
    fn an_empty_day_says_so() {
        let charts = Charts::build(&[], datetime!(2026-11-30 12:34 UTC), &Zone::UTC);
        assert!(charts.requests.empty && charts.latency.empty && charts.hit_ratio.empty);
        assert_eq!(charts.requests.x_ticks.last().unwrap().label, "12:00");
        assert_eq!(charts.requests.x_ticks.len(), 8);
    }

    #[test]
    fn axis_tops_are_four_round_steps() {
        // Counts: whole steps, so a day with 2 requests reads 0 1 2 3 4, not 0 0 1 2 2.
        assert_eq!(nice_max(0.0, true), 4.0);
        assert_eq!(nice_max(2.0, true), 4.0);
        assert_eq!(nice_max(7.0, true), 8.0);
        assert_eq!(nice_max(45.0, true), 80.0);
        assert_eq!(nice_max(120.0, true), 200.0);
        assert_eq!(nice_max(2000.0, true), 2000.0);
        // Latencies: any round step.
        assert_eq!(nice_max(44_600.0, false), 80_000.0);
        assert_eq!(nice_max(38_000.0, false), 40_000.0);
        assert_eq!(nice_max(0.5, false), 0.8);
    }
}
