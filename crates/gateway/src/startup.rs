//! Building and running the public listener and its background tasks.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_request_identifier::RequestIdentifier;
use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use policy_store::{ChangeFeed, Store};
use sts_core::StsClient;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::apps::AppResolver;
use crate::audit::{AuditConfig, AuditWriter};
use crate::cluster::{Budget, ClusterConfig, Membership, SharedCredentials};
use crate::cooldown::CooldownConfig;
use crate::http::{PublicState, Readiness, access_log, close_when_draining, configure};
use crate::jwt::{JwksConfig, JwtVerifier};
use crate::metrics::Metrics;
use crate::service::Service;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub workers: usize,
    /// Take the client IP from the last entry of the last `X-Forwarded-For` line, the one the
    /// proxy added (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Upper bound on how stale an app's settings can be if a change notification is lost.
    pub app_cache_ttl: Duration,
    pub credential_cache_entries: u64,
    pub jwks: JwksConfig,
    pub audit: AuditConfig,
    /// Seconds in-flight requests get to finish at shutdown.
    pub shutdown_timeout: u64,
    /// Each request's one database deadline ([`crate::deadline::Deadline`]): the app load,
    /// the cluster steps of a miss and the issuance-log commit all draw from it; past it the
    /// answer is 503. Also `/readyz`'s bound.
    pub database_timeout: Duration,
    /// Cluster mode: membership, the shared STS budget and credentials (DESIGN §8).
    pub cluster: ClusterConfig,
    /// The authentication-failure cool-down per source address.
    pub cooldown: CooldownConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            trust_forwarded_for: false,
            app_cache_ttl: Duration::from_secs(30),
            credential_cache_entries: 100_000,
            jwks: JwksConfig::default(),
            audit: AuditConfig::default(),
            shutdown_timeout: 30,
            database_timeout: Duration::from_secs(3),
            cluster: ClusterConfig::default(),
            cooldown: CooldownConfig::default(),
        }
    }
}

/// The gateway's shared parts. Build once, serve on one listener, then [`Gateway::shutdown`].
pub struct Gateway {
    pub service: Arc<Service>,
    pub apps: Arc<AppResolver>,
    pub metrics: Arc<Metrics>,
    /// This replica's membership of the cluster (run it with [`Gateway::join_cluster`]).
    pub membership: Arc<Membership>,
    /// `/readyz`, shared by every server built by [`Gateway::serve`].
    readiness: Arc<Readiness>,
    store: Arc<dyn Store>,
    config: GatewayConfig,
    writers: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Spawns the audit writers; must run inside a Tokio runtime.
    pub fn build(store: Arc<dyn Store>, sts: StsClient, config: GatewayConfig) -> Self {
        Self::build_with_audit_store(store.clone(), store, sts, config)
    }

    /// [`Gateway::build`] with the issuance-log writers on `audit_store`: give them a pool of
    /// their own, opened outside the HTTP workers, so their connections outlive the workers'
    /// runtimes while the shutdown drain writes what is left.
    pub fn build_with_audit_store(
        store: Arc<dyn Store>,
        audit_store: Arc<dyn Store>,
        sts: StsClient,
        config: GatewayConfig,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        let sts_longest = sts.config().longest_call();
        let apps = Arc::new(AppResolver::new(
            store.clone(),
            sts,
            config.app_cache_ttl,
            config.jwks.compile_options(),
        ));
        let (audit, writers) =
            AuditWriter::spawn(audit_store, metrics.clone(), config.audit.clone());
        let membership = Arc::new(Membership::new(
            store.clone(),
            metrics.clone(),
            config.cluster.heartbeat,
        ));
        let shared = SharedCredentials::new(
            store.clone(),
            metrics.clone(),
            membership.clone(),
            config.cluster.shared_credentials,
            config.cluster.claim_timeout,
            sts_longest,
        );
        let service = Arc::new(Service::new(
            apps.clone(),
            JwtVerifier::new(config.jwks.clone()),
            audit,
            metrics.clone(),
            config.credential_cache_entries,
            config.database_timeout,
            membership.clone(),
            Budget::new(store.clone()),
            shared,
            config.cooldown.clone(),
        ));
        Self {
            service,
            apps,
            metrics,
            membership,
            readiness: Arc::default(),
            store,
            config,
            writers,
        }
    }

    /// The public HTTP server on `listener` (port 0 in tests). Its signals are off: the
    /// caller stops it through the returned server's handle.
    pub fn serve(&self, listener: TcpListener) -> std::io::Result<Server> {
        let state = web::Data::new(PublicState {
            service: self.service.clone(),
            apps: self.apps.clone(),
            store: self.store.clone(),
            trust_forwarded_for: self.config.trust_forwarded_for,
            readiness: self.readiness.clone(),
        });
        Ok(HttpServer::new(move || {
            App::new()
                .wrap(from_fn(close_when_draining))
                .wrap(from_fn(access_log))
                .wrap(RequestIdentifier::with_uuid())
                .app_data(state.clone())
                .configure(configure)
        })
        .workers(self.config.workers.max(1))
        .disable_signals()
        .shutdown_timeout(self.config.shutdown_timeout)
        .listen(listener)?
        .run())
    }

    /// The start of a graceful shutdown: `/readyz` answers 503 from now on and every response
    /// closes its connection, while the listeners keep serving (stop them after the drain).
    pub fn drain(&self) {
        self.readiness.drain();
    }

    /// Beats this replica's membership row until `stop` is cancelled, then leaves the
    /// cluster. The addresses are what the admin dashboard lists for it.
    pub fn join_cluster(
        &self,
        public_addr: String,
        admin_addr: String,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(self.membership.clone().run(public_addr, admin_addr, stop))
    }

    /// Drops the gateway's handles and waits for the audit writers to flush what is queued,
    /// until `by` at most. Call after every server built by [`Gateway::serve`] has stopped
    /// (while requests are still in flight the writers keep taking their rows until `by`).
    pub async fn shutdown(self, by: tokio::time::Instant) {
        let Gateway {
            service, writers, ..
        } = self;
        drop(service);
        // Each queued batch is bounded by the commit timeout; do not wait forever on top.
        for w in writers {
            if tokio::time::timeout_at(by, w).await.is_err() {
                tracing::error!("the issuance-log writers did not finish in time for the shutdown");
                break;
            }
        }
    }
}

/// Follows the store's change feed: a change to an app drops that app from the cache, a
/// resync (the feed reconnected, or a notification could not be read) drops every app, and
/// admin-user changes drop nothing. Ends when `stop` is cancelled.
pub async fn follow_changes(mut feed: ChangeFeed, apps: Arc<AppResolver>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            change = feed.next() => {
                tracing::debug!(?change, "change notification");
                apps.apply(change);
            }
        }
    }
}
