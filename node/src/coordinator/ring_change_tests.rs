//! A put whose first phase outlasts a ring change: it is sent to the
//! replicas of the ring current when it is acknowledged, not of the ring
//! it began under. (Found by the readdress scenario: puts that waited out
//! a killed replica for 2 s landed on the old ring's replicas after a
//! joiner was already in the ring.)

use std::time::{Duration, Instant};

use super::test_peers::{cluster, faults, settings, stop, CALL};
use crate::daemon::{self, Listeners};
use crate::rpc::api::{OwnersReply, PutReply, Request, VersionsReply};
use crate::rpc::client;
use ringkv_ring::{Token, TokenRange};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_that_outlasts_a_join_reaches_the_joiner() {
    let dir = tempfile::tempdir().expect("temp dir");
    // No handoff and no anti-entropy: the joiner gets only what puts send it.
    let flags = [
        "--settle",
        "1h",
        "--anti-entropy-interval",
        "0s",
        "--leave-timeout",
        "1s",
    ];
    let (mut peers, key) = cluster(dir.path(), 3, &flags).await;
    // p2 and p3 answer late, so p1's puts spend their first phase (the
    // newest version a quorum holds) waiting on them.
    for p in &peers[1..] {
        faults(p, r#"{"delay_ms": 800}"#.to_owned()).await;
    }
    let p1 = peers[0].addrs().quic;
    let keys: Vec<Vec<u8>> = (0..12).map(|i| format!("rc{i}").into_bytes()).collect();
    let mut puts = tokio::task::JoinSet::new();
    for k in keys.clone() {
        let key = key.clone();
        puts.spawn(async move {
            let req = super::test_peers::put(&k, b"v");
            client::request::<PutReply>(p1, &key, &req, Duration::from_secs(10)).await
        });
    }
    // Meanwhile p4 joins through p1: its ring has p4 well before the
    // answers come back (0.8 s; more would near the replicas' request
    // timeout on a loaded machine).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let p4 = daemon::start(
        settings(dir.path(), "p4", Some(&peers[0]), &flags),
        Listeners::default(),
    )
    .await
    .expect("p4 starts");
    while let Some(done) = puts.join_next().await {
        done.expect("joined").expect("the put is acknowledged");
    }
    for p in &peers[1..] {
        faults(p, "{}".to_owned()).await;
    }
    let mut p4_replicates = 0;
    for k in &keys {
        let owners: OwnersReply =
            client::request(p1, &key, &Request::Owners { key: k.clone() }, CALL)
                .await
                .expect("owners");
        if !owners.replicas.iter().any(|r| r.name == "p4") {
            continue;
        }
        p4_replicates += 1;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let held: VersionsReply = client::request(
                p4.addrs().quic,
                &key,
                &Request::RangeVersions {
                    range: TokenRange::new(Token(0), Token(0)),
                    after: None,
                    max: 1000,
                    any: true,
                },
                CALL,
            )
            .await
            .expect("p4 lists its keys");
            if held.versions.iter().any(|(stored, _)| stored.ends_with(k)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "p4 replicates {} in the ring current when the put was acknowledged, but was never sent it",
                String::from_utf8_lossy(k)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(p4_replicates > 0, "p4 replicates none of the keys");
    peers.push(p4);
    stop(peers).await;
}
