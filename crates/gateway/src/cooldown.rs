//! The authentication cool-down: a source address that keeps failing authentication gets
//! 429 before its tokens are verified, for a while (DESIGN §8).
//!
//! - Only authentication failures count (`invalid_token`, `missing_token`): a request that
//!   gets a credential, or is refused for another reason, does not.
//! - Past `failures_per_minute` failures from one address (a token bucket: bursts of as many,
//!   refilled over a minute), the address cools down for `cooldown`.
//! - Many real users can share one address (a carrier NAT). While an address cools down, a
//!   token whose user claim names a subject that got a credential from that address in the
//!   last hour (up to two) is still verified: the users who were already working keep working; only
//!   subjects never seen there wait. A bad client that forges such a claim gains nothing but
//!   verification, and its failures keep the cool-down going.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use moka::sync::Cache;

use crate::ratelimit::RateLimiter;
use crate::recent::RecentMap;

#[derive(Debug, Clone)]
pub struct CooldownConfig {
    /// Authentication failures a minute from one address before it cools down; 0: never.
    pub failures_per_minute: u32,
    /// How long a cooling address's unknown subjects get 429.
    pub cooldown: Duration,
}

impl Default for CooldownConfig {
    fn default() -> Self {
        Self {
            failures_per_minute: 60,
            cooldown: Duration::from_secs(60),
        }
    }
}

pub struct AuthCooldown {
    config: CooldownConfig,
    failures: RateLimiter,
    /// Addresses cooling down, with when it started.
    cooling: Cache<IpAddr, Instant>,
    /// (address, app, subject) that got a credential lately (an hour or two).
    known: RecentMap<()>,
}

impl AuthCooldown {
    pub fn new(config: CooldownConfig) -> Self {
        Self {
            failures: RateLimiter::new(100_000, Duration::from_secs(120)),
            cooling: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.cooldown.max(Duration::from_secs(1)))
                .build(),
            known: RecentMap::new(1_000_000, Duration::from_secs(3600)),
            config,
        }
    }

    /// Before verification: `Err(retry_after_seconds)` when `ip` cools down and the token's
    /// (unverified) subject has not succeeded from it lately.
    pub fn admit(&self, ip: Option<IpAddr>, app: i64, claimed: Option<String>) -> Result<(), u64> {
        let Some(ip) = ip else { return Ok(()) };
        let Some(since) = self.cooling.get(&ip) else {
            return Ok(());
        };
        if claimed.is_some_and(|sub| self.known.contains(&(ip, app, sub), Instant::now())) {
            return Ok(());
        }
        let left = self.config.cooldown.saturating_sub(since.elapsed());
        Err(left.as_secs().max(1))
    }

    /// An authentication failure from `ip`; true when it starts a cool-down.
    pub fn failed(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip else { return false };
        let limit = self.config.failures_per_minute;
        if limit == 0
            || self
                .failures
                .check(&ip, limit, Duration::from_secs(60))
                .is_ok()
            || self.cooling.contains_key(&ip)
        {
            return false;
        }
        self.cooling.insert(ip, Instant::now());
        true
    }

    /// `subject` got a credential of app `app` from `ip`.
    pub fn succeeded(&self, ip: Option<IpAddr>, app: i64, subject: &str) {
        if let Some(ip) = ip
            && self.config.failures_per_minute > 0
        {
            self.known
                .with(&(ip, app, subject), Instant::now(), || (), |_| ());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_start_a_cooldown_that_spares_known_subjects() {
        let c = AuthCooldown::new(CooldownConfig {
            failures_per_minute: 3,
            cooldown: Duration::from_secs(60),
        });
        let nat: Option<IpAddr> = Some("203.0.113.5".parse().unwrap());
        let other: Option<IpAddr> = Some("198.51.100.1".parse().unwrap());
        c.succeeded(nat, 1, "alice");
        assert!(!c.failed(nat) && !c.failed(nat) && !c.failed(nat));
        assert_eq!(c.admit(nat, 1, None), Ok(()), "under the limit");
        assert!(c.failed(nat), "the fourth failure starts the cool-down");
        assert!(!c.failed(nat), "only once");
        assert!(c.admit(nat, 1, None).is_err());
        assert!(c.admit(nat, 1, Some("mallory".into())).is_err());
        assert_eq!(
            c.admit(nat, 1, Some("alice".into())),
            Ok(()),
            "a known subject"
        );
        assert!(
            c.admit(nat, 2, Some("alice".into())).is_err(),
            "known per app"
        );
        assert_eq!(c.admit(other, 1, None), Ok(()), "another address");
        assert_eq!(c.admit(None, 1, None), Ok(()));
    }

    #[test]
    fn zero_turns_it_off() {
        let c = AuthCooldown::new(CooldownConfig {
            failures_per_minute: 0,
            ..CooldownConfig::default()
        });
        let ip: Option<IpAddr> = Some("203.0.113.5".parse().unwrap());
        for _ in 0..1000 {
            assert!(!c.failed(ip));
        }
        assert_eq!(c.admit(ip, 1, None), Ok(()));
    }
}
