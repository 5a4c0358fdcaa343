//! The credential cache (DESIGN §5.5): keyed by (app, template version, subject, policy hash,
//! duration) and reused while at least `min_remaining` seconds of validity are left.
//! Concurrent misses for one key share one STS call, and everyone who shared it gets its
//! answer, whatever its reuse window (see [`CachedCredential::servable`]).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moka::Expiry;
use moka::future::Cache;
use moka::ops::compute::Op;
use sts_core::TemporaryCredentials;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub app_id: i64,
    /// Changes with every admin edit of the app, so edits never serve old credentials.
    pub app_generation: i128,
    pub template_version: i32,
    pub subject: String,
    pub policy_hash: String,
    pub duration: u64,
}

/// A minted credential and when it was minted (the gateway's clock: `startTime`).
#[derive(Debug)]
pub struct CachedCredential {
    pub creds: TemporaryCredentials,
    pub start_time: i64,
    /// Reuse ends at this Unix second (`expired_time - min_remaining`).
    pub reuse_until: i64,
    /// When STS's answer arrived (monotonic): tells a credential minted for a request that was
    /// already waiting from one that was in the cache before it.
    pub minted: Instant,
    /// Minted by another replica and taken from the shared table (served as a cache hit).
    pub from_peer: bool,
}

impl CachedCredential {
    /// How much of the reuse window is left, on the gateway's clock (zero once it has ended).
    pub fn reuse_left(&self) -> Duration {
        let until = UNIX_EPOCH + Duration::from_secs(u64::try_from(self.reuse_until).unwrap_or(0));
        until
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }

    /// Whether a request that looked the key up at `looked_up` may be given this credential:
    /// one minted since then is the newest STS can give (even when its window is already
    /// over, as with a short duration and STS's clock behind ours), and an older one only
    /// inside its reuse window.
    pub fn servable(&self, looked_up: Instant) -> bool {
        self.minted >= looked_up || !self.reuse_left().is_zero()
    }
}

struct ReuseWindow;

impl Expiry<CacheKey, Arc<CachedCredential>> for ReuseWindow {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedCredential>,
        _created_at: Instant,
    ) -> Option<Duration> {
        // To the millisecond: a whole-second expiry kept entries up to a second past their
        // window, and every request in that second had to evict and mint again.
        Some(value.reuse_left())
    }
}

pub type CredentialCache = Cache<CacheKey, Arc<CachedCredential>>;

pub fn new_cache(max_entries: u64) -> CredentialCache {
    Cache::builder()
        .max_capacity(max_entries)
        .expire_after(ReuseWindow)
        .build()
}

/// Drops `key`'s entry only if it is still `stale`. A request that judged an entry stale may
/// get here after another one has already replaced it; an unconditional invalidate would evict
/// that fresh credential (and cost another STS call).
pub async fn evict_if_same(cache: &CredentialCache, key: &CacheKey, stale: &Arc<CachedCredential>) {
    cache
        .entry_by_ref(key)
        .and_compute_with(|current| {
            let op = match current {
                Some(entry) if Arc::ptr_eq(entry.value(), stale) => Op::Remove,
                _ => Op::Nop,
            };
            std::future::ready(op)
        })
        .await;
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::clock::unix_now;

    fn key() -> CacheKey {
        CacheKey {
            app_id: 1,
            app_generation: 1,
            template_version: 1,
            subject: "alice".into(),
            policy_hash: "h".into(),
            duration: 600,
        }
    }

    fn credential(id: &str, reuse_for: i64) -> Arc<CachedCredential> {
        Arc::new(CachedCredential {
            creds: TemporaryCredentials {
                tmp_secret_id: id.into(),
                tmp_secret_key: SecretString::from("k"),
                session_token: SecretString::from("t"),
                expired_time: unix_now() + reuse_for + 300,
                expiration: String::new(),
                request_id: "r".into(),
            },
            start_time: unix_now(),
            reuse_until: unix_now() + reuse_for,
            minted: Instant::now(),
            from_peer: false,
        })
    }

    #[tokio::test]
    async fn a_late_eviction_leaves_a_newer_credential_alone() {
        let cache = new_cache(10);
        let old = credential("old", 300);
        let new = credential("new", 300);
        cache.insert(key(), old.clone()).await;
        // Another request replaced the entry after this one judged `old` stale.
        cache.insert(key(), new.clone()).await;
        evict_if_same(&cache, &key(), &old).await;
        let kept = cache
            .get(&key())
            .await
            .expect("the newer credential was evicted");
        assert!(Arc::ptr_eq(&kept, &new));
        // The entry judged stale itself does go.
        evict_if_same(&cache, &key(), &new).await;
        assert!(cache.get(&key()).await.is_none());
    }

    #[tokio::test]
    async fn only_a_credential_minted_after_the_lookup_is_served_past_its_window() {
        let expired = credential("x", -5);
        let (before, after) = (
            expired.minted - Duration::from_millis(1),
            expired.minted + Duration::from_millis(1),
        );
        // Minted after a request looked the key up: that request was waiting for it.
        assert!(expired.servable(before));
        // Minted before: an old entry past its window is not served.
        assert!(!expired.servable(after));
        assert!(credential("y", 60).servable(Instant::now()));
        assert_eq!(expired.reuse_left(), Duration::ZERO);
    }

    #[tokio::test]
    async fn entries_expire_with_their_reuse_window() {
        let cache = new_cache(10);
        cache.insert(key(), credential("gone", -1)).await;
        assert!(cache.get(&key()).await.is_none());
        cache.insert(key(), credential("kept", 60)).await;
        assert!(cache.get(&key()).await.is_some());
    }
}
