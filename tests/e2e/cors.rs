//! CORS on the credential endpoint (issue 13 item 1, DESIGN §3): exact per-app origins,
//! preflights answered from the app cache without an issuance row, and CORS headers on every
//! answer to a listed origin (errors and 429 included), none for anyone else.

use reqwest::header::HeaderMap;
use reqwest::{Method, Response};

use crate::support::*;

const ALLOWED: &str = "https://app.example.com";

/// Origins that look like the allowed one and must not pass: a suffix trick, another scheme,
/// another port, a longer host, case and a trailing slash (browsers send neither), `null`.
const LOOK_ALIKES: [&str; 8] = [
    "https://evil-app.example.com",
    "https://app.example.com.evil.example",
    "http://app.example.com",
    "https://app.example.com:8443",
    "https://APP.example.com",
    "https://app.example.com/",
    "https://sub.app.example.com",
    "null",
];

/// `photos` with `ALLOWED` (typed as an admin might) among its origins.
async fn web_app(opts: Options) -> TestApp {
    let app = TestApp::spawn_with(opts.clone()).await;
    let mut input = app_input(APP, &opts);
    input.allowed_origins = vec![
        "HTTPS://App.Example.com:443/".into(),
        "http://localhost:5173".into(),
    ];
    app.edit_app(app.app_id, &input).await;
    app
}

fn cors_headers(headers: &HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

fn varies_on_origin(headers: &HeaderMap) -> bool {
    headers
        .get_all("vary")
        .iter()
        .any(|v| v.to_str().unwrap().split(',').any(|p| p.trim() == "Origin"))
}

async fn preflight(app: &TestApp, slug: &str, origin: &str) -> Response {
    app.http
        .request(
            Method::OPTIONS,
            format!("{}/v1/apps/{slug}/credentials?format=cos-js", app.url),
        )
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap()
}

async fn get_from(app: &TestApp, origin: &str, token: Option<&str>) -> Response {
    let mut req = app
        .http
        .get(format!(
            "{}/v1/apps/{APP}/credentials?format=cos-js",
            app.url
        ))
        .header("origin", origin);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

/// A request for `photos`' credentials (`query` appended) from `ALLOWED`, as alice.
fn as_alice(app: &TestApp, method: Method, query: &str) -> reqwest::RequestBuilder {
    app.http
        .request(
            method,
            format!("{}/v1/apps/{APP}/credentials{query}", app.url),
        )
        .header("origin", ALLOWED)
        .bearer_auth(app.token("alice"))
}

/// The headers an answer to the allowed origin carries.
fn assert_allowed(res: &Response, what: &str) {
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], ALLOWED, "{what}");
    assert!(
        h["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id"),
        "{what}"
    );
    assert!(varies_on_origin(h), "{what}: Vary: Origin");
    assert!(
        !h.contains_key("access-control-allow-credentials"),
        "{what}: cookies are never invited"
    );
    assert!(h.contains_key("x-request-id"), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_origin_gets_its_preflight_and_readable_answers() {
    let app = web_app(Options::default()).await;

    let res = preflight(&app, APP, ALLOWED).await;
    assert_eq!(res.status(), 204);
    assert_allowed(&res, "preflight");
    let h = res.headers();
    assert_eq!(h["access-control-allow-methods"], "GET, POST");
    assert_eq!(
        h["access-control-allow-headers"],
        "Authorization, Content-Type"
    );
    assert_eq!(h["access-control-max-age"], "600");

    // The preflight is answered from the app cache: twenty more load nothing, and none of
    // them writes an issuance row (the one request below writes exactly one, committed
    // before its answer).
    let loads = app.app_loads();
    for _ in 0..20 {
        assert_eq!(preflight(&app, APP, ALLOWED).await.status(), 204);
    }
    assert_eq!(app.app_loads(), loads, "no app load for a cached app");
    assert!(
        app.log_rows().await.is_empty(),
        "no issuance row for preflights"
    );

    let res = get_from(&app, ALLOWED, Some(&app.token("alice"))).await;
    assert_eq!(res.status(), 200);
    assert_allowed(&res, "credentials");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["Prefix"], "users/alice/");
    assert_eq!(app.log_rows().await.len(), 1);

    // POST with a JSON body (the preflight allowed Content-Type).
    let res = as_alice(&app, Method::POST, "")
        .json(&serde_json::json!({"format": "cos-js"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_allowed(&res, "POST");

    // Errors are readable too: a missing token, a bad option, a too large body.
    let res = get_from(&app, ALLOWED, None).await;
    assert_eq!(res.status(), 401);
    assert_allowed(&res, "401");
    let res = as_alice(&app, Method::GET, "?format=xml")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    assert_allowed(&res, "422");
    let res = as_alice(&app, Method::POST, "")
        .body(vec![b' '; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_allowed(&res, "413");

    // OPTIONS that is not a preflight says what the resource takes.
    let res = app
        .http
        .request(
            Method::OPTIONS,
            format!("{}/v1/apps/{APP}/credentials", app.url),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["allow"], "GET, POST, OPTIONS");
    assert!(cors_headers(res.headers()).is_empty());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_answers_carry_cors_and_expose_retry_after() {
    let app = web_app(Options {
        rate_subject_per_minute: 1,
        ..Options::default()
    })
    .await;
    let token = app.token("alice");
    assert_eq!(get_from(&app, ALLOWED, Some(&token)).await.status(), 200);
    let res = get_from(&app, ALLOWED, Some(&token)).await;
    assert_eq!(res.status(), 429);
    assert_allowed(&res, "429");
    assert!(res.headers().contains_key("retry-after"));
    assert!(
        res.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("retry-after")
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_origins_and_unknown_apps_get_no_cors_headers_and_no_row() {
    let app = web_app(Options::default()).await;
    let token = app.token("alice");
    for origin in LOOK_ALIKES {
        let res = preflight(&app, APP, origin).await;
        assert_eq!(res.status(), 403, "{origin}");
        assert_eq!(
            cors_headers(res.headers()),
            Vec::<String>::new(),
            "{origin}"
        );
        assert!(varies_on_origin(res.headers()), "{origin}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "origin_not_allowed", "{origin}");

        // The server still answers the request itself (a browser would not let the page
        // read it): no CORS header on it either.
        let res = get_from(&app, origin, Some(&token)).await;
        assert_eq!(res.status(), 200, "{origin}");
        assert_eq!(
            cors_headers(res.headers()),
            Vec::<String>::new(),
            "{origin}"
        );
    }
    let rows = app.log_rows().await.len();
    assert_eq!(
        rows,
        LOOK_ALIKES.len(),
        "one row per request, none for a preflight"
    );

    // An unknown app: the same 404 a request gets, no CORS headers, no row.
    let res = preflight(&app, "no-such-app", ALLOWED).await;
    assert_eq!(res.status(), 404);
    assert!(cors_headers(res.headers()).is_empty());
    let res = preflight(&app, "Not A Slug", ALLOWED).await;
    assert_eq!(res.status(), 404);
    assert!(cors_headers(res.headers()).is_empty());
    // A request to it: its error has no CORS headers (no app, no list).
    let res = app
        .http
        .get(format!("{}/v1/apps/no-such-app/credentials", app.url))
        .header("origin", ALLOWED)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(cors_headers(res.headers()).is_empty());
    assert_eq!(app.log_rows().await.len(), rows + 1);

    // No Origin at all (curl, mobile apps): no CORS headers, but Vary all the same.
    let res = app.credentials("alice", "").await;
    assert_eq!(res.status(), 200);
    assert!(cors_headers(res.headers()).is_empty());
    assert!(varies_on_origin(res.headers()));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_origin_takes_effect_on_the_next_request() {
    let app = web_app(Options::default()).await;
    let token = app.token("alice");
    assert_eq!(preflight(&app, APP, ALLOWED).await.status(), 204);
    assert_allowed(&get_from(&app, ALLOWED, Some(&token)).await, "before");

    let mut input = app_input(APP, &Options::default());
    input.allowed_origins = vec!["http://localhost:5173".into()];
    app.edit_app(app.app_id, &input).await;
    assert_eq!(preflight(&app, APP, ALLOWED).await.status(), 403);
    let res = get_from(&app, ALLOWED, Some(&token)).await;
    assert_eq!(res.status(), 200);
    assert!(cors_headers(res.headers()).is_empty(), "removed at once");
    let res = preflight(&app, APP, "http://localhost:5173").await;
    assert_eq!(res.status(), 204);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    app.shutdown().await;
}
