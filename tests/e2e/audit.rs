//! The issuance log under faults (DESIGN §5.7): a row and its answer always agree, one bad
//! value from STS is refused alone, and SIGTERM with requests in flight answers them all
//! and logs every credential handed out.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use futures_util::future::join_all;
use policy_store::testing::{SeedApp, fresh_database, seed_app, test_cipher};
use policy_store::{IssuanceFilter, IssuanceRecord, IssuanceStore, Outcome, PgStore};
use serde_json::Value;
use sts_emulator::{Faults, Tamper};

use crate::binary::{KillOnDrop, Served, TestAppTokens, serve};
use crate::deadlines::BlackHole;
use crate::support::*;

/// `albums`: a second app whose STS account is the emulator's other one.
async fn seed_albums(app: &TestApp) {
    seed_app(
        &*app.store,
        "test",
        &SeedApp {
            secret_id: OTHER_ACCOUNT_ID.into(),
            secret_key: OTHER_ACCOUNT_KEY.into(),
            ..seed_options("albums", &Options::default())
        },
    )
    .await
    .unwrap();
}

/// `GET /v1/apps/{app}/credentials` as `sub`: status, body, and the request id.
async fn ask(app: &TestApp, slug: &str, sub: impl AsRef<str>) -> (u16, Value, String) {
    let res = app
        .get(
            &format!("/v1/apps/{slug}/credentials"),
            Some(&app.token(sub.as_ref())),
        )
        .await;
    let status = res.status().as_u16();
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    (status, res.json().await.unwrap(), id)
}

fn by_request_id(rows: Vec<IssuanceRecord>) -> HashMap<String, IssuanceRecord> {
    rows.into_iter()
        .map(|r| (r.request_id.clone(), r))
        .collect()
}

/// An STS answer with a NUL byte or a 5,000-character TmpSecretId for one app's request is
/// refused (502 `InvalidResponse`, nothing handed out) while the other app's requests, in
/// flight at the same time, get their credentials and rows. A mangled RequestId or
/// Expiration is cleaned, not fatal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_sts_answer_is_refused_alone() {
    let app = TestApp::spawn().await;
    seed_albums(&app).await;
    for tamper in [
        Tamper {
            tmp_secret_id: Some("AKID\0tampered".into()),
            ..Tamper::default()
        },
        Tamper {
            tmp_secret_id: Some("A".repeat(5_000)),
            ..Tamper::default()
        },
    ] {
        let subs: Vec<String> = (0..8)
            .map(|i| format!("u{}-{i}", tamper.tmp_secret_id.as_ref().unwrap().len()))
            .collect();
        app.emulator
            .set_faults(Faults {
                tamper_next: 1,
                tamper,
                secret_id: Some(ACCOUNT_ID.into()),
                ..Faults::default()
            })
            .unwrap();
        let (photos, albums) = tokio::join!(
            ask(&app, APP, "victim"),
            join_all(subs.iter().map(|s| ask(&app, "albums", s)))
        );
        let (status, body, id) = photos;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["error"]["stsCode"], "InvalidResponse");
        assert!(body.get("credentials").is_none());
        let rows = by_request_id(app.log_rows().await);
        let row = &rows[&id];
        assert_eq!(row.outcome, Outcome::UpstreamError);
        assert_eq!(row.tmp_secret_id, None);
        for (status, body, id) in albums {
            assert_eq!(status, 200, "{body}");
            let row = &rows[&id];
            assert_eq!(row.outcome, Outcome::Issued);
            assert_eq!(
                row.tmp_secret_id.as_deref(),
                body["credentials"]["tmpSecretId"].as_str()
            );
        }
    }

    // A hostile RequestId and Expiration: the credential is usable, the row is clean.
    app.emulator
        .set_faults(Faults {
            tamper_next: 1,
            tamper: Tamper {
                request_id: Some(format!("req\0{}", "r".repeat(5_000))),
                expiration: Some("\0never".into()),
                ..Tamper::default()
            },
            secret_id: Some(ACCOUNT_ID.into()),
            ..Faults::default()
        })
        .unwrap();
    let (status, body, id) = ask(&app, APP, "mangled").await;
    assert_eq!(status, 200, "{body}");
    assert!(!body["expiration"].as_str().unwrap().contains('\0'));
    let row = &by_request_id(app.log_rows().await)[&id];
    assert_eq!(row.outcome, Outcome::Issued);
    let sts_id = row.sts_request_id.as_deref().unwrap();
    assert!(sts_id.starts_with("req") && !sts_id.contains('\0') && sts_id.chars().count() <= 128);
    app.shutdown().await;
}

fn handed_out(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::Issued | Outcome::Cached)
}

/// A database behind a proxy that stalls under bursts of credential requests (past the
/// 1 s deadline) and then heals: every 200 has its `issued`/`cached` row, and no other
/// answer has one (rows whose commit landed after their client got 503 are amended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalling_database_never_leaves_a_row_that_disagrees_with_its_answer() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("gateway=debug")
        .with_test_writer()
        .try_init();
    let hole = BlackHole::start().await;
    let mut app = TestApp::spawn_with(Options {
        db_via: Some(hole.addr),
        database_timeout: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    assert_eq!(app.credentials("warm", "").await.status(), 200);
    let mut answers = Vec::new();
    for round in 0..3u64 {
        let burst = join_all((0..24).map(|i| ask(&app, APP, format!("s{round}-{i}"))));
        let stall = async {
            tokio::time::sleep(Duration::from_millis(5 + 20 * round)).await;
            hole.swallow();
            // Longer than the request's one database deadline (1 s here, shared by the
            // cluster steps of a miss and the commit), so some requests must meet the stall
            // at their commit.
            tokio::time::sleep(Duration::from_millis(3500)).await;
            hole.forward();
        };
        let (burst, ()) = tokio::join!(burst, stall);
        answers.extend(burst.into_iter().map(|(status, _, id)| (status, id)));
    }
    let metrics = app.gateway.as_ref().unwrap().metrics.clone();
    // The writers end once they know the fate of every commit they started.
    app.stop_gateway().await;
    let metrics = metrics.render(0);
    let counted = |outcome: &str| -> usize {
        let prefix = format!("stsgate_requests_total{{app=\"{APP}\",outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
            .unwrap_or(0)
    };
    // Straight to the database: the connections the HTTP workers opened died with them.
    let rows = by_request_id(
        app.direct
            .search_issuance(&IssuanceFilter::default(), None, 100_000)
            .await
            .unwrap(),
    );
    let mut refused = 0;
    for (status, id) in &answers {
        let row = rows.get(id);
        if *status == 200 {
            let row = row.unwrap_or_else(|| panic!("200 without its row: {id}"));
            assert!(handed_out(row.outcome), "{row:?}");
            assert_eq!(row.http_status, 200);
        } else {
            refused += 1;
            assert_eq!(*status, 503);
            if let Some(row) = row {
                assert!(
                    !handed_out(row.outcome),
                    "answered {status}, logged {row:?}"
                );
                assert_eq!(row.http_status, 503, "{row:?}");
            }
        }
    }
    // Metrics count what the clients got, not what the request would have got.
    assert_eq!(counted("upstream_error"), refused, "{metrics}");
    assert_eq!(
        counted("issued") + counted("cached"),
        answers.len() - refused + 1,
        "{metrics}"
    );
    assert!(
        refused > 0,
        "no request met a stall: the test proved nothing"
    );
    app.shutdown().await;
}

/// SIGTERM while requests wait on a slow STS, with a readiness drain: `/readyz` answers 503
/// at once and the replica leaves the cluster's membership, yet the listener still accepts
/// and serves a new request (its answer closing the connection); every request is answered
/// with its credential, and each credential has its row once the binary has exited (0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_answers_requests_in_flight_and_logs_every_credential() {
    sts_core::install_crypto_provider();
    let db = fresh_database().await.unwrap();
    let store = PgStore::new(db.pool.clone(), test_cipher());
    seed(&store, &Options::default()).await;
    let emu = emulator();
    let Served {
        mut child, public, ..
    } = serve(
        &db.url,
        &emu,
        &[
            ("STSGATE_STS__TIMEOUT_MS", "10000"),
            // Long enough for the checks below on a busy machine; they do not wait it out.
            ("STSGATE_SHUTDOWN_DRAIN_SECS", "4"),
        ],
    );
    let _guard = KillOnDrop(child.id());
    emu.set_faults(Faults {
        latency_ms: 1500,
        ..Faults::default()
    })
    .unwrap();
    const IN_FLIGHT: u64 = 20;
    let http = reqwest::Client::new();
    let url = format!("http://{public}/v1/apps/{APP}/credentials");
    let ask = |sub: String| {
        let (http, url) = (http.clone(), url.clone());
        let token = TestAppTokens.token(&sub);
        tokio::spawn(async move {
            let res = http.get(url).bearer_auth(token).send().await.unwrap();
            let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
            let closes = res
                .headers()
                .get("connection")
                .is_some_and(|v| v == "close");
            (
                res.status().as_u16(),
                id,
                res.json::<Value>().await.unwrap(),
                closes,
            )
        })
    };
    let members = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM cluster_members")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    let mut requests: Vec<_> = (0..IN_FLIGHT)
        .map(|i| ask(format!("inflight{i}")))
        .collect();
    // Every request has reached STS and waits there, and the replica has joined.
    for _ in 0..1000 {
        if emu.stats().requests >= IN_FLIGHT && members().await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(emu.stats().requests, IN_FLIGHT);
    assert_eq!(members().await, 1);
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    // The drain: not ready at once (and the answer closes its connection) ...
    let readyz = format!("http://{public}/readyz");
    let mut draining = None;
    for _ in 0..200 {
        let res = http.get(&readyz).send().await.unwrap();
        if res.status() == 503 {
            draining = Some(res);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let draining = draining.expect("/readyz never answered 503 after SIGTERM");
    assert_eq!(draining.headers()["connection"], "close");
    assert!(draining.text().await.unwrap().contains("draining"));
    // ... out of the cluster's membership at once, not after three missed beats ...
    for _ in 0..200 {
        if members().await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(members().await, 0, "the draining replica is still a member");
    // ... and still serving: a request that arrives now gets its credential.
    requests.push(ask("late".to_owned()));
    let mut handed = Vec::new();
    for (i, r) in requests.into_iter().enumerate() {
        let (status, id, body, closes) = r.await.unwrap();
        assert_eq!(status, 200, "{body}");
        if i as u64 == IN_FLIGHT {
            assert!(
                closes,
                "an answer during the drain keeps its connection open"
            );
        }
        handed.push((
            id,
            body["credentials"]["tmpSecretId"]
                .as_str()
                .unwrap()
                .to_owned(),
        ));
    }
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "stsgate exited with {exit}");
    let rows = by_request_id(
        store
            .search_issuance(&IssuanceFilter::default(), None, 1000)
            .await
            .unwrap(),
    );
    assert_eq!(handed.len() as u64, IN_FLIGHT + 1);
    for (id, tmp_secret_id) in handed {
        let row = rows.get(&id).unwrap_or_else(|| panic!("no row for {id}"));
        assert_eq!(row.outcome, Outcome::Issued);
        assert_eq!(row.tmp_secret_id.as_deref(), Some(tmp_secret_id.as_str()));
    }
}

/// A second SIGTERM during the graceful stop, while requests wait on an STS call far slower
/// than any shutdown bound: the binary stops waiting for them and exits promptly (it would
/// have waited out the graceful stop's 30 s), after the issuance-log writers committed what
/// they held; every credential handed out has its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_twice_stops_at_once_and_every_credential_handed_out_has_its_row() {
    sts_core::install_crypto_provider();
    let db = fresh_database().await.unwrap();
    let store = PgStore::new(db.pool.clone(), test_cipher());
    seed(&store, &Options::default()).await;
    let emu = emulator();
    let Served {
        mut child, public, ..
    } = serve(
        &db.url,
        &emu,
        &[
            ("STSGATE_STS__TIMEOUT_MS", "120000"),
            ("STSGATE_STS__MAX_ATTEMPTS", "1"),
        ],
    );
    let _guard = KillOnDrop(child.id());
    let http = reqwest::Client::new();
    let url = format!("http://{public}/v1/apps/{APP}/credentials");
    let ask = |sub: String| {
        let (http, url) = (http.clone(), url.clone());
        let token = TestAppTokens.token(&sub);
        tokio::spawn(async move {
            match http.get(url).bearer_auth(token).send().await {
                Ok(res) => {
                    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
                    let status = res.status().as_u16();
                    (status, id, res.json::<Value>().await.unwrap_or(Value::Null))
                }
                Err(_) => (0, String::new(), Value::Null),
            }
        })
    };
    // Credentials handed out before the signals ...
    let mut answers = Vec::new();
    for i in 0..5 {
        answers.push(ask(format!("before{i}")).await.unwrap());
    }
    assert!(answers.iter().all(|(s, ..)| *s == 200), "{answers:?}");
    // ... and requests waiting on a 60 s STS call.
    emu.set_faults(Faults {
        latency_ms: 60_000,
        ..Faults::default()
    })
    .unwrap();
    const IN_FLIGHT: u64 = 5;
    let before = emu.stats().requests;
    let slow: Vec<_> = (0..IN_FLIGHT).map(|i| ask(format!("slow{i}"))).collect();
    for _ in 0..1000 {
        if emu.stats().requests >= before + IN_FLIGHT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(emu.stats().requests, before + IN_FLIGHT);
    let term = || {
        assert!(
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        )
    };
    term();
    // The graceful stop has begun once the listener refuses connections (no drain here).
    let mut closed = false;
    for _ in 0..1000 {
        if tokio::net::TcpStream::connect(&public).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed, "the listener still accepts 10 s after SIGTERM");
    let second = std::time::Instant::now();
    term();
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let took = second.elapsed();
    println!("exited {took:?} after the second SIGTERM, with requests waiting on a 60 s STS call");
    assert!(exit.success(), "stsgate exited with {exit}");
    assert!(
        took < Duration::from_secs(20),
        "the second SIGTERM did not cut the graceful stop short: exited after {took:?}"
    );
    for r in slow {
        answers.push(r.await.unwrap());
    }
    let rows = by_request_id(
        store
            .search_issuance(&IssuanceFilter::default(), None, 1000)
            .await
            .unwrap(),
    );
    let handed: Vec<_> = answers.iter().filter(|(s, ..)| *s == 200).collect();
    assert!(handed.len() >= 5);
    for (_, id, body) in handed {
        let row = rows.get(id).unwrap_or_else(|| panic!("no row for {id}"));
        assert_eq!(
            row.tmp_secret_id.as_deref(),
            body["credentials"]["tmpSecretId"].as_str()
        );
    }
}
