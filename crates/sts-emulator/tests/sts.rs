//! The STS emulator over real HTTP: TC3 and v1 signatures, STS's limits and error codes, the
//! credential store, fault injection and the `/_emulator/` control endpoints.
//!
//! Every request is built and signed here with sts-core's signers (not the `StsClient`), so these
//! tests pin the emulator's wire behaviour (reference `tencent-sts.md` §1, §2.5, §2.7, §2.9).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sts_core::encoding::uri_encode;
use sts_core::tc3::{self, Tc3Request};
use sts_core::v1::{self, SignatureMethod};
use sts_emulator::{EmulatorConfig, EmulatorHandle, Faults};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const SECRET_ID: &str = "AKIDTEST";
const SECRET_KEY: &str = "testkey";
/// A second account of the same APPID (another app's key).
const OTHER_ID: &str = "AKIDOTHER";
const OTHER_KEY: &str = "otherkey";
const APPID: &str = "1250000000";
const OTHER_APPID: &str = "1250000001";
const VERSION: &str = "2018-08-13";
const REGION: &str = "ap-guangzhou";
const BUCKET: &str = "examplebucket-1250000000";
const ROLE_ARN: &str = "qcs::cam::uin/100000000001:roleName/uploader";
/// The domain the official SDKs put in their v1 string to sign (reference §4.3).
const SDK_DOMAIN: &str = "sts.tencentcloudapi.com";

/// A running emulator and one HTTP client for it.
struct TestEmulator {
    emu: EmulatorHandle,
    http: reqwest::Client,
}

impl TestEmulator {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.emu.url())
    }
}

fn spawn_emulator(rate_limit: u32) -> TestEmulator {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let emu = sts_emulator::start(
        EmulatorConfig {
            accounts: vec![
                format!("{SECRET_ID}:{SECRET_KEY}:{APPID}").parse().unwrap(),
                format!("{OTHER_ID}:{OTHER_KEY}:{APPID}").parse().unwrap(),
            ],
            rate_limit,
            workers: 1,
            ..EmulatorConfig::default()
        },
        listener,
    )
    .unwrap();
    sts_core::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    TestEmulator { emu, http }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Runs `f` inside one wall-clock second, starting just after a second boundary, and retries
/// when the next boundary passes first. The emulator reads the same clock, so a timestamp of
/// `second + n` is exactly `n` seconds away from its time for every request `f` sends.
async fn within_one_second<T, F, Fut>(mut f: F) -> T
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = T>,
{
    for _ in 0..20 {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let to_next = Duration::from_nanos(1_000_000_000 - u64::from(since_epoch.subsec_nanos()));
        tokio::time::sleep(to_next + Duration::from_millis(5)).await;
        let second = now();
        let out = f(second).await;
        if now() == second {
            return out;
        }
    }
    panic!("the requests never fitted into one wall-clock second in 20 tries");
}

/// An answer as it came over the wire.
#[derive(Debug)]
struct Answer {
    status: reqwest::StatusCode,
    content_type: Option<String>,
    body: Value,
}

impl Answer {
    async fn read(response: reqwest::Response) -> reqwest::Result<Self> {
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = response.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "the answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        Ok(Self {
            status,
            content_type,
            body,
        })
    }

    /// Checks STS's envelope (HTTP 200 even for errors, exactly `application/json`, a
    /// non-empty `RequestId`) and returns `Response`.
    fn response(&self) -> &Value {
        assert_eq!(self.status, 200, "{}", self.body);
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/json"),
            "{}",
            self.body
        );
        let response = &self.body["Response"];
        assert!(response.is_object(), "no Response object: {}", self.body);
        let request_id = response["RequestId"].as_str().unwrap_or_default();
        assert!(!request_id.is_empty(), "no RequestId: {}", self.body);
        response
    }

    fn code(&self) -> Option<&str> {
        self.response()
            .get("Error")
            .map(|e| e["Code"].as_str().expect("Error.Code is a string"))
    }

    /// Asserts a success and returns `Response`.
    fn success(&self) -> &Value {
        let response = self.response();
        assert!(
            response.get("Error").is_none(),
            "expected success: {}",
            self.body
        );
        response
    }

    /// Asserts `{"Response":{"Error":{"Code","Message"},"RequestId"}}` with this code and
    /// returns the message.
    fn error(&self, code: &str) -> String {
        let response = self.response();
        assert_eq!(
            response.as_object().unwrap().len(),
            2,
            "only Error and RequestId: {}",
            self.body
        );
        let error = &response["Error"];
        assert_eq!(error["Code"], code, "{}", self.body);
        let message = error["Message"]
            .as_str()
            .expect("Error.Message is a string");
        assert!(!message.is_empty(), "{}", self.body);
        message.to_owned()
    }
}

/// A TC3-signed STS call (POST, JSON body). Every input can be overridden before sending.
struct Tc3Call {
    action: String,
    /// The body bytes that are signed.
    body: Vec<u8>,
    /// Bytes sent instead of `body`: a body tampered with after signing.
    sent_body: Option<Vec<u8>>,
    timestamp: i64,
    secret_id: String,
    secret_key: String,
}

impl Tc3Call {
    fn new(action: &str, params: &Value) -> Self {
        Self {
            action: action.to_owned(),
            body: params.to_string().into_bytes(),
            sent_body: None,
            timestamp: now(),
            secret_id: SECRET_ID.to_owned(),
            secret_key: SECRET_KEY.to_owned(),
        }
    }

    fn body(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.body = bytes.into();
        self
    }

    fn tampered(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.sent_body = Some(bytes.into());
        self
    }

    fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = timestamp;
        self
    }

    fn key(mut self, secret_id: &str, secret_key: &str) -> Self {
        self.secret_id = secret_id.to_owned();
        self.secret_key = secret_key.to_owned();
        self
    }

    async fn send(self, t: &TestEmulator) -> reqwest::Result<Answer> {
        let host = t.emu.addr().to_string();
        let signed = tc3::sign(
            &self.secret_key,
            &Tc3Request {
                method: "POST",
                canonical_query: "",
                headers: &[("Content-Type", "application/json"), ("Host", &host)],
                payload: &self.body,
                service: "sts",
                timestamp: self.timestamp,
            },
        );
        let response = t
            .http
            .post(t.url("/"))
            .header("Content-Type", "application/json")
            .header("Host", &host)
            .header("X-TC-Action", &self.action)
            .header("X-TC-Version", VERSION)
            .header("X-TC-Timestamp", self.timestamp.to_string())
            .header("X-TC-Region", REGION)
            .header("Authorization", signed.authorization(&self.secret_id))
            .body(self.sent_body.unwrap_or(self.body))
            .send()
            .await?;
        Answer::read(response).await
    }

    async fn answer(self, t: &TestEmulator) -> Answer {
        self.send(t).await.expect("a complete HTTP answer")
    }
}

/// Sends a TC3 call with the defaults.
async fn tc3(t: &TestEmulator, action: &str, params: &Value) -> Answer {
    Tc3Call::new(action, params).answer(t).await
}

/// A v1-signed STS call (form POST, or GET), as the official `qcloud-cos-sts` SDKs send it.
struct V1Call {
    get: bool,
    params: BTreeMap<String, String>,
    secret_key: String,
    /// The host in the string to sign; the request's own `Host` when unset.
    signed_host: Option<String>,
    /// Signs with this method whatever `SignatureMethod` says.
    sign_with: Option<SignatureMethod>,
}

impl V1Call {
    fn new(action: &str, params: &[(&str, &str)]) -> Self {
        let mut all: BTreeMap<String, String> = [
            ("Action", action.to_owned()),
            ("SecretId", SECRET_ID.to_owned()),
            ("Timestamp", now().to_string()),
            (
                "Nonce",
                rand::random_range::<u32, _>(100_000..200_000).to_string(),
            ),
            ("Version", VERSION.to_owned()),
            ("Region", REGION.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        all.extend(
            params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        Self {
            get: false,
            params: all,
            secret_key: SECRET_KEY.to_owned(),
            signed_host: None,
            sign_with: None,
        }
    }

    fn method(mut self, method: SignatureMethod) -> Self {
        self.params
            .insert("SignatureMethod".to_owned(), method.as_str().to_owned());
        self
    }

    fn get(mut self) -> Self {
        self.get = true;
        self
    }

    fn signed_host(mut self, host: &str) -> Self {
        self.signed_host = Some(host.to_owned());
        self
    }

    fn secret_key(mut self, key: &str) -> Self {
        self.secret_key = key.to_owned();
        self
    }

    fn timestamp(mut self, timestamp: i64) -> Self {
        self.params
            .insert("Timestamp".to_owned(), timestamp.to_string());
        self
    }

    fn sign_with(mut self, method: SignatureMethod) -> Self {
        self.sign_with = Some(method);
        self
    }

    async fn answer(mut self, t: &TestEmulator) -> Answer {
        let host = self
            .signed_host
            .take()
            .unwrap_or_else(|| t.emu.addr().to_string());
        let http_method = if self.get { "GET" } else { "POST" };
        let signature = match self.sign_with {
            Some(method) => v1::sign_string(
                &self.secret_key,
                method,
                &v1::string_to_sign(http_method, &host, "/", &self.params),
            ),
            None => v1::sign(&self.secret_key, http_method, &host, "/", &self.params).unwrap(),
        };
        self.params.insert("Signature".to_owned(), signature);
        let encoded = serde_urlencoded::to_string(&self.params).unwrap();
        let request = if self.get {
            t.http.get(t.url(&format!("/?{encoded}")))
        } else {
            t.http
                .post(t.url("/"))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(encoded)
        };
        let response = request.send().await.expect("a complete HTTP answer");
        Answer::read(response)
            .await
            .expect("a complete HTTP answer")
    }
}

fn cos_resource(uid: &str, bucket: &str, key: &str) -> String {
    format!("qcs::cos:{REGION}:uid/{uid}:{bucket}/{key}")
}

fn policy_with(resources: &[String]) -> Value {
    json!({
        "version": "2.0",
        "statement": [{
            "effect": "allow",
            "action": ["name/cos:PutObject", "name/cos:GetObject"],
            "resource": resources,
        }]
    })
}

/// One user's upload prefix in the test account's bucket.
fn upload_policy() -> Value {
    policy_with(&[cos_resource(APPID, BUCKET, "users/42/*")])
}

/// `Policy` as the doc and stsgate send it: every byte outside `A-Za-z0-9-_.~` percent-encoded.
fn encoded(policy: &Value) -> String {
    uri_encode(&policy.to_string())
}

fn federation(policy: &str) -> Value {
    json!({"Name": "alice", "Policy": policy})
}

/// Python's `urllib.parse.quote(s)`: the default safe set keeps `/` literal.
fn python_quote(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_.-~/".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// JavaScript's `encodeURIComponent(s)`: keeps `A-Za-z0-9-_.!~*'()` literal.
fn encode_uri_component(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What Python's `json.dumps(upload_policy())` writes: `", "` and `": "` separators.
const PYTHON_JSON_POLICY: &str = r#"{"version": "2.0", "statement": [{"effect": "allow", "action": ["name/cos:PutObject", "name/cos:GetObject"], "resource": ["qcs::cos:ap-guangzhou:uid/1250000000:examplebucket-1250000000/users/42/*"]}]}"#;

/// The policy the emulator stored for a successful answer.
fn stored_policy(t: &TestEmulator, answer: &Answer) -> Option<Value> {
    let id = answer.success()["Credentials"]["TmpSecretId"]
        .as_str()
        .unwrap();
    t.emu
        .credential(id)
        .expect("the emulator remembers what it issued")
        .policy
}

async fn get_json(t: &TestEmulator, path: &str) -> (String, Value) {
    let response = t.http.get(t.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap();
    (text, value)
}

async fn put_faults(t: &TestEmulator, body: &str) -> reqwest::Response {
    t.http
        .put(t.url("/_emulator/faults"))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Success

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_federation_token_issues_credentials_the_emulator_remembers() {
    let t = spawn_emulator(600);
    let policy = upload_policy();
    let before = now();
    let answer = tc3(
        &t,
        "GetFederationToken",
        &json!({"Name": "alice", "Policy": encoded(&policy), "DurationSeconds": 900}),
    )
    .await;
    let after = now();
    let response = answer.success();

    let creds = &response["Credentials"];
    let tmp_id = creds["TmpSecretId"].as_str().unwrap();
    let tmp_key = creds["TmpSecretKey"].as_str().unwrap();
    let token = creds["Token"].as_str().unwrap();
    assert!(tmp_id.starts_with("AKID") && tmp_id.len() >= 40, "{tmp_id}");
    assert!(!tmp_key.is_empty());
    assert!(!token.is_empty() && token.len() <= 4096, "{}", token.len());
    let expired_time = response["ExpiredTime"].as_i64().unwrap();
    assert!(
        (before + 900 - 5..=after + 900 + 5).contains(&expired_time),
        "ExpiredTime {expired_time}, now {before}..{after}"
    );
    let expiration = response["Expiration"].as_str().unwrap();
    let expected = OffsetDateTime::from_unix_timestamp(expired_time)
        .unwrap()
        .format(&Rfc3339)
        .unwrap();
    assert_eq!(expiration, expected);
    assert!(expiration.ends_with('Z'), "{expiration}");

    let remembered = t.emu.credential(tmp_id).expect("remembered");
    assert_eq!(remembered.tmp_secret_id, tmp_id);
    assert_eq!(remembered.tmp_secret_key, tmp_key);
    assert_eq!(remembered.token, token);
    assert_eq!(remembered.secret_id, SECRET_ID);
    assert_eq!(remembered.appid, APPID);
    assert_eq!(remembered.action, "GetFederationToken");
    assert_eq!(remembered.name, "alice");
    assert_eq!(remembered.role_arn, None);
    assert_eq!(remembered.external_id, None);
    assert_eq!(remembered.policy, Some(policy.clone()), "decoded JSON");
    assert_eq!(remembered.duration_seconds, 900);
    assert_eq!(remembered.expired_time, expired_time);
    assert_eq!(remembered.issued_at, expired_time - 900);
    assert_eq!(remembered.request_id, response["RequestId"]);
    assert_eq!(t.emu.issued().len(), 1);
    assert!(t.emu.credential("AKIDNOTISSUED").is_none());

    let (text, listed) = get_json(
        &t,
        &format!("/_emulator/credentials?tmp_secret_id={tmp_id}"),
    )
    .await;
    assert!(!text.contains(tmp_key), "the secret key leaked: {text}");
    assert!(!text.contains(token), "the token leaked: {text}");
    let issued = listed["issued"].as_array().unwrap();
    assert_eq!(issued.len(), 1, "{text}");
    let item = issued[0].as_object().unwrap();
    assert_eq!(item["tmp_secret_id"], tmp_id);
    assert_eq!(item["action"], "GetFederationToken");
    assert_eq!(item["policy"], policy);
    assert_eq!(item["expired_time"], expired_time);
    assert!(!item.contains_key("tmp_secret_key") && !item.contains_key("token"));

    let (_, none) = get_json(&t, "/_emulator/credentials?tmp_secret_id=AKIDNOTISSUED").await;
    assert_eq!(none["issued"], json!([]));
    let (_, all) = get_json(&t, "/_emulator/credentials").await;
    assert_eq!(all["issued"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_defaults_to_7200_seconds() {
    let t = spawn_emulator(600);
    let policy = upload_policy();
    let before = now();
    let answer = tc3(
        &t,
        "AssumeRole",
        &json!({
            "RoleArn": ROLE_ARN,
            "RoleSessionName": "uploader-42",
            "ExternalId": "stsgate:app-1",
            "Policy": encoded(&policy),
        }),
    )
    .await;
    let after = now();
    let response = answer.success();
    let tmp_id = response["Credentials"]["TmpSecretId"].as_str().unwrap();
    assert!(tmp_id.starts_with("AKID") && tmp_id.len() >= 40);
    let expired_time = response["ExpiredTime"].as_i64().unwrap();
    assert!(
        (before + 7200 - 5..=after + 7200 + 5).contains(&expired_time),
        "ExpiredTime {expired_time}, now {before}..{after}"
    );

    let remembered = t.emu.credential(tmp_id).unwrap();
    assert_eq!(remembered.action, "AssumeRole");
    assert_eq!(remembered.name, "uploader-42");
    assert_eq!(remembered.role_arn.as_deref(), Some(ROLE_ARN));
    assert_eq!(remembered.external_id.as_deref(), Some("stsgate:app-1"));
    assert_eq!(remembered.policy, Some(policy));
    assert_eq!(remembered.duration_seconds, 7200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_form_post_with_hmac_sha1() {
    let t = spawn_emulator(600);
    // What qcloud-python-sts sends: no SignatureMethod, Policy quote()d, the SDK domain signed.
    let quoted = python_quote(PYTHON_JSON_POLICY);
    let sdk = V1Call::new(
        "GetFederationToken",
        &[
            ("Name", "cos-sts-python"),
            ("Policy", &quoted),
            ("DurationSeconds", "1800"),
        ],
    )
    .signed_host(SDK_DOMAIN)
    .answer(&t)
    .await;
    assert_eq!(stored_policy(&t, &sdk), Some(upload_policy()));
    let expired_time = sdk.success()["ExpiredTime"].as_i64().unwrap();
    assert!((now() + 1800 - 5..=now() + 1800 + 5).contains(&expired_time));

    // SignatureMethod=HmacSHA1 spelled out, signed with the request's own Host.
    let policy = encoded(&upload_policy());
    let explicit = V1Call::new(
        "GetFederationToken",
        &[("Name", "alice"), ("Policy", &policy)],
    )
    .method(SignatureMethod::HmacSha1)
    .answer(&t)
    .await;
    explicit.success();
    assert_eq!(stored_policy(&t, &explicit), Some(upload_policy()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_form_post_with_hmac_sha256() {
    let t = spawn_emulator(600);
    let policy = encoded(&upload_policy());
    let answer = V1Call::new(
        "AssumeRole",
        &[
            ("RoleArn", ROLE_ARN),
            ("RoleSessionName", "cos-sts-java"),
            ("Policy", &policy),
        ],
    )
    .method(SignatureMethod::HmacSha256)
    .answer(&t)
    .await;
    let tmp_id = answer.success()["Credentials"]["TmpSecretId"]
        .as_str()
        .unwrap();
    let remembered = t.emu.credential(tmp_id).unwrap();
    assert_eq!(remembered.action, "AssumeRole");
    assert_eq!(remembered.duration_seconds, 7200);
    assert_eq!(remembered.policy, Some(upload_policy()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_get_is_accepted() {
    let t = spawn_emulator(600);
    let policy = encoded(&upload_policy());
    for signed_host in [None, Some(SDK_DOMAIN)] {
        let mut call = V1Call::new(
            "GetFederationToken",
            &[
                ("Name", "alice"),
                ("Policy", &policy),
                ("DurationSeconds", "600"),
            ],
        )
        .get();
        if let Some(host) = signed_host {
            call = call.signed_host(host);
        }
        let answer = call.answer(&t).await;
        assert_eq!(stored_policy(&t, &answer), Some(upload_policy()));
    }
    // A v1 GET with HmacSHA256 too.
    let answer = V1Call::new(
        "GetFederationToken",
        &[("Name", "alice"), ("Policy", &policy)],
    )
    .method(SignatureMethod::HmacSha256)
    .get()
    .answer(&t)
    .await;
    answer.success();
}

// ---------------------------------------------------------------------------------------------
// Authentication failures

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_key_is_signature_failure() {
    let t = spawn_emulator(600);
    let params = federation(&encoded(&upload_policy()));
    Tc3Call::new("GetFederationToken", &params)
        .key(SECRET_ID, "not-the-key")
        .answer(&t)
        .await
        .error("AuthFailure.SignatureFailure");

    let policy = encoded(&upload_policy());
    let v1_params = [("Name", "alice"), ("Policy", policy.as_str())];
    V1Call::new("GetFederationToken", &v1_params)
        .secret_key("not-the-key")
        .answer(&t)
        .await
        .error("AuthFailure.SignatureFailure");
    // Signed with HmacSHA256 while SignatureMethod says HmacSHA1 (absent).
    V1Call::new("GetFederationToken", &v1_params)
        .sign_with(SignatureMethod::HmacSha256)
        .answer(&t)
        .await
        .error("AuthFailure.SignatureFailure");
    // A host the emulator was not told about.
    V1Call::new("GetFederationToken", &v1_params)
        .signed_host("sts.example.com")
        .answer(&t)
        .await
        .error("AuthFailure.SignatureFailure");
    assert!(t.emu.issued().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_tampered_after_signing_is_signature_failure() {
    let t = spawn_emulator(600);
    let policy = encoded(&upload_policy());
    let signed = json!({"Name": "alice", "Policy": policy, "DurationSeconds": 900});
    let sent = json!({"Name": "alice", "Policy": policy, "DurationSeconds": 129600});
    Tc3Call::new("GetFederationToken", &signed)
        .tampered(sent.to_string())
        .answer(&t)
        .await
        .error("AuthFailure.SignatureFailure");
    // One byte of whitespace is enough.
    Tc3Call::new("GetFederationToken", &signed)
        .tampered(format!("{signed} "))
        .answer(&t)
        .await
        .error("AuthFailure.SignatureFailure");
    // The untouched request goes through.
    Tc3Call::new("GetFederationToken", &signed)
        .answer(&t)
        .await
        .success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_more_than_300_seconds_off_are_signature_expire() {
    let t = spawn_emulator(600);
    let t = &t;
    let params = federation(&encoded(&upload_policy()));
    let params = &params;
    let offsets = [-301, 301, -299, 299, -300, 300, -3600];
    let answers = within_one_second(|second| async move {
        let mut answers = Vec::new();
        for offset in offsets {
            let answer = Tc3Call::new("GetFederationToken", params)
                .timestamp(second + offset)
                .answer(t)
                .await;
            answers.push((offset, answer));
        }
        answers
    })
    .await;
    for (offset, answer) in &answers {
        if offset.abs() > 300 {
            let message = answer.error("AuthFailure.SignatureExpire");
            assert!(message.contains("expired"), "{message}");
        } else {
            answer.success();
        }
    }

    // v1 checks its Timestamp the same way.
    let policy = encoded(&upload_policy());
    let v1_params = [("Name", "alice"), ("Policy", policy.as_str())];
    V1Call::new("GetFederationToken", &v1_params)
        .timestamp(now() - 400)
        .answer(t)
        .await
        .error("AuthFailure.SignatureExpire");
    V1Call::new("GetFederationToken", &v1_params)
        .timestamp(now() + 400)
        .answer(t)
        .await
        .error("AuthFailure.SignatureExpire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_secret_id_is_secret_id_not_found() {
    let t = spawn_emulator(600);
    let params = federation(&encoded(&upload_policy()));
    Tc3Call::new("GetFederationToken", &params)
        .key("AKIDUNKNOWN", SECRET_KEY)
        .answer(&t)
        .await
        .error("AuthFailure.SecretIdNotFound");

    let policy = encoded(&upload_policy());
    let mut call = V1Call::new(
        "GetFederationToken",
        &[("Name", "alice"), ("Policy", &policy)],
    );
    call.params
        .insert("SecretId".to_owned(), "AKIDUNKNOWN".to_owned());
    call.answer(&t).await.error("AuthFailure.SecretIdNotFound");
}

// ---------------------------------------------------------------------------------------------
// Parameters and policies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_name_or_policy_is_missing_parameter() {
    let t = spawn_emulator(600);
    let policy = encoded(&upload_policy());
    let message = tc3(&t, "GetFederationToken", &json!({"Policy": policy}))
        .await
        .error("MissingParameter");
    assert!(message.contains("Name"), "{message}");
    let message = tc3(&t, "GetFederationToken", &json!({"Name": "alice"}))
        .await
        .error("MissingParameter");
    assert!(message.contains("Policy"), "{message}");
    let message = tc3(&t, "AssumeRole", &json!({"RoleSessionName": "uploader-42"}))
        .await
        .error("MissingParameter");
    assert!(message.contains("RoleArn"), "{message}");
    // An empty body is an empty parameter set.
    Tc3Call::new("GetFederationToken", &json!({}))
        .body("")
        .answer(&t)
        .await
        .error("MissingParameter");
    assert!(t.emu.issued().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_action_is_invalid_action() {
    let t = spawn_emulator(600);
    let params = federation(&encoded(&upload_policy()));
    let message = tc3(&t, "DescribeInstances", &params)
        .await
        .error("InvalidAction");
    assert!(message.contains("DescribeInstances"), "{message}");
    let policy = encoded(&upload_policy());
    V1Call::new(
        "GetFederationTokens",
        &[("Name", "alice"), ("Policy", &policy)],
    )
    .answer(&t)
    .await
    .error("InvalidAction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_policies_are_strategy_format_error() {
    let t = spawn_emulator(600);
    let mut version_1 = upload_policy();
    version_1["version"] = json!("1.0");
    let mut no_statements = upload_policy();
    no_statements["statement"] = json!([]);
    let mut no_effect = upload_policy();
    no_effect["statement"][0]
        .as_object_mut()
        .unwrap()
        .remove("effect");
    let cases = [
        ("not JSON", uri_encode("not a policy")),
        (
            "truncated JSON",
            uri_encode(r#"{"version":"2.0","statement":["#),
        ),
        ("version 1.0", encoded(&version_1)),
        ("empty statement list", encoded(&no_statements)),
        ("statement without effect", encoded(&no_effect)),
        ("raw JSON, version 1.0", version_1.to_string()),
    ];
    for (why, policy) in cases {
        let answer = tc3(&t, "GetFederationToken", &federation(&policy)).await;
        assert_eq!(
            answer.code(),
            Some("InvalidParameter.StrategyFormatError"),
            "{why}: {}",
            answer.body
        );
        answer.error("InvalidParameter.StrategyFormatError");
    }
    // AssumeRole checks an attached policy the same way.
    tc3(
        &t,
        "AssumeRole",
        &json!({"RoleArn": ROLE_ARN, "RoleSessionName": "uploader-42", "Policy": encoded(&version_1)}),
    )
    .await
    .error("InvalidParameter.StrategyFormatError");
    assert!(t.emu.issued().is_empty());
}

/// A valid policy whose compact JSON is exactly `len` characters long, none of them spaces.
fn policy_of_length(len: usize) -> Value {
    let with_key = |key: &str| policy_with(&[cos_resource(APPID, BUCKET, key)]);
    let base = with_key("").to_string().len();
    assert!(base < len);
    let policy = with_key(&"k".repeat(len - base));
    assert_eq!(policy.to_string().len(), len);
    policy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_over_4096_non_space_characters_are_policy_too_long() {
    let t = spawn_emulator(600);
    tc3(
        &t,
        "GetFederationToken",
        &federation(&encoded(&policy_of_length(4097))),
    )
    .await
    .error("InvalidParameter.PolicyTooLong");
    // Raw JSON is measured too.
    tc3(
        &t,
        "GetFederationToken",
        &federation(&policy_of_length(5000).to_string()),
    )
    .await
    .error("InvalidParameter.PolicyTooLong");

    // 4096 is allowed, and spaces do not count.
    let at_limit = tc3(
        &t,
        "GetFederationToken",
        &federation(&encoded(&policy_of_length(4096))),
    )
    .await;
    assert_eq!(stored_policy(&t, &at_limit), Some(policy_of_length(4096)));
    let spaced = serde_json::to_string_pretty(&policy_of_length(4000)).unwrap();
    let spaced = spaced.replace(',', " ,   ");
    assert!(spaced.len() > 4096);
    tc3(&t, "GetFederationToken", &federation(&uri_encode(&spaced)))
        .await
        .success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_of_another_appid_are_grant_other_resource() {
    let t = spawn_emulator(600);
    let other_bucket = format!("examplebucket-{OTHER_APPID}");
    let cases = [
        (
            "another appid in uid/",
            cos_resource(OTHER_APPID, BUCKET, "users/42/*"),
        ),
        (
            "another appid in the bucket suffix",
            cos_resource(APPID, &other_bucket, "users/42/*"),
        ),
        (
            "another appid in both",
            cos_resource(OTHER_APPID, &other_bucket, "*"),
        ),
        (
            "another appid in a CI resource",
            format!("qcs::ci:{REGION}:uid/{OTHER_APPID}:bucket/{BUCKET}/*"),
        ),
    ];
    for (why, resource) in cases {
        let policy = policy_with(&[cos_resource(APPID, BUCKET, "users/42/*"), resource]);
        let answer = tc3(&t, "GetFederationToken", &federation(&encoded(&policy))).await;
        assert_eq!(
            answer.code(),
            Some("InvalidParameter.GrantOtherResource"),
            "{why}: {}",
            answer.body
        );
        let message = answer.error("InvalidParameter.GrantOtherResource");
        assert_eq!(message, "[QC_STS] cant grant other resource");
    }
    // The caller's own CI resource and `*` are fine.
    let own = policy_with(&[
        format!("qcs::ci:{REGION}:uid/{APPID}:bucket/{BUCKET}/*"),
        "*".to_owned(),
    ]);
    tc3(&t, "GetFederationToken", &federation(&encoded(&own)))
        .await
        .success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_over_the_maximum_are_over_time_error() {
    let t = spawn_emulator(600);
    let policy = encoded(&upload_policy());
    let federation_with =
        |secs: u64| json!({"Name": "alice", "Policy": policy, "DurationSeconds": secs});
    let role_with = |secs: u64| json!({"RoleArn": ROLE_ARN, "RoleSessionName": "uploader-42", "DurationSeconds": secs});

    tc3(&t, "GetFederationToken", &federation_with(129_601))
        .await
        .error("InvalidParameter.OverTimeError");
    tc3(&t, "AssumeRole", &role_with(43_201))
        .await
        .error("InvalidParameter.OverTimeError");
    // The maxima themselves are allowed (a sub-account key's ceiling for GetFederationToken).
    let answer = tc3(&t, "GetFederationToken", &federation_with(129_600)).await;
    let expired_time = answer.success()["ExpiredTime"].as_i64().unwrap();
    assert!((now() + 129_600 - 5..=now() + 129_600 + 5).contains(&expired_time));
    let answer = tc3(&t, "AssumeRole", &role_with(43_200)).await;
    let expired_time = answer.success()["ExpiredTime"].as_i64().unwrap();
    assert!((now() + 43_200 - 5..=now() + 43_200 + 5).contains(&expired_time));
    // DurationSeconds sent as a string (v1 forms always do) is read the same way.
    tc3(
        &t,
        "GetFederationToken",
        &json!({"Name": "alice", "Policy": policy, "DurationSeconds": "129601"}),
    )
    .await
    .error("InvalidParameter.OverTimeError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_encodings_the_sdks_send_are_accepted() {
    let t = spawn_emulator(600);
    let expected = upload_policy();
    let compact = expected.to_string();
    let pretty = serde_json::to_string_pretty(&expected).unwrap();

    // TC3 JSON bodies: stsgate / the doc (URL-encoded), Python quote() with a literal `/`, and
    // the raw JSON string the .NET SDK sends.
    let tc3_cases = [
        ("uri_encode", uri_encode(&compact)),
        ("python quote", python_quote(PYTHON_JSON_POLICY)),
        ("raw JSON", compact.clone()),
        ("raw pretty JSON", pretty.clone()),
    ];
    for (why, policy) in tc3_cases {
        let answer = tc3(&t, "GetFederationToken", &federation(&policy)).await;
        assert_eq!(answer.code(), None, "{why}: {}", answer.body);
        assert_eq!(
            stored_policy(&t, &answer).as_ref(),
            Some(&expected),
            "{why}"
        );
    }

    // v1 forms (the form layer encodes once more): Python, Node, Java.
    let v1_cases = [
        ("python quote", python_quote(PYTHON_JSON_POLICY)),
        ("encodeURIComponent", encode_uri_component(&compact)),
        ("raw pretty JSON", pretty),
    ];
    for (why, policy) in v1_cases {
        let answer = V1Call::new(
            "GetFederationToken",
            &[("Name", "cos"), ("Policy", &policy)],
        )
        .signed_host(SDK_DOMAIN)
        .answer(&t)
        .await;
        assert_eq!(answer.code(), None, "{why}: {}", answer.body);
        assert_eq!(
            stored_policy(&t, &answer).as_ref(),
            Some(&expected),
            "{why}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_policy_examples_are_accepted() {
    let t = spawn_emulator(600);
    // Reference §2.2: the doc's own URL-encoded example (a string action and resource).
    let doc_example = "%7B%22version%22%3A%222.0%22%2C%22statement%22%3A%5B%7B%22effect%22%3A%22allow%22%2C%22action%22%3A%22sts%3AAssumeRole%22%2C%22resource%22%3A%22%2A%22%7D%5D%7D";
    let answer = tc3(&t, "GetFederationToken", &federation(doc_example)).await;
    assert_eq!(
        stored_policy(&t, &answer),
        Some(
            json!({"version": "2.0", "statement": [{"effect": "allow", "action": "sts:AssumeRole", "resource": "*"}]})
        )
    );

    // Reference §1.9 vector E: the exact body bytes the Python TencentCloud SDK sends.
    let vector_e = r#"{"Name": "user42", "Policy": "%7B%22version%22%3A%222.0%22%2C%22statement%22%3A%5B%7B%22effect%22%3A%22allow%22%2C%22action%22%3A%5B%22name%2Fcos%3APutObject%22%5D%2C%22resource%22%3A%5B%22qcs%3A%3Acos%3Aap-guangzhou%3Auid%2F1250000000%3Aexamplebucket-1250000000%2Fusers%2F42%2F%2A%22%5D%7D%5D%7D", "DurationSeconds": 1800}"#;
    let answer = Tc3Call::new("GetFederationToken", &json!({}))
        .body(vector_e)
        .answer(&t)
        .await;
    let id = answer.success()["Credentials"]["TmpSecretId"]
        .as_str()
        .unwrap();
    let remembered = t.emu.credential(id).unwrap();
    assert_eq!(remembered.name, "user42");
    assert_eq!(remembered.duration_seconds, 1800);
    assert_eq!(
        remembered.policy,
        Some(json!({"version": "2.0", "statement": [{
            "effect": "allow",
            "action": ["name/cos:PutObject"],
            "resource": ["qcs::cos:ap-guangzhou:uid/1250000000:examplebucket-1250000000/users/42/*"],
        }]}))
    );
}

/// The policy the Node SDK's `getPolicy()` and its demo servers build: `principal` included.
fn node_sdk_policy(resources: &[String]) -> Value {
    json!({
        "version": "2.0",
        "statement": [{
            "action": ["name/cos:PutObject", "name/cos:PostObject"],
            "effect": "allow",
            "principal": {"qcs": ["*"]},
            "resource": resources,
        }]
    })
}

async fn node_sdk_call(t: &TestEmulator, policy: &Value) -> Answer {
    let encoded = encode_uri_component(&policy.to_string());
    V1Call::new(
        "GetFederationToken",
        &[("Name", "cos-sts-nodejs"), ("Policy", &encoded)],
    )
    .signed_host(SDK_DOMAIN)
    .answer(t)
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_policy_with_principal_is_accepted() {
    let t = spawn_emulator(600);
    let policy = node_sdk_policy(&[cos_resource(APPID, BUCKET, "users/42/*")]);
    let answer = node_sdk_call(&t, &policy).await;
    assert_eq!(answer.code(), None, "{}", answer.body);
    assert_eq!(stored_policy(&t, &answer), Some(policy));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_prefix_resources_from_the_node_sdk_are_accepted() {
    let t = spawn_emulator(600);
    // Reference §3.3: `qcs::cos:<region>:uid/<appid>:prefix//<appid>/<shortBucketName>/<keyPrefix>`.
    let legacy = |appid: &str, key: &str| {
        format!("qcs::cos:{REGION}:uid/{APPID}:prefix//{appid}/examplebucket/{key}")
    };
    let policy = node_sdk_policy(&[legacy(APPID, ""), legacy(APPID, "users/42/*")]);
    let answer = node_sdk_call(&t, &policy).await;
    assert_eq!(answer.code(), None, "{}", answer.body);
    assert_eq!(stored_policy(&t, &answer), Some(policy));
    // Another APPID after `prefix//` is still someone else's resource.
    let other = node_sdk_policy(&[legacy(OTHER_APPID, "*")]);
    node_sdk_call(&t, &other)
        .await
        .error("InvalidParameter.GrantOtherResource");
}

// ---------------------------------------------------------------------------------------------
// Rate limit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_rate_limit_are_request_limit_exceeded() {
    let t = spawn_emulator(5);
    let t = &t;
    let params = federation(&encoded(&upload_policy()));
    let params = &params;
    // Eight requests in one second: the emulator counts per SecretId per wall-clock second.
    let answers = within_one_second(|_| async move {
        let mut answers = Vec::new();
        for _ in 0..8 {
            answers.push(tc3(t, "GetFederationToken", params).await);
        }
        answers
    })
    .await;
    let codes: Vec<_> = answers.iter().map(Answer::code).collect();
    assert_eq!(
        codes,
        [
            None,
            None,
            None,
            None,
            None,
            Some("RequestLimitExceeded"),
            Some("RequestLimitExceeded"),
            Some("RequestLimitExceeded"),
        ]
    );
    answers[7].error("RequestLimitExceeded");
    // All five successes were issued in the same emulator second.
    let seconds: Vec<_> = answers[..5]
        .iter()
        .map(|a| a.success()["ExpiredTime"].as_i64().unwrap() - 1800)
        .collect();
    assert!(seconds.iter().all(|s| *s == seconds[0]), "{seconds:?}");
    assert_eq!(t.emu.issued().len(), 5);

    // The next second has a fresh budget.
    let next =
        within_one_second(|_| async move { tc3(t, "GetFederationToken", params).await }).await;
    next.success();
    assert_eq!(t.emu.stats().errors["RequestLimitExceeded"], 3);
}

// ---------------------------------------------------------------------------------------------
// Faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_next_answers_with_the_injected_code_then_recovers() {
    let t = spawn_emulator(600);
    t.emu
        .set_faults(Faults {
            fail_next: 2,
            error_code: Some("InternalError".into()),
            ..Faults::default()
        })
        .unwrap();
    let params = federation(&encoded(&upload_policy()));
    for _ in 0..2 {
        tc3(&t, "GetFederationToken", &params)
            .await
            .error("InternalError");
    }
    tc3(&t, "GetFederationToken", &params).await.success();
    assert_eq!(t.emu.faults().fail_next, 0);

    // Injected codes replace even authentication errors, and the default code is InternalError.
    t.emu
        .set_faults(Faults {
            fail_next: 1,
            ..Faults::default()
        })
        .unwrap();
    Tc3Call::new("GetFederationToken", &params)
        .key(SECRET_ID, "not-the-key")
        .answer(&t)
        .await
        .error("InternalError");
    // error_rate 1 fails every request with the chosen code.
    t.emu
        .set_faults(Faults {
            error_rate: 1.0,
            error_code: Some("InvalidParameter.OverLimit".into()),
            ..Faults::default()
        })
        .unwrap();
    for _ in 0..3 {
        tc3(&t, "GetFederationToken", &params)
            .await
            .error("InvalidParameter.OverLimit");
    }
    assert_eq!(t.emu.issued().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_the_answer() {
    let t = spawn_emulator(600);
    let latency = Duration::from_millis(400);
    t.emu
        .set_faults(Faults {
            latency_ms: latency.as_millis() as u64,
            ..Faults::default()
        })
        .unwrap();
    let params = federation(&encoded(&upload_policy()));
    let started = Instant::now();
    tc3(&t, "GetFederationToken", &params).await.success();
    let elapsed = started.elapsed();
    assert!(elapsed >= latency, "answered after {elapsed:?}");
    // Errors are delayed too.
    let started = Instant::now();
    Tc3Call::new("GetFederationToken", &params)
        .key(SECRET_ID, "not-the-key")
        .answer(&t)
        .await
        .error("AuthFailure.SignatureFailure");
    assert!(started.elapsed() >= latency);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_next_fails_at_the_transport_level_then_recovers() {
    let t = spawn_emulator(600);
    t.emu
        .set_faults(Faults {
            drop_next: 1,
            ..Faults::default()
        })
        .unwrap();
    let params = federation(&encoded(&upload_policy()));
    let dropped = Tc3Call::new("GetFederationToken", &params).send(&t).await;
    assert!(dropped.is_err(), "expected a transport error: {dropped:?}");
    tc3(&t, "GetFederationToken", &params).await.success();
    let stats = t.emu.stats();
    assert_eq!(stats.dropped, 1);
    assert_eq!(stats.requests, 2);
    assert_eq!(stats.issued, 1);
    assert!(stats.errors.is_empty(), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_change_at_run_time_over_http() {
    let t = spawn_emulator(600);
    let (_, initial) = get_json(&t, "/_emulator/faults").await;
    let initial: Faults = serde_json::from_value(initial).unwrap();
    assert_eq!(initial, Faults::default());

    let response = put_faults(
        &t,
        r#"{"fail_next": 1, "error_code": "RequestLimitExceeded", "latency_ms": 50}"#,
    )
    .await;
    assert_eq!(response.status(), 200);
    let echoed: Faults = response.json().await.unwrap();
    let wanted = Faults {
        fail_next: 1,
        error_code: Some("RequestLimitExceeded".into()),
        latency_ms: 50,
        ..Faults::default()
    };
    assert_eq!(echoed, wanted);
    let (_, read_back) = get_json(&t, "/_emulator/faults").await;
    assert_eq!(serde_json::from_value::<Faults>(read_back).unwrap(), wanted);
    assert_eq!(t.emu.faults(), wanted);

    let params = federation(&encoded(&upload_policy()));
    tc3(&t, "GetFederationToken", &params)
        .await
        .error("RequestLimitExceeded");
    tc3(&t, "GetFederationToken", &params).await.success();
    let (_, after) = get_json(&t, "/_emulator/faults").await;
    assert_eq!(after["fail_next"], 0);
    assert_eq!(after["latency_ms"], 50);

    // A PUT replaces the whole set: omitted fields go back to their defaults.
    let response = put_faults(&t, "{}").await;
    assert_eq!(response.status(), 200);
    assert_eq!(t.emu.faults(), Faults::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_faults_are_refused_with_400() {
    let t = spawn_emulator(600);
    let kept = Faults {
        latency_ms: 10,
        ..Faults::default()
    };
    t.emu.set_faults(kept.clone()).unwrap();
    for body in [
        "not json",
        r#"{"error_rate": 2.0}"#,
        r#"{"drop_rate": -0.5}"#,
        r#"{"latency_ms": -1}"#,
        r#"{"fail_nxt": 1}"#,
    ] {
        let response = put_faults(&t, body).await;
        assert_eq!(response.status(), 400, "{body}");
        let text = response.text().await.unwrap();
        assert!(text.starts_with("invalid faults"), "{body}: {text}");
        assert_eq!(t.emu.faults(), kept, "{body} changed the faults");
    }
    let (_, read_back) = get_json(&t, "/_emulator/faults").await;
    assert_eq!(serde_json::from_value::<Faults>(read_back).unwrap(), kept);
    // The in-process setter validates the same way.
    let refused = t.emu.set_faults(Faults {
        error_rate: 2.0,
        ..Faults::default()
    });
    assert!(refused.is_err());
    assert_eq!(t.emu.faults(), kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_emulator_clock_makes_current_timestamps_expire() {
    let t = spawn_emulator(600);
    t.emu
        .set_faults(Faults {
            clock_offset_secs: 600,
            ..Faults::default()
        })
        .unwrap();
    let params = federation(&encoded(&upload_policy()));
    tc3(&t, "GetFederationToken", &params)
        .await
        .error("AuthFailure.SignatureExpire");
    // A caller whose clock matches the emulator's is served, on the emulator's time.
    let answer = Tc3Call::new("GetFederationToken", &params)
        .timestamp(now() + 600)
        .answer(&t)
        .await;
    let expired_time = answer.success()["ExpiredTime"].as_i64().unwrap();
    assert!((now() + 600 + 1800 - 5..=now() + 600 + 1800 + 5).contains(&expired_time));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_answers_carry_the_chosen_values_once() {
    let t = spawn_emulator(600);
    let long = "A".repeat(5000);
    put_faults(
        &t,
        &json!({"tamper_next": 2, "tamper": {"tmp_secret_id": long, "request_id": "req\u{0}nul",
                 "expiration": "not a time"}})
        .to_string(),
    )
    .await;
    let params = federation(&encoded(&upload_policy()));
    for _ in 0..2 {
        let answer = tc3(&t, "GetFederationToken", &params).await;
        let ok = answer.success();
        assert_eq!(ok["Credentials"]["TmpSecretId"], json!(long));
        assert_eq!(ok["RequestId"], json!("req\u{0}nul"));
        assert_eq!(ok["Expiration"], json!("not a time"));
        // The real values are untouched where no replacement was given.
        assert!(ok["ExpiredTime"].as_i64().unwrap() > now());
    }
    let normal = tc3(&t, "GetFederationToken", &params).await;
    let id = normal.success()["Credentials"]["TmpSecretId"]
        .as_str()
        .unwrap();
    assert!(id.len() < 100 && !id.contains('\0'), "{id}");
    assert_eq!(t.emu.faults().tamper_next, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_scoped_to_one_secret_id_spare_other_accounts() {
    let t = spawn_emulator(600);
    t.emu
        .set_faults(Faults {
            error_rate: 1.0,
            error_code: Some("InternalError".into()),
            secret_id: Some(SECRET_ID.into()),
            ..Faults::default()
        })
        .unwrap();
    let params = federation(&encoded(&upload_policy()));
    for _ in 0..3 {
        tc3(&t, "GetFederationToken", &params)
            .await
            .error("InternalError");
        Tc3Call::new("GetFederationToken", &params)
            .key(OTHER_ID, OTHER_KEY)
            .answer(&t)
            .await
            .success();
    }
    // v1 callers name their SecretId in the form body: scoped the same way.
    V1Call::new(
        "GetFederationToken",
        &[("Name", "bob"), ("Policy", &encoded(&upload_policy()))],
    )
    .answer(&t)
    .await
    .error("InternalError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_logged_with_arrival_time_caller_and_outcome() {
    let t = spawn_emulator(600);
    let before = OffsetDateTime::now_utc().unix_timestamp() * 1000 - 1;
    let params = federation(&encoded(&upload_policy()));
    tc3(&t, "GetFederationToken", &params).await.success();
    Tc3Call::new("GetFederationToken", &params)
        .key(OTHER_ID, "wrong")
        .answer(&t)
        .await
        .error("AuthFailure.SignatureFailure");
    t.emu
        .set_faults(Faults {
            drop_next: 1,
            ..Faults::default()
        })
        .unwrap();
    assert!(
        Tc3Call::new("GetFederationToken", &params)
            .send(&t)
            .await
            .is_err()
    );

    let (_, body) = get_json(&t, &format!("/_emulator/calls?since_ms={before}")).await;
    let calls = body["calls"].as_array().unwrap();
    let seen: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| {
            (
                c["secret_id"].as_str().unwrap(),
                c["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (SECRET_ID, "ok"),
            (OTHER_ID, "AuthFailure.SignatureFailure"),
            (SECRET_ID, "dropped")
        ]
    );
    let times: Vec<i64> = calls.iter().map(|c| c["at_ms"].as_i64().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]) && times[0] > before,
        "{times:?}"
    );
    // `since_ms` filters: nothing arrived after the last call.
    let (_, later) = get_json(&t, &format!("/_emulator/calls?since_ms={}", times[2] + 1)).await;
    assert_eq!(later["calls"], json!([]));
    assert_eq!(t.emu.calls_since(0).len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Stats

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_requests_issued_and_errors_by_code() {
    let t = spawn_emulator(600);
    let (_, empty) = get_json(&t, "/_emulator/stats").await;
    assert_eq!(
        empty,
        json!({"requests": 0, "issued": 0, "errors": {}, "dropped": 0})
    );

    let params = federation(&encoded(&upload_policy()));
    tc3(&t, "GetFederationToken", &params).await.success();
    tc3(
        &t,
        "AssumeRole",
        &json!({"RoleArn": ROLE_ARN, "RoleSessionName": "uploader-42"}),
    )
    .await
    .success();
    Tc3Call::new("GetFederationToken", &params)
        .key(SECRET_ID, "not-the-key")
        .answer(&t)
        .await
        .error("AuthFailure.SignatureFailure");
    for _ in 0..2 {
        tc3(&t, "GetFederationToken", &json!({"Name": "alice"}))
            .await
            .error("MissingParameter");
    }
    t.emu
        .set_faults(Faults {
            fail_next: 1,
            drop_next: 1,
            ..Faults::default()
        })
        .unwrap();
    assert!(
        Tc3Call::new("GetFederationToken", &params)
            .send(&t)
            .await
            .is_err()
    );
    tc3(&t, "GetFederationToken", &params)
        .await
        .error("InternalError");

    let (_, stats) = get_json(&t, "/_emulator/stats").await;
    assert_eq!(
        stats,
        json!({
            "requests": 7,
            "issued": 2,
            "errors": {"AuthFailure.SignatureFailure": 1, "MissingParameter": 2, "InternalError": 1},
            "dropped": 1,
        })
    );
    let in_process = t.emu.stats();
    assert_eq!(in_process.requests, 7);
    assert_eq!(in_process.issued, 2);
    assert_eq!(in_process.errors["MissingParameter"], 2);
    // The control endpoints are not STS requests.
    let (_, again) = get_json(&t, "/_emulator/stats").await;
    assert_eq!(again["requests"], 7);
}
