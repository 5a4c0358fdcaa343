//! What a cache miss costs PostgreSQL, counted on the wire: a proxy in front of the server
//! reads the gateway's side of the protocol and lists every statement executed (each
//! `Execute` message, with the SQL of the statement it runs) and every round trip (each `Sync`
//! that ends a batch holding an `Execute`, or a simple `Query`). A statement's one-off
//! preparation on a new connection (`Parse`/`Describe`/`Sync`, nothing executed) is not
//! counted. The proxy refuses TLS (answers `N` to the client's SSLRequest) so it can read the
//! protocol; nothing else differs from a direct connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// What went through the proxy, in order.
#[derive(Default)]
struct Wire {
    /// The SQL of every statement executed.
    executed: Vec<String>,
    /// Round trips that executed something.
    round_trips: usize,
}

struct WireCounter {
    addr: SocketAddr,
    wire: Arc<Mutex<Wire>>,
    task: tokio::task::JoinHandle<()>,
}

const SSL_REQUEST: u32 = 80_877_103;

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(buf[at..at + 4].try_into().unwrap())
}

/// The NUL-terminated string at `at`, and where the next field starts.
fn cstr(buf: &[u8], at: usize) -> (String, usize) {
    let end = at + buf[at..].iter().position(|&b| b == 0).unwrap();
    (String::from_utf8_lossy(&buf[at..end]).into_owned(), end + 1)
}

/// Reads the frontend messages of one connection as they are forwarded.
#[derive(Default)]
struct Reader {
    buf: Vec<u8>,
    started: bool,
    statements: HashMap<String, String>,
    bound: String,
    executed_since_sync: bool,
}

impl Reader {
    fn feed(&mut self, bytes: &[u8], wire: &Mutex<Wire>) {
        self.buf.extend_from_slice(bytes);
        loop {
            if !self.started {
                // The startup message: a length, no type byte.
                if self.buf.len() < 4 || self.buf.len() < u32_at(&self.buf, 0) as usize {
                    return;
                }
                let len = u32_at(&self.buf, 0) as usize;
                self.buf.drain(..len);
                self.started = true;
                continue;
            }
            if self.buf.len() < 5 {
                return;
            }
            let len = 1 + u32_at(&self.buf, 1) as usize;
            if self.buf.len() < len {
                return;
            }
            let body = &self.buf[5..len];
            let mut wire = wire.lock().unwrap();
            match self.buf[0] {
                b'P' => {
                    let (name, next) = cstr(body, 0);
                    let (sql, _) = cstr(body, next);
                    self.statements.insert(name, sql);
                }
                b'B' => {
                    let (_portal, next) = cstr(body, 0);
                    let (name, _) = cstr(body, next);
                    self.bound = self.statements.get(&name).cloned().unwrap_or_default();
                }
                b'E' => {
                    wire.executed.push(self.bound.clone());
                    self.executed_since_sync = true;
                }
                b'S' if self.executed_since_sync => {
                    wire.round_trips += 1;
                    self.executed_since_sync = false;
                }
                b'Q' => {
                    wire.executed.push(cstr(body, 0).0);
                    wire.round_trips += 1;
                }
                _ => {}
            }
            drop(wire);
            self.buf.drain(..len);
        }
    }
}

impl WireCounter {
    /// In front of the server `DATABASE_URL` names.
    async fn start() -> Self {
        let target = database_server();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let wire = Arc::new(Mutex::new(Wire::default()));
        let counted = wire.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (target, wire) = (target.clone(), counted.clone());
                tokio::spawn(async move {
                    // Refuse TLS so that the protocol can be read.
                    let mut first = [0u8; 8];
                    if client.read_exact(&mut first).await.is_err() {
                        return;
                    }
                    let mut reader = Reader::default();
                    let mut pending = first.to_vec();
                    if u32_at(&first, 0) == 8 && u32_at(&first, 4) == SSL_REQUEST {
                        if client.write_all(b"N").await.is_err() {
                            return;
                        }
                        pending.clear();
                    }
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    });
                    let mut chunk = vec![0u8; 64 * 1024];
                    loop {
                        if !pending.is_empty() {
                            if server_write.write_all(&pending).await.is_err() {
                                break;
                            }
                            reader.feed(&pending, &wire);
                            pending.clear();
                        }
                        match client_read.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => pending.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ = server_write.shutdown().await;
                    down.abort();
                });
            }
        });
        Self { addr, wire, task }
    }

    /// The statements executed and the round trips made so far.
    fn mark(&self) -> (usize, usize) {
        let wire = self.wire.lock().unwrap();
        (wire.executed.len(), wire.round_trips)
    }

    /// The statements executed and round trips made since `mark`.
    fn since(&self, mark: (usize, usize)) -> (Vec<String>, usize) {
        let wire = self.wire.lock().unwrap();
        (wire.executed[mark.0..].to_vec(), wire.round_trips - mark.1)
    }
}

impl Drop for WireCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The first words of a statement, for the report.
fn short(sql: &str) -> String {
    let flat = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.chars().take(70).collect()
}

/// Waits (bounded at 10 s) until `done` holds.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 10 s");
}

/// The statements of a miss, without the membership's beats (which run on their own clock).
fn requests_own(executed: Vec<String>) -> Vec<String> {
    executed
        .into_iter()
        .filter(|s| !s.contains("cluster_members"))
        .collect()
}

/// A replica that knows from its beat that it is the only live one does not use the shared
/// credential table (there is no one to share with, and its cache coalesces its own misses of
/// one key): a miss is its issuance-log row alone, plus the budget's statement when the app has
/// an STS budget. Once another replica beats, misses claim in the table again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_replica_skips_the_shared_table_until_another_one_beats() {
    let wire = WireCounter::start().await;
    let app = TestApp::spawn_with(Options {
        db_via: Some(wire.addr),
        ..Options::default()
    })
    .await;
    let gateway = app.gateway.as_ref().unwrap();
    assert!(!gateway.membership.alone(), "alone before any beat");
    let (stop, beats) = app.beat_alone().await;
    // `albums` has an STS budget.
    policy_store::testing::seed_app(
        &*app.store,
        "test",
        &seed_options(
            "albums",
            &Options {
                rate_app_per_second: 50,
                ..Options::default()
            },
        ),
    )
    .await
    .unwrap();
    // Each app's load and every pool's first connection.
    for sub in ["warm-1", "warm-2"] {
        for slug in [APP, "albums"] {
            let path = format!("/v1/apps/{slug}/credentials");
            let status = app.get(&path, Some(&app.token(sub))).await.status();
            assert_eq!(status, 200, "{slug}");
        }
    }
    let calls = app.emulator.stats().requests;

    let before = wire.mark();
    assert_eq!(app.credentials("carol", "").await.status(), 200);
    let executed = requests_own(wire.since(before).0);
    assert_eq!(app.emulator.stats().requests, calls + 1, "one STS call");
    assert_eq!(executed.len(), 1, "{executed:#?}");
    assert!(executed[0].contains("issuance_log"), "{executed:#?}");

    // An app with an STS budget: its token is one statement of its own.
    let before = wire.mark();
    let status = app
        .get("/v1/apps/albums/credentials", Some(&app.token("dave")))
        .await
        .status();
    assert_eq!(status, 200);
    let executed = requests_own(wire.since(before).0);
    let touches = |table: &str| executed.iter().filter(|s| s.contains(table)).count();
    assert_eq!(touches("shared_credentials"), 0, "{executed:#?}");
    assert_eq!(touches("sts_budget"), 1, "{executed:#?}");
    assert_eq!(touches("issuance_log"), 1, "{executed:#?}");
    let shared: i64 = sqlx::query_scalar("SELECT count(*) FROM shared_credentials")
        .fetch_one(app.db_pool())
        .await
        .unwrap();
    assert_eq!(shared, 0, "a lone replica shares nothing");

    // Another replica's beat (its row, fresh for the next hour): the next beat counts two.
    sqlx::query(
        "INSERT INTO cluster_members (id, host, public_addr, admin_addr, version, last_beat) \
         VALUES (gen_random_uuid(), 'peer', '127.0.0.1:3', '127.0.0.1:4', 'test', \
                 now() + interval '1 hour')",
    )
    .execute(app.db_pool())
    .await
    .unwrap();
    wait_until("counted two", || !gateway.membership.alone()).await;
    assert_eq!(gateway.membership.live(), 2);
    let before = wire.mark();
    assert_eq!(app.credentials("erin", "").await.status(), 200);
    let executed = requests_own(wire.since(before).0);
    let touches = |table: &str| executed.iter().filter(|s| s.contains(table)).count();
    // The claim (with the budget's token) and the write.
    assert_eq!(touches("shared_credentials"), 2, "{executed:#?}");
    stop.cancel();
    beats.await.unwrap();
    app.shutdown().await;
}

/// A miss of a new subject, on an app with an STS budget, once the app is loaded and the
/// connections are open: one round trip claims the mint and takes the budget's token, one
/// stores the credential for the other replicas, one writes the issuance-log row. Before the
/// claim and the budget were merged it was five (look-up, claim, budget, write, row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_claims_the_shared_mint_and_takes_the_sts_budget_in_one_round_trip() {
    let wire = WireCounter::start().await;
    let app = TestApp::spawn_with(Options {
        db_via: Some(wire.addr),
        rate_app_per_second: 50,
        ..Options::default()
    })
    .await;
    // The app's load and every pool's first connection.
    for sub in ["warm-1", "warm-2"] {
        assert_eq!(app.credentials(sub, "").await.status(), 200);
    }
    let calls = app.emulator.stats().requests;

    let before = wire.mark();
    let res = app.credentials("carol", "").await;
    assert_eq!(res.status(), 200);
    let (executed, round_trips) = wire.since(before);
    assert_eq!(app.emulator.stats().requests, calls + 1, "one STS call");

    println!("a miss with an STS budget: {round_trips} round trips");
    for sql in &executed {
        println!("  {}", short(sql));
    }
    let touches = |table: &str| executed.iter().filter(|s| s.contains(table)).count();
    // The claim (with the budget) and the write.
    assert_eq!(touches("shared_credentials"), 2, "{executed:#?}");
    assert_eq!(touches("sts_budget"), 1, "{executed:#?}");
    assert!(
        executed[0].contains("shared_credentials") && executed[0].contains("sts_budget_take"),
        "the claim takes the budget: {executed:#?}"
    );
    assert_eq!(touches("issuance_log"), 1, "{executed:#?}");
    assert_eq!(executed.len(), 3, "{executed:#?}");
    assert_eq!(round_trips, 3);

    // A hit in the local cache costs its row only.
    let before = wire.mark();
    let res = app.credentials("carol", "").await;
    assert_eq!(res.status(), 200);
    let (executed, round_trips) = wire.since(before);
    assert_eq!(
        (executed.len(), round_trips),
        (1, 1),
        "a local hit: {executed:#?}"
    );
    assert!(executed[0].contains("issuance_log"));
    app.shutdown().await;
}

/// A budget refused in the claim's own statement: 429 with `Retry-After`, no STS call, and the
/// claim is released (in the background), so no replica waits for a mint that never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_refused_with_the_claim_answers_429_and_releases_the_claim() {
    let wire = WireCounter::start().await;
    let app = TestApp::spawn_with(Options {
        db_via: Some(wire.addr),
        rate_app_per_second: 1,
        ..Options::default()
    })
    .await;
    assert_eq!(app.credentials("alice", "").await.status(), 200);
    let calls = app.emulator.stats().requests;
    let before = wire.mark();
    let res = app.credentials("bob", "").await;
    assert_eq!(res.status(), 429);
    let (executed, _) = wire.since(before);
    let budget: Vec<&String> = executed
        .iter()
        .filter(|s| s.contains("sts_budget_take"))
        .collect();
    assert_eq!(budget.len(), 1, "{executed:#?}");
    assert!(
        budget[0].contains("shared_credentials"),
        "refused by the claim's own statement, not one of the mint's: {executed:#?}"
    );
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");
    assert_eq!(app.emulator.stats().requests, calls, "no STS call");
    let claims = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM shared_credentials WHERE sealed IS NULL")
            .fetch_one(app.store.pool())
            .await
            .unwrap()
    };
    let mut left = claims().await;
    for _ in 0..100 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        left = claims().await;
    }
    assert_eq!(left, 0, "the refused mint's claim was not released");
    // Alice's credential is shared; bob gets his once a token is due.
    let sealed: i64 = sqlx::query_scalar("SELECT count(*) FROM shared_credentials")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(sealed, 1);
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(app.credentials("bob", "").await.status(), 200);
    app.shutdown().await;
}
