use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::Serialize;

/// A credential the emulator issued. The key and token stay inside the emulator (the COS data
/// plane needs them); the `/_emulator/credentials` view leaves them out.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedCredential {
    pub tmp_secret_id: String,
    #[serde(skip)]
    pub tmp_secret_key: String,
    #[serde(skip)]
    pub token: String,
    /// The caller's permanent SecretId.
    pub secret_id: String,
    pub appid: String,
    pub action: String,
    /// GetFederationToken `Name`, or AssumeRole `RoleSessionName`.
    pub name: String,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    /// The decoded session policy, when one was attached.
    pub policy: Option<serde_json::Value>,
    pub duration_seconds: u64,
    pub issued_at: i64,
    pub expired_time: i64,
    pub request_id: String,
}

/// Counters for tests and benchmarks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Requests that reached the STS endpoint (faulted ones included).
    pub requests: u64,
    pub issued: u64,
    /// Error answers by code.
    pub errors: BTreeMap<String, u64>,
    pub dropped: u64,
}

/// One request that reached the STS endpoint, for tests that check rates over time windows.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    /// Unix time in milliseconds when the request arrived.
    pub at_ms: i64,
    /// The caller's SecretId as the request named it (before authentication).
    pub secret_id: Option<String>,
    /// `ok`, the STS error code, or `dropped`.
    pub outcome: String,
}

/// The most call records kept (the oldest go first).
const MAX_CALL_RECORDS: usize = 500_000;

#[derive(Default)]
pub(crate) struct Store {
    calls: Mutex<std::collections::VecDeque<CallRecord>>,
    issued: Mutex<Vec<IssuedCredential>>,
    by_id: Mutex<HashMap<String, usize>>,
    stats: Mutex<Stats>,
    /// Per SecretId: (second, requests in that second).
    windows: Mutex<HashMap<String, (i64, u32)>>,
}

impl Store {
    pub(crate) fn record_request(&self) {
        self.stats.lock().unwrap().requests += 1;
    }

    pub(crate) fn record_error(&self, code: &str) {
        *self
            .stats
            .lock()
            .unwrap()
            .errors
            .entry(code.to_owned())
            .or_default() += 1;
    }

    pub(crate) fn record_call(&self, call: CallRecord) {
        let mut calls = self.calls.lock().unwrap();
        if calls.len() == MAX_CALL_RECORDS {
            calls.pop_front();
        }
        calls.push_back(call);
    }

    /// Calls that arrived at or after `since_ms`, oldest first.
    pub(crate) fn calls_since(&self, since_ms: i64) -> Vec<CallRecord> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.at_ms >= since_ms)
            .cloned()
            .collect()
    }

    pub(crate) fn record_drop(&self) {
        self.stats.lock().unwrap().dropped += 1;
    }

    pub(crate) fn insert(&self, cred: IssuedCredential) {
        let mut issued = self.issued.lock().unwrap();
        self.by_id
            .lock()
            .unwrap()
            .insert(cred.tmp_secret_id.clone(), issued.len());
        issued.push(cred);
        self.stats.lock().unwrap().issued += 1;
    }

    pub(crate) fn get(&self, tmp_secret_id: &str) -> Option<IssuedCredential> {
        let idx = *self.by_id.lock().unwrap().get(tmp_secret_id)?;
        self.issued.lock().unwrap().get(idx).cloned()
    }

    pub(crate) fn all(&self) -> Vec<IssuedCredential> {
        self.issued.lock().unwrap().clone()
    }

    pub(crate) fn stats(&self) -> Stats {
        self.stats.lock().unwrap().clone()
    }

    /// Counts a request against the account's per-second limit; false when over it.
    pub(crate) fn admit(&self, secret_id: &str, now: i64, limit: u32) -> bool {
        let mut windows = self.windows.lock().unwrap();
        let w = windows.entry(secret_id.to_owned()).or_insert((now, 0));
        if w.0 != now {
            *w = (now, 0);
        }
        w.1 += 1;
        w.1 <= limit
    }
}
