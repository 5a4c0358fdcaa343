//! What every page's layout needs, and small formatting helpers for templates.

use actix_web::HttpRequest;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::session::CurrentUser;

/// The frame around every signed-in page: who is signed in, the CSRF token for the forms,
/// which navigation entry is current, the asset version, and a notice after a redirect.
pub struct Layout {
    pub title: String,
    pub user: String,
    pub role: &'static str,
    pub is_admin: bool,
    pub csrf: String,
    pub nav: &'static str,
    pub asset_version: &'static str,
    pub notice: Option<&'static str>,
}

impl Layout {
    pub fn new(user: &CurrentUser, nav: &'static str, title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            user: user.username.clone(),
            role: user.role.as_str(),
            is_admin: user.is_admin(),
            csrf: user.csrf.clone(),
            nav,
            asset_version: crate::assets::version(),
            notice: None,
        }
    }

    /// Shows the notice named by the `notice` query parameter (fixed texts only: the page
    /// never echoes text from the URL).
    pub fn with_notice(mut self, req: &HttpRequest) -> Self {
        self.notice = notice_from(req.query_string());
        self
    }
}

fn notice_from(query: &str) -> Option<&'static str> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    let key = pairs
        .iter()
        .find(|(k, _)| k == "notice")
        .map(|(_, v)| v.as_str())?;
    Some(match key {
        "created" => "Created.",
        "saved" => "Saved. Every replica picks the change up within seconds.",
        "enabled" => "The app is enabled.",
        "disabled" => "The app is disabled: its next credential request is refused.",
        "policy_saved" => "Policy saved as a new version and made active.",
        "rolled_back" => "Rolled back: that version is active again.",
        "blocked" => "Subject blocked.",
        "unblocked" => "Subject unblocked.",
        "user_created" => "User created.",
        "user_saved" => "User updated.",
        "password_reset" => "Password reset. The user's sessions have ended.",
        _ => return None,
    })
}

const TIME: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
const INPUT_TIME: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]");
const INPUT_TIME_SECS: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");

/// `2024-05-01 12:00:00 UTC`.
pub fn fmt_time(t: OffsetDateTime) -> String {
    let utc = t.to_offset(UtcOffset::UTC);
    format!("{} UTC", utc.format(TIME).unwrap_or_default())
}

/// The value of a `datetime-local` input for `t`, in UTC.
pub fn input_time(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC)
        .format(INPUT_TIME)
        .unwrap_or_default()
}

/// Parses a `datetime-local` value (read as UTC), or RFC 3339.
pub fn parse_input_time(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Some(t);
    }
    PrimitiveDateTime::parse(s, INPUT_TIME)
        .or_else(|_| PrimitiveDateTime::parse(s, INPUT_TIME_SECS))
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// `1.2 ms`, `850 µs`, `2.40 s`.
pub fn fmt_latency(us: i64) -> String {
    if us < 1000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} s", us as f64 / 1_000_000.0)
    }
}

/// `90 s`, `30 min`, `2 h`, `1 h 30 min`.
pub fn fmt_duration(secs: i64) -> String {
    if secs < 120 {
        return format!("{secs} s");
    }
    let mins = secs / 60;
    if mins < 60 {
        return format!("{mins} min");
    }
    let (h, m) = (mins / 60, mins % 60);
    if m == 0 {
        format!("{h} h")
    } else {
        format!("{h} h {m} min")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(fmt_time(t), "2023-11-14 22:13:20 UTC");
        assert_eq!(input_time(t), "2023-11-14T22:13");
        assert_eq!(
            parse_input_time("2023-11-14T22:13").unwrap(),
            OffsetDateTime::from_unix_timestamp(1_699_999_980).unwrap()
        );
        assert_eq!(parse_input_time("2023-11-14T22:13:20Z").unwrap(), t);
        assert!(parse_input_time("yesterday").is_none());
        assert_eq!(fmt_latency(850), "850 µs");
        assert_eq!(fmt_latency(1250), "1.2 ms");
        assert_eq!(fmt_latency(2_400_000), "2.40 s");
        assert_eq!(fmt_duration(90), "90 s");
        assert_eq!(fmt_duration(1800), "30 min");
        assert_eq!(fmt_duration(7200), "2 h");
        assert_eq!(fmt_duration(5400), "1 h 30 min");
        assert_eq!(
            notice_from("notice=saved&x=1").map(|n| &n[..6]),
            Some("Saved.")
        );
        assert_eq!(notice_from("notice=<script>"), None);
    }
}
