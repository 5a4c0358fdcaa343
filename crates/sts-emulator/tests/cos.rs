//! The COS data plane over real HTTP: every object, listing and multipart operation, both
//! authentication forms, the token and time rules, session-policy enforcement (actions,
//! resources, deny, conditions), COS's error codes and statuses, addressing styles, and
//! persistence across a restart with a data directory.
//!
//! Credentials come from the emulator's own STS (TC3-signed GetFederationToken); COS requests
//! are signed here with sts-core's COS signer (reference `tencent-sts.md` §3 and §6).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest, Md5};
use serde_json::{Value, json};
use sts_core::cos::{self, CosRequest};
use sts_core::encoding::uri_encode;
use sts_core::tc3::{self, Tc3Request};
use sts_emulator::{EmulatorConfig, EmulatorHandle, Faults};

const SECRET_ID: &str = "AKIDTEST";
const SECRET_KEY: &str = "testkey";
const APPID: &str = "1250000000";
const OTHER_ID: &str = "AKIDOTHER";
const OTHER_KEY: &str = "otherkey";
const OTHER_APPID: &str = "1250000001";
const REGION: &str = "ap-guangzhou";
const BUCKET: &str = "examplebucket-1250000000";
const OTHER_BUCKET: &str = "otherbucket-1250000001";
const MB: usize = 1024 * 1024;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Emu {
    emu: EmulatorHandle,
    http: reqwest::Client,
}

fn config() -> EmulatorConfig {
    EmulatorConfig {
        accounts: vec![
            format!("{SECRET_ID}:{SECRET_KEY}:{APPID}").parse().unwrap(),
            format!("{OTHER_ID}:{OTHER_KEY}:{OTHER_APPID}")
                .parse()
                .unwrap(),
        ],
        workers: 2,
        ..EmulatorConfig::default()
    }
}

fn spawn_with(config: EmulatorConfig) -> Emu {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let emu = sts_emulator::start(config, listener).unwrap();
    sts_core::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()
        .unwrap();
    Emu { emu, http }
}

fn spawn() -> Emu {
    spawn_with(config())
}

/// A key pair COS requests are signed with; `token` for temporary credentials.
#[derive(Clone, Debug)]
struct Cred {
    id: String,
    key: String,
    token: Option<String>,
}

fn permanent() -> Cred {
    Cred {
        id: SECRET_ID.to_owned(),
        key: SECRET_KEY.to_owned(),
        token: None,
    }
}

fn resource(key: &str) -> String {
    format!("qcs::cos:{REGION}:uid/{APPID}:{BUCKET}/{key}")
}

fn allow(actions: &[&str], resources: &[String]) -> Value {
    json!({"effect": "allow", "action": actions, "resource": resources})
}

fn policy(statements: Vec<Value>) -> Value {
    json!({"version": "2.0", "statement": statements})
}

impl Emu {
    /// GetFederationToken over TC3 with this policy and duration.
    async fn federation_token(&self, policy: &Value, duration: u64) -> Cred {
        let body = json!({
            "Name": "alice",
            "Policy": uri_encode(&policy.to_string()),
            "DurationSeconds": duration,
        })
        .to_string();
        let host = self.emu.addr().to_string();
        let ts = now();
        let signed = tc3::sign(
            SECRET_KEY,
            &Tc3Request {
                method: "POST",
                canonical_query: "",
                headers: &[("Content-Type", "application/json"), ("Host", &host)],
                payload: body.as_bytes(),
                service: "sts",
                timestamp: ts,
            },
        );
        let answer: Value = self
            .http
            .post(format!("{}/", self.emu.url()))
            .header("Content-Type", "application/json")
            .header("X-TC-Action", "GetFederationToken")
            .header("X-TC-Version", "2018-08-13")
            .header("X-TC-Timestamp", ts.to_string())
            .header("X-TC-Region", REGION)
            .header("Authorization", signed.authorization(SECRET_ID))
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let c = &answer["Response"]["Credentials"];
        assert!(c.is_object(), "STS refused: {answer}");
        Cred {
            id: c["TmpSecretId"].as_str().unwrap().to_owned(),
            key: c["TmpSecretKey"].as_str().unwrap().to_owned(),
            token: Some(c["Token"].as_str().unwrap().to_owned()),
        }
    }

    async fn temporary(&self, policy: &Value) -> Cred {
        self.federation_token(policy, 1800).await
    }

    fn req(&self, cred: &Cred, method: &'static str, key: &str) -> Req {
        Req {
            cred: cred.clone(),
            method,
            bucket: BUCKET.to_owned(),
            key: key.to_owned(),
            style: Style::VirtualHost(Some(REGION.to_owned())),
            query: Vec::new(),
            headers: Vec::new(),
            body: Vec::new(),
            auth: AuthForm::Header,
            token: TokenForm::UnsignedHeader,
            key_time: None,
            sign_key: None,
            override_header: None,
        }
    }
}

#[derive(Clone)]
enum Style {
    /// `Host: <bucket>.cos.<region>.myqcloud.com` (or `<bucket>.localhost` without a region).
    VirtualHost(Option<String>),
    /// `/<bucket>/<key>` on `127.0.0.1:PORT`, signed over `/<bucket>/<key>` (cos-js-sdk-v5's
    /// ForcePathStyle) or over `/<key>` (an endpoint with the bucket templated in).
    Path { sign_full_path: bool },
    /// `/<key>` on `127.0.0.1:PORT`, for an emulator with a default bucket.
    Bare,
}

#[derive(Clone, Copy, PartialEq)]
enum AuthForm {
    Header,
    Query,
    Anonymous,
}

#[derive(Clone, Copy, PartialEq)]
enum TokenForm {
    /// `x-cos-security-token` added after signing (cos-js-sdk-v5).
    UnsignedHeader,
    /// `x-cos-security-token` signed as a header (cos-python-sdk-v5).
    SignedHeader,
    /// `x-ci-security-token` (CI hosts).
    CiHeader,
    /// `x-cos-security-token` as a query parameter, unsigned (cos-js-sdk-v5 presigned URLs).
    UnsignedQuery,
    /// `x-cos-security-token` as a signed query parameter (cos-python-sdk-v5 presigned URLs).
    SignedQuery,
    Omitted,
}

struct Req {
    cred: Cred,
    method: &'static str,
    bucket: String,
    key: String,
    style: Style,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    auth: AuthForm,
    token: TokenForm,
    key_time: Option<(i64, i64)>,
    /// Signs with this key instead of the credential's.
    sign_key: Option<String>,
    /// A header changed after signing.
    override_header: Option<(String, String)>,
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn xml(&self, tag: &str) -> Vec<String> {
        let text = self.text();
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        let mut out = Vec::new();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(&open) {
            let after = &rest[at + open.len()..];
            let end = after.find(&close).unwrap();
            out.push(after[..end].to_owned());
            rest = &after[end..];
        }
        out
    }

    fn ok(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "{}", self.text());
        assert!(
            self.header("x-cos-request-id")
                .is_some_and(|v| !v.is_empty()),
            "every answer has x-cos-request-id"
        );
        self
    }

    /// Asserts a COS XML error with this status and code; returns the message.
    fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        assert!(self.header("x-cos-request-id").is_some());
        let text = self.text();
        assert!(
            text.starts_with("<?xml version='1.0' encoding='utf-8' ?>"),
            "{text}"
        );
        assert_eq!(self.header("content-type"), Some("application/xml"));
        assert_eq!(self.xml("Code"), vec![code.to_owned()], "{text}");
        for tag in ["Message", "Resource", "RequestId", "TraceId"] {
            assert_eq!(self.xml(tag).len(), 1, "{tag} in {text}");
        }
        assert_eq!(
            self.xml("RequestId")[0],
            self.header("x-cos-request-id").unwrap()
        );
        self.xml("Message")[0].clone()
    }
}

fn encode_path(path: &str) -> String {
    path.split('/')
        .map(uri_encode)
        .collect::<Vec<_>>()
        .join("/")
}

impl Req {
    fn query(mut self, k: &str, v: &str) -> Self {
        self.query.push((k.to_owned(), v.to_owned()));
        self
    }

    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    fn style(mut self, style: Style) -> Self {
        self.style = style;
        self
    }

    fn bucket(mut self, bucket: &str) -> Self {
        self.bucket = bucket.to_owned();
        self
    }

    fn auth(mut self, auth: AuthForm) -> Self {
        self.auth = auth;
        self
    }

    fn token(mut self, token: TokenForm) -> Self {
        self.token = token;
        self
    }

    fn key_time(mut self, start: i64, end: i64) -> Self {
        self.key_time = Some((start, end));
        self
    }

    fn sign_key(mut self, key: &str) -> Self {
        self.sign_key = Some(key.to_owned());
        self
    }

    async fn send(self, t: &Emu) -> Resp {
        let addr = t.emu.addr().to_string();
        let (host, path, sign_path) = match &self.style {
            Style::VirtualHost(region) => {
                let host = match region {
                    Some(r) => format!("{}.cos.{r}.myqcloud.com", self.bucket),
                    None => format!("{}.localhost", self.bucket),
                };
                let path = format!("/{}", self.key);
                (host, path.clone(), path)
            }
            Style::Path { sign_full_path } => {
                let path = format!("/{}/{}", self.bucket, self.key);
                let signed = if *sign_full_path {
                    path.clone()
                } else {
                    format!("/{}", self.key)
                };
                (addr.clone(), path, signed)
            }
            Style::Bare => {
                let path = format!("/{}", self.key);
                (addr.clone(), path.clone(), path)
            }
        };
        let token = self.cred.token.clone();
        let mut query = self.query.clone();
        let mut headers = self.headers.clone();
        headers.push(("Host".to_owned(), host.clone()));
        if let Some(token) = &token {
            match self.token {
                TokenForm::SignedHeader => {
                    headers.push(("x-cos-security-token".to_owned(), token.clone()))
                }
                TokenForm::SignedQuery => {
                    query.push(("x-cos-security-token".to_owned(), token.clone()))
                }
                _ => {}
            }
        }
        let (start, end) = self.key_time.unwrap_or((now() - 60, now() + 600));
        let params: Vec<(&str, &str)> = query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let signed_headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let sig = cos::sign(
            self.sign_key.as_deref().unwrap_or(&self.cred.key),
            start,
            end,
            &CosRequest {
                method: self.method,
                path: &sign_path,
                params: &params,
                headers: &signed_headers,
            },
        );
        let authorization = sig.authorization(&self.cred.id);

        let mut qs: Vec<String> = query
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    uri_encode(k)
                } else {
                    format!("{}={}", uri_encode(k), uri_encode(v))
                }
            })
            .collect();
        if self.auth == AuthForm::Query {
            for pair in authorization.split('&') {
                let (k, v) = pair.split_once('=').unwrap();
                qs.push(format!("{k}={}", uri_encode(v)));
            }
        }
        if let Some(token) = &token
            && self.token == TokenForm::UnsignedQuery
        {
            qs.push(format!("x-cos-security-token={}", uri_encode(token)));
        }
        let mut url = format!("http://{addr}{}", encode_path(&path));
        if !qs.is_empty() {
            url = format!("{url}?{}", qs.join("&"));
        }
        let method = reqwest::Method::from_bytes(self.method.as_bytes()).unwrap();
        let mut request = t.http.request(method, url);
        for (k, v) in &headers {
            let v = match &self.override_header {
                Some((name, value)) if name.eq_ignore_ascii_case(k) => value.clone(),
                _ => v.clone(),
            };
            request = request.header(k, v);
        }
        if self.auth == AuthForm::Header {
            request = request.header("Authorization", authorization);
        }
        if let Some(token) = &token {
            match self.token {
                TokenForm::UnsignedHeader => {
                    request = request.header("x-cos-security-token", token);
                }
                TokenForm::CiHeader => {
                    request = request.header("x-ci-security-token", token);
                }
                _ => {}
            }
        }
        let response = request.body(self.body).send().await.unwrap();
        Resp {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.unwrap(),
        }
    }
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn put(t: &Emu, cred: &Cred, key: &str, body: &[u8]) -> Resp {
    t.req(cred, "PUT", key).body(body.to_vec()).send(t).await
}

async fn get(t: &Emu, cred: &Cred, key: &str) -> Resp {
    t.req(cred, "GET", key).send(t).await
}

async fn list(t: &Emu, cred: &Cred, params: &[(&str, &str)]) -> Resp {
    let mut r = t.req(cred, "GET", "");
    for (k, v) in params {
        r = r.query(k, v);
    }
    r.send(t).await
}

// ---------------------------------------------------------------------------------------------
// Objects

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_head_delete_roundtrip() {
    let t = spawn();
    let me = permanent();
    let body = b"hello, cos".to_vec();
    let r = t
        .req(&me, "PUT", "docs/hello(腾讯云).txt")
        .header("Content-Type", "text/plain")
        .header("x-cos-meta-author", "alice")
        .header("Cache-Control", "max-age=60")
        .body(body.clone())
        .send(&t)
        .await;
    r.ok(200);
    let etag = format!("\"{}\"", md5_hex(&body));
    assert_eq!(r.header("etag"), Some(etag.as_str()));

    let r = get(&t, &me, "docs/hello(腾讯云).txt").await;
    r.ok(200);
    assert_eq!(&r.body[..], &body[..]);
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("x-cos-meta-author"), Some("alice"));
    assert_eq!(r.header("cache-control"), Some("max-age=60"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let last_modified = r.header("last-modified").unwrap();
    assert!(last_modified.ends_with(" GMT"), "{last_modified}");

    // response-* parameters override what is returned.
    let r = t
        .req(&me, "GET", "docs/hello(腾讯云).txt")
        .query("response-content-type", "application/octet-stream")
        .send(&t)
        .await;
    r.ok(200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));

    let r = t.req(&me, "HEAD", "docs/hello(腾讯云).txt").send(&t).await;
    r.ok(200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("10"));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("x-cos-meta-author"), Some("alice"));

    // Without a Content-Type the default is application/octet-stream.
    put(&t, &me, "raw.bin", b"x").await.ok(200);
    assert_eq!(
        get(&t, &me, "raw.bin").await.header("content-type"),
        Some("application/octet-stream")
    );

    t.req(&me, "DELETE", "docs/hello(腾讯云).txt")
        .send(&t)
        .await
        .ok(204);
    get(&t, &me, "docs/hello(腾讯云).txt")
        .await
        .error(404, "NoSuchKey");
    let r = t.req(&me, "HEAD", "docs/hello(腾讯云).txt").send(&t).await;
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    // Deleting what is not there still succeeds.
    t.req(&me, "DELETE", "docs/hello(腾讯云).txt")
        .send(&t)
        .await
        .ok(204);
    // An overwrite replaces the body.
    put(&t, &me, "raw.bin", b"second").await.ok(200);
    assert_eq!(&get(&t, &me, "raw.bin").await.body[..], b"second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_md5_is_checked() {
    let t = spawn();
    let me = permanent();
    let good = STANDARD.encode(Md5::digest(b"abc"));
    t.req(&me, "PUT", "a")
        .header("Content-MD5", &good)
        .body("abc")
        .send(&t)
        .await
        .ok(200);
    t.req(&me, "PUT", "a")
        .header("Content-MD5", &good)
        .body("abd")
        .send(&t)
        .await
        .error(400, "BadDigest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_requests() {
    let t = spawn();
    let me = permanent();
    put(&t, &me, "r.txt", b"0123456789").await.ok(200);
    let range = |spec: &'static str| t.req(&me, "GET", "r.txt").header("Range", spec);
    for (spec, body, content_range) in [
        ("bytes=0-4", "01234", "bytes 0-4/10"),
        ("bytes=5-", "56789", "bytes 5-9/10"),
        ("bytes=-3", "789", "bytes 7-9/10"),
        ("bytes=8-100", "89", "bytes 8-9/10"),
    ] {
        let r = range(spec).send(&t).await;
        r.ok(206);
        assert_eq!(r.text(), body, "{spec}");
        assert_eq!(r.header("content-range"), Some(content_range), "{spec}");
    }
    range("bytes=10-").send(&t).await.error(416, "InvalidRange");
    range("bytes=-0").send(&t).await.error(416, "InvalidRange");
    // A range that is not a byte range is ignored, as HTTP says.
    let r = range("lines=1-2").send(&t).await;
    r.ok(200);
    assert_eq!(r.text(), "0123456789");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_with_prefix_delimiter_marker_and_max_keys() {
    let t = spawn();
    let me = permanent();
    for key in [
        "a.txt",
        "photos/2024/1.jpg",
        "photos/2024/2.jpg",
        "photos/2025/1.jpg",
        "photos/cover.jpg",
        "videos/x.mp4",
        "with space/名字.txt",
    ] {
        put(&t, &me, key, key.as_bytes()).await.ok(200);
    }
    let r = list(&t, &me, &[]).await;
    r.ok(200);
    assert_eq!(r.xml("Name"), vec![BUCKET]);
    assert_eq!(r.xml("Key").len(), 7);
    assert_eq!(r.xml("IsTruncated"), vec!["false"]);
    assert_eq!(
        r.xml("ETag")[0],
        format!("&quot;{}&quot;", md5_hex(b"a.txt"))
    );
    assert_eq!(r.xml("Size")[0], "5");

    let r = list(&t, &me, &[("prefix", "photos/"), ("delimiter", "/")]).await;
    r.ok(200);
    assert_eq!(r.xml("Key"), vec!["photos/cover.jpg"]);
    assert_eq!(r.xml("Prefix")[1..], ["photos/2024/", "photos/2025/"]);
    assert_eq!(r.xml("Delimiter"), vec!["/"]);

    let r = list(&t, &me, &[("delimiter", "/")]).await;
    assert_eq!(r.xml("Key"), vec!["a.txt"]);
    assert_eq!(r.xml("Prefix")[1..], ["photos/", "videos/", "with space/"]);

    let r = list(&t, &me, &[("marker", "photos/2025/1.jpg")]).await;
    assert_eq!(
        r.xml("Key"),
        vec!["photos/cover.jpg", "videos/x.mp4", "with space/名字.txt"]
    );

    // Paging with max-keys: IsTruncated and NextMarker until the end.
    let mut seen = Vec::new();
    let mut marker = String::new();
    loop {
        let r = list(&t, &me, &[("max-keys", "3"), ("marker", &marker)]).await;
        r.ok(200);
        let keys = r.xml("Key");
        assert!(keys.len() <= 3);
        seen.extend(keys);
        if r.xml("IsTruncated") == vec!["false"] {
            assert!(r.xml("NextMarker").is_empty());
            break;
        }
        marker = r.xml("NextMarker")[0].clone();
        assert_eq!(&marker, seen.last().unwrap());
    }
    assert_eq!(seen.len(), 7);

    // Paging over common prefixes does not repeat them.
    let r = list(&t, &me, &[("delimiter", "/"), ("max-keys", "2")]).await;
    assert_eq!(r.xml("IsTruncated"), vec!["true"]);
    assert_eq!(r.xml("NextMarker"), vec!["photos/"]);
    let r = list(&t, &me, &[("delimiter", "/"), ("marker", "photos/")]).await;
    assert_eq!(r.xml("Prefix")[1..], ["videos/", "with space/"]);

    // encoding-type=url encodes keys and prefixes.
    let r = list(
        &t,
        &me,
        &[("prefix", "with space/"), ("encoding-type", "url")],
    )
    .await;
    r.ok(200);
    assert_eq!(r.xml("EncodingType"), vec!["url"]);
    assert_eq!(
        r.xml("Key"),
        vec!["with%20space/%E5%90%8D%E5%AD%97.txt".to_owned()]
    );
    assert_eq!(r.xml("Prefix"), vec!["with%20space/"]);

    list(&t, &me, &[("encoding-type", "base64")])
        .await
        .error(400, "InvalidArgument");
    list(&t, &me, &[("max-keys", "many")])
        .await
        .error(400, "InvalidArgument");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_multiple_objects_checks_each_key() {
    let t = spawn();
    let me = permanent();
    for key in ["users/alice/1", "users/alice/2", "users/bob/1"] {
        put(&t, &me, key, b"x").await.ok(200);
    }
    let alice = t
        .temporary(&policy(vec![allow(
            &["name/cos:DeleteObject"],
            &[resource("users/alice/*")],
        )]))
        .await;
    let body = "<Delete><Quiet>false</Quiet>\
        <Object><Key>users/alice/1</Key></Object>\
        <Object><Key>users/bob/1</Key></Object>\
        <Object><Key>users/alice/missing</Key></Object></Delete>";
    let r = t
        .req(&alice, "POST", "")
        .query("delete", "")
        .header(
            "Content-MD5",
            &STANDARD.encode(Md5::digest(body.as_bytes())),
        )
        .body(body)
        .send(&t)
        .await;
    r.ok(200);
    let deleted = r.xml("Deleted");
    assert_eq!(deleted.len(), 2, "{}", r.text());
    assert!(
        r.text()
            .contains("<Error><Key>users/bob/1</Key><Code>AccessDenied</Code>")
    );
    get(&t, &me, "users/alice/1").await.error(404, "NoSuchKey");
    get(&t, &me, "users/bob/1").await.ok(200);

    // Quiet mode lists errors only.
    let body = "<Delete><Quiet>true</Quiet><Object><Key>users/alice/2</Key></Object>\
        <Object><Key>users/bob/1</Key></Object></Delete>";
    let r = t
        .req(&alice, "POST", "")
        .query("delete", "")
        .body(body)
        .send(&t)
        .await;
    r.ok(200);
    assert!(r.xml("Deleted").is_empty(), "{}", r.text());
    assert_eq!(r.xml("Error").len(), 1);
    get(&t, &me, "users/alice/2").await.error(404, "NoSuchKey");

    t.req(&me, "POST", "")
        .query("delete", "")
        .body("<Delete><Object><Key>x")
        .send(&t)
        .await
        .error(400, "MalformedXML");
}

// ---------------------------------------------------------------------------------------------
// Multipart

async fn initiate(t: &Emu, cred: &Cred, key: &str) -> String {
    let r = t
        .req(cred, "POST", key)
        .query("uploads", "")
        .header("Content-Type", "video/mp4")
        .header("x-cos-meta-origin", "multipart")
        .send(t)
        .await;
    r.ok(200);
    assert_eq!(r.xml("Key"), vec![key.to_owned()]);
    r.xml("UploadId")[0].clone()
}

async fn upload_part(t: &Emu, cred: &Cred, key: &str, id: &str, n: u32, body: &[u8]) -> Resp {
    t.req(cred, "PUT", key)
        .query("partNumber", &n.to_string())
        .query("uploadId", id)
        .body(body.to_vec())
        .send(t)
        .await
}

fn complete_body(parts: &[(u32, String)]) -> String {
    let mut s = String::from("<CompleteMultipartUpload>");
    for (n, etag) in parts {
        s += &format!("<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>");
    }
    s + "</CompleteMultipartUpload>"
}

async fn complete(t: &Emu, cred: &Cred, key: &str, id: &str, parts: &[(u32, String)]) -> Resp {
    t.req(cred, "POST", key)
        .query("uploadId", id)
        .body(complete_body(parts))
        .send(t)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_of_11_mb() {
    let t = spawn();
    let me = permanent();
    let key = "big/video.mp4";
    let id = initiate(&t, &me, key).await;

    let r = t.req(&me, "GET", "").query("uploads", "").send(&t).await;
    r.ok(200);
    assert_eq!(r.xml("UploadId"), vec![id.clone()]);

    let parts_data = [data(4 * MB, 1), data(4 * MB, 2), data(3 * MB, 3)];
    let mut parts = Vec::new();
    for (i, part) in parts_data.iter().enumerate() {
        let r = upload_part(&t, &me, key, &id, i as u32 + 1, part).await;
        r.ok(200);
        let etag = r.header("etag").unwrap().to_owned();
        assert_eq!(etag, format!("\"{}\"", md5_hex(part)));
        parts.push((i as u32 + 1, etag));
    }

    let r = t.req(&me, "GET", key).query("uploadId", &id).send(&t).await;
    r.ok(200);
    assert_eq!(r.xml("PartNumber"), vec!["1", "2", "3"]);
    assert_eq!(
        r.xml("Size"),
        vec![
            (4 * MB).to_string(),
            (4 * MB).to_string(),
            (3 * MB).to_string()
        ]
    );
    let r = t
        .req(&me, "GET", key)
        .query("uploadId", &id)
        .query("max-parts", "2")
        .send(&t)
        .await;
    assert_eq!(r.xml("PartNumber"), vec!["1", "2"]);
    assert_eq!(r.xml("IsTruncated"), vec!["true"]);
    assert_eq!(r.xml("NextPartNumberMarker"), vec!["2"]);

    // Wrong ETag, wrong order.
    let mut wrong = parts.clone();
    wrong[1].1 = "\"00000000000000000000000000000000\"".to_owned();
    complete(&t, &me, key, &id, &wrong)
        .await
        .error(400, "InvalidPart");
    let reversed: Vec<_> = parts.iter().rev().cloned().collect();
    complete(&t, &me, key, &id, &reversed)
        .await
        .error(400, "InvalidPartOrder");

    let r = complete(&t, &me, key, &id, &parts).await;
    r.ok(200);
    let mut md5s = Vec::new();
    for part in &parts_data {
        md5s.extend_from_slice(&Md5::digest(part));
    }
    let expected = format!("\"{}-3\"", md5_hex(&md5s));
    assert_eq!(r.xml("ETag"), vec![expected.replace('"', "&quot;")]);

    let r = get(&t, &me, key).await;
    r.ok(200);
    assert_eq!(r.body.len(), 11 * MB);
    assert!(r.body[..] == parts_data.concat()[..]);
    assert_eq!(r.header("etag"), Some(expected.as_str()));
    assert_eq!(r.header("content-type"), Some("video/mp4"));
    assert_eq!(r.header("x-cos-meta-origin"), Some("multipart"));

    // The upload is gone once completed.
    complete(&t, &me, key, &id, &parts)
        .await
        .error(404, "NoSuchUpload");
    let r = t.req(&me, "GET", "").query("uploads", "").send(&t).await;
    assert!(r.xml("UploadId").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_errors_and_abort() {
    let t = spawn();
    let me = permanent();
    let id = initiate(&t, &me, "m").await;
    let small = upload_part(&t, &me, "m", &id, 1, b"tiny").await;
    small.ok(200);
    let last = upload_part(&t, &me, "m", &id, 2, b"end").await;
    let parts = vec![
        (1, small.header("etag").unwrap().to_owned()),
        (2, last.header("etag").unwrap().to_owned()),
    ];
    complete(&t, &me, "m", &id, &parts)
        .await
        .error(400, "EntityTooSmall");
    // A single small part is fine (the last part has no minimum).
    complete(&t, &me, "m", &id, &parts[..1]).await.ok(200);
    assert_eq!(get(&t, &me, "m").await.text(), "tiny");

    let id = initiate(&t, &me, "n").await;
    upload_part(&t, &me, "n", &id, 0, b"x")
        .await
        .error(400, "InvalidArgument");
    upload_part(&t, &me, "n", &id, 10_001, b"x")
        .await
        .error(400, "InvalidArgument");
    // The upload belongs to key `n`.
    upload_part(&t, &me, "other", &id, 1, b"x")
        .await
        .error(404, "NoSuchUpload");
    upload_part(&t, &me, "n", "nope", 1, b"x")
        .await
        .error(404, "NoSuchUpload");
    t.req(&me, "GET", "n")
        .query("uploadId", "nope")
        .send(&t)
        .await
        .error(404, "NoSuchUpload");
    complete(&t, &me, "n", &id, &[])
        .await
        .error(400, "MalformedXML");

    t.req(&me, "DELETE", "n")
        .query("uploadId", &id)
        .send(&t)
        .await
        .ok(204);
    t.req(&me, "DELETE", "n")
        .query("uploadId", &id)
        .send(&t)
        .await
        .error(404, "NoSuchUpload");
    upload_part(&t, &me, "n", &id, 1, b"x")
        .await
        .error(404, "NoSuchUpload");
}

// ---------------------------------------------------------------------------------------------
// Buckets and addressing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_exist_only_for_configured_appids() {
    let t = spawn();
    let me = permanent();
    // Every `<name>-<appid>` bucket of a configured APPID exists and starts empty.
    let r = t
        .req(&me, "GET", "")
        .bucket("anything-1250000000")
        .send(&t)
        .await;
    r.ok(200);
    assert!(r.xml("Key").is_empty());
    t.req(&me, "HEAD", "").send(&t).await.ok(200);
    for bucket in ["examplebucket-1259999999", "nodigits-abc"] {
        t.req(&me, "GET", "k")
            .bucket(bucket)
            .send(&t)
            .await
            .error(404, "NoSuchBucket");
    }
    // Path style with an unknown APPID (recognised by its COS signature).
    t.req(&me, "GET", "k")
        .bucket("examplebucket-1259999999")
        .style(Style::Path {
            sign_full_path: true,
        })
        .send(&t)
        .await
        .error(404, "NoSuchBucket");
    // Another account's bucket: the key is known but not its owner.
    t.req(&me, "GET", "")
        .bucket(OTHER_BUCKET)
        .send(&t)
        .await
        .error(403, "AccessDenied");
    let other = Cred {
        id: OTHER_ID.to_owned(),
        key: OTHER_KEY.to_owned(),
        token: None,
    };
    t.req(&other, "GET", "")
        .bucket(OTHER_BUCKET)
        .send(&t)
        .await
        .ok(200);
    // Buckets are implicit: no PUT or DELETE Bucket.
    t.req(&me, "PUT", "")
        .send(&t)
        .await
        .error(405, "MethodNotAllowed");
    t.req(&me, "POST", "k")
        .send(&t)
        .await
        .error(405, "MethodNotAllowed");
    t.req(&me, "GET", "k")
        .query("acl", "")
        .send(&t)
        .await
        .error(501, "NotImplemented");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_addressing_style_reaches_the_same_bucket() {
    let t = spawn();
    let me = permanent();
    put(&t, &me, "k.txt", b"same").await.ok(200);
    for style in [
        Style::VirtualHost(None),
        Style::Path {
            sign_full_path: true,
        },
        Style::Path {
            sign_full_path: false,
        },
    ] {
        let r = t.req(&me, "GET", "k.txt").style(style).send(&t).await;
        r.ok(200);
        assert_eq!(r.text(), "same");
    }
    // Without auth, a path-style request still reaches COS (and is refused there).
    t.req(&me, "GET", "k.txt")
        .style(Style::Path {
            sign_full_path: true,
        })
        .auth(AuthForm::Anonymous)
        .send(&t)
        .await
        .error(403, "AccessDenied");
    // A bare `/key` names no bucket unless a default bucket is configured.
    t.req(&me, "GET", "k.txt")
        .style(Style::Bare)
        .send(&t)
        .await
        .error(404, "NoSuchBucket");

    let t2 = spawn_with(EmulatorConfig {
        cos_default_bucket: Some(BUCKET.to_owned()),
        ..config()
    });
    put(&t2, &me, "k.txt", b"default").await.ok(200);
    let r = t2
        .req(&me, "GET", "k.txt")
        .style(Style::Bare)
        .send(&t2)
        .await;
    r.ok(200);
    assert_eq!(r.text(), "default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_and_control_endpoints_still_answer_on_the_same_port() {
    let t = spawn();
    let cred = t
        .temporary(&policy(vec![allow(
            &["name/cos:PutObject"],
            &[resource("*")],
        )]))
        .await;
    put(&t, &cred, "x", b"1").await.ok(200);
    let r = t
        .http
        .get(format!("{}/_emulator/credentials", t.emu.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["issued"][0]["tmp_secret_id"], cred.id.as_str());
    // An unsigned GET / is still STS's.
    let r = t
        .http
        .get(format!("{}/", t.emu.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["Response"]["Error"]["Code"], "MissingParameter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_headers() {
    let t = spawn();
    let r = t
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/{BUCKET}/a.txt", t.emu.url()),
        )
        .header("Origin", "http://localhost:3000")
        .header("Access-Control-Request-Method", "PUT")
        .header(
            "Access-Control-Request-Headers",
            "authorization,x-cos-security-token",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "http://localhost:3000");
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization,x-cos-security-token"
    );
    assert!(
        h["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("ETag")
    );
    let me = permanent();
    let r = t
        .req(&me, "PUT", "a.txt")
        .header("Origin", "http://localhost:3000")
        .body("x")
        .send(&t)
        .await;
    r.ok(200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
}

// ---------------------------------------------------------------------------------------------
// Authentication

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_failures() {
    let t = spawn();
    let me = permanent();
    put(&t, &me, "k", b"v").await.ok(200);
    t.req(&me, "GET", "k")
        .auth(AuthForm::Anonymous)
        .send(&t)
        .await
        .error(403, "AccessDenied");
    let unknown = Cred {
        id: "AKIDUNKNOWN".to_owned(),
        ..permanent()
    };
    get(&t, &unknown, "k")
        .await
        .error(403, "InvalidAccessKeyId");
    t.req(&me, "GET", "k")
        .sign_key("wrong")
        .send(&t)
        .await
        .error(403, "SignatureDoesNotMatch");
    // A signed header changed after signing.
    let mut r = t.req(&me, "PUT", "k").header("x-cos-meta-a", "1").body("v");
    r.override_header = Some(("x-cos-meta-a".to_owned(), "2".to_owned()));
    r.send(&t).await.error(403, "SignatureDoesNotMatch");
    // A signed parameter changed after signing: sign one value, send another.
    let sig = cos::sign(
        SECRET_KEY,
        now() - 10,
        now() + 600,
        &CosRequest {
            method: "GET",
            path: "/",
            params: &[("prefix", "a/")],
            headers: &[],
        },
    );
    let r = t
        .http
        .get(format!("{}/{BUCKET}/?prefix=b%2F", t.emu.url()))
        .header("Authorization", sig.authorization(SECRET_ID))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("SignatureDoesNotMatch"));
    // The signature covers the method and path: a PUT signature does not GET.
    let sig = cos::sign(
        SECRET_KEY,
        now() - 10,
        now() + 600,
        &CosRequest {
            method: "PUT",
            path: "/k",
            params: &[],
            headers: &[],
        },
    );
    let r = t
        .http
        .get(format!("{}/{BUCKET}/k", t.emu.url()))
        .header("Authorization", sig.authorization(SECRET_ID))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("SignatureDoesNotMatch"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls() {
    let t = spawn();
    let me = permanent();
    put(&t, &me, "users/alice/a.jpg", b"alice").await.ok(200);
    put(&t, &me, "users/bob/a.jpg", b"bob").await.ok(200);
    let r = t
        .req(&me, "GET", "users/alice/a.jpg")
        .auth(AuthForm::Query)
        .send(&t)
        .await;
    r.ok(200);
    assert_eq!(r.text(), "alice");

    let alice = t
        .temporary(&policy(vec![allow(
            &["name/cos:GetObject"],
            &[resource("users/alice/*")],
        )]))
        .await;
    for token in [TokenForm::UnsignedQuery, TokenForm::SignedQuery] {
        for style in [
            Style::VirtualHost(Some(REGION.to_owned())),
            Style::Path {
                sign_full_path: false,
            },
        ] {
            let r = t
                .req(&alice, "GET", "users/alice/a.jpg")
                .auth(AuthForm::Query)
                .token(token)
                .style(style.clone())
                .send(&t)
                .await;
            r.ok(200);
            assert_eq!(r.text(), "alice");
            t.req(&alice, "GET", "users/bob/a.jpg")
                .auth(AuthForm::Query)
                .token(token)
                .style(style)
                .send(&t)
                .await
                .error(403, "AccessDenied");
        }
    }
    // A presigned URL that has expired.
    t.req(&alice, "GET", "users/alice/a.jpg")
        .auth(AuthForm::Query)
        .token(TokenForm::UnsignedQuery)
        .key_time(now() - 600, now() - 300)
        .send(&t)
        .await
        .error(403, "AccessDenied");
    // A presigned URL with the wrong signature.
    t.req(&alice, "GET", "users/alice/a.jpg")
        .auth(AuthForm::Query)
        .token(TokenForm::UnsignedQuery)
        .sign_key("nope")
        .send(&t)
        .await
        .error(403, "SignatureDoesNotMatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_rules() {
    let t = spawn();
    let cred = t
        .temporary(&policy(vec![allow(&["name/cos:*"], &[resource("*")])]))
        .await;
    for form in [
        TokenForm::UnsignedHeader,
        TokenForm::SignedHeader,
        TokenForm::CiHeader,
        TokenForm::UnsignedQuery,
        TokenForm::SignedQuery,
    ] {
        t.req(&cred, "PUT", "k")
            .token(form)
            .body("v")
            .send(&t)
            .await
            .ok(200);
    }
    let msg = t
        .req(&cred, "PUT", "k")
        .token(TokenForm::Omitted)
        .body("v")
        .send(&t)
        .await
        .error(403, "InvalidAccessKeyId");
    assert!(msg.contains("x-cos-security-token"), "{msg}");
    let other = t
        .temporary(&policy(vec![allow(&["name/cos:*"], &[resource("*")])]))
        .await;
    let wrong = Cred {
        token: other.token.clone(),
        ..cred.clone()
    };
    t.req(&wrong, "PUT", "k")
        .body("v")
        .send(&t)
        .await
        .error(403, "InvalidAccessKeyId");
    // A permanent key needs no token.
    put(&t, &permanent(), "k", b"v").await.ok(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_credentials_are_refused() {
    let t = spawn();
    let cred = t
        .federation_token(&policy(vec![allow(&["name/cos:*"], &[resource("*")])]), 1)
        .await;
    put(&t, &cred, "k", b"v").await.ok(200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let msg = put(&t, &cred, "k", b"v").await.error(403, "AccessDenied");
    assert!(msg.contains("expired"), "{msg}");
    assert!(msg.contains("temporary credential"), "{msg}");

    // The clock_offset fault ages credentials without waiting.
    let cred = t
        .temporary(&policy(vec![allow(&["name/cos:*"], &[resource("*")])]))
        .await;
    get(&t, &cred, "k").await.ok(200);
    t.emu
        .set_faults(Faults {
            clock_offset_secs: 3600,
            ..Faults::default()
        })
        .unwrap();
    let msg = t
        .req(&cred, "GET", "k")
        .key_time(now() - 60, now() + 10_000)
        .send(&t)
        .await
        .error(403, "AccessDenied");
    assert!(msg.contains("temporary credential has expired"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_key_times() {
    let t = spawn();
    let me = permanent();
    put(&t, &me, "k", b"v").await.ok(200);
    let msg = t
        .req(&me, "GET", "k")
        .key_time(now() - 600, now() - 10)
        .send(&t)
        .await
        .error(403, "AccessDenied");
    assert!(msg.contains("Request has expired"), "{msg}");
    let msg = t
        .req(&me, "GET", "k")
        .key_time(now() + 300, now() + 600)
        .send(&t)
        .await
        .error(403, "AccessDenied");
    assert!(msg.contains("not yet valid"), "{msg}");

    // A temporary key signing from before it was issued.
    let cred = t
        .temporary(&policy(vec![allow(&["name/cos:*"], &[resource("*")])]))
        .await;
    let msg = t
        .req(&cred, "GET", "k")
        .key_time(now() - 3600, now() + 600)
        .send(&t)
        .await
        .error(403, "AccessDenied");
    assert!(msg.contains("validity"), "{msg}");
    // cos-python-sdk-v5's window (now-60; now+10000) runs past the credential's expiry: allowed.
    t.req(&cred, "GET", "k")
        .key_time(now() - 60, now() + 10_000)
        .send(&t)
        .await
        .ok(200);
    // cos-js-sdk-v5's window: the credential's own StartTime;ExpiredTime.
    let issued = t.emu.credential(&cred.id).unwrap();
    t.req(&cred, "GET", "k")
        .key_time(issued.issued_at, issued.expired_time)
        .send(&t)
        .await
        .ok(200);
    // The emulator's clock (clock_offset fault) decides.
    t.emu
        .set_faults(Faults {
            clock_offset_secs: -1000,
            ..Faults::default()
        })
        .unwrap();
    t.req(&me, "GET", "k")
        .key_time(now() - 60, now() + 600)
        .send(&t)
        .await
        .error(403, "AccessDenied");
}

// ---------------------------------------------------------------------------------------------
// Session policies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_prefix_policy() {
    let t = spawn();
    let me = permanent();
    put(&t, &me, "users/bob/a.jpg", b"bob").await.ok(200);
    let alice = t
        .temporary(&policy(vec![allow(
            &[
                "name/cos:PutObject",
                "name/cos:GetObject",
                "name/cos:HeadObject",
            ],
            &[resource("users/alice/*")],
        )]))
        .await;
    put(&t, &alice, "users/alice/a.jpg", b"mine").await.ok(200);
    assert_eq!(get(&t, &alice, "users/alice/a.jpg").await.text(), "mine");
    t.req(&alice, "HEAD", "users/alice/a.jpg")
        .send(&t)
        .await
        .ok(200);
    let msg = put(&t, &alice, "users/bob/a.jpg", b"x")
        .await
        .error(403, "AccessDenied");
    assert!(msg.contains("name/cos:PutObject"), "{msg}");
    get(&t, &alice, "users/bob/a.jpg")
        .await
        .error(403, "AccessDenied");
    // `users/alice/*` does not cover `users/alice` nor `users/alice2/…`.
    put(&t, &alice, "users/alice", b"x")
        .await
        .error(403, "AccessDenied");
    put(&t, &alice, "users/alice2/x", b"x")
        .await
        .error(403, "AccessDenied");
    // Not granted: delete, list.
    t.req(&alice, "DELETE", "users/alice/a.jpg")
        .send(&t)
        .await
        .error(403, "AccessDenied");
    list(&t, &alice, &[("prefix", "users/alice/")])
        .await
        .error(403, "AccessDenied");
    // Authorization comes after authentication: a missing object behind a denied key is 403.
    get(&t, &alice, "users/bob/missing")
        .await
        .error(403, "AccessDenied");
    // And NoSuchKey where allowed.
    get(&t, &alice, "users/alice/missing")
        .await
        .error(404, "NoSuchKey");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_forms() {
    let t = spawn();
    put(&t, &permanent(), "k", b"v").await.ok(200);
    for action in [
        "name/cos:GetObject",
        "cos:GetObject",
        "name/cos:*",
        "cos:*",
        "*",
        "name/cos:Get*",
    ] {
        let cred = t
            .temporary(&policy(vec![allow(&[action], &[resource("*")])]))
            .await;
        get(&t, &cred, "k").await.ok(200);
    }
    for action in [
        "name/cos:GetObjectACL",
        "name/cos:getobject",
        "name/cos:Put*",
    ] {
        let cred = t
            .temporary(&policy(vec![allow(&[action], &[resource("*")])]))
            .await;
        get(&t, &cred, "k").await.error(403, "AccessDenied");
    }
    // HeadObject is its own action.
    let cred = t
        .temporary(&policy(vec![allow(
            &["name/cos:GetObject"],
            &[resource("*")],
        )]))
        .await;
    assert_eq!(t.req(&cred, "HEAD", "k").send(&t).await.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_actions_are_checked_one_by_one() {
    let t = spawn();
    let mut actions = vec![
        "name/cos:InitiateMultipartUpload",
        "name/cos:UploadPart",
        "name/cos:ListParts",
        "name/cos:CompleteMultipartUpload",
        "name/cos:AbortMultipartUpload",
    ];
    let everything = t
        .temporary(&policy(vec![
            allow(&actions, &[resource("up/*")]),
            allow(&["name/cos:ListMultipartUploads"], &[resource("")]),
        ]))
        .await;
    let id = initiate(&t, &everything, "up/a").await;
    let part = upload_part(&t, &everything, "up/a", &id, 1, b"p").await;
    part.ok(200);
    t.req(&everything, "GET", "up/a")
        .query("uploadId", &id)
        .send(&t)
        .await
        .ok(200);
    t.req(&everything, "GET", "")
        .query("uploads", "")
        .send(&t)
        .await
        .ok(200);
    complete(
        &t,
        &everything,
        "up/a",
        &id,
        &[(1, part.header("etag").unwrap().to_owned())],
    )
    .await
    .ok(200);
    let id2 = initiate(&t, &everything, "up/b").await;
    t.req(&everything, "DELETE", "up/b")
        .query("uploadId", &id2)
        .send(&t)
        .await
        .ok(204);
    // Outside the prefix, and ListMultipartUploads without the bucket-level grant.
    t.req(&everything, "POST", "other")
        .query("uploads", "")
        .send(&t)
        .await
        .error(403, "AccessDenied");

    // Take away one action at a time.
    let id = initiate(&t, &permanent(), "up/c").await;
    let part = upload_part(&t, &permanent(), "up/c", &id, 1, b"p").await;
    let etag = part.header("etag").unwrap().to_owned();
    while let Some(missing) = actions.pop() {
        let granted = if actions.is_empty() {
            vec!["name/cos:GetObject"]
        } else {
            actions.clone()
        };
        let cred = t
            .temporary(&policy(vec![allow(&granted, &[resource("up/*")])]))
            .await;
        let r = match missing {
            "name/cos:AbortMultipartUpload" => {
                t.req(&cred, "DELETE", "up/c")
                    .query("uploadId", &id)
                    .send(&t)
                    .await
            }
            "name/cos:CompleteMultipartUpload" => {
                complete(&t, &cred, "up/c", &id, &[(1, etag.clone())]).await
            }
            "name/cos:ListParts" => {
                t.req(&cred, "GET", "up/c")
                    .query("uploadId", &id)
                    .send(&t)
                    .await
            }
            "name/cos:UploadPart" => upload_part(&t, &cred, "up/c", &id, 2, b"p").await,
            _ => {
                t.req(&cred, "POST", "up/d")
                    .query("uploads", "")
                    .send(&t)
                    .await
            }
        };
        let msg = r.error(403, "AccessDenied");
        assert!(msg.contains(missing), "{missing}: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_level_resource_needs_the_trailing_slash() {
    let t = spawn();
    put(&t, &permanent(), "users/alice/a", b"v").await.ok(200);
    let objects_only = t
        .temporary(&policy(vec![allow(
            &["name/cos:GetBucket", "name/cos:HeadBucket"],
            &[resource("*")],
        )]))
        .await;
    list(&t, &objects_only, &[])
        .await
        .error(403, "AccessDenied");
    assert_eq!(t.req(&objects_only, "HEAD", "").send(&t).await.status, 403);
    let bucket = t
        .temporary(&policy(vec![allow(
            &["name/cos:GetBucket"],
            &[resource("")],
        )]))
        .await;
    list(&t, &bucket, &[]).await.ok(200);
    // The bucket-level grant is not an object grant.
    get(&t, &bucket, "users/alice/a")
        .await
        .error(403, "AccessDenied");
    let star = t
        .temporary(&policy(vec![allow(
            &["name/cos:GetBucket"],
            &["*".to_owned()],
        )]))
        .await;
    list(&t, &star, &[]).await.ok(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_exact_legacy_and_region() {
    let t = spawn();
    let me = permanent();
    put(&t, &me, "a.txt", b"a").await.ok(200);
    put(&t, &me, "a.txt2", b"a").await.ok(200);
    let exact = t
        .temporary(&policy(vec![allow(
            &["name/cos:GetObject"],
            &[resource("a.txt")],
        )]))
        .await;
    get(&t, &exact, "a.txt").await.ok(200);
    get(&t, &exact, "a.txt2").await.error(403, "AccessDenied");

    let legacy = t
        .temporary(&policy(vec![allow(
            &["name/cos:GetObject"],
            &[format!(
                "qcs::cos:{REGION}:uid/{APPID}:prefix//{APPID}/examplebucket/a.*"
            )],
        )]))
        .await;
    get(&t, &legacy, "a.txt").await.ok(200);
    get(&t, &legacy, "b").await.error(403, "AccessDenied");

    // The region in the policy must be the bucket's.
    let beijing = t
        .temporary(&policy(vec![allow(
            &["name/cos:GetObject"],
            &[format!("qcs::cos:ap-beijing:uid/{APPID}:{BUCKET}/*")],
        )]))
        .await;
    get(&t, &beijing, "a.txt").await.error(403, "AccessDenied");
    t.req(&beijing, "GET", "a.txt")
        .style(Style::VirtualHost(Some("ap-beijing".to_owned())))
        .send(&t)
        .await
        .ok(200);
    // A host without a region (path style on 127.0.0.1) matches any region.
    t.req(&beijing, "GET", "a.txt")
        .style(Style::Path {
            sign_full_path: true,
        })
        .send(&t)
        .await
        .ok(200);
    // Another bucket of the same APPID is not covered.
    let r = t.req(&beijing, "GET", "a.txt").bucket("second-1250000000");
    r.style(Style::VirtualHost(Some("ap-beijing".to_owned())))
        .send(&t)
        .await
        .error(403, "AccessDenied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_overrides_allow() {
    let t = spawn();
    let me = permanent();
    put(&t, &me, "public/a", b"a").await.ok(200);
    put(&t, &me, "secret/a", b"a").await.ok(200);
    let cred = t
        .temporary(&policy(vec![
            allow(&["name/cos:*"], &[resource("*")]),
            json!({"effect": "deny", "action": ["name/cos:GetObject"], "resource": [resource("secret/*")]}),
        ]))
        .await;
    get(&t, &cred, "public/a").await.ok(200);
    let msg = get(&t, &cred, "secret/a").await.error(403, "AccessDenied");
    assert!(msg.contains("deny"), "{msg}");
    // The deny names GetObject only.
    t.req(&cred, "DELETE", "secret/a").send(&t).await.ok(204);
}

async fn cred_with_condition(t: &Emu, action: &str, key: &str, condition: Value) -> Cred {
    let mut st = allow(&[action], &[resource(key)]);
    st["condition"] = condition;
    t.temporary(&policy(vec![st])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_conditions() {
    let t = spawn();
    put(&t, &permanent(), "k", b"v").await.ok(200);
    for (cond, status) in [
        (json!({"ip_equal": {"qcs:ip": ["127.0.0.1/32"]}}), 200),
        (
            json!({"ip_equal": {"qcs:ip": ["10.0.0.0/8", "127.0.0.0/8"]}}),
            200,
        ),
        (json!({"ip_equal": {"qcs:ip": "10.0.0.0/8"}}), 403),
        (json!({"ip_not_equal": {"qcs:ip": "10.0.0.0/8"}}), 200),
        (json!({"ip_not_equal": {"qcs:ip": "127.0.0.1"}}), 403),
    ] {
        let cred = cred_with_condition(&t, "name/cos:GetObject", "*", cond.clone()).await;
        assert_eq!(get(&t, &cred, "k").await.status, status, "{cond}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_and_content_type_conditions() {
    let t = spawn();
    let small = cred_with_condition(
        &t,
        "name/cos:PutObject",
        "*",
        json!({"numeric_less_than_equal": {"cos:content-length": 10}}),
    )
    .await;
    put(&t, &small, "k", &[1; 10]).await.ok(200);
    put(&t, &small, "k", &[1; 11])
        .await
        .error(403, "AccessDenied");

    let images = cred_with_condition(
        &t,
        "name/cos:PutObject",
        "*",
        json!({"string_like": {"cos:content-type": "image/*"}}),
    )
    .await;
    let typed = |cred: &Cred, ct: &str| {
        t.req(cred, "PUT", "img")
            .header("Content-Type", ct)
            .body("x")
    };
    typed(&images, "image/png").send(&t).await.ok(200);
    typed(&images, "text/plain")
        .send(&t)
        .await
        .error(403, "AccessDenied");
    // No Content-Type: the key is missing, so the condition fails…
    put(&t, &images, "img", b"x")
        .await
        .error(403, "AccessDenied");
    // …unless the operator ends in _if_exist.
    let if_exist = cred_with_condition(
        &t,
        "name/cos:PutObject",
        "*",
        json!({"string_like_if_exist": {"cos:content-type": "image/*"}}),
    )
    .await;
    put(&t, &if_exist, "img", b"x").await.ok(200);
    typed(&if_exist, "text/plain")
        .send(&t)
        .await
        .error(403, "AccessDenied");

    let exact = cred_with_condition(
        &t,
        "name/cos:PutObject",
        "*",
        json!({"string_equal": {"cos:content-type": ["image/jpeg", "image/png"]}}),
    )
    .await;
    typed(&exact, "image/png").send(&t).await.ok(200);
    typed(&exact, "image/gif")
        .send(&t)
        .await
        .error(403, "AccessDenied");

    // Operators and keys are AND'ed; unknown keys and operators fail.
    let both = cred_with_condition(
        &t,
        "name/cos:PutObject",
        "*",
        json!({"string_equal": {"cos:content-type": "image/png"},
               "numeric_less_than": {"cos:content-length": 5}}),
    )
    .await;
    typed(&both, "image/png").send(&t).await.ok(200);
    typed(&both, "image/png")
        .body("too long")
        .send(&t)
        .await
        .error(403, "AccessDenied");
    for cond in [
        json!({"string_equal": {"cos:no-such-key": "x"}}),
        json!({"string_sounds_like": {"cos:content-type": "image/png"}}),
    ] {
        let cred = cred_with_condition(&t, "name/cos:PutObject", "*", cond).await;
        typed(&cred, "image/png")
            .send(&t)
            .await
            .error(403, "AccessDenied");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_condition_on_listing() {
    let t = spawn();
    let me = permanent();
    for key in ["users/alice/1", "users/alice/2", "users/bob/1"] {
        put(&t, &me, key, b"x").await.ok(200);
    }
    let alice = cred_with_condition(
        &t,
        "name/cos:GetBucket",
        "",
        json!({"string_equal": {"cos:prefix": "users/alice/"}}),
    )
    .await;
    let r = list(&t, &alice, &[("prefix", "users/alice/")]).await;
    r.ok(200);
    assert_eq!(r.xml("Key"), vec!["users/alice/1", "users/alice/2"]);
    list(&t, &alice, &[("prefix", "users/bob/")])
        .await
        .error(403, "AccessDenied");
    // No prefix at all: the key is missing.
    list(&t, &alice, &[]).await.error(403, "AccessDenied");

    let like = cred_with_condition(
        &t,
        "name/cos:GetBucket",
        "",
        json!({"string_like": {"cos:prefix": "users/alice/*"}}),
    )
    .await;
    list(&t, &like, &[("prefix", "users/alice/sub/")])
        .await
        .ok(200);
    list(&t, &like, &[("prefix", "users/")])
        .await
        .error(403, "AccessDenied");

    let if_exist = cred_with_condition(
        &t,
        "name/cos:GetBucket",
        "",
        json!({"string_equal_if_exist": {"cos:prefix": "users/alice/"}}),
    )
    .await;
    list(&t, &if_exist, &[]).await.ok(200);
    list(&t, &if_exist, &[("prefix", "users/bob/")])
        .await
        .error(403, "AccessDenied");
}

// ---------------------------------------------------------------------------------------------
// Errors and limits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_too_large_is_refused_before_reading() {
    let t = spawn();
    let sig = cos::sign(
        SECRET_KEY,
        now() - 60,
        now() + 600,
        &CosRequest {
            method: "PUT",
            path: "/huge",
            params: &[],
            headers: &[],
        },
    );
    let request = format!(
        "PUT /{BUCKET}/huge HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        t.emu.addr(),
        sig.authorization(SECRET_ID),
        6u64 * 1024 * 1024 * 1024
    );
    let addr = t.emu.addr();
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("<Code>EntityTooLarge</Code>"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_host_through_a_proxy_style_request() {
    // What an SDK's proxy setting sends: an absolute-form request target.
    let t = spawn();
    let me = permanent();
    put(&t, &me, "via/proxy.txt", b"proxied").await.ok(200);
    let host = format!("{BUCKET}.cos.{REGION}.myqcloud.com");
    let sig = cos::sign(
        SECRET_KEY,
        now() - 60,
        now() + 600,
        &CosRequest {
            method: "GET",
            path: "/via/proxy.txt",
            params: &[],
            headers: &[("host", &host)],
        },
    );
    let request = format!(
        "GET http://{host}/via/proxy.txt HTTP/1.1\r\nHost: {host}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        sig.authorization(SECRET_ID)
    );
    let addr = t.emu.addr();
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("proxied"), "{answer}");
    // Header names in the case COS writes them (cos-python-sdk-v5 hands out a plain dict).
    for line in [
        format!("\r\nETag: \"{}\"\r\n", md5_hex(b"proxied")),
        "\r\nContent-Type: application/octet-stream\r\n".to_owned(),
        "\r\nContent-Length: 7\r\n".to_owned(),
        "\r\nLast-Modified: ".to_owned(),
        "\r\nx-cos-request-id: ".to_owned(),
    ] {
        assert!(answer.contains(&line), "{line:?} in {answer}");
    }
}

// ---------------------------------------------------------------------------------------------
// Persistence

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| {
                let p = e.unwrap().path();
                if p.is_dir() { count_files(&p) } else { 1 }
            })
            .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("stsgate-cos-test-{}", uuid::Uuid::new_v4()));
    let me = permanent();
    let cfg = || EmulatorConfig {
        data_dir: Some(dir.clone()),
        ..config()
    };
    let big = data(2 * MB, 7);
    let (upload_id, part1_etag) = {
        let t = spawn_with(cfg());
        put(&t, &me, "kept/a.txt", b"persisted").await.ok(200);
        t.req(&me, "PUT", "kept/typed.json")
            .header("Content-Type", "application/json")
            .header("x-cos-meta-k", "v")
            .body("{}")
            .send(&t)
            .await
            .ok(200);
        put(&t, &me, "gone.txt", b"x").await.ok(200);
        t.req(&me, "DELETE", "gone.txt").send(&t).await.ok(204);
        put(&t, &me, "over.txt", b"one").await.ok(200);
        put(&t, &me, "over.txt", b"two").await.ok(200);
        let id = initiate(&t, &me, "kept/multi").await;
        let part = upload_part(&t, &me, "kept/multi", &id, 1, &big).await;
        part.ok(200);
        let etag = part.header("etag").unwrap().to_owned();
        t.emu.stop().await;
        (id, etag)
    };
    let t = spawn_with(cfg());
    let r = get(&t, &me, "kept/a.txt").await;
    r.ok(200);
    assert_eq!(r.text(), "persisted");
    let r = get(&t, &me, "kept/typed.json").await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-cos-meta-k"), Some("v"));
    get(&t, &me, "gone.txt").await.error(404, "NoSuchKey");
    assert_eq!(get(&t, &me, "over.txt").await.text(), "two");
    let r = list(&t, &me, &[]).await;
    assert_eq!(
        r.xml("Key"),
        vec!["kept/a.txt", "kept/typed.json", "over.txt"]
    );
    // The multipart upload goes on where it stopped.
    let r = t
        .req(&me, "GET", "kept/multi")
        .query("uploadId", &upload_id)
        .send(&t)
        .await;
    r.ok(200);
    assert_eq!(r.xml("PartNumber"), vec!["1"]);
    let part2 = upload_part(&t, &me, "kept/multi", &upload_id, 2, b"tail").await;
    complete(
        &t,
        &me,
        "kept/multi",
        &upload_id,
        &[
            (1, part1_etag),
            (2, part2.header("etag").unwrap().to_owned()),
        ],
    )
    .await
    .ok(200);
    let r = get(&t, &me, "kept/multi").await;
    assert_eq!(r.body.len(), big.len() + 4);
    assert!(r.body[..big.len()] == big[..]);
    t.emu.stop().await;
    // Objects are files: four objects, each a sidecar and a data file; no upload left over.
    assert_eq!(count_files(&dir.join("objects")), 8);
    assert_eq!(count_files(&dir.join("uploads")), 0);
    // Credentials are not persisted: a new emulator does not know old temporary keys.
    let t = spawn_with(cfg());
    let cred = t
        .temporary(&policy(vec![allow(&["name/cos:*"], &[resource("*")])]))
        .await;
    get(&t, &cred, "kept/a.txt").await.ok(200);
    t.emu.stop().await;
    let t = spawn_with(cfg());
    get(&t, &cred, "kept/a.txt")
        .await
        .error(403, "InvalidAccessKeyId");
    t.emu.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// POST Object (browser form upload)

struct Form {
    fields: Vec<(String, String)>,
    file_name: String,
    file: Vec<u8>,
}

fn post_policy(conditions: Value, expires_in: i64) -> String {
    let expiration = time::OffsetDateTime::from_unix_timestamp(now() + expires_in)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    json!({"expiration": expiration, "conditions": conditions}).to_string()
}

/// A signed form: `policy` is the JSON document; `sign_key` signs instead of the credential.
fn signed_form(cred: &Cred, key: &str, policy: &str, sign_key: Option<&str>) -> Form {
    let key_time = format!("{};{}", now() - 60, now() + 600);
    let sign_key = hex::encode(sts_core::encoding::hmac_sha1(
        sign_key.unwrap_or(&cred.key).as_bytes(),
        key_time.as_bytes(),
    ));
    let signature = hex::encode(sts_core::encoding::hmac_sha1(
        sign_key.as_bytes(),
        sts_core::encoding::sha1_hex(policy.as_bytes()).as_bytes(),
    ));
    let mut fields = vec![
        ("key".to_owned(), key.to_owned()),
        ("policy".to_owned(), STANDARD.encode(policy)),
        ("q-sign-algorithm".to_owned(), "sha1".to_owned()),
        ("q-ak".to_owned(), cred.id.clone()),
        ("q-key-time".to_owned(), key_time),
        ("q-signature".to_owned(), signature),
    ];
    if let Some(token) = &cred.token {
        fields.push(("x-cos-security-token".to_owned(), token.clone()));
    }
    Form {
        fields,
        file_name: "photo.png".to_owned(),
        file: b"\x89PNG form upload".to_vec(),
    }
}

impl Form {
    fn field(mut self, k: &str, v: &str) -> Self {
        self.fields.retain(|(name, _)| name != k);
        self.fields.push((k.to_owned(), v.to_owned()));
        self
    }

    fn without(mut self, k: &str) -> Self {
        self.fields.retain(|(name, _)| name != k);
        self
    }

    async fn post(self, t: &Emu) -> Resp {
        let boundary = "----stsgateFormBoundary7MA4YWxkTrZu0gW";
        let mut body = Vec::new();
        for (k, v) in &self.fields {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                )
                .as_bytes(),
            );
        }
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\nContent-Type: image/png\r\n\r\n",
                self.file_name
            )
            .as_bytes(),
        );
        body.extend_from_slice(&self.file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let response = t
            .http
            .post(format!("{}/{BUCKET}/", t.emu.url()))
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .header("Origin", "http://localhost:3000")
            .body(body)
            .send()
            .await
            .unwrap();
        Resp {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.unwrap(),
        }
    }
}

fn alice_form_conditions(cred: &Cred) -> Value {
    json!([
        {"bucket": BUCKET},
        ["starts-with", "$key", "users/"],
        {"q-sign-algorithm": "sha1"},
        {"q-ak": cred.id},
        ["content-length-range", 0, 1000],
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_object_form_uploads() {
    let t = spawn();
    let alice = t
        .temporary(&policy(vec![allow(
            &["name/cos:PostObject"],
            &[resource("users/alice/*")],
        )]))
        .await;
    let doc = post_policy(alice_form_conditions(&alice), 600);

    // 201 with an XML answer; ${filename}; Content-Type and x-cos-meta-* from the form.
    let r = signed_form(&alice, "users/alice/${filename}", &doc, None)
        .field("Content-Type", "image/png")
        .field("x-cos-meta-source", "form")
        .field("success_action_status", "201")
        .post(&t)
        .await;
    r.ok(201);
    assert_eq!(r.xml("Key"), vec!["users/alice/photo.png"]);
    assert_eq!(
        r.header("etag").unwrap(),
        format!("\"{}\"", md5_hex(b"\x89PNG form upload"))
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    let got = get(&t, &permanent(), "users/alice/photo.png").await;
    got.ok(200);
    assert_eq!(&got.body[..], b"\x89PNG form upload");
    assert_eq!(got.header("content-type"), Some("image/png"));
    assert_eq!(got.header("x-cos-meta-source"), Some("form"));

    // The default answer is 204.
    signed_form(&alice, "users/alice/b.png", &doc, None)
        .post(&t)
        .await
        .ok(204);
    // The session policy still decides: bob's prefix is refused.
    let msg = signed_form(&alice, "users/bob/b.png", &doc, None)
        .post(&t)
        .await
        .error(403, "AccessDenied");
    assert!(msg.contains("name/cos:PostObject"), "{msg}");
    // The policy document's own conditions.
    signed_form(&alice, "other/b.png", &doc, None)
        .post(&t)
        .await
        .error(403, "AccessDenied");
    let mut big = signed_form(&alice, "users/alice/big.png", &doc, None);
    big.file = vec![0; 1001];
    big.post(&t).await.error(400, "EntityTooLarge");
    let expired = post_policy(alice_form_conditions(&alice), -10);
    let msg = signed_form(&alice, "users/alice/c.png", &expired, None)
        .post(&t)
        .await
        .error(403, "AccessDenied");
    assert!(msg.contains("expired"), "{msg}");
    // Signature, token and anonymous forms.
    signed_form(&alice, "users/alice/c.png", &doc, Some("wrong"))
        .post(&t)
        .await
        .error(403, "SignatureDoesNotMatch");
    signed_form(&alice, "users/alice/c.png", &doc, None)
        .without("x-cos-security-token")
        .post(&t)
        .await
        .error(403, "InvalidAccessKeyId");
    signed_form(&alice, "users/alice/c.png", &doc, None)
        .without("policy")
        .without("q-signature")
        .post(&t)
        .await
        .error(403, "AccessDenied");
    // A permanent key may post anywhere in its buckets.
    let me = permanent();
    let doc = post_policy(json!([{"bucket": BUCKET}]), 600);
    signed_form(&me, "anywhere.png", &doc, None)
        .field("success_action_status", "200")
        .post(&t)
        .await
        .ok(200);
    // A PutObject grant is not a PostObject grant.
    let putter = t
        .temporary(&policy(vec![allow(
            &["name/cos:PutObject"],
            &[resource("*")],
        )]))
        .await;
    let doc = post_policy(json!([]), 600);
    signed_form(&putter, "x.png", &doc, None)
        .post(&t)
        .await
        .error(403, "AccessDenied");
}
