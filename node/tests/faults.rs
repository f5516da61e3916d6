//! The testbed's fault-injection switch on real `ringkv node` processes:
//! refused without `--testbed-faults`, validated, and effective (partition,
//! total loss, delay) with it, and healed by `PUT {}`. Views are read over
//! admin HTTP, which is TCP and so not subject to the faults. Every wait is
//! a bounded poll; every process is killed when its handle drops.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const FLAGS: &[&str] = &["--admin", "127.0.0.1:0", "--testbed-faults"];

/// The peer's admin HTTP address.
fn admin(peer: &Peer) -> SocketAddr {
    peer.admin.expect("started with --admin")
}

fn put_faults(peer: &Peer, settings: &Value) {
    let (code, body) = http(admin(peer), "PUT", "/v1/faults", &settings.to_string());
    assert_eq!(
        code, 200,
        "PUT /v1/faults {settings} on {}: {body}",
        peer.name
    );
}

fn get_faults(peer: &Peer) -> Value {
    let (code, body) = http(admin(peer), "GET", "/v1/faults", "");
    assert_eq!(code, 200, "GET /v1/faults on {}: {body}", peer.name);
    serde_json::from_str(&body).expect("JSON")
}

/// Member name → state, as `peer` sees them (itself included).
fn states(peer: &Peer) -> BTreeMap<String, String> {
    let (code, body) = http(admin(peer), "GET", "/v1/members", "");
    assert_eq!(code, 200, "GET /v1/members on {}", peer.name);
    let view: Value = serde_json::from_str(&body).expect("JSON");
    view["members"]
        .as_array()
        .expect("a members list")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_owned(),
                m["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Whether `viewer` holds every one of `others` in `state`.
fn sees(viewer: &Peer, others: &[&Peer], state: &str) -> bool {
    let view = states(viewer);
    others
        .iter()
        .all(|o| view.get(&o.name).map(String::as_str) == Some(state))
}

fn all_see_all_alive(peers: &[Peer]) -> bool {
    let all: Vec<&Peer> = peers.iter().collect();
    peers.iter().all(|p| sees(p, &all, "alive"))
}

/// Three peers with the switch, once each sees all three alive.
fn faulty_cluster(dir: &std::path::Path) -> Vec<Peer> {
    let (peers, _key) = cluster(dir, 3, FLAGS);
    wait_for(CONVERGE, "three peers see each other alive", || {
        all_see_all_alive(&peers)
    });
    peers
}

/// The value of a Prometheus series whose line starts with `prefix`.
fn metric(peer: &Peer, prefix: &str) -> f64 {
    let (code, text) = http(admin(peer), "GET", "/metrics", "");
    assert_eq!(code, 200);
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {prefix} in /metrics of {}", peer.name))
}

#[test]
fn peer_without_the_flag_refuses_fault_requests_with_403() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), "p1", &["--admin", "127.0.0.1:0"]);
    let off = "fault injection is off: this peer was not started by the testbed";
    for (method, body) in [("GET", ""), ("PUT", r#"{"loss": 1.0}"#), ("PUT", "{}")] {
        let (code, text) = http(admin(&peer), method, "/v1/faults", body);
        assert_eq!(code, 403, "{method} {body}: {text}");
        assert!(text.contains(off), "{method}: {text}");
    }
    let (_, metrics) = http(admin(&peer), "GET", "/metrics", "");
    assert!(!metrics.contains("ringkv_fault_"), "no fault series");

    let help = Command::new(BIN).args(["node", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(!help.contains("testbed-faults"), "the flag is hidden");
}

#[test]
fn bad_fault_bodies_answer_400_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), "p1", FLAGS);
    assert_eq!(
        get_faults(&peer),
        json!({"drop": [], "loss": 0.0, "delay_ms": 0, "clock_offset_ms": 0, "full_disk": false})
    );
    let good = json!({"drop": ["127.0.0.1:4001"], "loss": 0.1, "delay_ms": 5, "clock_offset_ms": -250, "full_disk": false});
    put_faults(&peer, &good);
    assert_eq!(get_faults(&peer), good);

    for (body, want) in [
        (r#"{"loss": 1.01}"#, "loss 1.01 is out of range"),
        (r#"{"loss": -1}"#, "is out of range"),
        (r#"{"delay_ms": 10001}"#, "delay_ms 10001 is out of range"),
        (
            r#"{"clock_offset_ms": 40000000000}"#,
            "clock_offset_ms 40000000000 is out of range",
        ),
        (
            r#"{"drop": ["127.0.0.1"]}"#,
            "is not a peer's QUIC socket address",
        ),
        (
            r#"{"drop": ["127.0.0.1:1"], "partition": true}"#,
            "unknown field",
        ),
        ("{", "bad fault settings"),
    ] {
        let (code, text) = http(admin(&peer), "PUT", "/v1/faults", body);
        assert_eq!(code, 400, "{body}: {text}");
        assert!(text.contains(want), "{body}: {text} lacks {want:?}");
        assert_eq!(get_faults(&peer), good, "{body} changed the settings");
    }

    put_faults(&peer, &json!({}));
    assert_eq!(
        get_faults(&peer),
        json!({"drop": [], "loss": 0.0, "delay_ms": 0, "clock_offset_ms": 0, "full_disk": false})
    );
}

#[test]
fn partition_declares_each_side_dead_and_heal_brings_all_back() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let peers = faulty_cluster(dir.path());
    let (a, b, c) = (&peers[0], &peers[1], &peers[2]);

    put_faults(
        c,
        &json!({"drop": [a.addr.to_string(), b.addr.to_string()]}),
    );
    for side in [a, b] {
        put_faults(side, &json!({"drop": [c.addr.to_string()]}));
    }
    let took = wait_for(CONVERGE, "each side holds the other dead", || {
        sees(a, &[c], "dead") && sees(b, &[c], "dead") && sees(c, &[a, b], "dead")
    });
    eprintln!("partition detected after {took:?}");
    // The majority side keeps each other: a late probe may make one
    // suspect the other for a moment, but never dead.
    wait_for(CONVERGE, "the two on one side see each other alive", || {
        for (viewer, other) in [(a, b), (b, a)] {
            assert!(
                !sees(viewer, &[other], "dead"),
                "{} holds {} dead across no partition",
                viewer.name,
                other.name
            );
        }
        sees(a, &[a, b], "alive") && sees(b, &[a, b], "alive")
    });
    assert!(
        metric(
            c,
            r#"ringkv_fault_datagrams_dropped_total{reason="partition",direction="out"}"#
        ) > 0.0
    );
    // Both sides drop on send, so little reaches the other side's receive
    // filter (the unit tests cover that one): count the sends.
    assert!(
        metric(
            a,
            r#"ringkv_fault_datagrams_dropped_total{reason="partition",direction="out"}"#
        ) > 0.0
    );

    for p in &peers {
        put_faults(p, &json!({}));
    }
    let took = wait_for(CONVERGE, "all see all alive after the heal", || {
        all_see_all_alive(&peers)
    });
    eprintln!("healed after {took:?}");
}

#[test]
fn total_loss_isolates_a_peer_until_healed() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let peers = faulty_cluster(dir.path());
    let (a, b, c) = (&peers[0], &peers[1], &peers[2]);

    put_faults(c, &json!({"loss": 1.0}));
    let took = wait_for(CONVERGE, "the lossy peer and the others part", || {
        sees(a, &[c], "dead") && sees(b, &[c], "dead") && sees(c, &[a, b], "dead")
    });
    eprintln!("isolated after {took:?}");
    assert!(
        metric(
            c,
            r#"ringkv_fault_datagrams_dropped_total{reason="loss",direction="in"}"#
        ) > 0.0
    );

    put_faults(c, &json!({}));
    wait_for(CONVERGE, "all see all alive after the heal", || {
        all_see_all_alive(&peers)
    });
}

#[test]
fn delay_slows_requests_through_the_delayed_peer() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let peers = faulty_cluster(dir.path());
    let c = &peers[2];
    let key = c.key();
    // A put through `peer`, tried until one succeeds (puts of one value are
    // idempotent; a loaded machine may time one out through the delayed
    // peer): how long the successful attempt took.
    let put = |peer: &Peer, k: &str| {
        let mut took = Duration::ZERO;
        wait_ok(
            Duration::from_secs(30),
            &format!("a put through {} succeeds", peer.name),
            || {
                let start = Instant::now();
                let out = Command::new(BIN)
                    .args(["put", k, "v", "--peer", &peer.addr.to_string()])
                    .args(["--cluster-key", &key])
                    .output()
                    .expect("ringkv runs");
                took = start.elapsed();
                if out.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).into_owned())
                }
            },
        );
        took
    };
    // Warm: the first request may pay for connections between peers.
    put(c, "warm");

    let delay = Duration::from_millis(300);
    put_faults(c, &json!({"delay_ms": 300}));
    // A client's handshake with the delayed peer needs at least one of its
    // datagrams, so no request through it can finish sooner.
    let took = put(c, "slow");
    eprintln!("the successful put through the delayed peer took {took:?}");
    assert!(took >= delay, "took {took:?}, less than the delay");
    assert!(metric(c, "ringkv_fault_datagrams_delayed_total") > 0.0);

    put_faults(c, &json!({}));
    wait_for(CONVERGE, "all see all alive with the delay gone", || {
        all_see_all_alive(&peers)
    });
}
