//! The public HTTP API (DESIGN §3).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use actix_request_identifier::RequestId;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{ConnectionType, header};
use actix_web::middleware::{Next, from_fn};
use actix_web::{HttpRequest, HttpResponse, web};
use policy_store::Store;
use serde::Deserialize;
use serde_json::Value;

use crate::apps::AppResolver;
use crate::cors;
use crate::response::{CredentialsResponse, Format};
use crate::service::{CredentialRequest, Service};
#[allow(unused_imports)] // named in the OpenAPI annotation
use sts_core::error_body::ErrorBody;

/// Shared state of the public listener.
pub struct PublicState {
    pub service: Arc<Service>,
    /// The service's app cache, which CORS preflights are answered from.
    pub apps: Arc<AppResolver>,
    pub store: Arc<dyn Store>,
    pub trust_forwarded_for: bool,
    pub readiness: Arc<Readiness>,
}

/// `/readyz`'s database check, one at a time: probes that arrive while a ping is under way
/// share its answer, so a flood of unauthenticated probes holds at most one connection and
/// cannot take the pool from issuance. An answer is never reused once its ping is over.
///
/// Once [`Readiness::drain`] is called (at SIGTERM) the replica is not ready for good: load
/// balancers take it out of rotation while it still serves what reaches it.
#[derive(Debug, Default)]
pub struct Readiness {
    flight: Mutex<Option<Arc<tokio::sync::OnceCell<bool>>>>,
    pings: AtomicU64,
    draining: AtomicBool,
}

impl Readiness {
    /// From now on `/readyz` answers 503 and every response closes its connection.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Pings the database within `timeout`; probes arriving meanwhile share the answer.
    async fn check(&self, store: &dyn Store, timeout: std::time::Duration) -> bool {
        let flight = {
            let mut current = self.flight.lock().unwrap_or_else(PoisonError::into_inner);
            match current.as_ref() {
                Some(flight) if !flight.initialized() => flight.clone(),
                _ => current.insert(Arc::default()).clone(),
            }
        };
        *flight
            .get_or_init(|| async {
                self.pings.fetch_add(1, Ordering::Relaxed);
                let problem = match tokio::time::timeout(timeout, store.ping()).await {
                    Ok(Ok(())) => return true,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {timeout:?}"),
                };
                tracing::warn!(error = %problem, "not ready: database unreachable");
                false
            })
            .await
    }

    /// Database pings made so far.
    pub fn pings(&self) -> u64 {
        self.pings.load(Ordering::Relaxed)
    }
}

/// Largest accepted JSON body for the credential endpoint.
const MAX_BODY: usize = 16 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(MAX_BODY))
        .service(
            web::resource("/v1/apps/{app}/credentials")
                .wrap(from_fn(cors::cors))
                .route(web::get().to(credentials))
                .route(web::post().to(credentials))
                .route(web::method(actix_web::http::Method::OPTIONS).to(cors::options)),
        )
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// The access log: one line per request, under the id [`RequestIdentifier`] gave it.
///
/// [`RequestIdentifier`] (outside this middleware) gives every request a new UUID and
/// echoes it as `x-request-id` on every response. An inbound `x-request-id` is not reused:
/// the id keys the issuance log, and a client must not be able to make its request look like
/// another one there.
///
/// [`RequestIdentifier`]: actix_request_identifier::RequestIdentifier
pub async fn access_log(
    id: RequestId,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let (started, method, path) = (Instant::now(), req.method().clone(), req.path().to_owned());
    let res = next.call(req).await?;
    let (status, latency_us) = (res.status().as_u16(), started.elapsed().as_micros() as u64);
    tracing::info!(request_id = %id, %method, %path, status, latency_us, "request");
    Ok(res)
}

/// While the replica drains, every response says `Connection: close`, so clients and proxies
/// holding keep-alive connections to it reconnect elsewhere before its listeners close.
pub async fn close_when_draining(
    state: web::Data<PublicState>,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut res = next.call(req).await?;
    if state.readiness.draining() {
        res.response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    Ok(res)
}

/// Options from the query string or a JSON body. `actions` is a list, or a comma-separated
/// string in a query.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Options {
    /// A subset of the template's actions: a list, or comma-separated in a query
    /// (`PutObject`, `cos:PutObject` and `name/cos:PutObject` are the same). Never widens.
    #[schema(value_type = Option<Vec<String>>)]
    actions: Option<Value>,
    /// A sub-path inside the user's own prefix (`photos/2024/`); whole segments only.
    prefix: Option<String>,
    /// 1 … the app's maximum (default: the app's default).
    #[schema(value_type = Option<u32>)]
    duration_seconds: Option<Value>,
    /// `sdk` (default), `legacy` or `cos-js`.
    format: Option<String>,
    /// Cache busters that browser libraries add (`_=1700000000`); ignored.
    #[serde(rename = "_")]
    #[schema(ignore)]
    _cache_buster: Option<Value>,
}

struct Parsed {
    actions: Option<Vec<String>>,
    prefix: Option<String>,
    duration_seconds: Option<u64>,
    format: Format,
}

/// Why a request's options were refused (answered with 422 and this text).
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("invalid query options: {0}")]
    Query(#[source] serde_urlencoded::de::Error),
    #[error("the body must be a JSON object of options: {0}")]
    Body(#[source] serde_json::Error),
    #[error("actions must be a list of strings")]
    ActionsNotStrings,
    #[error("actions, when given, must name at least one action")]
    NoActions,
    #[error("duration_seconds must be a positive integer")]
    Duration,
    #[error("format must be one of: sdk, legacy, cos-js")]
    Format,
}

/// The options from the query string, overridden field by field by a JSON body.
fn read_options(query: &str, body: &[u8]) -> Result<Options, OptionsError> {
    let q: Options = serde_urlencoded::from_str(query).map_err(OptionsError::Query)?;
    if body.is_empty() {
        return Ok(q);
    }
    let b: Options = serde_json::from_slice(body).map_err(OptionsError::Body)?;
    Ok(Options {
        actions: b.actions.or(q.actions),
        prefix: b.prefix.or(q.prefix),
        duration_seconds: b.duration_seconds.or(q.duration_seconds),
        format: b.format.or(q.format),
        _cache_buster: None,
    })
}

fn parse_options(opts: Options) -> Result<Parsed, OptionsError> {
    let actions = match opts.actions {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            s.split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        Some(Value::Array(items)) => Some(
            items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(OptionsError::ActionsNotStrings),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(OptionsError::ActionsNotStrings),
    };
    if actions.as_ref().is_some_and(|a: &Vec<String>| a.is_empty()) {
        return Err(OptionsError::NoActions);
    }
    let duration_seconds = match opts.duration_seconds {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_u64().ok_or(OptionsError::Duration)?),
        Some(Value::String(s)) => Some(s.parse::<u64>().map_err(|_| OptionsError::Duration)?),
        Some(_) => return Err(OptionsError::Duration),
    };
    let format = match opts.format.as_deref() {
        None | Some("") | Some("sdk") => Format::Sdk,
        Some("legacy") => Format::Legacy,
        Some("cos-js") => Format::CosJs,
        Some(_) => return Err(OptionsError::Format),
    };
    Ok(Parsed {
        actions,
        prefix: opts.prefix.filter(|p| !p.is_empty()),
        duration_seconds,
        format,
    })
}

/// The client's address: the peer, or behind a trusted proxy the last entry of the last
/// `X-Forwarded-For` line. A proxy appends its entry to the last line or adds a line of its
/// own after the client's, so everything before that entry (other lines included) is
/// whatever the client sent.
fn source_ip(req: &HttpRequest, trust_forwarded_for: bool) -> Option<String> {
    if trust_forwarded_for
        && let Some(last) = req
            .headers()
            .get_all("x-forwarded-for")
            .last()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
        && let Ok(ip) = last.trim().parse::<std::net::IpAddr>()
    {
        return Some(ip.to_string());
    }
    req.peer_addr().map(|a| a.ip().to_string())
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    // A header that is not a bearer token is an invalid token, not a missing one.
    Some(if scheme.eq_ignore_ascii_case("bearer") {
        token.trim().to_owned()
    } else {
        String::new()
    })
}

/// A temporary COS credential for the user the JWT names, limited by the app's policy
/// template. Options in the query string or a JSON body (the body wins).
#[utoipa::path(
    method(get, post),
    path = "/v1/apps/{app}/credentials",
    tag = "credentials",
    params(("app" = String, Path, description = "The app's slug")),
    request_body(content = Options, description = "Options (also accepted in the query string)"),
    responses(
        (status = 200, description = "The credential, in the shape `format` asks for",
            body = CredentialsResponse),
        (status = 401, description = "missing or invalid JWT", body = ErrorBody),
        (status = 403, description = "subject not allowed or blocked, app disabled, no policy", body = ErrorBody),
        (status = 404, description = "unknown app", body = ErrorBody),
        (status = 422, description = "invalid options", body = ErrorBody),
        (status = 429, description = "rate limited (Retry-After)", body = ErrorBody),
        (status = 502, description = "STS refused the request", body = ErrorBody),
        (status = 503, description = "STS or the database unavailable", body = ErrorBody),
    ),
    security(("jwt" = []))
)]
pub(crate) async fn credentials(
    id: RequestId,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<PublicState>,
) -> HttpResponse {
    let request_id = id.as_str().to_owned();
    let parsed = read_options(req.query_string(), &body).and_then(parse_options);
    let (format, option_error, parsed) = match parsed {
        Ok(p) => (p.format, None, Some(p)),
        Err(e) => (Format::Sdk, Some(e.to_string()), None),
    };
    let request = CredentialRequest {
        app: path.into_inner(),
        token: bearer(&req),
        actions: parsed.as_ref().and_then(|p| p.actions.clone()),
        prefix: parsed.as_ref().and_then(|p| p.prefix.clone()),
        duration_seconds: parsed.as_ref().and_then(|p| p.duration_seconds),
        source_ip: source_ip(&req, state.trust_forwarded_for),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        request_id: request_id.clone(),
        option_error,
    };
    match state.service.handle(&request).await {
        Ok(issued) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"))
            .json(CredentialsResponse::new(&issued, format)),
        Err(e) => e.to_response(&request_id),
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// Ready when the database answers `SELECT 1` within the requests' database budget, and
/// not once the replica drains for a shutdown.
async fn readyz(state: web::Data<PublicState>) -> HttpResponse {
    if state.readiness.draining() {
        return HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("draining: shutting down\n");
    }
    if state
        .readiness
        .check(&*state.store, state.service.database_timeout())
        .await
    {
        HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n")
    } else {
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("database unreachable\n")
    }
}

async fn metrics(state: web::Data<PublicState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(
            state
                .service
                .metrics
                .render(state.service.cached_credentials()),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(q: &str) -> Result<Parsed, OptionsError> {
        parse_options(read_options(q, b"")?)
    }

    #[test]
    fn parses_query_options() {
        let p = opts("actions=name/cos:PutObject,GetObject&prefix=photos/&duration_seconds=900&format=cos-js").unwrap();
        assert_eq!(p.actions.unwrap(), ["name/cos:PutObject", "GetObject"]);
        assert_eq!(p.prefix.as_deref(), Some("photos/"));
        assert_eq!(p.duration_seconds, Some(900));
        assert_eq!(p.format, Format::CosJs);
        assert_eq!(opts("").unwrap().format, Format::Sdk);
    }

    #[test]
    fn refuses_bad_options() {
        let refused = |q: &str| opts(q).err().unwrap();
        assert!(matches!(
            refused("duration_seconds=abc"),
            OptionsError::Duration
        ));
        assert!(matches!(
            refused("duration_seconds=-1"),
            OptionsError::Duration
        ));
        assert!(matches!(refused("format=xml"), OptionsError::Format));
        assert!(matches!(refused("actions="), OptionsError::NoActions));
        assert!(matches!(refused("unknown=1"), OptionsError::Query(_)));
        let body = |b: &str| read_options("", b.as_bytes()).and_then(parse_options);
        assert!(matches!(body("[1]"), Err(OptionsError::Body(_))));
        assert!(matches!(
            body(r#"{"actions": [1]}"#),
            Err(OptionsError::ActionsNotStrings)
        ));
        assert!(matches!(
            body(r#"{"duration_seconds": 1.5}"#),
            Err(OptionsError::Duration)
        ));
    }

    /// Issue 8 "also check": twenty probes while the database is slow to answer make one
    /// ping, not twenty.
    #[tokio::test]
    async fn readiness_probes_share_one_ping() {
        let db = policy_store::testing::fresh_database().await.unwrap();
        let pool = policy_store::migrate::connect_pool(&db.url, 1)
            .await
            .unwrap();
        let store: Arc<dyn Store> = Arc::new(policy_store::PgStore::new(
            pool.clone(),
            policy_store::testing::test_cipher(),
        ));
        let readiness = Arc::new(Readiness::default());
        // The pool's only connection is busy, so the first probe's ping waits for it.
        let busy = pool.acquire().await.unwrap();
        let probes: Vec<_> = (0..20)
            .map(|_| {
                let (readiness, store) = (readiness.clone(), store.clone());
                tokio::spawn(async move {
                    readiness
                        .check(&*store, std::time::Duration::from_secs(5))
                        .await
                })
            })
            .collect();
        // A current-thread runtime: every probe runs up to its wait before this resumes.
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
        drop(busy);
        for probe in probes {
            assert!(probe.await.unwrap());
        }
        assert_eq!(readiness.pings(), 1);
        // A later probe pings again: an answer is not kept once its ping is over.
        assert!(
            readiness
                .check(&*store, std::time::Duration::from_secs(5))
                .await
        );
        assert_eq!(readiness.pings(), 2);
    }

    /// The wire shapes, key by key (the bodies borrow the cached credential).
    #[test]
    fn renders_the_three_response_shapes() {
        use serde_json::json;
        use sts_core::TemporaryCredentials;

        let credential = crate::credcache::CachedCredential::new(
            TemporaryCredentials {
                tmp_secret_id: "AKIDtmp".into(),
                tmp_secret_key: "k".into(),
                session_token: "t".into(),
                expired_time: 1_700_001_800,
                expiration: "2023-11-14T22:43:20Z".into(),
                request_id: "req".into(),
            },
            1_700_000_000,
            1_700_000_900,
            Instant::now(),
        );
        let issued = crate::service::Issued {
            credential: Arc::new(credential),
            bucket: "b-1250000000".into(),
            region: "ap-guangzhou".into(),
            prefix: "users/alice/".into(),
            cached: true,
        };
        let render = |f| serde_json::to_value(CredentialsResponse::new(&issued, f)).unwrap();
        let sdk = json!({
            "credentials": {"tmpSecretId": "AKIDtmp", "tmpSecretKey": "k", "sessionToken": "t"},
            "expiredTime": 1_700_001_800, "expiration": "2023-11-14T22:43:20Z",
            "startTime": 1_700_000_000, "requestId": "req", "bucket": "b-1250000000",
            "region": "ap-guangzhou", "prefix": "users/alice/",
        });
        assert_eq!(render(Format::Sdk), sdk);
        assert_eq!(
            render(Format::Legacy),
            json!({"code": 0, "message": "", "codeDesc": "Success", "data": sdk})
        );
        assert_eq!(
            render(Format::CosJs),
            json!({
                "TmpSecretId": "AKIDtmp", "TmpSecretKey": "k", "SecurityToken": "t",
                "StartTime": 1_700_000_000, "ExpiredTime": 1_700_001_800,
                "Expiration": "2023-11-14T22:43:20Z", "Bucket": "b-1250000000",
                "Region": "ap-guangzhou", "Prefix": "users/alice/",
            })
        );
    }

    #[test]
    fn a_body_overrides_the_query_field_by_field() {
        let p = read_options("prefix=q/&format=legacy", br#"{"prefix": "b/"}"#)
            .and_then(parse_options)
            .unwrap();
        assert_eq!(p.prefix.as_deref(), Some("b/"));
        assert_eq!(p.format, Format::Legacy);
    }
}
