//! The little XML COS speaks: escaped writers for answers and a tolerant reader for the two
//! request bodies (DELETE Multiple Objects and Complete Multipart Upload).

use std::fmt::Write;

/// COS's XML declaration, exactly as the service writes it.
pub(crate) const DECLARATION: &str = "<?xml version='1.0' encoding='utf-8' ?>\n";

pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';') else {
            break;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Builds an XML document element by element.
pub(crate) struct Writer {
    out: String,
}

impl Writer {
    pub(crate) fn new(root: &str) -> Self {
        let mut out = String::from(DECLARATION);
        let _ = write!(out, "<{root}>");
        Self { out }
    }

    pub(crate) fn open(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.out, "<{name}>");
        self
    }

    pub(crate) fn close(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.out, "</{name}>");
        self
    }

    pub(crate) fn elem(&mut self, name: &str, text: impl AsRef<str>) -> &mut Self {
        let _ = write!(self.out, "<{name}>{}</{name}>", escape(text.as_ref()));
        self
    }

    pub(crate) fn finish(mut self, root: &str) -> String {
        let _ = write!(self.out, "</{root}>");
        self.out
    }
}

pub(crate) fn error_body(
    code: &str,
    message: &str,
    resource: &str,
    request_id: &str,
    trace_id: &str,
) -> String {
    let mut w = Writer::new("Error");
    w.elem("Code", code)
        .elem("Message", message)
        .elem("Resource", resource)
        .elem("RequestId", request_id)
        .elem("TraceId", trace_id);
    w.finish("Error")
}

/// The raw (still escaped) contents of every `<tag>…</tag>` element in `xml`, in document order.
/// `<tag/>` yields an empty string. Nested elements of the same name are not supported (COS's
/// request bodies have none). `None` when an element is not closed.
pub(crate) fn elements<'a>(xml: &'a str, tag: &str) -> Option<Vec<&'a str>> {
    let mut found = Vec::new();
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut rest = xml;
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        // `<Part>` must not match `<PartNumber>`.
        match after.chars().next() {
            Some('>' | '/') => {}
            Some(c) if c.is_whitespace() => {}
            _ => {
                rest = after;
                continue;
            }
        }
        let end_of_open = after.find('>')?;
        if after[..end_of_open].ends_with('/') {
            found.push("");
            rest = &after[end_of_open + 1..];
            continue;
        }
        let body = &after[end_of_open + 1..];
        let end = body.find(&close)?;
        found.push(&body[..end]);
        rest = &body[end + close.len()..];
    }
    Some(found)
}

/// The unescaped, trimmed text of the first `<tag>` inside `xml`.
pub(crate) fn first_text(xml: &str, tag: &str) -> Option<String> {
    let raw = *elements(xml, tag)?.first()?;
    let raw = raw.trim();
    let raw = raw
        .strip_prefix("<![CDATA[")
        .and_then(|r| r.strip_suffix("]]>"))
        .map_or_else(|| unescape(raw), str::to_owned);
    Some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_unescapes() {
        let s = "a&b<c>\"d'e 腾";
        assert_eq!(unescape(&escape(s)), s);
        assert_eq!(unescape("&#34;x&#x22;&bogus;"), "\"x\"&bogus;");
    }

    #[test]
    fn reads_elements() {
        let body = "<?xml version=\"1.0\"?><CompleteMultipartUpload xmlns=\"x\">\
            <Part><PartNumber>1</PartNumber><ETag>&quot;aa&quot;</ETag></Part>\
            <Part>\n<PartNumber>2</PartNumber><ETag>\"bb\"</ETag></Part></CompleteMultipartUpload>";
        let parts = elements(body, "Part").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(first_text(parts[0], "ETag").unwrap(), "\"aa\"");
        assert_eq!(first_text(parts[1], "PartNumber").unwrap(), "2");
        assert_eq!(elements("<a><Key/></a>", "Key").unwrap(), vec![""]);
        assert!(elements("<Key>x", "Key").is_none());
        assert_eq!(
            first_text("<Key><![CDATA[a<b]]></Key>", "Key").unwrap(),
            "a<b"
        );
    }

    #[test]
    fn writes_documents() {
        let mut w = Writer::new("R");
        w.open("Contents").elem("Key", "a&b").close("Contents");
        assert_eq!(
            w.finish("R"),
            format!("{DECLARATION}<R><Contents><Key>a&amp;b</Key></Contents></R>")
        );
    }
}
