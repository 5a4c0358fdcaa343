//! The credential cache (DESIGN §5.5): keyed by (app, template version, subject, policy hash,
//! duration) and reused while at least `min_remaining` seconds of validity are left.
//! Concurrent misses for one key share one STS call, and everyone who shared it gets its
//! answer, whatever its reuse window (see [`CachedCredential::servable`]).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moka::Expiry;
use moka::future::Cache;
use moka::ops::compute::Op;
use secrecy::{ExposeSecret, SecretBox};
use sts_core::TemporaryCredentials;

/// What a credential is cached under. Compact, as there is one per cached credential: the
/// policy hash and the subject share one allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub(crate) app_id: i64,
    /// Changes with every admin edit of the app, so edits never serve old credentials.
    pub(crate) app_generation: i128,
    pub(crate) template_version: i32,
    pub(crate) duration: u64,
    /// The policy hash, then the subject.
    text: Box<str>,
    /// Where the policy hash ends in `text`.
    hash_len: u32,
}

impl CacheKey {
    pub fn new(
        app_id: i64,
        app_generation: i128,
        template_version: i32,
        subject: &str,
        policy_hash: &str,
        duration: u64,
    ) -> Self {
        Self {
            app_id,
            app_generation,
            template_version,
            duration,
            text: [policy_hash, subject].concat().into_boxed_str(),
            hash_len: u32::try_from(policy_hash.len()).expect("a policy hash is short"),
        }
    }

    pub fn subject(&self) -> &str {
        &self.text[self.hash_len as usize..]
    }

    pub fn policy_hash(&self) -> &str {
        &self.text[..self.hash_len as usize]
    }
}

/// A minted credential and when it was minted (the gateway's clock: `startTime`).
///
/// One per cached credential, so laid out compactly: two allocations instead of five strings
/// (RSS per cached credential is measured by scripts/bench against the credential's own
/// bytes). The secrets sit in a [`SecretBox`], zeroed when the entry is dropped.
#[derive(Debug)]
pub struct CachedCredential {
    /// TmpSecretKey, then the session token.
    secrets: SecretBox<str>,
    /// TmpSecretId, the STS RequestId, then Expiration.
    public: Box<str>,
    /// Where TmpSecretKey ends in `secrets`.
    key_end: u32,
    /// Where TmpSecretId and the RequestId end in `public`.
    id_end: u32,
    request_id_end: u32,
    /// Unix seconds.
    pub expired_time: i64,
    pub start_time: i64,
    /// Reuse ends at this Unix second (`expired_time - min_remaining`).
    pub reuse_until: i64,
    /// When STS's answer arrived (monotonic): tells a credential minted for a request that was
    /// already waiting from one that was in the cache before it.
    pub minted: Instant,
    /// Minted by another replica and taken from the shared table (served as a cache hit).
    pub from_peer: bool,
    /// How long this replica's STS call for it took, in microseconds (0: taken from the
    /// shared table): what a request that waited for the mint is not charged for.
    sts_us: u32,
}

fn offset(len: usize) -> u32 {
    // STS's answers are a few kilobytes; the client refuses larger bodies long before this.
    u32::try_from(len).expect("a credential field under 4 GiB")
}

impl CachedCredential {
    pub fn new(
        creds: TemporaryCredentials,
        start_time: i64,
        reuse_until: i64,
        minted: Instant,
    ) -> Self {
        let (key, token) = (
            creds.tmp_secret_key.expose_secret(),
            creds.session_token.expose_secret(),
        );
        // Exactly sized, so the box takes the buffer without a copy left behind unzeroed.
        let mut secrets = String::with_capacity(key.len() + token.len());
        secrets.push_str(key);
        secrets.push_str(token);
        let public = [
            creds.tmp_secret_id.as_str(),
            &creds.request_id,
            &creds.expiration,
        ]
        .concat();
        Self {
            key_end: offset(key.len()),
            id_end: offset(creds.tmp_secret_id.len()),
            request_id_end: offset(creds.tmp_secret_id.len() + creds.request_id.len()),
            secrets: SecretBox::new(secrets.into_boxed_str()),
            public: public.into_boxed_str(),
            expired_time: creds.expired_time,
            start_time,
            reuse_until,
            minted,
            from_peer: false,
            sts_us: 0,
        }
    }

    /// Records how long the STS call that minted it took.
    pub fn with_sts_time(mut self, took: Duration) -> Self {
        self.sts_us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        self
    }

    /// How long the STS call that minted it took (zero when another replica minted it).
    pub fn sts_time(&self) -> Duration {
        Duration::from_micros(u64::from(self.sts_us))
    }

    /// Marks a credential another replica minted (taken from the shared table).
    pub fn taken_from_peer(mut self) -> Self {
        self.from_peer = true;
        self
    }

    pub fn tmp_secret_id(&self) -> &str {
        &self.public[..self.id_end as usize]
    }

    /// The STS RequestId of the call that minted it.
    pub fn request_id(&self) -> &str {
        &self.public[self.id_end as usize..self.request_id_end as usize]
    }

    /// ISO 8601 UTC, as STS gave it.
    pub fn expiration(&self) -> &str {
        &self.public[self.request_id_end as usize..]
    }

    pub fn expose_tmp_secret_key(&self) -> &str {
        &self.secrets.expose_secret()[..self.key_end as usize]
    }

    pub fn expose_session_token(&self) -> &str {
        &self.secrets.expose_secret()[self.key_end as usize..]
    }

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
        CacheKey::new(1, 1, 1, "alice", "h", 600)
    }

    fn credential(id: &str, reuse_for: i64) -> Arc<CachedCredential> {
        Arc::new(CachedCredential::new(
            TemporaryCredentials {
                tmp_secret_id: id.into(),
                tmp_secret_key: SecretString::from("k"),
                session_token: SecretString::from("t"),
                expired_time: unix_now() + reuse_for + 300,
                expiration: String::new(),
                request_id: "r".into(),
            },
            unix_now(),
            unix_now() + reuse_for,
            Instant::now(),
        ))
    }

    #[test]
    fn the_compact_entry_gives_back_every_field() {
        let c = CachedCredential::new(
            TemporaryCredentials {
                tmp_secret_id: "AKIDtmp".into(),
                tmp_secret_key: SecretString::from("key/é+="),
                session_token: SecretString::from("token-ünïcode"),
                expired_time: 1_700_000_600,
                expiration: "2023-11-14T22:23:20Z".into(),
                request_id: "6f1c-req".into(),
            },
            1_700_000_000,
            1_700_000_300,
            Instant::now(),
        );
        assert_eq!(c.tmp_secret_id(), "AKIDtmp");
        assert_eq!(c.expose_tmp_secret_key(), "key/é+=");
        assert_eq!(c.expose_session_token(), "token-ünïcode");
        assert_eq!(c.request_id(), "6f1c-req");
        assert_eq!(c.expiration(), "2023-11-14T22:23:20Z");
        assert_eq!(c.expired_time, 1_700_000_600);
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("key/é") && !debug.contains("token-"),
            "{debug}"
        );
        // The subject and the policy hash share one allocation: they must not run together.
        let (a, b) = (
            CacheKey::new(1, 1, 1, "bc", "a", 600),
            CacheKey::new(1, 1, 1, "c", "ab", 600),
        );
        assert_ne!(a, b);
        assert_eq!((a.policy_hash(), a.subject()), ("a", "bc"));
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
