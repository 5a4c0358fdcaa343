//! Web origins an app's browser pages may call the credential API from (CORS, DESIGN §3).
//!
//! An origin is stored in the form a browser sends it in the `Origin` header, so the gateway
//! compares bytes and nothing else: `scheme://host[:port]`, scheme and host in lowercase
//! (an internationalised host in its `xn--` form), the default port left out, no path, no
//! trailing slash. What an admin types is brought to that form (`HTTPS://App.Example.com:443/`
//! is stored as `https://app.example.com`); anything that is not exactly one origin (a
//! wildcard, a path, a query, credentials, another scheme, `null`) is refused with a reason.

use crate::error::FieldError;

/// The field the errors are reported on.
pub const ORIGINS_FIELD: &str = "allowed_origins";

/// The most origins one app may list.
pub const MAX_ALLOWED_ORIGINS: usize = 50;

/// Longest origin accepted, in bytes.
const MAX_ORIGIN_LEN: usize = 300;

const EXAMPLE: &str = "e.g. https://app.example.com or http://localhost:5173";

/// Why a line is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error(
        "wildcards are not allowed: list every origin exactly ({EXAMPLE}); a pattern would let look-alike sites read your users' credentials"
    )]
    Wildcard,
    #[error("“null” is what sandboxed pages and files send: it cannot be allowed")]
    Null,
    #[error("enter a whole origin: scheme, host and port if not the default ({EXAMPLE})")]
    Unparsable,
    #[error("use an http:// or https:// origin ({EXAMPLE})")]
    Scheme,
    #[error("an origin has no user name or password: remove the part before @")]
    Credentials,
    #[error("an origin has no path, query or fragment: keep only scheme://host[:port]")]
    Path,
    #[error("shorten it to {MAX_ORIGIN_LEN} characters")]
    TooLong,
}

/// One origin in the form browsers send it, or why the text is not one.
pub fn normalize_origin(text: &str) -> Result<String, OriginError> {
    let text = text.trim();
    if text.len() > MAX_ORIGIN_LEN {
        return Err(OriginError::TooLong);
    }
    if text.contains('*') {
        return Err(OriginError::Wildcard);
    }
    if text.eq_ignore_ascii_case("null") {
        return Err(OriginError::Null);
    }
    let url = url::Url::parse(text).map_err(|_| OriginError::Unparsable)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(OriginError::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(OriginError::Credentials);
    }
    // `https://app.example.com/` parses with the path `/`: a trailing slash is tolerated.
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(OriginError::Path);
    }
    // http(s) URLs always have a host, so this is a tuple origin, never "null".
    Ok(url.origin().ascii_serialization())
}

/// The origins as stored: each line normalised, blank lines and repeats dropped, in the order
/// given. Lines that are not origins are left out (validation reports them first).
pub fn normalize_origins(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for origin in lines.iter().filter_map(|l| normalize_origin(l).ok()) {
        if !out.contains(&origin) {
            out.push(origin);
        }
    }
    out
}

/// Every problem with a list of origins, one error per bad line (numbered from 1, blank lines
/// counted, as the admin sees them).
pub fn origin_errors(lines: &[String]) -> Vec<FieldError> {
    let mut errs: Vec<FieldError> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .filter_map(|(i, l)| {
            normalize_origin(l).err().map(|e| {
                FieldError::new(
                    ORIGINS_FIELD,
                    format!("line {} “{}”: {e}", i + 1, shorten(l.trim())),
                )
            })
        })
        .collect();
    let count = normalize_origins(lines).len();
    if count > MAX_ALLOWED_ORIGINS {
        errs.push(FieldError::new(
            ORIGINS_FIELD,
            format!("list at most {MAX_ALLOWED_ORIGINS} origins ({count} given)"),
        ));
    }
    errs
}

/// At most 80 characters of a line, for an error message.
fn shorten(line: &str) -> String {
    match line.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_stored_as_browsers_send_them() {
        for (typed, stored) in [
            ("https://app.example.com", "https://app.example.com"),
            ("https://app.example.com/", "https://app.example.com"),
            ("  HTTPS://App.Example.COM:443/ ", "https://app.example.com"),
            ("http://app.example.com:80", "http://app.example.com"),
            (
                "https://app.example.com:8443",
                "https://app.example.com:8443",
            ),
            ("http://127.0.0.1:5173", "http://127.0.0.1:5173"),
            ("http://[::1]:3000/", "http://[::1]:3000"),
            ("https://bücher.example", "https://xn--bcher-kva.example"),
        ] {
            assert_eq!(normalize_origin(typed).as_deref(), Ok(stored), "{typed}");
        }
    }

    #[test]
    fn anything_but_one_exact_origin_is_refused_with_its_reason() {
        for (typed, why) in [
            ("*", OriginError::Wildcard),
            ("https://*.example.com", OriginError::Wildcard),
            ("null", OriginError::Null),
            ("app.example.com", OriginError::Unparsable),
            ("https://", OriginError::Unparsable),
            ("ftp://app.example.com", OriginError::Scheme),
            ("file:///tmp/x.html", OriginError::Scheme),
            ("https://user:pw@app.example.com", OriginError::Credentials),
            ("https://app.example.com/upload", OriginError::Path),
            ("https://app.example.com/?a=1", OriginError::Path),
            ("https://app.example.com#top", OriginError::Path),
        ] {
            assert_eq!(normalize_origin(typed), Err(why), "{typed}");
        }
        let long = format!("https://{}.example.com", "a".repeat(300));
        assert_eq!(normalize_origin(&long), Err(OriginError::TooLong));
    }

    #[test]
    fn lists_drop_blanks_and_repeats_and_number_their_errors() {
        let lines: Vec<String> = [
            "https://app.example.com",
            "",
            "HTTPS://APP.EXAMPLE.COM/",
            "https://*.example.com",
            "http://localhost:5173",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            normalize_origins(&lines),
            ["https://app.example.com", "http://localhost:5173"]
        );
        let errs = origin_errors(&lines);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, ORIGINS_FIELD);
        assert!(
            errs[0]
                .message
                .starts_with("line 4 “https://*.example.com”: wildcards are not allowed"),
            "{}",
            errs[0].message
        );
        let many: Vec<String> = (0..=MAX_ALLOWED_ORIGINS)
            .map(|i| format!("https://app{i}.example.com"))
            .collect();
        let errs = origin_errors(&many);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("at most 50 origins (51 given)"));
    }
}
