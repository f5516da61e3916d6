//! Peers started in this process through the library (`daemon::start`,
//! `daemon::serve`), on 127.0.0.1:0 with temporary data dirs and injected
//! shutdown: the fast shell tests that need no `ringkv` process. Every
//! wait polls a predicate with a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ringkv_gossip::State;
use ringkv_node::config::Settings;
use ringkv_node::daemon::{self, Listeners, Peer};
use ringkv_testbed::{http, ready};

/// Longest any one wait here may take; they return as soon as they hold.
const WAIT: Duration = Duration::from_secs(30);

fn subscribe() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// `ringkv node` settings for peer `name` in `dir`, joining `seed` (and
/// taking the cluster key from its data dir) when given.
fn settings(dir: &Path, name: &str, seed: Option<(SocketAddr, &Path)>) -> Settings {
    let data = dir.join(name);
    let mut flags: Vec<String> = [
        "--data",
        &data.display().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--name",
        name,
        "--admin",
        "127.0.0.1:0",
        "--resp",
        "127.0.0.1:0",
        "--settle",
        "200ms",
        "--leave-timeout",
        "10s",
        "--ready-file",
        &ready::path_for(&data).display().to_string(),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    if let Some((addr, seed_data)) = seed {
        flags.extend(["--join".to_owned(), addr.to_string()]);
        flags.push("--cluster-key-file".to_owned());
        flags.push(seed_data.join("cluster.key").display().to_string());
    }
    Settings::from_flags(flags).expect("settings")
}

/// Polls `check` until it holds; panics naming `what` after [`WAIT`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `f` off the runtime (blocking clients), bounded by [`WAIT`].
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::time::timeout(WAIT, tokio::task::spawn_blocking(f))
        .await
        .expect("in time")
        .expect("no panic")
}

/// How many others `peer` holds in `state`.
fn count(peer: &Peer, state: State) -> usize {
    peer.view()
        .borrow()
        .members
        .iter()
        .filter(|m| m.state == state)
        .count()
}

async fn three_peers(dir: &Path) -> Vec<Peer> {
    let p1 = daemon::start(settings(dir, "p1", None), Listeners::default())
        .await
        .expect("p1 starts");
    let seed = (p1.addrs().quic, dir.join("p1"));
    let mut peers = vec![p1];
    for name in ["p2", "p3"] {
        let s = settings(dir, name, Some((seed.0, &seed.1)));
        peers.push(
            daemon::start(s, Listeners::default())
                .await
                .expect("starts"),
        );
    }
    peers
}

async fn converge(peers: &[Peer]) {
    let n = peers.len() - 1;
    eventually("every peer sees the others alive", || {
        peers.iter().all(|p| count(p, State::Alive) == n)
    })
    .await;
}

fn set(resp: SocketAddr, key: &str, value: &str) -> redis::RedisResult<String> {
    let mut con = redis::Client::open(format!("redis://{resp}/"))?.get_connection()?;
    redis::cmd("SET").arg(key).arg(value).query(&mut con)
}

fn get(resp: SocketAddr, key: &str) -> redis::RedisResult<Option<String>> {
    let mut con = redis::Client::open(format!("redis://{resp}/"))?.get_connection()?;
    redis::cmd("GET").arg(key).query(&mut con)
}

/// Retries `op` (a blocking client call) until it returns `Ok(want)`.
async fn until_ok<T, F>(what: &str, want: T, op: F)
where
    T: PartialEq + std::fmt::Debug + Send + Clone + 'static,
    F: Fn() -> redis::RedisResult<T> + Send + Sync + Clone + 'static,
{
    let deadline = Instant::now() + WAIT;
    loop {
        let got = blocking(op.clone()).await;
        if got.as_ref().ok() == Some(&want) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: last answer {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stop_all(peers: Vec<Peer>) {
    for peer in peers {
        let name = peer.addrs().name.clone();
        let stopped = tokio::time::timeout(WAIT, peer.shutdown(std::future::pending()))
            .await
            .unwrap_or_else(|_| panic!("{name} stops in time"));
        assert!(
            stopped.unfinished.is_empty(),
            "{name}: {:?} still running",
            stopped.unfinished
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_process_peers_converge_and_read_each_others_writes() {
    subscribe();
    let dir = tempfile::tempdir().expect("temp dir");
    let peers = three_peers(dir.path()).await;
    converge(&peers).await;

    // The ready file says what start() returned, and the admin HTTP of
    // every peer serves (one metrics recorder for the whole process).
    for p in &peers {
        let addrs = p.addrs();
        let file = ready::read(
            &ready::path_for(&dir.path().join(&addrs.name)),
            std::process::id(),
        )
        .expect("a ready file of this process");
        assert_eq!(
            (file.quic, file.admin, file.resp),
            (addrs.quic, addrs.admin, addrs.resp)
        );
        assert_eq!(
            (file.name.as_str(), file.id.clone()),
            (addrs.name.as_str(), addrs.id.to_string())
        );
        let admin = addrs.admin.expect("admin");
        let metrics = blocking(move || http::get(admin, "/metrics")).await;
        assert!(metrics.is_ok(), "{}: /metrics: {metrics:?}", addrs.name);
    }

    let (first, last) = (
        peers[0].addrs().resp.expect("resp"),
        peers[2].addrs().resp.expect("resp"),
    );
    until_ok("SET through p1", "OK".to_owned(), move || {
        set(first, "k", "v1")
    })
    .await;
    until_ok(
        "GET through p3 sees p1's write",
        Some("v1".to_owned()),
        move || get(last, "k"),
    )
    .await;
    stop_all(peers).await;
}

/// A shutdown future the test completes, and the one `serve` waits on.
fn trigger() -> (tokio::sync::oneshot::Sender<()>, impl Future<Output = ()>) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_stopped_by_its_shutdown_future_leaves_and_all_its_tasks_end() {
    subscribe();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut peers = three_peers(dir.path()).await;
    // A fourth peer on a socket the test bound, run by serve() until the
    // test fires its shutdown.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let p4_addr = udp.local_addr().expect("addr");
    let s = settings(
        dir.path(),
        "p4",
        Some((peers[0].addrs().quic, &dir.path().join("p1"))),
    );
    let (stop, shutdown) = trigger();
    let listeners = Listeners {
        udp: Some(udp),
        ..Listeners::default()
    };
    let served = tokio::spawn(daemon::serve(s, listeners, shutdown));
    eventually("every peer sees the three others alive", || {
        peers.iter().all(|p| count(p, State::Alive) == 3)
    })
    .await;
    let p4_in_view = peers[1]
        .view()
        .borrow()
        .members
        .iter()
        .any(|m| m.meta.addr == p4_addr);
    assert!(p4_in_view, "p4 is known on the socket the test bound");

    stop.send(()).expect("p4 still runs");
    let stopped = tokio::time::timeout(WAIT, served)
        .await
        .expect("serve returns in time after its shutdown")
        .expect("no panic")
        .expect("p4 ran");
    assert!(
        stopped.unfinished.is_empty(),
        "p4: {:?} still running",
        stopped.unfinished
    );
    eventually("the others see p4 leave (Left, not Dead)", || {
        peers
            .iter()
            .all(|p| count(p, State::Left) == 1 && count(p, State::Alive) == 2)
    })
    .await;
    let last = peers.pop().expect("p3");
    stop_all(vec![last]).await;
    eventually("p1 and p2 see p3 leave too", || {
        peers.iter().all(|p| count(p, State::Left) == 2)
    })
    .await;
    stop_all(peers).await;
}

/// A stopped in-process peer lets go of everything it held (the store's
/// lock, its sockets): the same data dir starts again in the same
/// process, on the same ports, with its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_peer_releases_its_store_and_ports_and_restarts_with_its_data() {
    subscribe();
    let dir = tempfile::tempdir().expect("temp dir");
    let p1 = daemon::start(settings(dir.path(), "p1", None), Listeners::default())
        .await
        .expect("p1 starts");
    let (resp, quic) = (p1.addrs().resp.expect("resp"), p1.addrs().quic);
    until_ok("SET", "OK".to_owned(), move || set(resp, "k", "kept")).await;
    stop_all(vec![p1]).await;

    // The same ports: nothing of the stopped peer may still hold them.
    let again = Settings::from_flags(
        [
            "--data",
            &dir.path().join("p1").display().to_string(),
            "--listen",
            &quic.to_string(),
            "--resp",
            &resp.to_string(),
            "--name",
            "p1",
        ]
        .map(String::from),
    )
    .expect("settings");
    let p1 = tokio::time::timeout(WAIT, async {
        loop {
            match daemon::start(again.clone(), Listeners::default()).await {
                Ok(p) => break p,
                Err(e) => {
                    let text = format!("{e:#}");
                    assert!(
                        text.contains("in use") || text.contains("lock"),
                        "unexpected: {text}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .await
    .expect("the data dir and ports are free again");
    until_ok(
        "GET after the restart",
        Some("kept".to_owned()),
        move || get(resp, "k"),
    )
    .await;
    stop_all(vec![p1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_joins_through_a_seed_host_name() {
    subscribe();
    let dir = tempfile::tempdir().expect("temp dir");
    let p1 = daemon::start(settings(dir.path(), "p1", None), Listeners::default())
        .await
        .expect("p1 starts");
    let port = p1.addrs().quic.port();
    let data = dir.path().join("p2");
    let key = dir.path().join("p1").join("cluster.key");
    let flags = [
        "--data".to_owned(),
        data.display().to_string(),
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--name".to_owned(),
        "p2".to_owned(),
        "--join".to_owned(),
        format!("localhost:{port}"),
        "--cluster-key-file".to_owned(),
        key.display().to_string(),
        "--leave-timeout".to_owned(),
        "10s".to_owned(),
    ];
    let p2 = daemon::start(
        Settings::from_flags(flags).expect("settings"),
        Listeners::default(),
    )
    .await
    .expect("p2 starts");
    let peers = vec![p1, p2];
    converge(&peers).await;
    assert!(peers[1].view().borrow().joined);
    stop_all(peers).await;
}

/// `ringkv health --admin ADDR`: its exit status and stdout.
fn health_check(admin: SocketAddr) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["health", "--admin", &admin.to_string(), "--timeout", "5s"])
        .env_remove("RINGKV_ADMIN")
        .output()
        .expect("ringkv runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ringkv_health_exits_zero_for_a_healthy_peer_and_one_otherwise() {
    subscribe();
    let dir = tempfile::tempdir().expect("temp dir");
    let p1 = daemon::start(settings(dir.path(), "p1", None), Listeners::default())
        .await
        .expect("p1 starts");
    let admin = p1.addrs().admin.expect("admin");
    // /health turns 200 once the ring is built: wait for that, through
    // the command itself.
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, out) = blocking(move || health_check(admin)).await;
        if code == Some(0) {
            assert!(out.contains("\"ok\""), "{out}");
            break;
        }
        assert_eq!(code, Some(1), "unhealthy is exit 1: {out}");
        assert!(Instant::now() < deadline, "p1 never healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_all(vec![p1]).await;
    // Nobody answers there any more: exit 1.
    let (code, _) = blocking(move || health_check(admin)).await;
    assert_eq!(code, Some(1));
}
