//! Membership: every replica beats its row in `cluster_members` once per heartbeat and reads
//! back who is live (a beat within three heartbeats, on the database's clock).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use policy_store::{MemberInfo, Store};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::Metrics;

/// Beats between purges of expired shared credentials and long-gone members.
const PURGE_EVERY: u32 = 30;

/// Beats a replica may miss before it is out.
pub const MISSED_BEATS: u32 = 3;

pub struct Membership {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    id: Uuid,
    heartbeat: Duration,
    /// The live count from the last beat that reached the database (this replica included,
    /// so never 0).
    live: AtomicU32,
    /// A beat has reached the database: `live` is a count, not the initial guess.
    counted: AtomicBool,
}

impl Membership {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>, heartbeat: Duration) -> Self {
        metrics.set_cluster_members(1);
        Self {
            store,
            metrics,
            id: Uuid::new_v4(),
            heartbeat: heartbeat.max(Duration::from_millis(100)),
            live: AtomicU32::new(1),
            counted: AtomicBool::new(false),
        }
    }

    /// This replica's member id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Live replicas, this one included (1 until the first beat has been answered).
    pub fn live(&self) -> u32 {
        self.live.load(Ordering::Relaxed).max(1)
    }

    /// This replica is the only live one, as its last beat to reach the database counted
    /// (false until a beat has: a replica that does not beat, or has not yet, never knows it
    /// is alone).
    pub fn alone(&self) -> bool {
        self.counted.load(Ordering::Relaxed) && self.live.load(Ordering::Relaxed) == 1
    }

    /// How old a member's last beat may be for it to count as live.
    pub fn live_within(&self) -> Duration {
        self.heartbeat * MISSED_BEATS
    }

    /// Beats until `stop`, then leaves the membership. `public_addr` and `admin_addr` are
    /// what the dashboard shows for this replica.
    pub async fn run(
        self: Arc<Self>,
        public_addr: String,
        admin_addr: String,
        stop: CancellationToken,
    ) {
        let me = MemberInfo {
            id: self.id,
            host: host_name(),
            public_addr,
            admin_addr,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let mut ticks = tokio::time::interval(self.heartbeat);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beats: u32 = 0;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            self.beat(&me).await;
            beats = beats.wrapping_add(1);
            if beats % PURGE_EVERY == 1 {
                match self.store.purge_cluster_rows().await {
                    Ok(n) if n > 0 => {
                        tracing::debug!(rows = n, "purged expired shared credentials")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot purge expired shared credentials"),
                }
            }
        }
        // Others see this replica out at once instead of after three beats.
        match tokio::time::timeout(Duration::from_secs(2), self.store.leave_cluster(self.id)).await
        {
            Ok(Ok(())) => tracing::info!(member = %self.id, "left the cluster"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot leave the cluster; the others will see this replica out after three beats")
            }
            Err(_) => tracing::warn!(
                "leaving the cluster timed out; the others will see this replica out after three beats"
            ),
        }
    }

    async fn beat(&self, me: &MemberInfo) {
        let beat =
            tokio::time::timeout(self.heartbeat, self.store.heartbeat(me, self.live_within()));
        match beat.await {
            Ok(Ok(members)) => {
                let live = members.iter().filter(|m| m.live).count();
                let live = u32::try_from(live).unwrap_or(u32::MAX).max(1);
                let before = self.live.swap(live, Ordering::Relaxed);
                self.counted.store(true, Ordering::Relaxed);
                if before != live {
                    tracing::info!(live, before, "cluster membership changed");
                }
                self.metrics.set_cluster_members(u64::from(live));
            }
            // The last known count stays: without the database this replica refuses
            // requests anyway (their issuance-log rows cannot be written).
            Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat failed"),
            Err(_) => tracing::warn!("heartbeat timed out"),
        }
    }
}

/// The host name, as containers and pods set it (`HOSTNAME`), else the kernel's.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
        .chars()
        .take(255)
        .collect()
}
