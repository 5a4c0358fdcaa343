//! What every page's layout needs, and small formatting helpers for templates: times are
//! shown and read in the signed-in user's display time zone ([`Zone`]).

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use time::macros::format_description;
use time::{Duration, OffsetDateTime, PrimitiveDateTime, UtcOffset};
use time_tz::{OffsetDateTimeExt as _, OffsetResult, PrimitiveDateTimeExt as _, TimeZone as _, Tz};

use crate::session::CurrentUser;

/// The frame around every signed-in page: who is signed in, the CSRF token for the forms,
/// which navigation entry is current, the asset version, the time zone, and a notice after a
/// redirect.
pub struct Layout {
    pub title: String,
    pub user: String,
    pub role: &'static str,
    pub is_admin: bool,
    pub csrf: String,
    pub nav: &'static str,
    pub asset_version: &'static str,
    pub notice: Option<&'static str>,
    /// The display time zone's name (`UTC`, `Asia/Shanghai`).
    pub zone: String,
}

impl Layout {
    pub fn new(
        user: &CurrentUser,
        zone: &Zone,
        nav: &'static str,
        title: impl Into<String>,
    ) -> Self {
        Self {
            title: title.into(),
            user: user.username.clone(),
            role: user.role.as_str(),
            is_admin: user.is_admin(),
            csrf: user.csrf.clone(),
            nav,
            asset_version: crate::assets::version(),
            notice: None,
            zone: zone.name().to_owned(),
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
        "already_blocked" => "That subject was already blocked; its reason is unchanged.",
        "reason_updated" => {
            "That subject was already blocked; its reason is updated (the change log has both)."
        }
        "unblocked" => "Subject unblocked.",
        "user_created" => "User created.",
        "user_saved" => "User updated.",
        "password_reset" => "Password reset. The user's sessions have ended.",
        "account_saved" => "Saved: times are shown in your time zone.",
        "token_revoked" => "Token revoked: the API refuses it from now on.",
        _ => return None,
    })
}

const TIME: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
const INPUT_TIME: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]");
const INPUT_TIME_SECS: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");

/// The signed-in user's display time zone (UTC unless they chose one). Handlers take it as an
/// extractor; the route middleware puts it in the request (see `lib.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Zone {
    tz: Option<&'static Tz>,
}

impl Zone {
    pub const UTC: Zone = Zone { tz: None };

    /// The zone with this IANA name (`Asia/Shanghai`); `UTC` is UTC. Other spellings (Windows
    /// names, abbreviations) are refused so that what is stored is what is shown.
    pub fn named(name: &str) -> Option<Zone> {
        if name == "UTC" {
            return Some(Zone::UTC);
        }
        time_tz::timezones::get_by_name(name)
            .filter(|tz| tz.name() == name)
            .map(|tz| Zone { tz: Some(tz) })
    }

    /// Every zone name, sorted, for the settings page.
    pub fn all_names() -> Vec<&'static str> {
        let mut names: Vec<&'static str> = time_tz::timezones::iter().map(|tz| tz.name()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    pub fn name(&self) -> &'static str {
        self.tz.map_or("UTC", |tz| tz.name())
    }

    fn local(&self, t: OffsetDateTime) -> OffsetDateTime {
        match self.tz {
            None => t.to_offset(UtcOffset::UTC),
            Some(tz) => t.to_timezone(tz),
        }
    }

    /// `2024-05-01 12:00:00 UTC`, or `2024-05-01 20:00:00 +08:00` in another zone.
    pub fn fmt(&self, t: OffsetDateTime) -> String {
        let local = self.local(t);
        let text = local.format(TIME).unwrap_or_default();
        match self.tz {
            None => format!("{text} UTC"),
            Some(_) => {
                let (h, m, _) = local.offset().as_hms();
                let sign = if local.offset().is_negative() {
                    '-'
                } else {
                    '+'
                };
                format!("{text} {sign}{:02}:{:02}", h.abs(), m.abs())
            }
        }
    }

    /// `14:00`: the hour `t` starts, on this zone's clock (a chart's axis label).
    pub fn hour_label(&self, t: OffsetDateTime) -> String {
        let local = self.local(t);
        format!("{:02}:{:02}", local.hour(), local.minute())
    }

    /// The value of a `datetime-local` input for `t`, in this zone.
    pub fn input(&self, t: OffsetDateTime) -> String {
        self.local(t).format(INPUT_TIME).unwrap_or_default()
    }

    /// A local wall-clock time in this zone. In a daylight-saving overlap the earlier instant
    /// is taken; in a gap, the zone's offset just before it.
    fn assume(&self, local: PrimitiveDateTime) -> OffsetDateTime {
        let Some(tz) = self.tz else {
            return local.assume_utc();
        };
        match local.assume_timezone(tz) {
            OffsetResult::Some(t) => t,
            OffsetResult::Ambiguous(a, b) => a.min(b),
            OffsetResult::None => local.assume_timezone_utc(tz),
        }
    }

    /// Parses a `datetime-local` value (read in this zone), or RFC 3339.
    pub fn parse_input(&self, s: &str) -> Option<OffsetDateTime> {
        self.parse_with_precision(s).map(|(t, _)| t)
    }

    /// The exclusive end of an inclusive "to" time: `12:00` covers the whole minute (up to
    /// 12:00:59.999999), `12:00:30` the whole second, an RFC 3339 instant itself.
    pub fn parse_input_end(&self, s: &str) -> Option<OffsetDateTime> {
        self.parse_with_precision(s).map(|(t, step)| t + step)
    }

    fn parse_with_precision(&self, s: &str) -> Option<(OffsetDateTime, Duration)> {
        let s = s.trim();
        if let Ok(t) = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
            return Some((t, Duration::microseconds(1)));
        }
        if let Ok(p) = PrimitiveDateTime::parse(s, INPUT_TIME) {
            return Some((self.assume(p), Duration::minutes(1)));
        }
        PrimitiveDateTime::parse(s, INPUT_TIME_SECS)
            .ok()
            .map(|p| (self.assume(p), Duration::seconds(1)))
    }
}

impl FromRequest for Zone {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(req
            .extensions()
            .get::<Zone>()
            .copied()
            .unwrap_or_default()))
    }
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
        let utc = Zone::UTC;
        assert_eq!(utc.fmt(t), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc.input(t), "2023-11-14T22:13");
        assert_eq!(
            utc.parse_input("2023-11-14T22:13").unwrap(),
            OffsetDateTime::from_unix_timestamp(1_699_999_980).unwrap()
        );
        assert_eq!(utc.parse_input("2023-11-14T22:13:20Z").unwrap(), t);
        assert!(utc.parse_input("yesterday").is_none());
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

    #[test]
    fn times_are_shown_and_read_in_the_users_zone() {
        let shanghai = Zone::named("Asia/Shanghai").unwrap();
        assert_eq!(shanghai.name(), "Asia/Shanghai");
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(shanghai.fmt(t), "2023-11-15 06:13:20 +08:00");
        assert_eq!(shanghai.input(t), "2023-11-15T06:13");
        // A typed local time is read in the zone: 06:13 in Shanghai is 22:13 UTC.
        assert_eq!(
            shanghai.parse_input("2023-11-15T06:13").unwrap(),
            OffsetDateTime::from_unix_timestamp(1_699_999_980).unwrap()
        );
        // Daylight saving: New York is UTC-4 in July and UTC-5 in January.
        let ny = Zone::named("America/New_York").unwrap();
        let july = OffsetDateTime::from_unix_timestamp(1_720_000_000).unwrap();
        assert!(ny.fmt(july).ends_with("-04:00"), "{}", ny.fmt(july));
        assert!(ny.fmt(t).ends_with("-05:00"));
        // Only canonical IANA names (and UTC).
        assert_eq!(Zone::named("UTC"), Some(Zone::UTC));
        for bad in ["", "Mars/Base", "China Standard Time", "asia/shanghai"] {
            assert_eq!(Zone::named(bad), None, "{bad}");
        }
        assert!(Zone::all_names().contains(&"Europe/Paris"));
    }

    #[test]
    fn a_to_time_covers_its_whole_minute_or_second() {
        let utc = Zone::UTC;
        let at = |s: &str| {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
        };
        assert_eq!(
            utc.parse_input_end("2024-05-01T12:00").unwrap(),
            at("2024-05-01T12:01:00Z")
        );
        assert_eq!(
            utc.parse_input_end("2024-05-01T12:00:30").unwrap(),
            at("2024-05-01T12:00:31Z")
        );
        assert_eq!(
            utc.parse_input_end("2024-05-01T12:00:30Z").unwrap(),
            at("2024-05-01T12:00:30.000001Z")
        );
    }
}
