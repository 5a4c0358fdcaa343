//! STS errors and outages, and a database that goes away and comes back.

use std::time::Duration;

use serde_json::Value;
use sts_emulator::Faults;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_errors_map_to_502_or_503_with_the_sts_code() {
    let app = TestApp::spawn().await;
    let cases = [
        ("InvalidParameter.GrantOtherResource", 502, "sts_error"),
        ("UnauthorizedOperation", 502, "sts_error"),
        ("AuthFailure.SignatureExpire", 502, "sts_error"),
        ("InternalError.SystemError", 503, "sts_unavailable"),
        ("RequestLimitExceeded", 503, "sts_unavailable"),
    ];
    for (i, (code, status, api_code)) in cases.into_iter().enumerate() {
        app.emulator
            .set_faults(Faults {
                error_rate: 1.0,
                error_code: Some(code.into()),
                ..Faults::default()
            })
            .unwrap();
        let res = app.credentials(&format!("user{i}"), "").await;
        assert_eq!(res.status(), status, "{code}");
        if status == 503 {
            assert_eq!(res.headers()["retry-after"], "1");
        }
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], api_code, "{code}");
        assert_eq!(body["error"]["stsCode"], code);
        assert!(body.get("credentials").is_none());
        let row = &app.log_rows().await[0];
        assert_eq!(row.outcome.as_str(), "upstream_error");
        assert_eq!(row.error_code.as_deref(), Some(code));
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sts_gives_503_and_the_gateway_recovers() {
    let app = TestApp::spawn_with(Options {
        sts_timeout: Duration::from_millis(300),
        sts_attempts: 2,
        ..Options::default()
    })
    .await;
    app.emulator
        .set_faults(Faults {
            latency_ms: 2000,
            ..Faults::default()
        })
        .unwrap();
    let res = app.credentials("alice", "").await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "sts_unavailable");

    app.emulator.set_faults(Faults::default()).unwrap();
    let res = app.credentials("alice", "").await;
    assert_eq!(
        res.status(),
        200,
        "the same request succeeds once STS is fast again"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_no_credential_is_given_and_service_resumes() {
    let app = TestApp::spawn_with(Options {
        db_proxy: true,
        ..Options::default()
    })
    .await;
    assert_eq!(app.credentials("alice", "").await.status(), 200);
    let proxy = app.proxy.as_ref().unwrap();
    proxy.cut();

    for sub in ["alice", "bob"] {
        // alice's credential is cached and bob's would be minted: neither may leave without
        // its issuance-log row.
        let res = app.credentials(sub, "").await;
        assert_eq!(res.status(), 503, "{sub}");
        let text = res.text().await.unwrap();
        assert!(
            !text.contains("tmpSecretId") && !text.contains("sessionToken"),
            "{text}"
        );
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["error"]["code"], "unavailable");
    }
    assert_eq!(app.get("/readyz", None).await.status(), 503);
    assert_eq!(
        app.get("/healthz", None).await.status(),
        200,
        "liveness needs no I/O"
    );

    proxy.restore();
    let mut ok = false;
    for _ in 0..40 {
        if app.credentials("bob", "").await.status() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ok, "service resumes after the database comes back");
    assert_eq!(app.get("/readyz", None).await.status(), 200);
    // Every credential that was handed out has its row.
    let rows = app.log_rows().await;
    let issued: Vec<_> = rows.iter().filter(|r| r.http_status == 200).collect();
    assert!(issued.iter().any(|r| r.subject.as_deref() == Some("bob")));
    assert!(issued.iter().any(|r| r.subject.as_deref() == Some("alice")));
    app.shutdown().await;
}

/// An app's STS endpoint is admin-settable: one that answers without end is cut off at the
/// client's cap and refused with 502, and the gateway keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sts_endpoint_that_answers_without_end_gets_502() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestApp::spawn().await;
    // Reads a request, then sends chunk after chunk until the gateway hangs up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/", listener.local_addr().unwrap());
    let hostile = tokio::spawn(async move {
        let mut written = 0usize;
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 16 * 1024];
            let _ = conn.read(&mut buf).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                        transfer-encoding: chunked\r\n\r\n";
            if conn.write_all(head.as_bytes()).await.is_err() {
                continue;
            }
            let chunk = format!("4000\r\n{}\r\n", "a".repeat(0x4000));
            while written < 1 << 30 && conn.write_all(chunk.as_bytes()).await.is_ok() {
                written += 0x4000;
            }
        }
    });
    let mut input = app_input(APP, &Options::default());
    input.sts_endpoint = Some(endpoint);
    app.edit_app(app.app_id, &input).await;

    let res = app.credentials("alice", "").await;
    assert_eq!(res.status(), 502);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "sts_error");
    assert_eq!(body["error"]["stsCode"], "InvalidResponse");
    assert_eq!(app.log_rows().await[0].outcome.as_str(), "upstream_error");
    assert_eq!(app.get("/healthz", None).await.status(), 200);
    hostile.abort();
    app.shutdown().await;
}

/// The connection to PostgreSQL breaks while an issuance row's insert is being carried out (a
/// trigger holds it on the server for a second; the proxy cuts every connection meanwhile):
/// the server finishes and commits the row, the gateway only sees the broken connection. The
/// client gets 503, and once the database is reachable again the row is amended to say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_connection_breaks_is_amended_once_the_database_is_back() {
    let app = TestApp::spawn_with(Options {
        db_proxy: true,
        ..Options::default()
    })
    .await;
    assert_eq!(app.credentials("alice", "").await.status(), 200);
    sqlx::raw_sql(
        "CREATE FUNCTION hold_bob() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.subject = 'bob' AND NEW.outcome = 'issued' THEN PERFORM pg_sleep(1); END IF; \
           RETURN NEW; END $$; \
         CREATE TRIGGER hold_bob BEFORE INSERT ON issuance_log \
           FOR EACH ROW EXECUTE FUNCTION hold_bob()",
    )
    .execute(app.db_pool())
    .await
    .unwrap();
    let proxy = app.proxy.as_ref().unwrap();
    let (res, ()) = tokio::join!(app.credentials("bob", ""), async {
        // Bob's claim and STS call take a few milliseconds; his row then sleeps a second.
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.cut();
    });
    assert_eq!(res.status(), 503);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    // The server commits the row half a second after the cut; the database comes back later.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let committed: (String, i16) =
        sqlx::query_as("SELECT outcome::text, http_status FROM issuance_log WHERE request_id = $1")
            .bind(&id)
            .fetch_one(app.db_pool())
            .await
            .unwrap();
    assert_eq!(
        committed,
        ("issued".to_owned(), 200),
        "the row committed on the server"
    );
    proxy.restore();
    let row = app
        .row_once(&id, |r| r.http_status == 503)
        .await
        .expect("bob's row");
    assert_eq!(row.http_status, 503, "{row:?}");
    assert_eq!(row.outcome.as_str(), "upstream_error");
    assert_eq!(row.error_code.as_deref(), Some("audit_unavailable"));
    app.shutdown().await;
}
