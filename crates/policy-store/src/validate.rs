//! Input validation shared by the store's writers, and the name rules other crates reuse
//! (an app slug, a JWT claim name).

use std::net::IpAddr;

use secrecy::ExposeSecret;

use crate::error::{FieldError, Result, StoreError};
use crate::model::{AppInput, StsMode};

/// Longest STS credential lifetime accepted for an app, in seconds (36 h).
pub const MAX_DURATION_SECONDS: i32 = 129_600;

/// `Some("")` and whitespace-only become `None` (HTML forms send empty strings).
pub(crate) fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// An app slug, `[a-z0-9][a-z0-9-]{0,62}`: anything else cannot be an app (the gateway refuses
/// it without asking the database).
pub fn valid_slug(slug: &str) -> bool {
    let b = slug.as_bytes();
    (1..=63).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn token_like(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub(crate) fn validate_app(input: &AppInput, creating: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !valid_slug(&input.slug) {
        errs.push(FieldError::new(
            "slug",
            "1 to 63 characters of a-z, 0-9 and `-`, starting with a letter or digit",
        ));
    }
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        errs.push(FieldError::new("name", "1 to 200 characters"));
    }
    match sts_core::CosResource::new(&input.region, &input.bucket) {
        Ok(_) => {}
        Err(sts_core::PolicyError::Region(_)) => {
            errs.push(FieldError::new(
                "region",
                "a long region name such as ap-guangzhou",
            ));
            if sts_core::policy::appid_of_bucket(&input.bucket).is_none() {
                errs.push(FieldError::new(
                    "bucket",
                    "the full bucket name, `<name>-<appid>` (e.g. examplebucket-1250000000)",
                ));
            }
        }
        Err(_) => errs.push(FieldError::new(
            "bucket",
            "the full bucket name, `<name>-<appid>` (e.g. examplebucket-1250000000)",
        )),
    }
    match (input.mode, non_empty(&input.role_arn)) {
        (StsMode::AssumeRole, None) => errs.push(FieldError::new(
            "role_arn",
            "required for assume_role (e.g. qcs::cam::uin/100000000001:roleName/stsgate)",
        )),
        (_, Some(arn)) if !arn.starts_with("qcs::cam::") || !token_like(&arn) => {
            errs.push(FieldError::new(
                "role_arn",
                "a role ARN such as qcs::cam::uin/100000000001:roleName/stsgate",
            ))
        }
        _ => {}
    }
    if let Some(ext) = non_empty(&input.external_id)
        && ext.chars().count() > 256
    {
        errs.push(FieldError::new("external_id", "at most 256 characters"));
    }
    if !token_like(&input.secret_id) || input.secret_id.len() > 256 {
        errs.push(FieldError::new(
            "secret_id",
            "the permanent key's SecretId (no spaces)",
        ));
    }
    match &input.secret_key {
        None if creating => errs.push(FieldError::new("secret_key", "required")),
        Some(k) if !token_like(k.expose_secret()) || k.expose_secret().len() > 256 => errs.push(
            FieldError::new("secret_key", "the permanent key's SecretKey (no spaces)"),
        ),
        _ => {}
    }
    // The STS client's own check: an endpoint saved here is one the gateway can call.
    if let Some(url) = non_empty(&input.sts_endpoint)
        && let Err(e) = sts_core::client::check_endpoint(&url)
    {
        errs.push(FieldError::new(
            "sts_endpoint",
            format!("{e}: give an http(s) URL such as https://sts.tencentcloudapi.com"),
        ));
    }
    let range = 1..=MAX_DURATION_SECONDS;
    if !range.contains(&input.duration_default) {
        errs.push(FieldError::new(
            "duration_default",
            format!("between 1 and {MAX_DURATION_SECONDS} seconds"),
        ));
    }
    if !range.contains(&input.duration_max) {
        errs.push(FieldError::new(
            "duration_max",
            format!("between 1 and {MAX_DURATION_SECONDS} seconds"),
        ));
    } else if input.duration_default > input.duration_max {
        errs.push(FieldError::new(
            "duration_default",
            "must not exceed duration_max",
        ));
    }
    if let Some(m) = input.min_remaining
        && (m < 0 || m > input.duration_max)
    {
        errs.push(FieldError::new(
            "min_remaining",
            "between 0 and duration_max seconds (empty: half of the duration)",
        ));
    }
    if input.rate_subject_per_minute < 0 {
        errs.push(FieldError::new(
            "rate_subject_per_minute",
            "0 (no limit) or more",
        ));
    }
    if input.rate_app_per_second < 0 {
        errs.push(FieldError::new(
            "rate_app_per_second",
            "0 (no limit) or more",
        ));
    }
    errs
}

/// A JWT claim name an admin may configure or a template may reference (`${claim.NAME}`):
/// 1 to 64 characters of `A-Z a-z 0-9 _ . : -`.
pub fn valid_claim_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

pub(crate) fn validate_subject(subject: &str) -> Result<()> {
    if subject.is_empty() || subject.len() > 1024 {
        return Err(StoreError::Invalid(vec![FieldError::new(
            "subject",
            "1 to 1024 bytes",
        )]));
    }
    Ok(())
}

pub(crate) fn invalid_if_any(errs: Vec<FieldError>) -> Result<()> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Invalid(errs))
    }
}

/// `1.2.3.4`, `2001:db8::1` or a CIDR block such as `10.0.0.0/8`: what the issuance-log search
/// accepts as a source IP filter.
pub fn valid_ip_or_cidr(s: &str) -> bool {
    match s.split_once('/') {
        None => s.parse::<IpAddr>().is_ok(),
        Some((addr, bits)) => match (addr.parse::<IpAddr>(), bits.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
            (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_filters() {
        for ok in ["1.2.3.4", "10.0.0.0/8", "2001:db8::1", "2001:db8::/32"] {
            assert!(valid_ip_or_cidr(ok), "{ok}");
        }
        for bad in [
            "",
            "1.2.3",
            "10.0.0.0/33",
            "x/8",
            "1.2.3.4/",
            "1.2.3.4; DROP",
        ] {
            assert!(!valid_ip_or_cidr(bad), "{bad}");
        }
    }

    #[test]
    fn slugs() {
        assert!(valid_slug("demo-1"));
        assert!(!valid_slug("-demo"));
        assert!(!valid_slug("Demo"));
        assert!(!valid_slug(&"a".repeat(64)));
    }
}
