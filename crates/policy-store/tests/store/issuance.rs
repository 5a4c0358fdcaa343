use std::collections::HashSet;

use policy_store::{
    IssuanceCursor, IssuanceFilter, IssuanceRecord, IssuanceStore, Outcome, StoreError,
};
use time::{Duration, OffsetDateTime};

use super::{fields, store};

fn base_time() -> OffsetDateTime {
    // Whole seconds: Postgres keeps microseconds, the records compare exactly.
    let now = OffsetDateTime::now_utc() - Duration::days(3);
    OffsetDateTime::from_unix_timestamp(now.unix_timestamp()).unwrap()
}

fn record(i: usize, base: OffsetDateTime) -> IssuanceRecord {
    let outcome = Outcome::ALL[i % Outcome::ALL.len()];
    let issued = matches!(outcome, Outcome::Issued | Outcome::Cached);
    IssuanceRecord {
        id: 0,
        // Three rows share each timestamp, so the id breaks ties.
        at: base + Duration::minutes((i / 3) as i64),
        app: if i.is_multiple_of(3) { "alpha" } else { "beta" }.into(),
        subject: (!i.is_multiple_of(50)).then(|| format!("user{}", i % 10)),
        outcome,
        http_status: if issued { 200 } else { 403 },
        error_code: (!issued).then(|| "Denied".into()),
        request_id: format!("req-{i:04}"),
        sts_request_id: issued.then(|| format!("sts-{i}")),
        tmp_secret_id: issued.then(|| format!("AKIDtmp{i:04}")),
        policy_hash: issued.then(|| format!("{:064x}", i)),
        template_version: issued.then_some(1),
        actions: if issued {
            vec!["name/cos:PutObject".into(), "name/cos:GetObject".into()]
        } else {
            vec![]
        },
        prefix: issued.then(|| format!("users/user{}/", i % 10)),
        duration_seconds: issued.then_some(1800),
        expired_time: issued.then(|| base + Duration::hours(1)),
        source_ip: match i % 25 {
            0 => None,
            n if n % 2 == 0 => Some(format!("10.1.{}.{}", i % 5, i % 200)),
            _ => Some(format!("2001:db8::{:x}", i)),
        },
        user_agent: Some("okhttp/4.12".into()),
        latency_us: i as i64 * 10,
        count: 1,
    }
}

fn request_ids(rows: &[IssuanceRecord]) -> Vec<String> {
    rows.iter().map(|r| r.request_id.clone()).collect()
}

fn assert_newest_first(rows: &[IssuanceRecord]) {
    for w in rows.windows(2) {
        assert!(
            (w[0].at, w[0].id) > (w[1].at, w[1].id),
            "not in (at, id) DESC order: {:?} then {:?}",
            (w[0].at, w[0].id),
            (w[1].at, w[1].id)
        );
    }
}

#[tokio::test]
async fn batch_insert_search_and_keyset_pagination() {
    let (_db, store) = store().await;
    let base = base_time();
    let records: Vec<IssuanceRecord> = (0..500).map(|i| record(i, base)).collect();
    store.insert_issuance_batch(&records).await.unwrap();
    store.insert_issuance_batch(&[]).await.unwrap();

    // Everything, page by page.
    let filter = IssuanceFilter::default();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.search_issuance(&filter, cursor, 37).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 37);
        let last = page.last().unwrap();
        cursor = Some(IssuanceCursor {
            at: last.at,
            id: last.id,
        });
        seen.extend(page);
    }
    assert_eq!(seen.len(), 500, "no gaps");
    assert_newest_first(&seen);
    let unique: HashSet<_> = seen.iter().map(|r| r.id).collect();
    assert_eq!(unique.len(), 500, "no duplicates");
    let ids: HashSet<_> = request_ids(&seen).into_iter().collect();
    assert_eq!(ids.len(), 500);

    // A row comes back exactly as written.
    let original = &records[7];
    let found = seen
        .iter()
        .find(|r| r.request_id == original.request_id)
        .unwrap();
    assert!(found.id > 0);
    assert_eq!(
        IssuanceRecord {
            id: 0,
            ..found.clone()
        },
        *original
    );

    // Each filter, against the same filter applied in memory.
    let check = |filter: IssuanceFilter, keep: Box<dyn Fn(&IssuanceRecord) -> bool>| {
        let store = &store;
        let records = &records;
        async move {
            let rows = store.search_issuance(&filter, None, 1000).await.unwrap();
            assert_newest_first(&rows);
            let mut got = request_ids(&rows);
            got.sort();
            let mut want: Vec<String> = records
                .iter()
                .filter(|r| keep(r))
                .map(|r| r.request_id.clone())
                .collect();
            want.sort();
            assert!(!want.is_empty(), "filter {filter:?} matches nothing");
            assert_eq!(got, want, "filter {filter:?}");
        }
    };
    check(
        IssuanceFilter {
            app: Some("alpha".into()),
            ..Default::default()
        },
        Box::new(|r| r.app == "alpha"),
    )
    .await;
    check(
        IssuanceFilter {
            subject: Some("user3".into()),
            ..Default::default()
        },
        Box::new(|r| r.subject.as_deref() == Some("user3")),
    )
    .await;
    check(
        IssuanceFilter {
            outcome: Some(Outcome::Denied),
            ..Default::default()
        },
        Box::new(|r| r.outcome == Outcome::Denied),
    )
    .await;
    let (from, to) = (base + Duration::minutes(20), base + Duration::minutes(40));
    check(
        IssuanceFilter {
            from: Some(from),
            to: Some(to),
            ..Default::default()
        },
        Box::new(move |r| r.at >= from && r.at < to),
    )
    .await;
    check(
        IssuanceFilter {
            source_ip: Some("10.1.2.12".into()),
            ..Default::default()
        },
        Box::new(|r| r.source_ip.as_deref() == Some("10.1.2.12")),
    )
    .await;
    check(
        IssuanceFilter {
            source_ip: Some("10.1.0.0/16".into()),
            ..Default::default()
        },
        Box::new(|r| {
            r.source_ip
                .as_deref()
                .is_some_and(|ip| ip.starts_with("10.1."))
        }),
    )
    .await;
    check(
        IssuanceFilter {
            source_ip: Some("2001:db8::/32".into()),
            ..Default::default()
        },
        Box::new(|r| r.source_ip.as_deref().is_some_and(|ip| ip.contains(':'))),
    )
    .await;
    check(
        IssuanceFilter {
            tmp_secret_id: Some("AKIDtmp0007".into()),
            ..Default::default()
        },
        Box::new(|r| r.tmp_secret_id.as_deref() == Some("AKIDtmp0007")),
    )
    .await;
    check(
        IssuanceFilter {
            app: Some("beta".into()),
            outcome: Some(Outcome::Issued),
            subject: Some("user1".into()),
            ..Default::default()
        },
        Box::new(|r| {
            r.app == "beta" && r.outcome == Outcome::Issued && r.subject.as_deref() == Some("user1")
        }),
    )
    .await;

    // Filtered pagination: pages of 5 over one app.
    let filter = IssuanceFilter {
        app: Some("alpha".into()),
        ..Default::default()
    };
    let mut paged = Vec::new();
    let mut cursor = None;
    while let Some(last) = {
        let page = store.search_issuance(&filter, cursor, 5).await.unwrap();
        let last = page.last().map(|r| IssuanceCursor { at: r.at, id: r.id });
        paged.extend(page);
        last
    } {
        cursor = Some(last);
    }
    assert_eq!(
        paged.len(),
        records.iter().filter(|r| r.app == "alpha").count()
    );
    assert_newest_first(&paged);

    // Bad filters and records are refused before any SQL runs.
    let err = store
        .search_issuance(
            &IssuanceFilter {
                source_ip: Some("10.0.0.0/99' OR 1=1".into()),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["source_ip"]);
    let mut bad = record(1, base);
    bad.source_ip = Some("not-an-ip".into());
    let err = store
        .insert_issuance_batch(&[record(2, base), bad])
        .await
        .unwrap_err();
    assert!(matches!(&err, StoreError::Invalid(e) if e[0].field == "records[1].source_ip"));
}

/// Actions travel to the server as array literals: whatever an action holds comes back as
/// written, in order.
#[tokio::test]
async fn actions_of_any_text_round_trip() {
    let (_db, store) = store().await;
    let base = base_time();
    let hostile: Vec<Vec<String>> = vec![
        vec![],
        vec![String::new()],
        vec!["NULL".into(), "null".into()],
        vec!["a,b".into(), "{c}".into(), " spaced ".into()],
        vec!["quote\"d".into(), "back\\slash".into(), "\\\"".into()],
        vec!["中文/cos:*".into(), "tab\there".into(), "'single'".into()],
    ];
    let records: Vec<IssuanceRecord> = hostile
        .iter()
        .enumerate()
        .map(|(i, actions)| IssuanceRecord {
            actions: actions.clone(),
            ..record(i * 5, base)
        })
        .collect();
    store.insert_issuance_batch(&records).await.unwrap();
    let rows = store
        .search_issuance(&IssuanceFilter::default(), None, 100)
        .await
        .unwrap();
    for r in &records {
        let found = rows.iter().find(|f| f.request_id == r.request_id).unwrap();
        assert_eq!(found.actions, r.actions);
    }
}
