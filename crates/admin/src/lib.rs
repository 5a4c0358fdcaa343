//! stsgate's admin and auditor pages (DESIGN §7): server-rendered askama pages on the admin
//! listener, with server-side sessions, CSRF tokens, roles checked on every route, and the
//! issuance-log search and export.
//!
//! Wiring: put a [`web::Data<AdminState>`](AdminState) in the app and call [`configure`], or let
//! [`serve`] build the whole server.
//!
//! Every route is declared once, in [`ROUTES`], with who may use it. The route's middleware
//! (see `session.rs`) enforces that on the server: anonymous requests are sent to the sign-in
//! page, auditors get 403 on everything that is not read-only, and every POST must carry the
//! session's CSRF token and must not come from another site (`Sec-Fetch-Site`).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_request_identifier::RequestIdentifier;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, guard, web};
use policy_store::Store;

pub mod api;
mod assets;
mod charts;
pub mod diff;
mod error;
mod forms;
mod headers;
mod pages;
pub mod password;
mod session;
mod shown;
mod sign_in_budget;
pub mod token_test;
mod view;

pub use error::AdminError;
pub use session::{Access, CurrentUser};
pub use token_test::{TokenOutcome, TokenTester, TokenVerdict};

/// How the admin pages behave; [`AdminConfig::default`] is right for production.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Mark the session cookie `Secure` (and name it `__Host-…`). Off only for `stsgate dev`,
    /// which serves plain http.
    pub secure_cookies: bool,
    /// How long a session lasts after sign-in.
    pub session_ttl: Duration,
    /// Failed sign-ins in a row that lock an account.
    pub max_failed_logins: i32,
    /// How long a locked account stays locked.
    pub lockout: Duration,
    /// Sign-in attempts a minute from one source address (IPv6: one /64) before 429.
    pub sign_in_per_source_per_minute: u32,
    /// Sign-in attempts a minute from everybody together before 429; caps argon2 work.
    pub sign_in_per_minute: u32,
    /// Take the source address of a sign-in from the last entry of the last
    /// `X-Forwarded-For` line (the one a reverse proxy in front of the admin listener added).
    pub trust_forwarded_for: bool,
    /// The gateway's public base URL (`https://sts.example.com`), for the integration card
    /// on each app's page. `None`: the card shows a placeholder host.
    pub public_url: Option<String>,
    /// How old a replica's last heartbeat may be for the dashboard to list it as live
    /// (three heartbeats).
    pub member_live_within: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            secure_cookies: true,
            session_ttl: Duration::from_secs(8 * 3600),
            max_failed_logins: 5,
            lockout: Duration::from_secs(15 * 60),
            sign_in_per_source_per_minute: 10,
            sign_in_per_minute: 120,
            trust_forwarded_for: false,
            public_url: None,
            member_live_within: Duration::from_secs(3),
        }
    }
}

/// Shared state of the admin listener.
pub struct AdminState {
    pub store: Arc<dyn Store>,
    pub config: AdminConfig,
    sign_in_budget: sign_in_budget::SignInBudget,
    /// Verifies pasted tokens with an app's real settings (the JWT page's "test a token");
    /// `None`: the page says the test is not available on this server.
    pub token_tester: Option<Arc<dyn TokenTester>>,
    /// Token tests per session, per minute.
    pub(crate) token_tests: token_test::SessionLimiter,
    /// What `/api/v1/openapi.json` serves (see [`AdminState::with_openapi`]).
    pub(crate) openapi_json: Arc<String>,
}

impl AdminState {
    pub fn new(store: Arc<dyn Store>, config: AdminConfig) -> Self {
        let sign_in_budget = sign_in_budget::SignInBudget::new(
            config.sign_in_per_source_per_minute,
            config.sign_in_per_minute,
        );
        Self {
            store,
            config,
            sign_in_budget,
            token_tester: None,
            token_tests: token_test::SessionLimiter::new(token_test::TESTS_PER_MINUTE),
            openapi_json: Arc::new(openapi_json(&api::openapi::admin_api())),
        }
    }

    /// Serves `doc` at `/api/v1/openapi.json` (the binary adds the credential API to the
    /// admin API's document).
    pub fn with_openapi(mut self, doc: &utoipa::openapi::OpenApi) -> Self {
        self.openapi_json = Arc::new(openapi_json(doc));
        self
    }

    /// Adds the token tester (the binary wires the gateway's verifier in; see
    /// [`TokenTester`]).
    pub fn with_token_tester(mut self, tester: Arc<dyn TokenTester>) -> Self {
        self.token_tester = Some(tester);
        self
    }
}

/// An OpenAPI document as served and committed: pretty JSON with a final newline.
pub fn openapi_json(doc: &utoipa::openapi::OpenApi) -> String {
    let mut json = doc
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    json.push('\n');
    json
}

/// An HTTP method a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl RouteMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteMethod::Get => "get",
            RouteMethod::Post => "post",
            RouteMethod::Put => "put",
            RouteMethod::Patch => "patch",
            RouteMethod::Delete => "delete",
        }
    }
}

/// One admin route and who may use it.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: RouteMethod,
    /// The actix path pattern, e.g. `/apps/{slug}/edit`.
    pub path: &'static str,
    pub access: Access,
}

impl Route {
    /// A route of the admin API (bearer tokens), not a page (session cookies).
    pub fn is_api(&self) -> bool {
        self.path.starts_with(api::API_PREFIX)
    }
}

macro_rules! routes {
    ($($method:ident $path:literal $access:ident => $handler:path;)*) => {
        /// Every route of the admin listener with the access it requires. Registration and the
        /// role tests both walk this table, so a route cannot exist without a rule.
        pub const ROUTES: &[Route] = &[
            $(Route { method: RouteMethod::$method, path: $path, access: Access::$access },)*
        ];

        fn register(mut scope: actix_web::Scope) -> actix_web::Scope {
            $(
                scope = scope.service(
                    web::resource($path)
                        .guard(guard::$method())
                        // Runs after the session guard (wraps run outermost last): the
                        // signed-in user's display time zone for the handler.
                        .wrap(from_fn(pages::account::load_zone))
                        // API routes take bearer tokens only, pages sessions only.
                        .wrap(from_fn(|req, next| async move {
                            if $path.starts_with(api::API_PREFIX) {
                                api::auth::guard(Access::$access, req, next).await
                            } else {
                                session::guard(Access::$access, req, next).await
                            }
                        }))
                        .to($handler),
                );
            )*
            scope
        }
    };
}

routes! {
    Get  "/healthz"                          Public  => pages::healthz;
    Get  "/static/{name}"                    Public  => assets::serve;
    Get  "/login"                            Public  => pages::auth::login_form;
    Post "/login"                            Public  => pages::auth::login;
    Post "/logout"                           Auditor => pages::auth::logout;
    Get  "/"                                 Auditor => pages::dashboard::show;
    Get  "/apps"                             Auditor => pages::apps::list;
    Get  "/apps/_new"                        Admin   => pages::apps::new_form;
    Post "/apps/_new"                        Admin   => pages::apps::create;
    Get  "/apps/{slug}"                      Auditor => pages::apps::show;
    Get  "/apps/{slug}/edit"                 Admin   => pages::apps::edit_form;
    Post "/apps/{slug}/edit"                 Admin   => pages::apps::update;
    Post "/apps/{slug}/enabled"              Admin   => pages::apps::set_enabled;
    Get  "/apps/{slug}/jwt"                  Admin   => pages::jwt::edit_form;
    Post "/apps/{slug}/jwt"                  Admin   => pages::jwt::update;
    Post "/apps/{slug}/jwt/test"             Admin   => pages::jwt::test_token;
    Get  "/apps/{slug}/policy"               Admin   => pages::policy::editor;
    Post "/apps/{slug}/policy"               Admin   => pages::policy::submit;
    Post "/apps/{slug}/policy/preview"       Admin   => pages::policy::preview_fragment;
    Get  "/apps/{slug}/policy/try"           Auditor => pages::policy::try_active;
    Post "/apps/{slug}/policy/try"           Auditor => pages::policy::try_active;
    Get  "/apps/{slug}/policy/versions"      Auditor => pages::policy::versions;
    Get  "/apps/{slug}/policy/diff"          Auditor => pages::policy::diff;
    Post "/apps/{slug}/policy/rollback"      Admin   => pages::policy::rollback;
    Get  "/apps/{slug}/blocks"               Auditor => pages::blocks::list;
    Get  "/apps/{slug}/blocks/confirm"       Admin   => pages::blocks::confirm_block;
    Post "/apps/{slug}/blocks"               Admin   => pages::blocks::add;
    Get  "/apps/{slug}/blocks/remove"        Admin   => pages::blocks::confirm_unblock;
    Post "/apps/{slug}/blocks/remove"        Admin   => pages::blocks::remove;
    Get  "/log"                              Auditor => pages::log::search;
    Get  "/log/export.csv"                   Auditor => pages::log::export_csv;
    Get  "/log/export.json"                  Auditor => pages::log::export_json;
    Get  "/changes"                          Auditor => pages::changes::list;
    Get  "/account"                          Auditor => pages::account::show;
    Post "/account"                          Auditor => pages::account::save;
    Get  "/users"                            Auditor => pages::users::list;
    Post "/users"                            Admin   => pages::users::create;
    Post "/users/{id}/role"                  Admin   => pages::users::set_role;
    Get  "/users/{id}/disabled"              Admin   => pages::users::confirm_disable;
    Post "/users/{id}/disabled"              Admin   => pages::users::set_disabled;
    Get  "/users/{id}/password"              Admin   => pages::users::confirm_reset;
    Post "/users/{id}/password"              Admin   => pages::users::reset_password;
    Get  "/tokens"                           Admin   => pages::tokens::list;
    Post "/tokens"                           Admin   => pages::tokens::create;
    Post "/tokens/{id}/revoke"               Admin   => pages::tokens::revoke;

    // The admin API (bearer API tokens; see `api`).
    Get    "/api/v1/openapi.json"                          Public  => api::openapi::document;
    Get    "/api/v1/apps"                                  Auditor => api::apps::list;
    Post   "/api/v1/apps"                                  Admin   => api::apps::create;
    Get    "/api/v1/apps/{slug}"                           Auditor => api::apps::show;
    Patch  "/api/v1/apps/{slug}"                           Admin   => api::apps::update;
    Post   "/api/v1/apps/{slug}/enable"                    Admin   => api::apps::enable;
    Post   "/api/v1/apps/{slug}/disable"                   Admin   => api::apps::disable;
    Get    "/api/v1/apps/{slug}/jwt"                       Admin   => api::apps::jwt;
    Put    "/api/v1/apps/{slug}/jwt"                       Admin   => api::apps::set_jwt;
    Post   "/api/v1/apply"                                 Admin   => api::apply::apply;
    Get    "/api/v1/export"                                Admin   => api::apply::export;
    Get    "/api/v1/apps/{slug}/policy"                    Auditor => api::policy::active;
    Get    "/api/v1/apps/{slug}/policy/versions"           Auditor => api::policy::versions;
    Post   "/api/v1/apps/{slug}/policy/versions"           Admin   => api::policy::save;
    Get    "/api/v1/apps/{slug}/policy/versions/{version}" Auditor => api::policy::version;
    Post   "/api/v1/apps/{slug}/policy/activate"           Admin   => api::policy::activate;
    Post   "/api/v1/apps/{slug}/policy/preview"            Auditor => api::policy::preview;
    Get    "/api/v1/apps/{slug}/blocks"                    Auditor => api::blocks::list;
    Post   "/api/v1/apps/{slug}/blocks"                    Admin   => api::blocks::add;
    Delete "/api/v1/apps/{slug}/blocks"                    Admin   => api::blocks::remove;
    Get    "/api/v1/log"                                   Auditor => api::log::search;
    Get    "/api/v1/log/export.ndjson"                     Auditor => api::log::export;
    Get    "/api/v1/changes"                               Auditor => api::changes::list;
    Get    "/api/v1/users"                                 Admin   => api::users::list;
    Post   "/api/v1/users"                                 Admin   => api::users::create;
    Patch  "/api/v1/users/{id}"                            Admin   => api::users::update;
    Get    "/api/v1/tokens"                                Admin   => api::tokens::list;
    Post   "/api/v1/tokens"                                Admin   => api::tokens::create;
    Delete "/api/v1/tokens/{id}"                           Admin   => api::tokens::revoke;
}

/// Registers every admin route, with request ids, security headers and error pages. Needs a
/// `web::Data<AdminState>` in the app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(forms::MAX_BODY))
        .app_data(web::QueryConfig::default().error_handler(|_, _| {
            AdminError::BadRequest(
                "The address has a query parameter this page cannot read.".into(),
            )
            .into()
        }))
        .app_data(web::PathConfig::default().error_handler(|_, req| {
            if req.path().starts_with(api::API_PREFIX) {
                api::ApiError::NotFound("no such API route".into()).into()
            } else {
                AdminError::NotFound.into()
            }
        }))
        .service(
            register(web::scope(""))
                .default_service(web::to(pages::not_found))
                // Outermost last: request id, its scope and the access log, then headers, then
                // the route's guard.
                .wrap(from_fn(headers::security_headers))
                .wrap(from_fn(headers::request_scope))
                .wrap(RequestIdentifier::with_uuid()),
        );
}

/// The admin HTTP server on `listener`. Its signals are off: the caller stops it.
pub fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    config: AdminConfig,
    workers: usize,
) -> std::io::Result<actix_web::dev::Server> {
    serve_state(listener, AdminState::new(store, config), workers)
}

/// [`serve`] with a state built by the caller (e.g. with a token tester).
pub fn serve_state(
    listener: TcpListener,
    state: AdminState,
    workers: usize,
) -> std::io::Result<actix_web::dev::Server> {
    let state = web::Data::new(state);
    Ok(
        HttpServer::new(move || App::new().app_data(state.clone()).configure(configure))
            .workers(workers.max(1))
            .disable_signals()
            .listen(listener)?
            .run(),
    )
}
