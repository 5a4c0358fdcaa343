//! Verification with static keys and HS secrets: algorithms, signatures and key selection.

use super::*;

// ------------------------------------------------------------------------------------------------
// Every algorithm family verifies
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn hs256_hs384_hs512_verify() {
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let name = format!("{alg:?}");
        let token = sign(alg, &hs(HS_SECRET), None, &claims());
        assert_eq!(
            verify(&hs_app(&[&name]), &token).await,
            Ok("alice".into()),
            "{name}"
        );
    }
}

#[tokio::test]
async fn rs_and_ps_algorithms_verify() {
    use Algorithm::{PS256, PS384, PS512, RS256, RS384, RS512};
    for alg in [RS256, RS384, RS512, PS256, PS384, PS512] {
        let name = format!("{alg:?}");
        let app = keyed_app(&[&name], &["rsa_public.pem"]);
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
    let app = AppAuth {
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

    let both = AppAuth {
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
    let app = AppAuth {
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
    let app = AppAuth {
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
// Static key selection by kid
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn static_keys_are_selected_by_kid() {
    let app = AppAuth {
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

/// Issue 14: keys from an identity provider also sign tokens for its other applications. Such
/// apps must name their issuer and audience, and a token minted for another app is refused.
#[tokio::test]
async fn a_token_the_idp_minted_for_another_app_is_refused() {
    let open = AppAuth {
        issuer: None,
        audiences: Vec::new(),
        ..keyed_app(&["RS256"], &["rsa_public.pem"])
    };
    let err = CompiledJwt::compile(&open, LOOPBACK)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err.split("; ")
            .map(|e| e.split(':').next().unwrap())
            .collect::<Vec<_>>(),
        ["issuer", "audiences"]
    );

    let app = keyed_app(&["RS256"], &["rsa_public.pem"]);
    let other_app = with(claims(), "aud", json!("another-app"));
    let token = sign(Algorithm::RS256, &rsa(), None, &other_app);
    assert_eq!(verify(&app, &token).await, Err(JwtError::WrongAudience));
    let other_idp = with(claims(), "iss", json!("https://other-idp.example"));
    let token = sign(Algorithm::RS256, &rsa(), None, &other_idp);
    assert_eq!(verify(&app, &token).await, Err(JwtError::WrongIssuer));
    let token = sign(Algorithm::RS256, &rsa(), None, &claims());
    assert_eq!(verify(&app, &token).await, Ok("alice".into()));
}
