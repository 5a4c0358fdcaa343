//! Resolving an app slug to everything the issuance path needs, cached (DESIGN §5.1).
//!
//! Entries are dropped on every admin change (Postgres `LISTEN/NOTIFY`, see
//! [`crate::startup`]) and after a TTL that bounds staleness if a notification is lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache;
use policy_store::{App, PolicyTemplateVersion, Store, StoreError, StsMode};
use sts_core::{CosResource, PermanentKey, StsClient};

use crate::jwt::{CompileOptions, CompiledJwt};

/// An app with its JWT keys compiled, template, block list and STS client.
pub struct ResolvedApp {
    pub app: App,
    /// `None` when the app has no usable JWT settings (every token is refused).
    pub jwt: Option<CompiledJwt>,
    pub template: Option<PolicyTemplateVersion>,
    pub bucket: CosResource,
    pub blocked: HashSet<String>,
    pub key: PermanentKey,
    pub sts: StsClient,
    pub mode: StsMode,
    /// The resolver's invalidation count when loading began: a change notification that
    /// arrives during the load makes this entry stale (see [`AppResolver::resolve`]).
    generation: u64,
}

/// Why an app could not be resolved (shared between concurrent waiters).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no such app")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct AppResolver {
    store: Arc<dyn Store>,
    sts: StsClient,
    cache: Cache<String, Arc<ResolvedApp>>,
    /// Slugs with no app, with the invalidation count when that was found (kept apart so
    /// that requests for made-up apps cannot evict real ones, nor hit the database each time).
    missing: Cache<String, u64>,
    invalidations: AtomicU64,
    /// How apps' JWT settings are compiled (the store checks them with the same options).
    jwt_options: CompileOptions,
}

/// `[a-z0-9][a-z0-9-]{0,62}`: anything else cannot be an app and never reaches the database.
pub fn valid_slug(slug: &str) -> bool {
    let b = slug.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

impl AppResolver {
    pub fn new(
        store: Arc<dyn Store>,
        sts: StsClient,
        ttl: Duration,
        jwt_options: CompileOptions,
    ) -> Self {
        Self {
            store,
            sts,
            cache: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            missing: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            invalidations: AtomicU64::new(0),
            jwt_options,
        }
    }

    /// The app, or `None` when no such app exists. Concurrent misses share one load.
    ///
    /// `invalidate_all` only drops entries that exist when it runs, so a load that read the
    /// database before an admin change but finished after its notification would otherwise
    /// stay cached for the whole TTL. Entries carry the invalidation count from when their
    /// load began, and one that is older than the current count is loaded again.
    pub async fn resolve(&self, slug: &str) -> Result<Option<Arc<ResolvedApp>>, Arc<ResolveError>> {
        if !valid_slug(slug) {
            return Ok(None);
        }
        let mut last = None;
        for _ in 0..3 {
            let generation = self.invalidations();
            if self.missing.get(slug).await == Some(generation) {
                return Ok(None);
            }
            let loaded = self
                .cache
                .try_get_with_by_ref(slug, async {
                    self.load(slug, generation)
                        .await?
                        .map(Arc::new)
                        .ok_or(ResolveError::NotFound)
                })
                .await;
            match loaded {
                Ok(app) if app.generation == self.invalidations() => return Ok(Some(app)),
                Ok(stale) => {
                    self.cache.invalidate(slug).await;
                    last = Some(stale);
                }
                Err(e) if matches!(*e, ResolveError::NotFound) => {
                    self.missing.insert(slug.to_owned(), generation).await;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        // Changes keep arriving: serve the newest load; the next notification drops it.
        Ok(last)
    }

    async fn load(&self, slug: &str, generation: u64) -> Result<Option<ResolvedApp>, StoreError> {
        let Some(app) = self.store.app_by_slug(slug).await? else {
            return Ok(None);
        };
        let auth = self.store.app_auth(app.id).await?;
        let template = self.store.active_template(app.id).await?;
        let blocked = self
            .store
            .blocked_subjects(app.id)
            .await?
            .into_iter()
            .map(|b| b.subject)
            .collect();
        let jwt = auth.and_then(|a| {
            CompiledJwt::compile(&a, self.jwt_options)
                .inspect_err(|e| tracing::error!(app = %app.slug, error = %e, "unusable JWT settings; every token will be refused"))
                .ok()
        });
        let bucket = CosResource::new(&app.region, &app.bucket).map_err(|e| {
            StoreError::Invalid(vec![policy_store::FieldError::new("bucket", e.to_string())])
        })?;
        let sts = match &app.sts_endpoint {
            Some(endpoint) => self.sts.for_endpoint(endpoint, &app.region),
            None => self.sts.for_endpoint(self.sts.endpoint(), &app.region),
        }
        .map_err(|e| {
            StoreError::Invalid(vec![policy_store::FieldError::new(
                "sts_endpoint",
                e.to_string(),
            )])
        })?;
        Ok(Some(ResolvedApp {
            key: PermanentKey {
                secret_id: app.secret_id.clone(),
                secret_key: app.secret_key.clone(),
            },
            mode: app.mode,
            jwt,
            template,
            bucket,
            blocked,
            sts,
            app,
            generation,
        }))
    }

    /// Drops every cached app (an admin change somewhere, or a lost notification).
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
        self.invalidations.fetch_add(1, Ordering::SeqCst);
    }

    /// How many times the cache was invalidated (tests wait on this).
    pub fn invalidations(&self) -> u64 {
        self.invalidations.load(Ordering::SeqCst)
    }
}
