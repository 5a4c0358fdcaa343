//! A rolling restart under load: each replica in turn gets SIGTERM and a fresh one takes its
//! place, while clients go through a load balancer's view of the cluster.
//!
//! The load balancer is modelled honestly: a health checker polls every backend's `/readyz`
//! every 150 ms and keeps in rotation only those that answered 200; clients pick among them
//! round-robin over keep-alive connections, and retry elsewhere only a connection that was
//! refused (what a proxy does when a backend is gone). At SIGTERM a replica answers `/readyz`
//! with 503 at once and keeps serving for its drain (1 s here), every response closing its
//! connection, so it is out of rotation long before its listeners close.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;
use crate::support::{APP, Options, hs256_token};

/// How often the load balancer's health check polls each backend.
const HEALTH_CHECK: Duration = Duration::from_millis(150);
/// `shutdown_drain_secs` of the replicas: several health checks long.
const DRAIN_SECS: &str = "1";

struct Backend {
    url: String,
    in_rotation: bool,
}

type Backends = Arc<RwLock<Vec<Backend>>>;

#[derive(Default, Debug)]
struct Tally {
    statuses: BTreeMap<u16, usize>,
    /// Answers that closed their connection (`Connection: close`: sent while draining).
    closing: usize,
    /// Connections refused by a stopped replica, retried on the next one.
    retried: usize,
    failed: Vec<String>,
    handed: Vec<String>,
}

/// The load balancer's health checker: every backend's `/readyz`, every [`HEALTH_CHECK`].
fn health_checker(backends: Backends, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let urls: Vec<String> = backends
                .read()
                .unwrap()
                .iter()
                .map(|b| b.url.clone())
                .collect();
            for url in urls {
                let ready = match http.get(format!("{url}/readyz")).send().await {
                    Ok(res) => res.status() == 200,
                    Err(_) => false,
                };
                for b in backends.write().unwrap().iter_mut() {
                    if b.url == url {
                        b.in_rotation = ready;
                    }
                }
            }
            tokio::time::sleep(HEALTH_CHECK).await;
        }
    })
}

/// The backends in rotation, in order.
fn in_rotation(backends: &Backends) -> Vec<String> {
    backends
        .read()
        .unwrap()
        .iter()
        .filter(|b| b.in_rotation)
        .map(|b| b.url.clone())
        .collect()
}

/// Waits (bounded at 15 s) until the load balancer has `url` in rotation or not.
async fn wait_for_rotation(backends: &Backends, url: &str, wanted: bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        if in_rotation(backends).iter().any(|u| u == url) == wanted {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the load balancer never had {url} in rotation = {wanted}");
}

fn client(c: usize, backends: Backends, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Tally> {
    // Keep-alive, as a proxy's upstream pool: the drain's `Connection: close` moves it off.
    let http = reqwest::Client::new();
    tokio::spawn(async move {
        let mut tally = Tally::default();
        let mut n: usize = c;
        while !stop.load(Ordering::Relaxed) {
            // Forty users: cache hits, shared-table hits and mints all happen.
            let token = hs256_token(json!({ "sub": format!("roll-{}", n % 40) }));
            let mut attempts = 0;
            loop {
                let rotation = in_rotation(&backends);
                if rotation.is_empty() && stop.load(Ordering::Relaxed) {
                    break;
                }
                if rotation.is_empty() && !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let url = rotation[n % rotation.len()].clone();
                n += 1;
                let sent = http
                    .get(format!("{url}/v1/apps/{APP}/credentials"))
                    .bearer_auth(&token)
                    .send()
                    .await;
                match sent {
                    Ok(res) => {
                        let status = res.status().as_u16();
                        *tally.statuses.entry(status).or_default() += 1;
                        if res
                            .headers()
                            .get("connection")
                            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
                        {
                            tally.closing += 1;
                        }
                        match res.json::<serde_json::Value>().await {
                            Ok(body) => {
                                if let Some(id) = body["credentials"]["tmpSecretId"].as_str() {
                                    tally.handed.push(id.to_owned());
                                }
                            }
                            Err(e) => tally.failed.push(format!("{url}: body: {e}")),
                        }
                        break;
                    }
                    Err(e) if e.is_connect() && attempts < 5 => {
                        tally.retried += 1;
                        attempts += 1;
                    }
                    Err(e) => {
                        tally.failed.push(format!("{url}: {e:?}"));
                        break;
                    }
                }
            }
        }
        tally
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_fails_no_request() {
    let env = [("STSGATE_SHUTDOWN_DRAIN_SECS", DRAIN_SECS)];
    let mut cluster = Cluster::start(&Options::default(), &env).await;
    let started = Instant::now();
    let backends: Backends = Arc::new(RwLock::new(
        (0..REPLICAS)
            .map(|i| Backend {
                url: cluster.url(i),
                in_rotation: false,
            })
            .collect(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let checker = health_checker(backends.clone(), stop.clone());
    for i in 0..REPLICAS {
        wait_for_rotation(&backends, &cluster.url(i), true).await;
    }
    let clients: Vec<_> = (0..6)
        .map(|c| client(c, backends.clone(), stop.clone()))
        .collect();
    for i in 0..REPLICAS {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let old_url = cluster.url(i);
        let mut old = cluster.replicas[i].take().unwrap();
        let terminated = Instant::now();
        let stopping = tokio::task::spawn_blocking(move || old.terminate());
        let out = wait_for_rotation(&backends, &old_url, false).await;
        let clean = stopping.await.unwrap();
        let stopped = terminated.elapsed();
        assert!(clean, "replica {i} did not stop cleanly on SIGTERM");
        let fresh = cluster.spawn_replica(&env);
        let url = fresh.public_url();
        cluster.replicas[i] = Some(fresh);
        for b in backends.write().unwrap().iter_mut() {
            if b.url == old_url {
                *b = Backend {
                    url: url.clone(),
                    in_rotation: false,
                };
            }
        }
        let back = wait_for_rotation(&backends, &url, true).await;
        let counted = cluster.wait_for_members(i, REPLICAS as u64).await;
        println!(
            "replica {i}: out of rotation {out:?} after SIGTERM, exited after {stopped:?}; \
             its successor in rotation {back:?} after start, counted {REPLICAS} members {counted:?} after that"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    for c in clients {
        let t = c.await.unwrap();
        for (status, n) in t.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
        total.closing += t.closing;
        total.retried += t.retried;
        total.failed.extend(t.failed);
        total.handed.extend(t.handed);
    }
    checker.await.unwrap();
    let requests: usize = total.statuses.values().sum::<usize>() + total.failed.len();
    println!(
        "rolling restart of {REPLICAS} replicas (drain {DRAIN_SECS} s, health check every {HEALTH_CHECK:?}) \
         in {:.1} s: {requests} requests, answers by status {:?}, {} answered with Connection: close \
         while draining, {} refused connections retried elsewhere, {} failed",
        started.elapsed().as_secs_f64(),
        total.statuses,
        total.closing,
        total.retried,
        total.failed.len()
    );
    assert!(total.failed.is_empty(), "{:?}", total.failed);
    // 503 is the only refusal by design (a database or STS hiccup); nothing else may appear.
    assert!(
        total.statuses.keys().all(|s| *s == 200 || *s == 503),
        "{:?}",
        total.statuses
    );
    assert!(total.statuses.get(&200).copied().unwrap_or(0) > 0);
    // Every credential handed out, by the replicas that stopped too, has its issuance row.
    let logged = cluster.logged_secret_ids().await;
    let missing: Vec<_> = total
        .handed
        .iter()
        .filter(|id| !logged.contains(*id))
        .collect();
    assert!(missing.is_empty(), "credentials without a row: {missing:?}");
    assert!(cluster.stop());
}
