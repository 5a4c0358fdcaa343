//! Compact per-key state that is forgotten when idle: the rate limiters' buckets and the
//! cool-down's "got a credential from here lately".
//!
//! Keys are kept as 64-bit hashes under a key chosen at random per process (SipHash through
//! [`RandomState`]), so an entry costs its value plus about 16 bytes, not a copy of the key in
//! a general-purpose cache entry (moka's took about 600 bytes per subject). Two keys with one
//! hash share an entry; with a secret hash key nobody can aim for that, and by chance it takes
//! billions of live keys.
//!
//! Entries live in two generations per shard. A key is looked up in the current one, then in
//! the previous one (and moved forward); every `idle` the current generation becomes the
//! previous one and the previous one is dropped (turning over lazily, when a shard is next
//! used). So an entry is kept at least `idle` after its last use, and forgotten within about
//! three times that. A generation that reaches its share of `max_keys`
//! turns over early, so memory stays bounded whatever the keys.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shards, each behind its own lock (a power of two).
const SHARDS: usize = 16;

struct Shard<V> {
    current: HashMap<u64, V>,
    previous: HashMap<u64, V>,
    turned: Instant,
}

impl<V> Shard<V> {
    fn turn_if_due(&mut self, now: Instant, idle: Duration, cap: usize) {
        let age = now.saturating_duration_since(self.turned);
        if age >= idle || self.current.len() >= cap {
            self.previous = if age >= idle * 2 {
                HashMap::new()
            } else {
                std::mem::take(&mut self.current)
            };
            self.current.clear();
            self.turned = now;
        }
    }
}

pub struct RecentMap<V> {
    hasher: RandomState,
    shards: Box<[Mutex<Shard<V>>]>,
    idle: Duration,
    /// Entries per shard and generation.
    cap: usize,
}

impl<V> RecentMap<V> {
    /// Keeps entries at least `idle` after their last use, about `max_keys` at most.
    pub fn new(max_keys: u64, idle: Duration) -> Self {
        let now = Instant::now();
        let cap = usize::try_from(max_keys.div_ceil(SHARDS as u64))
            .unwrap_or(usize::MAX)
            .max(1);
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        current: HashMap::new(),
                        previous: HashMap::new(),
                        turned: now,
                    })
                })
                .collect(),
            idle: idle.max(Duration::from_millis(1)),
            cap,
        }
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard<V>> {
        // The top bits pick the shard; the maps hash the whole value again.
        &self.shards[(hash >> 60) as usize & (SHARDS - 1)]
    }

    /// Runs `f` on `key`'s entry, made with `make` if there is none; the entry counts as used.
    pub fn with<K: Hash + ?Sized, R>(
        &self,
        key: &K,
        now: Instant,
        make: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shard(hash).lock().unwrap_or_else(|e| e.into_inner());
        shard.turn_if_due(now, self.idle, self.cap);
        let Shard {
            current, previous, ..
        } = &mut *shard;
        f(current
            .entry(hash)
            .or_insert_with(|| previous.remove(&hash).unwrap_or_else(make)))
    }

    /// Whether `key` has an entry (without counting as a use).
    pub fn contains<K: Hash + ?Sized>(&self, key: &K, now: Instant) -> bool {
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shard(hash).lock().unwrap_or_else(|e| e.into_inner());
        shard.turn_if_due(now, self.idle, self.cap);
        shard.current.contains_key(&hash) || shard.previous.contains_key(&hash)
    }

    /// Entries held (both generations).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|e| e.into_inner());
                s.current.len() + s.previous.len()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_at_least_idle_after_their_last_use() {
        let m = RecentMap::<u32>::new(1000, Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        m.with("a", t0, || 1, |v| *v += 1);
        m.with("b", t0, || 1, |_| ());
        assert!(m.contains("a", at(9)) && m.contains("b", at(9)));
        // Past a turn-over the entry is still there, with its value, and using it keeps it.
        assert_eq!(m.with("a", at(12), || 0, |v| *v), 2);
        assert!(m.contains("a", at(21)));
        // More than three times idle since b's last use: gone.
        assert!(!m.contains("b", at(35)));
        // Long idle: everything is gone, and a new entry starts afresh.
        assert!(!m.contains("a", at(100)));
        assert_eq!(m.with("a", at(100), || 7, |v| *v), 7);
    }

    #[test]
    fn memory_stays_bounded_whatever_the_keys() {
        let m = RecentMap::<()>::new(160, Duration::from_secs(3600));
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            m.with(&i, t0, || (), |_| ());
        }
        assert!(m.len() <= 2 * 160 + SHARDS, "{} entries", m.len());
        // The latest keys are still known.
        assert!(m.contains(&99_999u32, t0));
    }

    #[test]
    fn borrowed_and_owned_keys_are_the_same_key() {
        let m = RecentMap::<()>::new(100, Duration::from_secs(60));
        let now = Instant::now();
        m.with(&(7_i64, "alice".to_owned()), now, || (), |_| ());
        assert!(m.contains(&(7_i64, "alice"), now));
        assert!(!m.contains(&(8_i64, "alice"), now));
    }
}
