//! What the runs need: a scratch database with apps, JWTs, and a signed STS request.

use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header};
use policy_store::PgStore;
use policy_store::testing::{SeedApp, seed_app, test_cipher};
use serde_json::json;
use sts_core::tc3::{self, Tc3Request};
use sts_core::{CosResource, Effect, Policy, Statement};

pub const ACCOUNT_ID: &str = "AKIDBENCHACCOUNT";
pub const ACCOUNT_KEY: &str = "bench-permanent-secret-key-0123456789";
pub const APPID: &str = "1250000000";
pub const BUCKET: &str = "examplebucket-1250000000";
pub const REGION: &str = "ap-guangzhou";
const HS_SECRET: &str = "bench-hs256-secret-that-is-long-enough-0";
const ISSUER: &str = "bench";
const AUDIENCE: &str = "bench";

/// The master key of `policy_store::testing::test_cipher`, which encrypted the apps' secrets.
pub fn master_key() -> String {
    format!(
        "test:{}",
        base64::engine::general_purpose::STANDARD.encode([0x42u8; 32])
    )
}

/// Creates app `slug` (GetFederationToken with the bench account, no rate limits, HS256 JWTs,
/// the default per-user template). Each run gets an app of its own, so the issuance log can be
/// counted per run.
pub async fn create_app(pool: &sqlx::PgPool, slug: &str) {
    let store = PgStore::new(pool.clone(), test_cipher());
    let seed = SeedApp {
        secret_id: ACCOUNT_ID.into(),
        secret_key: ACCOUNT_KEY.into(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        hs_secret: Some(HS_SECRET.into()),
        ..SeedApp::new(slug)
    };
    seed_app(&store, "bench", &seed)
        .await
        .unwrap_or_else(|e| panic!("creating app {slug}: {e}"));
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An HS256 JWT for `sub`, valid for an hour.
pub fn jwt(key: &EncodingKey, sub: &str, now: i64) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 3600}),
        key,
    )
    .unwrap()
}

pub fn jwt_key() -> EncodingKey {
    EncodingKey::from_secret(HS_SECRET.as_bytes()).expect("an HS256 key")
}

/// Writes `per_thread` distinct tokens (subjects `<prefix>-<thread>-<n>`) to
/// `<files>0.txt`, `<files>1.txt`, ... one file per wrk thread.
pub fn token_files(files: &Path, prefix: &str, threads: usize, per_thread: usize) {
    let key = jwt_key();
    let now = unix_now();
    for t in 0..threads {
        let path = format!("{}{t}.txt", files.display());
        let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut out = std::io::BufWriter::new(file);
        for n in 0..per_thread {
            writeln!(out, "{}", jwt(&key, &format!("{prefix}-{t}-{n}"), now)).unwrap();
        }
        out.flush().unwrap();
    }
}

pub fn remove_token_files(files: &Path, threads: usize) {
    for t in 0..threads {
        let _ = std::fs::remove_file(format!("{}{t}.txt", files.display()));
    }
}

/// A GetFederationToken request to the emulator at `host` (`127.0.0.1:port`), TC3-signed
/// now: the headers to send besides `Host` (which wrk derives from the URL), and the body.
/// The emulator accepts it for 300 s and does not reject replays, so every replay mints a
/// credential.
pub fn signed_federation_request(host: &str) -> (Vec<(&'static str, String)>, String) {
    let resource = CosResource::new(REGION, BUCKET).unwrap();
    let policy = Policy::new(vec![Statement::new(
        Effect::Allow,
        vec!["name/cos:PutObject".into(), "name/cos:GetObject".into()],
        vec![resource.object("users/bench/*")],
    )]);
    let body = json!({
        "Name": "bench",
        "Policy": policy.to_url_encoded(),
        "DurationSeconds": 1800,
    })
    .to_string();
    let timestamp = unix_now();
    let content_type = "application/json";
    let signed = tc3::sign(
        ACCOUNT_KEY,
        &Tc3Request {
            method: "POST",
            canonical_query: "",
            headers: &[("content-type", content_type), ("host", host)],
            payload: body.as_bytes(),
            service: "sts",
            timestamp,
        },
    );
    let headers = vec![
        ("Content-Type", content_type.to_owned()),
        ("Authorization", signed.authorization(ACCOUNT_ID)),
        ("X-TC-Action", "GetFederationToken".to_owned()),
        ("X-TC-Version", sts_core::client::API_VERSION.to_owned()),
        ("X-TC-Region", REGION.to_owned()),
        ("X-TC-Timestamp", timestamp.to_string()),
    ];
    (headers, body)
}

/// The account the emulator is started with (`--account`).
pub fn emulator_account() -> String {
    format!("{ACCOUNT_ID}:{ACCOUNT_KEY}:{APPID}")
}
