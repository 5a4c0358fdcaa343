//! Resolving an app slug to everything the issuance path needs, cached (DESIGN §5.1).
//!
//! The store's change feed (see [`crate::startup::follow_changes`]) names the app that
//! changed: only that app's entry is dropped. A lost connection or an unreadable notification
//! drops everything, and a TTL bounds staleness if a notification is lost unnoticed.
//! Admin-user and session changes do not concern the gateway and drop nothing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use moka::future::Cache;
use policy_store::{
    App, AppId, Change, PolicyTemplateVersion, Store, StoreError, StsMode, valid_slug,
};
use sts_core::{CosResource, PermanentKey, StsClient};
use tokio::time::Instant;

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
    /// The resolver's clock when loading began: a change to this app that is applied during
    /// the load makes this entry stale (see [`AppResolver::resolve`]).
    loaded_at: u64,
}

/// Why an app could not be resolved (shared between concurrent waiters).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no such app")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The caller's deadline passed before the app was loaded (the database is slow or
    /// silent). Only that caller gets it: a load it shared goes on for the others.
    #[error("the app could not be loaded before the request's database deadline")]
    Deadline,
}

/// When things last changed, on a clock that ticks once per applied change.
#[derive(Default)]
struct Versions {
    clock: u64,
    /// The last full flush.
    flushed: u64,
    /// The last change to any app (a slug that had no app may have one now).
    any_app: u64,
    /// The last change to each app since the last flush.
    apps: HashMap<AppId, u64>,
}

impl Versions {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

pub struct AppResolver {
    store: Arc<dyn Store>,
    sts: StsClient,
    cache: Cache<String, Arc<ResolvedApp>>,
    /// Slugs with no app, with the clock when that lookup began (kept apart so that requests
    /// for made-up apps cannot evict real ones, nor hit the database each time).
    missing: Cache<String, u64>,
    versions: RwLock<Versions>,
    /// Change events applied, of every kind (tests wait on it).
    applied: AtomicU64,
    /// App loads from the store (tests count them).
    loads: AtomicU64,
    /// How apps' JWT settings are compiled (the store checks them with the same options).
    jwt_options: CompileOptions,
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
                .support_invalidation_closures()
                .build(),
            missing: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            versions: RwLock::default(),
            applied: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            jwt_options,
        }
    }

    /// The app, or `None` when no such app exists, or [`ResolveError::Deadline`] once
    /// `deadline` has passed. Concurrent misses share one load.
    ///
    /// The deadline is the caller's own: everything done for it (waiting for a pool
    /// connection, every query of the load, waiting for a load another request started) ends
    /// there. A caller that joined a shared load gives up at its deadline without cutting the
    /// load short for the others; if the caller running the load gives up, a waiter takes
    /// over with a load of its own.
    ///
    /// Dropping an entry does not stop a load already under way, so a load that read the
    /// database before an admin change but finished after its notification would otherwise
    /// stay cached for the whole TTL. Entries carry the clock from when their load began, and
    /// one loaded before the last change to its app (or the last flush) is loaded again.
    /// Changes to other apps do not matter to it.
    pub async fn resolve(
        &self,
        slug: &str,
        deadline: Instant,
    ) -> Result<Option<Arc<ResolvedApp>>, Arc<ResolveError>> {
        tokio::time::timeout_at(deadline, self.resolve_unbounded(slug))
            .await
            .unwrap_or_else(|_| Err(Arc::new(ResolveError::Deadline)))
    }

    async fn resolve_unbounded(
        &self,
        slug: &str,
    ) -> Result<Option<Arc<ResolvedApp>>, Arc<ResolveError>> {
        if !valid_slug(slug) {
            return Ok(None);
        }
        let mut last = None;
        for _ in 0..3 {
            if self.known_missing(slug).await {
                return Ok(None);
            }
            let started = self.clock();
            let loaded = self
                .cache
                .try_get_with_by_ref(slug, async {
                    match self.load(slug, started).await? {
                        Some(app) => Ok(Arc::new(app)),
                        None => {
                            // Only the load itself records its start; waiters that joined
                            // it later began after it.
                            self.missing.insert(slug.to_owned(), started).await;
                            Err(ResolveError::NotFound)
                        }
                    }
                })
                .await;
            match loaded {
                Ok(app) if self.is_current(&app) => return Ok(Some(app)),
                Ok(stale) => {
                    self.cache.invalidate(slug).await;
                    last = Some(stale);
                }
                // Missing since before the latest app change? Look again.
                Err(e) if matches!(*e, ResolveError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        // Changes keep arriving: serve the newest load; the next notification drops it.
        Ok(last)
    }

    /// The app as cached now, without loading it: `None` when it is not cached, or was
    /// loaded before its latest change.
    pub async fn cached(&self, slug: &str) -> Option<Arc<ResolvedApp>> {
        self.cache
            .get(slug)
            .await
            .filter(|app| self.is_current(app))
    }

    /// A lookup found no app under `slug`, and no app has changed since it began.
    async fn known_missing(&self, slug: &str) -> bool {
        let Some(looked_at) = self.missing.get(slug).await else {
            return false;
        };
        looked_at >= self.read().any_app
    }

    fn is_current(&self, app: &ResolvedApp) -> bool {
        let v = self.read();
        let changed = v.apps.get(&app.app.id).copied().unwrap_or(0);
        app.loaded_at >= v.flushed.max(changed)
    }

    fn clock(&self) -> u64 {
        self.read().clock
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Versions> {
        // The lock guards plain counters: a panic elsewhere cannot leave them inconsistent.
        self.versions.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Versions> {
        self.versions.write().unwrap_or_else(|e| e.into_inner())
    }

    async fn load(&self, slug: &str, loaded_at: u64) -> Result<Option<ResolvedApp>, StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
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
            loaded_at,
        }))
    }

    /// Applies one change from the store's feed: drops what it may have made stale.
    pub fn apply(&self, change: Change) {
        match change {
            Change::App(id) => self.invalidate_app(id),
            // Admin users and sessions are the admin listener's business.
            Change::AdminUsers => {}
            Change::Resync => self.invalidate_all(),
        }
        self.applied.fetch_add(1, Ordering::SeqCst);
    }

    /// Drops the app `id` (whatever its slug now or before), and every "no such app" answer:
    /// the change may be the creation of an app, or a new slug.
    fn invalidate_app(&self, id: AppId) {
        {
            let mut v = self.write();
            let now = v.tick();
            v.apps.insert(id, now);
            v.any_app = now;
        }
        // Only fails when invalidation closures are off; they are on (see `new`).
        let _ = self
            .cache
            .invalidate_entries_if(move |_, resolved| resolved.app.id == id);
        self.missing.invalidate_all();
    }

    /// Drops every cached app (a lost or unreadable notification).
    pub fn invalidate_all(&self) {
        {
            let mut v = self.write();
            let now = v.tick();
            v.flushed = now;
            v.any_app = now;
            v.apps.clear();
        }
        self.cache.invalidate_all();
        self.missing.invalidate_all();
    }

    /// How many change events have been applied, of every kind (tests wait on this).
    pub fn changes_applied(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// How many times an app was loaded from the store.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    //! The cache against a real store. Loads are counted; `Arc::ptr_eq` tells a cached entry
    //! from a reloaded one.

    use policy_store::testing::{SeedApp, TestDatabase, fresh_database, seed_app, test_cipher};
    use policy_store::{AppStore, PgStore};
    use sts_core::StsClientConfig;

    use super::*;

    struct Fixture {
        db: TestDatabase,
        store: Arc<PgStore>,
        apps: Arc<AppResolver>,
        a: App,
        b: App,
    }

    async fn fixture() -> Fixture {
        sts_core::install_crypto_provider();
        let db = fresh_database().await.unwrap();
        let store = Arc::new(PgStore::new(db.pool.clone(), test_cipher()));
        let a = seed_app(&*store, "test", &SeedApp::new("app-a"))
            .await
            .unwrap();
        let b = seed_app(&*store, "test", &SeedApp::new("app-b"))
            .await
            .unwrap();
        let sts = StsClient::new(StsClientConfig::default()).unwrap();
        // A TTL far beyond the test: only invalidation drops entries.
        let apps = Arc::new(AppResolver::new(
            store.clone(),
            sts,
            Duration::from_secs(3600),
            CompileOptions::default(),
        ));
        Fixture {
            db,
            store,
            apps,
            a,
            b,
        }
    }

    /// Far enough for any test that is not about deadlines.
    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    impl Fixture {
        async fn resolve(&self, slug: &str) -> Option<Arc<ResolvedApp>> {
            self.apps.resolve(slug, later()).await.unwrap()
        }
    }

    #[tokio::test]
    async fn a_change_to_one_app_leaves_the_others_cached() {
        let f = fixture().await;
        let a1 = f.resolve("app-a").await.unwrap();
        let b1 = f.resolve("app-b").await.unwrap();
        assert_eq!(f.apps.loads(), 2);

        f.apps.apply(Change::App(f.b.id));
        let a2 = f.resolve("app-a").await.unwrap();
        let b2 = f.resolve("app-b").await.unwrap();
        assert!(Arc::ptr_eq(&a1, &a2), "app-a was reloaded");
        assert!(!Arc::ptr_eq(&b1, &b2), "app-b was not reloaded");
        assert_eq!(f.apps.loads(), 3);
        assert_eq!(f.apps.changes_applied(), 1);
    }

    #[tokio::test]
    async fn a_change_to_an_app_is_seen_on_the_next_request() {
        let f = fixture().await;
        assert!(f.resolve("app-a").await.unwrap().app.enabled);
        f.store
            .set_app_enabled("admin", f.a.id, false)
            .await
            .unwrap();
        // Until the notification is applied the cache answers (this is what it is for).
        assert!(f.resolve("app-a").await.unwrap().app.enabled);
        f.apps.apply(Change::App(f.a.id));
        assert!(!f.resolve("app-a").await.unwrap().app.enabled);

        // A new slug: the entry under the old one goes, whatever the notification says.
        let mut renamed = SeedApp::new("app-a2").app_input();
        renamed.enabled = false;
        f.store.update_app("admin", f.a.id, &renamed).await.unwrap();
        f.apps.apply(Change::App(f.a.id));
        assert!(f.resolve("app-a").await.is_none());
        assert_eq!(f.resolve("app-a2").await.unwrap().app.id, f.a.id);
    }

    #[tokio::test]
    async fn admin_user_changes_invalidate_nothing() {
        let f = fixture().await;
        let a1 = f.resolve("app-a").await.unwrap();
        let b1 = f.resolve("app-b").await.unwrap();
        assert!(f.resolve("no-such-app").await.is_none());
        let loads = f.apps.loads();

        f.apps.apply(Change::AdminUsers);
        assert_eq!(f.apps.changes_applied(), 1);
        assert!(Arc::ptr_eq(&a1, &f.resolve("app-a").await.unwrap()));
        assert!(Arc::ptr_eq(&b1, &f.resolve("app-b").await.unwrap()));
        assert!(f.resolve("no-such-app").await.is_none());
        assert_eq!(f.apps.loads(), loads);
    }

    #[tokio::test]
    async fn a_resync_drops_every_app() {
        let f = fixture().await;
        let a1 = f.resolve("app-a").await.unwrap();
        let b1 = f.resolve("app-b").await.unwrap();
        f.apps.apply(Change::Resync);
        assert!(!Arc::ptr_eq(&a1, &f.resolve("app-a").await.unwrap()));
        assert!(!Arc::ptr_eq(&b1, &f.resolve("app-b").await.unwrap()));
        assert_eq!(f.apps.loads(), 4);
    }

    #[tokio::test]
    async fn an_app_created_after_a_miss_is_found_once_its_change_is_applied() {
        let f = fixture().await;
        assert!(f.resolve("app-c").await.is_none());
        assert!(f.resolve("app-c").await.is_none());
        assert_eq!(f.apps.loads(), 1, "a miss is cached too");

        let c = seed_app(&*f.store, "test", &SeedApp::new("app-c"))
            .await
            .unwrap();
        f.apps.apply(Change::App(c.id));
        assert_eq!(f.resolve("app-c").await.unwrap().app.id, c.id);
    }

    /// Holds `blocked_subjects` so that an app load stops after reading the app itself, and
    /// waits until one does.
    async fn stall_loads(db: &TestDatabase) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let mut lock = db.pool.begin().await.unwrap();
        sqlx::query("LOCK TABLE blocked_subjects IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *lock)
            .await
            .unwrap();
        lock
    }

    async fn wait_until_stalled(db: &TestDatabase) {
        for _ in 0..500 {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE NOT granted \
                 AND relation = 'blocked_subjects'::regclass",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            if waiting > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the app load never reached the block list");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_load_that_began_before_its_apps_change_is_not_served() {
        let f = fixture().await;
        let lock = stall_loads(&f.db).await;
        let apps = f.apps.clone();
        let racing =
            tokio::spawn(async move { apps.resolve("app-a", later()).await.unwrap().unwrap() });
        wait_until_stalled(&f.db).await;
        // The load has read app-a as enabled; now it is disabled and the change applied.
        f.store
            .set_app_enabled("admin", f.a.id, false)
            .await
            .unwrap();
        f.apps.apply(Change::App(f.a.id));
        lock.rollback().await.unwrap();

        let served = racing.await.unwrap();
        assert!(!served.app.enabled, "the stale load was served");
        assert_eq!(f.apps.loads(), 2);
        assert!(!f.resolve("app-a").await.unwrap().app.enabled);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_load_that_raced_another_apps_change_is_served() {
        let f = fixture().await;
        let lock = stall_loads(&f.db).await;
        let apps = f.apps.clone();
        let racing =
            tokio::spawn(async move { apps.resolve("app-a", later()).await.unwrap().unwrap() });
        wait_until_stalled(&f.db).await;
        f.apps.apply(Change::App(f.b.id));
        lock.rollback().await.unwrap();

        let served = racing.await.unwrap();
        assert_eq!(
            f.apps.loads(),
            1,
            "app-a was loaded again for app-b's change"
        );
        assert!(Arc::ptr_eq(&served, &f.resolve("app-a").await.unwrap()));
    }

    fn past_deadline(result: Result<Option<Arc<ResolvedApp>>, Arc<ResolveError>>) -> bool {
        matches!(
            result.as_ref().map_err(|e| &**e),
            Err(ResolveError::Deadline)
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_gives_up_at_its_own_deadline_and_the_shared_load_goes_on() {
        let f = fixture().await;
        let lock = stall_loads(&f.db).await;
        let apps = f.apps.clone();
        let leader = tokio::spawn(async move { apps.resolve("app-a", later()).await });
        wait_until_stalled(&f.db).await;

        // Joins the stalled load, and leaves at its own (short) deadline.
        let waiter = f
            .apps
            .resolve("app-a", Instant::now() + Duration::from_millis(200))
            .await;
        assert!(past_deadline(waiter));
        assert!(
            !leader.is_finished(),
            "the waiter's deadline cut the load short"
        );

        lock.rollback().await.unwrap();
        let loaded = leader.await.unwrap().unwrap().unwrap();
        assert_eq!(loaded.app.id, f.a.id);
        assert_eq!(f.apps.loads(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_load_whose_caller_gave_up_is_taken_over_by_a_waiter() {
        let f = fixture().await;
        let lock = stall_loads(&f.db).await;
        let apps = f.apps.clone();
        let short = tokio::spawn(async move {
            apps.resolve("app-a", Instant::now() + Duration::from_millis(500))
                .await
        });
        wait_until_stalled(&f.db).await;
        let apps = f.apps.clone();
        let patient = tokio::spawn(async move { apps.resolve("app-a", later()).await });

        assert!(past_deadline(short.await.unwrap()));
        lock.rollback().await.unwrap();
        let loaded = patient.await.unwrap().unwrap().unwrap();
        assert_eq!(loaded.app.id, f.a.id);
    }
}
