//! JWT verification for the public API (DESIGN.md §4, STYLE.md §8).
//!
//! Two halves:
//!
//! * [`CompiledJwt`]: one app's [`JwtSettings`] checked and parsed once (algorithm allow-list,
//!   HS secret, PEM public keys, per-algorithm [`Validation`]). Compile errors name the field.
//! * [`JwtVerifier`]: shared by every app. It owns the one outbound HTTP client and the JWKS
//!   cache, and verifies a token against a [`CompiledJwt`].
//!
//! # Security rules
//!
//! * The algorithm is never taken from the token. The header's `alg` must be in the app's
//!   allow-list (`none` can never be listed) and the signature is checked with a [`Validation`]
//!   built for that one algorithm.
//! * Keys are typed. HS256/384/512 verify only with `hs_secret`; RS*/PS* only with RSA keys;
//!   ES256 only with P-256 keys, ES384 only with P-384 keys; EdDSA only with Ed25519 keys. An
//!   `hs_secret` is ignored unless an HS algorithm is allowed, and a JWKS `oct` key is never used.
//! * Header parameters that point at keys (`jku`, `jwk`, `x5u`, `x5c`) are ignored; a `crit`
//!   header is refused.
//! * `exp` is required; `nbf` and `iat` are honoured (an `iat` in the future beyond the leeway is
//!   [`JwtError::NotYetValid`]); the leeway applies to `exp`, `nbf` and `iat`.
//! * The issuer is checked when configured (the token's `iss` must then be that exact string);
//!   the audience is checked when any is configured (`aud` may be a string or an array; one match
//!   is enough). With no audiences configured, `aud` is neither required nor checked.
//! * Tokens longer than [`MAX_TOKEN_BYTES`] are refused before any parsing.
//! * Errors never carry the token or key material; [`JwtError::code`] is stable for logs/audit.
//!
//! # Static public keys and `kid`
//!
//! Each entry of [`JwtSettings::public_keys`] is one PEM public key (`PUBLIC KEY`, i.e.
//! SubjectPublicKeyInfo, for RSA, EC P-256/P-384 and Ed25519; or PKCS#1 `RSA PUBLIC KEY`),
//! optionally preceded by a line `kid: <id>`. Private keys and certificates are refused with a
//! message saying how to extract the public key. RSA keys must be 2048 to 8192 bits.
//!
//! * A key **with** a `kid:` line is used only for tokens whose header carries that `kid`, or for
//!   tokens without a `kid`.
//! * A key **without** a `kid:` line is a wildcard: it is tried for tokens without a `kid`, and for
//!   tokens whose `kid` matches no static key and no JWKS key. (So pasting an identity provider's
//!   PEM works even if its tokens carry a `kid`; add the `kid:` line to avoid trying every key.)
//!
//! # Key selection
//!
//! With a `kid`: a static key with that `kid`; else a cached JWKS key with that `kid`; else the
//! wildcard static keys; else (JWKS configured) a refetch of the JWKS, at most once per
//! [`JwksConfig::refresh_cooldown`] per URL, concurrent misses sharing one fetch; else
//! [`JwtError::UnknownKey`]. Without a `kid`: every static and JWKS key of the right type.
//! Failing signatures give [`JwtError::BadSignature`]; no candidate key at all gives
//! [`JwtError::UnknownKey`].
//!
//! # JWKS
//!
//! Fetched with one shared client (timeout, no redirects, size cap), cached per URL for
//! [`JwksConfig::ttl`]. RSA (`n`,`e`), EC (`crv` P-256/P-384, `x`,`y`) and OKP Ed25519 (`x`)
//! keys are used; keys whose `use` is not `sig`, whose `key_ops` lack `verify`, whose `alg` is
//! unknown, or whose `kty`/`crv` is unsupported are skipped. A JWK `alg` restricts the key to that
//! algorithm. A failed fetch keeps serving the previously fetched keys (stale-while-error); only
//! with nothing cached does verification fail with [`JwtError::JwksUnavailable`]. After a failed
//! fetch no fetch at all is made for a cooldown, so a dead endpoint is asked at most once per
//! cooldown (a cold cache then answers `JwksUnavailable` at once). Concurrent fetches of one URL
//! are always merged into one. A request whose own TTL load just ran does not refetch again for
//! an unknown `kid`. The JWKS URL must be `https`, except on loopback hosts.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Tokens longer than this are refused as [`JwtError::Malformed`] before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The shortest accepted `hs_secret` (RFC 7518 §3.2: at least the hash size; 256 bits here).
pub const MIN_HS_SECRET_BYTES: usize = 32;
/// The largest accepted `leeway_seconds`.
pub const MAX_LEEWAY_SECONDS: u64 = 600;
/// The most static public keys one app may list.
pub const MAX_STATIC_KEYS: usize = 32;
/// The most keys kept from one JWKS document (the first usable ones).
pub const MAX_JWKS_KEYS: usize = 64;

const MAX_KID_BYTES: usize = 256;
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;
const SUPPORTED_ALGORITHMS: &str =
    "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

/// base64url that tolerates (but does not need) padding, for JWKS members.
const B64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

// ---------------------------------------------------------------------------------------------
// Settings and compilation
// ---------------------------------------------------------------------------------------------

/// One app's JWT settings, as stored by admins (DESIGN.md §6 `app_auth`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct JwtSettings {
    /// Required `iss` when set. Blank means unset.
    pub issuer: Option<String>,
    /// Accepted `aud` values; empty means `aud` is not checked. Blank entries are ignored.
    pub audiences: Vec<String>,
    /// The allow-list: HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA
    /// (names are matched case-insensitively here; token headers must use the exact JOSE name).
    pub algorithms: Vec<String>,
    /// The HMAC secret (raw bytes of the string), needed when an HS algorithm is allowed.
    pub hs_secret: Option<SecretString>,
    /// PEM public keys, each optionally preceded by a `kid: <id>` line (see the module docs).
    pub public_keys: Vec<String>,
    /// A JWKS URL (`https`, or `http` on loopback). Blank means unset.
    pub jwks_url: Option<String>,
    /// The claim that names the user (default `sub`).
    pub user_claim: String,
    /// Clock skew allowed on `exp`, `nbf` and `iat` (default 60, at most [`MAX_LEEWAY_SECONDS`]).
    pub leeway_seconds: u64,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            issuer: None,
            audiences: Vec::new(),
            algorithms: Vec::new(),
            hs_secret: None,
            public_keys: Vec::new(),
            jwks_url: None,
            user_claim: "sub".to_owned(),
            leeway_seconds: 60,
        }
    }
}

/// Why [`CompiledJwt::compile`] refused an app's settings. Each message starts with the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtConfigError {
    #[error("algorithms: the allow-list is empty; list at least one of {SUPPORTED_ALGORITHMS}")]
    NoAlgorithms,
    #[error("algorithms: `none` is never accepted")]
    NoneAlgorithm,
    #[error("algorithms: unknown algorithm `{0}`; supported: {SUPPORTED_ALGORITHMS}")]
    UnknownAlgorithm(String),
    #[error("hs_secret: {0} is allowed but no hs_secret is set")]
    MissingHsSecret(&'static str),
    #[error("hs_secret: must be at least {MIN_HS_SECRET_BYTES} bytes long")]
    WeakHsSecret,
    #[error("public_keys / jwks_url: {0} is allowed but no public key and no jwks_url is set")]
    NoPublicKeys(&'static str),
    #[error(
        "public_keys: {alg} is allowed but no {key_type} public key is listed and no jwks_url is set"
    )]
    NoMatchingPublicKey {
        alg: &'static str,
        key_type: &'static str,
    },
    #[error("public_keys[{index}]: {reason}")]
    BadPublicKey { index: usize, reason: String },
    #[error("public_keys: at most {MAX_STATIC_KEYS} keys may be listed")]
    TooManyPublicKeys,
    #[error("jwks_url: {0}")]
    BadJwksUrl(String),
    #[error("user_claim: must not be empty")]
    EmptyUserClaim,
    #[error("leeway_seconds: must be at most {MAX_LEEWAY_SECONDS}")]
    LeewayTooLarge,
    #[error("jsonwebtoken has no crypto backend (enable exactly one of rust_crypto / aws_lc_rs)")]
    NoCryptoBackend,
}

/// The type of an asymmetric key; each algorithm accepts exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyType {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyType {
    fn name(self) -> &'static str {
        match self {
            KeyType::Rsa => "RSA",
            KeyType::P256 => "EC P-256",
            KeyType::P384 => "EC P-384",
            KeyType::Ed25519 => "Ed25519",
        }
    }

    /// An algorithm this key type verifies (used to validate keys when loading them).
    fn probe_algorithm(self) -> Algorithm {
        match self {
            KeyType::Rsa => Algorithm::RS256,
            KeyType::P256 => Algorithm::ES256,
            KeyType::P384 => Algorithm::ES384,
            KeyType::Ed25519 => Algorithm::EdDSA,
        }
    }
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// The one key type an asymmetric algorithm accepts; `None` for HMAC (and for any algorithm a
/// future jsonwebtoken adds, which is therefore never verified).
fn key_type_for(alg: Algorithm) -> Option<KeyType> {
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

const ALL_ALGORITHMS: [(&str, Algorithm); 12] = [
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

/// The exact JOSE name (tokens and JWKS `alg` members are case-sensitive).
fn algorithm_from_jose(name: &str) -> Option<Algorithm> {
    ALL_ALGORITHMS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| *a)
}

fn algorithm_name(alg: Algorithm) -> &'static str {
    ALL_ALGORITHMS
        .iter()
        .find(|(_, a)| *a == alg)
        .map_or("?", |(n, _)| n)
}

/// A public key ready for verification.
struct PublicKey {
    kid: Option<String>,
    key_type: KeyType,
    /// Set from a JWK's `alg`: the key verifies only that algorithm.
    only_alg: Option<Algorithm>,
    key: DecodingKey,
}

impl PublicKey {
    fn usable_for(&self, alg: Algorithm, key_type: KeyType) -> bool {
        self.key_type == key_type && self.only_alg.is_none_or(|only| only == alg)
    }
}

/// An app's [`JwtSettings`], validated, with every key parsed once.
pub struct CompiledJwt {
    algorithms: Vec<Algorithm>,
    validations: Vec<(Algorithm, Validation)>,
    hs_key: Option<DecodingKey>,
    keys: Vec<PublicKey>,
    jwks_url: Option<String>,
    issuer: Option<String>,
    user_claim: String,
    leeway: u64,
}

impl fmt::Debug for CompiledJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledJwt")
            .field("algorithms", &self.algorithms)
            .field("hs_secret", &self.hs_key.as_ref().map(|_| "[redacted]"))
            .field("public_keys", &self.keys.len())
            .field("jwks_url", &self.jwks_url)
            .field("issuer", &self.issuer)
            .field("user_claim", &self.user_claim)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

fn non_blank(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.trim().is_empty())
}

impl CompiledJwt {
    /// Checks `settings` and parses its keys. Errors name the offending field.
    pub fn compile(settings: &JwtSettings) -> Result<Self, JwtConfigError> {
        let provider = CryptoProvider::try_get_default().ok_or(JwtConfigError::NoCryptoBackend)?;

        // Algorithms.
        if settings.algorithms.iter().all(|a| a.trim().is_empty()) {
            return Err(JwtConfigError::NoAlgorithms);
        }
        let mut algorithms = Vec::new();
        for name in &settings.algorithms {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            if name.eq_ignore_ascii_case("none") {
                return Err(JwtConfigError::NoneAlgorithm);
            }
            let alg = ALL_ALGORITHMS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, a)| *a)
                .ok_or_else(|| JwtConfigError::UnknownAlgorithm(name.chars().take(32).collect()))?;
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }

        if settings.user_claim.is_empty() {
            return Err(JwtConfigError::EmptyUserClaim);
        }
        if settings.leeway_seconds > MAX_LEEWAY_SECONDS {
            return Err(JwtConfigError::LeewayTooLarge);
        }
        let issuer = non_blank(settings.issuer.as_deref()).map(str::to_owned);
        let audiences: Vec<&str> = settings
            .audiences
            .iter()
            .map(String::as_str)
            .filter(|a| !a.trim().is_empty())
            .collect();

        // HMAC secret, only when an HS algorithm is allowed.
        let hs_key = match algorithms.iter().find(|a| is_hmac(**a)) {
            None => None,
            Some(alg) => {
                let secret = settings
                    .hs_secret
                    .as_ref()
                    .map(|s| s.expose_secret().as_bytes())
                    .filter(|s| !s.is_empty())
                    .ok_or(JwtConfigError::MissingHsSecret(algorithm_name(*alg)))?;
                if secret.len() < MIN_HS_SECRET_BYTES {
                    return Err(JwtConfigError::WeakHsSecret);
                }
                Some(DecodingKey::from_secret(secret).map_err(|_| JwtConfigError::WeakHsSecret)?)
            }
        };

        // Static public keys.
        let entries: Vec<&str> = settings
            .public_keys
            .iter()
            .map(String::as_str)
            .filter(|k| !k.trim().is_empty())
            .collect();
        if entries.len() > MAX_STATIC_KEYS {
            return Err(JwtConfigError::TooManyPublicKeys);
        }
        let mut keys: Vec<PublicKey> = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let bad = |reason: String| JwtConfigError::BadPublicKey { index, reason };
            let key = parse_static_key(entry).map_err(bad)?;
            if (provider.verifier_factory)(&key.key_type.probe_algorithm(), &key.key).is_err() {
                return Err(bad(format!(
                    "not a valid {} public key",
                    key.key_type.name()
                )));
            }
            if !algorithms
                .iter()
                .any(|a| key_type_for(*a) == Some(key.key_type))
            {
                return Err(bad(format!(
                    "an {} key, but no algorithm for it is allowed",
                    key.key_type.name()
                )));
            }
            if let Some(kid) = &key.kid
                && keys.iter().any(|k| k.kid.as_ref() == Some(kid))
            {
                return Err(bad(format!("duplicate kid `{kid}`")));
            }
            keys.push(key);
        }

        let jwks_url = match non_blank(settings.jwks_url.as_deref()) {
            None => None,
            Some(url) => Some(check_jwks_url(url.trim()).map_err(JwtConfigError::BadJwksUrl)?),
        };

        // Every asymmetric algorithm needs somewhere to find its keys.
        if jwks_url.is_none() {
            for alg in &algorithms {
                let Some(key_type) = key_type_for(*alg) else {
                    continue;
                };
                if keys.is_empty() {
                    return Err(JwtConfigError::NoPublicKeys(algorithm_name(*alg)));
                }
                if !keys.iter().any(|k| k.key_type == key_type) {
                    return Err(JwtConfigError::NoMatchingPublicKey {
                        alg: algorithm_name(*alg),
                        key_type: key_type.name(),
                    });
                }
            }
        }

        let validations = algorithms
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.leeway = settings.leeway_seconds;
                v.validate_exp = true;
                v.validate_nbf = true;
                let mut required = vec!["exp"];
                if let Some(iss) = &issuer {
                    v.set_issuer(&[iss]);
                    required.push("iss");
                }
                if audiences.is_empty() {
                    v.validate_aud = false;
                } else {
                    v.set_audience(&audiences);
                    required.push("aud");
                }
                v.set_required_spec_claims(&required);
                (*alg, v)
            })
            .collect();

        Ok(Self {
            algorithms,
            validations,
            hs_key,
            keys,
            jwks_url,
            issuer,
            user_claim: settings.user_claim.clone(),
            leeway: settings.leeway_seconds,
        })
    }

    /// The allow-list, in the order the settings gave it.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// The JWKS URL, if any.
    pub fn jwks_url(&self) -> Option<&str> {
        self.jwks_url.as_deref()
    }

    /// The claim that names the user.
    pub fn user_claim(&self) -> &str {
        &self.user_claim
    }

    fn validation(&self, alg: Algorithm) -> Option<&Validation> {
        self.validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
    }
}

fn check_jwks_url(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a valid URL ({e})"))?;
    let host = parsed.host_str().ok_or("the URL has no host")?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("the URL must not contain credentials".to_owned());
    }
    let loopback = matches!(host, "localhost" | "127.0.0.1" | "[::1]");
    match parsed.scheme() {
        "https" => Ok(parsed.into()),
        "http" if loopback => Ok(parsed.into()),
        "http" => Err("must be https (http is accepted only for localhost)".to_owned()),
        _ => Err("must be an https URL".to_owned()),
    }
}

// ---------------------------------------------------------------------------------------------
// PEM / DER parsing of static keys
// ---------------------------------------------------------------------------------------------

fn parse_static_key(entry: &str) -> Result<PublicKey, String> {
    let entry = entry.trim();
    let (kid, pem) = match entry.split_once('\n') {
        Some((first, rest)) if first.trim_start().to_ascii_lowercase().starts_with("kid:") => {
            let kid = first.trim_start()[4..].trim();
            if kid.is_empty() {
                return Err("the `kid:` line is empty".to_owned());
            }
            if kid.len() > MAX_KID_BYTES || kid.chars().any(char::is_control) {
                return Err(format!(
                    "the kid must be at most {MAX_KID_BYTES} bytes without control characters"
                ));
            }
            (Some(kid.to_owned()), rest.trim())
        }
        _ => (None, entry),
    };
    let (label, der) = decode_pem(pem)?;
    let (key_type, key) = match label.as_str() {
        "PUBLIC KEY" => parse_spki(&der)?,
        "RSA PUBLIC KEY" => (KeyType::Rsa, parse_pkcs1_rsa(&der)?),
        "CERTIFICATE" => {
            return Err("a certificate, not a public key; extract the key with \
                        `openssl x509 -pubkey -noout -in cert.pem`"
                .to_owned());
        }
        l if l.contains("PRIVATE KEY") => {
            return Err("a private key; paste the public key only \
                        (`openssl pkey -pubout -in key.pem`)"
                .to_owned());
        }
        _ => {
            return Err(
                "an unsupported PEM type; expected `PUBLIC KEY` or `RSA PUBLIC KEY`".to_owned(),
            );
        }
    };
    Ok(PublicKey {
        kid,
        key_type,
        only_alg: None,
        key,
    })
}

/// One PEM block: its label and DER contents. Anything after the block is refused.
fn decode_pem(pem: &str) -> Result<(String, Vec<u8>), String> {
    const NOT_PEM: &str = "not a PEM public key (expected `-----BEGIN PUBLIC KEY-----`)";
    let mut lines = pem.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().ok_or(NOT_PEM)?;
    let label = first
        .strip_prefix("-----BEGIN ")
        .and_then(|l| l.strip_suffix("-----"))
        .ok_or(NOT_PEM)?;
    let end = format!("-----END {label}-----");
    let mut body = String::new();
    let mut ended = false;
    for line in lines.by_ref() {
        if line == end {
            ended = true;
            break;
        }
        if line.contains(':') {
            return Err("encrypted or annotated PEM blocks are not supported".to_owned());
        }
        body.push_str(line);
    }
    if !ended {
        return Err(format!("missing `{end}`"));
    }
    if lines.next().is_some() {
        return Err("one key per entry; text follows the END line".to_owned());
    }
    let der = STANDARD
        .decode(body.as_bytes())
        .map_err(|_| "the PEM body is not valid base64".to_owned())?;
    Ok((label.to_owned(), der))
}

/// A minimal DER reader: definite lengths, single-byte tags. Enough for public keys.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn read(&mut self, expected_tag: u8) -> Result<&'a [u8], String> {
        const BAD: &str = "malformed DER";
        let (&tag, rest) = self.0.split_first().ok_or(BAD)?;
        if tag != expected_tag {
            return Err(BAD.to_owned());
        }
        let (&first, mut rest) = rest.split_first().ok_or(BAD)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err(BAD.to_owned());
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return Err(BAD.to_owned());
        }
        let (content, rest) = rest.split_at(len);
        self.0 = rest;
        Ok(content)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const TAG_SEQUENCE: u8 = 0x30;
const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OID: u8 = 0x06;
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`).
fn parse_spki(der: &[u8]) -> Result<(KeyType, DecodingKey), String> {
    let mut outer = Der(der);
    let mut spki = Der(outer.read(TAG_SEQUENCE)?);
    if !outer.is_empty() {
        return Err("malformed DER".to_owned());
    }
    let mut alg_id = Der(spki.read(TAG_SEQUENCE)?);
    let bits = spki.read(TAG_BIT_STRING)?;
    let key_bits = match bits.split_first() {
        Some((0, rest)) => rest,
        _ => return Err("malformed DER".to_owned()),
    };
    let oid = alg_id.read(TAG_OID)?;
    if oid == OID_RSA {
        Ok((KeyType::Rsa, parse_pkcs1_rsa(key_bits)?))
    } else if oid == OID_EC {
        let curve = alg_id.read(TAG_OID)?;
        let (key_type, coord_len) = if curve == OID_P256 {
            (KeyType::P256, 32)
        } else if curve == OID_P384 {
            (KeyType::P384, 48)
        } else {
            return Err("an EC key on an unsupported curve (P-256 and P-384 are)".to_owned());
        };
        if key_bits.len() != 1 + 2 * coord_len || key_bits[0] != 0x04 {
            return Err("an EC key that is not an uncompressed point".to_owned());
        }
        Ok((key_type, DecodingKey::from_ec_der(key_bits)))
    } else if oid == OID_ED25519 {
        if key_bits.len() != 32 {
            return Err("an Ed25519 key of the wrong length".to_owned());
        }
        Ok((KeyType::Ed25519, DecodingKey::from_ed_der(key_bits)))
    } else if oid == OID_RSA_PSS {
        Err("an RSASSA-PSS-only key; export it as a plain RSA public key".to_owned())
    } else {
        Err("an unsupported key type (RSA, EC P-256/P-384 and Ed25519 are)".to_owned())
    }
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
fn parse_pkcs1_rsa(der: &[u8]) -> Result<DecodingKey, String> {
    let mut outer = Der(der);
    let mut seq = Der(outer.read(TAG_SEQUENCE)?);
    let n = seq.read(TAG_INTEGER)?;
    let e = seq.read(TAG_INTEGER)?;
    if !outer.is_empty() || !seq.is_empty() {
        return Err("malformed DER".to_owned());
    }
    rsa_key(n, e)
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Checks an RSA modulus and exponent (big-endian) and builds the key.
fn rsa_key(n: &[u8], e: &[u8]) -> Result<DecodingKey, String> {
    let n = strip_leading_zeros(n);
    let e = strip_leading_zeros(e);
    let bits = n.first().map_or(0, |top| {
        (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize)
    });
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        return Err(format!(
            "an RSA key of {bits} bits; {RSA_MIN_BITS} to {RSA_MAX_BITS} bits are accepted"
        ));
    }
    let exponent = if e.len() <= 8 {
        e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    } else {
        u64::MAX
    };
    let odd = |x: u64| !x.is_multiple_of(2);
    if exponent < 3 || !odd(exponent) || exponent >= (1 << 33) || !odd(u64::from(n[n.len() - 1])) {
        return Err("an RSA key with an invalid modulus or exponent".to_owned());
    }
    Ok(DecodingKey::from_rsa_raw_components(n, e))
}

// ---------------------------------------------------------------------------------------------
// JWKS documents
// ---------------------------------------------------------------------------------------------

fn b64url_member(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, &'static str> {
    let value = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or("missing member")?;
    B64URL_LENIENT
        .decode(value)
        .map_err(|_| "member is not base64url")
}

/// One JWK. `Ok(None)` means "not a signature verification key we use" (skipped quietly).
fn parse_jwk(jwk: &Map<String, Value>) -> Result<Option<PublicKey>, &'static str> {
    match jwk.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return Ok(None),
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verify {
            return Ok(None);
        }
    }
    let kid = match jwk.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) if kid.len() <= MAX_KID_BYTES && !kid.is_empty() => {
            Some(kid.clone())
        }
        Some(_) => return Err("bad kid"),
    };
    let only_alg = match jwk.get("alg") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => match algorithm_from_jose(name) {
            Some(alg) => Some(alg),
            None => return Ok(None),
        },
        Some(_) => return Err("bad alg"),
    };
    let (key_type, key) = match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => {
            let n = b64url_member(jwk, "n")?;
            let e = b64url_member(jwk, "e")?;
            (KeyType::Rsa, rsa_key(&n, &e).map_err(|_| "bad RSA key")?)
        }
        Some("EC") => {
            let (key_type, len) = match jwk.get("crv").and_then(Value::as_str) {
                Some("P-256") => (KeyType::P256, 32),
                Some("P-384") => (KeyType::P384, 48),
                _ => return Ok(None),
            };
            let x = b64url_member(jwk, "x")?;
            let y = b64url_member(jwk, "y")?;
            if x.len() != len || y.len() != len {
                return Err("bad EC coordinates");
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (key_type, DecodingKey::from_ec_der(&point))
        }
        Some("OKP") => {
            if jwk.get("crv").and_then(Value::as_str) != Some("Ed25519") {
                return Ok(None);
            }
            let x = b64url_member(jwk, "x")?;
            if x.len() != 32 {
                return Err("bad Ed25519 key");
            }
            (KeyType::Ed25519, DecodingKey::from_ed_der(&x))
        }
        // `oct` (symmetric) keys are never taken from a JWKS; others are unsupported.
        _ => return Ok(None),
    };
    if only_alg.is_some_and(|alg| key_type_for(alg) != Some(key_type)) {
        return Err("alg does not match the key type");
    }
    let provider = CryptoProvider::try_get_default().ok_or("no crypto backend")?;
    if (provider.verifier_factory)(&key_type.probe_algorithm(), &key).is_err() {
        return Err("invalid public key");
    }
    Ok(Some(PublicKey {
        kid,
        key_type,
        only_alg,
        key,
    }))
}

/// A JWKS document's usable keys. An empty result is an error (the stale keys stay in use).
fn parse_jwks(body: &[u8]) -> Result<Vec<PublicKey>, String> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|_| "the response is not JSON".to_owned())?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "the response has no `keys` array".to_owned())?;
    let mut keys = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let parsed = match entry.as_object() {
            Some(jwk) => parse_jwk(jwk),
            None => Err("not an object"),
        };
        match parsed {
            Ok(Some(key)) if keys.len() < MAX_JWKS_KEYS => keys.push(key),
            Ok(Some(_)) => {
                tracing::warn!(
                    index,
                    "JWKS has more than {MAX_JWKS_KEYS} usable keys; skipped"
                );
            }
            Ok(None) => tracing::debug!(index, "JWKS key skipped (not a supported signing key)"),
            Err(reason) => tracing::warn!(index, reason, "JWKS key skipped"),
        }
    }
    if keys.is_empty() {
        return Err("the JWKS has no usable signing keys".to_owned());
    }
    Ok(keys)
}

// ---------------------------------------------------------------------------------------------
// Errors and results
// ---------------------------------------------------------------------------------------------

/// Why a token was refused. Neither `Display` nor `Debug` ever includes the token or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is malformed")]
    Malformed,
    /// Carries the header's `alg`, sanitised (at most 16 ASCII alphanumerics, else `<invalid>`).
    #[error("the token's algorithm `{0}` is not allowed for this app")]
    AlgorithmNotAllowed(String),
    #[error("no key matches the token")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token has no valid `exp` claim")]
    MissingExpiry,
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    #[error("the token's audience is not accepted")]
    WrongAudience,
    /// Carries the configured claim name.
    #[error("the token has no usable `{0}` claim")]
    MissingUserClaim(String),
    /// The app's JWKS could not be fetched and nothing was cached. A server-side problem
    /// (503-worthy), unlike the other variants.
    #[error("the app's JWKS is unavailable: {0}")]
    JwksUnavailable(String),
}

impl JwtError {
    /// A stable snake_case code for logs and the audit trail.
    pub fn code(&self) -> &'static str {
        match self {
            JwtError::Malformed => "malformed",
            JwtError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            JwtError::UnknownKey => "unknown_key",
            JwtError::BadSignature => "bad_signature",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::MissingExpiry => "missing_exp",
            JwtError::WrongIssuer => "wrong_issuer",
            JwtError::WrongAudience => "wrong_audience",
            JwtError::MissingUserClaim(_) => "missing_user_claim",
            JwtError::JwksUnavailable(_) => "jwks_unavailable",
        }
    }
}

fn sanitize_alg(alg: &str) -> String {
    if !alg.is_empty() && alg.len() <= 16 && alg.chars().all(|c| c.is_ascii_alphanumeric()) {
        alg.to_owned()
    } else {
        "<invalid>".to_owned()
    }
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// The user claim's value (an integer claim is rendered in decimal). Not sanitised here: the
    /// policy renderer checks the characters.
    pub subject: String,
    /// Every claim of the token.
    pub claims: Map<String, Value>,
    /// The algorithm that verified it.
    pub algorithm: Algorithm,
    /// The header's `kid`, if any.
    pub key_id: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Token parsing
// ---------------------------------------------------------------------------------------------

struct TokenHeader {
    alg: String,
    kid: Option<String>,
}

fn is_b64url(part: &str) -> bool {
    part.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Shape checks and the (unverified) header: only `alg`, `kid` and `crit` are looked at.
fn parse_header(token: &str) -> Result<TokenHeader, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    if header.is_empty()
        || payload.is_empty()
        || !is_b64url(header)
        || !is_b64url(payload)
        || !is_b64url(signature)
    {
        return Err(JwtError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwtError::Malformed)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)?;
    if header.contains_key("crit") {
        return Err(JwtError::Malformed);
    }
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        _ => return Err(JwtError::Malformed),
    };
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) if kid.is_empty() => None,
        Some(Value::String(kid)) if kid.len() <= MAX_KID_BYTES => Some(kid.clone()),
        Some(_) => return Err(JwtError::Malformed),
    };
    Ok(TokenHeader { alg, kid })
}

enum KeyOutcome {
    /// This key cannot verify the token; try the next one.
    NextKey,
    Fail(JwtError),
}

fn classify(kind: &ErrorKind) -> KeyOutcome {
    use KeyOutcome::{Fail, NextKey};
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::Provider(_) => NextKey,
        ErrorKind::ExpiredSignature => Fail(JwtError::Expired),
        ErrorKind::ImmatureSignature => Fail(JwtError::NotYetValid),
        ErrorKind::InvalidIssuer => Fail(JwtError::WrongIssuer),
        ErrorKind::InvalidAudience => Fail(JwtError::WrongAudience),
        ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
            Fail(match claim.as_str() {
                "exp" if matches!(kind, ErrorKind::MissingRequiredClaim(_)) => {
                    JwtError::MissingExpiry
                }
                "iss" => JwtError::WrongIssuer,
                "aud" => JwtError::WrongAudience,
                _ => JwtError::Malformed,
            })
        }
        _ => Fail(JwtError::Malformed),
    }
}

/// Verifies the signature with each key in turn; claims are validated by the first key whose
/// signature matches (jsonwebtoken checks claims only after the signature).
fn try_keys<'a>(
    token: &str,
    keys: impl IntoIterator<Item = &'a DecodingKey>,
    validation: &Validation,
) -> Result<Map<String, Value>, JwtError> {
    let mut tried = false;
    for key in keys {
        tried = true;
        match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => match classify(e.kind()) {
                KeyOutcome::NextKey => continue,
                KeyOutcome::Fail(err) => return Err(err),
            },
        }
    }
    Err(if tried {
        JwtError::BadSignature
    } else {
        JwtError::UnknownKey
    })
}

/// The checks jsonwebtoken does not do: `iat`, a string `iss`, the user claim.
fn finish(
    jwt: &CompiledJwt,
    claims: Map<String, Value>,
    algorithm: Algorithm,
    key_id: Option<String>,
) -> Result<VerifiedToken, JwtError> {
    if let Some(iat) = claims.get("iat") {
        let iat = iat.as_f64().ok_or(JwtError::Malformed)?;
        let now = jsonwebtoken::get_current_timestamp();
        if iat > (now + jwt.leeway) as f64 {
            return Err(JwtError::NotYetValid);
        }
    }
    if jwt.issuer.is_some() && !matches!(claims.get("iss"), Some(Value::String(_))) {
        return Err(JwtError::WrongIssuer);
    }
    let subject = match claims.get(&jwt.user_claim) {
        // An empty string is a present claim; the policy renderer refuses it with 403.
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        _ => return Err(JwtError::MissingUserClaim(jwt.user_claim.clone())),
    };
    Ok(VerifiedToken {
        subject,
        claims,
        algorithm,
        key_id,
    })
}

// ---------------------------------------------------------------------------------------------
// The verifier and its JWKS cache
// ---------------------------------------------------------------------------------------------

/// JWKS fetching and caching knobs, shared by all apps.
#[derive(Debug, Clone)]
pub struct JwksConfig {
    /// The least time between two unknown-`kid` refetches of one URL, and the pause after a
    /// failed fetch before that URL is tried again. Default 30 s.
    pub refresh_cooldown: Duration,
    /// How long fetched keys are used before a refresh is attempted. Default 10 min.
    pub ttl: Duration,
    /// The whole-request timeout of one fetch. Default 5 s.
    pub fetch_timeout: Duration,
    /// The largest JWKS body accepted. Default 256 KiB.
    pub max_body: usize,
}

impl Default for JwksConfig {
    fn default() -> Self {
        Self {
            refresh_cooldown: Duration::from_secs(30),
            ttl: Duration::from_secs(600),
            fetch_timeout: Duration::from_secs(5),
            max_body: 256 * 1024,
        }
    }
}

/// The HTTP client for JWKS fetches could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the JWKS HTTP client: {0}")]
pub struct JwtVerifierInitError(String);

struct JwksSnapshot {
    keys: Vec<PublicKey>,
    fetched_at: Instant,
}

/// Why a fetch is wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FetchReason {
    /// Nothing cached, or the cached keys are older than the TTL.
    Load,
    /// A token's `kid` is not in the (fresh) cached keys.
    UnknownKid,
}

/// One JWKS URL's cache entry.
#[derive(Default)]
struct JwksState {
    snapshot: RwLock<Option<Arc<JwksSnapshot>>>,
    /// After a failed fetch, no fetch at all for a cooldown (a dead endpoint is not hammered).
    last_failure: Mutex<Option<Instant>>,
    /// Unknown-kid refetches happen at most once per cooldown.
    last_kid_refetch: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    /// Completed fetch attempts; lets a waiter see that someone else fetched meanwhile.
    generation: AtomicU64,
    /// Held for the duration of a fetch: concurrent misses share one.
    fetch_lock: tokio::sync::Mutex<()>,
}

impl JwksState {
    fn snapshot(&self) -> Option<Arc<JwksSnapshot>> {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether a fetch for `reason` must wait for the cooldown.
    fn held_back(&self, reason: FetchReason, cooldown: Duration) -> bool {
        let recent = |at: &Mutex<Option<Instant>>| {
            at.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some_and(|t| t.elapsed() < cooldown)
        };
        recent(&self.last_failure)
            || (reason == FetchReason::UnknownKid && recent(&self.last_kid_refetch))
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn unavailable(&self) -> JwtError {
        let reason = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        JwtError::JwksUnavailable(reason.unwrap_or_else(|| "no keys fetched yet".to_owned()))
    }
}

/// What [`Inner::current`] found.
struct Current {
    snapshot: Arc<JwksSnapshot>,
    /// The generation the snapshot belongs to, for a later unknown-kid refetch.
    generation: u64,
    /// A fetch was attempted while this request waited (so refetching now is pointless).
    just_fetched: bool,
}

struct Inner {
    client: reqwest::Client,
    config: JwksConfig,
    states: moka::future::Cache<String, Arc<JwksState>>,
}

/// Verifies tokens for every app; holds the shared HTTP client and JWKS cache. Cheap to clone.
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("config", &self.inner.config)
            .field("jwks_urls", &self.inner.states.entry_count())
            .finish()
    }
}

impl JwtVerifier {
    /// Builds the shared client (no redirects, `fetch_timeout`, a User-Agent).
    ///
    /// # Panics
    ///
    /// If the TLS client cannot be built (see [`JwtVerifier::try_new`]); call it at startup.
    pub fn new(config: JwksConfig) -> Self {
        match Self::try_new(config) {
            Ok(verifier) => verifier,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`JwtVerifier::new`] without the panic.
    pub fn try_new(config: JwksConfig) -> Result<Self, JwtVerifierInitError> {
        sts_core::install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(config.fetch_timeout)
            .timeout(config.fetch_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("stsgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| JwtVerifierInitError(e.without_url().to_string()))?;
        let states = moka::future::Cache::builder()
            .max_capacity(10_000)
            .time_to_idle(Duration::from_secs(24 * 3600))
            .build();
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                config,
                states,
            }),
        })
    }

    /// Verifies `token` for the app whose settings are `jwt`.
    pub async fn verify(&self, jwt: &CompiledJwt, token: &str) -> Result<VerifiedToken, JwtError> {
        let header = parse_header(token)?;
        let alg = algorithm_from_jose(&header.alg)
            .filter(|alg| jwt.algorithms.contains(alg))
            .ok_or_else(|| JwtError::AlgorithmNotAllowed(sanitize_alg(&header.alg)))?;
        let validation = jwt
            .validation(alg)
            .ok_or_else(|| JwtError::AlgorithmNotAllowed(sanitize_alg(&header.alg)))?;
        let claims = if is_hmac(alg) {
            try_keys(token, jwt.hs_key.as_ref(), validation)?
        } else {
            let key_type = key_type_for(alg)
                .ok_or_else(|| JwtError::AlgorithmNotAllowed(sanitize_alg(&header.alg)))?;
            self.verify_asymmetric(jwt, token, alg, key_type, header.kid.as_deref(), validation)
                .await?
        };
        finish(jwt, claims, alg, header.kid)
    }

    async fn verify_asymmetric(
        &self,
        jwt: &CompiledJwt,
        token: &str,
        alg: Algorithm,
        key_type: KeyType,
        kid: Option<&str>,
        validation: &Validation,
    ) -> Result<Map<String, Value>, JwtError> {
        let statics = || jwt.keys.iter().filter(|k| k.usable_for(alg, key_type));
        let Some(kid) = kid else {
            // No kid: every key of the right type, static then JWKS.
            let mut candidates: Vec<&DecodingKey> = statics().map(|k| &k.key).collect();
            let snapshot = match &jwt.jwks_url {
                None => None,
                Some(url) => match self.inner.current(url).await {
                    Ok(current) => Some(current.snapshot),
                    Err(e) if candidates.is_empty() => return Err(e),
                    Err(_) => None,
                },
            };
            if let Some(snapshot) = &snapshot {
                candidates.extend(
                    snapshot
                        .keys
                        .iter()
                        .filter(|k| k.usable_for(alg, key_type))
                        .map(|k| &k.key),
                );
            }
            return try_keys(token, candidates, validation);
        };

        let exact: Vec<&DecodingKey> = statics()
            .filter(|k| k.kid.as_deref() == Some(kid))
            .map(|k| &k.key)
            .collect();
        if !exact.is_empty() {
            return try_keys(token, exact, validation);
        }
        let wildcards: Vec<&DecodingKey> = statics()
            .filter(|k| k.kid.is_none())
            .map(|k| &k.key)
            .collect();
        let Some(url) = &jwt.jwks_url else {
            return try_keys(token, wildcards, validation);
        };

        let cached = self.inner.current(url).await;
        if let Ok(current) = &cached {
            let keys = jwks_matching(&current.snapshot, kid, alg, key_type);
            if !keys.is_empty() {
                return try_keys(token, keys, validation);
            }
        }
        let had_wildcards = !wildcards.is_empty();
        if had_wildcards {
            match try_keys(token, wildcards, validation) {
                Err(JwtError::BadSignature) => {}
                other => return other,
            }
        }
        let no_match = if had_wildcards {
            JwtError::BadSignature
        } else {
            JwtError::UnknownKey
        };
        // Unknown kid: refetch (single-flight, cooldown-limited), unless this request just
        // fetched (or failed to).
        let current = match cached {
            Ok(current) if current.just_fetched => return Err(no_match),
            Ok(current) => current,
            Err(_) if had_wildcards => return Err(JwtError::BadSignature),
            Err(e) => return Err(e),
        };
        let refreshed = self
            .inner
            .clone()
            .refresh(url, current.generation, FetchReason::UnknownKid)
            .await;
        let refreshed = match refreshed {
            Some(snapshot) if !Arc::ptr_eq(&snapshot, &current.snapshot) => snapshot,
            _ => return Err(no_match),
        };
        let keys = jwks_matching(&refreshed, kid, alg, key_type);
        if keys.is_empty() {
            return Err(no_match);
        }
        try_keys(token, keys, validation)
    }
}

fn jwks_matching<'a>(
    snapshot: &'a JwksSnapshot,
    kid: &str,
    alg: Algorithm,
    key_type: KeyType,
) -> Vec<&'a DecodingKey> {
    snapshot
        .keys
        .iter()
        .filter(|k| k.kid.as_deref() == Some(kid) && k.usable_for(alg, key_type))
        .map(|k| &k.key)
        .collect()
}

impl Inner {
    async fn state(&self, url: &str) -> Arc<JwksState> {
        self.states
            .get_with_by_ref(url, async { Arc::new(JwksState::default()) })
            .await
    }

    /// The keys to use now: the cached ones while fresh; else a refresh; else stale ones.
    async fn current(self: &Arc<Self>, url: &str) -> Result<Current, JwtError> {
        let state = self.state(url).await;
        let generation = state.generation();
        if let Some(snapshot) = state.snapshot()
            && snapshot.fetched_at.elapsed() < self.config.ttl
        {
            return Ok(Current {
                snapshot,
                generation,
                just_fetched: false,
            });
        }
        let snapshot = self
            .clone()
            .refresh(url, generation, FetchReason::Load)
            .await;
        let after = state.generation();
        match snapshot {
            Some(snapshot) => Ok(Current {
                snapshot,
                generation: after,
                just_fetched: after != generation,
            }),
            None => Err(state.unavailable()),
        }
    }

    /// Fetches `url` unless a fetch completed since `seen_generation` (concurrent misses share
    /// it), a fetch failed within the cooldown, or (`UnknownKid`) an unknown-kid refetch happened
    /// within the cooldown. Returns whatever is cached afterwards. Runs in its own task so a
    /// cancelled request cannot abandon a fetch half-way.
    async fn refresh(
        self: Arc<Self>,
        url: &str,
        seen_generation: u64,
        reason: FetchReason,
    ) -> Option<Arc<JwksSnapshot>> {
        let cooldown = self.config.refresh_cooldown;
        // Fast path without spawning: no fetch in flight and the cooldown holds this one back.
        let state = self.state(url).await;
        if let Ok(_idle) = state.fetch_lock.try_lock()
            && state.generation() == seen_generation
            && state.held_back(reason, cooldown)
        {
            return state.snapshot();
        }
        let url = url.to_owned();
        let task = tokio::spawn(async move {
            let _guard = state.fetch_lock.lock().await;
            if state.generation() != seen_generation || state.held_back(reason, cooldown) {
                return state.snapshot();
            }
            if reason == FetchReason::UnknownKid {
                *state
                    .last_kid_refetch
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
            }
            let host = reqwest::Url::parse(&url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default();
            match self.fetch(&url).await {
                Ok(keys) => {
                    tracing::info!(jwks_host = %host, keys = keys.len(), ?reason, "JWKS fetched");
                    *state
                        .snapshot
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(JwksSnapshot {
                        keys,
                        fetched_at: Instant::now(),
                    }));
                    *state
                        .last_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = None;
                    *state
                        .last_failure
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = None;
                }
                Err(error) => {
                    tracing::warn!(
                        jwks_host = %host,
                        %error,
                        ?reason,
                        stale_keys = state.snapshot().is_some(),
                        "JWKS fetch failed"
                    );
                    *state
                        .last_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(error);
                    *state
                        .last_failure
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                }
            }
            state.generation.fetch_add(1, Ordering::AcqRel);
            state.snapshot()
        });
        task.await.ok().flatten()
    }

    async fn fetch(&self, url: &str) -> Result<Vec<PublicKey>, String> {
        let describe = |e: reqwest::Error| {
            if e.is_timeout() {
                "the request timed out".to_owned()
            } else if e.is_connect() {
                "could not connect".to_owned()
            } else {
                format!("the request failed ({})", e.without_url())
            }
        };
        let mut response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(describe)?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(format!("HTTP status {}", status.as_u16()));
        }
        let max = self.config.max_body;
        let too_big = || format!("the response is larger than {max} bytes");
        if response
            .content_length()
            .is_some_and(|len| len > max as u64)
        {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            if body.len() + chunk.len() > max {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    fn hs_settings(secret: &str) -> JwtSettings {
        JwtSettings {
            algorithms: vec!["HS256".into()],
            hs_secret: Some(SecretString::from(secret)),
            ..JwtSettings::default()
        }
    }

    /// STYLE.md §10: jsonwebtoken with no (or two) crypto backends compiles and panics at the
    /// first use. This signs and verifies one token through the real code path.
    #[tokio::test]
    async fn crypto_backend_signs_and_verifies_one_token() {
        let secret = "0123456789abcdef0123456789abcdef";
        let jwt = CompiledJwt::compile(&hs_settings(secret)).unwrap();
        let exp = jsonwebtoken::get_current_timestamp() + 300;
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "alice", "exp": exp}),
            &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        )
        .unwrap();
        let verifier = JwtVerifier::new(JwksConfig::default());
        let verified = verifier.verify(&jwt, &token).await.unwrap();
        assert_eq!(verified.subject, "alice");
        assert_eq!(verified.algorithm, Algorithm::HS256);
    }

    #[test]
    fn der_reader_rejects_truncation_and_long_lengths() {
        assert!(Der(&[0x30, 0x05, 0x01]).read(TAG_SEQUENCE).is_err());
        assert!(
            Der(&[0x30, 0x85, 1, 1, 1, 1, 1])
                .read(TAG_SEQUENCE)
                .is_err()
        );
        assert!(Der(&[0x02, 0x01, 0x05]).read(TAG_SEQUENCE).is_err());
        let mut der = Der(&[0x30, 0x81, 0x01, 0xff, 0x02]);
        assert_eq!(der.read(TAG_SEQUENCE).unwrap(), &[0xff]);
        assert!(!der.is_empty());
    }

    #[test]
    fn pem_errors_are_specific() {
        let err = |pem: &str| parse_static_key(pem).err().unwrap();
        assert!(err("hello").contains("not a PEM"));
        assert!(
            err("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
                .contains("private key")
        );
        assert!(
            err("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----")
                .contains("certificate")
        );
        assert!(err("-----BEGIN PUBLIC KEY-----\nAAAA").contains("missing"));
        assert!(
            err("-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----").contains("base64")
        );
        assert!(
            err("kid:\n-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").contains("kid")
        );
    }

    #[test]
    fn rsa_key_checks_size_and_exponent() {
        let mut n = vec![0xc5; 256];
        n[255] = 0x01;
        assert!(rsa_key(&n, &[0x01, 0x00, 0x01]).is_ok());
        assert!(rsa_key(&n[..128], &[0x01, 0x00, 0x01]).is_err());
        assert!(rsa_key(&n, &[0x01]).is_err());
        assert!(rsa_key(&n, &[0x02]).is_err());
        let mut padded = vec![0];
        padded.extend_from_slice(&n);
        assert!(rsa_key(&padded, &[0x01, 0x00, 0x01]).is_ok());
    }

    #[test]
    fn alg_is_sanitised() {
        assert_eq!(sanitize_alg("none"), "none");
        assert_eq!(sanitize_alg("HS256"), "HS256");
        assert_eq!(sanitize_alg("a.b"), "<invalid>");
        assert_eq!(sanitize_alg(&"A".repeat(17)), "<invalid>");
    }

    #[test]
    fn jwks_url_rules() {
        assert!(check_jwks_url("https://idp.example.com/.well-known/jwks.json").is_ok());
        assert!(check_jwks_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_jwks_url("http://localhost/jwks").is_ok());
        assert!(check_jwks_url("http://idp.example.com/jwks").is_err());
        assert!(check_jwks_url("https://user:pw@idp.example.com/jwks").is_err());
        assert!(check_jwks_url("ftp://idp.example.com/jwks").is_err());
        assert!(check_jwks_url("not a url").is_err());
    }

    #[test]
    fn jwks_skips_unusable_keys() {
        let body = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "OKP", "crv": "X25519", "x": "AA"},
            {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},
            "garbage"
        ]});
        let err = parse_jwks(body.to_string().as_bytes()).err().unwrap();
        assert!(err.contains("no usable"));
        assert!(parse_jwks(b"<html>").is_err());
        assert!(parse_jwks(b"{}").is_err());
    }
}
