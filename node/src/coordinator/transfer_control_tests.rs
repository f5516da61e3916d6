//! `ringkv handoff --pause | --resume | --cancel RANGE`: a joiner's
//! rate-limited pulls stop while paused, go on from their checkpoints when
//! resumed, and a cancelled range goes on with another holder; the joiner
//! ends holding its ring with every key. Client credentials are refused.

use std::time::{Duration, Instant};

use super::test_peers::{cluster, settings, stop, CALL, WAIT};
use crate::daemon::{self, Listeners, Peer};
use crate::keyargs::{wall_secs, Access};
use crate::rpc::api::{
    Consistency, ErrorKind, GetReply, HandoffReply, PutReply, Request, RequestError, TransferOp,
};
use crate::rpc::client;
use ringkv_gossip::transport::credentials::ClientCredentials;
use ringkv_gossip::ClusterKey;

async fn report(p: &Peer, key: &ClusterKey) -> HandoffReply {
    client::request(p.addrs().quic, key, &Request::Handoff, CALL)
        .await
        .expect("handoff report")
}

async fn op(p: &Peer, key: &ClusterKey, op: TransferOp) -> anyhow::Result<HandoffReply> {
    client::request(p.addrs().quic, key, &Request::Transfers(op), CALL).await
}

/// Waits until `check` holds for `p`'s report.
async fn until(
    p: &Peer,
    key: &ClusterKey,
    what: &str,
    check: impl Fn(&HandoffReply) -> bool,
) -> HandoffReply {
    let deadline = Instant::now() + WAIT * 2;
    loop {
        let r = report(p, key).await;
        if check(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "{what}: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_pause_resume_and_a_cancelled_range_goes_on_elsewhere() {
    let dir = tempfile::tempdir().expect("temp dir");
    // 64 KB/s: the joiner's share of 600 KB takes seconds to pull.
    let extra = ["--handoff-rate", "64KB", "--anti-entropy-interval", "0s"];
    let (mut peers, key) = cluster(dir.path(), 3, &extra).await;
    let value = vec![b'x'; 1000];
    for i in 0..600 {
        let req = Request::Put {
            key: format!("t{i}").into_bytes(),
            value: Some(value.clone()),
            consistency: Consistency::All,
        };
        client::request::<PutReply>(peers[i % 3].addrs().quic, &key, &req, CALL)
            .await
            .expect("put");
    }
    let joiner = daemon::start(
        settings(dir.path(), "p4", Some(&peers[0]), &extra),
        Listeners::default(),
    )
    .await
    .expect("p4 starts");

    // Paused as soon as it pulls: nothing moves until resumed.
    until(&joiner, &key, "a transfer starts", |r| {
        !r.transfers.is_empty()
    })
    .await;
    let paused = op(&joiner, &key, TransferOp::Pause).await.expect("paused");
    assert!(paused.paused, "{paused:?}");
    // Pages already asked for land; then the count stands still.
    let settled = {
        let mut last = report(&joiner, &key).await.keys_moved;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = report(&joiner, &key).await.keys_moved;
            if now == last {
                break now;
            }
            last = now;
        }
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = report(&joiner, &key).await;
    assert_eq!(still.keys_moved, settled, "moved while paused: {still:?}");
    assert!(still.paused && still.ready != still.ring, "{still:?}");

    // Cancel one range in progress (refused for a range not in transfer).
    assert!(
        !still.transfers.is_empty(),
        "paused transfers stay listed: {still:?}"
    );
    let range = still.transfers[0].range.clone();
    let bogus = crate::cli::repair::parse_range("(0000000000000001, 0000000000000002]").unwrap();
    let e = op(&joiner, &key, TransferOp::Cancel(bogus))
        .await
        .expect_err("no such transfer");
    assert_eq!(RequestError::kind_of(&e), ErrorKind::Refused, "{e:#}");
    let parsed = crate::cli::repair::parse_range(&range).expect("a listed range parses");
    op(&joiner, &key, TransferOp::Cancel(parsed))
        .await
        .expect("cancelled");

    // Client credentials may not pause or resume.
    let now = wall_secs();
    let creds = Access::Client(
        ClientCredentials::issue(&key, "app", now - 60, now + 3600).expect("issued"),
    );
    let e = client::request::<HandoffReply>(
        joiner.addrs().quic,
        &creds,
        &Request::Transfers(TransferOp::Resume),
        CALL,
    )
    .await
    .expect_err("a client");
    assert_eq!(RequestError::kind_of(&e), ErrorKind::Refused, "{e:#}");
    assert!(report(&joiner, &key).await.paused, "still paused");

    // Resumed: the cancelled range went on elsewhere, and the joiner holds
    // its ring with every key.
    let resumed = op(&joiner, &key, TransferOp::Resume)
        .await
        .expect("resumed");
    assert!(!resumed.paused);
    let done = until(&joiner, &key, "the joiner holds its ring", |r| {
        r.ring.is_some() && r.ring == r.ready
    })
    .await;
    assert_eq!(done.cancelled, 1, "{done:?}");
    for i in (0..600).step_by(37) {
        let got: GetReply = client::request(
            joiner.addrs().quic,
            &key,
            &Request::Get {
                key: format!("t{i}").into_bytes(),
                consistency: Consistency::One,
            },
            CALL,
        )
        .await
        .expect("get");
        assert_eq!(got.value.as_deref(), Some(value.as_slice()), "t{i}");
    }
    peers.push(joiner);
    stop(peers).await;
}
