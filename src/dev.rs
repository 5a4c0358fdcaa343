//! `stsgate dev`: a zero-configuration local sandbox (DESIGN §2).

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};
use policy_store::{
    AdminUserStore, AppAuthInput, AppInput, AppStore, PgStore, Role, Shared, StsMode,
    TemplateDocument, TemplateStatement, TemplateStore,
};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sts_emulator::{Account, EmulatorConfig};

use crate::config::{LogFormat, Settings};
use crate::postgres::PrivatePostgres;
use crate::{private_fs, serve};

pub const DEMO_APP: &str = "demo";
const DEMO_BUCKET: &str = "examplebucket-1250000000";
const DEMO_REGION: &str = "ap-guangzhou";
const DEMO_APPID: &str = "1250000000";
const JWT_ISSUER: &str = "stsgate-dev";
const JWT_AUDIENCE: &str = "demo";
/// The web origins the demo app allows out of the box: the usual local development servers
/// (`npx serve`/Next/Express on 3000, Vite on 5173, `python3 -m http.server` on 8000), by name
/// and by address, since a browser treats `localhost` and `127.0.0.1` as different origins.
pub const DEMO_ORIGINS: [&str; 6] = [
    "http://localhost:3000",
    "http://127.0.0.1:3000",
    "http://localhost:5173",
    "http://127.0.0.1:5173",
    "http://localhost:8000",
    "http://127.0.0.1:8000",
];

#[derive(clap::Args)]
pub struct DevArgs {
    /// Where dev keeps its database, keys and dev.json.
    #[arg(long, default_value = ".stsgate")]
    data_dir: PathBuf,
    /// Public API address (falls back to a free port when taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Admin pages address (falls back to a free port when taken).
    #[arg(long, default_value = "127.0.0.1:8081")]
    admin_listen: String,
    /// STS (and COS) emulator address (falls back to a free port when taken).
    #[arg(long, default_value = "127.0.0.1:9100")]
    emulator_listen: String,
}

/// The facts `dev` prints, also written to `<data dir>/dev.json` for scripts.
#[derive(Debug, Serialize, Deserialize)]
pub struct DevFacts {
    pub api_url: String,
    pub admin_url: String,
    pub admin_user: String,
    pub admin_password: String,
    pub app: String,
    pub jwt_hs256_secret: String,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub sample_jwt: String,
    pub emulator_url: String,
    pub emulator_secret_id: String,
    pub emulator_secret_key: String,
    pub bucket: String,
    pub region: String,
    /// The web origins the demo app allows (as seeded; the admin pages may change them).
    pub web_origins: Vec<String>,
}

/// Secrets generated on the first run and reused after.
#[derive(Debug, Serialize, Deserialize)]
struct DevSecrets {
    emulator_secret_id: String,
    emulator_secret_key: String,
    admin_password: String,
    /// The private PostgreSQL superuser's password (data dirs from before it existed use
    /// trust authentication and ignore it).
    #[serde(default = "new_pg_password")]
    pg_password: String,
}

fn new_pg_password() -> String {
    random_token(24)
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

fn load_or_create<T: Serialize + for<'de> Deserialize<'de>>(
    path: &Path,
    create: impl FnOnce() -> T,
) -> anyhow::Result<T> {
    if let Some(text) = private_fs::read_private(path)? {
        return serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is damaged: delete it (or the whole data dir) to start over",
                path.display()
            )
        });
    }
    let value = create();
    private_fs::write_private(path, serde_json::to_string_pretty(&value)?.as_bytes(), None)?;
    Ok(value)
}

/// The data dir, made on first use and checked on every start. Everything dev reads back from
/// it (secrets, the master key, where the PostgreSQL data lives) is trusted because of this
/// check: it must be a directory of ours that no one else can write, and no ancestor may let
/// everyone rename it (one like /tmp must be sticky). A link to it must be ours (or root's).
/// Returns its canonical path, so a later swap of a link cannot redirect dev.
fn prepare_data_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let me = private_fs::my_uid();
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            // Searchable but not listable by others, so that as root the postgres user can
            // reach `pg/` inside; every file in it is 0600.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        Ok(meta) if meta.file_type().is_symlink() && meta.uid() != me && meta.uid() != 0 => {
            anyhow::bail!(
                "{} is a symbolic link of another user's (uid {}): refusing to follow it",
                dir.display(),
                meta.uid()
            );
        }
        Ok(_) => {}
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    private_fs::check_private_dir(&dir, me, None)?;
    private_fs::check_ancestors(&dir)?;
    Ok(dir)
}

/// Binds `addr`, or a free port on the same host when it is taken.
fn bind_or_any(addr: &str, what: &str) -> anyhow::Result<TcpListener> {
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(_) => {
            let host = addr.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
            let l = TcpListener::bind((host, 0))
                .with_context(|| format!("cannot listen for the {what}"))?;
            println!("note: {addr} is taken; the {what} uses {}", l.local_addr()?);
            l
        }
    };
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The demo template: the upload/read set on the user's own prefix, plus listing it.
fn demo_template() -> TemplateDocument {
    let mut doc = TemplateDocument::default_for_users();
    let mut list = TemplateStatement {
        effect: sts_core::Effect::Allow,
        actions: vec!["name/cos:GetBucket".into()],
        resources: vec!["/".into()],
        conditions: Default::default(),
        // Listing is limited to the user's own prefix by the condition below.
        shared: None,
    };
    list.conditions.insert(
        "string_like".into(),
        [("cos:prefix".to_owned(), json!("users/${sub}/*"))]
            .into_iter()
            .collect(),
    );
    doc.statements.push(list);
    // cos-python-sdk-v5's upload_file asks for in-progress uploads before a multipart upload.
    // This names other users' in-progress uploads too (reference §3.5): fine for a sandbox,
    // think twice in production. It reaches beyond the user's prefix, so it is marked shared.
    doc.statements.push(TemplateStatement {
        effect: sts_core::Effect::Allow,
        actions: vec!["name/cos:ListMultipartUploads".into()],
        resources: vec!["/".into()],
        conditions: Default::default(),
        shared: Some(Shared {
            reason: "cos-python-sdk-v5's upload_file lists in-progress multipart uploads \
                     (of every user) before it uploads; fine for the dev sandbox"
                .into(),
        }),
    });
    doc
}

/// What [`seed`] hands back: the demo app's HS256 secret and its allowed origins now.
struct Seeded {
    hs_secret: String,
    web_origins: Vec<String>,
}

async fn seed(store: &PgStore, secrets: &DevSecrets) -> anyhow::Result<Seeded> {
    let app = match store.app_by_slug(DEMO_APP).await? {
        Some(app) => app,
        None => {
            let app = store
                .create_app(
                    "dev",
                    &AppInput {
                        slug: DEMO_APP.into(),
                        name: "Demo app".into(),
                        enabled: true,
                        region: DEMO_REGION.into(),
                        bucket: DEMO_BUCKET.into(),
                        mode: StsMode::FederationToken,
                        role_arn: None,
                        external_id: None,
                        secret_id: secrets.emulator_secret_id.clone(),
                        secret_key: Some(SecretString::from(secrets.emulator_secret_key.clone())),
                        sts_endpoint: None,
                        duration_default: 1800,
                        duration_max: 7200,
                        min_remaining: None,
                        rate_subject_per_minute: 120,
                        rate_app_per_second: 500,
                        allowed_origins: DEMO_ORIGINS.map(str::to_owned).to_vec(),
                    },
                )
                .await?;
            store
                .set_app_auth(
                    "dev",
                    app.id,
                    &AppAuthInput {
                        issuer: Some(JWT_ISSUER.into()),
                        audiences: vec![JWT_AUDIENCE.into()],
                        algorithms: vec!["HS256".into()],
                        hs_secret: Some(SecretString::from(random_token(32))),
                        public_keys: Vec::new(),
                        jwks_url: None,
                        user_claim: "sub".into(),
                        leeway_seconds: 60,
                    },
                )
                .await?;
            store
                .save_template(
                    "dev",
                    app.id,
                    &demo_template(),
                    Some("seeded by stsgate dev"),
                )
                .await?;
            app
        }
    };
    let auth = store
        .app_auth(app.id)
        .await?
        .context("the demo app has no JWT settings: delete the data dir to reseed")?;
    let secret = auth
        .hs_secret
        .context("the demo app has no HS256 secret: delete the data dir to reseed")?;
    if store.admin_user_by_name("admin").await?.is_none() {
        let hash =
            admin::password::hash_password(SecretString::from(secrets.admin_password.clone()))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        store
            .create_admin_user("dev", "admin", &hash, Role::Admin)
            .await?;
    }
    Ok(Seeded {
        hs_secret: secret.expose_secret().to_owned(),
        web_origins: app.allowed_origins,
    })
}

fn sample_jwt(secret: &str) -> anyhow::Result<String> {
    let now = crate::unix_now();
    let claims = json!({"sub": "alice", "iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "iat": now, "exp": now + 24 * 3600});
    Ok(jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes())?,
    )?)
}

/// What `dev` started, in the order it stops them.
struct Started {
    running: serve::Running,
    emulator: sts_emulator::EmulatorHandle,
    postgres: Option<PrivatePostgres>,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    // Take Ctrl-C from the start: an interrupt while starting drops what was started so far
    // (PostgreSQL is stopped by its Drop) instead of killing the process under it.
    let mut signals = serve::Signals::new()?;
    let Started {
        running,
        emulator,
        postgres,
    } = tokio::select! {
        started = start(&args) => started?,
        _ = signals.recv() => {
            anyhow::bail!("interrupted while starting; what had started was stopped");
        }
    };
    signals.recv().await;
    println!("\nstopping: gateway, emulator, then PostgreSQL");
    running
        .shutdown(std::time::Duration::from_secs(30), &mut signals)
        .await;
    emulator.stop().await;
    if let Some(pg) = postgres {
        pg.stop();
    }
    Ok(())
}

async fn start(args: &DevArgs) -> anyhow::Result<Started> {
    let dir = &prepare_data_dir(&args.data_dir)?;
    let secrets = load_or_create(&dir.join("secrets.json"), || DevSecrets {
        emulator_secret_id: format!("AKIDDEV{}", &random_token(24).replace(['-', '_'], "x")),
        emulator_secret_key: random_token(24),
        admin_password: random_token(18),
        pg_password: new_pg_password(),
    })?;
    let master_key_path = dir.join("master.key");
    let master_key = match private_fs::read_private(&master_key_path)? {
        Some(key) => key,
        None => {
            let key = policy_store::MasterKey::generate().to_encoded();
            private_fs::write_private(&master_key_path, key.as_bytes(), None)?;
            key
        }
    };

    let (postgres, database_url) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => (None, url),
        _ => {
            let pg = PrivatePostgres::start(dir, &secrets.pg_password).await?;
            let url = pg.url.clone();
            (Some(pg), url)
        }
    };

    let emulator_listener = bind_or_any(&args.emulator_listen, "emulator")?;
    let emulator = sts_emulator::start(
        EmulatorConfig {
            accounts: vec![Account {
                secret_id: secrets.emulator_secret_id.clone(),
                secret_key: secrets.emulator_secret_key.clone(),
                appid: DEMO_APPID.into(),
            }],
            ..EmulatorConfig::default()
        },
        emulator_listener,
    )?;

    let mut settings = Settings {
        database_url: Some(SecretString::from(database_url)),
        master_key_file: Some(master_key_path),
        public_listen: args.listen.clone(),
        admin_listen: args.admin_listen.clone(),
        log_format: LogFormat::Pretty,
        workers: 2,
        ..Settings::default()
    };
    settings.master_key = Some(SecretString::from(master_key.trim().to_owned()));
    settings.sts.endpoint = format!("{}/", emulator.url());
    // The sandbox serves the admin pages over plain http, and a developer's identity provider
    // may well run on this machine.
    settings.admin.secure_cookies = false;
    settings.allow_loopback_jwks = true;
    // Listeners that fall back to free ports when the defaults are taken.
    settings.public_listen = bind_or_any(&args.listen, "API")?.local_addr()?.to_string();
    settings.admin_listen = bind_or_any(&args.admin_listen, "admin pages")?
        .local_addr()?
        .to_string();

    let store = serve::connect(&settings).await?;
    let Seeded {
        hs_secret,
        web_origins,
    } = seed(&store, &secrets).await?;
    let running = serve::start(&settings, store).await?;
    let facts = DevFacts {
        api_url: format!("http://{}", running.public_addr),
        admin_url: format!("http://{}", running.admin_addr),
        admin_user: "admin".into(),
        admin_password: secrets.admin_password.clone(),
        app: DEMO_APP.into(),
        jwt_hs256_secret: hs_secret.clone(),
        jwt_issuer: JWT_ISSUER.into(),
        jwt_audience: JWT_AUDIENCE.into(),
        sample_jwt: sample_jwt(&hs_secret)?,
        emulator_url: emulator.url(),
        emulator_secret_id: secrets.emulator_secret_id.clone(),
        emulator_secret_key: secrets.emulator_secret_key.clone(),
        bucket: DEMO_BUCKET.into(),
        region: DEMO_REGION.into(),
        web_origins,
    };
    let facts_path = dir.join("dev.json");
    private_fs::write_private(
        &facts_path,
        serde_json::to_string_pretty(&facts)?.as_bytes(),
        None,
    )?;
    print_banner(&facts, &facts_path, postgres.as_ref().map(|p| p.data_dir()));
    Ok(Started {
        running,
        emulator,
        postgres,
    })
}

fn print_banner(f: &DevFacts, facts_path: &Path, pg_data: Option<&Path>) {
    let db = match pg_data {
        Some(p) => format!("private PostgreSQL, data in {}", p.display()),
        None => "DATABASE_URL".to_owned(),
    };
    println!(
        "\nstsgate dev is running. Ctrl-C stops everything it started.\n\n\
         \x20 API        {api}\n\
         \x20 Admin      {admin}   user {user}, password {password}\n\
         \x20 Emulator   {emu}   (Tencent STS stand-in; key {sid})\n\
         \x20 Database   {db}\n\
         \x20 Demo app   {app}: bucket {bucket}, region {region}, HS256 issuer {iss}, audience {aud}\n\n\
         Sample JWT for user alice (valid 24 h):\n  {jwt}\n\n\
         Try it:\n  curl -s -H 'Authorization: Bearer {jwt}' {api}/v1/apps/{app}/credentials\n\n\
         Browser origins allowed to call the API: {origins}\n  \
         (the demo app's list; change it on the app's page in the admin pages).\n\n\
         The same facts are in {facts}.\n",
        api = f.api_url,
        admin = f.admin_url,
        user = f.admin_user,
        password = f.admin_password,
        emu = f.emulator_url,
        sid = f.emulator_secret_id,
        app = f.app,
        bucket = f.bucket,
        region = f.region,
        iss = f.jwt_issuer,
        aud = f.jwt_audience,
        jwt = f.sample_jwt,
        facts = facts_path.display(),
        origins = if f.web_origins.is_empty() {
            "none".to_owned()
        } else {
            f.web_origins.join(", ")
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy_store::Reach;

    /// The demo template passes the save-time checks: listing stays under the user's prefix,
    /// and the multipart-uploads listing is marked shared, with its reason.
    #[test]
    fn the_demo_template_is_valid_and_says_what_it_shares() {
        let doc = demo_template();
        doc.validate().unwrap();
        let reach = doc.reach();
        assert_eq!(reach[..2], [Reach::Home, Reach::Home]);
        assert!(
            matches!(&reach[2], Reach::Shared { reason, outside } if reason.contains("multipart") && outside == &[0])
        );
    }
}
