//! `stsgate serve`, `stsgate migrate` and `stsgate admin create-user`: wiring only.

use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use policy_store::{AdminUserStore, AppStore, PgStore, Role, Store, TemplateStore};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;

/// How many months of issuance-log partitions exist ahead of the current one.
const PARTITIONS_AHEAD: i32 = 3;

/// Binds a listener, with an error that names the setting to fix.
pub fn bind(addr: &str, setting: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr}: change {setting} or free the port"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

pub async fn connect(settings: &Settings) -> anyhow::Result<PgStore> {
    let url = settings.database_url()?;
    let cipher = settings.cipher()?;
    policy_store::migrate::run_with(url, &settings.migrate_options())
        .await
        .context("running database migrations (check DATABASE_URL and that PostgreSQL is up)")?;
    Ok(PgStore::connect(url, &settings.pool_options(), cipher)
        .await
        .context("connecting to PostgreSQL (check DATABASE_URL)")?
        .with_jwt_options(settings.jwt_compile_options()))
}

/// As [`connect`], but checks the schema version instead of migrating: for `apply` and
/// `export`, which a CI job may run with a newer (or older) binary than the servers', and
/// which must not migrate production ahead of them.
pub async fn connect_without_migrating(settings: &Settings) -> anyhow::Result<PgStore> {
    let url = settings.database_url()?;
    let cipher = settings.cipher()?;
    policy_store::migrate::check_schema(url, &settings.migrate_options()).await?;
    Ok(PgStore::connect(url, &settings.pool_options(), cipher)
        .await
        .context("connecting to PostgreSQL (check DATABASE_URL)")?
        .with_jwt_options(settings.jwt_compile_options()))
}

pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let applied =
        policy_store::migrate::run_with(settings.database_url()?, &settings.migrate_options())
            .await
            .context(
                "running database migrations (check DATABASE_URL and that PostgreSQL is up)",
            )?;
    if applied.is_empty() {
        println!("database is up to date");
    } else {
        for name in applied {
            println!("applied {name}");
        }
    }
    Ok(())
}

pub async fn create_user(settings: &Settings, username: &str, role: &str) -> anyhow::Result<()> {
    let role = Role::parse(role).context("--role must be admin or auditor")?;
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("reading the password from stdin")?;
    let password = password.trim_end_matches(['\n', '\r']).to_owned();
    let hash = admin::password::hash_password(SecretString::from(password))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = connect(settings).await?;
    let user = store
        .create_admin_user("cli", username, &hash, role)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create {username}: {e}"))?;
    println!("created {} user {}", user.role.as_str(), user.username);
    Ok(())
}

pub async fn set_template(
    settings: &Settings,
    app: &str,
    file: &std::path::Path,
    note: Option<&str>,
) -> anyhow::Result<()> {
    let text = if file == std::path::Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the template from stdin")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let document: policy_store::TemplateDocument = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a template document", file.display()))?;
    let store = connect(settings).await?;
    let found = store
        .app_by_slug(app)
        .await?
        .with_context(|| format!("no app named {app:?}"))?;
    let saved = store
        .save_template("cli", found.id, &document, note)
        .await
        .map_err(|e| anyhow::anyhow!("template refused: {e}"))?;
    println!(
        "saved {app} template version {} (now active)",
        saved.version
    );
    Ok(())
}

/// What a running server set consists of, so `dev` can reuse `serve`'s wiring.
pub struct Running {
    pub public_addr: std::net::SocketAddr,
    pub admin_addr: std::net::SocketAddr,
    stop: CancellationToken,
    /// Cancelled when the drain starts: the membership task leaves the cluster at once.
    leave: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    servers: Vec<(
        actix_web::dev::ServerHandle,
        tokio::task::JoinHandle<std::io::Result<()>>,
    )>,
    gateway: gateway::Gateway,
}

/// Starts the public and admin listeners and the background tasks.
pub async fn start(settings: &Settings, store: PgStore) -> anyhow::Result<Running> {
    let public = bind(
        &settings.public_listen,
        "public_listen (STSGATE_PUBLIC_LISTEN)",
    )?;
    let admin_listener = bind(
        &settings.admin_listen,
        "admin_listen (STSGATE_ADMIN_LISTEN)",
    )?;
    let (public_addr, admin_addr) = (public.local_addr()?, admin_listener.local_addr()?);
    let sts = sts_core::StsClient::new(settings.sts_client_config())
        .map_err(|e| anyhow::anyhow!("sts.endpoint: {e}"))?;
    store
        .ensure_partitions(PARTITIONS_AHEAD)
        .await
        .context("creating issuance-log partitions")?;
    let changes = store.changes();
    let partitions = store.clone();
    let store: Arc<dyn Store> = Arc::new(store);
    // The issuance-log writers get their own pool: its connections are opened by the
    // writers' tasks alone, so they outlive the HTTP workers' runtimes at shutdown (the drain),
    // and a pool exhausted by app loads never holds up a commit.
    let audit_store: Arc<dyn Store> = Arc::new(
        PgStore::connect(
            settings.database_url()?,
            &settings.audit_pool_options(),
            settings.cipher()?,
        )
        .await
        .context("connecting to PostgreSQL for the issuance log (check DATABASE_URL)")?,
    );
    let gateway = gateway::Gateway::build_with_audit_store(
        store.clone(),
        audit_store,
        sts,
        settings.gateway_config(),
    );
    let stop = CancellationToken::new();
    let leave = stop.child_token();
    let mut tasks = vec![tokio::spawn(gateway::follow_changes(
        changes,
        gateway.apps.clone(),
        stop.clone(),
    ))];
    tasks.push(tokio::spawn(maintain_rollup(
        partitions.clone(),
        stop.clone(),
    )));
    tasks.push(tokio::spawn(maintain_log(
        partitions,
        settings.retention_policy(),
        stop.clone(),
    )));
    tasks.push(gateway.join_cluster(
        public_addr.to_string(),
        admin_addr.to_string(),
        leave.clone(),
    ));

    let public_server = gateway.serve(public)?;
    let mut admin_config = settings.admin_config();
    admin_config.member_live_within = gateway.membership.live_within();
    // The integration card's credential URL: known when the API listens on one address.
    if admin_config.public_url.is_none() && public_addr.ip().is_loopback() {
        admin_config.public_url = Some(format!("http://{public_addr}"));
    }
    // "Test a token" with the gateway's own app cache and verifier (JWKS cache shared).
    let tester = Arc::new(crate::token_tester::GatewayTokenTester {
        apps: gateway.apps.clone(),
        verifier: gateway.service.jwt.clone(),
        store: store.clone(),
        database_timeout: gateway.service.database_timeout(),
    });
    let admin_server = admin::serve_state(
        admin_listener,
        admin::AdminState::new(store.clone(), admin_config)
            .with_token_tester(tester)
            .with_openapi(&crate::openapi::document()),
        settings.workers.clamp(1, 2),
    )?;
    let servers = [public_server, admin_server]
        .into_iter()
        .map(|s| (s.handle(), tokio::spawn(s)))
        .collect();
    Ok(Running {
        public_addr,
        admin_addr,
        stop,
        leave,
        tasks,
        servers,
        gateway,
    })
}

/// Of the graceful stop's `shutdown_timeout_secs`, what is kept for flushing the issuance log
/// after in-flight requests have had theirs (at most half of it).
const FLUSH_RESERVE: Duration = Duration::from_secs(5);

/// After a further signal cuts the graceful stop short: how long the issuance-log writers may
/// still take to commit what they hold (a commit is bounded by the database deadline anyway).
const FORCED_FLUSH: Duration = Duration::from_secs(3);

/// How long the background tasks (the membership's leave among them) get at the very end.
const TASKS_WITHIN: Duration = Duration::from_secs(2);

impl Running {
    /// The readiness drain that starts a graceful shutdown: `/readyz` answers 503 at once,
    /// the replica leaves the cluster's membership (the others recount), and for `period`
    /// the listeners keep accepting and serving, every response with `Connection: close`,
    /// so a load balancer's health check takes this replica out of rotation before its
    /// listeners close. A further signal ends the drain early.
    pub async fn drain(&self, period: Duration, signals: &mut Signals) {
        self.gateway.drain();
        self.leave.cancel();
        if period.is_zero() {
            return;
        }
        tracing::info!(
            drain_secs = period.as_secs_f64(),
            "draining: /readyz answers 503, requests are still served"
        );
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = signals.recv() => tracing::info!("another signal: the drain ends early"),
        }
    }

    /// Graceful, within `timeout` in all: stop accepting, let in-flight requests finish (all
    /// but [`FLUSH_RESERVE`] of it), then flush the issuance log (what is left). A further
    /// signal stops waiting for requests in flight at once: the issuance-log writers get
    /// [`FORCED_FLUSH`] more to commit what they hold, and the process exits (a request whose
    /// row had not committed by then never got its credential).
    pub async fn shutdown(self, timeout: Duration, signals: &mut Signals) {
        let stop_by = tokio::time::Instant::now() + timeout;
        let requests_by = stop_by - FLUSH_RESERVE.min(timeout / 2);
        let Running {
            stop,
            tasks,
            servers,
            gateway,
            ..
        } = self;
        let stopping = async {
            for (handle, _) in &servers {
                handle.stop(true).await;
            }
            for (_, task) in servers {
                let _ = task.await;
            }
        };
        let mut forced = false;
        tokio::select! {
            _ = stopping => {}
            _ = tokio::time::sleep_until(requests_by) => tracing::warn!(
                "requests still in flight at the end of the graceful stop; no longer waiting for them"
            ),
            _ = signals.recv() => {
                tracing::warn!("another signal: stopping at once, without waiting for requests in flight");
                forced = true;
            }
        }
        let flush_by = if forced {
            stop_by.min(tokio::time::Instant::now() + FORCED_FLUSH)
        } else {
            stop_by
        };
        let flush = gateway.shutdown(flush_by);
        tokio::pin!(flush);
        tokio::select! {
            _ = &mut flush => {}
            _ = signals.recv(), if !forced => {
                tracing::warn!("another signal: the issuance-log flush gets {FORCED_FLUSH:?} more at most");
                let cut = flush_by.min(tokio::time::Instant::now() + FORCED_FLUSH);
                let _ = tokio::time::timeout_at(cut, &mut flush).await;
            }
        }
        stop.cancel();
        let tasks_by = tokio::time::Instant::now() + TASKS_WITHIN;
        for t in tasks {
            if tokio::time::timeout_at(tasks_by, t).await.is_err() {
                break;
            }
        }
    }
}

/// Once a day: creates next months' issuance-log partitions and applies the retention policy
/// (which also runs once right after start). Replicas may all run it: retention steps hold an
/// advisory lock, partition creation is idempotent.
async fn maintain_log(
    store: PgStore,
    retention: Option<policy_store::RetentionPolicy>,
    stop: CancellationToken,
) {
    loop {
        if let Some(policy) = &retention {
            apply_retention(&store, policy).await;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(24 * 3600)) => {}
        }
        if let Err(e) = store.ensure_partitions(PARTITIONS_AHEAD).await {
            tracing::warn!(error = %e, "could not create issuance-log partitions");
        }
    }
}

/// Keeps the dashboard's hourly rollup current: at start (the first run backfills 8 days),
/// then every minute. Replicas may all run it; one refreshes at a time.
async fn maintain_rollup(store: PgStore, stop: CancellationToken) {
    loop {
        if let Err(e) = store.refresh_rollup(time::OffsetDateTime::now_utc()).await {
            tracing::warn!(error = %e, "could not refresh the dashboard's hourly rollup");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

async fn apply_retention(store: &PgStore, policy: &policy_store::RetentionPolicy) {
    match store
        .apply_retention(policy, time::OffsetDateTime::now_utc())
        .await
    {
        Ok(report) if report.busy => {
            tracing::info!("issuance-log retention is running on another replica")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "issuance-log retention failed; nothing more was dropped")
        }
    }
}

/// `stsgate rollup`: refreshes the dashboard's hourly rollup once.
pub async fn rollup(settings: &Settings) -> anyhow::Result<()> {
    let store = connect(settings).await?;
    let started = std::time::Instant::now();
    let done = store
        .refresh_rollup(time::OffsetDateTime::now_utc())
        .await?;
    if done.busy {
        println!("another replica is refreshing the rollup right now; nothing was done");
    } else {
        println!(
            "rollup refreshed for {} to {} in {} ms",
            done.from,
            done.to,
            started.elapsed().as_millis()
        );
    }
    Ok(())
}

/// `stsgate retention`: applies the retention policy now, or with `dry_run` lists what it
/// would drop.
pub async fn retention(settings: &Settings, dry_run: bool) -> anyhow::Result<()> {
    let Some(policy) = settings.retention_policy() else {
        println!("audit.retention_days is 0: the issuance log is kept forever");
        return Ok(());
    };
    let store = connect(settings).await?;
    let now = time::OffsetDateTime::now_utc();
    if dry_run {
        let expired = store.expired_partitions(&policy, now).await?;
        if expired.is_empty() {
            println!("nothing is past {} days", policy.retention_days);
        }
        for p in expired {
            let to = match &policy.archive_dir {
                Some(dir) => format!("archive to {} and drop", dir.display()),
                None => "drop".to_owned(),
            };
            println!(
                "would {to} {} ({} to {})",
                p.name,
                p.from.date(),
                p.to.date()
            );
        }
        return Ok(());
    }
    let report = store.apply_retention(&policy, now).await?;
    if report.busy {
        println!("another replica is applying retention right now; nothing was done");
    } else if report.dropped.is_empty() {
        println!("nothing is past {} days", policy.retention_days);
    }
    for d in report.dropped {
        match d.archive {
            Some(a) => println!(
                "archived {} rows of {} to {} (sha256 {}) and dropped it",
                d.rows,
                d.partition.name,
                a.data.display(),
                a.sha256
            ),
            None => println!("dropped {} ({} rows)", d.partition.name, d.rows),
        }
    }
    Ok(())
}

pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    // From the start and for good: a signal that arrives while the previous one is handled
    // is kept for the next step, not lost, and none falls back to the default action.
    let mut signals = Signals::new()?;
    let starting = async {
        let store = connect(&settings).await?;
        start(&settings, store).await
    };
    let running = tokio::select! {
        running = starting => running?,
        _ = signals.recv() => {
            tracing::info!("a signal arrived while starting: stopped before serving");
            return Ok(());
        }
    };
    tracing::info!(public = %running.public_addr, admin = %running.admin_addr, "stsgate serving");
    signals.recv().await;
    running.drain(settings.shutdown_drain(), &mut signals).await;
    tracing::info!("shutting down: finishing in-flight requests and flushing the issuance log");
    running
        .shutdown(settings.shutdown_timeout(), &mut signals)
        .await;
    Ok(())
}

/// SIGTERM and SIGINT (Ctrl-C), listened to once for the whole process.
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next SIGTERM or SIGINT (one that came since the last call included).
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
