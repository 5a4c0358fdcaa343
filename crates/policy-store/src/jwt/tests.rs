//! What [`CompiledJwt::compile`] accepts and refuses. Verification itself is tested in the
//! gateway (`crates/gateway/tests/jwt`), whose key fixtures these tests share.

use super::testing::*;
use super::*;

const LOOPBACK: CompileOptions = CompileOptions {
    allow_loopback_jwks: true,
};

fn errors(settings: &AppAuth) -> Vec<JwtConfigError> {
    errors_with(settings, CompileOptions::default())
}

fn errors_with(settings: &AppAuth, options: CompileOptions) -> Vec<JwtConfigError> {
    CompiledJwt::compile(settings, options)
        .unwrap_err()
        .iter()
        .cloned()
        .collect()
}

fn compiles(settings: &AppAuth) -> CompiledJwt {
    CompiledJwt::compile(settings, CompileOptions::default()).unwrap()
}

#[test]
fn compile_refuses_none() {
    for name in ["none", "NONE", "None"] {
        let err =
            CompiledJwt::compile(&hs_app(&["HS256", name]), CompileOptions::default()).unwrap_err();
        assert_eq!(
            err.iter().collect::<Vec<_>>(),
            [&JwtConfigError::NoneAlgorithm]
        );
        assert!(err.to_string().starts_with("algorithms: "), "{err}");
    }
}

#[test]
fn compile_errors_name_the_field() {
    let cases: Vec<(AppAuth, &str)> = vec![
        (settings(&[]), "algorithms: allow at least one algorithm"),
        (
            hs_app(&["HS257"]),
            "algorithms: unknown algorithm \"HS257\"",
        ),
        (settings(&["HS256"]), "hs_secret: HS256 is allowed"),
        (
            AppAuth {
                hs_secret: Some(SecretString::from("")),
                ..settings(&["HS512"])
            },
            "hs_secret: HS512 is allowed",
        ),
        (
            AppAuth {
                hs_secret: Some(SecretString::from("too-short")),
                ..settings(&["HS256"])
            },
            "hs_secret: must be at least 32 bytes",
        ),
        (settings(&["RS256"]), "public_keys: RS256 is allowed"),
        (
            keyed_app(&["ES256", "ES384"], &["ec256_public.pem"]),
            "public_keys: ES384 is allowed but no EC P-384 public key",
        ),
        (
            AppAuth {
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
            AppAuth {
                public_keys: vec![
                    format!("kid: a\n{}", fixture("rsa_public.pem")),
                    format!("kid: a\n{}", fixture("rsa2_public.pem")),
                ],
                ..settings(&["RS256"])
            },
            "public_keys[1]: duplicate kid \"a\"",
        ),
        (
            AppAuth {
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
            AppAuth {
                public_keys: vec![fixture("rsa_public.pem").replace("MIIB", "MIIC")],
                ..settings(&["RS256"])
            },
            "public_keys[0]: the key data is malformed",
        ),
        (
            // The index is the entry's position as given, blank entries included.
            AppAuth {
                public_keys: vec![String::new(), "junk".into()],
                ..settings(&["RS256"])
            },
            "public_keys[1]: not a PEM",
        ),
        (
            jwks_app(&["RS256"], "http://idp.example.com/jwks"),
            "jwks_url: must be an https URL",
        ),
        (
            jwks_app(&["RS256"], "jwks.json"),
            "jwks_url: not a valid URL",
        ),
        (
            AppAuth {
                issuer: None,
                ..keyed_app(&["RS256"], &["rsa_public.pem"])
            },
            "issuer: required",
        ),
        (
            AppAuth {
                audiences: vec![" ".into()],
                ..keyed_app(&["RS256"], &["rsa_public.pem"])
            },
            "audiences: required",
        ),
        (
            AppAuth {
                user_claim: String::new(),
                ..hs_app(&["HS256"])
            },
            "user_claim: a claim name",
        ),
        (
            AppAuth {
                user_claim: "a/b".into(),
                ..hs_app(&["HS256"])
            },
            "user_claim: a claim name",
        ),
        (
            AppAuth {
                leeway_seconds: 100_000,
                ..hs_app(&["HS256"])
            },
            "leeway_seconds: between 0 and 600",
        ),
    ];
    for (settings, expected) in cases {
        let err = CompiledJwt::compile(&settings, CompileOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(expected),
            "{err:?} does not start with {expected:?}"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let app = AppAuth {
        issuer: None,
        audiences: Vec::new(),
        algorithms: vec!["HS256".into(), "RS256".into(), "XS1".into()],
        hs_secret: Some(SecretString::from("short")),
        public_keys: vec![fixture("rsa_public.pem"), "junk".into()],
        jwks_url: Some("ftp://idp.example.com/jwks".into()),
        user_claim: String::new(),
        leeway_seconds: -1,
        ..settings(&[])
    };
    let err = CompiledJwt::compile(&app, CompileOptions::default()).unwrap_err();
    let fields: Vec<_> = err.field_errors().into_iter().map(|e| e.field).collect();
    assert_eq!(
        fields,
        [
            "algorithms",
            "hs_secret",
            "public_keys[1]",
            "jwks_url",
            "issuer",
            "audiences",
            "user_claim",
            "leeway_seconds",
        ]
    );
    // The messages are the plain words, without the field.
    let messages = err.field_errors();
    assert_eq!(messages[1].message, "must be at least 32 bytes long");
    assert!(!err.to_string().contains('`'), "{err}");
}

#[test]
fn leeway_bounds_are_the_gateways() {
    for (leeway, ok) in [
        (0, true),
        (600, true),
        (601, false),
        (900, false),
        (-1, false),
    ] {
        let app = AppAuth {
            leeway_seconds: leeway,
            ..hs_app(&["HS256"])
        };
        let result = CompiledJwt::compile(&app, CompileOptions::default());
        assert_eq!(result.is_ok(), ok, "leeway {leeway}");
        if let Ok(jwt) = result {
            assert_eq!(jwt.leeway(), u64::try_from(leeway).unwrap());
        } else {
            assert_eq!(
                result.unwrap_err().iter().collect::<Vec<_>>(),
                [&JwtConfigError::LeewayOutOfRange]
            );
        }
    }
}

#[test]
fn compile_refuses_an_ec_point_off_the_curve() {
    use base64::Engine;
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
    let app = AppAuth {
        public_keys: vec![broken],
        ..settings(&["ES256"])
    };
    assert_eq!(
        errors(&app),
        [JwtConfigError::BadPublicKey {
            index: 0,
            reason: KeyError::Invalid(KeyType::P256)
        }]
    );
    assert_eq!(
        CompiledJwt::compile(&app, CompileOptions::default())
            .unwrap_err()
            .to_string(),
        "public_keys[0]: not a valid EC P-256 public key"
    );
}

#[test]
fn compile_accepts_reasonable_settings() {
    // Names are case-insensitive in settings; blank optional fields mean unset.
    let app = AppAuth {
        audiences: vec![String::new(), AUDIENCE.into()],
        jwks_url: Some(String::new()),
        hs_secret: Some(SecretString::from(HS_SECRET)),
        public_keys: vec![
            fixture("rsa_public.pem"),
            format!("kid: ec\n{}", fixture("ec256_public.pem")),
            format!("KID:   ed-1  \n{}", fixture("ed25519_public.pem")),
            fixture("ec384_public.pem"),
            fixture("rsa_public_pkcs1.pem"),
            String::new(),
        ],
        ..settings(&[
            "hs256", "rs256", "PS512", "es256", "ES384", "eddsa", "EdDSA",
        ])
    };
    let jwt = compiles(&app);
    assert_eq!(jwt.algorithms().len(), 7 - 1);
    assert_eq!(jwt.jwks_url(), None);
    assert_eq!(jwt.user_claim(), "sub");
    assert_eq!(jwt.issuer(), Some(ISSUER));
    assert!(jwt.hs_key().is_some());
    let kids: Vec<_> = jwt.static_keys().iter().map(PublicKey::kid).collect();
    assert_eq!(kids, [None, Some("ec"), Some("ed-1"), None, None]);
    let types: Vec<_> = jwt.static_keys().iter().map(PublicKey::key_type).collect();
    assert_eq!(
        types,
        [
            KeyType::Rsa,
            KeyType::P256,
            KeyType::Ed25519,
            KeyType::P384,
            KeyType::Rsa
        ]
    );
}

#[test]
fn pasted_keys_may_be_indented_and_rewrapped() {
    let pem = fixture("rsa_public.pem");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    // One long line, indented, with CRLF line ends and a blank line: as a form might send it.
    let pasted = format!(
        "  kid: k1\r\n    -----BEGIN PUBLIC KEY-----\r\n\r\n    {body}  \r\n    -----END PUBLIC KEY-----\r\n"
    );
    let app = AppAuth {
        public_keys: vec![pasted],
        ..settings(&["RS256"])
    };
    assert_eq!(compiles(&app).static_keys()[0].kid(), Some("k1"));
}

/// Issue 14: with keys from an identity provider, a token that provider minted for any other
/// application would otherwise be accepted.
#[test]
fn issuer_and_audience_are_required_unless_hs_only() {
    for app in [
        keyed_app(&["RS256"], &["rsa_public.pem"]),
        jwks_app(&["ES256"], "https://idp.example.com/jwks"),
        AppAuth {
            hs_secret: Some(SecretString::from(HS_SECRET)),
            ..keyed_app(&["HS256", "EdDSA"], &["ed25519_public.pem"])
        },
    ] {
        compiles(&app);
        let open = AppAuth {
            issuer: Some("  ".into()),
            audiences: vec![String::new()],
            ..app
        };
        assert_eq!(
            errors(&open),
            [
                JwtConfigError::IssuerRequired,
                JwtConfigError::AudienceRequired
            ]
        );
    }
    // HS-only apps may leave both empty: the secret is the app's own.
    let jwt = compiles(&hs_app(&["HS256", "HS512"]));
    assert_eq!(jwt.issuer(), None);
}

#[test]
fn jwks_url_rules() {
    let ok = |url: &str, options| check_jwks_url(url, options);
    assert!(
        ok(
            "https://idp.example.com/.well-known/jwks.json",
            CompileOptions::default()
        )
        .is_ok()
    );
    for url in ["http://idp.example.com/jwks", "ftp://idp.example.com/jwks"] {
        assert_eq!(ok(url, LOOPBACK), Err(JwksUrlError::NotHttps), "{url}");
    }
    assert_eq!(
        ok("https://user:pw@idp.example.com/jwks", LOOPBACK),
        Err(JwksUrlError::Credentials)
    );
    assert!(matches!(
        ok("not a url", LOOPBACK),
        Err(JwksUrlError::Invalid(_))
    ));
    for url in [
        "https://10.1.2.3/jwks",
        "https://192.168.0.1/jwks",
        "https://169.254.169.254/latest/meta-data",
        "https://100.64.0.1/jwks",
        "https://0.0.0.0/jwks",
        "https://[fd00::1]/jwks",
        "https://[fe80::1]/jwks",
        "https://[::ffff:10.0.0.1]/jwks",
        // The shared address rule (`jwt::address`): reserved ranges and IPv6 forms that
        // carry a private IPv4 address are refused too.
        "https://224.0.0.1/jwks",
        "https://198.18.0.1/jwks",
        "https://[64:ff9b::a9fe:a9fe]/jwks",
        "https://[2002:a00:1::1]/jwks",
    ] {
        assert_eq!(
            ok(url, LOOPBACK),
            Err(JwksUrlError::PrivateAddress),
            "{url}"
        );
    }
}

#[test]
fn loopback_jwks_needs_the_option() {
    for url in [
        "http://127.0.0.1:8080/jwks",
        "https://127.0.0.2/jwks",
        "http://localhost/jwks",
        "http://LOCALHOST./jwks",
        "http://idp.localhost/jwks",
        "http://[::1]:9000/jwks",
        "http://[::ffff:127.0.0.1]/jwks",
    ] {
        assert_eq!(
            check_jwks_url(url, CompileOptions::default()),
            Err(JwksUrlError::Loopback),
            "{url}"
        );
        assert!(check_jwks_url(url, LOOPBACK).is_ok(), "{url}");
        let app = jwks_app(&["RS256"], url);
        assert_eq!(
            errors(&app),
            [JwtConfigError::BadJwksUrl(JwksUrlError::Loopback)]
        );
        assert!(errors_with(&app, CompileOptions::default())[0].field() == "jwks_url");
        let jwt = CompiledJwt::compile(&app, LOOPBACK).unwrap();
        assert!(jwt.jwks_url().is_some());
    }
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let app = hs_app(&["HS256"]);
    assert!(!format!("{app:?}").contains(HS_SECRET));
    assert!(!format!("{:?}", compiles(&app)).contains(HS_SECRET));
    let short = AppAuth {
        hs_secret: Some(SecretString::from("short-secret")),
        ..settings(&["HS256"])
    };
    let err = CompiledJwt::compile(&short, CompileOptions::default()).unwrap_err();
    assert!(!format!("{err} {err:?}").contains("short-secret"));
}

#[test]
fn check_auth_input_uses_the_stored_secret_and_names_fields() {
    let input = AppAuthInput {
        issuer: None,
        audiences: Vec::new(),
        algorithms: vec!["HS256".into()],
        hs_secret: None,
        public_keys: Vec::new(),
        jwks_url: None,
        user_claim: "sub".into(),
        leeway_seconds: 60,
    };
    let stored = SecretString::from(HS_SECRET);
    assert_eq!(
        check_auth_input(1, &input, Some(&stored), CompileOptions::default()),
        []
    );
    assert_eq!(
        check_auth_input(1, &input, None, CompileOptions::default()),
        [FieldError::new(
            "hs_secret",
            "HS256 is allowed, so an HS secret is required"
        )]
    );
    // A new secret replaces the stored one, and is judged itself.
    let weak = AppAuthInput {
        hs_secret: Some(SecretString::from("short")),
        ..input.clone()
    };
    assert_eq!(
        check_auth_input(1, &weak, Some(&stored), CompileOptions::default())
            .into_iter()
            .map(|e| e.field)
            .collect::<Vec<_>>(),
        ["hs_secret"]
    );
    // What the gateway used to refuse after the store had accepted it (issue 8, item 4).
    let jwks = AppAuthInput {
        issuer: Some(ISSUER.into()),
        audiences: vec![AUDIENCE.into()],
        algorithms: vec!["RS256".into()],
        jwks_url: Some("http://example.com/jwks".into()),
        leeway_seconds: 900,
        ..input
    };
    let fields: Vec<_> = check_auth_input(1, &jwks, None, CompileOptions::default())
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(fields, ["jwks_url", "leeway_seconds"]);
}
