//! Keys from a JWKS URL: fetching, caching, refetching and what is never used.

use super::*;

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
        ..loopback_jwks()
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
        ..loopback_jwks()
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
        assert_eq!(err, JwtError::JwksUnavailable(JwksFetchError::Connect));
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
        assert_eq!(err, JwtError::JwksUnavailable(JwksFetchError::Status(503)));
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
    assert_eq!(err, JwtError::JwksUnavailable(JwksFetchError::Status(302)));
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
        ..loopback_jwks()
    });
    let token = sign(Algorithm::RS256, &rsa(), Some("a"), &claims());
    let err = verifier.verify(&app, &token).await.unwrap_err();
    assert_eq!(
        err,
        JwtError::JwksUnavailable(JwksFetchError::TooLarge(2048))
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
    let app = compile(&AppAuth {
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
    let app = compile(&AppAuth {
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

/// Issue 8: a JWKS URL on loopback is refused unless the deployment allows it (`stsgate dev`).
#[tokio::test]
async fn loopback_jwks_needs_the_configured_option() {
    let server =
        JwksServer::start(jwks(&[jwk(&rsa(), Algorithm::RS256, "a")]), Duration::ZERO).await;
    let app = jwks_app(&["RS256"], &server.url);

    let closed = JwksConfig::default();
    assert!(!closed.allow_loopback);
    let err = CompiledJwt::compile(&app, closed.compile_options()).unwrap_err();
    assert!(err.to_string().starts_with("jwks_url: "), "{err}");

    let open = JwksConfig {
        allow_loopback: true,
        ..JwksConfig::default()
    };
    let jwt = CompiledJwt::compile(&app, open.compile_options()).unwrap();
    let verifier = JwtVerifier::new(open);
    let token = sign(Algorithm::RS256, &rsa(), Some("a"), &claims());
    assert_eq!(
        verifier.verify(&jwt, &token).await.unwrap().subject,
        "alice"
    );
    assert_eq!(server.fetches(), 1);
    server.stop().await;
}

/// Issue 8: the fetch itself checks where it connects, whatever the compile step let through.
/// A host name that resolves to loopback (`localhost` here; an attacker's DNS name in real
/// life) is refused after the lookup unless loopback is allowed, and never connected to.
#[tokio::test]
async fn a_name_resolving_to_loopback_is_fetched_only_when_allowed() {
    let server =
        JwksServer::start(jwks(&[jwk(&rsa(), Algorithm::RS256, "a")]), Duration::ZERO).await;
    let by_name = server.url.replace("127.0.0.1", "localhost");
    // Compiled with loopback allowed, as a name the store cannot judge would be.
    let app = compile(&jwks_app(&["RS256"], &by_name));
    let token = sign(Algorithm::RS256, &rsa(), Some("a"), &claims());

    let closed = JwtVerifier::new(JwksConfig::default());
    let err = closed.verify(&app, &token).await.unwrap_err();
    assert_eq!(
        err,
        JwtError::JwksUnavailable(JwksFetchError::NonPublicAddress)
    );
    assert_eq!(
        server.fetches(),
        0,
        "nothing was sent to the refused address"
    );

    let open = JwtVerifier::new(loopback_jwks());
    assert_eq!(open.verify(&app, &token).await.unwrap().subject, "alice");
    assert_eq!(server.fetches(), 1);
    server.stop().await;
}

/// A URL that names a loopback address skips DNS; the fetch checks the address itself.
#[tokio::test]
async fn a_loopback_address_in_the_url_is_refused_at_fetch_time_too() {
    let server =
        JwksServer::start(jwks(&[jwk(&rsa(), Algorithm::RS256, "a")]), Duration::ZERO).await;
    let app = compile(&jwks_app(&["RS256"], &server.url));
    let token = sign(Algorithm::RS256, &rsa(), Some("a"), &claims());
    let err = JwtVerifier::new(JwksConfig::default())
        .verify(&app, &token)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        JwtError::JwksUnavailable(JwksFetchError::NonPublicAddress)
    );
    assert_eq!(err.code(), "jwks_unavailable");
    assert_eq!(server.fetches(), 0);
    server.stop().await;
}
