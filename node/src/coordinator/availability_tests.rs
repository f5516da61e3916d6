//! Availability through a failure: with one of five peers dead, quorum
//! reads and writes keep succeeding, before the dead grace (the dead peer
//! is still a replica) and after it (the ring drops it, and only the ranges
//! that moved are being received).

use std::time::{Duration, Instant};

use ringkv_gossip::ClusterKey;

use super::test_peers::{cluster, faults, get, in_ring, put, stop, CALL};
use crate::daemon::Peer;
use crate::rpc::api::{GetReply, HandoffReply, PutReply, Request};
use crate::rpc::client;

/// Puts a fresh key through one live peer and reads it back through
/// another; returns what failed.
async fn round(peers: &[&Peer], key: &ClusterKey, i: usize) -> Vec<String> {
    let k = format!("a{i}").into_bytes();
    let (writer, reader) = (peers[i % peers.len()], peers[(i + 1) % peers.len()]);
    let mut failed = Vec::new();
    let v = format!("v{i}");
    if let Err(e) =
        client::request::<PutReply>(writer.addrs().quic, key, &put(&k, v.as_bytes()), CALL).await
    {
        failed.push(format!("put a{i} via {}: {e:#}", writer.addrs().name));
        return failed;
    }
    match client::request::<GetReply>(reader.addrs().quic, key, &get(&k), CALL).await {
        Ok(read) if read.value.as_deref() == Some(v.as_bytes()) => {}
        Ok(read) => failed.push(format!("get a{i} via {}: {read:?}", reader.addrs().name)),
        Err(e) => failed.push(format!("get a{i} via {}: {e:#}", reader.addrs().name)),
    }
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dead_peer_of_five_costs_no_quorum_operation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (peers, key) = cluster(dir.path(), 5, &["--dead-grace", "3s"]).await;
    let victim = &peers[4];
    let live: Vec<&Peer> = peers[..4].iter().collect();
    let mut failed = Vec::new();
    let mut i = 0;
    // Every peer holds its ranges before the failure (a new cluster's
    // first seconds are another matter: see docs/consistency.md).
    let deadline = Instant::now() + Duration::from_secs(60);
    for p in &peers {
        loop {
            let h: HandoffReply = client::request(p.addrs().quic, &key, &Request::Handoff, CALL)
                .await
                .expect("handoff report");
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
    while i < 20 || !failed.is_empty() {
        failed = round(&live, &key, i).await;
        i += 1;
        assert!(Instant::now() < deadline, "never settled: {failed:?}");
    }

    // The victim is cut off from everyone (a dead peer, to the others).
    let others: Vec<String> = live
        .iter()
        .map(|p| format!("{:?}", p.addrs().quic.to_string()))
        .collect();
    faults(victim, format!(r#"{{"drop": [{}]}}"#, others.join(","))).await;
    let cut = Instant::now();
    let name = victim.addrs().name.clone();
    let deadline = cut + Duration::from_secs(90);
    let mut dropped_at = None;
    let mut ops = 0;
    loop {
        failed.extend(round(&live, &key, i).await);
        i += 1;
        ops += 1;
        if dropped_at.is_none() && !in_ring(live[0], &key, &name).await {
            dropped_at = Some(Instant::now());
        }
        // Go on for a while after the ring dropped it: the ranges that
        // moved are being received meanwhile.
        if dropped_at.is_some_and(|at| at.elapsed() > Duration::from_secs(6)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ring never dropped the dead peer"
        );
    }
    assert!(
        failed.is_empty(),
        "{} of {ops} rounds failed with one peer of five dead (ring dropped it {:?} after the cut):\n{}",
        failed.len(),
        dropped_at.map(|at| at - cut),
        failed.join("\n")
    );
    stop(peers).await;
}
