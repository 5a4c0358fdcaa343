//! Each app's STS calls per second, shared by the cluster.
//!
//! One token per STS call, taken from the app's row in `sts_budget` with one atomic statement
//! (a GCRA cell: the row holds when the next token is due). No replica holds tokens, so a dead
//! replica's share is back at once, and the budget follows the load wherever it lands. The
//! burst is a tenth of the rate (at least one call), so over any one-second window the
//! cluster makes at most the rate plus a tenth. On a miss that claims the shared credential's
//! mint, the token is taken by the claim's own statement (only when the claim is won, and only
//! if the budget's row is free at once: see [`crate::cluster::shared`]), so it costs no round
//! trip of its own; otherwise (shared credentials off, the table failed, the row busy) it is
//! one statement on the mint path, next to an STS call that costs far more. Either way a
//! refused token is a 429 with `Retry-After`.
//!
//! When the database refuses the statement, each replica falls back to its own bucket with
//! its share (rate / live replicas), so the limit still holds approximately. When it does not
//! answer within the request's deadline, the request is answered 503: its issuance-log row
//! could not be written in time either.

use std::sync::Arc;
use std::time::Duration;

use policy_store::{AppId, BudgetGrant, Store, StsBudget};

use crate::deadline::Deadline;
use crate::error::ApiError;
use crate::ratelimit::{RateLimiter, replica_share};

pub struct Budget {
    store: Arc<dyn Store>,
    fallback: RateLimiter,
}

/// Calls that may come at once: a tenth of a second's worth, at least one.
pub fn burst(per_second: u32) -> u32 {
    per_second.div_ceil(10).max(1)
}

/// The budget of an app allowed `per_second` STS calls; `None` for 0 (unlimited).
pub fn sts_budget(per_second: u32) -> Option<StsBudget> {
    (per_second > 0).then(|| StsBudget {
        per_second,
        burst: burst(per_second),
    })
}

/// The answer to a token asked of the cluster's budget: a 429 with `Retry-After` when it is
/// used up.
pub fn granted(grant: BudgetGrant) -> Result<(), ApiError> {
    match grant {
        BudgetGrant::Granted => Ok(()),
        BudgetGrant::RetryAfter(wait) => Err(ApiError::RateLimited {
            retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
        }),
    }
}

impl Budget {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            fallback: RateLimiter::new(100_000, Duration::from_secs(600)),
        }
    }

    /// Takes one STS call of the app's budget of `per_second` (0: unlimited): a 429 with
    /// `Retry-After` when it is used up. `live` is the live replica count (for the fallback);
    /// the database round trip draws from the request's `deadline`.
    pub async fn take(
        &self,
        app: AppId,
        per_second: u32,
        live: u32,
        deadline: &Deadline,
    ) -> Result<(), ApiError> {
        let Some(budget) = sts_budget(per_second) else {
            return Ok(());
        };
        let asked = self.store.take_sts_budget(app, budget);
        match deadline.run(asked).await {
            Some(Ok(grant)) => granted(grant),
            Some(Err(e)) => {
                tracing::warn!(app, error = %e, "cannot take from the cluster's STS budget; using this replica's share");
                self.fallback
                    .check(
                        &app,
                        replica_share(per_second, live),
                        Duration::from_secs(1),
                    )
                    .map_err(|retry_after| ApiError::RateLimited { retry_after })
            }
            None => {
                tracing::warn!(
                    app,
                    "the cluster's STS budget did not answer within the request's database deadline"
                );
                Err(ApiError::Unavailable)
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
        assert_eq!(sts_budget(0), None);
        assert_eq!(
            sts_budget(25),
            Some(StsBudget {
                per_second: 25,
                burst: 3
            })
        );
    }

    #[test]
    fn a_refusal_waits_at_least_a_second() {
        assert!(granted(BudgetGrant::Granted).is_ok());
        for (wait, secs) in [(10, 1), (1000, 1), (1001, 2)] {
            match granted(BudgetGrant::RetryAfter(Duration::from_millis(wait))) {
                Err(ApiError::RateLimited { retry_after }) => assert_eq!(retry_after, secs),
                other => panic!("{other:?}"),
            }
        }
    }
}
