//! StsClient over real HTTP against the emulator: success, each error class, timeouts and retries.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use sts_core::client::{
    AssumeRole, ErrorClass, GetFederationToken, MAX_RESPONSE_BYTES, RetryPolicy,
};
use sts_core::{
    CosResource, Effect, EndpointError, PermanentKey, Policy, PolicyError, Statement, StsClient,
    StsClientConfig, StsError, TemporaryCredentials,
};
use sts_emulator::{EmulatorConfig, EmulatorHandle, Faults};

const ACCOUNT: &str = "AKIDCLIENTTEST:client-test-key:1250000000";

fn emulator(rate_limit: u32) -> EmulatorHandle {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    sts_emulator::start(
        EmulatorConfig {
            accounts: vec![ACCOUNT.parse().unwrap()],
            rate_limit,
            workers: 1,
            ..EmulatorConfig::default()
        },
        listener,
    )
    .unwrap()
}

fn client(emu: &EmulatorHandle, timeout: Duration, max_attempts: u32) -> StsClient {
    StsClient::new(StsClientConfig {
        endpoint: format!("{}/", emu.url()),
        region: "ap-guangzhou".into(),
        connect_timeout: Duration::from_secs(1),
        timeout,
        retry: RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            budget: Duration::from_secs(10),
        },
    })
    .unwrap()
}

fn key() -> PermanentKey {
    PermanentKey::new("AKIDCLIENTTEST", "client-test-key")
}

fn policy_for(prefix: &str, bucket: &str) -> Policy {
    let res = CosResource::new("ap-guangzhou", bucket).unwrap();
    Policy::new(vec![Statement::new(
        Effect::Allow,
        vec!["name/cos:PutObject".into(), "name/cos:GetObject".into()],
        vec![res.object(&format!("{prefix}*"))],
    )])
}

fn federation<'a>(policy: &'a Policy, duration_seconds: u64) -> GetFederationToken<'a> {
    GetFederationToken {
        name: "stsgate-test",
        policy,
        duration_seconds,
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_federation_token_returns_credentials_the_emulator_remembers() {
    let emu = emulator(600);
    let sts = client(&emu, Duration::from_secs(5), 3);
    let policy = policy_for("users/alice/", "examplebucket-1250000000");
    let creds = sts
        .get_federation_token(&key(), &federation(&policy, 900))
        .await
        .unwrap();

    assert!(creds.tmp_secret_id.starts_with("AKID"));
    assert!((creds.expired_time - (now() + 900)).abs() <= 5);
    assert!(!creds.request_id.is_empty());
    let issued = emu
        .credential(&creds.tmp_secret_id)
        .expect("the emulator remembers it");
    assert_eq!(issued.tmp_secret_key, creds.tmp_secret_key.expose_secret());
    assert_eq!(issued.token, creds.session_token.expose_secret());
    assert_eq!(issued.request_id, creds.request_id);
    assert_eq!(issued.action, "GetFederationToken");
    // The policy arrived URL-encoded and decodes to exactly what was sent.
    let sent: serde_json::Value = serde_json::from_str(&policy.to_json()).unwrap();
    assert_eq!(issued.policy.as_ref(), Some(&sent));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_sends_role_session_and_external_id() {
    let emu = emulator(600);
    let sts = client(&emu, Duration::from_secs(5), 3);
    let policy = policy_for("users/bob/", "examplebucket-1250000000");
    let creds = sts
        .assume_role(
            &key(),
            &AssumeRole {
                role_arn: "qcs::cam::uin/100000000001:roleName/uploader",
                role_session_name: "stsgate-bob",
                external_id: Some("ext-123"),
                policy: &policy,
                duration_seconds: 3600,
            },
        )
        .await
        .unwrap();
    let issued = emu.credential(&creds.tmp_secret_id).unwrap();
    assert_eq!(issued.action, "AssumeRole");
    assert_eq!(issued.name, "stsgate-bob");
    assert_eq!(
        issued.role_arn.as_deref(),
        Some("qcs::cam::uin/100000000001:roleName/uploader")
    );
    assert_eq!(issued.external_id.as_deref(), Some("ext-123"));
    assert_eq!(issued.duration_seconds, 3600);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_are_not_retried() {
    let emu = emulator(600);
    let sts = client(&emu, Duration::from_secs(5), 5);

    // A resource in another account's bucket.
    let policy = policy_for("users/alice/", "otherbucket-1300000000");
    let err = sts
        .get_federation_token(&key(), &federation(&policy, 900))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameter.GrantOtherResource"));
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.request_id().is_some_and(|id| !id.is_empty()));
    assert!(matches!(err, StsError::Api { .. }), "not retried: {err:?}");

    // Over the duration limit.
    let policy = policy_for("users/alice/", "examplebucket-1250000000");
    let err = sts
        .get_federation_token(&key(), &federation(&policy, 129_601))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameter.OverTimeError"));

    // A wrong key.
    let wrong = PermanentKey::new("AKIDCLIENTTEST", "not-the-key");
    let err = sts
        .get_federation_token(&wrong, &federation(&policy, 900))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("AuthFailure.SignatureFailure"));
    assert_eq!(err.class(), ErrorClass::Permanent);

    assert_eq!(emu.stats().requests, 3, "one request each, no retries");
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_clock_is_its_own_class_and_not_retried() {
    let emu = emulator(600);
    emu.set_faults(Faults {
        clock_offset_secs: 600,
        ..Faults::default()
    })
    .unwrap();
    let sts = client(&emu, Duration::from_secs(5), 5);
    let policy = policy_for("users/alice/", "examplebucket-1250000000");
    let err = sts
        .get_federation_token(&key(), &federation(&policy, 900))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("AuthFailure.SignatureExpire"));
    assert_eq!(err.class(), ErrorClass::Clock);
    assert_eq!(emu.stats().requests, 1);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_error_is_retried_until_it_succeeds() {
    let emu = emulator(600);
    emu.set_faults(Faults {
        fail_next: 2,
        error_code: Some("RequestLimitExceeded".into()),
        ..Faults::default()
    })
    .unwrap();
    let sts = client(&emu, Duration::from_secs(5), 3);
    let policy = policy_for("users/alice/", "examplebucket-1250000000");
    let creds = sts
        .get_federation_token(&key(), &federation(&policy, 900))
        .await
        .unwrap();
    assert!(emu.credential(&creds.tmp_secret_id).is_some());
    let stats = emu.stats();
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.errors.get("RequestLimitExceeded"), Some(&2));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_exhausted_with_the_last_sts_code() {
    let emu = emulator(600);
    emu.set_faults(Faults {
        error_rate: 1.0,
        error_code: Some("InternalError.SystemError".into()),
        ..Faults::default()
    })
    .unwrap();
    let sts = client(&emu, Duration::from_secs(5), 3);
    let policy = policy_for("users/alice/", "examplebucket-1250000000");
    let err = sts
        .get_federation_token(&key(), &federation(&policy, 900))
        .await
        .unwrap_err();
    match &err {
        StsError::RetriesExhausted { attempts, .. } => assert_eq!(*attempts, 3),
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    assert_eq!(err.code(), Some("InternalError.SystemError"));
    assert_eq!(err.class(), ErrorClass::Retryable);
    assert!(!err.is_unavailable(), "STS answered; it refused");
    assert_eq!(emu.stats().requests, 3);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulators_rate_limit_is_a_retryable_error() {
    let emu = emulator(1);
    let sts = client(&emu, Duration::from_secs(5), 1);
    let policy = policy_for("users/alice/", "examplebucket-1250000000");
    // One attempt each: within one second, the second call must meet the limit. Retry the
    // pair if a second boundary happened to fall between them.
    for _ in 0..5 {
        let start = now();
        let first = sts
            .get_federation_token(&key(), &federation(&policy, 900))
            .await;
        let second = sts
            .get_federation_token(&key(), &federation(&policy, 900))
            .await;
        if now() != start {
            continue;
        }
        first.unwrap();
        let err = second.unwrap_err();
        assert_eq!(err.code(), Some("RequestLimitExceeded"));
        assert_eq!(err.class(), ErrorClass::Retryable);
        emu.stop().await;
        return;
    }
    panic!("could not fit two requests into one second in five tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sts_times_out_and_is_unavailable() {
    let emu = emulator(600);
    emu.set_faults(Faults {
        latency_ms: 1500,
        ..Faults::default()
    })
    .unwrap();
    let sts = client(&emu, Duration::from_millis(200), 2);
    let policy = policy_for("users/alice/", "examplebucket-1250000000");
    let started = Instant::now();
    let err = sts
        .get_federation_token(&key(), &federation(&policy, 900))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    match &err {
        StsError::RetriesExhausted { attempts: 2, last } => {
            assert!(matches!(**last, StsError::Timeout(_)), "{last:?}")
        }
        other => panic!("expected two timed-out attempts, got {other:?}"),
    }
    // Both attempts gave up long before the emulator would have answered.
    assert!(started.elapsed() < Duration::from_millis(1500));

    // Once STS is fast again, the same client recovers.
    emu.set_faults(Faults::default()).unwrap();
    sts.get_federation_token(&key(), &federation(&policy, 900))
        .await
        .unwrap();
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_a_retried_network_error() {
    let emu = emulator(600);
    emu.set_faults(Faults {
        drop_next: 1,
        ..Faults::default()
    })
    .unwrap();
    let policy = policy_for("users/alice/", "examplebucket-1250000000");

    let once = client(&emu, Duration::from_secs(5), 1);
    let err = once
        .get_federation_token(&key(), &federation(&policy, 900))
        .await
        .unwrap_err();
    assert!(matches!(err, StsError::Network(_)), "{err:?}");
    assert!(err.is_unavailable());

    emu.set_faults(Faults {
        drop_next: 1,
        ..Faults::default()
    })
    .unwrap();
    let retrying = client(&emu, Duration::from_secs(5), 3);
    retrying
        .get_federation_token(&key(), &federation(&policy, 900))
        .await
        .unwrap();
    assert_eq!(emu.stats().dropped, 2);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_a_network_error() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sts = StsClient::new(StsClientConfig {
        endpoint: format!("http://127.0.0.1:{port}/"),
        retry: RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(10),
            ..RetryPolicy::default()
        },
        ..StsClientConfig::default()
    })
    .unwrap();
    let policy = policy_for("users/alice/", "examplebucket-1250000000");
    let err = sts
        .get_federation_token(&key(), &federation(&policy, 900))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.code().is_none());
    // The cause stays matchable: a refused connection, not a timeout or a bad answer.
    match &err {
        StsError::RetriesExhausted { attempts: 2, last } => assert!(
            matches!(**last, StsError::Network(ref e) if e.is_connect()),
            "{last:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("could not reach STS: "), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_policy_never_leaves_the_process() {
    let emu = emulator(600);
    let sts = client(&emu, Duration::from_secs(5), 3);
    let mut policy = policy_for("users/alice/", "examplebucket-1250000000");
    policy.statement[0].principal = Some(serde_json::json!({"qcs": ["*"]}));
    let err = sts
        .get_federation_token(&key(), &federation(&policy, 900))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StsError::Policy(PolicyError::Principal(0))),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(emu.stats().requests, 0);
    emu.stop().await;
}

#[test]
fn a_bad_endpoint_is_refused_when_the_client_is_built() {
    for (endpoint, expected) in [
        (
            "not a url",
            EndpointError::Url(url::ParseError::RelativeUrlWithoutBase),
        ),
        ("ftp://sts.tencentcloudapi.com/", EndpointError::Scheme),
        ("http:///", EndpointError::Url(url::ParseError::EmptyHost)),
        (
            "https://user:pw@sts.tencentcloudapi.com/",
            EndpointError::Userinfo,
        ),
    ] {
        let err = StsClient::new(StsClientConfig {
            endpoint: endpoint.into(),
            ..StsClientConfig::default()
        })
        .unwrap_err();
        match &err {
            StsError::Endpoint {
                endpoint: named,
                reason,
            } => {
                assert_eq!(named, endpoint);
                assert_eq!(reason, &expected, "{endpoint}");
            }
            other => panic!("{endpoint}: {other:?}"),
        }
        assert!(err.to_string().starts_with("STS endpoint"), "{err}");
    }
}

/// A one-connection HTTP server that answers any request with `head` and then, if
/// `endless`, chunk after chunk until the client hangs up. Returns its URL and the number
/// of body bytes it managed to write.
async fn hostile_sts(
    head: &'static str,
    endless: bool,
) -> (String, tokio::task::JoinHandle<usize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        // Read the request: headers, then Content-Length bytes of body.
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client hung up before sending its request");
            req.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&req).to_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if req.len() >= end + 4 + len {
                    break;
                }
            }
        }
        conn.write_all(head.as_bytes()).await.unwrap();
        let mut written = 0;
        if endless {
            let chunk = format!("4000\r\n{}\r\n", "a".repeat(0x4000));
            while conn.write_all(chunk.as_bytes()).await.is_ok() {
                written += 0x4000;
                if written > 1 << 30 {
                    break;
                }
            }
        }
        written
    });
    (url, server)
}

fn client_for(url: &str) -> StsClient {
    StsClient::new(StsClientConfig {
        endpoint: url.to_owned(),
        timeout: Duration::from_secs(20),
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        ..StsClientConfig::default()
    })
    .unwrap()
}

async fn call(sts: &StsClient) -> Result<TemporaryCredentials, StsError> {
    let policy = policy_for("users/alice/", "examplebucket-1250000000");
    sts.get_federation_token(&key(), &federation(&policy, 600))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_answer_is_cut_off_at_the_cap() {
    let (url, server) = hostile_sts(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        true,
    )
    .await;
    let err = call(&client_for(&url)).await.unwrap_err();
    assert!(
        matches!(err, StsError::TooLarge { limit } if limit == MAX_RESPONSE_BYTES),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(!err.is_unavailable());
    // The client hung up: the server's writes failed long before its own 1 GiB stop.
    let written = server.await.unwrap();
    assert!(written < 1 << 30, "the client read {written} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_huge_answer_is_refused_before_reading_it() {
    let (url, server) = hostile_sts(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n",
        false,
    )
    .await;
    let err = call(&client_for(&url)).await.unwrap_err();
    assert!(matches!(err, StsError::TooLarge { .. }), "{err:?}");
    server.await.unwrap();
}
