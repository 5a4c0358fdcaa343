//! `stsgate apply` / `stsgate export` through the real binary, straight to the database and
//! through a running server's admin API (`--server`): the same file gives the same plan, the
//! same changes and the same refusals either way.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use policy_store::PgStore;
use policy_store::testing::{SeedApp, TestDatabase, fresh_database, seed_app, test_cipher};
use sqlx::PgPool;

use crate::process::{BIN, ServeProcess, master_key_b64};
use crate::support::emulator;

/// The README's example file, applied by these tests and by the operator's.
pub const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/apps.toml");

/// The secrets `examples/apps.toml` names.
pub const PHOTOS_SECRET_KEY: &str = "example-photos-permanent-secret-key-01";
pub const PHOTOS_JWT_SECRET: &str = "example-photos-jwt-hs256-secret-0123456789";
pub const VIDEOS_JWT_SECRET: &str = "example-videos-jwt-hs256-secret-0123456789";

pub fn example_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("PHOTOS_SECRET_KEY", PHOTOS_SECRET_KEY),
        ("PHOTOS_JWT_SECRET", PHOTOS_JWT_SECRET),
        ("VIDEOS_JWT_SECRET", VIDEOS_JWT_SECRET),
    ]
}

/// `stsgate` with nothing in its environment but `env` (and PATH).
pub fn stsgate(env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied());
    c
}

/// Where `apply` and `export` send their work.
pub enum Mode {
    /// DATABASE_URL and the master key, as the other commands.
    Direct { database_url: String },
    /// `--server URL --token-file F`, and no database settings at all.
    Server {
        admin_url: String,
        token_file: PathBuf,
    },
}

impl Mode {
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = stsgate(env);
        c.args(args);
        match self {
            Mode::Direct { database_url } => {
                c.env("DATABASE_URL", database_url)
                    .env("STSGATE_MASTER_KEY", master_key_b64())
                    .env("USER", "ops-alice");
            }
            Mode::Server {
                admin_url,
                token_file,
            } => {
                c.arg("--server")
                    .arg(admin_url)
                    .arg("--token-file")
                    .arg(token_file);
            }
        }
        c.output().unwrap()
    }

    /// The change log's actor for this mode.
    fn actor(&self) -> &'static str {
        match self {
            Mode::Direct { .. } => "apply:ops-alice",
            Mode::Server { .. } => "token:ops",
        }
    }
}

/// stdout of a command that must succeed.
#[track_caller]
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// stderr of a command that must fail.
#[track_caller]
fn refused(out: Output) -> String {
    assert!(
        !out.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// An admin API token from `stsgate admin create-token`, in a file of its own.
pub fn token_file(db_url: &str, dir: &Path, name: &str) -> PathBuf {
    let token = ok(stsgate(&[
        ("DATABASE_URL", db_url),
        ("STSGATE_MASTER_KEY", &master_key_b64()),
    ])
    .args(["admin", "create-token", "--name", name, "--role", "admin"])
    .output()
    .unwrap());
    let path = dir.join(format!("{name}.token"));
    std::fs::write(&path, token.trim()).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "stsgate-apply-{tag}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

async fn changes(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM admin_audit WHERE action NOT LIKE 'api_token.%'")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn int(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Everything the issue asks of apply/export, in one mode.
async fn converge(db: &TestDatabase, mode: &Mode, dir: &Path) {
    let env = example_env();
    let pool = &db.pool;

    // A dry run prints the whole plan and changes nothing.
    let plan = ok(mode.run(&["apply", "-f", EXAMPLE, "--dry-run"], &env));
    for line in [
        "+ app photos (create)",
        "    + duration_max: 3600",
        "    + secret_id: \"AKID…0001\"",
        "    + secret_key: \"(set)\"",
        "    + jwt.hs_secret: \"(set)\"",
        "    + blocked_subjects[\"mallory\"]: {\"reason\":\"abuse report #42\"}",
        "    + template:",
        "+ app videos (create)",
        "Dry run: 2 to create, 0 to update, 0 to disable, 0 unchanged. Nothing was changed.",
    ] {
        assert!(plan.contains(line), "{line:?} missing from:\n{plan}");
    }
    for (_, secret) in &env {
        assert!(!plan.contains(secret), "a secret in the plan:\n{plan}");
    }
    assert_eq!(int(pool, "SELECT count(*) FROM apps").await, 0);
    assert_eq!(changes(pool).await, 0);

    // Applied: both apps, their JWT settings, templates and blocks, each change logged.
    let out = ok(mode.run(&["apply", "-f", EXAMPLE], &env));
    assert!(
        out.contains("Applied: 2 to create, 0 to update, 0 to disable, 0 unchanged."),
        "{out}"
    );
    assert_eq!(int(pool, "SELECT count(*) FROM apps").await, 2);
    let logged = changes(pool).await;
    let actors: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT actor FROM admin_audit WHERE action NOT LIKE 'api_token.%'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(actors, [mode.actor()]);
    // photos: app, jwt, template, block; videos: app, jwt, template.
    assert_eq!(logged, 7);

    // Idempotent: a second run changes nothing and says so.
    let out = ok(mode.run(&["apply", "-f", EXAMPLE], &env));
    assert!(
        out.contains("No changes: the database already matches") && out.contains("(2 app(s))"),
        "{out}"
    );
    assert_eq!(changes(pool).await, logged);

    // export, then apply what it wrote: a no-op, without any secret at hand.
    let exported = dir.join("exported.toml");
    ok(mode.run(&["export", "-o", exported.to_str().unwrap()], &[]));
    let text = std::fs::read_to_string(&exported).unwrap();
    assert!(text.contains("[apps.photos]") && text.contains("[apps.videos.template]"));
    assert!(
        text.contains("# secret_key_env = \"PHOTOS_SECRET_KEY\""),
        "{text}"
    );
    for (_, secret) in &env {
        assert!(!text.contains(secret), "a secret in the export:\n{text}");
    }
    let out = ok(mode.run(&["apply", "-f", exported.to_str().unwrap()], &[]));
    assert!(out.contains("No changes"), "{out}");
    assert_eq!(changes(pool).await, logged);

    // A missing secret: refused before anything is contacted, naming the app and field.
    let edited = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replace("duration_max = 3600", "duration_max = 7200");
    let file = dir.join("edited.toml");
    std::fs::write(&file, &edited).unwrap();
    let without: Vec<_> = env
        .iter()
        .copied()
        .filter(|(k, _)| *k != "VIDEOS_JWT_SECRET")
        .collect();
    let err = refused(mode.run(&["apply", "-f", file.to_str().unwrap()], &without));
    assert!(
        err.contains(
            "apps.videos.jwt.hs_secret_env: the environment variable VIDEOS_JWT_SECRET is not set"
        ) && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(changes(pool).await, logged);

    // An invalid template in one app: the whole file is refused, the field named, and the
    // other app's valid change is not made either.
    let bad = edited.replace(
        "resources = [\"u/${sub_hash}/*\"]",
        "resources = [\"u/${sub_hash}*\"]",
    );
    std::fs::write(&file, &bad).unwrap();
    let err = refused(mode.run(&["apply", "-f", file.to_str().unwrap()], &env));
    assert!(
        err.contains("apps.videos.template.statements[0].resources[0]: "),
        "{err}"
    );
    assert_eq!(changes(pool).await, logged);
    assert_eq!(
        int(
            pool,
            "SELECT duration_max::int8 FROM apps WHERE slug = 'photos'"
        )
        .await,
        3600
    );

    // A change: field by field in the dry run; the template gets a new version only when its
    // text differs.
    let changed = edited.replace(
        "actions = [\"name/cos:GetObject\"]",
        "actions = [\"name/cos:GetObject\", \"name/cos:PutObject\"]",
    );
    std::fs::write(&file, &changed).unwrap();
    let plan = ok(mode.run(&["apply", "-f", file.to_str().unwrap(), "--dry-run"], &env));
    for line in [
        "~ app photos (update)",
        "    ~ duration_max: 3600 -> 7200",
        "~ app videos (update)",
        "    ~ template:",
        "Dry run: 0 to create, 2 to update, 0 to disable, 0 unchanged. Nothing was changed.",
    ] {
        assert!(plan.contains(line), "{line:?} missing from:\n{plan}");
    }
    assert!(
        plan.lines()
            .any(|l| l.trim_start().starts_with('+') && l.contains("\"name/cos:PutObject\"")),
        "{plan}"
    );
    assert!(
        !plan.contains("secret_key"),
        "unchanged secrets are not changes:\n{plan}"
    );
    let drift = mode.run(
        &[
            "apply",
            "-f",
            file.to_str().unwrap(),
            "--dry-run",
            "--exit-code",
        ],
        &env,
    );
    assert_eq!(drift.status.code(), Some(2), "changes pending");
    assert_eq!(changes(pool).await, logged);
    ok(mode.run(&["apply", "-f", file.to_str().unwrap()], &env));
    assert_eq!(changes(pool).await, logged + 2);
    assert_eq!(
        int(
            pool,
            "SELECT active_template_version::int8 FROM apps WHERE slug = 'videos'"
        )
        .await,
        2
    );
    assert_eq!(
        int(pool, "SELECT count(*) FROM policy_templates").await,
        3,
        "photos' unchanged template got no new version"
    );
    let out = ok(mode.run(
        &[
            "apply",
            "-f",
            file.to_str().unwrap(),
            "--dry-run",
            "--exit-code",
        ],
        &env,
    ));
    assert!(out.contains("No changes"), "{out}");
    let out = ok(mode.run(&["apply", "-f", file.to_str().unwrap()], &env));
    assert!(out.contains("No changes"), "{out}");
    assert_eq!(changes(pool).await, logged + 2);

    // An app the file does not list is left alone and reported; --prune disables it.
    let store = PgStore::new(pool.clone(), test_cipher());
    seed_app(&store, "test", &SeedApp::new("legacy"))
        .await
        .unwrap();
    let before = changes(pool).await;
    let out = ok(mode.run(&["apply", "-f", file.to_str().unwrap()], &env));
    assert!(
        out.contains("! app legacy: in the database, not in the file: left alone")
            && out.contains("No changes"),
        "{out}"
    );
    let plan = ok(mode.run(
        &[
            "apply",
            "-f",
            file.to_str().unwrap(),
            "--prune",
            "--dry-run",
        ],
        &env,
    ));
    assert!(
        plan.contains("~ app legacy (disable)") && plan.contains("~ enabled: true -> false"),
        "{plan}"
    );
    assert_eq!(changes(pool).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_and_export_straight_to_the_database() {
    let db = fresh_database().await.unwrap();
    let dir = temp_dir("direct");
    let mode = Mode::Direct {
        database_url: db.url.clone(),
    };
    converge(&db, &mode, &dir).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_and_export_through_the_admin_api() {
    sts_core::install_crypto_provider();
    let db = fresh_database().await.unwrap();
    let emu = emulator();
    let mut serve = ServeProcess::start(&db.url, &emu.url(), &[]);
    let dir = temp_dir("server");
    let mode = Mode::Server {
        admin_url: serve.admin_url(),
        token_file: token_file(&db.url, &dir, "ops"),
    };
    converge(&db, &mode, &dir).await;

    // An auditor token may not apply (nor export: it shows the unmasked SecretId).
    let auditor = ok(stsgate(&[
        ("DATABASE_URL", &db.url),
        ("STSGATE_MASTER_KEY", &master_key_b64()),
    ])
    .args([
        "admin",
        "create-token",
        "--name",
        "audit",
        "--role",
        "auditor",
    ])
    .output()
    .unwrap());
    let auditor_file = dir.join("audit.token");
    std::fs::write(&auditor_file, auditor.trim()).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&auditor_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let as_auditor = Mode::Server {
        admin_url: serve.admin_url(),
        token_file: auditor_file,
    };
    let err = refused(as_auditor.run(&["export"], &[]));
    assert!(err.contains("403 forbidden"), "{err}");
    // That token file is readable by everyone (0644): a warning says so.
    assert!(
        err.contains("audit.token holds a secret and other users can read it: chmod 600 it"),
        "{err}"
    );
    assert!(serve.terminate());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A secret pasted where its reference goes, or breaking the TOML, never reaches stderr.
#[test]
fn a_pasted_secret_never_reaches_stderr() {
    let dir = temp_dir("pasted");
    let secret = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
    let base = "[apps.photos]\nname = \"Photos\"\nregion = \"ap-guangzhou\"\n\
                bucket = \"photos-1250000000\"\nsecret_id = \"AKIDEXAMPLEEXAMPLE\"\n";
    for line in [
        format!("secret_key_env = \"{secret}\""),
        format!("secret_key_env = \"{secret}+/=\""),
        format!("secret_key_file = \"{secret}\""),
        format!("secret_key_env = \"{secret}\"x\""),
        format!("secret_key_env = \"{secret}"),
    ] {
        let file = dir.join("apps.toml");
        std::fs::write(&file, format!("{base}{line}\n")).unwrap();
        let err = refused(
            stsgate(&[])
                .args(["apply", "--dry-run", "-f"])
                .arg(&file)
                .output()
                .unwrap(),
        );
        assert!(err.contains("apps.toml has problems"), "{err}");
        assert!(!err.contains("Gu5t9x"), "{line}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A server that takes the request and then drops the connection, or answers 500: the apply
/// may have been committed, so the error says the outcome is unknown (not "not applied").
#[test]
fn a_lost_answer_leaves_the_outcome_unknown() {
    use std::io::{Read as _, Write as _};

    let dir = temp_dir("lost");
    let token = dir.join("t.token");
    std::fs::write(&token, "not-a-real-token").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    for answer in [
        None,
        Some("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            // Read the request's head, then answer (or not) and close.
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            if let Some(a) = answer {
                conn.write_all(a.as_bytes()).unwrap();
            }
        });
        let out = stsgate(&example_env())
            .args(["apply", "-f", EXAMPLE, "--server", &url, "--token-file"])
            .arg(&token)
            .output()
            .unwrap();
        server.join().unwrap();
        let err = refused(out);
        assert!(
            err.contains("apps.toml is unknown: the changes may or may not have been committed")
                && err.contains("--dry-run` to see what is left to change")
                && !err.contains("was not applied"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Straight to the database, `export` and `apply` (dry or not) never migrate: a database
/// behind this binary's migrations is refused, and stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_and_export_refuse_a_schema_they_would_have_to_migrate() {
    let db = fresh_database().await.unwrap();
    let last = policy_store::migrate::embedded_migrations().pop().unwrap();
    sqlx::query("DELETE FROM refinery_schema_history WHERE version = (SELECT max(version) FROM refinery_schema_history)")
        .execute(&db.pool)
        .await
        .unwrap();
    let history = "SELECT count(*) FROM refinery_schema_history";
    let before = int(&db.pool, history).await;
    let mode = Mode::Direct {
        database_url: db.url.clone(),
    };
    let env = example_env();
    for args in [
        &["export"][..],
        &["apply", "-f", EXAMPLE, "--dry-run"],
        &["apply", "-f", EXAMPLE],
    ] {
        let err = refused(mode.run(args, &env));
        assert!(
            err.contains(&format!(
                "the database is behind this stsgate: it lacks {last}"
            )) && err.contains("stsgate migrate"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(int(&db.pool, history).await, before, "nothing was migrated");
    assert_eq!(int(&db.pool, "SELECT count(*) FROM apps").await, 0);
}

/// A multi-line string holding the lines export's comments go under (a block reason; a
/// template's strings are one line): export writes it untouched, and applying the export is
/// a no-op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_apply_is_a_no_op_with_multi_line_strings() {
    use policy_store::SubjectStore as _;

    let db = fresh_database().await.unwrap();
    let store = PgStore::new(db.pool.clone(), test_cipher());
    let app = seed_app(&store, "root", &SeedApp::new("photos"))
        .await
        .unwrap();
    let tricky = "first line\nsecret_id = \"AKIDX\"\n[apps.photos.jwt]\nlast";
    store
        .block_subject("root", app.id, "mallory", Some(tricky))
        .await
        .unwrap();
    let dir = temp_dir("multiline");
    let mode = Mode::Direct {
        database_url: db.url.clone(),
    };
    let exported = dir.join("exported.toml");
    ok(mode.run(&["export", "-o", exported.to_str().unwrap()], &[]));
    let text = std::fs::read_to_string(&exported).unwrap();
    assert!(
        text.contains("\nsecret_id = \"AKIDX\"\n[apps.photos.jwt]\n"),
        "{text}"
    );
    let before = changes(&db.pool).await;
    let out = ok(mode.run(&["apply", "-f", exported.to_str().unwrap()], &[]));
    assert!(out.contains("No changes"), "{out}");
    assert_eq!(changes(&db.pool).await, before);
    std::fs::remove_dir_all(&dir).unwrap();
}
