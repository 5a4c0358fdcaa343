//! Issuance-log insert benchmark (issue 10): how a batch of rows is best written to the real
//! partitioned `issuance_log`, with all its indexes, on a fresh database of the server
//! `DATABASE_URL` names (same URL and TLS settings as the tests: no sslmode, so TLS where the
//! server offers it). Prints figures; asserts nothing on speed.
//!
//! Variants, each committed and waited for like the audit writer's batches:
//! - `unnest`: `insert_issuance_batch` itself (INSERT … SELECT FROM UNNEST(19 arrays), alone in
//!   its implicit transaction);
//! - `unnest+tx`: the same statement in BEGIN/COMMIT, as it was written before this benchmark
//!   showed the two round trips buy nothing;
//! - `values`: one multi-row `INSERT … VALUES ($1,…,$19),($20,…)…`;
//! - `copy`: text `COPY issuance_log (…) FROM STDIN` through `copy_in_raw`.
//!
//! Each round runs every variant at every batch size for `STSGATE_BENCH_MS` (default 400) ms,
//! in an order that rotates from round to round, so drift on a shared machine hits all alike;
//! the tables show medians over `STSGATE_BENCH_ROUNDS` (default 5) rounds, and the commit floor
//! (one durable one-int commit: a round trip plus the WAL flush). A second part measures what
//! each secondary index costs per row: the WAL of today's insert attributed to the heap and each
//! index (pg_walinspect), then today's insert (batches of 512) timed with every index, with
//! each one dropped alone and with none, in this scratch database only. The current month's
//! partition is first filled with `STSGATE_BENCH_FILL` (default 1,000,000) rows, so its indexes
//! outgrow the buffer cache as a busy month's do (an empty table hides their cost).
//!
//! Run: `scripts/bench-insert` (or `cargo bench -p policy-store --bench insert`).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use policy_store::testing::{fresh_database, test_cipher};
use policy_store::{IssuanceRecord, IssuanceStore as _, Outcome, PgStore};
use sha2::{Digest as _, Sha256};
use sqlx::postgres::PgPoolCopyExt as _;
use sqlx::{AssertSqlSafe, PgPool, Postgres, QueryBuilder};
use time::OffsetDateTime;

const SIZES: [usize; 5] = [1, 8, 32, 128, 512];
const INDEX_BATCH: usize = 512;

const COLUMNS: &str = "at, app, subject, outcome, http_status, error_code, request_id, \
    sts_request_id, tmp_secret_id, policy_hash, template_version, actions, prefix, \
    duration_seconds, expired_time, source_ip, user_agent, latency_us, count";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    UnnestTx,
    Unnest,
    Values,
    Copy,
}

impl Variant {
    const ALL: [Variant; 4] = [
        Variant::UnnestTx,
        Variant::Unnest,
        Variant::Values,
        Variant::Copy,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::UnnestTx => "unnest in BEGIN/COMMIT",
            Variant::Unnest => "unnest (today)",
            Variant::Values => "multi-row VALUES",
            Variant::Copy => "COPY FROM STDIN (text)",
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A cache-hit row as the gateway writes it: realistic lengths, distinct ids.
fn row(n: u64) -> IssuanceRecord {
    let now = OffsetDateTime::now_utc();
    let subject = format!("user-{:015}", n % 100_000);
    // Temporary SecretIds and policy hashes are random: they land all over their indexes.
    let hash = |x: u64| hex::encode(Sha256::digest(x.to_le_bytes()));
    IssuanceRecord {
        id: 0,
        at: now,
        app: "mobile-prod".into(),
        prefix: Some(format!("users/{subject}/")),
        subject: Some(subject),
        outcome: Outcome::Cached,
        http_status: 200,
        error_code: None,
        request_id: format!("3f6c1d2e-8a4b-4c1e-9f00-{n:012x}"),
        sts_request_id: Some(format!("b1d4e0c2-77aa-4e51-8c3d-{:012x}", n / 7)),
        tmp_secret_id: Some(format!("AKID{}", hash(n))),
        policy_hash: Some(hash(u64::MAX - n / 7)),
        template_version: Some(3),
        actions: vec![
            "name/cos:GetObject".into(),
            "name/cos:PutObject".into(),
            "name/cos:HeadObject".into(),
            "name/cos:InitiateMultipartUpload".into(),
        ],
        duration_seconds: Some(1800),
        expired_time: Some(now + time::Duration::minutes(25)),
        source_ip: Some(format!("10.{}.{}.{}", n % 7, n % 251, n % 253)),
        user_agent: Some(
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) okhttp/4.12.0 cos-android-sdk/5.9.31".into(),
        ),
        latency_us: 180 + (n % 97) as i64,
        count: 1,
    }
}

/// Today's statement inside BEGIN/COMMIT (how `insert_issuance_batch` was written before).
async fn unnest_in_tx(pool: &PgPool, records: &[IssuanceRecord]) -> sqlx::Result<()> {
    let n = records.len();
    let mut at = Vec::with_capacity(n);
    let mut app = Vec::with_capacity(n);
    let mut subject = Vec::with_capacity(n);
    let mut outcome = Vec::with_capacity(n);
    let mut http_status = Vec::with_capacity(n);
    let mut error_code = Vec::with_capacity(n);
    let mut request_id = Vec::with_capacity(n);
    let mut sts_request_id = Vec::with_capacity(n);
    let mut tmp_secret_id = Vec::with_capacity(n);
    let mut policy_hash = Vec::with_capacity(n);
    let mut template_version = Vec::with_capacity(n);
    let mut actions = Vec::with_capacity(n);
    let mut prefix = Vec::with_capacity(n);
    let mut duration_seconds = Vec::with_capacity(n);
    let mut expired_time = Vec::with_capacity(n);
    let mut source_ip = Vec::with_capacity(n);
    let mut user_agent = Vec::with_capacity(n);
    let mut latency_us = Vec::with_capacity(n);
    let mut count = Vec::with_capacity(n);
    for r in records {
        at.push(r.at);
        app.push(r.app.clone());
        subject.push(r.subject.clone());
        outcome.push(r.outcome.as_str().to_owned());
        http_status.push(r.http_status);
        error_code.push(r.error_code.clone());
        request_id.push(r.request_id.clone());
        sts_request_id.push(r.sts_request_id.clone());
        tmp_secret_id.push(r.tmp_secret_id.clone());
        policy_hash.push(r.policy_hash.clone());
        template_version.push(r.template_version);
        actions.push(array_literal(&r.actions));
        prefix.push(r.prefix.clone());
        duration_seconds.push(r.duration_seconds);
        expired_time.push(r.expired_time);
        source_ip.push(r.source_ip.clone());
        user_agent.push(r.user_agent.clone());
        latency_us.push(r.latency_us);
        count.push(r.count.max(1));
    }
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO issuance_log (at, app, subject, outcome, http_status, error_code, \
           request_id, sts_request_id, tmp_secret_id, policy_hash, template_version, actions, \
           prefix, duration_seconds, expired_time, source_ip, user_agent, latency_us, count) \
         SELECT u.at, u.app, u.subject, u.outcome, u.http_status, u.error_code, \
           u.request_id, u.sts_request_id, u.tmp_secret_id, u.policy_hash, u.template_version, \
           u.actions::text[], \
           u.prefix, u.duration_seconds, u.expired_time, u.source_ip::inet, u.user_agent, \
           u.latency_us, u.count \
         FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::int2[], \
           $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::int4[], \
           $12::text[], $13::text[], $14::int4[], $15::timestamptz[], $16::text[], \
           $17::text[], $18::int8[], $19::int4[]) \
         AS u(at, app, subject, outcome, http_status, error_code, request_id, \
           sts_request_id, tmp_secret_id, policy_hash, template_version, actions, prefix, \
           duration_seconds, expired_time, source_ip, user_agent, latency_us, count)",
    )
    .bind(at)
    .bind(app)
    .bind(subject)
    .bind(outcome)
    .bind(http_status)
    .bind(error_code)
    .bind(request_id)
    .bind(sts_request_id)
    .bind(tmp_secret_id)
    .bind(policy_hash)
    .bind(template_version)
    .bind(actions)
    .bind(prefix)
    .bind(duration_seconds)
    .bind(expired_time)
    .bind(source_ip)
    .bind(user_agent)
    .bind(latency_us)
    .bind(count)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// One multi-row VALUES statement: 19 parameters a row (512 rows = 9,728 < 65,535).
async fn values(pool: &PgPool, records: &[IssuanceRecord]) -> sqlx::Result<()> {
    let mut qb: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("INSERT INTO issuance_log ({COLUMNS}) "));
    qb.push_values(records, |mut b, r| {
        b.push_bind(r.at)
            .push_bind(&r.app)
            .push_bind(&r.subject)
            .push_bind(r.outcome.as_str())
            .push_bind(r.http_status)
            .push_bind(&r.error_code)
            .push_bind(&r.request_id)
            .push_bind(&r.sts_request_id)
            .push_bind(&r.tmp_secret_id)
            .push_bind(&r.policy_hash)
            .push_bind(r.template_version)
            .push_bind(&r.actions)
            .push_bind(&r.prefix)
            .push_bind(r.duration_seconds)
            .push_bind(r.expired_time)
            .push_bind(&r.source_ip)
            .push_unseparated("::inet")
            .push_bind(&r.user_agent)
            .push_bind(r.latency_us)
            .push_bind(r.count.max(1));
    });
    qb.build().execute(pool).await?;
    Ok(())
}

/// Text `COPY … FROM STDIN`: one line a row, tab-separated, `\N` for NULL.
async fn copy(pool: &PgPool, records: &[IssuanceRecord]) -> sqlx::Result<()> {
    let mut data = String::with_capacity(records.len() * 512);
    for r in records {
        let fields: [Option<String>; 19] = [
            Some(timestamp(r.at)),
            Some(r.app.clone()),
            r.subject.clone(),
            Some(r.outcome.as_str().to_owned()),
            Some(r.http_status.to_string()),
            r.error_code.clone(),
            Some(r.request_id.clone()),
            r.sts_request_id.clone(),
            r.tmp_secret_id.clone(),
            r.policy_hash.clone(),
            r.template_version.map(|v| v.to_string()),
            Some(array_literal(&r.actions)),
            r.prefix.clone(),
            r.duration_seconds.map(|v| v.to_string()),
            r.expired_time.map(timestamp),
            r.source_ip.clone(),
            r.user_agent.clone(),
            Some(r.latency_us.to_string()),
            Some(r.count.max(1).to_string()),
        ];
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                data.push('\t');
            }
            match f {
                None => data.push_str("\\N"),
                Some(s) => copy_escape(&mut data, s),
            }
        }
        data.push('\n');
    }
    let mut copy = pool
        .copy_in_raw(&format!("COPY issuance_log ({COLUMNS}) FROM STDIN"))
        .await?;
    if let Err(e) = copy.send(data.as_bytes()).await {
        let _ = copy.abort("send failed").await;
        return Err(e);
    }
    copy.finish().await?;
    Ok(())
}

fn timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

fn copy_escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
}

/// `{"a","b"}` with `"` and `\` escaped (what the store sends).
fn array_literal(items: &[String]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

struct Bench {
    store: PgStore,
    pool: PgPool,
    next: u64,
    window: Duration,
}

/// One measurement: (rows per second, ms per batch).
#[derive(Clone, Copy)]
struct Figure {
    rows_per_s: f64,
    ms_per_batch: f64,
}

impl Bench {
    fn batch(&mut self, size: usize) -> Vec<IssuanceRecord> {
        (0..size)
            .map(|_| {
                self.next += 1;
                row(self.next)
            })
            .collect()
    }

    async fn write(&self, variant: Variant, rows: &[IssuanceRecord]) -> anyhow::Result<()> {
        match variant {
            Variant::UnnestTx => unnest_in_tx(&self.pool, rows).await?,
            Variant::Unnest => self.store.insert_issuance_batch(rows).await?,
            Variant::Values => values(&self.pool, rows).await?,
            Variant::Copy => copy(&self.pool, rows).await?,
        }
        Ok(())
    }

    async fn insert(&mut self, variant: Variant, size: usize) -> anyhow::Result<()> {
        let rows = self.batch(size);
        self.write(variant, &rows).await
    }

    /// Batches back to back for the window (at least three); the rows are built outside the
    /// timed part.
    async fn measure(&mut self, variant: Variant, size: usize) -> anyhow::Result<Figure> {
        let start = Instant::now();
        let mut spent = Duration::ZERO;
        let mut batches = 0u32;
        while batches < 3 || start.elapsed() < self.window {
            let rows = self.batch(size);
            let t = Instant::now();
            self.write(variant, &rows).await?;
            spent += t.elapsed();
            batches += 1;
        }
        let secs = spent.as_secs_f64();
        Ok(Figure {
            rows_per_s: (f64::from(batches) * size as f64) / secs,
            ms_per_batch: secs * 1000.0 / f64::from(batches),
        })
    }
}

/// `rows` cache-hit-like rows in the current month, generated by the server.
async fn prefill(pool: &PgPool, rows: u64) -> anyhow::Result<()> {
    let chunk = 100_000;
    let mut done = 0;
    while done < rows {
        let n = chunk.min(rows - done);
        sqlx::query(
            "INSERT INTO issuance_log (at, app, subject, outcome, http_status, request_id, \
               sts_request_id, tmp_secret_id, policy_hash, template_version, actions, prefix, \
               duration_seconds, expired_time, source_ip, user_agent, latency_us) \
             SELECT greatest(date_trunc('month', now()), now() - random() * interval '1 day'), \
               'mobile-prod', 'user-' || lpad((g % 100000)::text, 15, '0'), 'cached', 200, \
               md5(g::text)::uuid::text, md5((g / 7)::text)::uuid::text, \
               'AKID' || md5(g::text) || md5((g + 1)::text), \
               md5((g / 7)::text) || md5((g / 7 + 1)::text), 3, \
               '{name/cos:GetObject,name/cos:PutObject,name/cos:HeadObject,name/cos:ListParts}', \
               'users/user-' || lpad((g % 100000)::text, 15, '0') || '/', 1800, \
               now() + interval '25 minutes', \
               ('10.' || g % 7 || '.' || g % 251 || '.' || g % 253)::inet, \
               'Mozilla/5.0 (Linux; Android 14; Pixel 8) okhttp/4.12.0 cos-android-sdk/5.9.31', \
               180 + g % 97 \
             FROM generate_series($1::int8, $2::int8) AS g",
        )
        .bind(done as i64)
        .bind((done + n - 1) as i64)
        .execute(pool)
        .await?;
        done += n;
    }
    sqlx::query("VACUUM ANALYZE issuance_log")
        .execute(pool)
        .await?;
    Ok(())
}

/// Milliseconds per durable one-row commit: the round trip plus the WAL flush.
async fn commit_floor(pool: &PgPool, window: Duration) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut commits = 0u32;
    while commits < 3 || start.elapsed() < window {
        sqlx::query("INSERT INTO bench_floor VALUES (1)")
            .execute(pool)
            .await?;
        commits += 1;
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0 / f64::from(commits))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let rounds = env_u64("STSGATE_BENCH_ROUNDS", 5).max(1) as usize;
    let window = Duration::from_millis(env_u64("STSGATE_BENCH_MS", 400));
    let db = fresh_database().await?;
    let pool = db.pool.clone();
    let (ssl, version): (bool, String) = sqlx::query_as(
        "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false), \
                current_setting('server_version')",
    )
    .fetch_one(&pool)
    .await?;
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&pool)
        .await?;
    println!(
        "issuance_log insert benchmark: PostgreSQL {version}, TLS {}, synchronous_commit={sync}, \
         {rounds} rounds of {} ms per variant and batch size",
        if ssl { "on" } else { "off" },
        window.as_millis()
    );
    let mut bench = Bench {
        store: PgStore::new(pool.clone(), test_cipher()),
        pool: pool.clone(),
        next: 0,
        window,
    };

    // The hot partition as a busy month leaves it: its indexes larger than the buffer cache.
    let fill = env_u64("STSGATE_BENCH_FILL", 1_000_000);
    let t = Instant::now();
    prefill(&pool, fill).await?;
    println!(
        "prefilled the current month's partition with {fill} rows in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Every variant writes the same rows: one batch written by each reads back identically.
    let sample = bench.batch(8);
    for v in Variant::ALL {
        bench.write(v, &sample).await?;
    }
    let (written, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (at, app, subject, outcome, http_status, error_code, \
           request_id, sts_request_id, tmp_secret_id, policy_hash, template_version, actions, \
           prefix, duration_seconds, expired_time, source_ip, user_agent, latency_us, count)) \
         FROM issuance_log WHERE request_id LIKE '3f6c1d2e-%'",
    )
    .fetch_one(&pool)
    .await?;
    anyhow::ensure!(
        written == 32 && distinct == 8,
        "4 variants x 8 rows should give 8 distinct rows, got {written} rows, {distinct} distinct"
    );

    // Warm-up: connections, statement caches, the partition's pages.
    for v in Variant::ALL {
        for size in SIZES {
            bench.insert(v, size).await?;
        }
    }

    // The floor under every batch: one durable commit of one int into an unindexed table.
    sqlx::query("CREATE TABLE bench_floor (x int)")
        .execute(&pool)
        .await?;
    let mut floor = Vec::new();
    let mut figures: Vec<Vec<Vec<Figure>>> =
        vec![vec![Vec::new(); SIZES.len()]; Variant::ALL.len()];
    for round in 0..rounds {
        floor.push(commit_floor(&pool, window).await?);
        for (si, size) in SIZES.into_iter().enumerate() {
            for k in 0..Variant::ALL.len() {
                let vi = (k + round + si) % Variant::ALL.len();
                let f = bench.measure(Variant::ALL[vi], size).await?;
                figures[vi][si].push(f);
            }
        }
        eprintln!("round {}/{rounds} done", round + 1);
    }

    let mut out = String::new();
    writeln!(
        out,
        "\nrows/s (median) and ms per batch (median); ratio = rows/s against unnest in BEGIN/COMMIT"
    )?;
    write!(out, "{:<26}", "variant \\ batch")?;
    for size in SIZES {
        write!(out, "{:>24}", size)?;
    }
    writeln!(out)?;
    let base: Vec<f64> = (0..SIZES.len())
        .map(|si| median(figures[0][si].iter().map(|f| f.rows_per_s).collect()))
        .collect();
    for (vi, v) in Variant::ALL.into_iter().enumerate() {
        write!(out, "{:<26}", v.name())?;
        for si in 0..SIZES.len() {
            let rps = median(figures[vi][si].iter().map(|f| f.rows_per_s).collect());
            let ms = median(figures[vi][si].iter().map(|f| f.ms_per_batch).collect());
            write!(
                out,
                "{:>24}",
                format!("{rps:.0} {ms:.2}ms x{:.2}", rps / base[si])
            )?;
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "commit floor (a one-int row into an unindexed table, waited for): {:.2} ms",
        median(floor)
    )?;
    println!("{out}");

    wal_per_relation(&mut bench).await?;
    index_costs(&mut bench, rounds).await?;
    drop(bench);
    pool.close().await;
    db.drop_database().await?;
    Ok(())
}

/// WAL written per row by today's insert, attributed to the heap and to each index through
/// pg_walinspect (PostgreSQL 15+; skipped when the extension is missing), on the prefilled
/// table with every index: 20 batches of [`INDEX_BATCH`] after a checkpoint.
async fn wal_per_relation(bench: &mut Bench) -> anyhow::Result<()> {
    let pool = bench.pool.clone();
    if let Err(e) = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        .execute(&pool)
        .await
    {
        println!("WAL per relation: skipped (pg_walinspect: {e})");
        return Ok(());
    }
    let batches = 20;
    sqlx::query("CHECKPOINT").execute(&pool).await?;
    let start: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&pool)
        .await?;
    for _ in 0..batches {
        bench.insert(Variant::UnnestTx, INDEX_BATCH).await?;
    }
    let end: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&pool)
        .await?;
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "WITH w AS ( \
           SELECT substring(block_ref FROM 'rel [0-9]+/([0-9]+)/')::oid AS db, \
             substring(block_ref FROM 'rel [0-9]+/[0-9]+/([0-9]+)')::oid AS node, \
             record_length, fpi_length \
           FROM pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn)) \
         SELECT coalesce(c.relname::text, '(other relation)'), \
           count(*)::int8, sum(w.record_length)::int8, sum(w.fpi_length)::int8 \
         FROM w LEFT JOIN pg_class c ON c.relfilenode = w.node AND c.relfilenode <> 0 \
         WHERE w.db = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         GROUP BY 1 ORDER BY 3 DESC",
    )
    .bind(&start)
    .bind(&end)
    .fetch_all(&pool)
    .await?;
    let n = (batches * INDEX_BATCH) as f64;
    let total: i64 = rows.iter().map(|r| r.2).sum();
    println!(
        "WAL per row, today's insert, {batches} batches of {INDEX_BATCH} right after a checkpoint \
         (pg_walinspect): {:.0} bytes/row in all",
        total as f64 / n
    );
    for (rel, records, bytes, fpi) in rows {
        println!(
            "  {rel:<44} {:>8.0} bytes/row ({:>5.0} of them full-page images) {:>6.2} records/row",
            bytes as f64 / n,
            fpi as f64 / n,
            records as f64 / n
        );
    }
    Ok(())
}

/// The same insert (today's, batches of [`INDEX_BATCH`]) with every secondary index of
/// `issuance_log`, with each one dropped alone, and with none. The configurations alternate
/// within each round, on the prefilled table (dropped indexes are rebuilt after each).
async fn index_costs(bench: &mut Bench, rounds: usize) -> anyhow::Result<()> {
    let pool = bench.pool.clone();
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_indexdef(i.indexrelid) FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = 'issuance_log'::regclass AND NOT i.indisprimary ORDER BY c.relname",
    )
    .fetch_all(&pool)
    .await?;
    let n = indexes.len();
    // Configuration k < n: index k dropped; n: none dropped; n + 1: all dropped.
    let dropped = |config: usize| -> Vec<usize> {
        match config {
            k if k < n => vec![k],
            k if k == n => vec![],
            _ => (0..n).collect(),
        }
    };
    let mut figures: Vec<Vec<Figure>> = vec![Vec::new(); n + 2];
    for round in 0..rounds {
        for j in 0..n + 2 {
            let config = (j + round) % (n + 2);
            for &k in &dropped(config) {
                let name = &indexes[k].0;
                sqlx::query(AssertSqlSafe(format!("DROP INDEX \"{name}\"")))
                    .execute(&pool)
                    .await?;
            }
            // Every configuration starts right after a checkpoint, so each pays the same full-page
            // writes: the first change to a page after a checkpoint logs the whole page.
            sqlx::query("CHECKPOINT").execute(&pool).await?;
            bench.insert(Variant::UnnestTx, INDEX_BATCH).await?;
            figures[config].push(bench.measure(Variant::UnnestTx, INDEX_BATCH).await?);
            for &k in &dropped(config) {
                sqlx::query(AssertSqlSafe(indexes[k].1.clone()))
                    .execute(&pool)
                    .await?;
            }
            // The rebuild's pages are flushed before the next configuration's checkpoint.
            sqlx::query("CHECKPOINT").execute(&pool).await?;
        }
        eprintln!("index round {}/{rounds} done", round + 1);
    }
    let rows_per_s = |f: &[Figure]| median(f.iter().map(|f| f.rows_per_s).collect());
    let us_per_row = |f: &[Figure]| {
        median(
            f.iter()
                .map(|f| f.ms_per_batch * 1000.0 / INDEX_BATCH as f64)
                .collect(),
        )
    };
    let all = us_per_row(&figures[n]);
    println!(
        "index cost: unnest+tx, batches of {INDEX_BATCH}, configurations alternating \
         (medians; µs/row = ms per batch / rows)"
    );
    println!(
        "  {:<44} {:>8.0} rows/s {:>7.2} µs/row",
        "every index (as migrated)",
        rows_per_s(&figures[n]),
        all
    );
    for (k, (name, _)) in indexes.iter().enumerate() {
        let without = us_per_row(&figures[k]);
        println!(
            "  {:<44} {:>8.0} rows/s {:>7.2} µs/row  (the index costs {:+.2} µs/row)",
            format!("without {name}"),
            rows_per_s(&figures[k]),
            without,
            all - without
        );
    }
    let none = us_per_row(&figures[n + 1]);
    println!(
        "  {:<44} {:>8.0} rows/s {:>7.2} µs/row  (all {n} cost {:+.2} µs/row)",
        "no secondary index (primary key only)",
        rows_per_s(&figures[n + 1]),
        none,
        all - none
    );
    Ok(())
}
