//! Input validation shared by the store's writers, and the name rules other crates reuse
//! (an app slug, a JWT claim name).

use std::net::IpAddr;

use secrecy::ExposeSecret;

use crate::error::{FieldError, Result, StoreError};
use crate::model::{AppInput, StsMode};

/// Longest STS credential lifetime accepted for an app, in seconds (36 h).
pub const MAX_DURATION_SECONDS: i32 = 129_600;

/// `Some("")` and whitespace-only become `None` (HTML forms send empty strings).
pub fn non_empty(v: &Option<String>) -> Option<String> {
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

/// The most STS calls per second an app may be set to: STS answers at most 600 requests per
/// second per account.
pub const MAX_STS_CALLS_PER_SECOND: i32 = 600;

/// What is wrong with a bucket name, in words that say what to write instead.
fn bucket_problem(bucket: &str) -> Option<String> {
    const EXAMPLE: &str = "e.g. examplebucket-1250000000 (copy it from the COS console)";
    let bucket = bucket.trim();
    if bucket.is_empty() {
        return Some(format!("enter the bucket's full name, {EXAMPLE}"));
    }
    let Some((name, appid)) = bucket.rsplit_once('-') else {
        return Some(format!(
            "add the APPID: the full name ends with a dash and the account's APPID, {EXAMPLE}"
        ));
    };
    if appid.is_empty() || !appid.bytes().all(|b| b.is_ascii_digit()) {
        return Some(format!(
            "the part after the last dash must be the account's APPID (digits only), {EXAMPLE}"
        ));
    }
    if name.is_empty() {
        return Some(format!("put the bucket's name before the APPID, {EXAMPLE}"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!(
            "bucket names use only lowercase letters, digits and dashes; remove “{c}”"
        ));
    }
    None
}

/// Every problem with an app's settings, each on its field, in words that say what to do.
pub fn validate_app(input: &AppInput, creating: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !valid_slug(&input.slug) {
        errs.push(FieldError::new(
            "slug",
            "use 1 to 63 lowercase letters, digits and dashes, starting with a letter or digit (e.g. photos-app)",
        ));
    }
    let name = input.name.trim();
    if name.is_empty() {
        errs.push(FieldError::new(
            "name",
            "give the app a name (it is shown in these pages)",
        ));
    } else if name.chars().count() > 200 {
        errs.push(FieldError::new(
            "name",
            "shorten the name to 200 characters",
        ));
    }
    if sts_core::CosResource::new(&input.region, "x-1").is_err() {
        errs.push(FieldError::new(
            "region",
            "enter the bucket's region as COS names it, e.g. ap-guangzhou or ap-shanghai",
        ));
    }
    if let Some(problem) = bucket_problem(&input.bucket) {
        errs.push(FieldError::new("bucket", problem));
    }
    match (input.mode, non_empty(&input.role_arn)) {
        (StsMode::AssumeRole, None) => errs.push(FieldError::new(
            "role_arn",
            "AssumeRole needs the role to assume: enter its ARN, e.g. qcs::cam::uin/100000000001:roleName/stsgate",
        )),
        (_, Some(arn)) if !arn.starts_with("qcs::cam::") || !token_like(&arn) => {
            errs.push(FieldError::new(
                "role_arn",
                "enter a role ARN starting with qcs::cam::, without spaces, e.g. qcs::cam::uin/100000000001:roleName/stsgate",
            ))
        }
        _ => {}
    }
    if let Some(ext) = non_empty(&input.external_id)
        && ext.chars().count() > 256
    {
        errs.push(FieldError::new(
            "external_id",
            "shorten the ExternalId to 256 characters",
        ));
    }
    if !token_like(&input.secret_id) || input.secret_id.len() > 256 {
        errs.push(FieldError::new(
            "secret_id",
            "paste the permanent key's SecretId (it starts with AKID and has no spaces)",
        ));
    }
    match &input.secret_key {
        None if creating => errs.push(FieldError::new(
            "secret_key",
            "paste the permanent key's SecretKey",
        )),
        Some(k) if !token_like(k.expose_secret()) || k.expose_secret().len() > 256 => {
            errs.push(FieldError::new(
                "secret_key",
                "paste the permanent key's SecretKey without spaces",
            ))
        }
        _ => {}
    }
    // The STS client's own check: an endpoint saved here is one the gateway can call.
    if let Some(url) = non_empty(&input.sts_endpoint)
        && let Err(e) = sts_core::client::check_endpoint(&url)
    {
        errs.push(FieldError::new(
            "sts_endpoint",
            format!("{e}: enter an http(s) URL such as https://sts.tencentcloudapi.com, or leave it empty"),
        ));
    }
    let range = 1..=MAX_DURATION_SECONDS;
    let default_ok = range.contains(&input.duration_default);
    let max_ok = range.contains(&input.duration_max);
    if !default_ok {
        errs.push(FieldError::new(
            "duration_default",
            format!("enter a number of seconds from 1 to {MAX_DURATION_SECONDS} (36 hours)"),
        ));
    }
    if !max_ok {
        errs.push(FieldError::new(
            "duration_max",
            format!("enter a number of seconds from 1 to {MAX_DURATION_SECONDS} (36 hours)"),
        ));
    }
    if default_ok && max_ok && input.duration_default > input.duration_max {
        errs.push(FieldError::new(
            "duration_default",
            format!(
                "the default duration is longer than the maximum ({} s): lower it, or raise the maximum",
                input.duration_max
            ),
        ));
    }
    if let Some(m) = input.min_remaining
        && (m < 0 || (max_ok && m > input.duration_max))
    {
        errs.push(FieldError::new(
            "min_remaining",
            "enter seconds from 0 up to the maximum duration, or leave it empty for half of each credential's duration",
        ));
    }
    if input.rate_subject_per_minute < 0 {
        errs.push(FieldError::new(
            "rate_subject_per_minute",
            "enter 0 for no limit, or a number of requests per minute",
        ));
    }
    if !(0..=MAX_STS_CALLS_PER_SECOND).contains(&input.rate_app_per_second) {
        errs.push(FieldError::new(
            "rate_app_per_second",
            format!(
                "enter 0 for no limit, or at most {MAX_STS_CALLS_PER_SECOND}: STS answers at most {MAX_STS_CALLS_PER_SECOND} calls per second per account"
            ),
        ));
    }
    errs.extend(crate::origin::origin_errors(&input.allowed_origins));
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
            "give the user's subject exactly as the token carries it (1 to 1024 bytes)",
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

    fn input() -> AppInput {
        AppInput {
            slug: "demo".into(),
            name: "Demo".into(),
            enabled: true,
            region: "ap-guangzhou".into(),
            bucket: "examplebucket-1250000000".into(),
            mode: StsMode::FederationToken,
            role_arn: None,
            external_id: None,
            secret_id: "AKIDexample".into(),
            secret_key: Some("key".to_owned().into()),
            sts_endpoint: None,
            duration_default: 1800,
            duration_max: 7200,
            min_remaining: None,
            rate_subject_per_minute: 60,
            rate_app_per_second: 100,
            allowed_origins: vec!["https://app.example.com".into()],
        }
    }

    #[test]
    fn app_errors_come_all_at_once_in_plain_words() {
        assert!(validate_app(&input(), true).is_empty());
        let bad = AppInput {
            name: "   ".into(),
            region: "Guangzhou".into(),
            bucket: "examplebucket".into(),
            duration_default: 9000,
            rate_app_per_second: 1000,
            secret_key: None,
            ..input()
        };
        let errs = validate_app(&bad, true);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "region",
                "bucket",
                "secret_key",
                "duration_default",
                "rate_app_per_second"
            ]
        );
        for e in &errs {
            assert!(!e.message.contains('`'), "{}: {}", e.field, e.message);
            assert!(!e.message.contains("duration_max"), "{}", e.message);
        }
        assert!(errs[0].message.contains("give the app a name"));
        assert!(
            errs[2].message.contains("add the APPID"),
            "{}",
            errs[2].message
        );
        assert!(errs[4].message.contains("longer than the maximum (7200 s)"));
        assert!(errs[5].message.contains("at most 600"));
        // 600 is STS's own limit: accepted; 0 means no limit.
        for ok in [0, 600] {
            let i = AppInput {
                rate_app_per_second: ok,
                ..input()
            };
            assert!(validate_app(&i, true).is_empty(), "{ok}");
        }
    }

    #[test]
    fn bucket_problems_say_what_to_fix() {
        assert_eq!(bucket_problem("examplebucket-1250000000"), None);
        for (bad, needle) in [
            ("", "enter the bucket's full name"),
            ("examplebucket", "add the APPID"),
            ("examplebucket-12x", "digits only"),
            ("-1250000000", "put the bucket's name before"),
            ("Example_bucket-1250000000", "remove “E”"),
        ] {
            let m = bucket_problem(bad).unwrap();
            assert!(m.contains(needle), "{bad}: {m}");
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
