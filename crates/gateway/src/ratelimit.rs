//! Token-bucket rate limits. The buckets are per replica; in a cluster each replica enforces
//! its share of a limit, the limit divided by the live replicas (DESIGN §8).

use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::recent::RecentMap;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A set of token buckets, one per key. Idle buckets are forgotten (a full bucket and a
/// missing one behave the same), so `idle` must be at least the longest refill period used.
/// Keys are kept as hashes ([`RecentMap`]): a bucket costs about 40 bytes.
pub struct RateLimiter {
    buckets: RecentMap<Bucket>,
}

impl RateLimiter {
    pub fn new(max_keys: u64, idle: Duration) -> Self {
        Self {
            buckets: RecentMap::new(max_keys, idle),
        }
    }

    /// Takes one token from `key`'s bucket, which holds `capacity` tokens and refills at
    /// `capacity` per `period`. `Err(seconds)` says when a token will be available.
    /// A capacity of 0 means unlimited.
    pub fn check<K: Hash + ?Sized>(
        &self,
        key: &K,
        capacity: u32,
        period: Duration,
    ) -> Result<(), u64> {
        self.check_at(key, capacity, period, Instant::now())
    }

    fn check_at<K: Hash + ?Sized>(
        &self,
        key: &K,
        capacity: u32,
        period: Duration,
        now: Instant,
    ) -> Result<(), u64> {
        if capacity == 0 {
            return Ok(());
        }
        let capacity = f64::from(capacity);
        self.buckets.with(
            key,
            now,
            || Bucket {
                tokens: capacity,
                last: now,
            },
            |b| {
                let rate = capacity / period.as_secs_f64();
                let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
                b.tokens = (b.tokens + elapsed * rate).min(capacity);
                b.last = now;
                if b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    Ok(())
                } else {
                    let wait = (1.0 - b.tokens) / rate;
                    Err(wait.ceil().max(1.0) as u64)
                }
            },
        )
    }
}

/// A replica's share of a cluster-wide `limit` among `live` replicas: rounded up, so the
/// cluster as a whole allows at most `limit + live - 1`; 0 (unlimited) stays 0.
pub fn replica_share(limit: u32, live: u32) -> u32 {
    if limit == 0 {
        return 0;
    }
    limit.div_ceil(live.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_replica_enforces_its_share() {
        assert_eq!(replica_share(60, 1), 60);
        assert_eq!(replica_share(60, 3), 20);
        assert_eq!(replica_share(10, 3), 4);
        assert_eq!(
            replica_share(2, 3),
            1,
            "never 0, which would mean unlimited"
        );
        assert_eq!(replica_share(0, 3), 0);
        assert_eq!(replica_share(5, 0), 5);
    }

    #[test]
    fn allows_a_burst_then_refuses_then_refills() {
        let rl = RateLimiter::new(100, Duration::from_secs(60));
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        for _ in 0..3 {
            rl.check_at(&"alice", 3, minute, t0).unwrap();
        }
        let retry = rl.check_at(&"alice", 3, minute, t0).unwrap_err();
        assert_eq!(retry, 20, "one token per 20 s at 3/min");
        // Another key has its own bucket.
        rl.check_at(&"bob", 3, minute, t0).unwrap();
        // 20 s later one token is back.
        rl.check_at(&"alice", 3, minute, t0 + Duration::from_secs(20))
            .unwrap();
        assert!(
            rl.check_at(&"alice", 3, minute, t0 + Duration::from_secs(20))
                .is_err()
        );
    }

    #[test]
    fn zero_means_unlimited() {
        let rl = RateLimiter::new(10, Duration::from_secs(60));
        for _ in 0..1000 {
            rl.check(&1u8, 0, Duration::from_secs(1)).unwrap();
        }
    }
}
