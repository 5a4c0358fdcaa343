//! Percent-encoding and hashing helpers shared by the signers.

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// RFC 3986 unreserved characters stay literal; everything else is `%XX` (uppercase hex).
/// This is what TC3 canonical query strings, the STS `Policy` parameter and COS signing use.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes every byte outside `A-Z a-z 0-9 - _ . ~` (a space becomes `%20`, `+` becomes `%2B`).
pub fn uri_encode(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// Decodes `%XX` escapes. `+` is left alone (it is not a space in RFC 3986).
/// Invalid UTF-8 after decoding is replaced rather than refused.
pub fn uri_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn sha1_hex(data: &[u8]) -> String {
    hex::encode(Sha1::digest(data))
}

pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

pub fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Compares two ASCII signatures in constant time (for the emulator's checks).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_encode_keeps_only_unreserved() {
        assert_eq!(uri_encode("a b+c/d*~._-"), "a%20b%2Bc%2Fd%2A~._-");
        assert_eq!(uri_encode("腾"), "%E8%85%BE");
    }

    #[test]
    fn uri_decode_roundtrips_and_keeps_plus() {
        let s = "{\"a\": \"b+c/d 腾\"}";
        assert_eq!(uri_decode(&uri_encode(s)), s);
        assert_eq!(uri_decode("a+b"), "a+b");
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
