//! Real `ringkv node` processes on 127.0.0.1 with ephemeral ports and
//! temporary data dirs: joining, failure detection, graceful leave, restart,
//! authentication and garbage input. Every wait is a bounded poll; every
//! process is killed when its handle drops.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

#[test]
fn five_peers_joined_through_one_seed_agree_on_members_and_ring() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (peers, key) = cluster(dir.path(), 5, &[]);
    let refs: Vec<&Peer> = peers.iter().collect();
    wait_for(
        CONVERGE,
        "all five peers list five alive members and one ring digest",
        || all_alive_and_agree(&refs, &key, 5),
    );
}

#[test]
fn killed_peer_is_declared_dead_leaves_the_ring_and_rejoins_after_restart() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (mut peers, key) = converged_cluster(dir.path(), 4, &["--dead-grace", "2s"]);

    let victim = peers.pop().unwrap();
    let (name, data) = (victim.name.clone(), victim.data.clone());
    // Its announcements (ready, refutations) bump its incarnation too: the
    // restarted peer must come back above anything seen of it.
    let known = peers
        .iter()
        .chain([&victim])
        .filter_map(|p| members(p.addr, &key).and_then(|v| state_of(&v, &name)))
        .map(|(_, incarnation)| incarnation)
        .max()
        .expect("the peers list the victim");
    victim.signal("-KILL");
    drop(victim);
    let took = wait_for(CONVERGE, "the others mark the killed peer dead", || {
        peers.iter().all(|p| {
            members(p.addr, &key)
                .and_then(|v| state_of(&v, &name))
                .is_some_and(|(s, _)| s == "dead")
        })
    });
    eprintln!("dead everywhere after {took:?}");
    wait_for(
        Duration::from_secs(30),
        "the ring drops the dead peer after the grace",
        || {
            peers.iter().all(|p| {
                members(p.addr, &key).is_some_and(|v| {
                    v["members"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|m| m["name"] == name.as_str() && m["ownership"].is_null())
                })
            })
        },
    );

    // Restarted from its data dir: no flags needed, a higher incarnation.
    let back = Peer::start_in(data, &name, "127.0.0.1:0", &[]);
    wait_for(
        CONVERGE,
        &format!("the restarted peer is alive again with an incarnation above {known}"),
        || {
            peers.iter().all(|p| {
                members(p.addr, &key)
                    .and_then(|v| state_of(&v, &name))
                    .is_some_and(|(s, incarnation)| s == "alive" && incarnation > known)
            })
        },
    );
    drop(back);
}

#[test]
fn sigterm_makes_a_peer_leave_not_die() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (mut peers, key) = converged_cluster(dir.path(), 3, &[]);
    let mut leaver = peers.pop().unwrap();
    let name = leaver.name.clone();
    leaver.signal("-TERM");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = leaver.child.try_wait().unwrap() {
            break status;
        }
        // A graceful leave hands its ranges over first (the testbed
        // allows 90 s too).
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the peer did not exit within 90 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "a graceful leave exits 0, got {status}");
    wait_for(
        Duration::from_secs(30),
        "the others list the peer as left",
        || {
            peers.iter().all(|p| {
                let state = members(p.addr, &key).and_then(|v| state_of(&v, &name));
                assert_ne!(
                    state.as_ref().map(|(s, _)| s.as_str()),
                    Some("dead"),
                    "{} holds the leaver dead",
                    p.name
                );
                state.is_some_and(|(s, _)| s == "left")
            })
        },
    );
    // And it never shows as dead.
    for p in &peers {
        let (state, _) = members(p.addr, &key)
            .and_then(|v| state_of(&v, &name))
            .unwrap();
        assert_eq!(state, "left");
    }
}

#[test]
fn a_peer_with_another_key_never_joins_and_a_client_without_the_key_is_refused() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (peers, key) = converged_cluster(dir.path(), 2, &[]);

    let other =
        String::from_utf8(Command::new(BIN).arg("keygen").output().unwrap().stdout).unwrap();
    let other = other.trim();
    assert_ne!(other, key);
    let seed = peers[0].addr.to_string();
    let intruder = Peer::start(
        dir.path(),
        "intruder",
        &["--join", &seed, "--cluster-key", other],
    );
    std::thread::sleep(Duration::from_secs(4));
    for p in &peers {
        let view = members(p.addr, &key).unwrap();
        assert!(
            state_of(&view, "intruder").is_none(),
            "the intruder got into a view: {view}"
        );
    }
    let out = Command::new(BIN)
        .args(["members", "--peer", &seed, "--cluster-key", other])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a client with the wrong key was answered"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused") && err.contains("cluster-key"),
        "unclear error: {err}"
    );
    drop(intruder);
}

#[test]
fn garbage_datagrams_neither_crash_a_peer_nor_change_its_view() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (peers, key) = converged_cluster(dir.path(), 2, &[]);
    let before = members(peers[0].addr, &key).unwrap();

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..2000usize {
        let len = 1 + (i * 37) % 1400;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = socket.send_to(&bytes, peers[0].addr);
        if i % 100 == 99 {
            // Paced, so the garbage does not also overflow the socket's
            // receive buffer and drop real probes: loss is another test.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = members(peers[0].addr, &key).expect("the peer still answers");
    assert_eq!(
        member_names(&before),
        member_names(&after),
        "garbage changed the members"
    );
    let refs: Vec<&Peer> = peers.iter().collect();
    agree_again_with_nobody_dead(&refs, &key);
}

/// The member names of a view, sorted.
fn member_names(view: &Value) -> Vec<String> {
    let mut names: Vec<String> = view["members"]
        .as_array()
        .expect("a members list")
        .iter()
        .map(|m| m["name"].to_string())
        .collect();
    names.sort();
    names
}

/// After garbage: waits until the peers agree again, and fails at once if
/// any shows a member dead. On a loaded 2-core machine a probe can be late
/// and a suspicion refuted (a new incarnation, so the view digest moves):
/// that is SWIM working. What garbage must never do is get a live peer
/// declared dead, or leave the peers disagreeing.
fn agree_again_with_nobody_dead(peers: &[&Peer], key: &str) {
    wait_for(CONVERGE, "the peers agree again", || {
        for p in peers {
            if let Some(view) = members(p.addr, key) {
                let dead = view["members"]
                    .as_array()
                    .is_some_and(|ms| ms.iter().any(|m| m["state"] == "dead"));
                assert!(!dead, "garbage got a live peer declared dead: {view}");
            }
        }
        all_alive_and_agree(peers, key, peers.len())
    });
}

/// A plain HTTP/1.1 GET; returns the status code and the body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path, "")
}

#[test]
fn admin_http_serves_health_metrics_and_blocking_member_queries() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let seed = Peer::start(dir.path(), "p1", &["--admin", "127.0.0.1:0"]);
    let key = seed.key();
    let admin = seed.admin.unwrap();
    wait_for(Duration::from_secs(30), "/health says ok", || {
        http_get(admin, "/health").0 == 200
    });
    let (_, body) = http_get(admin, "/v1/members");
    let view: Value = serde_json::from_str(&body).unwrap();
    let index = view["index"].as_u64().unwrap();

    // A blocking query returns as soon as the view changes past `index`.
    // The seed's own changes (its ready announcement) may come before the
    // join: ask again from each answer's index until the view has p2.
    let waiter = std::thread::spawn(move || {
        let limit = Duration::from_secs(30);
        let start = Instant::now();
        let mut index = index;
        loop {
            let (code, body) = http_get(admin, &format!("/v1/members?index={index}&wait=30s"));
            assert_eq!(code, 200, "a blocking query after index {index}: {body}");
            let view: Value = serde_json::from_str(&body).unwrap();
            let next = view["index"].as_u64().unwrap();
            assert!(
                next > index,
                "a blocking query after index {index} answered index {next}: {view}"
            );
            assert!(
                start.elapsed() < limit,
                "the view has no p2 after {limit:?} of blocking queries: {view}"
            );
            if state_of(&view, "p2").is_some() {
                return start.elapsed();
            }
            index = next;
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let join = seed.addr.to_string();
    let second = Peer::start(dir.path(), "p2", &["--join", &join, "--cluster-key", &key]);
    let took = waiter.join().expect("the blocking queries saw the join");
    eprintln!("blocking queries saw the join after {took:?}");

    // The join reaches the metrics and the ring soon after the view.
    let mut text = String::new();
    wait_for(
        Duration::from_secs(20),
        "/metrics counts two alive members and /v1/ring has two nodes",
        || {
            let (code, metrics) = http_get(admin, "/metrics");
            assert_eq!(code, 200);
            text = metrics;
            let (code, ring) = http_get(admin, "/v1/ring");
            assert_eq!(code, 200);
            let nodes = serde_json::from_str::<Value>(&ring).unwrap()["nodes"]
                .as_array()
                .map_or(0, Vec::len);
            text.contains("ringkv_members{state=\"alive\"} 2") && nodes == 2
        },
    );
    assert!(text.contains("ringkv_ring_rebuilds_total"), "{text}");
    assert!(text.contains("ringkv_handoff_transfers_active"), "{text}");
    assert!(text.contains("ringkv_anti_entropy_repairs_total"), "{text}");
    let (code, _) = http_get(admin, "/v1/members?index=0&wait=forever");
    assert_eq!(code, 400, "a bad wait is refused");
    drop(second);
}

#[test]
fn garbage_on_authenticated_streams_changes_nothing() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (peers, key) = converged_cluster(dir.path(), 2, &[]);
    let before = members(peers[0].addr, &key).unwrap();
    let target = peers[0].addr;
    let cluster_key = ringkv_gossip::ClusterKey::parse(&key).unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = runtime.block_on(async move {
        let me = ringkv_gossip::NodeIdentity::generate().unwrap();
        let config = ringkv_gossip::transport::tls::client_config(&cluster_key, &me).unwrap();
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let connecting = endpoint
            .connect_with(config, target, ringkv_gossip::transport::tls::SERVER_NAME)
            .unwrap();
        let conn = tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .expect("connects in time")
            .expect("the key is right");
        let junk: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        // A gossip stream, datagrams and a client request, all garbage.
        let mut uni = conn.open_uni().await.unwrap();
        uni.write_all(&junk).await.unwrap();
        uni.finish().unwrap();
        for chunk in junk.chunks(900).take(20) {
            let _ = conn.send_datagram(chunk.to_vec().into());
        }
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&junk[..1000]).await.unwrap();
        send.finish().unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20)).await;
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        answer
            .expect("the peer answers in time")
            .expect("the stream completes")
    });
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.contains("bad request"),
        "a garbage request gets an error answer: {answer}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let after = members(peers[0].addr, &key).expect("the peer still answers");
    assert_eq!(
        member_names(&before),
        member_names(&after),
        "garbage changed the members"
    );
    let refs: Vec<&Peer> = peers.iter().collect();
    agree_again_with_nobody_dead(&refs, &key);
}
