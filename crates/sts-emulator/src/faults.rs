use serde::{Deserialize, Serialize};

/// Faults injected into STS answers. Settable at start and at run time (`PUT /_emulator/faults`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added before every STS answer.
    pub latency_ms: u64,
    /// Probability (0..=1) that a request is answered with `error_code`.
    pub error_rate: f64,
    /// The code used by `error_rate` and `fail_next`; `InternalError` when unset.
    pub error_code: Option<String>,
    /// The next N STS requests are answered with `error_code`, then service resumes.
    pub fail_next: u32,
    /// Probability (0..=1) that the connection is dropped without a complete answer.
    pub drop_rate: f64,
    /// The next N STS requests have their connection dropped.
    pub drop_next: u32,
    /// Seconds added to the emulator's clock (a skewed server makes callers' timestamps stale).
    pub clock_offset_secs: i64,
    /// The next N successful answers carry the values of `tamper` instead of the real ones
    /// (a broken or hostile STS: a NUL byte, an over-long TmpSecretId, a bad Expiration).
    pub tamper_next: u32,
    /// What `tamper_next` puts in the answer; unset fields keep their real values.
    pub tamper: Tamper,
    /// When set, latency, errors, drops and tampering apply only to requests signed with this
    /// SecretId; other accounts are answered normally (one app's STS misbehaves, the others'
    /// does not). The clock offset always applies to every account.
    pub secret_id: Option<String>,
}

/// Replacement values for a tampered answer (see [`Faults::tamper_next`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tamper {
    pub tmp_secret_id: Option<String>,
    pub request_id: Option<String>,
    pub expiration: Option<String>,
    pub expired_time: Option<i64>,
}

impl Faults {
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("drop_rate", self.drop_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        Ok(())
    }

    /// Whether the faults apply to a request signed with `secret_id` (unknown when `None`).
    pub fn applies_to(&self, secret_id: Option<&str>) -> bool {
        self.secret_id
            .as_deref()
            .is_none_or(|scoped| secret_id == Some(scoped))
    }

    pub fn error_code(&self) -> &str {
        self.error_code.as_deref().unwrap_or("InternalError")
    }
}
