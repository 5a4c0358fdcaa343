//! Issuance-log insert benchmark (issue 10): how a batch of rows is best written to the real
//! partitioned `issuance_log`, with all its indexes, on a fresh database of the server
//! `DATABASE_URL` names (same URL and TLS settings as the tests: no sslmode, so TLS where the
//! server offers it). Prints figures; asserts nothing on speed.
//!
//! Variants, each committed and waited for like the audit writer's batches:
//! - `unnest+tx`: `insert_issuance_batch` itself (BEGIN; INSERT … SELECT FROM UNNEST(19 arrays); COMMIT);
//! - `unnest`: the same statement alone, in its implicit transaction (two round trips fewer);
//! - `values`: one multi-row `INSERT … VALUES ($1,…,$19),($20,…)…`;
//! - `copy`: text `COPY issuance_log (…) FROM STDIN` through `copy_in_raw`.
//!
//! Each round runs every variant at every batch size for `STSGATE_BENCH_MS` (default 400) ms,
//! in an order that rotates from round to round, so drift on a shared machine hits all alike;
//! the tables show medians over `STSGATE_BENCH_ROUNDS` (default 5) rounds. A second part
//! measures what each secondary index costs per row: the same insert (batches of 128) with the
//! indexes dropped one by one, in this scratch database only.
//!
//! Run: `scripts/bench-insert` (or `cargo bench -p policy-store --bench insert`).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use policy_store::testing::{fresh_database, test_cipher};
use policy_store::{IssuanceRecord, IssuanceStore as _, Outcome, PgStore};
use sqlx::postgres::PgPoolCopyExt as _;
use sqlx::{AssertSqlSafe, PgPool, Postgres, QueryBuilder};
use time::OffsetDateTime;

const SIZES: [usize; 5] = [1, 8, 32, 128, 512];
const INDEX_BATCH: usize = 128;

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
            Variant::UnnestTx => "unnest+tx (today)",
            Variant::Unnest => "unnest, no BEGIN/COMMIT",
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
    let subject = format!("user-{:015}", n % 1000);
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
        tmp_secret_id: Some(format!("AKID{:064x}", u128::from(n).wrapping_mul(0x9e37_79b9))),
        policy_hash: Some(format!("{:064x}", u128::from(n / 7).wrapping_mul(0x85eb_ca6b))),
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

async fn unnest_no_tx(pool: &PgPool, records: &[IssuanceRecord]) -> sqlx::Result<()> {
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
    .execute(pool)
    .await?;
    Ok(())
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
            Variant::UnnestTx => self.store.insert_issuance_batch(rows).await?,
            Variant::Unnest => unnest_no_tx(&self.pool, rows).await?,
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

async fn row_count(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM issuance_log")
        .fetch_one(pool)
        .await?)
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

    // Every variant writes the same rows: check one batch of each reads back identically.
    for v in Variant::ALL {
        bench.insert(v, 8).await?;
    }
    let distinct: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT (app, subject, outcome, http_status, error_code, \
           tmp_secret_id IS NULL, template_version, actions, prefix, duration_seconds, \
           user_agent, count)) FROM issuance_log",
    )
    .fetch_one(&pool)
    .await?;
    anyhow::ensure!(row_count(&pool).await? == 32, "each variant wrote its 8 rows");
    println!("all variants wrote the same row shape ({distinct} distinct shapes)");

    // Warm-up: connections, statement caches, the partition's pages.
    for v in Variant::ALL {
        for size in SIZES {
            bench.insert(v, size).await?;
        }
    }

    let mut figures: Vec<Vec<Vec<Figure>>> =
        vec![vec![Vec::new(); SIZES.len()]; Variant::ALL.len()];
    for round in 0..rounds {
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
        "\nrows/s (median) and ms per batch (median); ratio = rows/s against unnest+tx"
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
    println!("{out}");

    index_costs(&mut bench, rounds).await?;
    drop(bench);
    pool.close().await;
    db.drop_database().await?;
    Ok(())
}

/// The same insert (today's, batches of [`INDEX_BATCH`]) with the secondary indexes of
/// `issuance_log` dropped one after another; the table is emptied each round so every step
/// starts from the same size.
async fn index_costs(bench: &mut Bench, rounds: usize) -> anyhow::Result<()> {
    let pool = bench.pool.clone();
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_indexdef(i.indexrelid) FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = 'issuance_log'::regclass AND NOT i.indisprimary ORDER BY c.relname",
    )
    .fetch_all(&pool)
    .await?;
    // steps[0]: every index; steps[k]: the first k dropped.
    let mut steps: Vec<Vec<Figure>> = vec![Vec::new(); indexes.len() + 1];
    for round in 0..rounds {
        sqlx::query("TRUNCATE issuance_log").execute(&pool).await?;
        for _ in 0..20 {
            bench.insert(Variant::UnnestTx, INDEX_BATCH).await?;
        }
        steps[0].push(bench.measure(Variant::UnnestTx, INDEX_BATCH).await?);
        for (k, (name, _)) in indexes.iter().enumerate() {
            sqlx::query(AssertSqlSafe(format!("DROP INDEX \"{name}\"")))
                .execute(&pool)
                .await?;
            steps[k + 1].push(bench.measure(Variant::UnnestTx, INDEX_BATCH).await?);
        }
        sqlx::query("TRUNCATE issuance_log").execute(&pool).await?;
        for (_, def) in &indexes {
            sqlx::query(AssertSqlSafe(def.clone())).execute(&pool).await?;
        }
        eprintln!("index round {}/{rounds} done", round + 1);
    }
    let per_row_us = |f: &[Figure]| {
        median(
            f.iter()
                .map(|f| f.ms_per_batch * 1000.0 / INDEX_BATCH as f64)
                .collect(),
        )
    };
    println!(
        "index cost, unnest+tx, batches of {INDEX_BATCH} (medians; µs per row = ms per batch / rows)"
    );
    let all = per_row_us(&steps[0]);
    println!(
        "  {:<44} {:>8.0} rows/s {:>7.2} µs/row",
        "all indexes",
        median(steps[0].iter().map(|f| f.rows_per_s).collect()),
        all
    );
    for (k, (name, _)) in indexes.iter().enumerate() {
        let before = per_row_us(&steps[k]);
        let after = per_row_us(&steps[k + 1]);
        println!(
            "  {:<44} {:>8.0} rows/s {:>7.2} µs/row  (this index: {:+.2} µs/row)",
            format!("- {name}"),
            median(steps[k + 1].iter().map(|f| f.rows_per_s).collect()),
            after,
            before - after
        );
    }
    println!(
        "  all secondary indexes together: {:.2} µs/row of {all:.2}",
        all - per_row_us(&steps[indexes.len()])
    );
    Ok(())
}
