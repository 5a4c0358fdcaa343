//! "Test a token": the JWT page verifies a pasted token with the app's real settings,
//! signature included, and says whether it would get credentials and, if not, exactly why.
//!
//! The verifier lives in the gateway, which this crate must not depend on: the page talks to a
//! [`TokenTester`] that the binary implements with the gateway's verifier (`src/serve.rs`).
//! A test never issues a credential and never writes an issuance row; the page never shows the
//! token again. Tests are limited per admin session ([`TESTS_PER_MINUTE`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

/// Token tests one admin session may run per minute.
pub const TESTS_PER_MINUTE: u32 = 10;

/// Checks a token for an app as the credential endpoint would, without issuing anything.
pub trait TokenTester: Send + Sync {
    /// `app` is the app's slug; `token` the pasted JWT (a `Bearer ` prefix already removed).
    fn test<'a>(&'a self, app: &'a str, token: &'a str) -> BoxFuture<'a, TokenVerdict>;
}

/// What a token test found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenVerdict {
    pub outcome: TokenOutcome,
    /// What the token says about itself, for the admin to compare with the settings: `alg`,
    /// `kid`, `iss`, `aud`, the user claim, `exp` (each bounded and cleaned; never the token,
    /// the signature or any other claim).
    pub seen: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOutcome {
    /// The credential endpoint would hand this token credentials.
    WouldIssue {
        subject: String,
        /// The user's home prefix, rendered.
        prefix: String,
        /// The actions the policy grants.
        actions: Vec<String>,
    },
    /// Refused: the status and error code the endpoint would answer, and why in words (with
    /// what to change).
    Refused {
        status: u16,
        code: String,
        reason: String,
    },
}

/// A fixed one-minute window per session key.
pub(crate) struct SessionLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

/// Sessions remembered at most; older windows are dropped first when full.
const MAX_SESSIONS: usize = 10_000;

impl SessionLimiter {
    pub(crate) fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one test for `session`; `Err(seconds)` to wait when the window is used up.
    pub(crate) fn admit(&self, session: &str) -> Result<(), u64> {
        let now = Instant::now();
        let window = Duration::from_secs(60);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= MAX_SESSIONS {
            windows.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = windows.entry(session.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        if entry.1 >= self.per_minute {
            let wait = window.saturating_sub(now.duration_since(entry.0));
            return Err(wait.as_secs().max(1));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_session_gets_its_own_window() {
        let limiter = SessionLimiter::new(3);
        for _ in 0..3 {
            limiter.admit("a").unwrap();
        }
        let wait = limiter.admit("a").unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        limiter.admit("b").unwrap();
    }
}
