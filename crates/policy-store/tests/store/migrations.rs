use policy_store::migrate;
use policy_store::testing::fresh_database;

#[tokio::test]
async fn migrations_apply_once_and_are_idempotent() {
    let db = fresh_database().await.unwrap();
    // fresh_database already migrated: nothing left to apply, twice over.
    assert!(migrate::run(&db.url).await.unwrap().is_empty());
    assert!(migrate::run(&db.url).await.unwrap().is_empty());
    assert_eq!(
        migrate::embedded_migrations(),
        [
            "V1__init",
            "V2__admin",
            "V4__admin_ux",
            "V5__sign_in_admission",
            "V6__issuance_count",
            "V7__cluster",
            "V8__app_allowed_origins",
            "V10__api_tokens",
            "V11__issuance_rollup",
            "V12__rollup_watermark"
        ]
    );

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for t in [
        "admin_audit",
        "admin_sessions",
        "admin_sign_in_decoy",
        "admin_users",
        "api_tokens",
        "app_auth",
        "apps",
        "blocked_subjects",
        "cluster_members",
        "issuance_log_default",
        "policy_templates",
        "refinery_schema_history",
        "shared_credentials",
        "sts_budget",
    ] {
        assert!(tables.contains(&t.to_owned()), "missing {t}: {tables:?}");
    }
    // The current month and three ahead exist as partitions.
    let parts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'issuance_log'::regclass AND c.relname ~ '^issuance_log_y[0-9]{4}m[0-9]{2}$'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(parts, 4);
    let history: i64 = sqlx::query_scalar("SELECT count(*) FROM refinery_schema_history")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(history, migrate::embedded_migrations().len() as i64);
}

#[tokio::test]
async fn concurrent_runs_are_serialised_by_the_advisory_lock() {
    let db = fresh_database().await.unwrap();
    // A second, empty database migrated from two tasks at once.
    let mut admin = db.pool.acquire().await.unwrap();
    let name = format!("{}_c", db.name);
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut *admin)
        .await
        .unwrap();
    let url = db.url.replace(&db.name, &name);
    let (a, b) = tokio::join!(
        tokio::spawn({
            let url = url.clone();
            async move { migrate::run(&url).await }
        }),
        tokio::spawn({
            let url = url.clone();
            async move { migrate::run(&url).await }
        }),
    );
    let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
    // Exactly one of them applied the migrations; the other waited and found nothing to do.
    let mut applied = [a, b].concat();
    applied.sort_by_key(|name| name[1..name.find("__").unwrap()].parse::<u32>().unwrap());
    assert_eq!(applied, migrate::embedded_migrations());

    let pool = migrate::connect_pool(&url, 1).await.unwrap();
    let history: i64 = sqlx::query_scalar("SELECT count(*) FROM refinery_schema_history")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(history, migrate::embedded_migrations().len() as i64);
    pool.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut *admin)
    .await
    .unwrap();
}

#[tokio::test]
async fn partitions_are_ensured_idempotently() {
    let (db, store) = super::store().await;
    assert_eq!(store.ensure_partitions(3).await.unwrap(), 0);
    assert_eq!(store.ensure_partitions(5).await.unwrap(), 2);
    assert_eq!(store.ensure_partitions(5).await.unwrap(), 0);
    assert!(store.ensure_partitions(-1).await.is_err());
    drop(db);
}

/// `check_schema` (apply, export) never migrates: it refuses a database behind or ahead of
/// the binary's migrations, and one that was never migrated.
#[tokio::test]
async fn the_schema_check_refuses_a_database_behind_or_ahead_and_changes_nothing() {
    use policy_store::migrate::{MigrateOptions, SchemaError, check_schema};

    let db = fresh_database().await.unwrap();
    let options = MigrateOptions::default();
    check_schema(&db.url, &options).await.unwrap();
    let kind = |e: anyhow::Error| match e.downcast::<SchemaError>() {
        Ok(e) => e,
        Err(e) => panic!("not a SchemaError: {e:#}"),
    };
    let history = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM refinery_schema_history")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };

    // Behind: the last migration is not recorded (as if this binary were newer).
    let last = migrate::embedded_migrations().pop().unwrap();
    let version: i32 = last[1..last.find("__").unwrap()].parse().unwrap();
    let row: (i32, String, String, String) = sqlx::query_as(
        "DELETE FROM refinery_schema_history WHERE version = $1 \
         RETURNING version, name, applied_on, checksum",
    )
    .bind(version)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let before = history().await;
    let err = kind(check_schema(&db.url, &options).await.unwrap_err());
    assert!(
        matches!(&err, SchemaError::Behind(m) if *m == [last.clone()]),
        "{err}"
    );
    assert!(err.to_string().contains("run `stsgate migrate`"), "{err}");
    assert_eq!(history().await, before, "nothing was migrated");
    sqlx::query(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(row.0)
    .bind(&row.1)
    .bind(&row.2)
    .bind(&row.3)
    .execute(&db.pool)
    .await
    .unwrap();
    check_schema(&db.url, &options).await.unwrap();

    // Ahead: a migration this binary does not know.
    sqlx::query(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
         VALUES (9999, 'from_the_future', $1, '1')",
    )
    .bind(&row.2)
    .execute(&db.pool)
    .await
    .unwrap();
    let err = kind(check_schema(&db.url, &options).await.unwrap_err());
    assert!(
        matches!(&err, SchemaError::Ahead(m) if *m == ["V9999__from_the_future"]),
        "{err}"
    );

    // Never migrated.
    sqlx::query("DROP TABLE refinery_schema_history")
        .execute(&db.pool)
        .await
        .unwrap();
    let err = kind(check_schema(&db.url, &options).await.unwrap_err());
    assert!(matches!(err, SchemaError::Unmigrated), "{err}");
}
