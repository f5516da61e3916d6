//! Real-time order of writes through in-process peers: a write acknowledged
//! after another must win over it, whatever the versions' clocks said.

use std::path::Path;
use std::time::{Duration, Instant};

use ringkv_gossip::ClusterKey;
use ringkv_storage::{Clock, Hlc, Record};

use crate::config::Settings;
use crate::daemon::{self, Listeners, Peer};
use crate::rpc::api::{ApplyReply, Consistency, GetReply, OwnersReply, PutReply, Request};
use crate::rpc::client;
use crate::shared::wall_ms;

const WAIT: Duration = Duration::from_secs(30);
const CALL: Duration = Duration::from_secs(5);

fn settings(dir: &Path, name: &str, seed: Option<&Peer>) -> Settings {
    let data = dir.join(name).display().to_string();
    let mut flags: Vec<String> = ["--data", &data, "--listen", "127.0.0.1:0", "--name", name]
        .iter()
        .map(ToString::to_string)
        .collect();
    flags.extend(["--settle", "200ms"].map(String::from));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_acknowledged_after_a_future_stamped_one_wins_over_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p1 = daemon::start(settings(dir.path(), "p1", None), Listeners::default())
        .await
        .expect("p1 starts");
    let mut peers = vec![];
    for name in ["p2", "p3", "p4"] {
        let s = settings(dir.path(), name, Some(&p1));
        peers.push(
            daemon::start(s, Listeners::default())
                .await
                .expect("starts"),
        );
    }
    peers.insert(0, p1);
    let text = std::fs::read_to_string(dir.path().join("p1").join("cluster.key")).expect("key");
    let key = ClusterKey::parse(text.trim()).expect("a cluster key");
    let put = |k: &[u8], value: &[u8]| Request::Put {
        key: k.to_vec(),
        value: Some(value.to_vec()),
        consistency: Consistency::Quorum,
    };

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

    // A key that p4 does not replicate, so that p4, coordinating the
    // later write, has seen nothing of the fast clock (a replica's clock
    // observes every version it is sent).
    let coordinator = &peers[3];
    let mut chosen = None;
    for i in 0..64 {
        let k = format!("k{i}").into_bytes();
        let owners: OwnersReply = client::request(
            coordinator.addrs().quic,
            &key,
            &Request::Owners { key: k.clone() },
            CALL,
        )
        .await
        .expect("owners");
        if owners.replicas.iter().all(|r| r.name != "p4") {
            chosen = Some((k, owners));
            break;
        }
    }
    let (k, owners) = chosen.expect("some key of 64 is not on p4");
    let replicas: Vec<&Peer> = peers
        .iter()
        .filter(|p| owners.replicas.iter().any(|r| r.name == p.addrs().name))
        .collect();
    assert_eq!(replicas.len(), 3, "{owners:?}");

    // A write stamped an hour ahead (a coordinator whose clock ran fast)
    // lands on every replica of the key.
    let mut fast = Clock::new(peers[0].addrs().id, 1, Hlc::default());
    let ahead = Record::put(
        b"from the future".to_vec(),
        fast.tick(wall_ms() + 3_600_000),
    );
    for p in &replicas {
        let apply = Request::ReplicaApply {
            key: k.clone(),
            record: ahead.clone(),
        };
        let reply: ApplyReply = client::request(p.addrs().quic, &key, &apply, CALL)
            .await
            .expect("the replica answers");
        assert_eq!(reply, ApplyReply::Applied);
    }

    // A later write through a correct peer is acknowledged, so it must be
    // what a quorum read returns.
    let stored: PutReply =
        client::request(coordinator.addrs().quic, &key, &put(&k, b"later"), CALL)
            .await
            .expect("the later put is acknowledged");
    let get = Request::Get {
        key: k.clone(),
        consistency: Consistency::Quorum,
    };
    let read: GetReply = client::request(peers[2].addrs().quic, &key, &get, CALL)
        .await
        .expect("the get answers");
    assert_eq!(
        read.value.as_deref(),
        Some(&b"later"[..]),
        "acknowledged {stored:?}, but the read returned {:?} at {:?}",
        read.value.as_deref().map(String::from_utf8_lossy),
        read.version
    );
    for p in peers {
        let stopped = tokio::time::timeout(WAIT, p.shutdown(std::future::pending()))
            .await
            .expect("the peer stops in time");
        assert!(stopped.unfinished.is_empty(), "{:?}", stopped.unfinished);
    }
}
