//! One database deadline per credential request.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A request's database budget, `database_timeout`: every database step on its path draws
/// from it in turn (loading the app; on a local miss the shared credential's claim, which
/// takes the cluster's STS budget token with it, or the budget's own statement, the wait for
/// another replica's row and the write; the issuance-log commit), so PostgreSQL can hold one request up for that long in all, wherever it stalls.
/// When it runs out the answer is 503: a credential could not get its row anyway.
///
/// Time spent on STS is not drawn from it (this request's call, or a mint it shares with
/// another request of this replica): the STS client has its own bounds. A request that waited
/// for another request's mint is charged the rest of its wait (that request's database steps),
/// so the database never holds it up longer than the budget either.
///
/// A mint needs some of the budget left after STS answers (storing the credential for the
/// other replicas, the issuance-log commit): it neither claims nor calls STS with less than
/// [`Deadline::floor`] left, and is answered 503 instead.
#[derive(Debug)]
pub struct Deadline {
    budget: Duration,
    spent_us: AtomicU64,
}

impl Deadline {
    pub fn new(budget: Duration) -> Self {
        Self {
            budget,
            spent_us: AtomicU64::new(0),
        }
    }

    /// A tenth of the budget: the least a mint must have left before it claims or calls STS.
    pub fn floor(&self) -> Duration {
        self.budget / 10
    }

    /// Less than [`Deadline::floor`] is left.
    pub fn below_floor(&self) -> bool {
        self.remaining() < self.floor()
    }

    /// What is left of the budget.
    pub fn remaining(&self) -> Duration {
        self.budget
            .saturating_sub(Duration::from_micros(self.spent_us.load(Ordering::Relaxed)))
    }

    /// The instant the rest runs out if it is spent from now on (for calls that take one).
    pub fn instant(&self) -> Instant {
        Instant::now() + self.remaining()
    }

    /// Draws `spent` from the budget.
    pub fn charge(&self, spent: Duration) {
        let us = u64::try_from(spent.as_micros()).unwrap_or(u64::MAX);
        self.spent_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Runs one database step within what is left, drawing its time. `None`: the budget ran
    /// out before the step finished (or was already spent).
    pub async fn run<T>(&self, step: impl Future<Output = T>) -> Option<T> {
        let left = self.remaining();
        if left.is_zero() {
            return None;
        }
        let started = Instant::now();
        let done = tokio::time::timeout(left, step).await.ok();
        self.charge(started.elapsed());
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn steps_draw_from_one_budget() {
        let deadline = Deadline::new(Duration::from_secs(3));
        let slow = |s| tokio::time::sleep(Duration::from_secs(s));
        assert_eq!(deadline.run(slow(1)).await, Some(()));
        assert_eq!(deadline.remaining(), Duration::from_secs(2));
        // A stalled step gets what is left, not a budget of its own.
        assert_eq!(deadline.run(slow(60)).await, None);
        assert!(deadline.remaining().is_zero());
        assert_eq!(deadline.run(async {}).await, None);
        let other = Deadline::new(Duration::from_secs(3));
        other.charge(Duration::from_secs(5));
        assert!(other.remaining().is_zero());
        assert!(other.below_floor());
        let fresh = Deadline::new(Duration::from_secs(3));
        assert_eq!(fresh.floor(), Duration::from_millis(300));
        assert!(!fresh.below_floor());
        fresh.charge(Duration::from_millis(2800));
        assert!(fresh.below_floor());
    }
}
