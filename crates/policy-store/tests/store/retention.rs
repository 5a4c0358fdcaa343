//! Issuance-log retention against a real database: back-dated monthly partitions are dropped
//! (archived first when asked), current data and the default partition are untouched, and a
//! failed archive never drops anything.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};

use policy_store::{
    ChangeLogStore, IssuanceRecord, IssuanceStore, Outcome, PgStore, RETENTION_LOCK_KEY,
    RetentionError, RetentionPolicy,
};
use sha2::{Digest as _, Sha256};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::store;

fn row(at: OffsetDateTime, request_id: &str) -> IssuanceRecord {
    IssuanceRecord {
        id: 0,
        at,
        app: "photos".into(),
        subject: Some("alice".into()),
        outcome: Outcome::Issued,
        http_status: 200,
        error_code: None,
        request_id: request_id.into(),
        sts_request_id: Some(format!("sts-{request_id}")),
        tmp_secret_id: Some(format!("AKIDtmp-{request_id}")),
        policy_hash: None,
        template_version: Some(1),
        actions: vec!["name/cos:PutObject".into()],
        prefix: Some("users/alice/".into()),
        duration_seconds: Some(1800),
        expired_time: Some(at + Duration::minutes(30)),
        source_ip: Some("203.0.113.9".into()),
        user_agent: Some("okhttp/4.12".into()),
        latency_us: 1200,
    }
}

/// A monthly partition as `stsgate_ensure_issuance_partitions` would have made it that month.
async fn back_dated_partition(store: &PgStore, year: i32, month: u8) {
    let from = format!("{year}-{month:02}-01 00:00:00+00");
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let to = format!("{ny}-{nm:02}-01 00:00:00+00");
    let sql = format!(
        "CREATE TABLE issuance_log_y{year}m{month:02} PARTITION OF issuance_log \
         FOR VALUES FROM ('{from}') TO ('{to}')"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(store.pool())
        .await
        .unwrap();
}

async fn partitions(store: &PgStore) -> Vec<String> {
    store
        .issuance_partitions()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect()
}

async fn request_ids(store: &PgStore) -> Vec<String> {
    sqlx::query_scalar("SELECT request_id FROM issuance_log ORDER BY request_id")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "stsgate-retention-{name}-{}-{}",
        std::process::id(),
        OffsetDateTime::now_utc().unix_timestamp_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Two old months, a month inside retention, the current month, and an old row that fell
/// into the default partition (no monthly partition existed for it).
async fn seeded() -> (policy_store::testing::TestDatabase, PgStore, OffsetDateTime) {
    let (db, store) = store().await;
    let now = OffsetDateTime::now_utc();
    back_dated_partition(&store, 2024, 1).await;
    back_dated_partition(&store, 2024, 2).await;
    let recent = now - Duration::days(62);
    back_dated_partition(&store, recent.year(), recent.month() as u8).await;
    let rows = vec![
        row(datetime!(2024-01-03 10:00 UTC), "jan-1"),
        row(datetime!(2024-01-17 11:00 UTC), "jan-2"),
        row(datetime!(2024-01-31 23:59:59 UTC), "jan-3"),
        row(datetime!(2024-02-01 00:00 UTC), "feb-1"),
        row(datetime!(2024-02-29 12:00 UTC), "feb-2"),
        row(recent, "recent-1"),
        row(now, "now-1"),
        row(now, "now-2"),
        row(datetime!(2023-05-05 05:05 UTC), "default-1"),
    ];
    store.insert_issuance_batch(&rows).await.unwrap();
    (db, store, now)
}

#[tokio::test]
async fn partitions_past_retention_are_dropped_and_the_rest_is_untouched() {
    let (_db, store, now) = seeded().await;
    let policy = RetentionPolicy {
        retention_days: 400,
        archive_dir: None,
    };
    let expired: Vec<_> = store
        .expired_partitions(&policy, now)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(expired, ["issuance_log_y2024m01", "issuance_log_y2024m02"]);

    let report = store.apply_retention(&policy, now).await.unwrap();
    let dropped: Vec<_> = report
        .dropped
        .iter()
        .map(|d| (d.partition.name.as_str(), d.rows))
        .collect();
    assert_eq!(
        dropped,
        [("issuance_log_y2024m01", 3), ("issuance_log_y2024m02", 2)]
    );
    assert!(!report.busy);
    assert_eq!(
        request_ids(&store).await,
        ["default-1", "now-1", "now-2", "recent-1"]
    );
    let left = partitions(&store).await;
    assert!(
        !left.iter().any(|p| p.starts_with("issuance_log_y2024")),
        "{left:?}"
    );
    // The tables are gone, not just detached.
    let leftover: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class WHERE relname LIKE 'issuance_log_y2024%'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(leftover, 0);

    // The change log keeps a row per drop, and is itself never trimmed.
    let changes = store.admin_changes(None, 100).await.unwrap();
    let drops: Vec<_> = changes
        .iter()
        .filter(|c| c.action == "drop_issuance_partition")
        .map(|c| (c.actor.as_str(), c.target.as_str()))
        .collect();
    assert_eq!(drops.len(), 2, "{changes:?}");
    assert!(drops.iter().all(|(actor, _)| *actor == "system:retention"));

    // A second run has nothing left to do.
    let again = store.apply_retention(&policy, now).await.unwrap();
    assert!(again.dropped.is_empty());
}

#[tokio::test]
async fn archived_partitions_are_complete_and_match_their_manifest() {
    let (_db, store, now) = seeded().await;
    let dir = scratch_dir("archive");
    let policy = RetentionPolicy {
        retention_days: 400,
        archive_dir: Some(dir.join("nested")),
    };
    let report = store.apply_retention(&policy, now).await.unwrap();
    assert_eq!(report.dropped.len(), 2);

    let jan = report.dropped[0].archive.as_ref().expect("archived");
    assert_eq!(jan.data, dir.join("nested/issuance_log_y2024m01.ndjson.gz"));
    let bytes = std::fs::read(&jan.data).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), jan.sha256);

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&jan.manifest).unwrap()).unwrap();
    assert_eq!(manifest["partition"], "issuance_log_y2024m01");
    assert_eq!(manifest["rows"], 3);
    assert_eq!(manifest["sha256"], jan.sha256);
    assert_eq!(manifest["bytes"], bytes.len());
    assert_eq!(manifest["file"], "issuance_log_y2024m01.ndjson.gz");
    assert_eq!(manifest["from"], "2024-01-01T00:00:00Z");
    assert_eq!(manifest["to"], "2024-02-01T00:00:00Z");

    // Every row, oldest first, in the JSON export's shape.
    let lines: Vec<serde_json::Value> =
        BufReader::new(flate2::read::GzDecoder::new(bytes.as_slice()))
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect();
    let ids: Vec<_> = lines.iter().map(|l| l["request_id"].clone()).collect();
    assert_eq!(ids, ["jan-1", "jan-2", "jan-3"]);
    assert_eq!(lines[0]["tmp_secret_id"], "AKIDtmp-jan-1");
    assert_eq!(lines[0]["at"], "2024-01-03T10:00:00Z");

    // Only the archived data was dropped; no temporary file was left behind.
    assert_eq!(
        request_ids(&store).await,
        ["default-1", "now-1", "now-2", "recent-1"]
    );
    let mut names: Vec<_> = std::fs::read_dir(dir.join("nested"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "issuance_log_y2024m01.manifest.json",
            "issuance_log_y2024m01.ndjson.gz",
            "issuance_log_y2024m02.manifest.json",
            "issuance_log_y2024m02.ndjson.gz",
        ]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

fn assert_archive_failed(result: Result<policy_store::RetentionReport, RetentionError>) {
    match result {
        Err(RetentionError::Archive { partition, .. }) => {
            assert_eq!(partition, "issuance_log_y2024m01")
        }
        other => panic!("expected an archive error, got {other:?}"),
    }
}

async fn assert_nothing_dropped(store: &PgStore) {
    assert_eq!(request_ids(store).await.len(), 9);
    let left = partitions(store).await;
    assert!(
        left.contains(&"issuance_log_y2024m01".to_owned()),
        "{left:?}"
    );
    assert!(
        left.contains(&"issuance_log_y2024m02".to_owned()),
        "{left:?}"
    );
}

fn no_temporary_files(dir: &Path) {
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[tokio::test]
async fn a_failed_archive_never_drops_data() {
    let (_db, store, now) = seeded().await;
    let dir = scratch_dir("failed");

    // The archive directory cannot be created: it would be under a regular file.
    std::fs::write(dir.join("a-file"), b"x").unwrap();
    let policy = RetentionPolicy {
        retention_days: 400,
        archive_dir: Some(dir.join("a-file/archive")),
    };
    assert_archive_failed(store.apply_retention(&policy, now).await);
    assert_nothing_dropped(&store).await;

    // The data file is written in full, then cannot be renamed into place (a directory holds
    // its name): the partition is kept and the temporary file removed.
    std::fs::create_dir_all(dir.join("archive/issuance_log_y2024m01.ndjson.gz/blocker")).unwrap();
    let policy = RetentionPolicy {
        retention_days: 400,
        archive_dir: Some(dir.join("archive")),
    };
    assert_archive_failed(store.apply_retention(&policy, now).await);
    assert_nothing_dropped(&store).await;
    no_temporary_files(&dir.join("archive"));

    // Once the archive can be written, the same run goes through.
    std::fs::remove_dir_all(dir.join("archive/issuance_log_y2024m01.ndjson.gz")).unwrap();
    let report = store.apply_retention(&policy, now).await.unwrap();
    assert_eq!(report.dropped.len(), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_run_already_in_progress_elsewhere_is_left_alone() {
    let (_db, store, now) = seeded().await;
    let mut other = store.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(RETENTION_LOCK_KEY)
        .execute(&mut *other)
        .await
        .unwrap();
    let policy = RetentionPolicy {
        retention_days: 400,
        archive_dir: None,
    };
    let report = store.apply_retention(&policy, now).await.unwrap();
    assert!(report.busy);
    assert!(report.dropped.is_empty());
    assert_nothing_dropped(&store).await;
    other.rollback().await.unwrap();
    assert_eq!(
        store
            .apply_retention(&policy, now)
            .await
            .unwrap()
            .dropped
            .len(),
        2
    );
}
