//! Issuance-log retention: whole monthly partitions past `retention_days` are archived (when
//! an archive directory is set) and then detached and dropped. Rows are never deleted one by
//! one, the default partition is never touched, and the change log (`admin_audit`) is kept.
//!
//! A partition is archived and dropped in one transaction that holds an advisory lock, so
//! replicas running the daily job at the same moment never do it twice, and a partition is
//! only dropped after its archive file and manifest are on disk (written under a temporary
//! name, synced, renamed). A failed archive rolls the transaction back and keeps the data.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt as _;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::AssertSqlSafe;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

use super::issuance::{issuance_columns, issuance_from_row};
use super::{PgStore, audit};
use crate::error::{DbResult as _, StoreError};

/// Who retention's change-log rows name.
const ACTOR: &str = "system:retention";

/// The transaction-scoped advisory lock a retention step holds ('STSGRETN'), so replicas
/// running the daily job at once never archive or drop the same partition twice.
pub const RETENTION_LOCK_KEY: i64 = 0x5354_5347_5245_544e;

/// Rows handed to the archive writer at once.
const CHUNK_ROWS: usize = 1000;

/// What to keep, and where dropped data goes first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Partitions whose whole month ended more than this many days ago are dropped.
    pub retention_days: u32,
    /// When set, each partition is first written there as gzip NDJSON with a manifest.
    pub archive_dir: Option<PathBuf>,
}

/// A monthly partition of `issuance_log`: `[from, to)` in UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthlyPartition {
    pub name: String,
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
}

impl MonthlyPartition {
    /// Parses the names `stsgate_ensure_issuance_partitions` gives: `issuance_log_yYYYYmMM`.
    pub fn from_name(name: &str) -> Option<Self> {
        let rest = name.strip_prefix("issuance_log_y")?;
        let (year, month) = rest.split_once('m')?;
        if year.len() != 4 || month.len() != 2 {
            return None;
        }
        let year: i32 = year.parse().ok()?;
        let month = Month::try_from(month.parse::<u8>().ok()?).ok()?;
        let first = Date::from_calendar_date(year, month, 1).ok()?;
        let next = match month {
            Month::December => Date::from_calendar_date(year + 1, Month::January, 1).ok()?,
            m => Date::from_calendar_date(year, m.next(), 1).ok()?,
        };
        let midnight = |d: Date| PrimitiveDateTime::new(d, Time::MIDNIGHT).assume_utc();
        Some(Self {
            name: name.to_owned(),
            from: midnight(first),
            to: midnight(next),
        })
    }
}

/// What one retention run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Partitions dropped, with their archive when one was written.
    pub dropped: Vec<DroppedPartition>,
    /// Another replica held the retention lock, so this run did nothing.
    pub busy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedPartition {
    pub partition: MonthlyPartition,
    pub rows: u64,
    pub archive: Option<ArchiveFiles>,
}

/// The files an archived partition left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveFiles {
    /// `<partition>.ndjson.gz`: one issuance-log row per line (the JSON export's shape),
    /// oldest first.
    pub data: PathBuf,
    /// `<partition>.manifest.json`: the data file's SHA-256, size, row count and range.
    pub manifest: PathBuf,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The partition was kept: nothing is dropped without its archive.
    #[error("archiving {partition} to {dir}: {source} (the partition was kept)")]
    Archive {
        partition: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<sqlx::Error> for RetentionError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(crate::DatabaseError::from_sqlx(&e)))
    }
}

#[derive(Serialize)]
struct Manifest<'a> {
    partition: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    to: OffsetDateTime,
    rows: u64,
    file: &'a str,
    bytes: u64,
    sha256: &'a str,
    format: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    archived_at: OffsetDateTime,
}

impl PgStore {
    /// The monthly partitions of `issuance_log`, oldest first.
    pub async fn issuance_partitions(&self) -> Result<Vec<MonthlyPartition>, StoreError> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'issuance_log'::regclass",
        )
        .fetch_all(&self.pool)
        .await
        .db()?;
        let mut parts: Vec<_> = names
            .iter()
            .filter_map(|n| MonthlyPartition::from_name(n))
            .collect();
        parts.sort_by_key(|p| p.from);
        Ok(parts)
    }

    /// The partitions `policy` would drop at `now`: those whose month ended more than
    /// `retention_days` before it.
    pub async fn expired_partitions(
        &self,
        policy: &RetentionPolicy,
        now: OffsetDateTime,
    ) -> Result<Vec<MonthlyPartition>, StoreError> {
        let cutoff = now - time::Duration::days(i64::from(policy.retention_days));
        let mut parts = self.issuance_partitions().await?;
        parts.retain(|p| p.to <= cutoff);
        Ok(parts)
    }

    /// Archives (when `policy.archive_dir` is set) and drops every expired partition, oldest
    /// first. Stops at the first failure: what was dropped before it is in the report's log
    /// lines and change log, what comes after is left for the next run.
    pub async fn apply_retention(
        &self,
        policy: &RetentionPolicy,
        now: OffsetDateTime,
    ) -> Result<RetentionReport, RetentionError> {
        let mut report = RetentionReport::default();
        for partition in self.expired_partitions(policy, now).await? {
            match self
                .retire(&partition, policy.archive_dir.as_deref())
                .await?
            {
                Some(dropped) => report.dropped.push(dropped),
                None => {
                    report.busy = true;
                    break;
                }
            }
        }
        Ok(report)
    }

    /// Archives and drops one partition in one transaction. `None` when another replica holds
    /// the retention lock.
    async fn retire(
        &self,
        partition: &MonthlyPartition,
        archive_dir: Option<&Path>,
    ) -> Result<Option<DroppedPartition>, RetentionError> {
        let mut tx = self.pool.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(RETENTION_LOCK_KEY)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(None);
        }
        // Reading a month of rows can take longer than the pool's statement timeout, and the
        // archive's fsync leaves the session idle in this transaction for a moment.
        sqlx::query("SET LOCAL statement_timeout = 0")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SET LOCAL idle_in_transaction_session_timeout = 0")
            .execute(&mut *tx)
            .await?;
        let still_there: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'issuance_log'::regclass AND c.relname = $1)",
        )
        .bind(&partition.name)
        .fetch_one(&mut *tx)
        .await?;
        if !still_there {
            // Dropped by another replica between the listing and the lock.
            return Ok(Some(DroppedPartition {
                partition: partition.clone(),
                rows: 0,
                archive: None,
            }));
        }
        // The name came from pg_class and parsed as issuance_log_yYYYYmMM: safe to splice.
        let table = format!("\"{}\"", partition.name);
        let (rows, archive) = match archive_dir {
            Some(dir) => {
                let (rows, files) = archive(&mut tx, partition, &table, dir).await?;
                (rows, Some(files))
            }
            None => {
                let rows: i64 =
                    sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                        .fetch_one(&mut *tx)
                        .await?;
                (rows as u64, None)
            }
        };
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE issuance_log DETACH PARTITION {table}"
        )))
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!("DROP TABLE {table}")))
            .execute(&mut *tx)
            .await?;
        let after = serde_json::json!({
            "rows": rows,
            "from": partition.from.to_string(),
            "to": partition.to.to_string(),
            "archive": archive.as_ref().map(|a| serde_json::json!({
                "file": a.data.display().to_string(),
                "sha256": a.sha256,
            })),
        });
        audit(
            &mut tx,
            ACTOR,
            "drop_issuance_partition",
            &partition.name,
            None,
            Some(after),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            partition = %partition.name,
            rows,
            archived = archive.is_some(),
            "issuance-log partition past retention dropped"
        );
        Ok(Some(DroppedPartition {
            partition: partition.clone(),
            rows,
            archive,
        }))
    }
}

/// Streams the partition, oldest first, into `<dir>/<name>.ndjson.gz` and writes its
/// manifest. Files appear under their final names only when complete and synced.
async fn archive(
    tx: &mut sqlx::PgConnection,
    partition: &MonthlyPartition,
    table: &str,
    dir: &Path,
) -> Result<(u64, ArchiveFiles), RetentionError> {
    let fail = |source: std::io::Error| RetentionError::Archive {
        partition: partition.name.clone(),
        dir: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let data = dir.join(format!("{}.ndjson.gz", partition.name));
    let (chunks, received) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let writer = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || write_gzip(&data, received))
    };
    let sql = format!(
        concat!("SELECT ", issuance_columns!(), " FROM {} ORDER BY at, id"),
        table
    );
    let mut rows = 0u64;
    let mut chunk = Vec::new();
    let mut stream = sqlx::query(AssertSqlSafe(sql)).fetch(&mut *tx);
    let streamed: Result<(), RetentionError> = async {
        while let Some(row) = stream.try_next().await? {
            let record = issuance_from_row(&row)?;
            serde_json::to_writer(&mut chunk, &record).expect("records serialize");
            chunk.push(b'\n');
            rows += 1;
            if rows.is_multiple_of(CHUNK_ROWS as u64)
                && chunks.send(std::mem::take(&mut chunk)).await.is_err()
            {
                break; // the writer failed; its error is reported below
            }
        }
        if !chunk.is_empty() {
            let _ = chunks.send(chunk).await;
        }
        Ok(())
    }
    .await;
    drop(stream);
    drop(chunks);
    let written = writer.await.map_err(|e| fail(std::io::Error::other(e)))?;
    streamed?;
    let (bytes, sha256) = written.map_err(fail)?;
    let manifest_path = dir.join(format!("{}.manifest.json", partition.name));
    let manifest = Manifest {
        partition: &partition.name,
        from: partition.from,
        to: partition.to,
        rows,
        file: data
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default(),
        bytes,
        sha256: &sha256,
        format: "gzip of NDJSON: one issuance-log row per line, oldest first",
        archived_at: OffsetDateTime::now_utc(),
    };
    let mut body = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    body.push(b'\n');
    let path = manifest_path.clone();
    tokio::task::spawn_blocking(move || write_atomically(&path, |f| f.write_all(&body)))
        .await
        .map_err(|e| fail(std::io::Error::other(e)))?
        .map_err(fail)?;
    Ok((
        rows,
        ArchiveFiles {
            data,
            manifest: manifest_path,
            sha256,
        },
    ))
}

/// Writes the chunks gzip-compressed to `path` and returns the file's size and SHA-256.
fn write_gzip(
    path: &Path,
    mut chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<(u64, String)> {
    let mut digest = None;
    write_atomically(path, |file| {
        let mut gz =
            flate2::write::GzEncoder::new(HashingWriter::new(file), flate2::Compression::default());
        while let Some(chunk) = chunks.blocking_recv() {
            gz.write_all(&chunk)?;
        }
        let hashing = gz.finish()?;
        digest = Some((hashing.bytes, hex::encode(hashing.hash.finalize())));
        Ok(())
    })?;
    Ok(digest.expect("set when the write succeeded"))
}

/// Creates `path` under a temporary name (create-new, mode 0600), lets `fill` write it,
/// syncs it, renames it into place and syncs the directory. On failure the temporary file
/// is removed and `path` is untouched.
fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::other("archive file name"))?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = (|| {
        let mut file = options.open(&tmp)?;
        fill(&mut file)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Passes bytes through to a file while hashing and counting them.
struct HashingWriter<'a> {
    file: &'a mut std::fs::File,
    hash: Sha256,
    bytes: u64,
}

impl<'a> HashingWriter<'a> {
    fn new(file: &'a mut std::fs::File) -> Self {
        Self {
            file,
            hash: Sha256::new(),
            bytes: 0,
        }
    }
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn partition_names_parse_to_their_month() {
        let p = MonthlyPartition::from_name("issuance_log_y2025m12").unwrap();
        assert_eq!(p.from, datetime!(2025-12-01 0:00 UTC));
        assert_eq!(p.to, datetime!(2026-01-01 0:00 UTC));
        let p = MonthlyPartition::from_name("issuance_log_y2026m02").unwrap();
        assert_eq!(p.to, datetime!(2026-03-01 0:00 UTC));
        for other in [
            "issuance_log_default",
            "issuance_log_y2026m13",
            "issuance_log_y26m01",
            "issuance_log_y2026m1",
            "other_y2026m01",
        ] {
            assert_eq!(MonthlyPartition::from_name(other), None, "{other}");
        }
    }
}
