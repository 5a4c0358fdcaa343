//! A rolling restart under load: each replica in turn gets SIGTERM and a fresh one takes its
//! place, while clients behind a load balancer's view of the cluster keep asking.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::json;

use crate::harness::*;
use crate::support::{APP, Options, hs256_token};

#[derive(Default, Debug)]
struct Tally {
    statuses: BTreeMap<u16, usize>,
    /// Connections refused by a stopped replica, retried on the next one (what a load
    /// balancer does).
    retried: usize,
    failed: Vec<String>,
}

// Known failure: about 1 request in 500 is reset (not refused) while a replica stops, most
// likely a connection still in the accept backlog when SIGTERM closes the listener. The fix
// is a drain before the listeners close (`/readyz` answers 503 for a while first); until it
// exists this test is run by hand: `cargo test --test cluster -- --ignored --nocapture`.
#[ignore = "a connection in the accept backlog is reset at SIGTERM; needs a readiness drain"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_fails_no_request() {
    let mut cluster = Cluster::start(&Options::default(), &[]).await;
    let backends: Arc<RwLock<Vec<String>>> =
        Arc::new(RwLock::new((0..REPLICAS).map(|i| cluster.url(i)).collect()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..6 {
        let (http, backends, stop) = (cluster.http.clone(), backends.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut n: usize = c;
            while !stop.load(Ordering::Relaxed) {
                // Forty users: cache hits, shared-table hits and mints all happen.
                let token = hs256_token(json!({ "sub": format!("roll-{}", n % 40) }));
                let mut attempts = 0;
                loop {
                    let url = {
                        let b = backends.read().unwrap();
                        b[n % b.len()].clone()
                    };
                    n += 1;
                    let sent = http
                        .get(format!("{url}/v1/apps/{APP}/credentials"))
                        .bearer_auth(&token)
                        .send()
                        .await;
                    match sent {
                        Ok(res) => {
                            *tally.statuses.entry(res.status().as_u16()).or_default() += 1;
                            break;
                        }
                        Err(e) if e.is_connect() && attempts < 5 => {
                            tally.retried += 1;
                            attempts += 1;
                        }
                        Err(e) => {
                            tally.failed.push(format!("{url}: {e}"));
                            break;
                        }
                    }
                }
            }
            tally
        }));
    }
    for i in 0..REPLICAS {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut old = cluster.replicas[i].take().unwrap();
        let clean = tokio::task::spawn_blocking(move || old.terminate())
            .await
            .unwrap();
        assert!(clean, "replica {i} did not stop cleanly on SIGTERM");
        let fresh = cluster.spawn_replica(&[]);
        let url = fresh.public_url();
        cluster.replicas[i] = Some(fresh);
        backends.write().unwrap()[i] = url;
        let took = cluster.wait_for_members(i, REPLICAS as u64).await;
        println!("replica {i} restarted; it counted {REPLICAS} members {took:?} after start");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    for c in clients {
        let t = c.await.unwrap();
        for (status, n) in t.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
        total.retried += t.retried;
        total.failed.extend(t.failed);
    }
    println!(
        "rolling restart: answers by status {:?}, {} refused connections retried elsewhere, {} failed",
        total.statuses,
        total.retried,
        total.failed.len()
    );
    assert!(total.failed.is_empty(), "{:?}", total.failed);
    assert!(
        total.statuses.keys().all(|s| *s == 200 || *s == 503),
        "{:?}",
        total.statuses
    );
    assert!(total.statuses.get(&200).copied().unwrap_or(0) > 0);
    assert!(cluster.stop());
}
