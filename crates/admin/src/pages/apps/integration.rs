//! The integration card on an app's page: what to hand the app's developers. The credential
//! URL, what the JWT must contain (from the app's real settings), a curl line and the
//! cos-js-sdk-v5 / cos-python-sdk-v5 settings. Nothing secret is in it.

use policy_store::{App, AppAuth};

pub struct Integration {
    /// The full credential URL, or one with a placeholder host when the gateway's public
    /// address is not known to the admin listener.
    pub url: String,
    pub host_known: bool,
    /// What the token must carry, one requirement per line.
    pub claims: Vec<String>,
    pub curl: String,
    pub js: String,
    pub python: String,
}

/// Where the gateway answers when the admin listener does not know its public address.
const PLACEHOLDER_BASE: &str = "https://YOUR-GATEWAY";

impl Integration {
    pub fn new(app: &App, auth: Option<&AppAuth>, public_url: Option<&str>) -> Self {
        let base = public_url
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| PLACEHOLDER_BASE.to_owned());
        let url = format!("{base}/v1/apps/{}/credentials", app.slug);
        let claims = match auth {
            None => vec!["No JWT settings yet: every token is refused. Set them first.".into()],
            Some(a) => requirements(a),
        };
        let (bucket, region) = (&app.bucket, &app.region);
        let curl = format!("curl -s -H \"Authorization: Bearer $JWT\" '{url}'");
        let js = format!(
            "// cos-js-sdk-v5: the SDK asks for credentials when it needs them\n\
             const cos = new COS({{\n  \
               getAuthorization: async (options, callback) => {{\n    \
                 const res = await fetch('{url}?format=cos-js', {{\n      \
                   headers: {{ Authorization: 'Bearer ' + userJwt }},\n    \
                 }});\n    \
                 callback(await res.json()); // TmpSecretId, TmpSecretKey, SecurityToken, StartTime, ExpiredTime\n  \
               }},\n\
             }});\n\
             // Bucket: '{bucket}', Region: '{region}'; keys start with the returned Prefix\n\
             cos.putObject({{ Bucket: '{bucket}', Region: '{region}', Key: prefix + 'photo.jpg', Body: file }});"
        );
        let python = format!(
            "# cos-python-sdk-v5\n\
             import requests\n\
             from qcloud_cos import CosConfig, CosS3Client\n\n\
             r = requests.get(\"{url}\",\n                 \
                 headers={{\"Authorization\": f\"Bearer {{user_jwt}}\"}}, timeout=10).json()\n\
             c = r[\"credentials\"]\n\
             config = CosConfig(Region=\"{region}\", SecretId=c[\"tmpSecretId\"],\n                   \
                 SecretKey=c[\"tmpSecretKey\"], Token=c[\"sessionToken\"])\n\
             client = CosS3Client(config)\n\
             client.put_object(Bucket=\"{bucket}\", Key=r[\"prefix\"] + \"hello.txt\", Body=b\"hi\")"
        );
        Self {
            url,
            host_known: public_url.is_some(),
            claims,
            curl,
            js,
            python,
        }
    }
}

/// The token requirements the gateway checks, in its order.
fn requirements(a: &AppAuth) -> Vec<String> {
    let mut out = Vec::new();
    let algs = if a.algorithms.is_empty() {
        "none allowed yet: set them on the JWT settings page".to_owned()
    } else {
        a.algorithms.join(", ")
    };
    let keys = if a.hs_secret.is_some() && a.algorithms.iter().any(|x| x.starts_with("HS")) {
        "the app's HS secret (shared with your backend only, never with the app itself)".to_owned()
    } else if let Some(url) = a.jwks_url.as_deref().filter(|u| !u.is_empty()) {
        format!("a key from {url} (the header's kid picks it)")
    } else {
        format!(
            "one of the {} public key(s) on the JWT settings page",
            a.public_keys.len()
        )
    };
    out.push(format!("Header alg: {algs}; signed with {keys}."));
    match a.issuer.as_deref().filter(|i| !i.trim().is_empty()) {
        Some(iss) => out.push(format!("iss: exactly {iss}")),
        None => out.push("iss: any (no issuer is set)".into()),
    }
    if a.audiences.is_empty() {
        out.push("aud: not checked (no audience is set)".into());
    } else {
        out.push(format!("aud: one of {}", a.audiences.join(", ")));
    }
    out.push(format!(
        "{}: the user's id, 1 to 128 characters of A-Z a-z 0-9 . _ @ = + | - (it becomes their storage prefix)",
        a.user_claim
    ));
    out.push(format!(
        "exp: required; nbf and iat are honoured, with {} s of clock leeway",
        a.leeway_seconds
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn app() -> App {
        App {
            id: 1,
            slug: "photos".into(),
            name: "Photos".into(),
            enabled: true,
            region: "ap-guangzhou".into(),
            bucket: "examplebucket-1250000000".into(),
            mode: policy_store::StsMode::FederationToken,
            role_arn: None,
            external_id: None,
            secret_id: "AKIDsecretid".into(),
            secret_key: SecretString::from("permanent-secret-key"),
            sts_endpoint: None,
            duration_default: 1800,
            duration_max: 7200,
            min_remaining: None,
            rate_subject_per_minute: 60,
            rate_app_per_second: 100,
            allowed_origins: vec!["https://photos.example.com".into()],
            active_template_version: Some(1),
            updated_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_card_names_the_url_and_claims_and_no_secret() {
        let auth = AppAuth {
            app_id: 1,
            issuer: Some("https://idp.example.com".into()),
            audiences: vec!["photos-mobile".into()],
            algorithms: vec!["RS256".into()],
            hs_secret: Some(SecretString::from(
                "hs-secret-that-is-long-enough-0123456789",
            )),
            public_keys: Vec::new(),
            jwks_url: Some("https://idp.example.com/jwks".into()),
            user_claim: "uid".into(),
            leeway_seconds: 30,
        };
        let card = Integration::new(&app(), Some(&auth), Some("http://127.0.0.1:8080/"));
        assert_eq!(card.url, "http://127.0.0.1:8080/v1/apps/photos/credentials");
        assert!(card.host_known);
        let all = format!(
            "{}\n{}\n{}\n{}",
            card.claims.join("\n"),
            card.curl,
            card.js,
            card.python
        );
        for needle in [
            "iss: exactly https://idp.example.com",
            "aud: one of photos-mobile",
            "uid: the user's id",
            "a key from https://idp.example.com/jwks",
            "?format=cos-js",
            "Region=\"ap-guangzhou\"",
            "Bucket: 'examplebucket-1250000000'",
        ] {
            assert!(all.contains(needle), "{needle} missing:\n{all}");
        }
        for secret in ["permanent-secret-key", "hs-secret-that", "AKIDsecretid"] {
            assert!(!all.contains(secret), "{secret} shown");
        }
        let unknown = Integration::new(&app(), None, None);
        assert!(!unknown.host_known);
        assert!(unknown.url.starts_with("https://YOUR-GATEWAY/"));
    }
}
