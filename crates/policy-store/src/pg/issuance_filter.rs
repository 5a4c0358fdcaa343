//! The WHERE clause of issuance-log searches, shared by the page query and its row count.

use sqlx::{Postgres, QueryBuilder};

use crate::error::{FieldError, Result, StoreError};
use crate::model::IssuanceFilter;
use crate::validate::valid_ip_or_cidr;

/// Refuses a filter the query cannot use (checked before any SQL runs).
pub(super) fn check(filter: &IssuanceFilter) -> Result<()> {
    if let Some(ip) = &filter.source_ip
        && !valid_ip_or_cidr(ip.trim())
    {
        return Err(StoreError::Invalid(vec![FieldError::new(
            "source_ip",
            "an IP address or a CIDR block such as 10.0.0.0/8",
        )]));
    }
    Ok(())
}

/// The smallest string greater than every string that starts with `prefix`, in byte order
/// (UTF-8 byte order is code-point order): the last character that can be incremented is,
/// and what follows it is dropped. `None` when there is none (every string is below).
pub(super) fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Appends ` AND …` for every filter that is set.
pub(super) fn push_where(qb: &mut QueryBuilder<Postgres>, filter: &IssuanceFilter) {
    if let Some(app) = &filter.app {
        qb.push(" AND app = ").push_bind(app.clone());
    }
    if let Some(subject) = &filter.subject {
        if filter.subject_prefix {
            // A byte-order range: it walks issuance_log_subject_pattern_idx (text_pattern_ops)
            // whatever the collation, and with bound parameters.
            qb.push(" AND subject ~>=~ ").push_bind(subject.clone());
            if let Some(upper) = prefix_upper_bound(subject) {
                qb.push(" AND subject ~<~ ").push_bind(upper);
            }
        } else {
            qb.push(" AND subject = ").push_bind(subject.clone());
        }
    }
    if let Some(outcome) = filter.outcome {
        qb.push(" AND outcome = ").push_bind(outcome.as_str());
    }
    if let Some(from) = filter.from {
        qb.push(" AND at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        qb.push(" AND at < ").push_bind(to);
    }
    if let Some(ip) = &filter.source_ip {
        let ip = ip.trim();
        // An exact address walks (source_ip, at, id) in order; a block is a range scan.
        let op = if ip.contains('/') { " <<= " } else { " = " };
        qb.push(" AND source_ip")
            .push(op)
            .push_bind(ip.to_owned())
            .push("::inet");
    }
    if let Some(t) = &filter.tmp_secret_id {
        qb.push(" AND tmp_secret_id = ").push_bind(t.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_upper_bound;

    #[test]
    fn prefix_bounds_cover_exactly_the_strings_that_start_with_the_prefix() {
        assert_eq!(prefix_upper_bound("ali").as_deref(), Some("alj"));
        assert_eq!(prefix_upper_bound("a\u{10ffff}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{10ffff}"), None);
        assert_eq!(prefix_upper_bound(""), None);
        // Surrogates are skipped: the next scalar value after U+D7FF is U+E000.
        assert_eq!(
            prefix_upper_bound("x\u{d7ff}").as_deref(),
            Some("x\u{e000}")
        );
        let upper = prefix_upper_bound("用户").unwrap();
        for inside in ["用户", "用户1", "用户\u{10ffff}x"] {
            assert!(inside.as_bytes() >= "用户".as_bytes() && inside.as_bytes() < upper.as_bytes());
        }
        for outside in ["用", "用户"[..3].to_owned().as_str(), "用扇"] {
            let b = outside.as_bytes();
            assert!(b < "用户".as_bytes() || b >= upper.as_bytes(), "{outside}");
        }
    }
}
