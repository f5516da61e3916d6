//! A long absence by the peer's own clock drops its records only when
//! another peer's clock confirms it: a clock that jumped between two runs
//! must never make a peer drop its data.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_gossip::transport::faults::{FaultSwitch, Faults};
use ringkv_gossip::{ClusterKey, NodeId};
use ringkv_storage::{Clock, Hlc, Record};

use super::tasks::confirm_clock;
use crate::clock_offset::Confirmation;
use crate::config::Settings;
use crate::daemon::{self, Listeners, Peer};
use crate::rpc::api::{Consistency, GetReply, Request};
use crate::rpc::client;
use crate::wall::WallClock;

const WAIT: Duration = Duration::from_secs(30);
const CALL: Duration = Duration::from_secs(5);

fn settings(dir: &Path) -> Settings {
    let data = dir.join("p1").display().to_string();
    Settings::from_flags(
        [
            "--data",
            &data,
            "--listen",
            "127.0.0.1:0",
            "--name",
            "p1",
            "--tombstone-grace",
            "1h",
            "--settle",
            "200ms",
        ]
        .map(String::from),
    )
    .expect("settings")
}

fn cluster_key(dir: &Path) -> ClusterKey {
    let text = std::fs::read_to_string(dir.join("p1").join("cluster.key")).expect("key");
    ClusterKey::parse(text.trim()).expect("a cluster key")
}

async fn stop(p: Peer) {
    tokio::time::timeout(WAIT, p.shutdown(std::future::pending()))
        .await
        .expect("the peer stops in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_that_jumped_ahead_between_two_runs_drops_no_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A store from an earlier run: one record, and a last-up mark two days
    // before the clock now reads (the clock jumped ahead in between, or
    // the peer really was away: by its own clock alone, it cannot tell).
    // Either way it was away longer than the tombstone grace (1 h).
    {
        let store =
            ringkv_storage::Store::open(&dir.path().join("p1").join("store")).expect("store");
        let now = WallClock::system().now_ms();
        let mut clock = Clock::new(
            NodeId::from_name("earlier"),
            store.generation(),
            Hlc::default(),
        );
        let record = Record::put(b"value".to_vec(), clock.tick(now - 2 * 86_400_000));
        assert!(store.apply(b"kept", record).await.expect("apply"));
        let two_days_ago = now - 2 * 86_400_000;
        store
            .set_progress("alive-at", &two_days_ago.to_be_bytes())
            .expect("mark");
    }
    let p1 = daemon::start(settings(dir.path()), Listeners::default())
        .await
        .expect("p1 starts");
    let key = cluster_key(dir.path());
    let get = Request::Get {
        key: b"kept".to_vec(),
        consistency: Consistency::Quorum,
    };
    let deadline = Instant::now() + WAIT;
    let read = loop {
        match client::request::<GetReply>(p1.addrs().quic, &key, &get, CALL).await {
            Ok(read) => break read,
            Err(e) => assert!(Instant::now() < deadline, "no get answered: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        read.value.as_deref(),
        Some(&b"value"[..]),
        "no peer confirmed the absence, so nothing may be dropped"
    );
    stop(p1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_asks_other_clocks_to_confirm_a_long_absence() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p1 = daemon::start(settings(dir.path()), Listeners::default())
        .await
        .expect("p1 starts");
    let key = cluster_key(dir.path());
    let max = Duration::from_millis(500);
    let agrees = confirm_clock(vec![p1.addrs().quic], key.clone(), WallClock::system(), max).await;
    assert_eq!(agrees, Confirmation::Agrees);
    // Our clock a year ahead of p1's: p1 disagrees.
    let switch = Arc::new(FaultSwitch::new(Some(1)));
    switch.set(Faults {
        clock_offset_ms: 365 * 86_400_000,
        ..Faults::default()
    });
    let skewed = WallClock::new(Some(switch));
    match confirm_clock(vec![p1.addrs().quic], key.clone(), skewed, max).await {
        Confirmation::Disagrees { offset_ms } => {
            assert!(offset_ms > 364 * 86_400_000, "{offset_ms}");
        }
        other => panic!("{other:?}"),
    }
    stop(p1).await;
    // Nobody listens there any more.
    let nobody = confirm_clock(vec![p1_addr_unused()], key, WallClock::system(), max).await;
    assert_eq!(nobody, Confirmation::Nobody);
}

/// A loopback UDP port nobody listens on (bound, then released).
fn p1_addr_unused() -> std::net::SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("addr")
}
