//! JWKS documents: fetching, parsing and caching them per URL (see the [module docs](super)).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use policy_store::jwt::address;
use policy_store::jwt::keys::{self, KeyError, KeyType, MAX_KID_BYTES, PublicKey};
use policy_store::jwt::{CompileOptions, keys::algorithm_from_jose};
use serde_json::{Map, Value};

use super::resolver::{CheckedResolver, Lookup, is_non_public_host, literal_ip};

/// The most keys kept from one JWKS document (the first usable ones).
pub const MAX_JWKS_KEYS: usize = 64;

/// base64url that tolerates (but does not need) padding, for JWKS members.
const B64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

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
    /// Accept JWKS URLs on loopback hosts (`stsgate dev`, tests). Default off. The store must
    /// check settings with the same value ([`JwksConfig::compile_options`]). Every fetch also
    /// checks the addresses it connects to ([`policy_store::jwt::address`]): private,
    /// link-local, metadata and other non-public addresses never, loopback only with this.
    pub allow_loopback: bool,
}

impl Default for JwksConfig {
    fn default() -> Self {
        Self {
            refresh_cooldown: Duration::from_secs(30),
            ttl: Duration::from_secs(600),
            fetch_timeout: Duration::from_secs(5),
            max_body: 256 * 1024,
            allow_loopback: false,
        }
    }
}

impl JwksConfig {
    /// The options apps' JWT settings are compiled with.
    pub fn compile_options(&self) -> CompileOptions {
        CompileOptions {
            allow_loopback_jwks: self.allow_loopback,
        }
    }
}

/// Why a JWKS could not be fetched. The URL and the body stay out of it; the transport
/// error's details are logged where the fetch fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksFetchError {
    #[error("no keys fetched yet")]
    NotFetched,
    #[error("the request timed out")]
    Timeout,
    #[error("could not connect")]
    Connect,
    /// The URL's address, or every address its host resolved to, is one a fetch may not reach.
    #[error(
        "the host is at a private, loopback, link-local or other non-public address, which is \
         never fetched from (loopback only with allow_loopback_jwks)"
    )]
    NonPublicAddress,
    #[error("the request failed")]
    Request,
    /// Anything but 200, redirects included (they are never followed).
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("the response is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the response is not JSON")]
    NotJson,
    #[error("the response has no keys array")]
    NoKeysArray,
    #[error("the JWKS has no usable signing keys")]
    NoUsableKeys,
}

/// The HTTP client for JWKS fetches could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the JWKS HTTP client")]
pub struct JwtVerifierInitError(#[source] reqwest::Error);

/// Why one JWK was skipped (logged, never returned).
#[derive(Debug, thiserror::Error)]
enum JwkError {
    #[error("not an object")]
    NotAnObject,
    #[error("bad kid")]
    BadKid,
    #[error("bad alg")]
    BadAlg,
    #[error("missing member {0}")]
    MissingMember(&'static str),
    #[error("member {0} is not base64url")]
    NotBase64url(&'static str),
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn b64url_member(jwk: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, JwkError> {
    let value = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or(JwkError::MissingMember(name))?;
    B64URL_LENIENT
        .decode(value)
        .map_err(|_| JwkError::NotBase64url(name))
}

/// One JWK. `Ok(None)` means "not a signature verification key we use" (skipped quietly).
fn parse_jwk(jwk: &Map<String, Value>) -> Result<Option<PublicKey>, JwkError> {
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
        Some(_) => return Err(JwkError::BadKid),
    };
    let only_alg = match jwk.get("alg") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => match algorithm_from_jose(name) {
            Some(alg) => Some(alg),
            None => return Ok(None),
        },
        Some(_) => return Err(JwkError::BadAlg),
    };
    let (key_type, key) = match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => {
            let n = b64url_member(jwk, "n")?;
            let e = b64url_member(jwk, "e")?;
            (KeyType::Rsa, keys::rsa_key(&n, &e)?)
        }
        Some("EC") => {
            let key_type = match jwk.get("crv").and_then(Value::as_str) {
                Some("P-256") => KeyType::P256,
                Some("P-384") => KeyType::P384,
                _ => return Ok(None),
            };
            let x = b64url_member(jwk, "x")?;
            let y = b64url_member(jwk, "y")?;
            (key_type, keys::ec_key(key_type, &x, &y)?)
        }
        Some("OKP") => {
            if jwk.get("crv").and_then(Value::as_str) != Some("Ed25519") {
                return Ok(None);
            }
            let x = b64url_member(jwk, "x")?;
            (KeyType::Ed25519, keys::ed25519_key(&x)?)
        }
        // `oct` (symmetric) keys are never taken from a JWKS; others are unsupported.
        _ => return Ok(None),
    };
    Ok(Some(PublicKey::new(kid, key_type, only_alg, key)?))
}

/// A JWKS document's usable keys. An empty result is an error (the stale keys stay in use).
fn parse_jwks(body: &[u8]) -> Result<Vec<PublicKey>, JwksFetchError> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| JwksFetchError::NotJson)?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JwksFetchError::NoKeysArray)?;
    let mut keys = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let parsed = match entry.as_object() {
            Some(jwk) => parse_jwk(jwk),
            None => Err(JwkError::NotAnObject),
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
            Err(reason) => tracing::warn!(index, %reason, "JWKS key skipped"),
        }
    }
    if keys.is_empty() {
        return Err(JwksFetchError::NoUsableKeys);
    }
    Ok(keys)
}

/// The keys of one successful fetch.
pub(super) struct JwksSnapshot {
    pub(super) keys: Vec<PublicKey>,
    fetched_at: Instant,
}

/// Why a fetch is wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FetchReason {
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
    last_error: Mutex<Option<JwksFetchError>>,
    /// Completed fetch attempts; lets a waiter see that someone else fetched meanwhile.
    generation: AtomicU64,
    /// Held for the duration of a fetch: concurrent misses share one.
    fetch_lock: tokio::sync::Mutex<()>,
}

fn set<T>(slot: &Mutex<T>, value: T) {
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = value;
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

    fn unavailable(&self) -> JwksFetchError {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or(JwksFetchError::NotFetched)
    }
}

/// What [`JwksCache::current`] found.
pub(super) struct Current {
    pub(super) snapshot: Arc<JwksSnapshot>,
    /// The generation the snapshot belongs to, for a later unknown-kid refetch.
    pub(super) generation: u64,
    /// A fetch was attempted while this request waited (so refetching now is pointless).
    pub(super) just_fetched: bool,
}

/// The one outbound HTTP client for JWKS and the keys it fetched, per URL.
pub(super) struct JwksCache {
    client: reqwest::Client,
    config: JwksConfig,
    states: moka::future::Cache<String, Arc<JwksState>>,
}

impl fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksCache")
            .field("config", &self.config)
            .field("jwks_urls", &self.states.entry_count())
            .finish()
    }
}

impl JwksCache {
    /// Builds the shared client: no redirects, no proxy, only checked addresses
    /// ([`CheckedResolver`]), `fetch_timeout`, a User-Agent.
    pub(super) fn new(config: JwksConfig) -> Result<Self, JwtVerifierInitError> {
        Self::with_lookup(config, Lookup::System)
    }

    fn with_lookup(config: JwksConfig, lookup: Lookup) -> Result<Self, JwtVerifierInitError> {
        sts_core::install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(config.fetch_timeout)
            .timeout(config.fetch_timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect on our behalf to whatever the name resolves to there.
            .no_proxy()
            .dns_resolver(CheckedResolver {
                lookup,
                allow_loopback: config.allow_loopback,
            })
            .user_agent(concat!("stsgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| JwtVerifierInitError(e.without_url()))?;
        let states = moka::future::Cache::builder()
            .max_capacity(10_000)
            .time_to_idle(Duration::from_secs(24 * 3600))
            .build();
        Ok(Self {
            client,
            config,
            states,
        })
    }

    async fn state(&self, url: &str) -> Arc<JwksState> {
        self.states
            .get_with_by_ref(url, async { Arc::new(JwksState::default()) })
            .await
    }

    /// The keys to use now: the cached ones while fresh; else a refresh; else stale ones.
    pub(super) async fn current(self: &Arc<Self>, url: &str) -> Result<Current, JwksFetchError> {
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
    pub(super) async fn refresh(
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
                set(&state.last_kid_refetch, Some(Instant::now()));
            }
            let host = reqwest::Url::parse(&url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default();
            match self.fetch(&url, &host).await {
                Ok(keys) => {
                    tracing::info!(jwks_host = %host, keys = keys.len(), ?reason, "JWKS fetched");
                    *state
                        .snapshot
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(JwksSnapshot {
                        keys,
                        fetched_at: Instant::now(),
                    }));
                    set(&state.last_error, None);
                    set(&state.last_failure, None);
                }
                Err(error) => {
                    tracing::warn!(
                        jwks_host = %host,
                        %error,
                        ?reason,
                        stale_keys = state.snapshot().is_some(),
                        "JWKS fetch failed"
                    );
                    set(&state.last_error, Some(error));
                    set(&state.last_failure, Some(Instant::now()));
                }
            }
            state.generation.fetch_add(1, Ordering::AcqRel);
            state.snapshot()
        });
        task.await.ok().flatten()
    }

    async fn fetch(&self, url: &str, host: &str) -> Result<Vec<PublicKey>, JwksFetchError> {
        let allow_loopback = self.config.allow_loopback;
        // An address in the URL is connected to without a lookup: check it here.
        if let Some(ip) = literal_ip(url)
            && !address::fetch_allowed(ip, allow_loopback)
        {
            tracing::warn!(jwks_host = %host, allow_loopback, "JWKS URL names a non-public address; not fetched");
            return Err(JwksFetchError::NonPublicAddress);
        }
        let transport = |e: reqwest::Error| {
            let e = e.without_url();
            if is_non_public_host(&e) {
                tracing::warn!(jwks_host = %host, allow_loopback, "JWKS host resolves only to non-public addresses; not fetched");
                return JwksFetchError::NonPublicAddress;
            }
            tracing::warn!(jwks_host = %host, error = ?e, "JWKS request failed");
            if e.is_timeout() {
                JwksFetchError::Timeout
            } else if e.is_connect() {
                JwksFetchError::Connect
            } else {
                JwksFetchError::Request
            }
        };
        let mut response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(JwksFetchError::Status(status.as_u16()));
        }
        let max = self.config.max_body;
        if response
            .content_length()
            .is_some_and(|len| len > max as u64)
        {
            return Err(JwksFetchError::TooLarge(max));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > max {
                return Err(JwksFetchError::TooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// What the code under test logged, as plain text.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        /// Captures this thread's log lines (the tests run on a current-thread runtime, so
        /// the fetch task runs here too) until the guard is dropped.
        fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
            let logs = Logs::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish();
            (logs, tracing::subscriber::set_default(subscriber))
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    /// An HTTP server on 127.0.0.1 that answers every request with an empty key set, and
    /// counts the connections it accepted.
    async fn empty_jwks_server() -> (u16, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let body = r#"{"keys":[]}"#;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        (port, accepted)
    }

    fn cache(allow_loopback: bool, table: &[(&str, &[&str])]) -> Arc<JwksCache> {
        let table = table
            .iter()
            .map(|(name, ips)| {
                let ips = ips.iter().map(|ip| ip.parse().unwrap()).collect();
                ((*name).to_owned(), ips)
            })
            .collect();
        let config = JwksConfig {
            allow_loopback,
            fetch_timeout: Duration::from_secs(5),
            ..JwksConfig::default()
        };
        Arc::new(JwksCache::with_lookup(config, Lookup::Fixed(Arc::new(table))).unwrap())
    }

    /// Issue 8: names that resolve to private, metadata, link-local, unique-local, CGNAT or
    /// (without the setting) loopback addresses are refused after the lookup, with a log line
    /// naming the addresses, and nothing is connected to.
    #[tokio::test]
    async fn names_resolving_to_non_public_addresses_are_never_fetched() {
        let (port, accepted) = empty_jwks_server().await;
        let (logs, _guard) = Logs::capture();
        let table: &[(&str, &[&str])] = &[
            ("private.test", &["10.0.0.1", "192.168.1.10"]),
            ("metadata.test", &["169.254.169.254"]),
            ("v6.test", &["fd00::1", "fe80::1", "::ffff:172.16.0.1"]),
            ("cgnat.test", &["100.64.0.1"]),
            ("unspecified.test", &["0.0.0.0", "::"]),
            ("rebind.test", &["127.0.0.1"]),
        ];
        let jwks = cache(false, table);
        for (name, ips) in table {
            let url = format!("http://{name}:{port}/jwks.json");
            assert_eq!(
                jwks.fetch(&url, name).await.unwrap_err(),
                JwksFetchError::NonPublicAddress,
                "{name}"
            );
            let text = logs.text();
            for ip in *ips {
                assert!(text.contains(ip), "{ip} missing from the log:\n{text}");
            }
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
        let text = logs.text();
        assert!(
            text.contains("JWKS host resolves only to non-public addresses; not fetched"),
            "{text}"
        );

        // The same name with loopback allowed (`stsgate dev`) is fetched.
        let jwks = cache(true, table);
        let url = format!("http://rebind.test:{port}/jwks.json");
        assert_eq!(
            jwks.fetch(&url, "rebind.test").await.unwrap_err(),
            JwksFetchError::NoUsableKeys,
            "reached the server"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// reqwest connects to the addresses the resolver handed over and no others: the table's
    /// name exists nowhere else, and its private address is dropped before connecting.
    #[tokio::test]
    async fn only_the_checked_addresses_are_connected_to() {
        let (port, accepted) = empty_jwks_server().await;
        let (logs, _guard) = Logs::capture();
        let jwks = cache(true, &[("idp.test", &["10.1.2.3", "127.0.0.1"])]);
        let url = format!("http://idp.test:{port}/jwks.json");
        assert_eq!(
            jwks.fetch(&url, "idp.test").await.unwrap_err(),
            JwksFetchError::NoUsableKeys
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        let text = logs.text();
        assert!(
            text.contains("non-public addresses; they are never fetched from")
                && text.contains("10.1.2.3"),
            "{text}"
        );
    }

    /// Addresses written in the URL skip the resolver, so the fetch checks them itself.
    #[tokio::test]
    async fn literal_addresses_are_checked_before_connecting() {
        let (port, accepted) = empty_jwks_server().await;
        let jwks = cache(false, &[]);
        for url in [
            format!("http://127.0.0.1:{port}/jwks.json"),
            format!("http://[::ffff:127.0.0.1]:{port}/jwks.json"),
            "http://169.254.169.254/latest/meta-data".to_owned(),
            "https://[fd00::1]/jwks".to_owned(),
            "https://10.0.0.1/jwks".to_owned(),
        ] {
            assert_eq!(
                jwks.fetch(&url, "literal").await.unwrap_err(),
                JwksFetchError::NonPublicAddress,
                "{url}"
            );
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
        let url = format!("http://127.0.0.1:{port}/jwks.json");
        assert_eq!(
            cache(true, &[]).fetch(&url, "literal").await.unwrap_err(),
            JwksFetchError::NoUsableKeys
        );
    }

    /// A refused or unreachable JWKS leaves the cache empty with the reason, logged once per
    /// attempt with the host (the verifier turns it into `JwksUnavailable`).
    #[tokio::test]
    async fn failed_fetches_are_logged_with_their_reason() {
        let (logs, _guard) = Logs::capture();
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let jwks = cache(
            true,
            &[
                ("down.test", &["127.0.0.1"]),
                ("inside.test", &["10.9.9.9"]),
            ],
        );
        let down = format!("http://down.test:{port}/jwks.json");
        assert_eq!(
            jwks.current(&down).await.err(),
            Some(JwksFetchError::Connect)
        );
        assert_eq!(
            jwks.current("https://inside.test/jwks.json").await.err(),
            Some(JwksFetchError::NonPublicAddress)
        );
        let text = logs.text();
        let failures: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("JWKS fetch failed"))
            .collect();
        assert_eq!(failures.len(), 2, "{text}");
        assert!(
            failures[0].contains("jwks_host=down.test")
                && failures[0].contains("could not connect"),
            "{text}"
        );
        assert!(
            failures[1].contains("jwks_host=inside.test")
                && failures[1].contains("non-public address"),
            "{text}"
        );
    }

    #[test]
    fn jwks_skips_unusable_keys() {
        let body = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "key_ops": ["encrypt"], "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "OKP", "crv": "X25519", "x": "AA"},
            {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},
            {"kty": "OKP", "crv": "Ed25519", "kid": 7, "x": "AAAA"},
            "garbage"
        ]});
        assert_eq!(
            parse_jwks(body.to_string().as_bytes()).err(),
            Some(JwksFetchError::NoUsableKeys)
        );
        assert_eq!(parse_jwks(b"<html>").err(), Some(JwksFetchError::NotJson));
        assert_eq!(parse_jwks(b"{}").err(), Some(JwksFetchError::NoKeysArray));
    }
}
