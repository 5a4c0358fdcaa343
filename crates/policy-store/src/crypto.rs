//! Secrets at rest (DESIGN §4): AES-256-GCM under a master key, with the app id and the field
//! name as associated data and a key id in the stored form so the master key can be rotated.
//!
//! Stored form: `v1:<kid>:<base64 nonce>:<base64 ciphertext+tag>`.

use std::fmt;
use std::str::FromStr;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::{Digest, Sha256};

const FORMAT_VERSION: &str = "v1";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// Errors of key parsing and decryption. Never carries key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the master key is empty; generate one with `openssl rand -base64 32`")]
    EmptyKey,
    #[error(
        "the master key id must be 1 to 32 characters of A-Z a-z 0-9 _ - (the part before `:`)"
    )]
    BadKeyId,
    #[error(
        "the master key is not valid base64 (standard alphabet, with padding); generate one with `openssl rand -base64 32`"
    )]
    NotBase64,
    #[error("the master key must decode to exactly 32 bytes, it decodes to {0}")]
    WrongLength(usize),
    #[error("the stored secret is not in the `v1:<key id>:<nonce>:<ciphertext>` form")]
    Malformed,
    #[error(
        "the stored secret was encrypted under master key id {0:?}, which is neither the current master key nor one of the previous keys"
    )]
    UnknownKeyId(String),
    #[error(
        "the stored secret does not decrypt under master key id {0:?} (wrong key, altered ciphertext, or a value bound to another app or field)"
    )]
    Decrypt(String),
    #[error("the decrypted secret is not UTF-8")]
    NotUtf8,
}

/// A 256-bit master key and its id. `Debug` shows the id only.
pub struct MasterKey {
    id: String,
    key: SecretBox<[u8; KEY_LEN]>,
}

impl MasterKey {
    /// Parses `BASE64` or `KEYID:BASE64` (standard base64 of exactly 32 bytes). Surrounding
    /// whitespace (a trailing newline in a key file) is ignored. Without a key id, the id is
    /// the first 8 hex characters of the key's SHA-256.
    pub fn parse(s: &str) -> Result<Self, CryptoError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(CryptoError::EmptyKey);
        }
        let (id, b64) = match s.split_once(':') {
            Some((id, b64)) => {
                if !valid_key_id(id) {
                    return Err(CryptoError::BadKeyId);
                }
                (Some(id), b64)
            }
            None => (None, s),
        };
        let bytes = B64.decode(b64.trim()).map_err(|_| CryptoError::NotBase64)?;
        let key: [u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::WrongLength(bytes.len()))?;
        Ok(Self::from_bytes(id, key))
    }

    /// A fresh random key (for `stsgate dev`), with the default key id.
    pub fn generate() -> Self {
        Self::from_bytes(None, rand::random::<[u8; KEY_LEN]>())
    }

    fn from_bytes(id: Option<&str>, key: [u8; KEY_LEN]) -> Self {
        let id = match id {
            Some(id) => id.to_owned(),
            None => hex::encode(Sha256::digest(key))[..8].to_owned(),
        };
        Self {
            id,
            key: SecretBox::new(Box::new(key)),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `KEYID:BASE64`, the form [`MasterKey::parse`] reads back (for writing a key file).
    /// This is the key itself: never log it.
    pub fn to_encoded(&self) -> String {
        format!("{}:{}", self.id, B64.encode(self.key.expose_secret()))
    }

    fn aead(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.key.expose_secret()).expect("the key is 32 bytes")
    }
}

impl Clone for MasterKey {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            key: SecretBox::new(Box::new(*self.key.expose_secret())),
        }
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl FromStr for MasterKey {
    type Err = CryptoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn valid_key_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn associated_data(app_id: i64, field: &str) -> String {
    format!("stsgate:{app_id}:{field}")
}

/// Encrypts with the current key; decrypts with the current or any previous key.
#[derive(Debug, Clone)]
pub struct Cipher {
    pub current: MasterKey,
    /// Keys being rotated out: still accepted for decryption, never used to encrypt.
    pub previous: Vec<MasterKey>,
}

impl Cipher {
    /// `current` encrypts and decrypts; `previous` keys only decrypt (rotation).
    pub fn new(current: MasterKey, previous: Vec<MasterKey>) -> Self {
        Self { current, previous }
    }

    /// `v1:<kid>:<b64 nonce>:<b64 ciphertext>`, bound to `stsgate:<app_id>:<field>`.
    pub fn encrypt(&self, app_id: i64, field: &str, plaintext: &str) -> String {
        let nonce_bytes = rand::random::<[u8; NONCE_LEN]>();
        let nonce = aes_gcm::Nonce::from(nonce_bytes);
        let aad = associated_data(app_id, field);
        let ciphertext = self
            .current
            .aead()
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a short secret cannot fail");
        format!(
            "{FORMAT_VERSION}:{}:{}:{}",
            self.current.id,
            B64.encode(nonce_bytes),
            B64.encode(ciphertext)
        )
    }

    /// Decrypts a stored value, choosing the key by the id it names.
    pub fn decrypt(
        &self,
        app_id: i64,
        field: &str,
        stored: &str,
    ) -> Result<SecretString, CryptoError> {
        let parts = parse_stored(stored)?;
        let key = self
            .key_by_id(parts.kid)
            .ok_or_else(|| CryptoError::UnknownKeyId(parts.kid.to_owned()))?;
        let nonce_bytes: [u8; NONCE_LEN] = B64
            .decode(parts.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(CryptoError::Malformed)?;
        let ciphertext = B64
            .decode(parts.ciphertext)
            .map_err(|_| CryptoError::Malformed)?;
        let aad = associated_data(app_id, field);
        let plaintext = key
            .aead()
            .decrypt(
                &aes_gcm::Nonce::from(nonce_bytes),
                Payload {
                    msg: &ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decrypt(key.id.clone()))?;
        let plaintext = String::from_utf8(plaintext).map_err(|_| CryptoError::NotUtf8)?;
        Ok(SecretString::from(plaintext))
    }

    /// True when `stored` was not written by the current key (re-encrypt it on the next save).
    pub fn needs_rotation(&self, stored: &str) -> bool {
        parse_stored(stored).map_or(true, |p| p.kid != self.current.id)
    }

    fn key_by_id(&self, kid: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == kid)
    }
}

struct StoredParts<'a> {
    kid: &'a str,
    nonce: &'a str,
    ciphertext: &'a str,
}

fn parse_stored(stored: &str) -> Result<StoredParts<'_>, CryptoError> {
    let mut it = stored.split(':');
    match (it.next(), it.next(), it.next(), it.next(), it.next()) {
        (Some(FORMAT_VERSION), Some(kid), Some(nonce), Some(ciphertext), None)
            if valid_key_id(kid) && !nonce.is_empty() && !ciphertext.is_empty() =>
        {
            Ok(StoredParts {
                kid,
                nonce,
                ciphertext,
            })
        }
        _ => Err(CryptoError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> MasterKey {
        MasterKey::parse(&format!("{id}:{}", B64.encode([byte; 32]))).unwrap()
    }

    #[test]
    fn roundtrip() {
        let c = Cipher::new(key("k1", 1), vec![]);
        let stored = c.encrypt(7, "secret_key", "s3cr3t-value");
        assert!(stored.starts_with("v1:k1:"), "{stored}");
        assert!(!stored.contains("s3cr3t"));
        assert_eq!(
            c.decrypt(7, "secret_key", &stored).unwrap().expose_secret(),
            "s3cr3t-value"
        );
        // A fresh nonce each time.
        assert_ne!(stored, c.encrypt(7, "secret_key", "s3cr3t-value"));
        assert!(!c.needs_rotation(&stored));
    }

    #[test]
    fn associated_data_binds_app_and_field() {
        let c = Cipher::new(key("k1", 1), vec![]);
        let stored = c.encrypt(7, "secret_key", "value");
        assert_eq!(
            c.decrypt(8, "secret_key", &stored).unwrap_err(),
            CryptoError::Decrypt("k1".into())
        );
        assert_eq!(
            c.decrypt(7, "hs_secret", &stored).unwrap_err(),
            CryptoError::Decrypt("k1".into())
        );
    }

    #[test]
    fn tampering_is_detected() {
        let c = Cipher::new(key("k1", 1), vec![]);
        let stored = c.encrypt(1, "f", "value");
        let (head, ct) = stored.rsplit_once(':').unwrap();
        let mut bytes = B64.decode(ct).unwrap();
        bytes[0] ^= 1;
        let tampered = format!("{head}:{}", B64.encode(bytes));
        assert!(matches!(
            c.decrypt(1, "f", &tampered),
            Err(CryptoError::Decrypt(_))
        ));
        // A different nonce also fails.
        let parts: Vec<&str> = stored.split(':').collect();
        let other_nonce = format!("v1:{}:{}:{}", parts[1], B64.encode([9u8; 12]), parts[3]);
        assert!(c.decrypt(1, "f", &other_nonce).is_err());
        for bad in [
            "",
            "v1",
            "v2:k1:AAAA:AAAA",
            "v1:k1:AAAA",
            "v1:k1::AAAA",
            "v1:k1:!!:AAAA",
        ] {
            assert_eq!(
                c.decrypt(1, "f", bad).unwrap_err(),
                CryptoError::Malformed,
                "{bad}"
            );
        }
    }

    #[test]
    fn previous_keys_still_decrypt() {
        let old = Cipher::new(key("old", 1), vec![]);
        let stored = old.encrypt(3, "hs_secret", "hmac-key");
        let rotated = Cipher::new(key("new", 2), vec![key("old", 1)]);
        assert_eq!(
            rotated
                .decrypt(3, "hs_secret", &stored)
                .unwrap()
                .expose_secret(),
            "hmac-key"
        );
        assert!(rotated.needs_rotation(&stored));
        let restored = rotated.encrypt(3, "hs_secret", "hmac-key");
        assert!(restored.starts_with("v1:new:"));
        assert!(!rotated.needs_rotation(&restored));
        assert!(rotated.needs_rotation("garbage"));
    }

    #[test]
    fn unknown_key_id_is_named() {
        let stored = Cipher::new(key("gone", 1), vec![]).encrypt(1, "f", "x");
        let err = Cipher::new(key("new", 2), vec![])
            .decrypt(1, "f", &stored)
            .unwrap_err();
        assert_eq!(err, CryptoError::UnknownKeyId("gone".into()));
        assert!(err.to_string().contains("\"gone\""));
    }

    #[test]
    fn bad_master_keys_are_explained() {
        assert_eq!(MasterKey::parse("").unwrap_err(), CryptoError::EmptyKey);
        assert_eq!(
            MasterKey::parse(&B64.encode([1u8; 16])).unwrap_err(),
            CryptoError::WrongLength(16)
        );
        assert!(
            CryptoError::WrongLength(16)
                .to_string()
                .contains("exactly 32 bytes")
        );
        assert_eq!(
            MasterKey::parse("not base64 at all!").unwrap_err(),
            CryptoError::NotBase64
        );
        assert!(CryptoError::NotBase64.to_string().contains("base64"));
        assert_eq!(
            MasterKey::parse(&format!("bad id:{}", B64.encode([1u8; 32]))).unwrap_err(),
            CryptoError::BadKeyId
        );
        assert_eq!(
            MasterKey::parse(&format!("{}:{}", "k".repeat(33), B64.encode([1u8; 32]))).unwrap_err(),
            CryptoError::BadKeyId
        );
    }

    #[test]
    fn default_key_id_and_encoding() {
        let raw = [5u8; 32];
        let k = MasterKey::parse(&format!("{}\n", B64.encode(raw))).unwrap();
        assert_eq!(k.id(), &hex::encode(Sha256::digest(raw))[..8]);
        let again = MasterKey::parse(&k.to_encoded()).unwrap();
        assert_eq!(again.id(), k.id());
        let g = MasterKey::generate();
        let g2 = MasterKey::parse(&g.to_encoded()).unwrap();
        let c = Cipher::new(g, vec![]);
        let stored = c.encrypt(1, "f", "x");
        assert_eq!(
            Cipher::new(g2, vec![])
                .decrypt(1, "f", &stored)
                .unwrap()
                .expose_secret(),
            "x"
        );
    }

    #[test]
    fn debug_never_shows_key_material() {
        let raw = [0xabu8; 32];
        let k = MasterKey::parse(&format!("dbg:{}", B64.encode(raw))).unwrap();
        let cipher = Cipher::new(k.clone(), vec![]);
        for s in [format!("{k:?}"), format!("{cipher:?}")] {
            assert!(s.contains("dbg"));
            assert!(!s.contains(&B64.encode(raw)));
            assert!(!s.contains("171"), "{s}"); // 0xab as a decimal byte list
            assert!(!s.to_lowercase().contains("abab"));
        }
    }
}
