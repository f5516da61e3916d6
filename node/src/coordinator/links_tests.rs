//! One connection per pair of peers (issue 15, item 6): gossip and
//! replica requests share it, whichever side dialled it, so an idle peer
//! of n holds n - 1 connections. Before, each peer kept a gossip
//! connection and a replica-pool connection to every other, each way, and
//! the dialer's keep-alives kept every superseded one open for ever.

use std::time::{Duration, Instant};

use super::test_peers::{cluster, get, put, stop, CALL};
use crate::daemon::Peer;
use crate::rpc::api::{GetReply, PutReply};
use crate::rpc::client::Client;

/// Longer than the 30 s idle timeout that ends a duplicate made by two
/// peers dialling each other at once.
const SETTLE: Duration = Duration::from_secs(45);

/// QUIC connections open on each peer's endpoint, as its runner last
/// counted them.
fn connections(peers: &[Peer]) -> Vec<u64> {
    peers
        .iter()
        .map(|p| {
            p.transport()
                .open_connections
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_under_load_keep_one_connection_per_pair() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (peers, key) = cluster(dir.path(), 3, &[]).await;
    let n = peers.len() as u64;
    // One client connection to each peer for the whole test (a client
    // per call would leave closing connections counted for a while): each
    // peer should hold n - 1 links and this one.
    let clients: Vec<Client> = peers
        .iter()
        .map(|p| Client::for_cluster(&key, p.addrs().quic).expect("a client"))
        .collect();
    let want = n;
    // Quorum puts and gets through every peer, so each sends replica
    // requests to both others, all the while: a pool that dials its own
    // connections keeps them busy, and the count never comes down.
    let deadline = Instant::now() + SETTLE;
    let mut i = 0usize;
    let counts = loop {
        for (p, c) in peers.iter().zip(&clients) {
            let k = format!("c{i}").into_bytes();
            let v = format!("v{i}");
            let addr = p.addrs().quic;
            c.call::<PutReply>(addr, &put(&k, v.as_bytes()), CALL)
                .await
                .expect("a put");
            let read: GetReply = c.call(addr, &get(&k), CALL).await.expect("a get");
            assert_eq!(read.value.as_deref(), Some(v.as_bytes()));
            i += 1;
        }
        let counts = connections(&peers);
        if counts.iter().all(|&c| c == want) || Instant::now() >= deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        counts.iter().all(|&c| c == want),
        "after {i} puts and gets within {SETTLE:?}, connections per peer: {counts:?} \
         (want {want} each: one per other peer, and the test's client)"
    );
    for c in &clients {
        c.close();
    }
    stop(peers).await;
}
