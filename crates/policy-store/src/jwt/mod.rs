//! An app's JWT settings, checked and compiled once (DESIGN.md §4).
//!
//! [`CompiledJwt::compile`] is the one rule for what JWT settings are acceptable. The store runs
//! it when settings are saved ([`check_auth_input`]), and the gateway runs it when it loads an
//! app, so settings the store accepts are settings the gateway can use.
//!
//! # Rules
//!
//! * `algorithms`: at least one of HS256/384/512, RS256/384/512, PS256/384/512, ES256/384,
//!   EdDSA (names matched case-insensitively here; tokens must use the exact JOSE name).
//!   `none` is never accepted.
//! * `hs_secret`: required, at least [`MIN_HS_SECRET_BYTES`] bytes, when an HS algorithm is
//!   allowed; ignored otherwise.
//! * `public_keys`: at most [`MAX_STATIC_KEYS`] PEM public keys, each optionally preceded by a
//!   line `kid: <id>` (see [`keys`]). RSA keys must be 2048 to 8192 bits. Private keys and
//!   certificates are refused with a message saying how to extract the public key. Every key
//!   must suit an allowed algorithm, and `kid`s must be unique.
//! * `jwks_url`: `https`. A loopback host (`localhost`, `127.0.0.0/8`, `::1`), over `http` or
//!   `https`, only with [`CompileOptions::allow_loopback_jwks`]; a literal address that is not
//!   public ([`address`]: private, link-local, unique-local, unspecified, reserved…) never. No
//!   user name or password in the URL. Host names are checked again after every DNS lookup, by
//!   the gateway's resolver, with the same rule.
//! * Each asymmetric algorithm needs a key source: a JWKS URL, or a static key of its type.
//! * `issuer` and at least one of `audiences` are mandatory whenever an asymmetric algorithm is
//!   allowed: keys from an identity provider also sign tokens for its other applications, and
//!   only `iss` and `aud` tell those apart. HS-only apps may leave them empty (the secret is the
//!   app's own). Blank values mean unset.
//! * `user_claim`: a claim name such as `sub` (letters, digits, `_ . : -`, at most 64 bytes).
//! * `leeway_seconds`: 0 to [`MAX_LEEWAY_SECONDS`].
//!
//! Every problem is reported at once, each naming its field ([`JwtConfigError::field`]).

pub mod address;
pub mod keys;

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};

use crate::model::{AppAuth, AppAuthInput, AppId};
use crate::repo::FieldError;
use keys::{ALGORITHMS, algorithm_name, is_hmac};
pub use keys::{KeyError, KeyType, PublicKey};

/// The shortest accepted `hs_secret` (RFC 7518 §3.2: at least the hash size; 256 bits here).
pub const MIN_HS_SECRET_BYTES: usize = 32;

/// The JOSE names of the algorithms an app may allow (the admin form lists them).
pub const JWT_ALGORITHMS: [&str; ALGORITHMS.len()] = {
    let mut names = [""; ALGORITHMS.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = ALGORITHMS[i].0;
        i += 1;
    }
    names
};
/// The largest accepted `leeway_seconds`.
pub const MAX_LEEWAY_SECONDS: u64 = 600;
/// The most static public keys one app may list.
pub const MAX_STATIC_KEYS: usize = 32;

const SUPPORTED_ALGORITHMS: &str =
    "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

/// Deployment choices that change what settings are acceptable. The store and the gateway
/// must be given the same values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompileOptions {
    /// Accept JWKS URLs on loopback hosts (`stsgate dev`, tests). Off by default.
    pub allow_loopback_jwks: bool,
}

/// Why a JWKS URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksUrlError {
    #[error("not a valid URL ({0})")]
    Invalid(#[from] url::ParseError),
    #[error("the URL has no host")]
    NoHost,
    #[error("the URL must not contain a user name or password")]
    Credentials,
    #[error("must be an https URL")]
    NotHttps,
    #[error("points at this machine (loopback), which this server is not configured to allow")]
    Loopback,
    #[error(
        "points at a private, link-local, reserved or otherwise non-public address; use the \
         provider's public URL"
    )]
    PrivateAddress,
}

/// One problem with an app's JWT settings. `Display` is the message for the admin; the field
/// at fault is [`JwtConfigError::field`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtConfigError {
    #[error("allow at least one algorithm: {SUPPORTED_ALGORITHMS}")]
    NoAlgorithms,
    #[error("\"none\" is never accepted; remove it")]
    NoneAlgorithm,
    /// Carries the unknown name, cut to 32 characters.
    #[error("unknown algorithm \"{0}\"; supported: {SUPPORTED_ALGORITHMS}")]
    UnknownAlgorithm(String),
    #[error("{0} is allowed, so an HS secret is required")]
    MissingHsSecret(&'static str),
    #[error("must be at least {MIN_HS_SECRET_BYTES} bytes long")]
    WeakHsSecret,
    #[error("{0} is allowed, so paste a public key or set a JWKS URL")]
    NoKeySource(&'static str),
    #[error("{alg} is allowed but no {key_type} public key is listed and no JWKS URL is set")]
    NoMatchingPublicKey {
        alg: &'static str,
        key_type: KeyType,
    },
    /// `index` is the entry's position in the settings as given (blank entries included).
    #[error("{reason}")]
    BadPublicKey { index: usize, reason: KeyError },
    #[error("at most {MAX_STATIC_KEYS} keys may be listed")]
    TooManyPublicKeys,
    #[error("{0}")]
    BadJwksUrl(JwksUrlError),
    #[error(
        "required when keys come from public keys or a JWKS URL: the identity provider's \
         issuer (the tokens' iss)"
    )]
    IssuerRequired,
    #[error(
        "required when keys come from public keys or a JWKS URL: at least one audience \
         (the tokens' aud) that names this app"
    )]
    AudienceRequired,
    #[error("a claim name such as sub (letters, digits, _ . : -, at most 64 characters)")]
    BadUserClaim,
    #[error("between 0 and {MAX_LEEWAY_SECONDS} seconds")]
    LeewayOutOfRange,
}

impl JwtConfigError {
    /// The settings field at fault: `algorithms`, `hs_secret`, `public_keys`,
    /// `public_keys[i]`, `jwks_url`, `issuer`, `audiences`, `user_claim` or `leeway_seconds`.
    pub fn field(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            JwtConfigError::NoAlgorithms
            | JwtConfigError::NoneAlgorithm
            | JwtConfigError::UnknownAlgorithm(_) => "algorithms",
            JwtConfigError::MissingHsSecret(_) | JwtConfigError::WeakHsSecret => "hs_secret",
            JwtConfigError::NoKeySource(_)
            | JwtConfigError::NoMatchingPublicKey { .. }
            | JwtConfigError::TooManyPublicKeys => "public_keys",
            JwtConfigError::BadPublicKey { index, .. } => {
                return Cow::Owned(format!("public_keys[{index}]"));
            }
            JwtConfigError::BadJwksUrl(_) => "jwks_url",
            JwtConfigError::IssuerRequired => "issuer",
            JwtConfigError::AudienceRequired => "audiences",
            JwtConfigError::BadUserClaim => "user_claim",
            JwtConfigError::LeewayOutOfRange => "leeway_seconds",
        })
    }
}

/// Every problem [`CompiledJwt::compile`] found (never empty). `Display`:
/// `field: message; field: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfigErrors(Vec<JwtConfigError>);

impl JwtConfigErrors {
    pub fn iter(&self) -> impl Iterator<Item = &JwtConfigError> {
        self.0.iter()
    }

    /// The problems as the store reports invalid input.
    pub fn field_errors(&self) -> Vec<FieldError> {
        self.0
            .iter()
            .map(|e| FieldError::new(e.field(), e.to_string()))
            .collect()
    }
}

impl fmt::Display for JwtConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {e}", e.field())?;
        }
        Ok(())
    }
}

impl std::error::Error for JwtConfigErrors {}

/// Validates JWT settings as submitted, for the store to call before saving.
///
/// `input.hs_secret: None` keeps the stored secret, so pass the app's current (decrypted)
/// secret as `stored_hs_secret`. An empty result means the gateway will accept the settings
/// when compiled with the same `options`.
pub fn check_auth_input(
    app_id: AppId,
    input: &AppAuthInput,
    stored_hs_secret: Option<&SecretString>,
    options: CompileOptions,
) -> Vec<FieldError> {
    let settings = AppAuth {
        app_id,
        issuer: input.issuer.clone(),
        audiences: input.audiences.clone(),
        algorithms: input.algorithms.clone(),
        hs_secret: input
            .hs_secret
            .clone()
            .or_else(|| stored_hs_secret.cloned()),
        public_keys: input.public_keys.clone(),
        jwks_url: input.jwks_url.clone(),
        user_claim: input.user_claim.clone(),
        leeway_seconds: input.leeway_seconds,
    };
    match CompiledJwt::compile(&settings, options) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.field_errors(),
    }
}

/// An app's JWT settings, validated, with every key parsed once.
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
    /// Checks `auth` (see the module docs) and parses its keys.
    pub fn compile(auth: &AppAuth, options: CompileOptions) -> Result<Self, JwtConfigErrors> {
        let mut errors = Vec::new();
        let algorithms = compile_algorithms(&auth.algorithms, &mut errors);
        let hs_key = compile_hs_secret(&algorithms, auth.hs_secret.as_ref(), &mut errors);
        let (keys, keys_ok) = compile_static_keys(&auth.public_keys, &algorithms, &mut errors);

        let jwks_given = non_blank(auth.jwks_url.as_deref()).map(str::trim);
        let jwks_url = jwks_given.and_then(|url| {
            check_jwks_url(url, options)
                .map_err(|e| errors.push(JwtConfigError::BadJwksUrl(e)))
                .ok()
        });
        // Every asymmetric algorithm needs somewhere to find its keys (unless a key or the URL
        // was refused already: that error is the one to fix).
        if jwks_given.is_none() && keys_ok {
            for alg in &algorithms {
                let Some(key_type) = KeyType::for_algorithm(*alg) else {
                    continue;
                };
                if keys.is_empty() {
                    errors.push(JwtConfigError::NoKeySource(algorithm_name(*alg)));
                    break;
                }
                if !keys.iter().any(|k| k.key_type() == key_type) {
                    errors.push(JwtConfigError::NoMatchingPublicKey {
                        alg: algorithm_name(*alg),
                        key_type,
                    });
                }
            }
        }

        let issuer = non_blank(auth.issuer.as_deref()).map(str::to_owned);
        let audiences: Vec<&str> = auth
            .audiences
            .iter()
            .map(String::as_str)
            .filter(|a| !a.trim().is_empty())
            .collect();
        if algorithms.iter().any(|a| !is_hmac(*a)) {
            if issuer.is_none() {
                errors.push(JwtConfigError::IssuerRequired);
            }
            if audiences.is_empty() {
                errors.push(JwtConfigError::AudienceRequired);
            }
        }
        if !crate::validate::valid_claim_name(&auth.user_claim) {
            errors.push(JwtConfigError::BadUserClaim);
        }
        let leeway = u64::try_from(auth.leeway_seconds)
            .ok()
            .filter(|l| *l <= MAX_LEEWAY_SECONDS);
        let Some(leeway) = leeway else {
            errors.push(JwtConfigError::LeewayOutOfRange);
            return Err(JwtConfigErrors(errors));
        };
        if !errors.is_empty() {
            return Err(JwtConfigErrors(errors));
        }

        let validations = algorithms
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.leeway = leeway;
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
            user_claim: auth.user_claim.clone(),
            leeway,
        })
    }

    /// The allow-list, in the order the settings gave it.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// The checks for a token signed with `alg`; `None` when `alg` is not allowed.
    pub fn validation(&self, alg: Algorithm) -> Option<&Validation> {
        self.validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
    }

    /// The key for HS algorithms; `None` unless one is allowed.
    pub fn hs_key(&self) -> Option<&DecodingKey> {
        self.hs_key.as_ref()
    }

    /// The static public keys, in the order the settings gave them.
    pub fn static_keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// The JWKS URL, if any.
    pub fn jwks_url(&self) -> Option<&str> {
        self.jwks_url.as_deref()
    }

    /// The required `iss`, if any.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The claim that names the user.
    pub fn user_claim(&self) -> &str {
        &self.user_claim
    }

    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
    pub fn leeway(&self) -> u64 {
        self.leeway
    }
}

fn compile_algorithms(names: &[String], errors: &mut Vec<JwtConfigError>) -> Vec<Algorithm> {
    let mut algorithms = Vec::new();
    let mut refused = false;
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if name.eq_ignore_ascii_case("none") {
            errors.push(JwtConfigError::NoneAlgorithm);
            refused = true;
            continue;
        }
        match ALGORITHMS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, alg)) if !algorithms.contains(alg) => algorithms.push(*alg),
            Some(_) => {}
            None => {
                errors.push(JwtConfigError::UnknownAlgorithm(
                    name.chars().take(32).collect(),
                ));
                refused = true;
            }
        }
    }
    if algorithms.is_empty() && !refused {
        errors.push(JwtConfigError::NoAlgorithms);
    }
    algorithms
}

/// The HMAC key, only when an HS algorithm is allowed.
fn compile_hs_secret(
    algorithms: &[Algorithm],
    secret: Option<&SecretString>,
    errors: &mut Vec<JwtConfigError>,
) -> Option<DecodingKey> {
    let alg = algorithms.iter().find(|a| is_hmac(**a))?;
    let Some(secret) = secret
        .map(|s| s.expose_secret().as_bytes())
        .filter(|s| !s.is_empty())
    else {
        errors.push(JwtConfigError::MissingHsSecret(algorithm_name(*alg)));
        return None;
    };
    if secret.len() < MIN_HS_SECRET_BYTES {
        errors.push(JwtConfigError::WeakHsSecret);
        return None;
    }
    DecodingKey::from_secret(secret)
        .map_err(|_| errors.push(JwtConfigError::WeakHsSecret))
        .ok()
}

/// The static keys that parsed, and whether all of them did.
fn compile_static_keys(
    entries: &[String],
    algorithms: &[Algorithm],
    errors: &mut Vec<JwtConfigError>,
) -> (Vec<PublicKey>, bool) {
    let entries: Vec<(usize, &str)> = entries
        .iter()
        .map(String::as_str)
        .enumerate()
        .filter(|(_, k)| !k.trim().is_empty())
        .collect();
    if entries.len() > MAX_STATIC_KEYS {
        errors.push(JwtConfigError::TooManyPublicKeys);
        return (Vec::new(), false);
    }
    let mut keys: Vec<PublicKey> = Vec::with_capacity(entries.len());
    let mut all_ok = true;
    for (index, entry) in entries {
        let checked = keys::parse_static_key(entry).and_then(|key| {
            if !algorithms
                .iter()
                .any(|a| KeyType::for_algorithm(*a) == Some(key.key_type()))
            {
                return Err(KeyError::NoAlgorithmFor(key.key_type()));
            }
            match key.kid() {
                Some(kid) if keys.iter().any(|k| k.kid() == Some(kid)) => {
                    Err(KeyError::DuplicateKid(kid.to_owned()))
                }
                _ => Ok(key),
            }
        });
        match checked {
            Ok(key) => keys.push(key),
            Err(reason) => {
                errors.push(JwtConfigError::BadPublicKey { index, reason });
                all_ok = false;
            }
        }
    }
    (keys, all_ok)
}

/// Checks a JWKS URL (see the module docs) and returns it normalised.
pub fn check_jwks_url(url: &str, options: CompileOptions) -> Result<String, JwksUrlError> {
    let parsed = url::Url::parse(url)?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(JwksUrlError::Credentials);
    }
    let loopback = match parsed.host().ok_or(JwksUrlError::NoHost)? {
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        url::Host::Ipv4(ip) => is_loopback_or_refused(IpAddr::V4(ip))?,
        url::Host::Ipv6(ip) => is_loopback_or_refused(IpAddr::V6(ip))?,
    };
    match parsed.scheme() {
        "https" | "http" if loopback && !options.allow_loopback_jwks => Err(JwksUrlError::Loopback),
        "https" | "http" if loopback => Ok(parsed.into()),
        "https" => Ok(parsed.into()),
        _ => Err(JwksUrlError::NotHttps),
    }
}

/// `Ok(true)` for a loopback address; an error for any other address that is not public
/// ([`address::classify`], the rule the gateway's resolver applies to resolved addresses).
fn is_loopback_or_refused(ip: IpAddr) -> Result<bool, JwksUrlError> {
    match address::classify(ip) {
        address::AddressClass::Public => Ok(false),
        address::AddressClass::Loopback => Ok(true),
        address::AddressClass::NonPublic => Err(JwksUrlError::PrivateAddress),
    }
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
