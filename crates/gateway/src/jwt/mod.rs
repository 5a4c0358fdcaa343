//! JWT verification for the public API (DESIGN.md §4, STYLE.md §8).
//!
//! * [`CompiledJwt`] (from `policy_store::jwt`): one app's settings checked and parsed once.
//!   The store runs the same compile step when settings are saved, so what it accepts the
//!   gateway can use. Apps are compiled with [`JwksConfig::compile_options`].
//! * [`JwtVerifier`] (`verify`): shared by every app. It owns the JWKS cache (`jwks`) and
//!   verifies a token against a [`CompiledJwt`].
//!
//! # Security rules
//!
//! * The algorithm is never taken from the token. The header's `alg` must be in the app's
//!   allow-list (`none` can never be listed) and the signature is checked with a `Validation`
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
//!   is enough). Both are mandatory for apps whose keys come from public keys or a JWKS URL;
//!   an HS-only app without audiences neither requires nor checks `aud`.
//! * Tokens longer than [`MAX_TOKEN_BYTES`] are refused before any parsing.
//! * Errors never carry the token or key material; [`JwtError::code`] is stable for logs/audit.
//!
//! # Static public keys and `kid`
//!
//! Each entry of an app's `public_keys` is one PEM public key, optionally preceded by a line
//! `kid: <id>` (parsed by `policy_store::jwt::keys`).
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
//! an unknown `kid`. The JWKS URL must be `https`; loopback hosts only with
//! [`JwksConfig::allow_loopback`].
//!
//! Where a fetch connects is checked at every fetch, not only when settings are saved: the
//! client's resolver drops every resolved address that is private, link-local (the cloud
//! metadata address included), unique-local or otherwise non-public, and loopback unless
//! allowed, and reqwest connects only to the addresses it kept (so a DNS answer cannot change
//! between the check and the connection). An address written in the URL is checked the same
//! way. No proxy is used and redirects are never followed. A refused host fails the fetch with
//! [`JwksFetchError::NonPublicAddress`] (and a log line naming the addresses).

mod jwks;
mod resolver;
mod verify;

pub use jwks::{JwksConfig, JwksFetchError, JwtVerifierInitError, MAX_JWKS_KEYS};
pub use policy_store::jwt::{
    CompileOptions, CompiledJwt, JwtConfigError, JwtConfigErrors, MAX_LEEWAY_SECONDS,
    MAX_STATIC_KEYS, MIN_HS_SECRET_BYTES,
};
pub use verify::{
    JwtError, JwtVerifier, MAX_TOKEN_BYTES, Observed, VerifiedToken, unverified_claim,
};
