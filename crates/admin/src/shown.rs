//! Text shown exactly: a subject with leading or trailing spaces, or control characters, is
//! another subject than the one without, so the pages mark them visibly instead of letting
//! HTML swallow them. And a compact, exact form for links and hidden fields.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// One piece of shown text: literal text, or a marker standing for characters that would be
/// invisible (drawn differently, with a title saying what it is).
pub struct Piece {
    pub text: String,
    pub marker: bool,
    pub title: &'static str,
}

/// `text` as pieces, with each leading or trailing space as `␣` and each control character
/// as its code (`\u{9}` for a tab), both as markers. Other characters are kept.
pub fn visible(text: &str) -> Vec<Piece> {
    let chars: Vec<char> = text.chars().collect();
    let lead = chars.iter().take_while(|c| **c == ' ').count();
    let trail = if lead == chars.len() {
        0
    } else {
        chars.iter().rev().take_while(|c| **c == ' ').count()
    };
    let mut out: Vec<Piece> = Vec::new();
    for (i, c) in chars.iter().enumerate() {
        let edge_space = *c == ' ' && (i < lead || i >= chars.len() - trail);
        let (shown, marker, title) = if edge_space {
            ("␣".to_owned(), true, "a space")
        } else if c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{feff}') {
            (
                format!("\\u{{{:x}}}", u32::from(*c)),
                true,
                "an invisible character",
            )
        } else {
            (c.to_string(), false, "")
        };
        match out.last_mut() {
            Some(last) if !marker && !last.marker => last.text.push_str(&shown),
            _ => out.push(Piece {
                text: shown,
                marker,
                title,
            }),
        }
    }
    out
}

/// True when [`visible`] would mark something.
pub fn has_hidden(text: &str) -> bool {
    visible(text).iter().any(|p| p.marker)
}

/// The exact bytes of `text`, for a link or a hidden field (forms turn line breaks into CRLF
/// and browsers trim some values; this survives both).
pub fn encode(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text.as_bytes())
}

/// The text [`encode`] made, if `b64` is one.
pub fn decode(b64: &str) -> Option<String> {
    URL_SAFE_NO_PAD
        .decode(b64.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str) -> String {
        visible(text)
            .iter()
            .map(|p| {
                if p.marker {
                    format!("[{}]", p.text)
                } else {
                    p.text.clone()
                }
            })
            .collect()
    }

    #[test]
    fn edges_and_controls_are_marked() {
        assert_eq!(render("alice"), "alice");
        assert!(!has_hidden("alice smith"));
        assert_eq!(render("alice smith"), "alice smith");
        assert_eq!(render(" alice "), "[␣]alice[␣]");
        assert_eq!(render("  "), "[␣][␣]");
        assert_eq!(render("a\tb\n"), "a[\\u{9}]b[\\u{a}]");
        assert_eq!(render("a\u{200b}b"), "a[\\u{200b}]b");
        assert!(has_hidden("alice "));
        // A literal ␣ in a subject is text, not a marker.
        assert!(!visible("a␣b")[0].marker);
    }

    #[test]
    fn encoding_is_exact() {
        for s in [" alice ", "a\r\nb", "用户", ""] {
            assert_eq!(decode(&encode(s)).as_deref(), Some(s));
        }
        assert_eq!(decode("!!"), None);
    }
}
