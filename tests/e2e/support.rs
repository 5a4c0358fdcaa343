//! `TestApp`: a gateway on port 0 with its own database, emulator and a seeded app.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gateway::{Gateway, GatewayConfig};
use jsonwebtoken::{EncodingKey, Header};
use policy_store::testing::{SeedApp, TestDatabase, fresh_store, seed_app, test_cipher};
use policy_store::{AppInput, IssuanceFilter, IssuanceRecord, IssuanceStore, PgStore, PoolOptions};
use serde_json::{Value, json};
use sts_core::{RetryPolicy, StsClient, StsClientConfig};
use sts_emulator::{EmulatorConfig, EmulatorHandle};
use tokio::io::copy_bidirectional;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub const ACCOUNT_ID: &str = "AKIDE2ETESTACCOUNT";
pub const ACCOUNT_KEY: &str = "e2e-permanent-secret-key-0123456789";
/// A second emulator account, for an app whose STS misbehaves while the first's does not.
pub const OTHER_ACCOUNT_ID: &str = "AKIDE2EOTHERACCOUNT";
pub const OTHER_ACCOUNT_KEY: &str = "e2e-other-permanent-secret-key-987654";
pub const APPID: &str = "1250000000";
pub const BUCKET: &str = "examplebucket-1250000000";
pub const REGION: &str = "ap-guangzhou";
pub const APP: &str = "photos";
pub const RSA_APP: &str = "rsa-app";
pub const HS_SECRET: &str = "e2e-hs256-secret-that-is-long-enough-0123";
pub const ISSUER: &str = "https://idp.example.test";
pub const AUDIENCE: &str = "photos-mobile";

pub fn fixture(name: &str) -> String {
    let path = format!(
        "{}/crates/gateway/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[derive(Clone)]
pub struct Options {
    pub sts_timeout: Duration,
    pub sts_attempts: u32,
    pub rate_subject_per_minute: i32,
    pub rate_app_per_second: i32,
    /// Route the gateway's database connections through a proxy the test can cut.
    pub db_proxy: bool,
    /// Route the gateway's database connections through this address instead (a proxy the
    /// test started, in front of the server `DATABASE_URL` names).
    pub db_via: Option<SocketAddr>,
    pub trust_forwarded_for: bool,
    /// The gateway's `database_timeout`, also its issuance-log commit timeout.
    pub database_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            sts_timeout: Duration::from_secs(5),
            sts_attempts: 2,
            rate_subject_per_minute: 0,
            rate_app_per_second: 0,
            db_proxy: false,
            db_via: None,
            trust_forwarded_for: false,
            database_timeout: Duration::from_secs(3),
        }
    }
}

pub struct TestApp {
    pub url: String,
    pub emulator: EmulatorHandle,
    pub store: Arc<PgStore>,
    /// Straight to the test database (never through a proxy), on the test's own runtime: for
    /// reading what was written, also once the gateway (whose HTTP workers' runtimes opened
    /// some of `store`'s connections) has stopped.
    pub direct: PgStore,
    pub app_id: i64,
    pub http: reqwest::Client,
    pub gateway: Option<Gateway>,
    pub proxy: Option<DbProxy>,
    server: actix_web::dev::ServerHandle,
    server_task: tokio::task::JoinHandle<std::io::Result<()>>,
    follow: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
    // Last: dropping it drops the database.
    _db: TestDatabase,
}

/// An HS256 token for the `photos` app with `iss`, `aud`, `iat`, `exp` filled in unless
/// given.
pub fn hs256_token(extra: Value) -> String {
    let mut claims = json!({"iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 600});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

pub fn emulator() -> EmulatorHandle {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    sts_emulator::start(
        EmulatorConfig {
            accounts: vec![
                format!("{ACCOUNT_ID}:{ACCOUNT_KEY}:{APPID}")
                    .parse()
                    .unwrap(),
                format!("{OTHER_ACCOUNT_ID}:{OTHER_ACCOUNT_KEY}:{APPID}")
                    .parse()
                    .unwrap(),
            ],
            workers: 1,
            ..EmulatorConfig::default()
        },
        listener,
    )
    .unwrap()
}

/// An HS256 app whose permanent key is the emulator account's, with the test's rate limits.
pub fn seed_options(slug: &str, opts: &Options) -> SeedApp {
    SeedApp {
        name: format!("{slug} <script>app</script>"),
        secret_id: ACCOUNT_ID.into(),
        secret_key: ACCOUNT_KEY.into(),
        rate_subject_per_minute: opts.rate_subject_per_minute,
        rate_app_per_second: opts.rate_app_per_second,
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        hs_secret: Some(HS_SECRET.into()),
        leeway_seconds: 30,
        ..SeedApp::new(slug)
    }
}

pub fn app_input(slug: &str, opts: &Options) -> AppInput {
    seed_options(slug, opts).app_input()
}

/// Creates the HS256 app `photos` and the RS256 app `rsa-app` (key id `k1`).
pub async fn seed(store: &PgStore, opts: &Options) -> (i64, i64) {
    let app = seed_app(store, "test", &seed_options(APP, opts))
        .await
        .unwrap();
    let rsa = SeedApp {
        algorithms: vec!["RS256".into()],
        hs_secret: None,
        public_keys: vec![format!("kid: k1\n{}", fixture("rsa_public.pem"))],
        ..seed_options(RSA_APP, opts)
    };
    let rsa = seed_app(store, "test", &rsa).await.unwrap();
    (app.id, rsa.id)
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(opts: Options) -> Self {
        sts_core::install_crypto_provider();
        let (db, seed_store) = fresh_store().await.expect("a fresh test database");
        let (app_id, _) = seed(&seed_store, &opts).await;

        let proxy = if opts.db_proxy {
            Some(DbProxy::start(&db.url).await)
        } else {
            None
        };
        let url = match (&proxy, opts.db_via) {
            (Some(p), _) => p.rewrite(&db.url),
            (None, Some(addr)) => through(&db.url, addr),
            (None, None) => db.url.clone(),
        };
        let pool = PoolOptions {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(2),
            ..PoolOptions::default()
        };
        let store = Arc::new(PgStore::connect(&url, &pool, test_cipher()).await.unwrap());
        // As `stsgate serve` does: the issuance-log writers on a pool of their own.
        let audit_store = Arc::new(PgStore::connect(&url, &pool, test_cipher()).await.unwrap());

        let emulator = emulator();
        let sts = StsClient::new(StsClientConfig {
            endpoint: format!("{}/", emulator.url()),
            region: REGION.into(),
            connect_timeout: Duration::from_secs(1),
            timeout: opts.sts_timeout,
            retry: RetryPolicy {
                max_attempts: opts.sts_attempts,
                base_delay: Duration::from_millis(20),
                max_delay: Duration::from_millis(100),
                budget: Duration::from_secs(10),
            },
        })
        .unwrap();
        let gateway = Gateway::build_with_audit_store(
            store.clone(),
            audit_store,
            sts,
            GatewayConfig {
                workers: 2,
                trust_forwarded_for: opts.trust_forwarded_for,
                audit: gateway::audit::AuditConfig {
                    commit_timeout: opts.database_timeout,
                    ..Default::default()
                },
                database_timeout: opts.database_timeout,
                ..GatewayConfig::default()
            },
        );
        let stop = CancellationToken::new();
        let follow = tokio::spawn(gateway::follow_changes(
            store.changes(),
            gateway.apps.clone(),
            stop.clone(),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = gateway.serve(listener).unwrap();
        let handle = server.handle();
        let server_task = tokio::spawn(server);
        let app = Self {
            url: format!("http://{addr}"),
            emulator,
            store,
            direct: seed_store,
            app_id,
            http: reqwest::Client::new(),
            gateway: Some(gateway),
            proxy,
            server: handle,
            server_task,
            follow,
            stop,
            _db: db,
        };
        // The change listener is up once it has applied its first resync.
        app.wait_for_invalidations(1).await;
        app
    }

    /// Runs the gateway's membership (as `stsgate serve` does) and waits (up to 10 s) until
    /// its beat counts it the only live replica. Cancel the token and await the handle to
    /// leave.
    pub async fn beat_alone(&self) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let gateway = self.gateway.as_ref().expect("a running gateway");
        let stop = CancellationToken::new();
        let beats = gateway.join_cluster("127.0.0.1:1".into(), "127.0.0.1:2".into(), stop.clone());
        for _ in 0..200 {
            if gateway.membership.alone() {
                return (stop, beats);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway never counted itself alone");
    }

    /// A pool straight to the test database.
    pub fn db_pool(&self) -> &sqlx::PgPool {
        &self._db.pool
    }

    /// An HS256 token for the `photos` app.
    pub fn token(&self, sub: &str) -> String {
        self.token_with(json!({"sub": sub}))
    }

    /// An HS256 token with `iss`, `aud`, `iat`, `exp` filled in unless given.
    pub fn token_with(&self, extra: Value) -> String {
        hs256_token(extra)
    }

    /// `GET {url}{path}`, with a bearer token when given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    /// `GET /v1/apps/photos/credentials?{query}` as `sub`.
    pub async fn credentials(&self, sub: &str, query: &str) -> reqwest::Response {
        self.get(
            &format!("/v1/apps/{APP}/credentials?{query}"),
            Some(&self.token(sub)),
        )
        .await
    }

    /// The issuance log, newest first, once the refusal lane has written what it holds.
    pub async fn log_rows(&self) -> Vec<IssuanceRecord> {
        if let Some(g) = &self.gateway {
            g.service.audit.flush_refusals().await;
        }
        self.direct
            .search_issuance(&IssuanceFilter::default(), None, 100_000)
            .await
            .unwrap()
    }

    /// The log row of request `id` once `settled` holds for it (waits up to 10 s; the row as
    /// last seen otherwise, for the caller's assertions to report).
    pub async fn row_once(
        &self,
        id: &str,
        settled: impl Fn(&IssuanceRecord) -> bool,
    ) -> Option<IssuanceRecord> {
        let mut row = None;
        for _ in 0..100 {
            row = self
                .log_rows()
                .await
                .into_iter()
                .find(|r| r.request_id == id);
            if row.as_ref().is_some_and(&settled) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        row
    }

    /// Waits (bounded) until the gateway has applied at least `n` change notifications in all
    /// (of every kind: an app change, an admin-user change, a resync).
    pub async fn wait_for_invalidations(&self, n: u64) {
        let apps = &self.gateway.as_ref().unwrap().apps;
        for _ in 0..200 {
            if apps.changes_applied() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the gateway did not see the change notification within 2 s");
    }

    /// How many times the gateway has loaded an app from the database.
    pub fn app_loads(&self) -> u64 {
        self.gateway.as_ref().unwrap().apps.loads()
    }

    /// Change notifications the gateway has applied so far.
    pub fn invalidations(&self) -> u64 {
        self.gateway.as_ref().unwrap().apps.changes_applied()
    }

    /// Stops the server (requests in flight finish) and the gateway, whose writers write
    /// everything queued and learn the fate of every commit under way; the database stays
    /// for the test to read.
    pub async fn stop_gateway(&mut self) {
        let Some(gateway) = self.gateway.take() else {
            return; // stopped already
        };
        self.server.stop(true).await;
        let _ = (&mut self.server_task).await;
        gateway
            .shutdown(tokio::time::Instant::now() + Duration::from_secs(30))
            .await;
    }

    pub async fn shutdown(mut self) {
        self.stop_gateway().await;
        self.stop.cancel();
        let _ = (&mut self.follow).await;
    }
}

/// A TCP proxy in front of PostgreSQL. `cut()` drops every connection and refuses new ones,
/// which the gateway cannot tell from a database crash; `restore()` lets connections through.
pub struct DbProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl DbProxy {
    pub async fn start(database_url: &str) -> Self {
        let target = {
            let after = database_url.split("://").nth(1).unwrap();
            let host_port = after
                .split('@')
                .next_back()
                .unwrap()
                .split('/')
                .next()
                .unwrap();
            host_port.to_owned()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Notify::new());
        let (up2, cut2) = (up.clone(), cut.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let cut = cut2.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        Self {
            addr,
            up,
            cut,
            task,
        }
    }

    pub fn rewrite(&self, url: &str) -> String {
        through(url, self.addr)
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `host:port` of the server `DATABASE_URL` names (every test database lives there), for a
/// proxy to put itself in front of.
pub fn database_server() -> String {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| policy_store::testing::DEFAULT_DATABASE_URL.into());
    let authority = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .map(|a| a.rsplit('@').next().unwrap_or(a).to_owned())
        .unwrap();
    if authority.contains(':') {
        authority
    } else {
        format!("{authority}:5432")
    }
}

/// `url` (`scheme://user@host:port/db`) with its host and port replaced by `addr`.
pub fn through(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, after) = rest.split_once('@').unwrap();
    let path = after.split_once('/').map_or("", |(_, p)| p);
    format!("{scheme}://{userinfo}@{addr}/{path}")
}

/// Helpers for app edits, concurrent requests and the issuance log.
impl TestApp {
    /// The issuance-log outcomes, oldest first.
    pub async fn outcomes(&self) -> Vec<policy_store::Outcome> {
        self.log_rows()
            .await
            .iter()
            .rev()
            .map(|r| r.outcome)
            .collect()
    }

    /// Saves `input` over the app `id` and waits until the gateway has applied the change.
    pub async fn edit_app(&self, id: i64, input: &AppInput) {
        let seen = self.invalidations();
        policy_store::AppStore::update_app(&*self.store, "admin", id, input)
            .await
            .unwrap();
        self.wait_for_invalidations(seen + 1).await;
    }

    /// `GET /v1/apps/photos/credentials` once per token, all at once; the statuses and
    /// bodies in the tokens' order.
    pub async fn credentials_at_once(&self, tokens: Vec<String>) -> Vec<(u16, Value)> {
        let url = format!("{}/v1/apps/{APP}/credentials", self.url);
        let tasks: Vec<_> = tokens
            .into_iter()
            .map(|token| {
                let (http, url) = (self.http.clone(), url.clone());
                tokio::spawn(async move {
                    let res = http.get(url).bearer_auth(token).send().await.unwrap();
                    let status = res.status().as_u16();
                    (status, res.json::<Value>().await.unwrap())
                })
            })
            .collect();
        let mut answers = Vec::with_capacity(tasks.len());
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        answers
    }
}
