//! Hostile subjects and bad tokens: refused, and nothing reaches STS.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_subjects_get_403_and_never_reach_sts() {
    let app = TestApp::spawn().await;
    let long = "a".repeat(129);
    let hostile = [
        "*",
        "a*",
        "../bob",
        "alice/../bob",
        "alice/",
        "%2F",
        "",
        long.as_str(),
        "alice bob",
        "alicé",
        "ålice",
        "$",
        "{",
        "${sub}",
        "a?b",
        ".",
        "..",
        "a\u{0}b",
        "a\nb",
    ];
    for sub in hostile {
        let res = app.credentials(sub, "").await;
        assert_eq!(res.status(), 403, "{sub:?}");
        let text = res.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["error"]["code"], "subject_not_allowed", "{sub:?}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("${sub_hash}"),
            "the message names the alternative: {text}"
        );
        assert!(body.get("credentials").is_none());
    }
    assert_eq!(app.emulator.stats().requests, 0, "nothing reached STS");
    let rows = app.log_rows().await;
    assert_eq!(rows.len(), hostile.len());
    assert!(
        rows.iter()
            .all(|r| r.outcome.as_str() == "denied" && r.http_status == 403)
    );
    // The longest accepted subject works: 128 characters.
    assert_eq!(app.credentials(&"a".repeat(128), "").await.status(), 200);
    app.shutdown().await;
}

fn rsa_token(claims: &Value, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(fixture("rsa_private.pem").as_bytes()).unwrap(),
    )
    .unwrap()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 600})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_401() {
    let app = TestApp::spawn().await;
    let rsa_url = format!("/v1/apps/{RSA_APP}/credentials");
    let hs_url = format!("/v1/apps/{APP}/credentials");

    // A good RS256 token for the RSA app works (the baseline for the refusals below).
    let res = app
        .get(&rsa_url, Some(&rsa_token(&claims("alice"), Some("k1"))))
        .await;
    assert_eq!(res.status(), 200);

    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims("alice"))
    );
    // The classic confusion attack: HS256 with the app's RSA public key as the HMAC secret.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("alice"),
        &EncodingKey::from_secret(fixture("rsa_public.pem").as_bytes()).unwrap(),
    )
    .unwrap();
    let expired = app.token_with(json!({"sub": "alice", "iat": now() - 7200, "exp": now() - 3600}));
    let wrong_iss = app.token_with(json!({"sub": "alice", "iss": "https://evil.example"}));
    let wrong_aud = app.token_with(json!({"sub": "alice", "aud": "another-app"}));
    let tampered = {
        let t = app.token("alice");
        let (rest, sig) = t.rsplit_once('.').unwrap();
        let flipped = if sig.starts_with('A') { "B" } else { "A" };
        format!("{rest}.{flipped}{}", &sig[1..])
    };
    let unknown_kid = rsa_token(&claims("alice"), Some("not-a-known-kid"));

    let cases = [
        ("alg none", &hs_url, alg_none.clone()),
        ("alg none (rsa app)", &rsa_url, alg_none),
        ("HS256 signed with the RSA public key", &rsa_url, confused),
        ("expired", &hs_url, expired),
        ("wrong iss", &hs_url, wrong_iss),
        ("wrong aud", &hs_url, wrong_aud),
        ("tampered signature", &hs_url, tampered),
        ("unknown kid", &rsa_url, unknown_kid),
        ("garbage", &hs_url, "not.a.jwt".to_owned()),
    ];
    let before = app.emulator.stats().requests;
    for (what, url, token) in cases {
        let res = app.get(url, Some(&token)).await;
        assert_eq!(res.status(), 401, "{what}");
        assert_eq!(
            res.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\"",
            "{what}"
        );
        let text = res.text().await.unwrap();
        assert!(!text.contains(&token), "{what}: the token is never echoed");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["error"]["code"], "invalid_token", "{what}");
    }
    assert_eq!(app.emulator.stats().requests, before);
    let rows = app.log_rows().await;
    let invalid = rows
        .iter()
        .filter(|r| r.outcome.as_str() == "invalid_token")
        .count();
    assert_eq!(invalid, 9);
    app.shutdown().await;
}

/// Issue 8 "also check": the public API reads at most 16 KiB of body, before any token, app or
/// database work; a bigger one is refused with 413 and nothing else happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_before_any_work() {
    let app = TestApp::spawn().await;
    let loads = app.app_loads();
    let sts = app.emulator.stats().requests;
    let padding = "x".repeat(17 * 1024);
    let res = app
        .http
        .post(format!("{}/v1/apps/{APP}/credentials", app.url))
        .bearer_auth(app.token("alice"))
        .header("content-type", "application/json")
        .body(json!({ "prefix": padding }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert!(res.headers().contains_key("x-request-id"));
    assert_eq!(app.app_loads(), loads, "the app was not even looked up");
    assert_eq!(app.emulator.stats().requests, sts);
    assert!(app.log_rows().await.is_empty());

    // Just under the limit is read (and refused for what it says, not for its size).
    let res = app
        .http
        .post(format!("{}/v1/apps/{APP}/credentials", app.url))
        .bearer_auth(app.token("alice"))
        .body(json!({ "prefix": "x".repeat(15 * 1024) }).to_string())
        .send()
        .await
        .unwrap();
    assert_ne!(res.status(), 413);
    app.shutdown().await;
}
