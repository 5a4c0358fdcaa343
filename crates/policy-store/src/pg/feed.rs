//! Following other replicas' changes: `LISTEN stsgate_changes`, as typed events.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::{ADMIN_NOTIFY_PAYLOAD, CHANGES_CHANNEL};
use crate::error::DatabaseError;
use crate::model::AppId;

/// Pause between attempts to (re)connect the listener.
const RETRY: Duration = Duration::from_secs(1);

/// What changed, as far as a cache of store data needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// This app, its JWT settings, templates or blocked subjects changed (or it was created).
    App(AppId),
    /// Admin users or their sessions changed.
    AdminUsers,
    /// Anything may have changed: the feed has just (re)connected, so notifications may have
    /// been missed, or one could not be read.
    Resync,
}

impl Change {
    /// Reads a notification payload; one this binary cannot read means [`Change::Resync`].
    fn parse(payload: &str) -> Self {
        if payload == ADMIN_NOTIFY_PAYLOAD {
            return Change::AdminUsers;
        }
        match payload.parse::<AppId>() {
            Ok(id) => Change::App(id),
            Err(_) => {
                tracing::warn!(
                    payload = %payload.chars().take(64).collect::<String>(),
                    "unreadable change notification; treating it as a resync"
                );
                Change::Resync
            }
        }
    }
}

/// Changes committed by any replica, in commit order. Obtained from
/// [`PgStore::changes`](super::PgStore::changes).
///
/// It holds one pooled connection while listening. When that connection fails it reconnects
/// (once a second until it succeeds) and reports [`Change::Resync`], because notifications
/// sent meanwhile are lost; the first event after a connect is always `Resync`.
pub struct ChangeFeed {
    pool: PgPool,
    listener: Option<PgListener>,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("listening", &self.listener.is_some())
            .finish_non_exhaustive()
    }
}

impl ChangeFeed {
    pub(super) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            listener: None,
        }
    }

    /// The next change. Never fails: a lost connection is reported as [`Change::Resync`].
    /// Cancel-safe (no notification is lost when the future is dropped), so it can be raced
    /// against a shutdown signal.
    pub async fn next(&mut self) -> Change {
        let Some(listener) = &mut self.listener else {
            self.listener = Some(self.connect().await);
            return Change::Resync;
        };
        match listener.try_recv().await {
            Ok(Some(n)) => Change::parse(n.payload()),
            // sqlx reconnects on the next receive; what was sent in between is lost.
            Ok(None) => {
                tracing::warn!("change listener lost its connection; reconnecting");
                Change::Resync
            }
            Err(e) => {
                tracing::warn!(error = %DatabaseError::from_sqlx(&e), "change listener failed; reconnecting");
                self.listener = None;
                Change::Resync
            }
        }
    }

    async fn connect(&self) -> PgListener {
        loop {
            match self.try_connect().await {
                Ok(listener) => return listener,
                Err(e) => {
                    tracing::warn!(error = %DatabaseError::from_sqlx(&e), "cannot listen for changes; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    async fn try_connect(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        Ok(listener)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(Change::parse("42"), Change::App(42));
        assert_eq!(Change::parse("admin"), Change::AdminUsers);
        assert_eq!(Change::parse(""), Change::Resync);
        assert_eq!(Change::parse("42x"), Change::Resync);
        assert_eq!(Change::parse("ADMIN"), Change::Resync);
    }
}
