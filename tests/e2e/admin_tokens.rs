//! The admin pages' "test a token" through the real `stsgate serve` binary, where the admin
//! crate's TokenTester is the gateway's own verifier: signatures are really checked, nothing
//! is issued or logged. And a refused token's issuance row says which aud/iss/alg/kid arrived.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use policy_store::testing::{fresh_database, test_cipher};
use policy_store::{AdminUserStore, PgStore, Role};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_stsgate");
const PASSWORD: &str = "admin-password-0123";

/// A minimal browser: keeps cookies, finds CSRF tokens.
struct Admin {
    base: String,
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl Admin {
    async fn send(&mut self, req: reqwest::RequestBuilder) -> (u16, String) {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let res = req
            .header("cookie", cookie)
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
            .unwrap();
        for sc in res.headers().get_all("set-cookie") {
            let sc = sc.to_str().unwrap();
            let pair = sc.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.insert(k.to_owned(), v.to_owned());
        }
        (res.status().as_u16(), res.text().await.unwrap())
    }

    async fn get(&mut self, path: &str) -> (u16, String) {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form.iter()
                    .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                    .collect::<Vec<_>>()
                    .join("&"),
            );
        self.send(req).await
    }
}

/// `application/x-www-form-urlencoded` for one key or value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn csrf(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("a CSRF token") + marker.len();
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

fn hs_token(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn rsa_token(claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(fixture("rsa_private.pem").as_bytes()).unwrap(),
    )
    .unwrap()
}

fn claims(extra: Value) -> Value {
    let mut c =
        json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 600});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_tests_verify_signatures_and_refused_rows_say_what_arrived() {
    sts_core::install_crypto_provider();
    let db = fresh_database().await.unwrap();
    let store = PgStore::new(db.pool.clone(), test_cipher());
    seed(&store, &Options::default()).await;
    let hash = admin::password::hash_password(SecretString::from(PASSWORD))
        .await
        .unwrap();
    store
        .create_admin_user("test", "root", &hash, Role::Admin)
        .await
        .unwrap();
    let emu = emulator();
    let key = {
        use base64::Engine;
        format!(
            "test:{}",
            base64::engine::general_purpose::STANDARD.encode([0x42u8; 32])
        )
    };
    let mut child = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("STSGATE_MASTER_KEY", key)
        .env("STSGATE_PUBLIC_LISTEN", "127.0.0.1:0")
        .env("STSGATE_ADMIN_LISTEN", "127.0.0.1:0")
        .env("STSGATE_STS__ENDPOINT", format!("{}/", emu.url()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (public, admin_addr) = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "stsgate exited early"
        );
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["message"] == "stsgate serving"
        {
            break (
                v["public"].as_str().unwrap().to_owned(),
                v["admin"].as_str().unwrap().to_owned(),
            );
        }
    };
    std::thread::spawn(move || for _ in stderr.lines() {});

    let mut admin = Admin {
        base: format!("http://{admin_addr}"),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        cookies: BTreeMap::new(),
    };
    let (_, login) = admin.get("/login").await;
    let token = csrf(&login);
    let (status, _) = admin
        .post(
            "/login",
            &[
                ("csrf", &token),
                ("username", "root"),
                ("password", PASSWORD),
                ("next", "/"),
            ],
        )
        .await;
    assert_eq!(status, 303);

    let test = |app: &'static str| format!("/apps/{app}/jwt/test");
    let (_, page) = admin.get(&format!("/apps/{RSA_APP}/jwt")).await;
    let c = csrf(&page);

    // A good RS256 token: verified with the app's real key.
    let good = rsa_token(&claims(json!({})));
    let (status, body) = admin
        .post(&test(RSA_APP), &[("csrf", &c), ("token", &good)])
        .await;
    assert_eq!(status, 200);
    assert!(body.contains("This token would get credentials."), "{body}");
    assert!(body.contains("users/alice/"));
    assert!(!body.contains(&good), "the token is not echoed");

    // The same claims with a signature from another key: refused (the preview would not know).
    let mut forged_parts: Vec<&str> = good.split('.').collect();
    let other = hs_token(
        claims(json!({})),
        "another-secret-that-is-long-enough-01234",
    );
    forged_parts[2] = other.split('.').nth(2).unwrap();
    let forged = forged_parts.join(".");
    let (_, body) = admin
        .post(&test(RSA_APP), &[("csrf", &c), ("token", &forged)])
        .await;
    assert!(
        body.contains("This token would be refused: 401 invalid_token:bad_signature."),
        "{body}"
    );
    assert!(body.contains("signed with another secret or key"));

    // A token minted for another application: says which audience arrived.
    let elsewhere = rsa_token(&claims(json!({"aud": "billing-app"})));
    let (_, body) = admin
        .post(&test(RSA_APP), &[("csrf", &c), ("token", &elsewhere)])
        .await;
    assert!(body.contains("invalid_token:wrong_audience"), "{body}");
    assert!(body.contains("“billing-app”"));
    assert!(body.contains(AUDIENCE));

    // HS256 app, wrong secret; and a blocked subject.
    let (_, page) = admin.get(&format!("/apps/{APP}/jwt")).await;
    let c = csrf(&page);
    let wrong = hs_token(claims(json!({})), "not-the-app-secret-but-long-enough-0123");
    let (_, body) = admin
        .post(&test(APP), &[("csrf", &c), ("token", &wrong)])
        .await;
    assert!(body.contains("invalid_token:bad_signature"), "{body}");
    let (_, body) = admin
        .post(
            &test(APP),
            &[
                ("csrf", &c),
                ("token", &hs_token(claims(json!({})), HS_SECRET)),
            ],
        )
        .await;
    assert!(body.contains("would get credentials"), "{body}");

    // None of that issued a credential or wrote a row.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM issuance_log")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);

    // The real endpoint, refusing the other app's token: its row names what arrived.
    let res = reqwest::Client::new()
        .get(format!("http://{public}/v1/apps/{RSA_APP}/credentials"))
        .bearer_auth(&elsewhere)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let mut error_code = None;
    for _ in 0..50 {
        error_code = sqlx::query_scalar::<_, Option<String>>(
            "SELECT error_code FROM issuance_log WHERE outcome = 'invalid_token'",
        )
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .flatten();
        if error_code.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let error_code = error_code.expect("the refusal's row");
    assert_eq!(
        error_code,
        format!(
            "invalid_token:wrong_audience aud=\"billing-app\" iss=\"{ISSUER}\" alg=RS256 kid=\"k1\""
        )
    );
    assert!(!error_code.contains(elsewhere.split('.').nth(2).unwrap()));

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
}
