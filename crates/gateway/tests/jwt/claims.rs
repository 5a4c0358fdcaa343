//! The claims a token must carry, malformed tokens, and what errors show.

use super::*;

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

    let strict = AppAuth {
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
    let app = AppAuth {
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
    let missing = sign(Algorithm::HS256, &key, None, &without(claims(), "iss"));
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
    let app = AppAuth {
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
    let missing = sign(Algorithm::HS256, &key, None, &without(claims(), "aud"));
    assert_eq!(verify(&app, &missing).await, Err(JwtError::WrongAudience));
}

#[tokio::test]
async fn audience_is_not_required_when_none_is_configured() {
    let app = hs_app(&["HS256"]);
    let key = hs(HS_SECRET);
    let none = sign(Algorithm::HS256, &key, None, &without(claims(), "aud"));
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
    let uid = AppAuth {
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
    let app = AppAuth {
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
    let app = AppAuth {
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
        (
            JwtError::JwksUnavailable(JwksFetchError::NotFetched),
            "jwks_unavailable",
        ),
    ];
    for (err, code) in all {
        assert_eq!(err.code(), code);
    }
}
