//! Real-time order through in-process peers: a write acknowledged after
//! another must win over it, whatever the versions' clocks said, and a read
//! that starts after another read finished never returns an older value.

use std::time::{Duration, Instant};

use ringkv_gossip::ClusterKey;
use ringkv_storage::{Clock, Hlc, Record};

use super::test_peers::{cluster, get, health, put, skew, stop, CALL, WAIT};
use crate::daemon::Peer;
use crate::rpc::api::{ApplyReply, GetReply, OwnersReply, PutReply, Request};
use crate::rpc::client;
use crate::wall::WallClock;

/// A key that p4 does not replicate, and the indexes of its three
/// replicas: p4 coordinating it holds nothing of it and has seen none of
/// its versions (a replica's clock observes every version it is sent).
pub(super) async fn key_not_on_p4(peers: &[Peer], key: &ClusterKey) -> (Vec<u8>, Vec<usize>) {
    for i in 0..64 {
        let k = format!("k{i}").into_bytes();
        let owners: OwnersReply = client::request(
            peers[3].addrs().quic,
            key,
            &Request::Owners { key: k.clone() },
            CALL,
        )
        .await
        .expect("owners");
        if owners.replicas.iter().all(|r| r.name != "p4") {
            let replicas: Vec<usize> = (0..peers.len())
                .filter(|i| {
                    owners
                        .replicas
                        .iter()
                        .any(|r| r.name == peers[*i].addrs().name)
                })
                .collect();
            assert_eq!(replicas.len(), 3, "{owners:?}");
            return (k, replicas);
        }
    }
    panic!("every one of 64 keys is on p4");
}

pub(super) async fn apply(p: &Peer, key: &ClusterKey, k: &[u8], record: &Record) {
    let apply = Request::ReplicaApply {
        key: k.to_vec(),
        record: record.clone(),
    };
    let reply: ApplyReply = client::request(p.addrs().quic, key, &apply, CALL)
        .await
        .expect("the replica answers");
    assert_eq!(reply, ApplyReply::Applied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_acknowledged_after_a_future_stamped_one_wins_over_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (peers, key) = cluster(dir.path(), 4, &[]).await;
    let (k, replicas) = key_not_on_p4(&peers, &key).await;
    let coordinator = &peers[3];

    // A write stamped 400 ms ahead (a coordinator whose clock runs fast,
    // within the maximum offset) lands on every replica of the key.
    let mut fast = Clock::new(peers[0].addrs().id, 1, Hlc::default());
    let ahead = Record::put(
        b"from the future".to_vec(),
        fast.tick(WallClock::system().now_ms() + 400),
    );
    for i in &replicas {
        apply(&peers[*i], &key, &k, &ahead).await;
    }

    // A later write through a correct peer is acknowledged, so it must be
    // what a quorum read returns.
    let stored: PutReply =
        client::request(coordinator.addrs().quic, &key, &put(&k, b"later"), CALL)
            .await
            .expect("the later put is acknowledged");
    let read: GetReply = client::request(peers[2].addrs().quic, &key, &get(&k), CALL)
        .await
        .expect("the get answers");
    assert_eq!(
        read.value.as_deref(),
        Some(&b"later"[..]),
        "acknowledged {stored:?}, but the read returned {:?} at {:?}",
        read.value.as_deref().map(String::from_utf8_lossy),
        read.version
    );
    stop(peers).await;
}

/// A version stamped further ahead of a replica's clock than the maximum
/// offset is refused (a clock a year ahead would otherwise win every write
/// for a year), and the refusal is definite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refuses_a_version_beyond_the_maximum_offset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (peers, key) = cluster(dir.path(), 4, &[]).await;
    let (k, replicas) = key_not_on_p4(&peers, &key).await;
    let mut fast = Clock::new(peers[0].addrs().id, 1, Hlc::default());
    let ahead = Record::put(
        b"from a year ahead".to_vec(),
        fast.tick(WallClock::system().now_ms() + 365 * 86_400_000),
    );
    let apply = Request::ReplicaApply {
        key: k.clone(),
        record: ahead,
    };
    let refused =
        client::request::<ApplyReply>(peers[replicas[0]].addrs().quic, &key, &apply, CALL)
            .await
            .expect_err("refused");
    assert_eq!(
        crate::rpc::api::RequestError::kind_of(&refused),
        crate::rpc::api::ErrorKind::Refused,
        "{refused:#}"
    );
    assert!(
        format!("{refused:#}").contains("ahead of this replica's clock"),
        "{refused:#}"
    );
    let read: GetReply = client::request(peers[3].addrs().quic, &key, &get(&k), CALL)
        .await
        .expect("the get answers");
    assert_eq!(read.value, None, "nothing was written");
    stop(peers).await;
}

/// The ABD register's read half: a quorum read that returned a value held
/// by one replica only (a write that reached one replica before its
/// coordinator died) must first make a quorum hold it, or a later read,
/// once that replica is gone, returns the older value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_a_read_never_returns_an_older_value() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut peers, key) = cluster(dir.path(), 4, &[]).await;
    let (k, replicas) = key_not_on_p4(&peers, &key).await;
    let mut clock = Clock::new(peers[0].addrs().id, 1, Hlc::default());
    let partial = Record::put(
        b"partial".to_vec(),
        clock.tick(WallClock::system().now_ms()),
    );
    let lone = replicas[0];
    apply(&peers[lone], &key, &k, &partial).await;

    // Reads through p4 ask two of the three replicas at random; until one
    // asks the lone holder, they agree on nothing and return nothing.
    let deadline = Instant::now() + WAIT;
    loop {
        let read: GetReply = client::request(peers[3].addrs().quic, &key, &get(&k), CALL)
            .await
            .expect("the get answers");
        if read.value.as_deref() == Some(&b"partial"[..]) {
            break;
        }
        assert!(read.value.is_none(), "{read:?}");
        assert!(Instant::now() < deadline, "no read asked the lone holder");
    }
    // That read answered, so a quorum holds the value now.
    let mut holders = 0;
    for i in &replicas {
        let asked: crate::rpc::api::ReadAnswer = client::request(
            peers[*i].addrs().quic,
            &key,
            &Request::ReplicaRead { key: k.clone() },
            CALL,
        )
        .await
        .expect("the replica answers");
        let held = match asked {
            crate::rpc::api::ReadAnswer::Held(r) | crate::rpc::api::ReadAnswer::NotHeld(r) => r,
        };
        holders += usize::from(held.is_some_and(|r| r.version == partial.version));
    }
    assert!(
        holders >= 2,
        "the read returned a value {holders} replica(s) hold"
    );

    // The lone holder dies; a later read still returns the value.
    let gone = peers.remove(lone);
    tokio::time::timeout(WAIT, gone.shutdown(std::future::ready(())))
        .await
        .expect("the peer stops in time");
    let read: GetReply = client::request(peers[2].addrs().quic, &key, &get(&k), CALL)
        .await
        .expect("the get answers");
    assert_eq!(read.value.as_deref(), Some(&b"partial"[..]), "{read:?}");
    stop(peers).await;
}

/// Bounded clock offset: a peer whose clock runs 2 s ahead of the three
/// others stops coordinating writes (a definite error naming its offset)
/// and turns /health to 503, while the others go on; once its clock is
/// back, it coordinates again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_clock_is_off_coordinates_no_writes_until_it_is_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (peers, key) = cluster(dir.path(), 4, &[]).await;
    skew(&peers[0], 2_000).await;
    let deadline = Instant::now() + WAIT;
    let refused = loop {
        match client::request::<PutReply>(peers[0].addrs().quic, &key, &put(b"s", b"skewed"), CALL)
            .await
        {
            Err(e) if format!("{e:#}").contains("coordinates no writes") => break e,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the skewed peer still coordinates writes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        crate::rpc::api::RequestError::kind_of(&refused),
        crate::rpc::api::ErrorKind::Definite,
        "{refused:#}"
    );
    assert!(
        format!("{refused:#}").contains("ms from the median"),
        "{refused:#}"
    );
    let (status, body) = health(&peers[0]).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("beyond the maximum offset"), "{body}");
    // The others are within the bound of most peers they measured.
    for p in &peers[1..] {
        client::request::<PutReply>(p.addrs().quic, &key, &put(b"s", b"right"), CALL)
            .await
            .expect("a correct peer coordinates");
        let (status, body) = health(p).await;
        assert_eq!(status, 200, "{body}");
    }
    skew(&peers[0], 0).await;
    let deadline = Instant::now() + WAIT;
    while client::request::<PutReply>(peers[0].addrs().quic, &key, &put(b"s", b"back"), CALL)
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the peer never coordinated again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop(peers).await;
}
