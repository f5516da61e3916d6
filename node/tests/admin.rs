//! The admin HTTP under attack, on in-process peers (`daemon::start`) on
//! 127.0.0.1:0 with temporary data dirs: the bearer token, the header-read
//! timeout (slowloris), the connection cap, and hot-key names kept out of
//! /metrics. Every wait polls with a deadline; every peer is shut down.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ringkv_node::config::Settings;
use ringkv_node::daemon::{self, Listeners, Peer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Longest any one wait here may take; they return as soon as they hold.
const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "s3cret-admin-token-0123456789abcdef";

/// A lone peer in `dir` with an admin HTTP on 127.0.0.1:0, RESP, and
/// `extra` flags.
async fn peer(dir: &Path, extra: &[&str]) -> Peer {
    let data = dir.join("p1").display().to_string();
    let mut flags = vec![
        "--data",
        &data,
        "--listen",
        "127.0.0.1:0",
        "--name",
        "p1",
        "--admin",
        "127.0.0.1:0",
        "--resp",
        "127.0.0.1:0",
    ];
    flags.extend_from_slice(extra);
    let settings = Settings::from_flags(flags).expect("settings");
    daemon::start(settings, Listeners::default())
        .await
        .expect("the peer starts")
}

fn token_file(dir: &Path) -> String {
    let path = dir.join("admin.token");
    std::fs::write(&path, format!("{TOKEN}\n")).expect("write the token");
    path.display().to_string()
}

async fn stop(peer: Peer) {
    let stopped = tokio::time::timeout(WAIT, peer.shutdown(std::future::pending()))
        .await
        .expect("the peer stops in time");
    assert!(stopped.unfinished.is_empty(), "{:?}", stopped.unfinished);
}

/// One `GET path` on its own connection, with `auth` as the Authorization
/// header: the status and the body.
async fn get(admin: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
    let request = async {
        let mut conn = TcpStream::connect(admin).await?;
        let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
        conn.write_all(head.as_bytes()).await?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    let reply = tokio::time::timeout(WAIT, request)
        .await
        .expect("an answer in time")
        .expect("an HTTP exchange");
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP reply: {reply:?}"));
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

/// Polls `check` until it gives a value; panics naming `what` after
/// [`WAIT`].
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` until it holds; panics naming `what` after [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    until(what, || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await;
}

/// The value of the counter line starting with `series` in `metrics`.
fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Reads from `conn` until the server closes it; `true` if it did
/// within `limit` (EOF or reset), `false` if the connection stayed open.
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_token_every_endpoint_but_health_needs_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = token_file(dir.path());
    let p = peer(dir.path(), &["--admin-token-file", &file]).await;
    let admin = p.addrs().admin.expect("admin");
    let right = format!("Bearer {TOKEN}");
    let wrong = format!("Bearer {TOKEN}x");
    let basic = format!("Basic {TOKEN}");
    for path in ["/metrics", "/v1/members", "/v1/ring", "/v1/faults"] {
        for auth in [
            None,
            Some(wrong.as_str()),
            Some(basic.as_str()),
            Some("Bearer"),
        ] {
            let (status, body) = get(admin, path, auth).await;
            assert_eq!(status, 401, "{path} with {auth:?}: {body}");
        }
    }
    for path in ["/metrics", "/v1/members"] {
        let (status, body) = get(admin, path, Some(&right)).await;
        assert_eq!(status, 200, "{path} with the token: {body}");
    }
    eventually("/health answers 200 without a token", || async {
        get(admin, "/health", None).await.0 == 200
    })
    .await;
    let (_, metrics) = get(admin, "/metrics", Some(&right)).await;
    let rejected = counter(
        &metrics,
        "ringkv_admin_rejected_total{reason=\"unauthorized\"}",
    );
    assert!(
        rejected >= 16,
        "16 refusals counted, /metrics says {rejected}"
    );
    stop(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_trickling_its_headers_is_cut_off_after_the_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = peer(dir.path(), &["--admin-header-timeout", "500ms"]).await;
    let admin = p.addrs().admin.expect("admin");
    let mut slow = TcpStream::connect(admin).await.expect("connect");
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("half a header");
    let started = Instant::now();
    assert!(
        closed_within(&mut slow, Duration::from_secs(10)).await,
        "a half-sent header kept its connection open for 10 s"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "cut off too early: {took:?}"
    );
    // An idle connection that sends nothing is cut off the same way.
    let mut idle = TcpStream::connect(admin).await.expect("connect");
    assert!(closed_within(&mut idle, Duration::from_secs(10)).await);
    eventually("/metrics counts the header timeouts", || async {
        let (_, m) = get(admin, "/metrics", None).await;
        counter(&m, "ringkv_admin_rejected_total{reason=\"header_timeout\"}") >= 2
    })
    .await;
    stop(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_past_the_cap_are_closed_and_a_freed_slot_serves_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = peer(
        dir.path(),
        &[
            "--admin-max-connections",
            "3",
            "--admin-header-timeout",
            "1m",
        ],
    )
    .await;
    let admin = p.addrs().admin.expect("admin");
    // Three keep-alive connections, each with one answered request: they
    // hold the three slots.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = TcpStream::connect(admin).await.expect("connect");
        conn.write_all(b"GET /v1/ring HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(WAIT, conn.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 "), "{:?}", &buf[..n]);
        held.push(conn);
    }
    for _ in 0..2 {
        let mut extra = TcpStream::connect(admin).await.expect("the kernel accepts");
        let _ = extra
            .write_all(b"GET /v1/ring HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        assert!(
            closed_within(&mut extra, Duration::from_secs(10)).await,
            "a fourth connection was served past the cap of 3"
        );
    }
    held.pop();
    let metrics = until("a freed slot serves /metrics again", || async {
        let mut conn = TcpStream::connect(admin).await.ok()?;
        let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        conn.write_all(head).await.ok()?;
        let mut reply = String::new();
        tokio::time::timeout(WAIT, conn.read_to_string(&mut reply))
            .await
            .ok()?
            .ok()?;
        reply.starts_with("HTTP/1.1 200").then_some(reply)
    })
    .await;
    let refused = counter(
        &metrics,
        "ringkv_admin_rejected_total{reason=\"connection_limit\"}",
    );
    assert!(
        refused >= 2,
        "/metrics counts {refused} connections refused"
    );
    drop(held);
    stop(p).await;
}

/// Asks `resp` for `key` a few times (the answer does not matter: the
/// request makes it hot).
async fn make_hot(resp: SocketAddr, key: &'static str) {
    tokio::task::spawn_blocking(move || {
        let client = redis::Client::open(format!("redis://{resp}/")).expect("client");
        let mut con = client.get_connection().expect("connect");
        for _ in 0..5 {
            let _: redis::RedisResult<Option<String>> = redis::cmd("GET").arg(key).query(&mut con);
        }
    })
    .await
    .expect("no panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_name_no_user_keys_unless_asked_to() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = peer(dir.path(), &[]).await;
    let (admin, resp) = (
        p.addrs().admin.expect("admin"),
        p.addrs().resp.expect("resp"),
    );
    make_hot(resp, "user:private-name-4711").await;
    let metrics = until("/metrics shows the hottest key's rank", || async {
        let metrics = get(admin, "/metrics", None).await.1;
        metrics
            .contains("ringkv_hot_key_requests{rank=\"1\"")
            .then_some(metrics)
    })
    .await;
    assert!(
        !metrics.contains("private-name-4711"),
        "a user key name is a metric label by default:\n{metrics}"
    );
    stop(p).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let p = peer(dir.path(), &["--metrics-key-names"]).await;
    let (admin, resp) = (
        p.addrs().admin.expect("admin"),
        p.addrs().resp.expect("resp"),
    );
    make_hot(resp, "user:shown-name-4712").await;
    eventually("--metrics-key-names names the hot key", || async {
        get(admin, "/metrics", None)
            .await
            .1
            .contains("key=\"user:shown-name-4712\"")
    })
    .await;
    stop(p).await;
}
