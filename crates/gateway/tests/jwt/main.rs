//! JWT verification: every algorithm family, every refusal DESIGN.md §4 names, and the JWKS cache
//! against a tiny in-test HTTP server. What settings compile is tested in policy-store
//! (`policy_store::jwt`), which shares these fixtures.
//!
//! Key pairs in `tests/fixtures/` were generated with the `openssl` CLI (see its README).

mod claims;
mod jwks;
mod verify;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gateway::jwt::{
    CompileOptions, CompiledJwt, JwksConfig, JwksFetchError, JwtError, JwtVerifier, MAX_TOKEN_BYTES,
};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use policy_store::AppAuth;
use policy_store::jwt::testing::{
    AUDIENCE, HS_SECRET, ISSUER, fixture, hs_app, jwks_app, keyed_app, settings,
};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const OTHER_HS_SECRET: &str = "another-hs-secret-0123456789abcdef-012345";
/// The test JWKS servers listen on loopback.
const LOOPBACK: CompileOptions = CompileOptions {
    allow_loopback_jwks: true,
};

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

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

/// Valid claims for every test app (HS-only apps check neither `iss` nor `aud`).
fn claims() -> Value {
    json!({"sub": "alice", "exp": now() + 300, "iat": now(), "iss": ISSUER, "aud": AUDIENCE})
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

fn compile(settings: &AppAuth) -> CompiledJwt {
    CompiledJwt::compile(settings, LOOPBACK).unwrap()
}

/// The JWKS settings of these tests: their JWKS servers listen on loopback.
fn loopback_jwks() -> JwksConfig {
    JwksConfig {
        allow_loopback: true,
        ..JwksConfig::default()
    }
}

fn verifier() -> JwtVerifier {
    JwtVerifier::new(loopback_jwks())
}

async fn verify(settings: &AppAuth, token: &str) -> Result<String, JwtError> {
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

fn jwks_verifier(cooldown: Duration) -> JwtVerifier {
    JwtVerifier::new(JwksConfig {
        refresh_cooldown: cooldown,
        ..loopback_jwks()
    })
}
