//! The credential cache (DESIGN §5.5): keyed by (app, template version, subject, policy hash,
//! duration) and reused while at least `min_remaining` seconds of validity are left.
//! Concurrent misses for one key share one STS call.

use std::sync::Arc;
use std::time::Duration;

use moka::Expiry;
use moka::future::Cache;
use sts_core::TemporaryCredentials;

use crate::clock::unix_now;

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
}

struct ReuseWindow;

impl Expiry<CacheKey, Arc<CachedCredential>> for ReuseWindow {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedCredential>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        let left = value.reuse_until - unix_now();
        Some(Duration::from_secs(u64::try_from(left).unwrap_or(0)))
    }
}

pub type CredentialCache = Cache<CacheKey, Arc<CachedCredential>>;

pub fn new_cache(max_entries: u64) -> CredentialCache {
    Cache::builder()
        .max_capacity(max_entries)
        .expire_after(ReuseWindow)
        .build()
}
