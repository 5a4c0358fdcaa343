//! Public keys for JWT verification: the algorithm ↔ key-type table, static PEM keys as admins
//! paste them, and the constructors the gateway's JWKS code uses for JWK members.
//!
//! PEM, DER, SubjectPublicKeyInfo and PKCS#1 are read by RustCrypto's `pem-rfc7468`, `spki` and
//! `pkcs1`. Two things stay hand-written here, because they are policy rather than parsing:
//! the optional `kid:` line in front of a pasted key (stsgate's own format), and the RSA size and
//! exponent bounds. Whether an EC or Ed25519 point is valid is left to jsonwebtoken's crypto
//! provider, the same code that later verifies signatures with it.

use std::fmt;

use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::{Algorithm, DecodingKey};
use pkcs1::RsaPublicKeyRef;
use spki::der::Decode;
use spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};

/// The longest accepted `kid`, in a `kid:` line, a token header or a JWK.
pub const MAX_KID_BYTES: usize = 256;
/// The smallest accepted RSA modulus.
pub const RSA_MIN_BITS: usize = 2048;
/// The largest accepted RSA modulus (also the largest jsonwebtoken's RSA backend verifies with).
pub const RSA_MAX_BITS: usize = 8192;

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");

/// Every algorithm an app may allow, by its exact JOSE name.
pub const ALGORITHMS: [(&str, Algorithm); 12] = [
    ("HS256", Algorithm::HS256),
    ("HS384", Algorithm::HS384),
    ("HS512", Algorithm::HS512),
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// The exact JOSE name (tokens and JWK `alg` members are case-sensitive).
pub fn algorithm_from_jose(name: &str) -> Option<Algorithm> {
    ALGORITHMS.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
}

/// The JOSE name of an algorithm.
pub fn algorithm_name(alg: Algorithm) -> &'static str {
    ALGORITHMS
        .iter()
        .find(|(_, a)| *a == alg)
        .map_or("?", |(n, _)| n)
}

/// HS256/384/512: verified only with the app's own secret.
pub fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// The type of an asymmetric key; each asymmetric algorithm accepts exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyType {
    /// The one key type `alg` accepts; `None` for HMAC (and for any algorithm a future
    /// jsonwebtoken adds, which is therefore never verified).
    pub fn for_algorithm(alg: Algorithm) -> Option<KeyType> {
        match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => Some(KeyType::Rsa),
            Algorithm::ES256 => Some(KeyType::P256),
            Algorithm::ES384 => Some(KeyType::P384),
            Algorithm::EdDSA => Some(KeyType::Ed25519),
            _ => None,
        }
    }

    /// An algorithm this key type verifies (used to check keys when loading them).
    fn probe_algorithm(self) -> Algorithm {
        match self {
            KeyType::Rsa => Algorithm::RS256,
            KeyType::P256 => Algorithm::ES256,
            KeyType::P384 => Algorithm::ES384,
            KeyType::Ed25519 => Algorithm::EdDSA,
        }
    }

    /// The length of one EC coordinate; `None` for other key types.
    fn coordinate_len(self) -> Option<usize> {
        match self {
            KeyType::P256 => Some(32),
            KeyType::P384 => Some(48),
            KeyType::Rsa | KeyType::Ed25519 => None,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::Rsa => "RSA",
            KeyType::P256 => "EC P-256",
            KeyType::P384 => "EC P-384",
            KeyType::Ed25519 => "Ed25519",
        })
    }
}

/// Why a key was refused. Messages are for the admin who pasted it: they say what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM public key (it should start with -----BEGIN PUBLIC KEY-----)")]
    NotPem,
    #[error("the \"kid:\" line is empty; write the key id after it or remove the line")]
    EmptyKid,
    #[error("the kid must be at most {MAX_KID_BYTES} bytes, without control characters")]
    BadKid,
    #[error(
        "a certificate, not a public key; extract the key with \
         openssl x509 -pubkey -noout -in cert.pem"
    )]
    Certificate,
    #[error("a private key; paste the public key only (openssl pkey -pubout -in key.pem)")]
    PrivateKey,
    #[error("an unsupported PEM type; expected PUBLIC KEY or RSA PUBLIC KEY")]
    UnsupportedPemType,
    #[error("one key per entry; put each key in its own entry")]
    SeveralBlocks,
    #[error("the -----END line is missing or does not match the -----BEGIN line")]
    PemBoundary,
    #[error("encrypted or annotated PEM blocks are not supported")]
    PemHeaders,
    #[error("the PEM body is not valid base64; was the key copied completely?")]
    PemBody,
    /// The DER inside the PEM block does not decode (the cause is kept for logs).
    #[error("the key data is malformed; was the key copied completely?")]
    Malformed(#[source] spki::der::Error),
    #[error("an EC key on an unsupported curve (P-256 and P-384 are supported)")]
    UnsupportedCurve,
    #[error("an EC key that is not an uncompressed point")]
    CompressedPoint,
    #[error("an Ed25519 key of the wrong length")]
    Ed25519Length,
    #[error("an RSASSA-PSS-only key; export it as a plain RSA public key")]
    RsaPssOnly,
    #[error("an unsupported key type (RSA, EC P-256/P-384 and Ed25519 are supported)")]
    UnsupportedKeyType,
    #[error("an RSA key of {bits} bits; {RSA_MIN_BITS} to {RSA_MAX_BITS} bits are accepted")]
    RsaSize { bits: usize },
    #[error("an RSA key with an invalid modulus or exponent")]
    RsaInvalid,
    #[error("not a valid {0} public key")]
    Invalid(KeyType),
    #[error("an {0} key, but no algorithm for it is allowed; allow one or remove the key")]
    NoAlgorithmFor(KeyType),
    #[error("duplicate kid \"{0}\"; each kid may name one key only")]
    DuplicateKid(String),
    #[error("jsonwebtoken has no crypto backend (enable exactly one of rust_crypto / aws_lc_rs)")]
    NoCryptoBackend,
}

/// A public key ready for verification.
pub struct PublicKey {
    kid: Option<String>,
    key_type: KeyType,
    only_alg: Option<Algorithm>,
    key: DecodingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("key_type", &self.key_type)
            .field("only_alg", &self.only_alg)
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Checks `key` with the crypto backend that will verify with it (an EC point off its
    /// curve, for one, is refused here). `only_alg` (a JWK's `alg`) must suit `key_type`.
    pub fn new(
        kid: Option<String>,
        key_type: KeyType,
        only_alg: Option<Algorithm>,
        key: DecodingKey,
    ) -> Result<Self, KeyError> {
        let provider = CryptoProvider::try_get_default().ok_or(KeyError::NoCryptoBackend)?;
        if only_alg.is_some_and(|alg| KeyType::for_algorithm(alg) != Some(key_type))
            || (provider.verifier_factory)(&key_type.probe_algorithm(), &key).is_err()
        {
            return Err(KeyError::Invalid(key_type));
        }
        Ok(Self {
            kid,
            key_type,
            only_alg,
            key,
        })
    }

    /// The key id (a `kid:` line or a JWK `kid`), if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The key as jsonwebtoken uses it.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }

    /// Whether this key may verify a token signed with `alg`: the right type, and (for a JWK
    /// with an `alg`) that very algorithm.
    pub fn usable_for(&self, alg: Algorithm) -> bool {
        KeyType::for_algorithm(alg) == Some(self.key_type)
            && self.only_alg.is_none_or(|only| only == alg)
    }
}

/// One entry of an app's `public_keys`: an optional `kid: <id>` line, then one PEM block
/// (`PUBLIC KEY`, i.e. SubjectPublicKeyInfo, or PKCS#1 `RSA PUBLIC KEY`).
pub fn parse_static_key(entry: &str) -> Result<PublicKey, KeyError> {
    let entry = entry.trim();
    let (kid, pem) = match entry.split_once('\n') {
        Some((first, rest)) if first.trim_start().to_ascii_lowercase().starts_with("kid:") => {
            let kid = first.trim_start()[4..].trim();
            if kid.is_empty() {
                return Err(KeyError::EmptyKid);
            }
            if kid.len() > MAX_KID_BYTES || kid.chars().any(char::is_control) {
                return Err(KeyError::BadKid);
            }
            (Some(kid.to_owned()), rest)
        }
        _ => (None, entry),
    };
    let (key_type, key) = parse_pem(pem)?;
    PublicKey::new(kid, key_type, None, key)
}

fn parse_pem(pem: &str) -> Result<(KeyType, DecodingKey), KeyError> {
    // pem-rfc7468 implements RFC 7468's strict grammar. Keys pasted into a form or a YAML file
    // often arrive indented, with trailing blanks or empty lines, so those are removed first;
    // the line width of the body is detected rather than fixed at 64.
    let text = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    if !text.starts_with("-----BEGIN ") {
        return Err(KeyError::NotPem);
    }
    if text.matches("-----BEGIN ").count() > 1 {
        return Err(KeyError::SeveralBlocks);
    }
    let label = pem_rfc7468::decode_label(text.as_bytes()).map_err(pem_error)?;
    let pkcs1 = match label {
        "PUBLIC KEY" => false,
        "RSA PUBLIC KEY" => true,
        "CERTIFICATE" | "TRUSTED CERTIFICATE" | "X509 CERTIFICATE" => {
            return Err(KeyError::Certificate);
        }
        l if l.contains("PRIVATE KEY") => return Err(KeyError::PrivateKey),
        _ => return Err(KeyError::UnsupportedPemType),
    };
    // RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`, `Comment: …`): the width detection below
    // would report them as bad base64, so name them first.
    if text.lines().any(|l| l.contains(':')) {
        return Err(KeyError::PemHeaders);
    }
    let mut decoder = pem_rfc7468::Decoder::new_detect_wrap(text.as_bytes()).map_err(pem_error)?;
    let mut der = Vec::new();
    decoder.decode_to_end(&mut der).map_err(pem_error)?;
    if pkcs1 {
        Ok((KeyType::Rsa, parse_pkcs1(&der)?))
    } else {
        parse_spki(&der)
    }
}

fn pem_error(e: pem_rfc7468::Error) -> KeyError {
    match e {
        pem_rfc7468::Error::HeaderDisallowed => KeyError::PemHeaders,
        pem_rfc7468::Error::PreEncapsulationBoundary
        | pem_rfc7468::Error::PostEncapsulationBoundary
        | pem_rfc7468::Error::Label => KeyError::PemBoundary,
        _ => KeyError::PemBody,
    }
}

/// SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`).
fn parse_spki(der: &[u8]) -> Result<(KeyType, DecodingKey), KeyError> {
    let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(KeyError::Malformed)?;
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| KeyError::Malformed(spki::der::Tag::BitString.value_error().into()))?;
    match spki.algorithm.oid {
        pkcs1::ALGORITHM_OID => Ok((KeyType::Rsa, parse_pkcs1(bits)?)),
        OID_EC_PUBLIC_KEY => {
            let key_type = match spki.algorithm.parameters_oid() {
                Ok(OID_P256) => KeyType::P256,
                Ok(OID_P384) => KeyType::P384,
                _ => return Err(KeyError::UnsupportedCurve),
            };
            Ok((key_type, ec_point_key(key_type, bits)?))
        }
        OID_ED25519 => Ok((KeyType::Ed25519, ed25519_key(bits)?)),
        OID_RSA_PSS => Err(KeyError::RsaPssOnly),
        _ => Err(KeyError::UnsupportedKeyType),
    }
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
fn parse_pkcs1(der: &[u8]) -> Result<DecodingKey, KeyError> {
    let key = RsaPublicKeyRef::from_der(der).map_err(KeyError::Malformed)?;
    rsa_key(key.modulus.as_bytes(), key.public_exponent.as_bytes())
}

/// An RSA key from its big-endian modulus and exponent (leading zero bytes allowed): 2048 to
/// 8192 bits, an odd modulus, an odd exponent from 3 to 2³³−1.
pub fn rsa_key(n: &[u8], e: &[u8]) -> Result<DecodingKey, KeyError> {
    let n = strip_leading_zeros(n);
    let e = strip_leading_zeros(e);
    let bits = n.first().map_or(0, |top| {
        (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize)
    });
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        return Err(KeyError::RsaSize { bits });
    }
    let exponent = if e.len() <= 8 {
        e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    } else {
        u64::MAX
    };
    let odd = |x: u64| !x.is_multiple_of(2);
    if exponent < 3 || !odd(exponent) || exponent >= (1 << 33) || !odd(u64::from(n[n.len() - 1])) {
        return Err(KeyError::RsaInvalid);
    }
    Ok(DecodingKey::from_rsa_raw_components(n, e))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// An EC key from a SEC1 uncompressed point (`04 || x || y`). Whether the point is on the
/// curve is checked by [`PublicKey::new`].
pub fn ec_point_key(key_type: KeyType, point: &[u8]) -> Result<DecodingKey, KeyError> {
    let len = key_type
        .coordinate_len()
        .ok_or(KeyError::UnsupportedCurve)?;
    if point.len() != 1 + 2 * len || point[0] != 0x04 {
        return Err(KeyError::CompressedPoint);
    }
    Ok(DecodingKey::from_ec_der(point))
}

/// An EC key from its affine coordinates (a JWK's `x` and `y`).
pub fn ec_key(key_type: KeyType, x: &[u8], y: &[u8]) -> Result<DecodingKey, KeyError> {
    let mut point = Vec::with_capacity(1 + x.len() + y.len());
    point.push(0x04);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    ec_point_key(key_type, &point)
}

/// An Ed25519 key from its 32 bytes (an SPKI bit string or a JWK's `x`).
pub fn ed25519_key(x: &[u8]) -> Result<DecodingKey, KeyError> {
    if x.len() != 32 {
        return Err(KeyError::Ed25519Length);
    }
    Ok(DecodingKey::from_ed_der(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_errors_are_specific() {
        let err = |pem: &str| parse_static_key(pem).err().unwrap();
        assert_eq!(err("hello"), KeyError::NotPem);
        assert_eq!(
            err("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"),
            KeyError::PrivateKey
        );
        assert_eq!(
            err(
                "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nAAAA\n-----END RSA PRIVATE KEY-----"
            ),
            KeyError::PrivateKey
        );
        assert_eq!(
            err("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"),
            KeyError::Certificate
        );
        assert_eq!(
            err("-----BEGIN PUBLIC KEY-----\nAAAA"),
            KeyError::PemBoundary
        );
        assert_eq!(
            err("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PRIVATE KEY-----"),
            KeyError::PemBoundary
        );
        assert_eq!(
            err("-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----"),
            KeyError::PemBody
        );
        assert_eq!(
            err("-----BEGIN PUBLIC KEY-----\nComment: x\nAAAA\n-----END PUBLIC KEY-----"),
            KeyError::PemHeaders
        );
        assert_eq!(
            err("-----BEGIN OPENSSH KEY-----\nAAAA\n-----END OPENSSH KEY-----"),
            KeyError::UnsupportedPemType
        );
        assert!(matches!(
            err("-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----"),
            KeyError::Malformed(_)
        ));
        assert_eq!(
            err("kid:\n-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"),
            KeyError::EmptyKid
        );
        let long = format!(
            "kid: {}\n-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
            "k".repeat(MAX_KID_BYTES + 1)
        );
        assert_eq!(err(&long), KeyError::BadKid);
        for e in [KeyError::Certificate, KeyError::PrivateKey] {
            assert!(e.to_string().contains("openssl"), "{e}");
        }
    }

    #[test]
    fn rsa_key_checks_size_and_exponent() {
        let mut n = vec![0xc5; 256];
        n[255] = 0x01;
        assert!(rsa_key(&n, &[0x01, 0x00, 0x01]).is_ok());
        assert_eq!(
            rsa_key(&n[..128], &[0x01, 0x00, 0x01]).err(),
            Some(KeyError::RsaSize { bits: 1024 })
        );
        assert_eq!(rsa_key(&n, &[0x01]).err(), Some(KeyError::RsaInvalid));
        assert_eq!(rsa_key(&n, &[0x02]).err(), Some(KeyError::RsaInvalid));
        let mut even = n.clone();
        even[255] = 0x02;
        assert_eq!(
            rsa_key(&even, &[0x01, 0x00, 0x01]).err(),
            Some(KeyError::RsaInvalid)
        );
        let mut padded = vec![0];
        padded.extend_from_slice(&n);
        assert!(rsa_key(&padded, &[0x01, 0x00, 0x01]).is_ok());
    }

    #[test]
    fn ec_and_ed25519_lengths_are_checked() {
        assert_eq!(
            ec_key(KeyType::P256, &[1; 32], &[1; 31]).err(),
            Some(KeyError::CompressedPoint)
        );
        assert_eq!(
            ec_point_key(KeyType::P384, &[0x02; 97]).err(),
            Some(KeyError::CompressedPoint)
        );
        assert_eq!(ed25519_key(&[0; 31]).err(), Some(KeyError::Ed25519Length));
        // The right shape but not a point on P-256: refused by the crypto backend.
        let key = ec_key(KeyType::P256, &[1; 32], &[1; 32]).unwrap();
        assert_eq!(
            PublicKey::new(None, KeyType::P256, None, key).err(),
            Some(KeyError::Invalid(KeyType::P256))
        );
    }

    #[test]
    fn algorithm_names_are_exact() {
        assert_eq!(algorithm_from_jose("RS256"), Some(Algorithm::RS256));
        assert_eq!(algorithm_from_jose("rs256"), None);
        assert_eq!(algorithm_from_jose("none"), None);
        for (name, alg) in ALGORITHMS {
            assert_eq!(algorithm_name(alg), name);
            assert_eq!(is_hmac(alg), KeyType::for_algorithm(alg).is_none());
        }
    }
}
