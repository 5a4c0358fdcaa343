//! How many sign-in attempts the admin listener takes on, spent before any database work or
//! argon2 verification: a token bucket per source address and one for everybody.
//!
//! Each bucket holds at most its per-minute rate and refills continuously, so a client can
//! make that many attempts at once and then one every `60 / rate` seconds. An attempt needs a
//! token from both buckets; without one it is answered 429 straight away. The per-address
//! bucket keeps one noisy client from using up the shared one, so real admins elsewhere can
//! still sign in; the shared one caps the argon2 work (and memory) that a flood from many
//! addresses can cause. IPv6 clients are counted per /64, which is what one host usually gets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Source addresses tracked at once. When full, idle ones are forgotten; if none is idle, an
/// untracked address is held back by the shared bucket only.
const MAX_TRACKED: usize = 10_000;
/// The least time between two sweeps of a full table.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Refusals are logged as one line per this interval at most, so a flood cannot flood the log.
const REPORT_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(per_minute: f64, now: Instant) -> Self {
        Self {
            tokens: per_minute,
            at: now,
        }
    }

    /// Tokens now, after refilling since the last look.
    fn refill(&mut self, per_minute: f64, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_minute / 60.0).min(per_minute);
        self.at = now;
        self.tokens
    }

    /// How long until the bucket holds one token.
    fn wait(&self, per_minute: f64) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens).max(0.0) * 60.0 / per_minute).max(0.001))
    }
}

#[derive(Debug)]
struct Buckets {
    shared: Bucket,
    by_source: HashMap<IpAddr, Bucket>,
    swept_at: Option<Instant>,
    /// Refusals not reported yet, and when the last report went out.
    unreported: u64,
    reported_at: Option<Instant>,
}

/// An attempt over budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// When a retry can succeed (the `Retry-After`).
    pub wait: Duration,
    /// Set at most once per [`REPORT_EVERY`]: the refusals to log now, this one included.
    pub report: Option<u64>,
}

/// The sign-in budgets of one admin listener.
#[derive(Debug)]
pub struct SignInBudget {
    per_source: f64,
    shared: f64,
    buckets: Mutex<Buckets>,
}

/// The key an address is counted under: IPv4 (and IPv4-mapped IPv6) as is, IPv6 by its /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
        v4 => v4,
    }
}

impl SignInBudget {
    /// `per_source_per_minute` attempts a minute from one address, `per_minute` from all.
    pub fn new(per_source_per_minute: u32, per_minute: u32) -> Self {
        let (per_source, shared) = (
            f64::from(per_source_per_minute.max(1)),
            f64::from(per_minute.max(1)),
        );
        Self {
            per_source,
            shared,
            buckets: Mutex::new(Buckets {
                shared: Bucket::full(shared, Instant::now()),
                by_source: HashMap::new(),
                swept_at: None,
                unreported: 0,
                reported_at: None,
            }),
        }
    }

    /// Spends one attempt for `source`, or says how long to wait (nothing is spent then).
    pub fn take(&self, source: Option<IpAddr>) -> Result<(), Refusal> {
        self.take_at(source, Instant::now())
    }

    fn take_at(&self, source: Option<IpAddr>, now: Instant) -> Result<(), Refusal> {
        let mut guard = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let b = &mut *guard;
        let mut wait = Duration::ZERO;
        if b.shared.refill(self.shared, now) < 1.0 {
            wait = b.shared.wait(self.shared);
        }
        let key = source.map(source_key);
        if let Some(key) = key
            && !b.by_source.contains_key(&key)
            && b.by_source.len() >= MAX_TRACKED
        {
            Self::sweep(b, self.per_source, now);
        }
        let tracked = match key {
            Some(key) if b.by_source.len() < MAX_TRACKED || b.by_source.contains_key(&key) => {
                let bucket = b
                    .by_source
                    .entry(key)
                    .or_insert_with(|| Bucket::full(self.per_source, now));
                if bucket.refill(self.per_source, now) < 1.0 {
                    wait = wait.max(bucket.wait(self.per_source));
                }
                Some(key)
            }
            _ => None,
        };
        if !wait.is_zero() {
            b.unreported += 1;
            let due = b
                .reported_at
                .is_none_or(|t| now.saturating_duration_since(t) >= REPORT_EVERY);
            let report = due.then(|| {
                b.reported_at = Some(now);
                std::mem::take(&mut b.unreported)
            });
            return Err(Refusal { wait, report });
        }
        b.shared.tokens -= 1.0;
        if let Some(bucket) = tracked.and_then(|key| b.by_source.get_mut(&key)) {
            bucket.tokens -= 1.0;
        }
        Ok(())
    }

    /// Forgets addresses whose buckets have refilled (at most once per [`SWEEP_EVERY`]).
    fn sweep(b: &mut Buckets, per_source: f64, now: Instant) {
        if b.swept_at
            .is_some_and(|t| now.saturating_duration_since(t) < SWEEP_EVERY)
        {
            return;
        }
        b.swept_at = Some(now);
        b.by_source
            .retain(|_, bucket| bucket.refill(per_source, now) < per_source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn each_source_has_its_own_budget_within_the_shared_one() {
        let budget = SignInBudget::new(3, 5);
        let t0 = Instant::now();
        for _ in 0..3 {
            budget.take_at(ip("192.0.2.1"), t0).unwrap();
        }
        // The 4th attempt from the same address waits 60 / 3 = 20 s for its token.
        let refusal = budget.take_at(ip("192.0.2.1"), t0).unwrap_err();
        assert_eq!(refusal.wait.as_secs(), 20);
        assert_eq!(refusal.report, Some(1), "the first refusal is reported");
        // Another address still gets in, until the shared budget of 5 is spent.
        budget.take_at(ip("192.0.2.2"), t0).unwrap();
        budget.take_at(ip("192.0.2.2"), t0).unwrap();
        let refusal = budget.take_at(ip("192.0.2.3"), t0).unwrap_err();
        assert_eq!(refusal.wait.as_secs(), 12, "60 / 5");
        assert_eq!(refusal.report, None, "then at most one report per interval");
        // Refused attempts spent nothing: 24 s later the shared bucket holds 2 tokens again
        // and 192.0.2.1's holds 1.2.
        let later = t0 + Duration::from_secs(24);
        budget.take_at(ip("192.0.2.1"), later).unwrap();
        budget.take_at(ip("192.0.2.3"), later).unwrap();
    }

    #[test]
    fn refusals_are_reported_in_batches() {
        let budget = SignInBudget::new(1, 100);
        let t0 = Instant::now();
        let src = ip("192.0.2.1");
        budget.take_at(src, t0).unwrap();
        assert_eq!(budget.take_at(src, t0).unwrap_err().report, Some(1));
        for _ in 0..5 {
            assert_eq!(budget.take_at(src, t0).unwrap_err().report, None);
        }
        let later = t0 + REPORT_EVERY;
        // 10 s refill a sixth of a token: still refused, and the 5 held back plus this one.
        assert_eq!(budget.take_at(src, later).unwrap_err().report, Some(6));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let budget = SignInBudget::new(2, 100);
        let t0 = Instant::now();
        budget.take_at(ip("2001:db8:1:2::1"), t0).unwrap();
        budget.take_at(ip("2001:db8:1:2:ffff::9"), t0).unwrap();
        assert!(budget.take_at(ip("2001:db8:1:2::abcd"), t0).is_err());
        budget.take_at(ip("2001:db8:1:3::1"), t0).unwrap();

        budget.take_at(ip("198.51.100.7"), t0).unwrap();
        budget.take_at(ip("::ffff:198.51.100.7"), t0).unwrap();
        assert!(budget.take_at(ip("198.51.100.7"), t0).is_err());
    }

    #[test]
    fn a_full_table_forgets_idle_sources() {
        let budget = SignInBudget::new(1, 1_000_000);
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED as u32 {
            budget
                .take_at(Some(IpAddr::V4((0x0a00_0000 + i).into())), t0)
                .unwrap();
        }
        // Full of busy sources: a new one is held back by the shared budget only.
        let newcomer = ip("203.0.113.9");
        budget.take_at(newcomer, t0).unwrap();
        budget.take_at(newcomer, t0).unwrap();
        // A minute later every bucket has refilled: the sweep makes room again.
        let later = t0 + Duration::from_secs(61);
        budget.take_at(newcomer, later).unwrap();
        assert!(budget.take_at(newcomer, later).is_err());
        let tracked = budget.buckets.lock().unwrap().by_source.len();
        assert_eq!(tracked, 1);
    }
}
