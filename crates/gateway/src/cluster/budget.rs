//! Each app's STS calls per second, shared by the cluster.
//!
//! One token per STS call, taken from the app's row in `sts_budget` with one atomic statement
//! (a GCRA cell: the row holds when the next token is due). No replica holds tokens, so a dead
//! replica's share is back at once, and the budget follows the load wherever it lands. The
//! burst is a tenth of the rate (at least one call), so over any one-second window the
//! cluster makes at most the rate plus a tenth. The statement costs one round trip to
//! PostgreSQL on the mint path only, next to an STS call that costs far more.
//!
//! When the database cannot be asked in time, each replica falls back to its own bucket with
//! its share (rate / live replicas), so the limit still holds approximately.

use std::sync::Arc;
use std::time::Duration;

use policy_store::{AppId, BudgetGrant, Store};

use crate::ratelimit::{RateLimiter, replica_share};

pub struct Budget {
    store: Arc<dyn Store>,
    fallback: RateLimiter<AppId>,
}

/// Calls that may come at once: a tenth of a second's worth, at least one.
pub fn burst(per_second: u32) -> u32 {
    per_second.div_ceil(10).max(1)
}

impl Budget {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            fallback: RateLimiter::new(100_000, Duration::from_secs(600)),
        }
    }

    /// Takes one STS call of the app's budget of `per_second` (0: unlimited).
    /// `Err(seconds)` says when to come back. `live` is the live replica count (for the
    /// fallback), `timeout` bounds the database round trip.
    pub async fn take(
        &self,
        app: AppId,
        per_second: u32,
        live: u32,
        timeout: Duration,
    ) -> Result<(), u64> {
        if per_second == 0 {
            return Ok(());
        }
        let asked = self
            .store
            .take_sts_budget(app, per_second, burst(per_second));
        match tokio::time::timeout(timeout, asked).await {
            Ok(Ok(BudgetGrant::Granted)) => Ok(()),
            Ok(Ok(BudgetGrant::RetryAfter(wait))) => Err(wait.as_secs_f64().ceil().max(1.0) as u64),
            failed => {
                match failed {
                    Ok(Err(e)) => {
                        tracing::warn!(app, error = %e, "cannot take from the cluster's STS budget; using this replica's share")
                    }
                    _ => tracing::warn!(
                        app,
                        "the cluster's STS budget did not answer in time; using this replica's share"
                    ),
                }
                self.fallback.check(
                    &app,
                    replica_share(per_second, live),
                    Duration::from_secs(1),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_is_a_tenth_of_the_rate() {
        assert_eq!(burst(1), 1);
        assert_eq!(burst(2), 1);
        assert_eq!(burst(20), 2);
        assert_eq!(burst(25), 3);
        assert_eq!(burst(600), 60);
    }
}
