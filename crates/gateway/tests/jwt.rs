//! JWT verification: every algorithm family, every refusal DESIGN.md §4 names, and the JWKS cache
//! against a tiny in-test HTTP server.
//!
//! Key pairs in `tests/fixtures/` were generated with the `openssl` CLI (see its README).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gateway::jwt::{
    CompiledJwt, JwksConfig, JwtConfigError, JwtError, JwtSettings, JwtVerifier, MAX_TOKEN_BYTES,
};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const HS_SECRET: &str = "test-hs-secret-0123456789abcdef-0123456789";
const OTHER_HS_SECRET: &str = "another-hs-secret-0123456789abcdef-012345";

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(fixture("rsa_private.pem").as_bytes()).unwrap()
}
fn rsa2() -> EncodingKey {
    EncodingKey::from_rsa_pem(fixture("rsa2_private.pem").as_bytes()).unwrap()
}
fn ec256() -> EncodingKey {
    EncodingKey::from_ec_pem(fixture("ec256_private.pem").as_bytes()).unwrap()
}
fn ec384() -> EncodingKey {
    EncodingKey::from_ec_pem(fixture("ec384_private.pem").as_bytes()).unwrap()
}
fn ed25519() -> EncodingKey {
    EncodingKey::from_ed_pem(fixture("ed25519_private.pem").as_bytes()).unwrap()
}
fn hs(secret: &str) -> EncodingKey {
    EncodingKey::from_secret(secret.as_bytes()).unwrap()
}

fn claims() -> Value {
    json!({"sub": "alice", "exp": now() + 300, "iat": now()})
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let header = Header {
        kid: kid.map(str::to_owned),
        ..Header::new(alg)
    };
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn b64(json: &Value) -> String {
    URL_SAFE_NO_PAD.encode(json.to_string())
}

fn settings(algorithms: &[&str]) -> JwtSettings {
    JwtSettings {
        algorithms: algorithms.iter().map(|a| (*a).to_owned()).collect(),
        ..JwtSettings::default()
    }
}

fn hs_app(algorithms: &[&str]) -> JwtSettings {
    JwtSettings {
        hs_secret: Some(SecretString::from(HS_SECRET)),
        ..settings(algorithms)
    }
}

fn keyed_app(algorithms: &[&str], keys: &[&str]) -> JwtSettings {
    JwtSettings {
        public_keys: keys.iter().map(|k| fixture(k)).collect(),
        ..settings(algorithms)
    }
}

fn compile(settings: &JwtSettings) -> CompiledJwt {
    CompiledJwt::compile(settings).unwrap()
}

fn verifier() -> JwtVerifier {
    JwtVerifier::new(JwksConfig::default())
}

async fn verify(settings: &JwtSettings, token: &str) -> Result<String, JwtError> {
    verifier()
        .verify(&compile(settings), token)
        .await
        .map(|v| v.subject)
}

/// Flips one base64url character in the middle of segment `index` (0 header, 1 payload, 2 sig).
fn tamper(token: &str, index: usize) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let seg = &mut parts[index];
    let mid = seg.len() / 2;
    let c = seg.as_bytes()[mid];
    let replacement = if c == b'A' { "B" } else { "A" };
    seg.replace_range(mid..=mid, replacement);
    parts.join(".")
}

// ------------------------------------------------------------------------------------------------
// A tiny JWKS server that counts fetches
// ------------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Reply {
    status: u16,
    body: String,
    location: Option<String>,
}

struct JwksServer {
    url: String,
    fetches: Arc<AtomicUsize>,
    reply: Arc<Mutex<Reply>>,
    task: JoinHandle<()>,
}

impl JwksServer {
    async fn start(jwks: Value, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let fetches = Arc::new(AtomicUsize::new(0));
        let reply = Arc::new(Mutex::new(Reply {
            status: 200,
            body: jwks.to_string(),
            location: None,
        }));
        let (count, current) = (fetches.clone(), reply.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (count, current) = (count.clone(), current.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    let reply = current.lock().unwrap().clone();
                    let location = reply
                        .location
                        .map(|l| format!("Location: {l}\r\n"))
                        .unwrap_or_default();
                    let response = format!(
                        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n{location}\r\n{}",
                        reply.status,
                        reply.body.len(),
                        reply.body
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self {
            url,
            fetches,
            reply,
            task,
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn serve(&self, jwks: Value) {
        self.reply.lock().unwrap().body = jwks.to_string();
    }

    fn reply_with(&self, status: u16, location: Option<String>) {
        let mut reply = self.reply.lock().unwrap();
        reply.status = status;
        reply.location = location;
    }

    /// Stops listening: later connections are refused.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(key, alg).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    jwk
}

fn jwks(keys: &[Value]) -> Value {
    json!({ "keys": keys })
}

fn jwks_app(algorithms: &[&str], url: &str) -> JwtSettings {
    JwtSettings {
        jwks_url: Some(url.to_owned()),
        ..settings(algorithms)
    }
}

fn jwks_verifier(cooldown: Duration) -> JwtVerifier {
    JwtVerifier::new(JwksConfig {
        refresh_cooldown: cooldown,
        ..JwksConfig::default()
    })
}

// ------------------------------------------------------------------------------------------------
// Every algorithm family verifies
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn hs256_hs384_hs512_verify() {
    for (name, alg) in [
        ("HS256", Algorithm::HS256),
        ("HS384", Algorithm::HS384),
        ("HS512", Algorithm::HS512),
    ] {
        let token = sign(alg, &hs(HS_SECRET), None, &claims());
        assert_eq!(
            verify(&hs_app(&[name]), &token).await,
            Ok("alice".into()),
            "{name}"
        );
    }
}

#[tokio::test]
async fn rs_and_ps_algorithms_verify() {
    for (name, alg) in [
        ("RS256", Algorithm::RS256),
        ("RS384", Algorithm::RS384),
        ("RS512", Algorithm::RS512),
        ("PS256", Algorithm::PS256),
        ("PS384", Algorithm::PS384),
        ("PS512", Algorithm::PS512),
    ] {
        let app = keyed_app(&[name], &["rsa_public.pem"]);
        let token = sign(alg, &rsa(), None, &claims());
        assert_eq!(verify(&app, &token).await, Ok("alice".into()), "{name}");
    }
}

#[tokio::test]
async fn pkcs1_rsa_public_key_is_accepted() {
    let app = keyed_app(&["RS256"], &["rsa_public_pkcs1.pem"]);
    let token = sign(Algorithm::RS256, &rsa(), None, &claims());
    assert_eq!(verify(&app, &token).await, Ok("alice".into()));
}

#[tokio::test]
async fn es256_verifies() {
    let app = keyed_app(&["ES256"], &["ec256_public.pem"]);
    let token = sign(Algorithm::ES256, &ec256(), None, &claims());
    assert_eq!(verify(&app, &token).await, Ok("alice".into()));
}

#[tokio::test]
async fn es384_verifies() {
    let app = keyed_app(&["ES384"], &["ec384_public.pem"]);
    let token = sign(Algorithm::ES384, &ec384(), None, &claims());
    assert_eq!(verify(&app, &token).await, Ok("alice".into()));
}

#[tokio::test]
async fn eddsa_verifies() {
    let app = keyed_app(&["EdDSA"], &["ed25519_public.pem"]);
    let token = sign(Algorithm::EdDSA, &ed25519(), None, &claims());
    assert_eq!(verify(&app, &token).await, Ok("alice".into()));
}

#[tokio::test]
async fn verified_token_carries_claims_algorithm_and_kid() {
    let mut app = keyed_app(&["RS256"], &[]);
    app.public_keys = vec![format!("kid: main\n{}", fixture("rsa_public.pem"))];
    let token = sign(
        Algorithm::RS256,
        &rsa(),
        Some("main"),
        &with(claims(), "tenant", json!("t1")),
    );
    let verified = verifier().verify(&compile(&app), &token).await.unwrap();
    assert_eq!(verified.subject, "alice");
    assert_eq!(verified.claims["tenant"], json!("t1"));
    assert_eq!(verified.algorithm, Algorithm::RS256);
    assert_eq!(verified.key_id.as_deref(), Some("main"));
}

// ------------------------------------------------------------------------------------------------
// The algorithm never comes from the token
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn alg_none_is_refused() {
    let payload = b64(&claims());
    let app = JwtSettings {
        hs_secret: Some(SecretString::from(HS_SECRET)),
        ..keyed_app(&["HS256", "RS256"], &["rsa_public.pem"])
    };
    for header in [
        "eyJhbGciOiJub25lIn0".to_owned(), // {"alg":"none"}
        b64(&json!({"alg": "None", "typ": "JWT"})),
        b64(&json!({"alg": "NONE"})),
    ] {
        for sig in ["", "c2ln"] {
            let token = format!("{header}.{payload}.{sig}");
            let err = verify(&app, &token).await.unwrap_err();
            assert!(
                matches!(err, JwtError::AlgorithmNotAllowed(ref a) if a.eq_ignore_ascii_case("none")),
                "{err:?}"
            );
            assert_eq!(err.code(), "algorithm_not_allowed");
        }
    }
}

#[test]
fn compile_refuses_none() {
    for name in ["none", "NONE", "None"] {
        let err = CompiledJwt::compile(&hs_app(&["HS256", name])).unwrap_err();
        assert_eq!(err, JwtConfigError::NoneAlgorithm);
        assert!(err.to_string().starts_with("algorithms:"));
    }
}

#[tokio::test]
async fn alg_outside_the_allow_list_is_refused() {
    // RS256 token, ES256-only app.
    let app = keyed_app(&["ES256"], &["ec256_public.pem"]);
    let token = sign(Algorithm::RS256, &rsa(), None, &claims());
    assert_eq!(
        verify(&app, &token).await,
        Err(JwtError::AlgorithmNotAllowed("RS256".into()))
    );
    // HS384 token, HS256-only app (same secret).
    let token = sign(Algorithm::HS384, &hs(HS_SECRET), None, &claims());
    assert_eq!(
        verify(&hs_app(&["HS256"]), &token).await,
        Err(JwtError::AlgorithmNotAllowed("HS384".into()))
    );
    // Case matters in tokens: `rs256` is not RS256.
    let header = b64(&json!({"alg": "rs256"}));
    let token = format!("{header}.{}.c2ln", b64(&claims()));
    let app = keyed_app(&["RS256"], &["rsa_public.pem"]);
    assert_eq!(
        verify(&app, &token).await,
        Err(JwtError::AlgorithmNotAllowed("rs256".into()))
    );
    // A hostile alg value is not echoed.
    let header = b64(&json!({"alg": "<script>alert(1)</script>"}));
    let token = format!("{header}.{}.c2ln", b64(&claims()));
    assert_eq!(
        verify(&app, &token).await,
        Err(JwtError::AlgorithmNotAllowed("<invalid>".into()))
    );
}

/// The classic key-confusion attack: HMAC with the RSA public key PEM as the secret.
#[tokio::test]
async fn hs256_signed_with_the_rsa_public_pem_is_refused() {
    let pem = fixture("rsa_public.pem");
    let forged = sign(Algorithm::HS256, &hs(&pem), None, &claims());

    let rs_only = keyed_app(&["RS256"], &["rsa_public.pem"]);
    assert_eq!(
        verify(&rs_only, &forged).await,
        Err(JwtError::AlgorithmNotAllowed("HS256".into()))
    );

    let both = JwtSettings {
        hs_secret: Some(SecretString::from(OTHER_HS_SECRET)),
        ..keyed_app(&["HS256", "RS256"], &["rsa_public.pem"])
    };
    assert_eq!(verify(&both, &forged).await, Err(JwtError::BadSignature));

    // Also with a kid naming the RSA key.
    let mut with_kid = both.clone();
    with_kid.public_keys = vec![format!("kid: rsa\n{pem}")];
    let forged = sign(Algorithm::HS256, &hs(&pem), Some("rsa"), &claims());
    assert_eq!(
        verify(&with_kid, &forged).await,
        Err(JwtError::BadSignature)
    );

    // The genuine RS256 token still works for the mixed app.
    let genuine = sign(Algorithm::RS256, &rsa(), None, &claims());
    assert_eq!(verify(&both, &genuine).await, Ok("alice".into()));
}

#[tokio::test]
async fn an_hs_secret_is_ignored_unless_hs_is_allowed() {
    // The app stores a secret but allows only RS256: an HS256 token is refused by alg.
    let app = JwtSettings {
        hs_secret: Some(SecretString::from(HS_SECRET)),
        ..keyed_app(&["RS256"], &["rsa_public.pem"])
    };
    let token = sign(Algorithm::HS256, &hs(HS_SECRET), None, &claims());
    assert_eq!(
        verify(&app, &token).await,
        Err(JwtError::AlgorithmNotAllowed("HS256".into()))
    );
}

#[tokio::test]
async fn keys_of_another_type_are_never_used() {
    let app = JwtSettings {
        public_keys: vec![
            format!("kid: k-rsa\n{}", fixture("rsa_public.pem")),
            format!("kid: k-ed\n{}", fixture("ed25519_public.pem")),
            format!("kid: k-256\n{}", fixture("ec256_public.pem")),
            format!("kid: k-384\n{}", fixture("ec384_public.pem")),
        ],
        ..settings(&["RS256", "EdDSA", "ES256", "ES384"])
    };
    // A kid that names a key of another type finds no key.
    let token = sign(Algorithm::EdDSA, &ed25519(), Some("k-rsa"), &claims());
    assert_eq!(verify(&app, &token).await, Err(JwtError::UnknownKey));
    let token = sign(Algorithm::ES256, &ec256(), Some("k-384"), &claims());
    assert_eq!(verify(&app, &token).await, Err(JwtError::UnknownKey));
    let token = sign(Algorithm::ES384, &ec384(), Some("k-256"), &claims());
    assert_eq!(verify(&app, &token).await, Err(JwtError::UnknownKey));
    // With the right kids, all verify.
    for (alg, key, kid) in [
        (Algorithm::RS256, rsa(), "k-rsa"),
        (Algorithm::EdDSA, ed25519(), "k-ed"),
        (Algorithm::ES256, ec256(), "k-256"),
        (Algorithm::ES384, ec384(), "k-384"),
    ] {
        let token = sign(alg, &key, Some(kid), &claims());
        assert_eq!(verify(&app, &token).await, Ok("alice".into()), "{kid}");
    }
}

#[tokio::test]
async fn key_reference_headers_are_ignored() {
    // jku/x5u pointing at an attacker's server, jwk embedding the attacker's key.
    let server = JwksServer::start(
        jwks(&[jwk(&rsa2(), Algorithm::RS256, "evil")]),
        Duration::ZERO,
    )
    .await;
    let app = keyed_app(&["RS256"], &["rsa_public.pem"]);
    let mut header = Header::new(Algorithm::RS256);
    header.jku = Some(server.url.clone());
    header.x5u = Some(server.url.clone());
    header.kid = Some("evil".into());
    header.jwk = Some(Jwk::from_encoding_key(&rsa2(), Algorithm::RS256).unwrap());
    let token = jsonwebtoken::encode(&header, &claims(), &rsa2()).unwrap();
    // The static key is a wildcard (no kid line), so it is tried and fails.
    assert_eq!(verify(&app, &token).await, Err(JwtError::BadSignature));
    assert_eq!(server.fetches(), 0);
    server.stop().await;
}

#[tokio::test]
async fn crit_header_is_refused() {
    let header = b64(&json!({"alg": "HS256", "crit": ["exp"]}));
    let token = format!("{header}.{}.c2ln", b64(&claims()));
    assert_eq!(
        verify(&hs_app(&["HS256"]), &token).await,
        Err(JwtError::Malformed)
    );
}

// ------------------------------------------------------------------------------------------------
// Signatures
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn tampered_payload_is_refused() {
    let rs = keyed_app(&["RS256"], &["rsa_public.pem"]);
    let token = sign(Algorithm::RS256, &rsa(), None, &claims());
    assert_eq!(
        verify(&rs, &tamper(&token, 1)).await,
        Err(JwtError::BadSignature)
    );

    // A re-encoded payload naming someone else.
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(&with(claims(), "sub", json!("admin"))),
        parts[2]
    );
    assert_eq!(verify(&rs, &forged).await, Err(JwtError::BadSignature));

    let token = sign(Algorithm::HS256, &hs(HS_SECRET), None, &claims());
    assert_eq!(
        verify(&hs_app(&["HS256"]), &tamper(&token, 1)).await,
        Err(JwtError::BadSignature)
    );
}

#[tokio::test]
async fn tampered_signature_is_refused() {
    for (app, alg, key) in [
        (hs_app(&["HS256"]), Algorithm::HS256, hs(HS_SECRET)),
        (
            keyed_app(&["RS256"], &["rsa_public.pem"]),
            Algorithm::RS256,
            rsa(),
        ),
        (
            keyed_app(&["PS256"], &["rsa_public.pem"]),
            Algorithm::PS256,
            rsa(),
        ),
        (
            keyed_app(&["ES256"], &["ec256_public.pem"]),
            Algorithm::ES256,
            ec256(),
        ),
        (
            keyed_app(&["ES384"], &["ec384_public.pem"]),
            Algorithm::ES384,
            ec384(),
        ),
        (
            keyed_app(&["EdDSA"], &["ed25519_public.pem"]),
            Algorithm::EdDSA,
            ed25519(),
        ),
    ] {
        let token = sign(alg, &key, None, &claims());
        assert_eq!(
            verify(&app, &tamper(&token, 2)).await,
            Err(JwtError::BadSignature),
            "{alg:?}"
        );
        // An empty signature too.
        let unsigned = token.rsplit_once('.').unwrap().0.to_owned() + ".";
        assert_eq!(
            verify(&app, &unsigned).await,
            Err(JwtError::BadSignature),
            "{alg:?}"
        );
    }
}

#[tokio::test]
async fn a_token_signed_by_another_key_is_refused() {
    let app = keyed_app(&["RS256"], &["rsa_public.pem"]);
    let token = sign(Algorithm::RS256, &rsa2(), None, &claims());
    assert_eq!(verify(&app, &token).await, Err(JwtError::BadSignature));
    let token = sign(Algorithm::HS256, &hs(OTHER_HS_SECRET), None, &claims());
    assert_eq!(
        verify(&hs_app(&["HS256"]), &token).await,
        Err(JwtError::BadSignature)
    );
}

// ------------------------------------------------------------------------------------------------
// Time claims
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn expiry_and_leeway() {
    let app = hs_app(&["HS256"]);
    let key = hs(HS_SECRET);
    let expired = sign(
        Algorithm::HS256,
        &key,
        None,
        &with(claims(), "exp", json!(now() - 120)),
    );
    assert_eq!(verify(&app, &expired).await, Err(JwtError::Expired));

    let within = sign(
        Algorithm::HS256,
        &key,
        None,
        &with(claims(), "exp", json!(now() - 30)),
    );
    assert_eq!(verify(&app, &within).await, Ok("alice".into()));

    let strict = JwtSettings {
        leeway_seconds: 0,
        ..app.clone()
    };
    assert_eq!(verify(&strict, &within).await, Err(JwtError::Expired));
}

#[tokio::test]
async fn exp_is_required_and_numeric() {
    let app = hs_app(&["HS256"]);
    let key = hs(HS_SECRET);
    let token = sign(Algorithm::HS256, &key, None, &without(claims(), "exp"));
    let err = verify(&app, &token).await.unwrap_err();
    assert_eq!(err, JwtError::MissingExpiry);
    assert_eq!(err.code(), "missing_exp");

    // A non-numeric exp is no exp.
    let token = sign(
        Algorithm::HS256,
        &key,
        None,
        &with(claims(), "exp", json!("tomorrow")),
    );
    assert_eq!(verify(&app, &token).await, Err(JwtError::MissingExpiry));
}

#[tokio::test]
async fn nbf_is_honoured() {
    let app = hs_app(&["HS256"]);
    let key = hs(HS_SECRET);
    let future = sign(
        Algorithm::HS256,
        &key,
        None,
        &with(claims(), "nbf", json!(now() + 300)),
    );
    assert_eq!(verify(&app, &future).await, Err(JwtError::NotYetValid));

    let within = sign(
        Algorithm::HS256,
        &key,
        None,
        &with(claims(), "nbf", json!(now() + 30)),
    );
    assert_eq!(verify(&app, &within).await, Ok("alice".into()));

    let past = sign(
        Algorithm::HS256,
        &key,
        None,
        &with(claims(), "nbf", json!(now() - 30)),
    );
    assert_eq!(verify(&app, &past).await, Ok("alice".into()));
}

#[tokio::test]
async fn iat_in_the_future_is_refused() {
    let app = hs_app(&["HS256"]);
    let key = hs(HS_SECRET);
    let future = sign(
        Algorithm::HS256,
        &key,
        None,
        &with(claims(), "iat", json!(now() + 300)),
    );
    assert_eq!(verify(&app, &future).await, Err(JwtError::NotYetValid));

    let within = sign(
        Algorithm::HS256,
        &key,
        None,
        &with(claims(), "iat", json!(now() + 30)),
    );
    assert_eq!(verify(&app, &within).await, Ok("alice".into()));

    let odd = sign(
        Algorithm::HS256,
        &key,
        None,
        &with(claims(), "iat", json!("yesterday")),
    );
    assert_eq!(verify(&app, &odd).await, Err(JwtError::Malformed));

    let absent = sign(Algorithm::HS256, &key, None, &without(claims(), "iat"));
    assert_eq!(verify(&app, &absent).await, Ok("alice".into()));
}

// ------------------------------------------------------------------------------------------------
// Issuer and audience
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn issuer_is_checked_when_configured() {
    let app = JwtSettings {
        issuer: Some("https://idp.example".into()),
        ..hs_app(&["HS256"])
    };
    let key = hs(HS_SECRET);
    let good = sign(
        Algorithm::HS256,
        &key,
        None,
        &with(claims(), "iss", json!("https://idp.example")),
    );
    assert_eq!(verify(&app, &good).await, Ok("alice".into()));

    for iss in [
        json!("https://evil.example"),
        json!(["https://idp.example", "https://evil.example"]),
        json!(42),
    ] {
        let token = sign(
            Algorithm::HS256,
            &key,
            None,
            &with(claims(), "iss", iss.clone()),
        );
        assert_eq!(
            verify(&app, &token).await,
            Err(JwtError::WrongIssuer),
            "{iss}"
        );
    }
    let missing = sign(Algorithm::HS256, &key, None, &claims());
    assert_eq!(verify(&app, &missing).await, Err(JwtError::WrongIssuer));

    // Not configured: any issuer.
    let open = hs_app(&["HS256"]);
    let token = sign(
        Algorithm::HS256,
        &key,
        None,
        &with(claims(), "iss", json!("anyone")),
    );
    assert_eq!(verify(&open, &token).await, Ok("alice".into()));
}

#[tokio::test]
async fn audience_is_checked_when_configured() {
    let app = JwtSettings {
        audiences: vec!["stsgate".into(), "storage".into()],
        ..hs_app(&["HS256"])
    };
    let key = hs(HS_SECRET);
    let token = |aud: Value| sign(Algorithm::HS256, &key, None, &with(claims(), "aud", aud));

    assert_eq!(
        verify(&app, &token(json!("stsgate"))).await,
        Ok("alice".into())
    );
    assert_eq!(
        verify(&app, &token(json!("storage"))).await,
        Ok("alice".into())
    );
    assert_eq!(
        verify(&app, &token(json!(["other", "storage"]))).await,
        Ok("alice".into())
    );
    assert_eq!(
        verify(&app, &token(json!("other"))).await,
        Err(JwtError::WrongAudience)
    );
    assert_eq!(
        verify(&app, &token(json!(["other", "more"]))).await,
        Err(JwtError::WrongAudience)
    );
    assert_eq!(
        verify(&app, &token(json!([]))).await,
        Err(JwtError::WrongAudience)
    );
    assert_eq!(
        verify(&app, &token(json!(7))).await,
        Err(JwtError::WrongAudience)
    );
    let missing = sign(Algorithm::HS256, &key, None, &claims());
    assert_eq!(verify(&app, &missing).await, Err(JwtError::WrongAudience));
}

#[tokio::test]
async fn audience_is_not_required_when_none_is_configured() {
    let app = hs_app(&["HS256"]);
    let key = hs(HS_SECRET);
    let none = sign(Algorithm::HS256, &key, None, &claims());
    assert_eq!(verify(&app, &none).await, Ok("alice".into()));
    let some = sign(
        Algorithm::HS256,
        &key,
        None,
        &with(claims(), "aud", json!("whatever")),
    );
    assert_eq!(verify(&app, &some).await, Ok("alice".into()));
}

// ------------------------------------------------------------------------------------------------
// The user claim
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn user_claim_must_be_present() {
    let app = hs_app(&["HS256"]);
    let key = hs(HS_SECRET);
    for sub in [None, Some(json!(true)), Some(json!(1.5))] {
        let claims = match &sub {
            None => without(claims(), "sub"),
            Some(v) => with(claims(), "sub", v.clone()),
        };
        let token = sign(Algorithm::HS256, &key, None, &claims);
        let err = verify(&app, &token).await.unwrap_err();
        assert_eq!(err, JwtError::MissingUserClaim("sub".into()), "{sub:?}");
        assert_eq!(err.code(), "missing_user_claim");
    }
    // An empty subject is present: judging it is the policy renderer's job (403 there).
    let token = sign(
        Algorithm::HS256,
        &key,
        None,
        &with(claims(), "sub", json!("")),
    );
    assert_eq!(verify(&app, &token).await.unwrap(), "");
    // A structured `sub` trips jsonwebtoken's own `sub` parsing first: refused as malformed.
    let token = sign(
        Algorithm::HS256,
        &key,
        None,
        &with(claims(), "sub", json!({"id": 1})),
    );
    assert_eq!(verify(&app, &token).await, Err(JwtError::Malformed));
    // Any other claim name: structured values are simply not a user name.
    let uid = JwtSettings {
        user_claim: "uid".into(),
        ..app
    };
    for value in [json!({"id": 1}), json!(["a"]), json!(null)] {
        let token = sign(Algorithm::HS256, &key, None, &with(claims(), "uid", value));
        assert_eq!(
            verify(&uid, &token).await,
            Err(JwtError::MissingUserClaim("uid".into()))
        );
    }
}

#[tokio::test]
async fn integer_user_claim_becomes_a_string() {
    let token = sign(
        Algorithm::HS256,
        &hs(HS_SECRET),
        None,
        &with(claims(), "sub", json!(42)),
    );
    assert_eq!(verify(&hs_app(&["HS256"]), &token).await, Ok("42".into()));
}

#[tokio::test]
async fn custom_user_claim() {
    let app = JwtSettings {
        user_claim: "uid".into(),
        ..hs_app(&["HS256"])
    };
    let key = hs(HS_SECRET);
    let token = sign(
        Algorithm::HS256,
        &key,
        None,
        &with(claims(), "uid", json!("u-77")),
    );
    assert_eq!(verify(&app, &token).await, Ok("u-77".into()));
    let token = sign(Algorithm::HS256, &key, None, &claims());
    assert_eq!(
        verify(&app, &token).await,
        Err(JwtError::MissingUserClaim("uid".into()))
    );
}

#[tokio::test]
async fn subject_characters_are_not_judged_here() {
    let token = sign(
        Algorithm::HS256,
        &hs(HS_SECRET),
        None,
        &with(claims(), "sub", json!("../*")),
    );
    assert_eq!(verify(&hs_app(&["HS256"]), &token).await, Ok("../*".into()));
}

// ------------------------------------------------------------------------------------------------
// Malformed input
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn oversized_token_is_refused() {
    let big = with(claims(), "pad", json!("x".repeat(MAX_TOKEN_BYTES)));
    let token = sign(Algorithm::HS256, &hs(HS_SECRET), None, &big);
    assert!(token.len() > MAX_TOKEN_BYTES);
    assert_eq!(
        verify(&hs_app(&["HS256"]), &token).await,
        Err(JwtError::Malformed)
    );

    // Just under the limit is fine.
    let pad = MAX_TOKEN_BYTES / 2;
    let ok = sign(
        Algorithm::HS256,
        &hs(HS_SECRET),
        None,
        &with(claims(), "pad", json!("x".repeat(pad))),
    );
    assert!(ok.len() <= MAX_TOKEN_BYTES);
    assert_eq!(verify(&hs_app(&["HS256"]), &ok).await, Ok("alice".into()));
}

#[tokio::test]
async fn garbage_is_malformed() {
    let hs256 = b64(&json!({"alg": "HS256"}));
    let payload = b64(&claims());
    let cases = [
        String::new(),
        ".".into(),
        "..".into(),
        "...".into(),
        "not a token".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        "é.é.é".into(),
        "Bearer x.y.z".into(),
        format!("{hs256}..c2ln"),
        format!(".{payload}.c2ln"),
        format!("{hs256}.{payload}.c2ln=="),
        format!("{hs256}.{payload}.c2l+"),
        format!("{}.{payload}.c2ln", URL_SAFE_NO_PAD.encode("not json")),
        format!("{}.{payload}.c2ln", b64(&json!({"typ": "JWT"}))),
        format!("{}.{payload}.c2ln", b64(&json!({"alg": 5}))),
        format!("{}.{payload}.c2ln", b64(&json!(["HS256"]))),
        format!("{}.{payload}.c2ln", b64(&json!({"alg": "HS256", "kid": 7}))),
        format!(
            "{}.{payload}.c2ln",
            b64(&json!({"alg": "HS256", "kid": "k".repeat(300)}))
        ),
        "\u{0}\u{1}".into(),
    ];
    let app = hs_app(&["HS256"]);
    for token in &cases {
        assert_eq!(
            verify(&app, token).await,
            Err(JwtError::Malformed),
            "{token:?}"
        );
    }
    // A correctly signed token whose payload is not a JSON object.
    let header = b64(&json!({"alg": "HS256", "typ": "JWT"}));
    let body = URL_SAFE_NO_PAD.encode("[1,2,3]");
    let message = format!("{header}.{body}");
    let sig =
        jsonwebtoken::crypto::sign(message.as_bytes(), &hs(HS_SECRET), Algorithm::HS256).unwrap();
    assert_eq!(
        verify(&app, &format!("{message}.{sig}")).await,
        Err(JwtError::Malformed)
    );
}

// ------------------------------------------------------------------------------------------------
// Errors never leak the token
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn errors_never_contain_the_token() {
    let app = JwtSettings {
        issuer: Some("https://idp.example".into()),
        audiences: vec!["stsgate".into()],
        ..hs_app(&["HS256"])
    };
    let key = hs(HS_SECRET);
    let base = with(
        with(claims(), "iss", json!("https://idp.example")),
        "aud",
        json!("stsgate"),
    );
    let tokens = [
        sign(
            Algorithm::HS256,
            &key,
            None,
            &with(base.clone(), "exp", json!(now() - 600)),
        ),
        sign(
            Algorithm::HS256,
            &key,
            None,
            &with(base.clone(), "nbf", json!(now() + 600)),
        ),
        sign(
            Algorithm::HS256,
            &key,
            None,
            &with(base.clone(), "iss", json!("x")),
        ),
        sign(
            Algorithm::HS256,
            &key,
            None,
            &with(base.clone(), "aud", json!("x")),
        ),
        sign(Algorithm::HS256, &key, None, &without(base.clone(), "sub")),
        sign(Algorithm::HS256, &key, None, &without(base.clone(), "exp")),
        sign(Algorithm::HS256, &hs(OTHER_HS_SECRET), None, &base),
        sign(Algorithm::HS384, &key, None, &base),
        format!("eyJhbGciOiJub25lIn0.{}.", b64(&base)),
        format!(
            "{}.{}.c2ln",
            b64(&json!({"alg": "eyJhbGciOiJIUzI1NiJ9"})),
            b64(&base)
        ),
        "garbage.garbage.garbage".into(),
    ];
    let mut codes = Vec::new();
    for token in &tokens {
        let err = verify(&app, token).await.unwrap_err();
        let shown = format!("{err} {err:?} {}", err.code());
        for part in token.split('.').filter(|p| p.len() > 8) {
            assert!(!shown.contains(part), "{shown} leaks {part}");
        }
        assert!(!shown.contains(HS_SECRET));
        codes.push(err.code());
    }
    assert_eq!(
        codes,
        [
            "expired",
            "not_yet_valid",
            "wrong_issuer",
            "wrong_audience",
            "missing_user_claim",
            "missing_exp",
            "bad_signature",
            "algorithm_not_allowed",
            "algorithm_not_allowed",
            "algorithm_not_allowed",
            "malformed",
        ]
    );
}

#[test]
fn error_codes_are_stable() {
    let all = [
        (JwtError::Malformed, "malformed"),
        (
            JwtError::AlgorithmNotAllowed("x".into()),
            "algorithm_not_allowed",
        ),
        (JwtError::UnknownKey, "unknown_key"),
        (JwtError::BadSignature, "bad_signature"),
        (JwtError::Expired, "expired"),
        (JwtError::NotYetValid, "not_yet_valid"),
        (JwtError::MissingExpiry, "missing_exp"),
        (JwtError::WrongIssuer, "wrong_issuer"),
        (JwtError::WrongAudience, "wrong_audience"),
        (
            JwtError::MissingUserClaim("sub".into()),
            "missing_user_claim",
        ),
        (JwtError::JwksUnavailable("x".into()), "jwks_unavailable"),
    ];
    for (err, code) in all {
        assert_eq!(err.code(), code);
    }
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let app = hs_app(&["HS256"]);
    assert!(!format!("{app:?}").contains(HS_SECRET));
    assert!(!format!("{:?}", compile(&app)).contains(HS_SECRET));
    let short = JwtSettings {
        hs_secret: Some(SecretString::from("short-secret")),
        ..settings(&["HS256"])
    };
    let err = CompiledJwt::compile(&short).unwrap_err();
    assert!(!format!("{err} {err:?}").contains("short-secret"));
}

// ------------------------------------------------------------------------------------------------
// Compile errors name the field
// ------------------------------------------------------------------------------------------------

#[test]
fn compile_errors_name_the_field() {
    let cases: Vec<(JwtSettings, &str)> = vec![
        (settings(&[]), "algorithms:"),
        (
            settings(&["HS257"]),
            "algorithms: unknown algorithm `HS257`",
        ),
        (settings(&["HS256"]), "hs_secret: HS256 is allowed"),
        (
            JwtSettings {
                hs_secret: Some(SecretString::from("")),
                ..settings(&["HS512"])
            },
            "hs_secret: HS512 is allowed",
        ),
        (
            JwtSettings {
                hs_secret: Some(SecretString::from("too-short")),
                ..settings(&["HS256"])
            },
            "hs_secret: must be at least 32 bytes",
        ),
        (
            settings(&["RS256"]),
            "public_keys / jwks_url: RS256 is allowed",
        ),
        (
            keyed_app(&["ES256", "ES384"], &["ec256_public.pem"]),
            "public_keys: ES384 is allowed but no EC P-384 public key",
        ),
        (
            JwtSettings {
                public_keys: vec!["not a key".into()],
                ..settings(&["RS256"])
            },
            "public_keys[0]: not a PEM",
        ),
        (
            keyed_app(&["RS256"], &["rsa_public.pem", "rsa_private.pem"]),
            "public_keys[1]: a private key",
        ),
        (
            keyed_app(&["RS256"], &["rsa1024_public.pem"]),
            "public_keys[0]: an RSA key of 1024 bits",
        ),
        (
            keyed_app(&["ES256"], &["secp256k1_public.pem"]),
            "public_keys[0]: an EC key on an unsupported curve",
        ),
        (
            keyed_app(&["RS256"], &["rsa_public.pem", "ed25519_public.pem"]),
            "public_keys[1]: an Ed25519 key, but no algorithm for it is allowed",
        ),
        (
            JwtSettings {
                public_keys: vec![
                    format!("kid: a\n{}", fixture("rsa_public.pem")),
                    format!("kid: a\n{}", fixture("rsa2_public.pem")),
                ],
                ..settings(&["RS256"])
            },
            "public_keys[1]: duplicate kid `a`",
        ),
        (
            JwtSettings {
                public_keys: vec![format!(
                    "{}{}",
                    fixture("rsa_public.pem"),
                    fixture("rsa2_public.pem")
                )],
                ..settings(&["RS256"])
            },
            "public_keys[0]: one key per entry",
        ),
        (
            JwtSettings {
                public_keys: vec![fixture("rsa_public.pem").replace("MIIB", "MIIC")],
                ..settings(&["RS256"])
            },
            "public_keys[0]:",
        ),
        (
            jwks_app(&["RS256"], "http://idp.example.com/jwks"),
            "jwks_url: must be https",
        ),
        (
            jwks_app(&["RS256"], "jwks.json"),
            "jwks_url: not a valid URL",
        ),
        (
            JwtSettings {
                user_claim: String::new(),
                ..hs_app(&["HS256"])
            },
            "user_claim:",
        ),
        (
            JwtSettings {
                leeway_seconds: 100_000,
                ..hs_app(&["HS256"])
            },
            "leeway_seconds:",
        ),
    ];
    for (settings, expected) in cases {
        let err = CompiledJwt::compile(&settings).unwrap_err().to_string();
        assert!(
            err.starts_with(expected),
            "{err:?} does not start with {expected:?}"
        );
    }
}

#[test]
fn compile_refuses_an_ec_point_off_the_curve() {
    use base64::engine::general_purpose::STANDARD;
    let pem = fixture("ec256_public.pem");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = STANDARD.decode(body).unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x01; // y changes, x stays: not on the curve
    let broken = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(der)
    );
    let app = JwtSettings {
        public_keys: vec![broken],
        ..settings(&["ES256"])
    };
    let err = CompiledJwt::compile(&app).unwrap_err().to_string();
    assert_eq!(err, "public_keys[0]: not a valid EC P-256 public key");
}

#[tokio::test]
async fn jwks_ec_point_off_the_curve_is_skipped() {
    let mut bad = jwk(&ec256(), Algorithm::ES256, "bad");
    let mut y = URL_SAFE_NO_PAD.decode(bad["y"].as_str().unwrap()).unwrap();
    y[31] ^= 0x01;
    bad["y"] = json!(URL_SAFE_NO_PAD.encode(y));
    let server = JwksServer::start(
        jwks(&[bad, jwk(&ec256(), Algorithm::ES256, "good")]),
        Duration::ZERO,
    )
    .await;
    let app = compile(&jwks_app(&["ES256"], &server.url));
    let verifier = jwks_verifier(Duration::from_secs(30));
    let token = sign(Algorithm::ES256, &ec256(), Some("bad"), &claims());
    assert_eq!(
        verifier.verify(&app, &token).await.unwrap_err(),
        JwtError::UnknownKey
    );
    let token = sign(Algorithm::ES256, &ec256(), Some("good"), &claims());
    assert_eq!(
        verifier.verify(&app, &token).await.unwrap().subject,
        "alice"
    );
    server.stop().await;
}

#[test]
fn compile_accepts_reasonable_settings() {
    // Names are case-insensitive in settings; blank optional fields mean unset.
    let app = JwtSettings {
        issuer: Some("  ".into()),
        audiences: vec![String::new()],
        jwks_url: Some(String::new()),
        hs_secret: Some(SecretString::from(HS_SECRET)),
        public_keys: vec![
            fixture("rsa_public.pem"),
            format!("kid: ec\n{}", fixture("ec256_public.pem")),
            format!("KID:   ed-1  \n{}", fixture("ed25519_public.pem")),
            fixture("ec384_public.pem"),
            String::new(),
        ],
        ..settings(&[
            "hs256", "rs256", "PS512", "es256", "ES384", "eddsa", "EdDSA",
        ])
    };
    let jwt = compile(&app);
    assert_eq!(jwt.algorithms().len(), 7 - 1);
    assert_eq!(jwt.jwks_url(), None);
    assert_eq!(jwt.user_claim(), "sub");
}

// ------------------------------------------------------------------------------------------------
// Static key selection by kid
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn static_keys_are_selected_by_kid() {
    let app = JwtSettings {
        public_keys: vec![
            format!("kid: a\n{}", fixture("rsa_public.pem")),
            format!("kid: b\n{}", fixture("rsa2_public.pem")),
        ],
        ..settings(&["RS256"])
    };
    let token = sign(Algorithm::RS256, &rsa2(), Some("b"), &claims());
    assert_eq!(verify(&app, &token).await, Ok("alice".into()));
    let token = sign(Algorithm::RS256, &rsa2(), Some("a"), &claims());
    assert_eq!(verify(&app, &token).await, Err(JwtError::BadSignature));
    let token = sign(Algorithm::RS256, &rsa2(), Some("zzz"), &claims());
    assert_eq!(verify(&app, &token).await, Err(JwtError::UnknownKey));
    // No kid: every RSA key is tried.
    let token = sign(Algorithm::RS256, &rsa2(), None, &claims());
    assert_eq!(verify(&app, &token).await, Ok("alice".into()));
}

#[tokio::test]
async fn a_key_without_kid_line_is_a_wildcard() {
    let app = keyed_app(&["RS256"], &["rsa_public.pem"]);
    let token = sign(Algorithm::RS256, &rsa(), Some("idp-key-2024"), &claims());
    assert_eq!(verify(&app, &token).await, Ok("alice".into()));
}

// ------------------------------------------------------------------------------------------------
// JWKS
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn jwks_keys_of_every_type_verify() {
    let server = JwksServer::start(
        jwks(&[
            jwk(&rsa(), Algorithm::RS256, "rsa"),
            jwk(&ec256(), Algorithm::ES256, "p256"),
            jwk(&ec384(), Algorithm::ES384, "p384"),
            jwk(&ed25519(), Algorithm::EdDSA, "ed"),
        ]),
        Duration::ZERO,
    )
    .await;
    let app = compile(&jwks_app(
        &["RS256", "ES256", "ES384", "EdDSA"],
        &server.url,
    ));
    let verifier = jwks_verifier(Duration::from_secs(30));
    for (alg, key, kid) in [
        (Algorithm::RS256, rsa(), "rsa"),
        (Algorithm::ES256, ec256(), "p256"),
        (Algorithm::ES384, ec384(), "p384"),
        (Algorithm::EdDSA, ed25519(), "ed"),
    ] {
        let token = sign(alg, &key, Some(kid), &claims());
        assert_eq!(
            verifier.verify(&app, &token).await.unwrap().subject,
            "alice"
        );
        // Without a kid, every JWKS key of the right type is tried.
        let token = sign(alg, &key, None, &claims());
        assert_eq!(
            verifier.verify(&app, &token).await.unwrap().subject,
            "alice"
        );
    }
    assert_eq!(server.fetches(), 1, "the JWKS is cached");
    server.stop().await;
}

#[tokio::test]
async fn unknown_kid_refetches_once_per_cooldown() {
    let server =
        JwksServer::start(jwks(&[jwk(&rsa(), Algorithm::RS256, "a")]), Duration::ZERO).await;
    let app = compile(&jwks_app(&["RS256"], &server.url));
    let verifier = jwks_verifier(Duration::from_secs(30));

    let good = sign(Algorithm::RS256, &rsa(), Some("a"), &claims());
    verifier.verify(&app, &good).await.unwrap();
    assert_eq!(server.fetches(), 1);

    let unknown = sign(Algorithm::RS256, &rsa(), Some("nope-1"), &claims());
    assert_eq!(
        verifier.verify(&app, &unknown).await.unwrap_err(),
        JwtError::UnknownKey
    );
    assert_eq!(server.fetches(), 2, "an unknown kid refetches exactly once");

    let unknown = sign(Algorithm::RS256, &rsa(), Some("nope-2"), &claims());
    assert_eq!(
        verifier.verify(&app, &unknown).await.unwrap_err(),
        JwtError::UnknownKey
    );
    assert_eq!(server.fetches(), 2, "no second refetch within the cooldown");

    verifier.verify(&app, &good).await.unwrap();
    assert_eq!(server.fetches(), 2);
    server.stop().await;
}

#[tokio::test]
async fn unknown_kid_refetches_again_after_the_cooldown() {
    let server =
        JwksServer::start(jwks(&[jwk(&rsa(), Algorithm::RS256, "a")]), Duration::ZERO).await;
    let app = compile(&jwks_app(&["RS256"], &server.url));
    let verifier = jwks_verifier(Duration::from_millis(200));
    let unknown = sign(Algorithm::RS256, &rsa(), Some("nope"), &claims());
    assert_eq!(
        verifier.verify(&app, &unknown).await.unwrap_err(),
        JwtError::UnknownKey
    );
    assert_eq!(
        server.fetches(),
        1,
        "cold cache: the first fetch is the only one"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        verifier.verify(&app, &unknown).await.unwrap_err(),
        JwtError::UnknownKey
    );
    assert_eq!(server.fetches(), 2);
    server.stop().await;
}

#[tokio::test]
async fn key_rotation_is_picked_up_by_one_refetch() {
    let server = JwksServer::start(
        jwks(&[jwk(&rsa(), Algorithm::RS256, "old")]),
        Duration::ZERO,
    )
    .await;
    let app = compile(&jwks_app(&["RS256"], &server.url));
    let verifier = jwks_verifier(Duration::from_secs(30));
    let old = sign(Algorithm::RS256, &rsa(), Some("old"), &claims());
    verifier.verify(&app, &old).await.unwrap();
    assert_eq!(server.fetches(), 1);

    server.serve(jwks(&[jwk(&rsa2(), Algorithm::RS256, "new")]));
    let new = sign(Algorithm::RS256, &rsa2(), Some("new"), &claims());
    assert_eq!(verifier.verify(&app, &new).await.unwrap().subject, "alice");
    assert_eq!(server.fetches(), 2);
    // The old key is gone from the cache now, and the cooldown blocks another fetch.
    assert_eq!(
        verifier.verify(&app, &old).await.unwrap_err(),
        JwtError::UnknownKey
    );
    assert_eq!(server.fetches(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unknown_kids_share_one_fetch() {
    let server = JwksServer::start(
        jwks(&[jwk(&rsa(), Algorithm::RS256, "a")]),
        Duration::from_millis(200),
    )
    .await;
    let app = Arc::new(compile(&jwks_app(&["RS256"], &server.url)));
    let verifier = jwks_verifier(Duration::from_secs(30));
    verifier
        .verify(&app, &sign(Algorithm::RS256, &rsa(), Some("a"), &claims()))
        .await
        .unwrap();
    assert_eq!(server.fetches(), 1);

    // The unknown kid is served after rotation; 20 concurrent requests share one refetch.
    server.serve(jwks(&[
        jwk(&rsa(), Algorithm::RS256, "a"),
        jwk(&rsa2(), Algorithm::RS256, "b"),
    ]));
    let token = sign(Algorithm::RS256, &rsa2(), Some("b"), &claims());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (verifier, app, token) = (verifier.clone(), app.clone(), token.clone());
            tokio::spawn(async move { verifier.verify(&app, &token).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().subject, "alice");
    }
    assert_eq!(server.fetches(), 2, "at most one refetch");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_misses_share_one_fetch() {
    let server = JwksServer::start(
        jwks(&[jwk(&rsa(), Algorithm::RS256, "a")]),
        Duration::from_millis(200),
    )
    .await;
    let app = Arc::new(compile(&jwks_app(&["RS256"], &server.url)));
    let verifier = jwks_verifier(Duration::from_secs(30));
    let unknown = sign(Algorithm::RS256, &rsa(), Some("zzz"), &claims());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (verifier, app, token) = (verifier.clone(), app.clone(), unknown.clone());
            tokio::spawn(async move { verifier.verify(&app, &token).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap_err(), JwtError::UnknownKey);
    }
    assert_eq!(server.fetches(), 1);
    server.stop().await;
}

#[tokio::test]
async fn server_down_with_a_warm_cache_still_verifies() {
    let server =
        JwksServer::start(jwks(&[jwk(&rsa(), Algorithm::RS256, "a")]), Duration::ZERO).await;
    let app = compile(&jwks_app(&["RS256"], &server.url));
    // ttl 0: every verification wants a refresh; the cooldown spaces the attempts.
    let verifier = JwtVerifier::new(JwksConfig {
        ttl: Duration::ZERO,
        refresh_cooldown: Duration::from_millis(50),
        ..JwksConfig::default()
    });
    let token = sign(Algorithm::RS256, &rsa(), Some("a"), &claims());
    verifier.verify(&app, &token).await.unwrap();
    let fetches = server.fetches();
    server.stop().await;

    tokio::time::sleep(Duration::from_millis(60)).await;
    // The refresh fails (connection refused); the stale keys are served.
    assert_eq!(
        verifier.verify(&app, &token).await.unwrap().subject,
        "alice"
    );
    let untokened = sign(Algorithm::RS256, &rsa(), None, &claims());
    assert_eq!(
        verifier.verify(&app, &untokened).await.unwrap().subject,
        "alice"
    );
    // An unknown kid is still just unknown, not "unavailable".
    let unknown = sign(Algorithm::RS256, &rsa(), Some("b"), &claims());
    assert_eq!(
        verifier.verify(&app, &unknown).await.unwrap_err(),
        JwtError::UnknownKey
    );
    assert_eq!(fetches, 1);
}

#[tokio::test]
async fn server_errors_with_a_warm_cache_keep_the_stale_keys() {
    let server =
        JwksServer::start(jwks(&[jwk(&rsa(), Algorithm::RS256, "a")]), Duration::ZERO).await;
    let app = compile(&jwks_app(&["RS256"], &server.url));
    let verifier = JwtVerifier::new(JwksConfig {
        ttl: Duration::ZERO,
        refresh_cooldown: Duration::ZERO,
        ..JwksConfig::default()
    });
    let token = sign(Algorithm::RS256, &rsa(), Some("a"), &claims());
    verifier.verify(&app, &token).await.unwrap();

    server.reply_with(500, None);
    assert_eq!(
        verifier.verify(&app, &token).await.unwrap().subject,
        "alice"
    );
    server.reply_with(200, None);
    server.serve(json!({"keys": []}));
    assert_eq!(
        verifier.verify(&app, &token).await.unwrap().subject,
        "alice"
    );
    server.serve(json!("<html>oops</html>"));
    assert_eq!(
        verifier.verify(&app, &token).await.unwrap().subject,
        "alice"
    );
    assert!(server.fetches() >= 4);
    server.stop().await;
}

#[tokio::test]
async fn server_down_with_a_cold_cache_is_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    drop(listener);
    let app = compile(&jwks_app(&["RS256"], &url));
    let verifier = jwks_verifier(Duration::from_secs(30));
    for kid in [Some("a"), None] {
        let token = sign(Algorithm::RS256, &rsa(), kid, &claims());
        let err = verifier.verify(&app, &token).await.unwrap_err();
        assert!(matches!(err, JwtError::JwksUnavailable(_)), "{err:?}");
        assert_eq!(err.code(), "jwks_unavailable");
        assert!(
            !err.to_string().contains(&url),
            "the URL stays out of the message"
        );
    }
}

#[tokio::test]
async fn failed_cold_fetches_are_rate_limited_too() {
    let server =
        JwksServer::start(jwks(&[jwk(&rsa(), Algorithm::RS256, "a")]), Duration::ZERO).await;
    server.reply_with(503, None);
    let app = compile(&jwks_app(&["RS256"], &server.url));
    let verifier = jwks_verifier(Duration::from_secs(30));
    let token = sign(Algorithm::RS256, &rsa(), Some("a"), &claims());
    for _ in 0..5 {
        let err = verifier.verify(&app, &token).await.unwrap_err();
        assert_eq!(err, JwtError::JwksUnavailable("HTTP status 503".into()));
    }
    assert_eq!(server.fetches(), 1);
    server.stop().await;
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target =
        JwksServer::start(jwks(&[jwk(&rsa(), Algorithm::RS256, "a")]), Duration::ZERO).await;
    let server = JwksServer::start(json!({}), Duration::ZERO).await;
    server.reply_with(302, Some(target.url.clone()));
    let app = compile(&jwks_app(&["RS256"], &server.url));
    let token = sign(Algorithm::RS256, &rsa(), Some("a"), &claims());
    let err = jwks_verifier(Duration::from_secs(30))
        .verify(&app, &token)
        .await
        .unwrap_err();
    assert_eq!(err, JwtError::JwksUnavailable("HTTP status 302".into()));
    assert_eq!(target.fetches(), 0);
    server.stop().await;
    target.stop().await;
}

#[tokio::test]
async fn oversized_jwks_is_refused() {
    let mut keys = vec![jwk(&rsa(), Algorithm::RS256, "a")];
    keys.push(json!({"kty": "unknown", "pad": "x".repeat(4096)}));
    let server = JwksServer::start(jwks(&keys), Duration::ZERO).await;
    let app = compile(&jwks_app(&["RS256"], &server.url));
    let verifier = JwtVerifier::new(JwksConfig {
        max_body: 2048,
        ..JwksConfig::default()
    });
    let token = sign(Algorithm::RS256, &rsa(), Some("a"), &claims());
    let err = verifier.verify(&app, &token).await.unwrap_err();
    assert!(
        matches!(err, JwtError::JwksUnavailable(ref m) if m.contains("larger")),
        "{err:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn jwks_symmetric_and_encryption_keys_are_never_used() {
    // An `oct` key with the kid the attacker uses, next to an encryption-only RSA key.
    let attacker = "attacker-chosen-secret-0123456789abcdef";
    let mut enc = jwk(&rsa2(), Algorithm::RS256, "enc");
    enc["use"] = json!("enc");
    let server = JwksServer::start(
        jwks(&[
            json!({"kty": "oct", "kid": "sym", "k": URL_SAFE_NO_PAD.encode(attacker), "alg": "HS256"}),
            enc,
            jwk(&rsa(), Algorithm::RS256, "sig"),
        ]),
        Duration::ZERO,
    )
    .await;
    let app = compile(&JwtSettings {
        hs_secret: Some(SecretString::from(HS_SECRET)),
        ..jwks_app(&["HS256", "RS256"], &server.url)
    });
    let verifier = jwks_verifier(Duration::from_secs(30));
    let forged = sign(Algorithm::HS256, &hs(attacker), Some("sym"), &claims());
    assert_eq!(
        verifier.verify(&app, &forged).await.unwrap_err(),
        JwtError::BadSignature
    );
    let enc_signed = sign(Algorithm::RS256, &rsa2(), Some("enc"), &claims());
    assert_eq!(
        verifier.verify(&app, &enc_signed).await.unwrap_err(),
        JwtError::UnknownKey
    );
    let good = sign(Algorithm::RS256, &rsa(), Some("sig"), &claims());
    assert_eq!(verifier.verify(&app, &good).await.unwrap().subject, "alice");
    server.stop().await;
}

#[tokio::test]
async fn a_jwk_alg_restricts_the_key() {
    let server =
        JwksServer::start(jwks(&[jwk(&rsa(), Algorithm::RS256, "a")]), Duration::ZERO).await;
    let app = compile(&jwks_app(&["RS256", "PS256"], &server.url));
    let verifier = jwks_verifier(Duration::from_secs(30));
    let ps = sign(Algorithm::PS256, &rsa(), Some("a"), &claims());
    assert_eq!(
        verifier.verify(&app, &ps).await.unwrap_err(),
        JwtError::UnknownKey
    );
    let rs = sign(Algorithm::RS256, &rsa(), Some("a"), &claims());
    assert_eq!(verifier.verify(&app, &rs).await.unwrap().subject, "alice");
    server.stop().await;
}

#[tokio::test]
async fn static_keys_and_jwks_together() {
    let server = JwksServer::start(
        jwks(&[jwk(&rsa2(), Algorithm::RS256, "remote")]),
        Duration::ZERO,
    )
    .await;
    let app = compile(&JwtSettings {
        public_keys: vec![format!("kid: local\n{}", fixture("rsa_public.pem"))],
        ..jwks_app(&["RS256"], &server.url)
    });
    let verifier = jwks_verifier(Duration::from_secs(30));
    let local = sign(Algorithm::RS256, &rsa(), Some("local"), &claims());
    assert_eq!(
        verifier.verify(&app, &local).await.unwrap().subject,
        "alice"
    );
    assert_eq!(server.fetches(), 0, "a static kid match needs no JWKS");
    let remote = sign(Algorithm::RS256, &rsa2(), Some("remote"), &claims());
    assert_eq!(
        verifier.verify(&app, &remote).await.unwrap().subject,
        "alice"
    );
    let no_kid = sign(Algorithm::RS256, &rsa2(), None, &claims());
    assert_eq!(
        verifier.verify(&app, &no_kid).await.unwrap().subject,
        "alice"
    );
    assert_eq!(server.fetches(), 1);
    server.stop().await;
}
