//! The admin pages' "test a token" through the real `stsgate serve` binary, where the admin
//! crate's TokenTester is the gateway's own verifier: signatures are really checked, nothing
//! is issued or logged. And a refused token's issuance row says which aud/iss/alg/kid arrived.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use policy_store::testing::{fresh_database, test_cipher};
use policy_store::{AdminUserStore, PgStore, Role};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::process::{AdminBrowser, ServeProcess, csrf};
use crate::support::*;

const PASSWORD: &str = "admin-password-0123";

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
    let mut serve = ServeProcess::start(&db.url, &emu.url(), &[]);
    let public = serve.public.clone();
    let mut admin = AdminBrowser::new(serve.admin_url());
    admin.sign_in("root", PASSWORD).await;

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

    assert!(serve.terminate());
}
