//! Handshake floods against a real `ringkv node` on 127.0.0.1 (ephemeral
//! ports, temporary data dir, killed on drop): stalled QUIC Initials sent
//! from other loopback addresses (127.0.0.2 and up, so the legitimate CLI
//! on 127.0.0.1 is a source of its own) must not lock the CLI out, and
//! the admission counters show why. The Initials are real ones, captured
//! from a quinn client dialling a UDP socket that never answers, then
//! replayed from sockets that never answer either. Every wait is bounded.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use ringkv_gossip::{ClusterKey, NodeIdentity};

/// How long the legitimate CLI may take, flood or not.
const ANSWER_WITHIN: Duration = Duration::from_secs(4);

/// The value of the counter line starting with `series`.
fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn metrics(peer: &Peer) -> String {
    let admin = peer.admin.expect("started with --admin");
    ringkv_testbed::http::get(admin, "/metrics").expect("metrics")
}

/// `ringkv members` against `peer` with `key`: its output and how long it
/// took.
fn members_cli(peer: &Peer, key: &str) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["members", "--peer", &peer.addr.to_string()])
        .args(["--cluster-key", key])
        .output()
        .expect("ringkv runs");
    (out, started.elapsed())
}

fn text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_flood_of_stalled_handshakes_does_not_lock_out_the_cli() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), "p1", &["--admin", "127.0.0.1:0"]);
    let key = peer.key();
    let mut packets = initials(40 + 240);
    let spread = packets.split_off(40);
    let target = peer.addr;
    let (flooded, done) = std::sync::mpsc::channel();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let flooder = std::thread::spawn(move || {
        // One host alone: it may hold only its share of the slots.
        let one = flood(target, &packets, 1);
        // Then more stalled handshakes than the peer has slots (64), from
        // 24 addresses, as a spoofed or distributed flood looks.
        let many = flood(target, &spread, 24);
        let _ = flooded.send(());
        // The sockets stay open (and unread) until the CLI is done.
        let _ = stopped.recv_timeout(Duration::from_secs(30));
        drop((one, many));
    });
    done.recv_timeout(Duration::from_secs(30))
        .expect("the flood was sent");
    // Every handshake slot the flood took is held for 3 s from now: the
    // CLI dials while they are.
    let (out, took) = members_cli(&peer, &key);
    let _ = stop.send(());
    flooder.join().expect("the flooder");
    assert!(
        out.status.success(),
        "the CLI was locked out: {}",
        text(&out)
    );
    assert!(took < ANSWER_WITHIN, "the CLI took {took:?}");
    let m = metrics(&peer);
    let retries = counter(&m, "ringkv_quic_retries_total");
    let per_source = counter(
        &m,
        "ringkv_quic_handshakes_refused_total{reason=\"per_source\"}",
    );
    assert!(retries > 0, "no Retry was sent:\n{m}");
    assert!(per_source > 0, "no source hit its budget:\n{m}");
    // The stalled handshakes time out (3 s) as timeouts, not as failed
    // TLS handshakes: nothing here suggests a wrong cluster key.
    let deadline = Instant::now() + Duration::from_secs(20);
    let m = loop {
        let m = metrics(&peer);
        if counter(&m, "ringkv_quic_handshake_timeouts_total") > 0 {
            break m;
        }
        assert!(Instant::now() < deadline, "no handshake timed out:\n{m}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        counter(&m, "ringkv_handshake_failures_total"),
        0,
        "stalled handshakes counted as failed TLS handshakes:\n{m}"
    );
}

/// `ringkv members` against `addr`, the key in the environment (so the
/// only key talk on stderr is the CLI's verdict).
fn members_with_env_key(addr: SocketAddr, key: &str) -> std::process::Output {
    Command::new(BIN)
        .args(["members", "--peer", &addr.to_string()])
        .env("RINGKV_CLUSTER_KEY", key)
        .output()
        .expect("ringkv runs")
}

#[test]
fn the_cli_tells_refused_credentials_from_an_overloaded_or_silent_peer() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), "p1", &[]);

    // Another cluster's key: refused credentials, exit 4.
    let other = ClusterKey::from_bytes([5; 32]).to_string();
    let out = members_with_env_key(peer.addr, &other);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        err.contains("credentials refused") && err.contains("--cluster-key"),
        "{}",
        text(&out)
    );

    // A peer whose handshake slots are all busy refuses the connection:
    // overloaded, exit 5, and not a word about the key.
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let key = ClusterKey::parse(&peer.key()).expect("the key");
    let refusing = rt.block_on(async {
        let identity = NodeIdentity::generate().expect("an identity");
        let config = ringkv_gossip::transport::tls::server_config(&key, &identity).expect("config");
        let endpoint = quinn::Endpoint::server(config, SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("a server");
        let accepting = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                incoming.refuse();
            }
        });
        endpoint
    });
    let addr = refusing.local_addr().expect("its address");
    let out = members_with_env_key(addr, &peer.key());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        err.contains("overloaded") && !err.contains("cluster key") && !err.contains("cluster-key"),
        "{}",
        text(&out)
    );
    refusing.close(0u32.into(), b"done");

    // Nobody answers (a UDP socket that never reads): unreachable, no kind
    // (exit 1), and not a word about the key.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("a silent socket");
    let out = members_with_env_key(silent.local_addr().expect("its address"), &peer.key());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        err.contains("no answer") && !err.contains("cluster key") && !err.contains("cluster-key"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_per_source_budget_is_the_one_given_on_the_command_line() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(
        dir.path(),
        "p1",
        &["--admin", "127.0.0.1:0", "--handshakes-per-source", "1"],
    );
    let packets = initials(20);
    let sockets = flood(peer.addr, &packets, 1);
    // One slot for 127.0.0.2, the other 19 Initials ignored (the default
    // budget, 8, would ignore 12).
    let series = "ringkv_quic_handshakes_refused_total{reason=\"per_source\"}";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = metrics(&peer);
        let ignored = counter(&m, series);
        if ignored == 19 {
            break;
        }
        assert!(
            ignored < 19 && Instant::now() < deadline,
            "ignored {ignored}, want 19:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(sockets);
    // The CLI from 127.0.0.1 has a budget of its own.
    let (out, took) = members_cli(&peer, &peer.key());
    assert!(out.status.success(), "{}", text(&out));
    assert!(took < ANSWER_WITHIN, "the CLI took {took:?}");
}
