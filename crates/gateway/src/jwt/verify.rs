//! Verifying a token against an app's [`CompiledJwt`] (see the [module docs](super)).

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use policy_store::jwt::CompiledJwt;
use policy_store::jwt::keys::{MAX_KID_BYTES, PublicKey, algorithm_from_jose, is_hmac};
use serde_json::{Map, Value};

use super::jwks::{FetchReason, JwksCache, JwksConfig, JwksFetchError, JwtVerifierInitError};

/// Tokens longer than this are refused as [`JwtError::Malformed`] before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

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
    JwksUnavailable(JwksFetchError),
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

/// What a token says about itself (`alg`, `kid` from the header; `iss`, `aud` from the
/// payload), read WITHOUT verification, for the issuance row of a refused token: an operator
/// sees which issuer or audience arrived. Only these four; never the token, a signature or
/// another claim. Each value is cut to [`Observed::MAX_CHARS`] characters and cleaned of
/// control characters and quotes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub aud: Option<String>,
    pub iss: Option<String>,
    pub alg: Option<String>,
    pub kid: Option<String>,
}

/// A JWT part (header or payload) as a JSON object, unverified.
fn decode_part(part: Option<&str>) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part?).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The string value of `claim` in `token`'s payload, read WITHOUT verification: never an
/// identity, only a hint (the authentication cool-down lets a subject through that has
/// already succeeded from the same address; the token is verified all the same).
pub fn unverified_claim(token: &str, claim: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    match decode_part(token.split('.').nth(1))?.remove(claim)? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

impl Observed {
    pub const MAX_CHARS: usize = 64;

    /// Reads what it can; a part that cannot be decoded is left out.
    pub fn of(token: &str) -> Self {
        if token.len() > MAX_TOKEN_BYTES {
            return Self::default();
        }
        let mut parts = token.split('.');
        let header = decode_part(parts.next()).unwrap_or_default();
        let payload = decode_part(parts.next()).unwrap_or_default();
        let text = |v: Option<&Value>| -> Option<String> {
            let v = match v? {
                Value::String(s) => s.clone(),
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            Some(Self::clean(&v))
        };
        Self {
            aud: text(payload.get("aud")),
            iss: text(payload.get("iss")),
            alg: text(header.get("alg")),
            kid: text(header.get("kid")),
        }
    }

    fn clean(v: &str) -> String {
        let mut out: String = v
            .chars()
            .filter(|c| !c.is_control())
            .map(|c| if c == '"' || c == '\\' { '\'' } else { c })
            .take(Self::MAX_CHARS)
            .collect();
        if v.chars().filter(|c| !c.is_control()).count() > Self::MAX_CHARS {
            out.push('…');
        }
        out
    }

    /// `(name, value)` pairs for display, in the order of [`Observed`]'s `Display`.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("aud", &self.aud),
            ("iss", &self.iss),
            ("alg", &self.alg),
            ("kid", &self.kid),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// ` aud="x" iss="y" alg=RS256 kid="k1"` (only what the token carries; empty if nothing).
impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in self.pairs() {
            if k == "alg" {
                write!(f, " {k}={v}")?;
            } else {
                write!(f, " {k}=\"{v}\"")?;
            }
        }
        Ok(())
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
        if iat > (now + jwt.leeway()) as f64 {
            return Err(JwtError::NotYetValid);
        }
    }
    if jwt.issuer().is_some() && !matches!(claims.get("iss"), Some(Value::String(_))) {
        return Err(JwtError::WrongIssuer);
    }
    let subject = match claims.get(jwt.user_claim()) {
        // An empty string is a present claim; the policy renderer refuses it with 403.
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        _ => return Err(JwtError::MissingUserClaim(jwt.user_claim().to_owned())),
    };
    Ok(VerifiedToken {
        subject,
        claims,
        algorithm,
        key_id,
    })
}

/// The keys of `keys` with this `kid` that may verify `alg`.
fn with_kid<'a>(keys: &'a [PublicKey], kid: &str, alg: Algorithm) -> Vec<&'a DecodingKey> {
    keys.iter()
        .filter(|k| k.kid() == Some(kid) && k.usable_for(alg))
        .map(PublicKey::decoding_key)
        .collect()
}

/// Verifies tokens for every app; holds the shared HTTP client and JWKS cache. Cheap to clone.
#[derive(Clone)]
pub struct JwtVerifier {
    jwks: Arc<JwksCache>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("jwks", &self.jwks)
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
            Err(e) => panic!("{e}: {:?}", std::error::Error::source(&e)),
        }
    }

    /// [`JwtVerifier::new`] without the panic.
    pub fn try_new(config: JwksConfig) -> Result<Self, JwtVerifierInitError> {
        Ok(Self {
            jwks: Arc::new(JwksCache::new(config)?),
        })
    }

    /// Verifies `token` for the app whose settings are `jwt`.
    pub async fn verify(&self, jwt: &CompiledJwt, token: &str) -> Result<VerifiedToken, JwtError> {
        let header = parse_header(token)?;
        let not_allowed = || JwtError::AlgorithmNotAllowed(sanitize_alg(&header.alg));
        let alg = algorithm_from_jose(&header.alg)
            .filter(|alg| jwt.algorithms().contains(alg))
            .ok_or_else(not_allowed)?;
        let validation = jwt.validation(alg).ok_or_else(not_allowed)?;
        let claims = if is_hmac(alg) {
            try_keys(token, jwt.hs_key(), validation)?
        } else {
            self.verify_asymmetric(jwt, token, alg, header.kid.as_deref(), validation)
                .await?
        };
        finish(jwt, claims, alg, header.kid)
    }

    async fn verify_asymmetric(
        &self,
        jwt: &CompiledJwt,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
        validation: &Validation,
    ) -> Result<Map<String, Value>, JwtError> {
        let statics = || jwt.static_keys().iter().filter(|k| k.usable_for(alg));
        let Some(kid) = kid else {
            // No kid: every key of the right type, static then JWKS.
            let mut candidates: Vec<&DecodingKey> =
                statics().map(PublicKey::decoding_key).collect();
            let snapshot = match jwt.jwks_url() {
                None => None,
                Some(url) => match self.jwks.current(url).await {
                    Ok(current) => Some(current.snapshot),
                    Err(e) if candidates.is_empty() => return Err(JwtError::JwksUnavailable(e)),
                    Err(_) => None,
                },
            };
            if let Some(snapshot) = &snapshot {
                candidates.extend(
                    snapshot
                        .keys
                        .iter()
                        .filter(|k| k.usable_for(alg))
                        .map(PublicKey::decoding_key),
                );
            }
            return try_keys(token, candidates, validation);
        };

        let exact = with_kid(jwt.static_keys(), kid, alg);
        if !exact.is_empty() {
            return try_keys(token, exact, validation);
        }
        let wildcards: Vec<&DecodingKey> = statics()
            .filter(|k| k.kid().is_none())
            .map(PublicKey::decoding_key)
            .collect();
        let Some(url) = jwt.jwks_url() else {
            return try_keys(token, wildcards, validation);
        };

        let cached = self.jwks.current(url).await;
        if let Ok(current) = &cached {
            let keys = with_kid(&current.snapshot.keys, kid, alg);
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
            Err(e) => return Err(JwtError::JwksUnavailable(e)),
        };
        let refreshed = self
            .jwks
            .clone()
            .refresh(url, current.generation, FetchReason::UnknownKid)
            .await;
        let refreshed = match refreshed {
            Some(snapshot) if !Arc::ptr_eq(&snapshot, &current.snapshot) => snapshot,
            _ => return Err(no_match),
        };
        let keys = with_kid(&refreshed.keys, kid, alg);
        if keys.is_empty() {
            return Err(no_match);
        }
        try_keys(token, keys, validation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use policy_store::AppAuth;
    use policy_store::jwt::CompileOptions;
    use secrecy::SecretString;
    use serde_json::json;

    /// STYLE.md §10: jsonwebtoken with no (or two) crypto backends compiles and panics at the
    /// first use. This signs and verifies one token through the real code path.
    #[tokio::test]
    async fn crypto_backend_signs_and_verifies_one_token() {
        let secret = "0123456789abcdef0123456789abcdef";
        let settings = AppAuth {
            app_id: 1,
            issuer: None,
            audiences: Vec::new(),
            algorithms: vec!["HS256".into()],
            hs_secret: Some(SecretString::from(secret)),
            public_keys: Vec::new(),
            jwks_url: None,
            user_claim: "sub".into(),
            leeway_seconds: 60,
        };
        let jwt = CompiledJwt::compile(&settings, CompileOptions::default()).unwrap();
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
    fn observed_claims_are_bounded_cleaned_and_only_these_four() {
        let b64 = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let token = format!(
            "{}.{}.c2lnbmF0dXJl",
            b64(json!({"alg": "RS256", "kid": "k1\n\"x"})),
            b64(json!({"iss": "https://idp", "aud": ["a", "b"], "sub": "alice", "email": "a@x"}))
        );
        let seen = Observed::of(&token);
        assert_eq!(
            seen.to_string(),
            " aud=\"a,b\" iss=\"https://idp\" alg=RS256 kid=\"k1'x\""
        );
        let shown = seen.to_string();
        for never in ["alice", "a@x", "c2lnbmF0dXJl"] {
            assert!(!shown.contains(never), "{never} in {shown}");
        }
        let long = format!(
            "{}.{}.x",
            b64(json!({"alg": "HS256"})),
            b64(json!({"aud": "a".repeat(500)}))
        );
        let aud = Observed::of(&long).aud.unwrap();
        assert_eq!(aud.chars().count(), Observed::MAX_CHARS + 1);
        assert!(aud.ends_with('…'));
        assert_eq!(Observed::of("garbage").to_string(), "");
    }

    #[test]
    fn alg_is_sanitised() {
        assert_eq!(sanitize_alg("none"), "none");
        assert_eq!(sanitize_alg("HS256"), "HS256");
        assert_eq!(sanitize_alg("a.b"), "<invalid>");
        assert_eq!(sanitize_alg(&"A".repeat(17)), "<invalid>");
    }
}
