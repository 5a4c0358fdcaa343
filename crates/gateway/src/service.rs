//! The issuance path (DESIGN §5): app → JWT → block list and limits → policy → cache → STS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use policy_store::{
    BudgetGrant, IssuanceRecord, NarrowError, Outcome, RenderContext, RenderError, StsMode,
    sub_hash,
};
use sts_core::client::{AssumeRole, GetFederationToken};
use sts_core::{ErrorClass, StsError, TemporaryCredentials};
use time::OffsetDateTime;

use crate::apps::{AppResolver, ResolveError, ResolvedApp};
use crate::audit::{AuditWriter, log_text};
use crate::clock::unix_now;
use crate::cluster::budget::{granted, sts_budget};
use crate::cluster::{Budget, Membership, SharedCredentials};
use crate::cooldown::{AuthCooldown, CooldownConfig};
use crate::credcache::{CacheKey, CachedCredential, CredentialCache, evict_if_same, new_cache};
use crate::deadline::Deadline;
use crate::error::ApiError;
use crate::jwt::{JwtError, JwtVerifier, Observed, unverified_claim};
use crate::metrics::Metrics;
use crate::ratelimit::{RateLimiter, replica_share};

/// A credential request, as the HTTP layer parsed it.
#[derive(Debug, Clone, Default)]
pub struct CredentialRequest {
    pub app: String,
    pub token: Option<String>,
    pub actions: Option<Vec<String>>,
    pub prefix: Option<String>,
    pub duration_seconds: Option<u64>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: String,
    /// Set when the request's options could not be parsed (answered with 422).
    pub option_error: Option<String>,
}

/// A credential ready to return.
#[derive(Debug, Clone)]
pub struct Issued {
    pub credential: Arc<CachedCredential>,
    pub bucket: String,
    pub region: String,
    pub prefix: String,
    pub cached: bool,
}

pub struct Service {
    pub apps: Arc<AppResolver>,
    pub jwt: JwtVerifier,
    pub audit: AuditWriter,
    pub metrics: Arc<Metrics>,
    cache: CredentialCache,
    subject_limits: RateLimiter,
    /// Cluster mode (DESIGN §8): the live count, the shared STS budget and credentials.
    membership: Arc<Membership>,
    budget: Budget,
    shared: SharedCredentials,
    cooldown: AuthCooldown,
    /// Each request's budget for its database work (see [`crate::GatewayConfig`]).
    database_timeout: Duration,
}

/// What [`Service::issue`] learnt on its way, for the row and the metrics.
#[derive(Debug, Default)]
struct Progress {
    /// The app exists (its own metrics label).
    known_app: bool,
    /// The app's id and the verified subject, once known (the cool-down's known subjects).
    app_id: i64,
    subject: Option<String>,
}

/// A name STS accepts (`[\w+=,.@-]`, bounded) that still tells CloudAudit who it was.
fn sts_session_name(subject: &str, max: usize) -> String {
    let ok = subject.len() >= 2
        && subject.len() <= max
        && subject
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
    if ok {
        subject.to_owned()
    } else {
        format!("h-{}", &sub_hash(subject)[..max.min(34) - 2])
    }
}

fn jwt_error(e: &JwtError) -> ApiError {
    match e {
        JwtError::JwksUnavailable(_) => ApiError::Unavailable,
        other => ApiError::InvalidToken(other.code()),
    }
}

/// Charges a look-up whose credential this request did not mint itself: a cache hit (a
/// moment), or a wait for the mint another request of this replica was making, whose database
/// steps this request's deadline must cover too (or the database could hold it up for two
/// deadlines). The other request's STS call is not charged, as this request's own is not.
/// A credential this request minted was charged step by step.
fn charge_wait(
    deadline: &Deadline,
    entry: &moka::Entry<CacheKey, Arc<CachedCredential>>,
    since: Instant,
) {
    if entry.is_fresh() {
        return;
    }
    let waited = since.elapsed();
    let shared = if entry.value().minted >= since {
        entry.value().sts_time()
    } else {
        Duration::ZERO
    };
    deadline.charge(waited.saturating_sub(shared));
}

fn sts_error(e: &StsError) -> ApiError {
    // Unreachable, or a throttle or internal error (retried or not): STS is there but unwell,
    // so the client should come back later. Anything else is a refusal to look into.
    if e.is_unavailable() || e.class() == ErrorClass::Retryable {
        return ApiError::StsUnavailable {
            sts_code: e.code().map(str::to_owned),
        };
    }
    ApiError::StsRefused {
        sts_code: e.code().unwrap_or("InvalidResponse").to_owned(),
        sts_request_id: e.request_id().map(str::to_owned),
    }
}

impl Service {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        apps: Arc<AppResolver>,
        jwt: JwtVerifier,
        audit: AuditWriter,
        metrics: Arc<Metrics>,
        cache_entries: u64,
        database_timeout: Duration,
        membership: Arc<Membership>,
        budget: Budget,
        shared: SharedCredentials,
        cooldown: CooldownConfig,
    ) -> Self {
        Self {
            apps,
            jwt,
            audit,
            metrics,
            cache: new_cache(cache_entries),
            subject_limits: RateLimiter::new(1_000_000, Duration::from_secs(600)),
            membership,
            budget,
            shared,
            cooldown: AuthCooldown::new(cooldown),
            database_timeout,
        }
    }

    /// How long a request's database work may take before it is answered 503 (`/readyz`
    /// uses the same bound).
    pub fn database_timeout(&self) -> Duration {
        self.database_timeout
    }

    pub fn cached_credentials(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Runs the whole path, writes the issuance-log row, and only then answers. A credential
    /// is never returned unless its row has committed; a refusal is answered at once and its
    /// row goes through the refusal lane.
    pub async fn handle(&self, req: &CredentialRequest) -> Result<Issued, ApiError> {
        let started = Instant::now();
        let mut record = IssuanceRecord {
            id: 0,
            at: OffsetDateTime::now_utc(),
            app: log_text(&req.app, 128),
            subject: None,
            outcome: Outcome::Denied,
            http_status: 200,
            error_code: None,
            request_id: req.request_id.clone(),
            sts_request_id: None,
            tmp_secret_id: None,
            policy_hash: None,
            template_version: None,
            actions: Vec::new(),
            prefix: None,
            duration_seconds: None,
            expired_time: None,
            source_ip: req.source_ip.clone(),
            user_agent: req.user_agent.as_deref().map(|ua| log_text(ua, 512)),
            latency_us: 0,
            count: 1,
        };
        let mut progress = Progress::default();
        let ip = req.source_ip.as_deref().and_then(|ip| ip.parse().ok());
        // One database deadline per request: every step on the path and the commit draw from it.
        let deadline = Deadline::new(self.database_timeout);
        let result = self
            .issue(req, ip, &mut record, &mut progress, &deadline)
            .await;
        let label = if progress.known_app {
            req.app.as_str()
        } else {
            "_unknown"
        };
        let issued = match result {
            Ok(issued) => issued,
            Err(e) => {
                record.outcome = e.outcome();
                record.http_status = e.status().as_u16() as i16;
                if record.error_code.is_none() {
                    record.error_code = Some(log_text(&e.log_code(), 128));
                }
                if let ApiError::StsRefused {
                    sts_request_id: Some(id),
                    ..
                } = &e
                {
                    record.sts_request_id = Some(id.clone());
                }
                record.latency_us = started.elapsed().as_micros() as i64;
                self.metrics
                    .request(label, record.outcome, started.elapsed());
                if matches!(e, ApiError::MissingToken | ApiError::InvalidToken(_))
                    && self.cooldown.failed(ip)
                {
                    self.metrics.auth_cooldown_started();
                    tracing::warn!(source_ip = ?ip, "authentication failures: cooling down this address");
                }
                self.audit.refusal(record);
                return Err(e);
            }
        };
        record.outcome = if issued.cached {
            Outcome::Cached
        } else {
            Outcome::Issued
        };
        record.http_status = 200;
        record.tmp_secret_id = Some(issued.credential.tmp_secret_id().to_owned());
        record.sts_request_id = Some(issued.credential.request_id().to_owned());
        record.expired_time =
            OffsetDateTime::from_unix_timestamp(issued.credential.expired_time).ok();
        record.prefix = Some(issued.prefix.clone());
        record.latency_us = started.elapsed().as_micros() as i64;
        let outcome = record.outcome;
        // What the path left of the request's database deadline bounds queueing and the
        // commit together.
        let written = self.audit.record(record, deadline.instant()).await;
        // Counted as the client gets it: a credential whose row did not commit is a 503.
        let answered = if written.is_ok() {
            outcome
        } else {
            Outcome::UpstreamError
        };
        self.metrics.request(label, answered, started.elapsed());
        match written {
            Ok(()) => {
                if let Some(subject) = &progress.subject {
                    self.cooldown.succeeded(ip, progress.app_id, subject);
                }
                Ok(issued)
            }
            Err(e) => {
                tracing::error!(request_id = %req.request_id, error = %e, "no durable issuance record; refusing");
                Err(ApiError::Unavailable)
            }
        }
    }

    async fn issue(
        &self,
        req: &CredentialRequest,
        ip: Option<std::net::IpAddr>,
        record: &mut IssuanceRecord,
        progress: &mut Progress,
        deadline: &Deadline,
    ) -> Result<Issued, ApiError> {
        // The app load: waiting for a connection and every query draw from the deadline.
        let load_started = tokio::time::Instant::now();
        let resolved = self.apps.resolve(&req.app, deadline.instant()).await;
        deadline.charge(load_started.elapsed());
        let app = match resolved {
            Ok(Some(app)) => app,
            Ok(None) => {
                // The name is the client's choice: keep it out of the app column (and so
                // out of the dashboard's per-app rows), but say what was asked for.
                record.error_code = Some(format!("unknown_app:{}", log_text(&req.app, 64)));
                record.app = "_unknown".to_owned();
                return Err(ApiError::UnknownApp);
            }
            Err(e) => {
                match &*e {
                    ResolveError::Store(s) => {
                        tracing::error!(app = %record.app, error = %s, "cannot load app");
                    }
                    ResolveError::Deadline => tracing::error!(
                        app = %record.app,
                        timeout = ?self.database_timeout,
                        "cannot load app: the database did not answer in time"
                    ),
                    ResolveError::NotFound => {}
                }
                return Err(ApiError::Unavailable);
            }
        };
        progress.known_app = true;
        progress.app_id = app.app.id;
        if let Some(problem) = &req.option_error {
            return Err(ApiError::InvalidRequest(problem.clone()));
        }
        if !app.app.enabled {
            return Err(ApiError::AppDisabled);
        }
        let token = req.token.as_deref().ok_or(ApiError::MissingToken)?;
        // Unusable JWT settings are the server's fault: a 401 would make client apps sign
        // their users out.
        let jwt = app.jwt.as_ref().ok_or(ApiError::Misconfigured)?;
        // An address that keeps failing authentication waits before any verification work.
        let claimed = unverified_claim(token, jwt.user_claim());
        if let Err(retry_after) = self.cooldown.admit(ip, app.app.id, claimed) {
            self.metrics.auth_cooldown_refused();
            record.error_code = Some("rate_limited:auth_cooldown".to_owned());
            return Err(ApiError::RateLimited { retry_after });
        }
        let verified = match self.jwt.verify(jwt, token).await {
            Ok(v) => v,
            Err(e) => {
                let err = jwt_error(&e);
                // Which iss/aud/alg/kid arrived (read without verification), so the log says
                // why; never the token itself.
                if matches!(err, ApiError::InvalidToken(_)) {
                    let observed = Observed::of(token);
                    record.error_code =
                        Some(log_text(&format!("{}{observed}", err.log_code()), 512));
                }
                return Err(err);
            }
        };
        let subject = verified.subject;
        record.subject = Some(log_text(&subject, 256));
        progress.subject = Some(subject.clone());

        if app.blocked.contains(&subject) {
            return Err(ApiError::SubjectBlocked);
        }
        let template = app.template.as_ref().ok_or(ApiError::NoPolicy)?;
        record.template_version = Some(template.version);
        let duration = match req.duration_seconds {
            None => u64::try_from(app.app.duration_default).unwrap_or(1800),
            Some(d) if d >= 1 && d <= u64::try_from(app.app.duration_max).unwrap_or(0) => d,
            Some(d) => {
                return Err(ApiError::InvalidRequest(format!(
                    "duration_seconds must be between 1 and {}, got {d}",
                    app.app.duration_max
                )));
            }
        };
        record.duration_seconds = i32::try_from(duration).ok();

        let rendered = template
            .document
            .render(
                &RenderContext {
                    app: &app.app.slug,
                    subject: &subject,
                    claims: &verified.claims,
                },
                &app.bucket,
            )
            .map_err(|e| match e {
                RenderError::ForbiddenValue { .. }
                | RenderError::MissingClaim(_)
                | RenderError::TooLong(_) => ApiError::SubjectNotAllowed(e.to_string()),
                RenderError::Invalid(_) => ApiError::NoPolicy,
            })?;
        let policy = if req.actions.is_some() || req.prefix.is_some() {
            rendered
                .narrow(req.actions.as_deref(), req.prefix.as_deref(), &app.bucket)
                .map_err(|e| match e {
                    NarrowError::ActionNotGranted(_)
                    | NarrowError::BadPrefix(_)
                    | NarrowError::NothingLeft => ApiError::InvalidRequest(e.to_string()),
                })?
        } else {
            rendered
        };
        record.policy_hash = Some(policy.policy_hash.clone());
        record.actions = policy.actions.clone();
        record.prefix = Some(policy.prefix.clone());

        // Only a request that would get a credential takes a token: one refused above (a bad
        // duration or prefix, a subject the template cannot take) does not eat the quota.
        // Each replica allows its share of the limit (cluster-wide, approximately).
        let per_minute = replica_share(
            u32::try_from(app.app.rate_subject_per_minute).unwrap_or(0),
            self.membership.live(),
        );
        self.subject_limits
            .check(
                &(app.app.id, subject.as_str()),
                per_minute,
                Duration::from_secs(60),
            )
            .map_err(|retry_after| ApiError::RateLimited { retry_after })?;

        let min_remaining = match app.app.min_remaining {
            Some(m) if m >= 0 => u64::try_from(m)
                .unwrap_or(0)
                .min(duration.saturating_sub(1)),
            _ => duration / 2,
        };
        let key = CacheKey::new(
            app.app.id,
            app.app.updated_at.unix_timestamp_nanos(),
            template.version,
            &subject,
            &policy.policy_hash,
            duration,
        );
        // A local miss looks in the cluster's shared table before it calls STS; a claim it
        // wins there takes the app's STS budget token in the same statement.
        let per_second = u32::try_from(app.app.rate_app_per_second).unwrap_or(0);
        let lookup = || {
            self.cache.entry_by_ref(&key).or_try_insert_with(async {
                // Before the claim, which would take the STS budget's token with it.
                self.refuse_if_stalled(&app)?;
                self.shared
                    .get_or_mint(&key, deadline, sts_budget(per_second), |taken| {
                        self.mint(
                            &app,
                            &policy.policy,
                            &subject,
                            duration,
                            min_remaining,
                            taken,
                            deadline,
                        )
                    })
                    .await
            })
        };

        let looked_up = Instant::now();
        let mut entry = lookup().await.map_err(|e| (*e).clone())?;
        charge_wait(deadline, &entry, looked_up);
        if !entry.value().servable(looked_up) {
            // In the cache from before this request and past its reuse window (an entry can
            // outlive its window by a moment). Drop that entry, not whatever has replaced it
            // meanwhile, and look again: what comes back was minted after `looked_up`, by
            // this request or one it waited for, and is served as STS gave it.
            evict_if_same(&self.cache, &key, entry.value()).await;
            let again = Instant::now();
            entry = lookup().await.map_err(|e| (*e).clone())?;
            charge_wait(deadline, &entry, again);
        }
        Ok(Issued {
            credential: entry.value().clone(),
            bucket: app.app.bucket.clone(),
            region: app.app.region.clone(),
            prefix: policy.prefix.clone(),
            cached: !entry.is_fresh() || entry.value().from_peer,
        })
    }

    /// A miss is answered 503 before any cluster step or STS call while an issuance-log
    /// commit has waited half a database deadline with no answer from the database: its row
    /// would not commit either. (A lone replica's miss on an app without an STS budget has no
    /// database step before STS, and would otherwise find the stall only at its own commit,
    /// after the call.)
    fn refuse_if_stalled(&self, app: &ResolvedApp) -> Result<(), ApiError> {
        if !self.audit.commit_overdue(self.database_timeout / 2) {
            return Ok(());
        }
        tracing::warn!(
            app = %app.app.slug,
            "an issuance-log commit is overdue: the database has stalled; not minting"
        );
        self.metrics.mint_refused_stalled();
        Err(ApiError::Unavailable)
    }

    #[allow(clippy::too_many_arguments)]
    async fn mint(
        &self,
        app: &ResolvedApp,
        policy: &sts_core::Policy,
        subject: &str,
        duration: u64,
        min_remaining: u64,
        budget_taken: Option<BudgetGrant>,
        deadline: &Deadline,
    ) -> Result<Arc<CachedCredential>, ApiError> {
        self.refuse_if_stalled(app)?;
        // Too little of the deadline left to mint: no token is spent on it either.
        if budget_taken.is_none() && deadline.below_floor() {
            tracing::warn!(
                app = %app.app.slug,
                "too little of the request's database deadline is left to mint; not calling STS"
            );
            return Err(ApiError::Unavailable);
        }
        // The claim on the shared credential took the STS budget's token with it, or the
        // token is taken now.
        match budget_taken {
            Some(grant) => granted(grant)?,
            None => {
                let per_second = u32::try_from(app.app.rate_app_per_second).unwrap_or(0);
                self.budget
                    .take(app.app.id, per_second, self.membership.live(), deadline)
                    .await?;
            }
        }
        // A credential minted with too little of the deadline left could not get its row.
        if deadline.below_floor() {
            tracing::warn!(
                app = %app.app.slug,
                "too little of the request's database deadline is left to mint; not calling STS"
            );
            return Err(ApiError::Unavailable);
        }
        let start_time = unix_now();
        let started = Instant::now();
        let result: Result<TemporaryCredentials, StsError> = match app.mode {
            StsMode::FederationToken => {
                app.sts
                    .get_federation_token(
                        &app.key,
                        &GetFederationToken {
                            name: &sts_session_name(subject, 32),
                            policy,
                            duration_seconds: duration,
                        },
                    )
                    .await
            }
            StsMode::AssumeRole => {
                app.sts
                    .assume_role(
                        &app.key,
                        &AssumeRole {
                            role_arn: app.app.role_arn.as_deref().unwrap_or_default(),
                            role_session_name: &sts_session_name(subject, 64),
                            external_id: app.app.external_id.as_deref(),
                            policy,
                            duration_seconds: duration,
                        },
                    )
                    .await
            }
        };
        let sts_took = started.elapsed();
        let label = match &result {
            Ok(_) => "ok",
            Err(e) if e.is_unavailable() => "unavailable",
            Err(_) => "error",
        };
        self.metrics
            .sts_call(&app.app.slug, label, started.elapsed());
        let creds = result.map_err(|e| {
            tracing::warn!(
                app = %app.app.slug,
                sts_code = e.code(),
                sts_request_id = e.request_id(),
                error = %e,
                "STS call failed"
            );
            sts_error(&e)
        })?;
        tracing::info!(
            app = %app.app.slug,
            tmp_secret_id = %creds.tmp_secret_id,
            sts_request_id = %creds.request_id,
            "credential minted"
        );
        let reuse_until = creds.expired_time - i64::try_from(min_remaining).unwrap_or(0);
        Ok(Arc::new(
            CachedCredential::new(creds, start_time, reuse_until, Instant::now())
                .with_sts_time(sts_took),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request that waits for another request's mint is charged that wait, except the
    /// STS call; the one that minted is not charged again.
    #[tokio::test]
    async fn a_wait_for_another_requests_mint_draws_from_the_deadline() {
        let cache = new_cache(100);
        let key = CacheKey::new(1, 1, 1, "alice", "h", 600);
        let mint = || async {
            // The minting request's database steps, then its STS call.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let sts = Instant::now();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = unix_now();
            Ok::<_, ApiError>(Arc::new(
                CachedCredential::new(
                    TemporaryCredentials {
                        tmp_secret_id: "AKIDtmp".into(),
                        tmp_secret_key: secrecy::SecretString::from("k"),
                        session_token: secrecy::SecretString::from("t"),
                        expired_time: now + 900,
                        expiration: String::new(),
                        request_id: "r".into(),
                    },
                    now,
                    now + 600,
                    Instant::now(),
                )
                .with_sts_time(sts.elapsed()),
            ))
        };
        let (minter, waiter) = (
            Deadline::new(Duration::from_secs(3)),
            Deadline::new(Duration::from_secs(3)),
        );
        let look = |deadline: &'static Deadline| {
            let (cache, key) = (cache.clone(), key.clone());
            async move {
                let since = Instant::now();
                let entry = cache
                    .entry_by_ref(&key)
                    .or_try_insert_with(mint())
                    .await
                    .unwrap();
                charge_wait(deadline, &entry, since);
                entry.is_fresh()
            }
        };
        let (minter, waiter): (&'static Deadline, &'static Deadline) =
            (Box::leak(Box::new(minter)), Box::leak(Box::new(waiter)));
        let first = tokio::spawn(look(minter));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = tokio::spawn(look(waiter));
        assert!(first.await.unwrap());
        assert!(!second.await.unwrap());
        assert_eq!(minter.remaining(), Duration::from_secs(3));
        // It waited at least the last 200 ms of the other's database steps.
        assert!(
            waiter.remaining() <= Duration::from_millis(2800),
            "{:?} left",
            waiter.remaining()
        );
        // A hit on what is in the cache costs a moment.
        let hit = Box::leak(Box::new(Deadline::new(Duration::from_secs(3))));
        assert!(!look(hit).await);
        assert!(hit.remaining() > Duration::from_millis(2800));
    }

    #[test]
    fn session_names_are_safe_for_sts() {
        assert_eq!(sts_session_name("alice", 32), "alice");
        let hostile = sts_session_name("../bob", 32);
        assert!(
            hostile.starts_with("h-") && hostile.len() == 32,
            "{hostile}"
        );
        assert!(sts_session_name(&"a".repeat(40), 32).starts_with("h-"));
        assert_eq!(sts_session_name(&"a".repeat(40), 64), "a".repeat(40));
    }
}
