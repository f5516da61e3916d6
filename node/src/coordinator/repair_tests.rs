//! `ringkv repair`: with anti-entropy off, records one replica alone holds
//! reach the repaired peer, and nowhere else; the run's progress is in the
//! handoff report; narrowing to one key covers one range; client
//! credentials are refused.

use std::time::{Duration, Instant};

use ringkv_storage::{Clock, Hlc, Record};

use super::real_time_tests::apply;
use super::test_peers::{cluster, stop, CALL, WAIT};
use crate::daemon::Peer;
use crate::keyargs::{wall_secs, Access};
use crate::rpc::api::{HandoffReply, ReadAnswer, RepairRow, Request, RequestError};
use crate::rpc::client;
use crate::wall::WallClock;
use ringkv_gossip::transport::credentials::ClientCredentials;
use ringkv_gossip::ClusterKey;

async fn held(p: &Peer, key: &ClusterKey, k: &[u8]) -> Option<Record> {
    let answer: ReadAnswer = client::request(
        p.addrs().quic,
        key,
        &Request::ReplicaRead { key: k.to_vec() },
        CALL,
    )
    .await
    .expect("the replica answers");
    match answer {
        ReadAnswer::Held(r) | ReadAnswer::NotHeld(r) => r,
    }
}

async fn report(p: &Peer, key: &ClusterKey) -> HandoffReply {
    client::request(p.addrs().quic, key, &Request::Handoff, CALL)
        .await
        .expect("handoff report")
}

/// Starts a repair on `p` (retrying while it still receives its ranges)
/// and waits for its end.
async fn repair(p: &Peer, key: &ClusterKey, req: &Request) -> RepairRow {
    let deadline = Instant::now() + WAIT;
    let started: RepairRow = loop {
        match client::request(p.addrs().quic, key, req, CALL).await {
            Ok(row) => break row,
            Err(e) => {
                assert!(
                    format!("{e:#}").contains("still receiving") && Instant::now() < deadline,
                    "{e:#}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(started.running && started.ranges_total > 0, "{started:?}");
    loop {
        let row = report(p, key).await.repair.expect("a repair is reported");
        if !row.running {
            return row;
        }
        assert!(Instant::now() < deadline, "the repair never ended: {row:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_pulls_what_only_another_replica_holds_and_reports_its_progress() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (peers, key) = cluster(dir.path(), 3, &["--anti-entropy-interval", "0s"]).await;
    // Every peer holds its ranges first: a peer still receiving serves
    // none, and a joiner's pull would copy the records written below.
    let deadline = Instant::now() + WAIT;
    for p in &peers {
        loop {
            let h = report(p, &key).await;
            if h.ring.is_some() && h.ring == h.ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never held its ranges",
                p.addrs().name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Three peers, three replicas: every key is on every peer. Records
    // written to p1 alone, as by a coordinator that died after one write.
    let mut clock = Clock::new(peers[0].addrs().id, 1, Hlc::default());
    let mut written = Vec::new();
    for i in 0..20 {
        let k = format!("lone{i}").into_bytes();
        let record = Record::put(
            b"only on p1".to_vec(),
            clock.tick(WallClock::system().now_ms()),
        );
        apply(&peers[0], &key, &k, &record).await;
        written.push((k, record));
    }
    for (k, _) in &written {
        assert_eq!(held(&peers[1], &key, k).await, None);
    }
    // Narrowed to one key: one range.
    let one = repair(
        &peers[1],
        &key,
        &Request::Repair {
            range: None,
            key: Some(written[0].0.clone()),
        },
    )
    .await;
    assert_eq!(one.ranges_total, 1, "{one:?}");
    assert!(one.records >= 1, "{one:?}");
    assert_eq!(one.failed, 0, "{one:?}");
    assert_eq!(
        held(&peers[1], &key, &written[0].0)
            .await
            .map(|r| r.version),
        Some(written[0].1.version)
    );

    // The whole peer.
    let all = repair(
        &peers[1],
        &key,
        &Request::Repair {
            range: None,
            key: None,
        },
    )
    .await;
    assert_eq!(all.ranges_done, all.ranges_total, "{all:?}");
    assert_eq!(all.failed, 0, "{all:?}");
    assert_eq!(
        one.records + all.records,
        20,
        "every lone record was pulled once: {one:?} {all:?}"
    );
    assert!(
        all.differed > 0 && all.compared >= all.ranges_total,
        "{all:?}"
    );
    for (k, record) in &written {
        assert_eq!(
            held(&peers[1], &key, k).await.map(|r| r.version),
            Some(record.version),
            "p2 holds it after its repair"
        );
        assert_eq!(held(&peers[2], &key, k).await, None, "p3 was not repaired");
    }

    // Client credentials may not start one.
    let now = wall_secs();
    let creds = Access::Client(
        ClientCredentials::issue(&key, "app", now - 60, now + 3600).expect("issued"),
    );
    let e = client::request::<RepairRow>(
        peers[2].addrs().quic,
        &creds,
        &Request::Repair {
            range: None,
            key: None,
        },
        CALL,
    )
    .await
    .expect_err("a client");
    assert_eq!(
        RequestError::kind_of(&e),
        crate::rpc::api::ErrorKind::Refused,
        "{e:#}"
    );
    assert!(report(&peers[2], &key).await.repair.is_none());
    stop(peers).await;
}
