//! URL-encoded form bodies with repeated keys (checkbox groups), and field parsing helpers.

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use secrecy::SecretString;

use crate::error::AdminError;

/// Largest accepted form body (PEM keys and policy documents fit easily).
pub const MAX_BODY: usize = 256 * 1024;

/// A parsed `application/x-www-form-urlencoded` body, keys in order, repeats kept.
#[derive(Debug, Default, Clone)]
pub struct FormData(Vec<(String, String)>);

impl FormData {
    pub fn parse(body: &[u8]) -> Result<Self, AdminError> {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
            .map(FormData)
            .map_err(|_| AdminError::BadRequest("the form could not be read".into()))
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `key`, trimmed; empty when absent.
    pub fn text(&self, key: &str) -> String {
        self.get(key).unwrap_or("").trim().to_owned()
    }

    /// Trimmed, `None` when empty or absent.
    pub fn opt(&self, key: &str) -> Option<String> {
        Some(self.text(key)).filter(|s| !s.is_empty())
    }

    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn checked(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| !v.is_empty())
    }

    /// A secret field: untrimmed (secrets may be anything), `None` when empty.
    pub fn secret(&self, key: &str) -> Option<SecretString> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .map(|v| SecretString::from(v.to_owned()))
    }
}

impl FromRequest for FormData {
    type Error = AdminError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = bytes
                .await
                .map_err(|_| AdminError::BadRequest("the form is too large".into()))?;
            FormData::parse(&bytes)
        })
    }
}

/// Non-empty lines, trimmed.
pub fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Field errors collected while reading a form: `(field, message)`.
#[derive(Debug, Default, Clone)]
pub struct Errors(pub Vec<(String, String)>);

impl Errors {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push((field.into(), message.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Messages for `field` and its sub-fields (`audiences` matches `audiences[2]`).
    pub fn for_field(&self, field: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(f, _)| {
                f == field
                    || f.strip_prefix(field)
                        .is_some_and(|rest| rest.starts_with('[') || rest.starts_with('.'))
            })
            .map(|(f, m)| {
                let rest = &f[field.len()..];
                let entry = rest
                    .strip_prefix('[')
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|n| n.parse::<usize>().ok());
                match entry {
                    _ if rest.is_empty() => m.clone(),
                    Some(n) => format!("entry {}: {m}", n + 1),
                    None => format!("{}: {m}", rest.trim_start_matches('.')),
                }
            })
            .collect()
    }

    pub fn has(&self, field: &str) -> bool {
        !self.for_field(field).is_empty()
    }

    pub fn extend_store(&mut self, errs: Vec<policy_store::FieldError>) {
        for e in errs {
            self.add(e.field, e.message);
        }
    }
}

/// Parses an integer field; records an error and returns 0 when it is not one.
pub fn int(form: &FormData, key: &str, errors: &mut Errors) -> i32 {
    let raw = form.text(key);
    match raw.parse::<i32>() {
        Ok(v) => v,
        Err(_) => {
            errors.add(key, "enter a whole number (digits only), e.g. 1800");
            0
        }
    }
}

/// An optional integer field (empty means `None`).
pub fn opt_int(form: &FormData, key: &str, errors: &mut Errors) -> Option<i32> {
    let raw = form.text(key);
    if raw.is_empty() {
        return None;
    }
    match raw.parse::<i32>() {
        Ok(v) => Some(v),
        Err(_) => {
            errors.add(key, "enter a whole number (digits only), or leave it empty");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_and_errors() {
        let f = FormData::parse(b"a=1&b=x&a=2&c=&s=+pad+").unwrap();
        assert_eq!(f.all("a"), ["1", "2"]);
        assert_eq!(f.get("a"), Some("1"));
        assert!(!f.checked("c"));
        assert_eq!(f.opt("c"), None);
        assert_eq!(f.text("s"), "pad");
        let mut e = Errors::default();
        e.add("audiences[1]", "must not be empty");
        e.add("audiences_x", "other");
        assert_eq!(e.for_field("audiences"), ["entry 2: must not be empty"]);
        assert_eq!(int(&f, "b", &mut e), 0);
        assert!(e.has("b"));
        assert_eq!(lines(" x \n\n y"), ["x", "y"]);
    }
}
