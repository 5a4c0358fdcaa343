//! Every issuance-log field bounded and cleaned before it is queued, whatever its source (the
//! client, the token, STS): one bad value must never fail the batch it shares with other
//! tenants' rows.

use std::net::IpAddr;

use policy_store::IssuanceRecord;

/// Longest value kept per field, in characters.
pub const MAX_APP: usize = 128;
pub const MAX_SUBJECT: usize = 256;
pub const MAX_ERROR_CODE: usize = 512;
pub const MAX_REQUEST_ID: usize = 128;
pub const MAX_TMP_SECRET_ID: usize = 256;
pub const MAX_POLICY_HASH: usize = 128;
pub const MAX_ACTION: usize = 128;
pub const MAX_ACTIONS: usize = 64;
pub const MAX_PREFIX: usize = 1024;
pub const MAX_USER_AGENT: usize = 512;

/// Free text that goes into the issuance log: bounded, and without characters Postgres
/// refuses (NUL) or that would forge log lines.
pub fn log_text(s: &str, max_chars: usize) -> String {
    s.chars()
        .take(max_chars)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

fn opt(s: Option<String>, max_chars: usize) -> Option<String> {
    s.map(|s| log_text(&s, max_chars))
}

/// `record` with every field within what the table takes: text bounded and free of control
/// characters, the source address a parseable IP (or none), numbers in range.
pub fn clean(record: IssuanceRecord) -> IssuanceRecord {
    IssuanceRecord {
        app: log_text(&record.app, MAX_APP),
        subject: opt(record.subject, MAX_SUBJECT),
        error_code: opt(record.error_code, MAX_ERROR_CODE),
        request_id: log_text(&record.request_id, MAX_REQUEST_ID),
        sts_request_id: opt(record.sts_request_id, MAX_REQUEST_ID),
        tmp_secret_id: opt(record.tmp_secret_id, MAX_TMP_SECRET_ID),
        policy_hash: opt(record.policy_hash, MAX_POLICY_HASH),
        actions: record
            .actions
            .iter()
            .take(MAX_ACTIONS)
            .map(|a| log_text(a, MAX_ACTION))
            .collect(),
        prefix: opt(record.prefix, MAX_PREFIX),
        duration_seconds: record.duration_seconds.filter(|d| *d >= 0),
        source_ip: record.source_ip.filter(|ip| ip.parse::<IpAddr>().is_ok()),
        user_agent: opt(record.user_agent, MAX_USER_AGENT),
        latency_us: record.latency_us.max(0),
        count: record.count.max(1),
        ..record
    }
}

#[cfg(test)]
mod tests {
    use policy_store::Outcome;
    use time::OffsetDateTime;

    use super::*;

    #[test]
    fn log_text_strips_controls_and_bounds_length() {
        assert_eq!(log_text("a\0b\nc", 10), "a\u{fffd}b\u{fffd}c");
        assert_eq!(log_text(&"x".repeat(300), 256).len(), 256);
    }

    #[test]
    fn every_field_is_bounded_and_cleaned() {
        let long = "y".repeat(5_000);
        let dirty = IssuanceRecord {
            id: 0,
            at: OffsetDateTime::now_utc(),
            app: format!("a\0{long}"),
            subject: Some(long.clone()),
            outcome: Outcome::Issued,
            http_status: 200,
            error_code: Some(long.clone()),
            request_id: format!("r\0{long}"),
            sts_request_id: Some(format!("s\0{long}")),
            tmp_secret_id: Some(format!("AKID\0{long}")),
            policy_hash: Some(long.clone()),
            template_version: Some(1),
            actions: vec![long.clone(); 500],
            prefix: Some(long.clone()),
            duration_seconds: Some(-5),
            expired_time: None,
            source_ip: Some("not an ip".into()),
            user_agent: Some(long.clone()),
            latency_us: -1,
            count: 0,
        };
        let c = clean(dirty);
        let fields = [
            Some(&c.app),
            c.subject.as_ref(),
            c.error_code.as_ref(),
            Some(&c.request_id),
            c.sts_request_id.as_ref(),
            c.tmp_secret_id.as_ref(),
            c.policy_hash.as_ref(),
            c.prefix.as_ref(),
            c.user_agent.as_ref(),
        ];
        for f in fields.into_iter().flatten().chain(&c.actions) {
            assert!(f.chars().count() <= MAX_PREFIX, "{}", f.len());
            assert!(!f.contains('\0'));
        }
        assert_eq!(c.tmp_secret_id.unwrap().chars().count(), MAX_TMP_SECRET_ID);
        assert_eq!(c.actions.len(), MAX_ACTIONS);
        assert_eq!(c.source_ip, None);
        assert_eq!(c.duration_seconds, None);
        assert_eq!(c.latency_us, 0);
        assert_eq!(c.count, 1);
    }
}
