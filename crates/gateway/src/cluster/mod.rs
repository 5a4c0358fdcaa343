//! Cluster mode (DESIGN §8): replicas on one PostgreSQL behave as one gateway, with no other
//! component.
//!
//! - [`membership`]: a heartbeat row per replica; the live count divides per-subject limits
//!   and is in `/metrics`.
//! - [`budget`]: each app's STS calls per second, shared by the cluster.
//! - [`shared`]: credentials shared between replicas, so one (user, policy) costs one STS
//!   call per reuse window cluster-wide.
//!
//! The local hit path touches none of it: only a local cache miss does.

pub mod budget;
pub mod membership;
pub mod shared;

use std::time::Duration;

pub use budget::Budget;
pub use membership::Membership;
pub use shared::SharedCredentials;

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// How often a replica beats; three missed beats and it is out.
    pub heartbeat: Duration,
    /// Look in the shared credential table on a local miss (off: every replica mints its own).
    pub shared_credentials: bool,
    /// How long a replica's claim on a mint holds at most (less when its request's deadline and
    /// STS call cannot take that long), and how long others wait for it before
    /// they mint themselves (unless their request's database deadline runs out first).
    pub claim_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            shared_credentials: true,
            claim_timeout: Duration::from_secs(5),
        }
    }
}
