//! The pool's TCP sockets to PostgreSQL have Nagle's algorithm off (TCP_NODELAY), over TLS and
//! without. sqlx 0.9.0 lost this (vendor/README.md): every small write then waited for the
//! server's delayed ACK, and TLS to the database halved the gateway's throughput.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use policy_store::migrate::connect_pool;
use policy_store::testing::fresh_database;
use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};

/// This process's TCP socket whose local port is `port` (a copy of its descriptor, taken with
/// pidfd_getfd from /proc/self/fd, so no unsafe code).
fn socket_with_local_port(port: u16) -> Option<OwnedFd> {
    let me = pidfd_open(getpid(), PidfdFlags::empty()).expect("pidfd_open");
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|n| pidfd_getfd(&me, n, PidfdGetfdFlags::empty()).ok())
        .find(|fd| {
            rustix::net::getsockname(fd)
                .ok()
                .and_then(|a| SocketAddr::try_from(a).ok())
                .is_some_and(|a| a.port() == port)
        })
}

async fn assert_nodelay(url: &str, want_tls: bool) {
    let pool = connect_pool(url, 2).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    // The server sees the client's port: that identifies this connection's socket among the
    // process's others (tests run side by side).
    let (port, tls): (i32, bool) = sqlx::query_as(
        "SELECT inet_client_port(), coalesce((SELECT ssl FROM pg_stat_ssl \
         WHERE pid = pg_backend_pid()), false)",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(tls, want_tls, "TLS on the connection to {url}");
    let fd = socket_with_local_port(u16::try_from(port).unwrap())
        .unwrap_or_else(|| panic!("no socket of this process has local port {port}"));
    assert!(
        rustix::net::sockopt::tcp_nodelay(&fd).unwrap(),
        "TCP_NODELAY is off on the pool's connection (tls={tls}): the sqlx-core patch is missing"
    );
    drop(conn);
    pool.close().await;
}

#[tokio::test]
async fn pool_connections_disable_nagle() {
    let db = fresh_database().await.unwrap();
    let sep = if db.url.contains('?') { '&' } else { '?' };
    let plain = format!("{}{sep}sslmode=disable", db.url);
    assert_nodelay(&plain, false).await;
    // TLS too where the server offers it (the default `DATABASE_URL` then uses it).
    let ssl: String = sqlx::query_scalar("SELECT current_setting('ssl')")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    if ssl == "on" {
        assert_nodelay(&format!("{}{sep}sslmode=require", db.url), true).await;
    }
}
