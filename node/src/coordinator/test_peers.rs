//! In-process test peers for the coordinator's tests: a cluster of n
//! peers on loopback with ephemeral ports, admin HTTP and the fault
//! switch, and the requests the tests send.

use std::path::Path;
use std::time::{Duration, Instant};

use ringkv_gossip::ClusterKey;

use crate::config::Settings;
use crate::daemon::{self, Listeners, Peer};
use crate::rpc::api::{Consistency, OwnersReply, PutReply, Request};
use crate::rpc::client;

pub(super) const WAIT: Duration = Duration::from_secs(30);
pub(super) const CALL: Duration = Duration::from_secs(5);

pub(super) fn settings(dir: &Path, name: &str, seed: Option<&Peer>, extra: &[&str]) -> Settings {
    let data = dir.join(name).display().to_string();
    let mut flags: Vec<String> = ["--data", &data, "--listen", "127.0.0.1:0", "--name", name]
        .iter()
        .map(ToString::to_string)
        .collect();
    // A short settle, unless the test asks for its own.
    if !extra.contains(&"--settle") {
        flags.extend(["--settle", "200ms"].map(String::from));
    }
    flags.extend(["--admin", "127.0.0.1:0", "--testbed-faults"].map(String::from));
    flags.extend(extra.iter().map(ToString::to_string));
    if let Some(seed) = seed {
        let key = dir.join(&seed.addrs().name).join("cluster.key");
        flags.extend([
            "--join".to_owned(),
            seed.addrs().quic.to_string(),
            "--cluster-key-file".to_owned(),
            key.display().to_string(),
        ]);
    }
    Settings::from_flags(flags).expect("settings")
}

/// `n` in-process peers (p1 to pn) started with `extra` flags, joined and
/// answering quorum puts, and the key of the cluster.
pub(super) async fn cluster(dir: &Path, n: usize, extra: &[&str]) -> (Vec<Peer>, ClusterKey) {
    let p1 = daemon::start(settings(dir, "p1", None, extra), Listeners::default())
        .await
        .expect("p1 starts");
    let mut peers = vec![];
    for i in 2..=n {
        let s = settings(dir, &format!("p{i}"), Some(&p1), extra);
        peers.push(
            daemon::start(s, Listeners::default())
                .await
                .expect("starts"),
        );
    }
    peers.insert(0, p1);
    let text = std::fs::read_to_string(dir.join("p1").join("cluster.key")).expect("key");
    let key = ClusterKey::parse(text.trim()).expect("a cluster key");
    // Until the three have joined and announced their ring, a put may fail.
    let deadline = Instant::now() + WAIT;
    while client::request::<PutReply>(peers[0].addrs().quic, &key, &put(b"k", b"first"), CALL)
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "no put succeeded within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (peers, key)
}

pub(super) fn put(k: &[u8], value: &[u8]) -> Request {
    Request::Put {
        key: k.to_vec(),
        value: Some(value.to_vec()),
        consistency: Consistency::Quorum,
    }
}

pub(super) fn get(k: &[u8]) -> Request {
    Request::Get {
        key: k.to_vec(),
        consistency: Consistency::Quorum,
    }
}

/// How long a test's teardown lets a peer hand its ranges over before it
/// leaves anyway (the second signal). Teardown is not the test: a leave
/// that waits for the others to pull its ranges took more than the whole
/// `WAIT` on a loaded CI machine, one peer after the other.
const TEARDOWN_HANDOFF: Duration = Duration::from_secs(5);

/// Stops every peer, all at once.
pub(super) async fn stop(peers: Vec<Peer>) {
    let mut stopping = tokio::task::JoinSet::new();
    for p in peers {
        stopping.spawn(async move {
            let name = p.addrs().name.clone();
            let hurry = tokio::time::sleep(TEARDOWN_HANDOFF);
            let stopped = tokio::time::timeout(WAIT, p.shutdown(hurry)).await;
            (name, stopped)
        });
    }
    while let Some(joined) = stopping.join_next().await {
        let (name, stopped) = joined.expect("joined");
        let stopped = stopped.unwrap_or_else(|_| panic!("{name} stops in time"));
        assert!(
            stopped.unfinished.is_empty(),
            "{name}: {:?}",
            stopped.unfinished
        );
    }
}

/// Sets `peer`'s wall-clock offset through its fault switch.
pub(super) async fn skew(peer: &Peer, offset_ms: i64) {
    faults(peer, format!(r#"{{"clock_offset_ms": {offset_ms}}}"#)).await;
}

/// Replaces `peer`'s fault settings (`PUT /v1/faults` with `body`).
pub(super) async fn faults(peer: &Peer, body: String) {
    let admin = peer.addrs().admin.expect("admin HTTP");
    let (status, text) = tokio::task::spawn_blocking(move || {
        ringkv_testbed::http::request(admin, "PUT", "/v1/faults", Some(&body))
    })
    .await
    .expect("joined")
    .expect("the admin HTTP answers");
    assert_eq!(status, 200, "{text}");
}

pub(super) async fn health(peer: &Peer) -> (u16, String) {
    let admin = peer.addrs().admin.expect("admin HTTP");
    tokio::task::spawn_blocking(move || {
        ringkv_testbed::http::request(admin, "GET", "/health", None)
    })
    .await
    .expect("joined")
    .expect("the admin HTTP answers")
}

/// Whether `peer`'s ring still gives `name` any of 32 keys.
pub(super) async fn in_ring(peer: &Peer, key: &ClusterKey, name: &str) -> bool {
    for i in 0..32 {
        let owners: OwnersReply = client::request(
            peer.addrs().quic,
            key,
            &Request::Owners {
                key: format!("o{i}").into_bytes(),
            },
            CALL,
        )
        .await
        .expect("owners");
        if owners.replicas.iter().any(|r| r.name == name) {
            return true;
        }
    }
    false
}
