//! The admin pages' "test a token", done with the gateway's own pieces: the app as the gateway
//! resolves it (compiled JWT settings, block list, template) and the gateway's verifier (JWKS
//! cache included). It runs the credential path up to the policy and stops there: no rate-limit
//! token is taken, no STS call is made, no credential is issued and no issuance row is written.

use std::sync::Arc;

use std::future::Future;
use std::pin::Pin;

use admin::{TokenOutcome, TokenTester, TokenVerdict};
use gateway::apps::AppResolver;
use gateway::jwt::{JwtError, JwtVerifier, Observed};
use policy_store::{RenderContext, RenderError, Store};

pub struct GatewayTokenTester {
    pub apps: Arc<AppResolver>,
    pub verifier: JwtVerifier,
    pub store: Arc<dyn Store>,
    /// The requests' database budget: loading the app takes no longer here either.
    pub database_timeout: std::time::Duration,
}

fn refused(status: u16, code: &str, reason: impl Into<String>) -> TokenOutcome {
    TokenOutcome::Refused {
        status,
        code: code.to_owned(),
        reason: reason.into(),
    }
}

fn or_missing(v: Option<&str>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| format!("“{v}”"))
}

/// `exp` and the user claim, read without verification, for the admin to compare.
fn payload_facts(token: &str, user_claim: &str) -> Vec<(String, String)> {
    use base64::Engine as _;
    let Some(payload) = token.split('.').nth(1) else {
        return Vec::new();
    };
    let Some(claims) = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&b).ok()
        })
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let short = |v: &serde_json::Value| -> String {
        let s = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        s.chars().filter(|c| !c.is_control()).take(64).collect()
    };
    if let Some(v) = claims.get(user_claim) {
        out.push((user_claim.to_owned(), short(v)));
    }
    if let Some(exp) = claims.get("exp").and_then(serde_json::Value::as_i64) {
        let left = exp - crate::unix_now();
        let when = if left >= 0 {
            format!("{exp} (in {left} s)")
        } else {
            format!("{exp} ({} s ago)", -left)
        };
        out.push(("exp".into(), when));
    }
    out
}

impl GatewayTokenTester {
    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.database_timeout
    }

    async fn run(&self, slug: &str, token: &str, seen: &Observed) -> TokenOutcome {
        let app = match self.apps.resolve(slug, self.deadline()).await {
            Ok(Some(app)) => app,
            Ok(None) => return refused(404, "unknown_app", "There is no app with this name."),
            Err(_) => {
                return refused(
                    503,
                    "unavailable",
                    "The app could not be loaded (database unavailable): try again.",
                );
            }
        };
        if !app.app.enabled {
            return refused(
                403,
                "app_disabled",
                "The app is disabled: enable it on its page.",
            );
        }
        let Some(jwt) = app.jwt.as_ref() else {
            return refused(
                503,
                "app_misconfigured",
                "The app has no usable JWT settings: save them on this page first.",
            );
        };
        let verified = match self.verifier.verify(jwt, token).await {
            Ok(v) => v,
            Err(e) => return self.explain(&app.app, jwt.issuer(), &e, seen).await,
        };
        if app.blocked.contains(&verified.subject) {
            return refused(
                403,
                "subject_blocked",
                "The token is valid, but its subject is blocked for this app (see Blocked subjects).",
            );
        }
        let Some(template) = app.template.as_ref() else {
            return refused(
                403,
                "no_policy",
                "The token is valid, but the app has no policy: save one in the policy editor.",
            );
        };
        let rendered = template.document.render(
            &RenderContext {
                app: &app.app.slug,
                subject: &verified.subject,
                claims: &verified.claims,
            },
            &app.bucket,
        );
        match rendered {
            Ok(r) => TokenOutcome::WouldIssue {
                subject: verified.subject,
                prefix: r.prefix,
                actions: r.actions,
            },
            Err(RenderError::Invalid(_)) => refused(
                403,
                "no_policy",
                "The token is valid, but the active policy cannot be rendered: save it again in the policy editor.",
            ),
            Err(e) => refused(
                403,
                "subject_not_allowed",
                format!("The token is valid, but its user cannot get a storage path: {e}."),
            ),
        }
    }

    async fn explain(
        &self,
        app: &policy_store::App,
        issuer: Option<&str>,
        e: &JwtError,
        seen: &Observed,
    ) -> TokenOutcome {
        if let JwtError::JwksUnavailable(why) = e {
            return refused(
                503,
                "unavailable",
                format!("The app's JWKS could not be fetched ({why}): check the JWKS URL."),
            );
        }
        let auth = self.store.app_auth(app.id).await.ok().flatten();
        let algs = auth
            .as_ref()
            .map(|a| a.algorithms.join(", "))
            .unwrap_or_default();
        let audiences = auth
            .as_ref()
            .map(|a| a.audiences.join(", "))
            .unwrap_or_default();
        let reason = match e {
            JwtError::WrongAudience => format!(
                "The token's audience (aud) is {}; this app accepts {audiences}. Mint the token for this app, or add its audience above.",
                or_missing(seen.aud.as_deref())
            ),
            JwtError::WrongIssuer => format!(
                "The token's issuer (iss) is {}; this app accepts “{}”.",
                or_missing(seen.iss.as_deref()),
                issuer.unwrap_or("")
            ),
            JwtError::AlgorithmNotAllowed(alg) => format!(
                "The token is signed with {alg}; this app allows {algs}. Tick {alg} above (with its key), or sign with an allowed algorithm."
            ),
            JwtError::BadSignature => "The signature does not match this app's keys: the token was signed with another secret or key.".into(),
            JwtError::UnknownKey => format!(
                "No key of this app matches the token's key id (kid {}): add the key, or check the JWKS URL.",
                or_missing(seen.kid.as_deref())
            ),
            JwtError::Expired => "The token has expired (exp is past, beyond the leeway): mint a new one.".into(),
            JwtError::NotYetValid => "The token is not valid yet (nbf or iat in the future, beyond the leeway): check the clocks.".into(),
            JwtError::MissingExpiry => "The token has no exp claim: the gateway requires one.".into(),
            JwtError::MissingUserClaim(claim) => format!(
                "The token has no string or integer “{claim}” claim (this app's user claim)."
            ),
            other => format!("{other}."),
        };
        refused(401, &format!("invalid_token:{}", e.code()), reason)
    }
}

impl TokenTester for GatewayTokenTester {
    fn test<'a>(
        &'a self,
        app: &'a str,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = TokenVerdict> + Send + 'a>> {
        Box::pin(async move {
            let seen = Observed::of(token);
            let outcome = self.run(app, token, &seen).await;
            let user_claim = match self.apps.resolve(app, self.deadline()).await {
                Ok(Some(a)) => a
                    .jwt
                    .as_ref()
                    .map_or_else(|| "sub".to_owned(), |j| j.user_claim().to_owned()),
                _ => "sub".to_owned(),
            };
            let mut facts: Vec<(String, String)> = seen
                .pairs()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            facts.extend(payload_facts(token, &user_claim));
            TokenVerdict {
                outcome,
                seen: facts,
            }
        })
    }
}
