//! JWT settings for tests, shared by policy-store's compile tests and the gateway's
//! verification tests (`testing` feature). The key pairs live in `crates/gateway/tests/fixtures`.

use secrecy::SecretString;

use crate::model::AppAuth;

/// An HS secret long enough to compile.
pub const HS_SECRET: &str = "test-hs-secret-0123456789abcdef-0123456789";
/// The issuer of [`settings`].
pub const ISSUER: &str = "https://idp.example";
/// The one audience of [`settings`].
pub const AUDIENCE: &str = "stsgate";

/// A file of `crates/gateway/tests/fixtures` (see its README for how the keys were made).
pub fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../gateway/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Settings with `algorithms`, [`ISSUER`] and [`AUDIENCE`] (mandatory with asymmetric keys),
/// and nothing else.
pub fn settings(algorithms: &[&str]) -> AppAuth {
    AppAuth {
        app_id: 1,
        issuer: Some(ISSUER.into()),
        audiences: vec![AUDIENCE.into()],
        algorithms: algorithms.iter().map(|a| (*a).to_owned()).collect(),
        hs_secret: None,
        public_keys: Vec::new(),
        jwks_url: None,
        user_claim: "sub".into(),
        leeway_seconds: 60,
    }
}

/// An HS-only app: [`HS_SECRET`], and neither issuer nor audience.
pub fn hs_app(algorithms: &[&str]) -> AppAuth {
    AppAuth {
        issuer: None,
        audiences: Vec::new(),
        hs_secret: Some(SecretString::from(HS_SECRET)),
        ..settings(algorithms)
    }
}

/// [`settings`] with the public keys of these fixture files.
pub fn keyed_app(algorithms: &[&str], keys: &[&str]) -> AppAuth {
    AppAuth {
        public_keys: keys.iter().map(|k| fixture(k)).collect(),
        ..settings(algorithms)
    }
}

/// [`settings`] with a JWKS URL.
pub fn jwks_app(algorithms: &[&str], url: &str) -> AppAuth {
    AppAuth {
        jwks_url: Some(url.to_owned()),
        ..settings(algorithms)
    }
}
