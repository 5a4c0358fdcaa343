//! `TestAdmin`: the admin server on port 0 with its own database, and a small browser-like
//! client that keeps cookies and finds CSRF tokens in pages.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use admin::AdminConfig;
use policy_store::testing::{SeedApp, TestDatabase, fresh_store, seed_app, test_cipher};
use policy_store::{AdminUserStore, PgStore, Role};
use secrecy::SecretString;

pub const SECRET_ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
pub const SECRET_KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLEkey";
pub const HS_SECRET: &str = "hs-secret-that-is-long-enough-0123456789abc";
pub const ADMIN_PASSWORD: &str = "admin-password-0123";
pub const AUDITOR_PASSWORD: &str = "auditor-password-0123";
pub const APP: &str = "photos";

/// The admin crate cannot verify signatures (the verifier is the gateway's; the real one is
/// tested end to end in tests/e2e). This stand-in answers by the token's first part and
/// counts its calls, so the page's wiring, limits and wording can be tested here.
#[derive(Default)]
pub struct FakeTester {
    pub calls: std::sync::atomic::AtomicUsize,
}

impl admin::TokenTester for FakeTester {
    fn test<'a>(
        &'a self,
        app: &'a str,
        token: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = admin::TokenVerdict> + Send + 'a>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let outcome = if token.starts_with("good.") {
            admin::TokenOutcome::WouldIssue {
                subject: "alice".into(),
                prefix: "users/alice/".into(),
                actions: vec!["name/cos:GetObject".into()],
            }
        } else {
            admin::TokenOutcome::Refused {
                status: 401,
                code: "invalid_token:wrong_audience".into(),
                reason: format!("The token's audience is “other”; {app} accepts photos-mobile."),
            }
        };
        Box::pin(async move {
            admin::TokenVerdict {
                outcome,
                seen: vec![("aud".into(), "other".into())],
            }
        })
    }
}

pub struct TestAdmin {
    pub url: String,
    pub store: Arc<PgStore>,
    pub db: TestDatabase,
    pub app_id: i64,
    pub admin_id: i64,
    pub auditor_id: i64,
    /// Connections the admin server took from its own pool (one per statement outside a
    /// transaction): how many times it went to the database.
    pub server_db_calls: Arc<AtomicU64>,
    server: actix_web::dev::ServerHandle,
}

impl Drop for TestAdmin {
    fn drop(&mut self) {
        let handle = self.server.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }
}

impl TestAdmin {
    pub async fn start() -> Self {
        Self::start_with(AdminConfig::default()).await
    }

    pub async fn start_with(config: AdminConfig) -> Self {
        Self::start_with_pool(config, 5).await
    }

    /// The server's store gets a pool of `connections` of its own, counted in
    /// [`TestAdmin::server_db_calls`]; `store` and `db.pool` (for the test itself) are apart.
    pub async fn start_with_pool(config: AdminConfig, connections: u32) -> Self {
        sts_core::install_crypto_provider();
        let (db, store) = fresh_store().await.expect("a fresh test database");
        let store = Arc::new(store);
        let admin_hash = admin::password::hash_password(SecretString::from(ADMIN_PASSWORD))
            .await
            .unwrap();
        let auditor_hash = admin::password::hash_password(SecretString::from(AUDITOR_PASSWORD))
            .await
            .unwrap();
        let admin_id = store
            .create_admin_user("test", "root", &admin_hash, Role::Admin)
            .await
            .unwrap()
            .id;
        let auditor_id = store
            .create_admin_user("test", "audrey", &auditor_hash, Role::Auditor)
            .await
            .unwrap()
            .id;
        let seed = SeedApp {
            name: "Photo app".into(),
            secret_id: SECRET_ID.into(),
            secret_key: SECRET_KEY.into(),
            rate_subject_per_minute: 60,
            rate_app_per_second: 100,
            hs_secret: Some(HS_SECRET.into()),
            template_note: Some("first".into()),
            ..SeedApp::new(APP)
        };
        let app = seed_app(&*store, "test", &seed).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server_db_calls = Arc::new(AtomicU64::new(0));
        let (on_connect, on_acquire) = (server_db_calls.clone(), server_db_calls.clone());
        // New connections skip `before_acquire` and idle ones skip `after_connect`: together
        // they see every acquisition (no `min_connections`, so nothing connects in advance).
        let server_pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(connections)
            .after_connect(move |_, _| {
                on_connect.fetch_add(1, Ordering::SeqCst);
                Box::pin(async { Ok(()) })
            })
            .before_acquire(move |_, _| {
                on_acquire.fetch_add(1, Ordering::SeqCst);
                Box::pin(async { Ok(true) })
            })
            .connect(&db.url)
            .await
            .unwrap();
        let server_store = Arc::new(PgStore::new(server_pool, test_cipher()));
        let state = admin::AdminState::new(server_store, config)
            .with_token_tester(Arc::new(FakeTester::default()));
        let server = admin::serve_state(listener, state, 1).unwrap();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url,
            store,
            db,
            app_id: app.id,
            admin_id,
            auditor_id,
            server_db_calls,
            server: handle,
        }
    }

    pub fn browser(&self) -> Browser {
        Browser::new(&self.url)
    }

    /// A browser signed in as `root` (admin).
    pub async fn admin(&self) -> Browser {
        let b = self.browser();
        let res = b.login("root", ADMIN_PASSWORD).await;
        assert_eq!(res.status, 303, "admin sign-in: {}", res.body);
        b
    }

    /// A browser signed in as `audrey` (auditor).
    pub async fn auditor(&self) -> Browser {
        let b = self.browser();
        let res = b.login("audrey", AUDITOR_PASSWORD).await;
        assert_eq!(res.status, 303, "auditor sign-in: {}", res.body);
        b
    }

    pub async fn audit_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM admin_audit")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    }

    /// The first `name="csrf" value="…"` in the page.
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).unwrap_or_else(|| {
            panic!(
                "no CSRF token in the page ({}):\n{}",
                self.status, self.body
            )
        }) + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_owned()
    }
}

/// Keeps cookies like a browser (host-only, no expiry handling beyond Max-Age=0) and sends
/// `Sec-Fetch-Site: same-origin` on POSTs unless told otherwise.
pub struct Browser {
    base: String,
    http: reqwest::Client,
    pub cookies: Mutex<BTreeMap<String, String>>,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            cookies: Mutex::new(BTreeMap::new()),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&self, res: reqwest::Response) -> Resp {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        {
            let mut jar = self.cookies.lock().unwrap();
            for sc in headers.get_all("set-cookie") {
                let sc = sc.to_str().unwrap();
                let (pair, attrs) = sc.split_once(';').unwrap_or((sc, ""));
                let (name, value) = pair.split_once('=').unwrap();
                if attrs.contains("Max-Age=0") || value.is_empty() {
                    jar.remove(name.trim());
                } else {
                    jar.insert(name.trim().to_owned(), value.trim().to_owned());
                }
            }
        }
        let body = res.text().await.unwrap_or_default();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.finish(res).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Resp {
        self.post_with(path, form, Some("same-origin")).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        form: &[(&str, &str)],
        sec_fetch_site: Option<&str>,
    ) -> Resp {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        if let Some(site) = sec_fetch_site {
            req = req.header("sec-fetch-site", site);
        }
        let res = req.send().await.unwrap();
        self.finish(res).await
    }

    /// [`Browser::post`] with extra request headers (a name may repeat: each is one line).
    pub async fn post_with_headers(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "same-origin")
            .body(serde_urlencoded::to_string(form).unwrap());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let res = req.send().await.unwrap();
        self.finish(res).await
    }

    /// GETs `page` for its CSRF token, then POSTs `form` with it.
    pub async fn submit(&self, page: &str, action: &str, form: &[(&str, &str)]) -> Resp {
        let csrf = self.get(page).await.csrf();
        let mut full: Vec<(&str, &str)> = vec![("csrf", csrf.as_str())];
        full.extend_from_slice(form);
        self.post(action, &full).await
    }

    pub async fn login(&self, username: &str, password: &str) -> Resp {
        let csrf = self.get("/login").await.csrf();
        self.post(
            "/login",
            &[
                ("csrf", &csrf),
                ("username", username),
                ("password", password),
                ("next", "/"),
            ],
        )
        .await
    }
}

/// A route pattern with its parameters filled in.
pub fn concrete(path: &str, slug: &str, user_id: i64) -> String {
    let p = path
        .replace("{slug}", slug)
        .replace("{id}", &user_id.to_string())
        .replace("{name}", "admin.css");
    if p.ends_with("/policy/diff") {
        format!("{p}?from=1&to=1")
    } else {
        p
    }
}
