//! Issuance-log subject search by prefix (index-backed), the capped row count, and the admin
//! users' display time zones.

use policy_store::{AdminPrefsStore, AdminUserStore, IssuanceFilter, IssuanceStore, Role};
use sqlx::Row as _;

use super::store;

/// Rows are inserted with SQL so this test does not depend on every field of the record type.
async fn insert_subjects(pool: &sqlx::PgPool, subjects: &[&str]) {
    for (i, s) in subjects.iter().enumerate() {
        sqlx::query(
            "INSERT INTO issuance_log (at, app, subject, outcome, http_status, request_id) \
             VALUES (now() - make_interval(secs => $1), 'demo', $2, 'issued', 200, $3)",
        )
        .bind(i as f64)
        .bind(*s)
        .bind(format!("req-{i}"))
        .execute(pool)
        .await
        .unwrap();
    }
}

fn subjects_of(rows: &[policy_store::IssuanceRecord]) -> Vec<String> {
    rows.iter().map(|r| r.subject.clone().unwrap()).collect()
}

#[tokio::test]
async fn subjects_match_exactly_or_by_prefix_and_are_counted() {
    let (db, store) = store().await;
    insert_subjects(
        &db.pool,
        &[
            "alice", "alice2", "alicia", "bob", "ali%", "ali_x", "Alice", "用户1", "用户2",
        ],
    )
    .await;
    let search = |subject: &str, prefix: bool| {
        let filter = IssuanceFilter {
            subject: Some(subject.into()),
            subject_prefix: prefix,
            ..IssuanceFilter::default()
        };
        let store = store.clone();
        async move {
            let rows = store.search_issuance(&filter, None, 100).await.unwrap();
            let count = store.count_issuance(&filter, 1000).await.unwrap();
            assert_eq!(count, rows.len() as i64, "{filter:?}");
            let mut s = subjects_of(&rows);
            s.sort();
            s
        }
    };
    assert_eq!(search("alice", false).await, ["alice"]);
    assert_eq!(search("alice", true).await, ["alice", "alice2"]);
    assert_eq!(
        search("ali", true).await,
        ["ali%", "ali_x", "alice", "alice2", "alicia"]
    );
    // LIKE's wildcards are plain characters here.
    assert_eq!(search("ali%", true).await, ["ali%"]);
    assert_eq!(search("ali_", true).await, ["ali_x"]);
    assert_eq!(search("用户", true).await, ["用户1", "用户2"]);
    assert!(search("carol", true).await.is_empty());

    // The count stops at the cap (the page then says "more than").
    let all = IssuanceFilter::default();
    assert_eq!(store.count_issuance(&all, 1000).await.unwrap(), 9);
    assert_eq!(store.count_issuance(&all, 4).await.unwrap(), 4);
}

/// The prefix condition is one the subject index can serve: with sequential scans priced out,
/// the plan walks issuance_log_subject_pattern_idx with the range as its index condition (an
/// unindexable condition would still show a sequential scan).
#[tokio::test]
async fn prefix_search_uses_the_subject_index() {
    let (db, _store) = store().await;
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query(
        "EXPLAIN SELECT id FROM issuance_log WHERE subject ~>=~ $1 AND subject ~<~ $2 \
         ORDER BY at DESC, id DESC LIMIT 51",
    )
    .bind("ali")
    .bind("alj")
    .fetch_all(&mut *conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>(0))
    .collect();
    let plan = plan.join("\n");
    // Partition indexes get generated names; the range is the index condition.
    assert!(
        plan.contains("Index Cond: ((subject ~>=~ 'ali'::text) AND (subject ~<~ 'alj'::text))"),
        "{plan}"
    );
    assert!(!plan.contains("Seq Scan"), "{plan}");
}

#[tokio::test]
async fn display_time_zones_are_per_user() {
    let (_db, store) = store().await;
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
    let a = store
        .create_admin_user("root", "ana", hash, Role::Admin)
        .await
        .unwrap();
    let b = store
        .create_admin_user("root", "ben", hash, Role::Auditor)
        .await
        .unwrap();
    assert_eq!(store.admin_display_timezone(a.id).await.unwrap(), None);
    store
        .set_admin_display_timezone(a.id, Some("Asia/Shanghai"))
        .await
        .unwrap();
    assert_eq!(
        store.admin_display_timezone(a.id).await.unwrap().as_deref(),
        Some("Asia/Shanghai")
    );
    assert_eq!(store.admin_display_timezone(b.id).await.unwrap(), None);
    for bad in ["", "Asia/ Shanghai", &"x".repeat(65)] {
        assert!(
            store
                .set_admin_display_timezone(a.id, Some(bad))
                .await
                .is_err(),
            "{bad:?}"
        );
    }
    store.set_admin_display_timezone(a.id, None).await.unwrap();
    assert_eq!(store.admin_display_timezone(a.id).await.unwrap(), None);
    assert!(
        store
            .set_admin_display_timezone(999_999, None)
            .await
            .is_err()
    );
}
