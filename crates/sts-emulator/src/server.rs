use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_service::{IntoServiceFactory, ServiceFactoryExt, fn_service, map_config};
use actix_web::dev::{AppConfig, ServerHandle, Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::ContentType;
use actix_web::{App, HttpRequest, HttpResponse, guard, web};
use bytes::Bytes;
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::account::Account;
use crate::cos::{self, ObjectStore};
use crate::faults::{Faults, Tamper};
use crate::store::{CallRecord, IssuedCredential, Stats, Store};
use crate::sts::{self, StsFault};
use crate::wire::{CaseIo, NO_BODY_MARKER};

/// How the emulator is set up at start.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub accounts: Vec<Account>,
    /// STS requests per second per SecretId (STS's documented limit is 600).
    pub rate_limit: u32,
    /// Hosts a v1 signature may name besides the request's own `Host` (the SDKs sign their
    /// configured `domain`, `sts.tencentcloudapi.com` by default).
    pub signed_hosts: Vec<String>,
    pub faults: Faults,
    /// actix worker threads.
    pub workers: usize,
    /// Where the COS data plane keeps objects and in-progress multipart uploads across
    /// restarts; in memory when `None`. (Issued credentials always live in memory.)
    pub data_dir: Option<PathBuf>,
    /// The bucket for COS requests that name none in their Host or path (clients that only
    /// take a fixed endpoint).
    pub cos_default_bucket: Option<String>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            accounts: Vec::new(),
            rate_limit: 600,
            signed_hosts: vec![
                "sts.tencentcloudapi.com".to_owned(),
                "sts.internal.tencentcloudapi.com".to_owned(),
                "sts.intl.tencentcloudapi.com".to_owned(),
            ],
            faults: Faults::default(),
            workers: 2,
            data_dir: None,
            cos_default_bucket: None,
        }
    }
}

pub(crate) struct State {
    pub(crate) config: EmulatorConfig,
    pub(crate) store: Store,
    /// The COS data plane's objects and uploads.
    pub(crate) cos: ObjectStore,
    faults: Mutex<Faults>,
}

impl State {
    /// The emulator's clock in Unix seconds (honours the `clock_offset_secs` fault).
    pub(crate) fn now(&self) -> i64 {
        let offset = self.faults.lock().unwrap().clock_offset_secs;
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default()
            + offset
    }

    /// Decides, under one lock, which fault (if any) a request from `secret_id` gets.
    fn draw_fault(&self, secret_id: Option<&str>) -> (Duration, Option<Injected>) {
        let mut f = self.faults.lock().unwrap();
        if !f.applies_to(secret_id) {
            return (Duration::ZERO, None);
        }
        let latency = Duration::from_millis(f.latency_ms);
        let mut rng = rand::rng();
        let injected = if f.drop_next > 0 {
            f.drop_next -= 1;
            Some(Injected::Drop)
        } else if f.drop_rate > 0.0 && rng.random_bool(f.drop_rate) {
            Some(Injected::Drop)
        } else if f.fail_next > 0 {
            f.fail_next -= 1;
            Some(Injected::Error(f.error_code().to_owned()))
        } else if f.error_rate > 0.0 && rng.random_bool(f.error_rate) {
            Some(Injected::Error(f.error_code().to_owned()))
        } else if f.tamper_next > 0 {
            f.tamper_next -= 1;
            Some(Injected::Tamper(f.tamper.clone()))
        } else {
            None
        };
        (latency, injected)
    }
}

enum Injected {
    Error(String),
    Drop,
    /// Answer normally, then replace these values in the answer.
    Tamper(Tamper),
}

/// Puts a tampered value into a successful answer's `Response` object.
fn tamper(response: &mut Value, t: &Tamper) {
    if let Some(id) = &t.tmp_secret_id {
        response["Credentials"]["TmpSecretId"] = json!(id);
    }
    if let Some(id) = &t.request_id {
        response["RequestId"] = json!(id);
    }
    if let Some(e) = &t.expiration {
        response["Expiration"] = json!(e);
    }
    if let Some(e) = t.expired_time {
        response["ExpiredTime"] = json!(e);
    }
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A running emulator.
pub struct EmulatorHandle {
    addr: SocketAddr,
    state: Arc<State>,
    server: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl EmulatorHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn issued(&self) -> Vec<IssuedCredential> {
        self.state.store.all()
    }

    /// A credential by TmpSecretId, secrets included (for the data plane and tests).
    pub fn credential(&self, tmp_secret_id: &str) -> Option<IssuedCredential> {
        self.state.store.get(tmp_secret_id)
    }

    pub fn stats(&self) -> Stats {
        self.state.store.stats()
    }

    /// STS calls that arrived at or after `since_ms` (Unix milliseconds), oldest first.
    pub fn calls_since(&self, since_ms: i64) -> Vec<CallRecord> {
        self.state.store.calls_since(since_ms)
    }

    pub fn faults(&self) -> Faults {
        self.state.faults.lock().unwrap().clone()
    }

    pub fn set_faults(&self, faults: Faults) -> Result<(), String> {
        faults.validate()?;
        *self.state.faults.lock().unwrap() = faults;
        Ok(())
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the server to end.
    pub async fn stop(self) {
        self.server.stop(true).await;
        let _ = self.task.await;
    }

    /// Waits until the server ends (for `stsgate emulator`).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Starts the emulator on an already-bound listener (port 0 in tests).
pub fn start(config: EmulatorConfig, listener: TcpListener) -> std::io::Result<EmulatorHandle> {
    config.faults.validate().map_err(std::io::Error::other)?;
    let addr = listener.local_addr()?;
    let workers = config.workers.max(1);
    let cos = ObjectStore::open(config.data_dir.as_deref())?;
    let state = Arc::new(State {
        faults: Mutex::new(config.faults.clone()),
        config,
        store: Store::default(),
        cos,
    });
    let data = web::Data::from(state.clone());
    // What actix-web's HttpServer::listen builds (HTTP/1 only, as the workspace has no http2
    // feature), with each connection wrapped so that response header names get the case
    // Tencent's services write (see `wire`).
    let builder = actix_web::dev::Server::build();
    // Lets idle keep-alive connections close at once on stop, as actix-web's HttpServer does.
    let shutdown_signal = builder.graceful_shutdown_signal();
    let server = builder
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(5)
        .listen("stsgate-emulator", listener, move || {
            let app = App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(11 * 1024 * 1024))
                .wrap_fn(mark_bodiless_answers)
                .route("/_emulator/credentials", web::get().to(list_credentials))
                .route("/_emulator/stats", web::get().to(get_stats))
                .route("/_emulator/calls", web::get().to(get_calls))
                .route("/_emulator/faults", web::get().to(get_faults))
                .route("/_emulator/faults", web::put().to(put_faults))
                .service(
                    web::resource("/{tail:.*}")
                        .guard(guard::fn_guard(|ctx| {
                            ctx.app_data::<web::Data<State>>()
                                .is_some_and(|s| cos::is_cos_request(ctx.head(), s))
                        }))
                        .to(cos::handle),
                )
                .default_service(web::to(sts_endpoint));
            let signal = shutdown_signal.clone();
            let http = actix_http::HttpService::build()
                .graceful_shutdown_signal(move || {
                    let signal = signal.clone();
                    async move { signal.notified().await }
                })
                .local_addr(addr)
                .h1(map_config(
                    app.into_factory().map_err(|e| e.error_response()),
                    move |_| AppConfig::default(),
                ));
            fn_service(|io: actix_web::rt::net::TcpStream| {
                let peer = io.peer_addr().ok();
                let _ = io.set_nodelay(true);
                std::future::ready(Ok::<_, actix_http::error::DispatchError>((
                    CaseIo::new(io),
                    peer,
                )))
            })
            .and_then(http)
        })?
        .run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    Ok(EmulatorHandle {
        addr,
        state,
        server: handle,
        task,
    })
}

/// Marks answers to HEAD requests, whose bodies actix leaves out, for the wire layer.
fn mark_bodiless_answers<S>(
    req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse, actix_web::Error>> + use<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse, Error = actix_web::Error>,
    S::Future: 'static,
{
    let head = req.method() == actix_web::http::Method::HEAD;
    let answer = srv.call(req);
    async move {
        let mut res = answer.await?;
        if head {
            res.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static(NO_BODY_MARKER),
                actix_web::http::header::HeaderValue::from_static("1"),
            );
        }
        Ok(res)
    }
}

fn json_response(value: &Value) -> HttpResponse {
    // The Python SDK only reads errors when Content-Type is exactly `application/json`.
    HttpResponse::Ok()
        .insert_header(ContentType(mime_json()))
        .body(value.to_string())
}

fn mime_json() -> actix_web::mime::Mime {
    actix_web::mime::APPLICATION_JSON
}

fn error_body(fault: &StsFault, request_id: &str) -> Value {
    json!({"Response": {"Error": {"Code": fault.code, "Message": fault.message}, "RequestId": request_id}})
}

async fn sts_endpoint(req: HttpRequest, body: Bytes, state: web::Data<State>) -> HttpResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    let at_ms = unix_millis();
    let secret_id = sts::caller_secret_id(&req, &body);
    state.store.record_request();
    let (latency, injected) = state.draw_fault(secret_id.as_deref());
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let record = |outcome: &str| {
        state.store.record_call(CallRecord {
            at_ms,
            secret_id: secret_id.clone(),
            outcome: outcome.to_owned(),
        })
    };
    let mut tampered = None;
    let outcome = match injected {
        Some(Injected::Drop) => {
            state.store.record_drop();
            record("dropped");
            return dropped_connection();
        }
        Some(Injected::Error(code)) => {
            Err(StsFault::new(&code, format!("Injected fault: {code}.")))
        }
        Some(Injected::Tamper(t)) => {
            tampered = Some(t);
            sts::handle(&state, &req, &body, state.now(), &request_id)
        }
        None => {
            if !matches!(req.method().as_str(), "GET" | "POST") || req.path() != "/" {
                Err(StsFault::new(
                    "UnsupportedProtocol",
                    "STS takes POST or GET on `/`.",
                ))
            } else {
                sts::handle(&state, &req, &body, state.now(), &request_id)
            }
        }
    };
    match outcome {
        Ok(mut response) => {
            record("ok");
            response["RequestId"] = Value::String(request_id);
            if let Some(t) = &tampered {
                tamper(&mut response, t);
            }
            json_response(&json!({ "Response": response }))
        }
        Err(fault) => {
            tracing::debug!(code = %fault.code, "emulated STS error");
            record(&fault.code);
            state.store.record_error(&fault.code);
            json_response(&error_body(&fault, &request_id))
        }
    }
}

/// A response whose body fails at once: the client sees the connection close mid-answer.
fn dropped_connection() -> HttpResponse {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "emulated dropped connection",
        ))
    });
    HttpResponse::Ok()
        .insert_header(("connection", "close"))
        .streaming(stream)
}

#[derive(Deserialize)]
struct CredentialQuery {
    tmp_secret_id: Option<String>,
}

async fn list_credentials(state: web::Data<State>, q: web::Query<CredentialQuery>) -> HttpResponse {
    let issued: Vec<_> = state
        .store
        .all()
        .into_iter()
        .filter(|c| {
            q.tmp_secret_id
                .as_deref()
                .is_none_or(|id| c.tmp_secret_id == id)
        })
        .collect();
    json_response(&json!({ "issued": issued }))
}

async fn get_stats(state: web::Data<State>) -> HttpResponse {
    json_response(&json!(state.store.stats()))
}

#[derive(Deserialize)]
struct CallsQuery {
    /// Unix milliseconds; only calls at or after it.
    since_ms: Option<i64>,
}

/// Every STS call with its arrival time (ms), caller SecretId and outcome, oldest first.
async fn get_calls(state: web::Data<State>, q: web::Query<CallsQuery>) -> HttpResponse {
    json_response(&json!({ "calls": state.store.calls_since(q.since_ms.unwrap_or(0)) }))
}

async fn get_faults(state: web::Data<State>) -> HttpResponse {
    json_response(&json!(*state.faults.lock().unwrap()))
}

async fn put_faults(state: web::Data<State>, body: Bytes) -> HttpResponse {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return HttpResponse::BadRequest().body(format!("invalid faults: {e}\n")),
    };
    if let Err(e) = faults.validate() {
        return HttpResponse::BadRequest().body(format!("invalid faults: {e}\n"));
    }
    *state.faults.lock().unwrap() = faults.clone();
    json_response(&json!(faults))
}
