//! The testbed's checkers catch real bugs of the store: each test runs a
//! short sequence of operations on in-process peers, records it as a
//! testbed history, and checks it twice, with a bug re-introduced (a
//! [`crate::mutation`] switch) and without. The checker must flag the first
//! and find the second clean, so neither test can pass trivially. See
//! docs/testbed.md, "Does the checker catch real bugs?".

use std::time::Instant;

use ringkv_gossip::ClusterKey;
use ringkv_storage::{Clock, Hlc, Record};
use ringkv_testbed::check::{self, linear, Report};
use ringkv_testbed::history::{History, Op, OpKind, Outcome};

use super::format_version;
use super::real_time_tests::{apply, key_not_on_p4};
use super::test_peers::{cluster, get, put, stop, CALL};
use crate::daemon::Peer;
use crate::mutation::{test::set_peer, Mutation};
use crate::rpc::api::{GetReply, PutReply};
use crate::rpc::client;
use crate::wall::WallClock;

/// Operations as the testbed's load records them: times in µs since the
/// recorder started, on one monotonic clock.
struct Recorder {
    t0: Instant,
    key: String,
    ops: Vec<Op>,
}

impl Recorder {
    fn new(key: &[u8]) -> Self {
        Self {
            t0: Instant::now(),
            key: String::from_utf8_lossy(key).into_owned(),
            ops: Vec::new(),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_micros()).expect("µs fit")
    }

    fn record(
        &mut self,
        op: OpKind,
        value: Option<&[u8]>,
        version: Option<String>,
        outcome: Outcome,
        start_us: u64,
        peer: &Peer,
    ) {
        let end_us = self.now_us();
        self.ops.push(Op {
            id: self.ops.len() as u64 + 1,
            op,
            key: self.key.clone(),
            value: value.map(|v| String::from_utf8_lossy(v).into_owned()),
            version,
            outcome,
            start_us,
            end_us,
            peer: Some(peer.addrs().name.clone()),
            replicas: Vec::new(),
            final_read: false,
            error: None,
        });
    }

    async fn put(&mut self, via: &Peer, key: &ClusterKey, value: &[u8]) {
        let start = self.now_us();
        let k = self.key.clone().into_bytes();
        let reply: PutReply = client::request(via.addrs().quic, key, &put(&k, value), CALL)
            .await
            .expect("the put is acknowledged");
        let version = Some(reply.version);
        self.record(OpKind::Put, Some(value), version, Outcome::Ok, start, via);
    }

    async fn get(&mut self, via: &Peer, key: &ClusterKey) -> Option<Vec<u8>> {
        let start = self.now_us();
        let k = self.key.clone().into_bytes();
        let reply: GetReply = client::request(via.addrs().quic, key, &get(&k), CALL)
            .await
            .expect("the get answers");
        let value = reply.value.clone();
        let answered = reply.answered.clone();
        self.record(
            OpKind::Get,
            value.as_deref(),
            reply.version,
            Outcome::Ok,
            start,
            via,
        );
        self.ops.last_mut().expect("recorded").replicas = answered;
        value
    }

    fn check(&self) -> Report {
        let history = History {
            started_unix_ms: None,
            ops: self.ops.clone(),
        };
        check::check_linearizable(&history, &linear::Config::default())
    }
}

/// Reads through `via` until a read's answers satisfy `until` (the replicas
/// a coordinator asks are chosen at random); every read is recorded.
async fn read_until(rec: &mut Recorder, via: &Peer, key: &ClusterKey, until: impl Fn(&Op) -> bool) {
    for _ in 0..100 {
        rec.get(via, key).await;
        if until(rec.ops.last().expect("recorded")) {
            return;
        }
    }
    panic!("100 reads, none as wanted: {:#?}", rec.ops);
}

/// Mutation (c): a quorum read returns the newest answer without writing
/// it back. A newer version that only one replica holds (a write that
/// reached one replica: its outcome is unknown) is read through p4 (not a
/// replica of the key) until a read's two answers include the holder's;
/// then p4 reads until its two answers are the other replicas'.
async fn read_without_write_back(mutated: bool) -> (Report, Vec<Op>) {
    let dir = tempfile::tempdir().expect("temp dir");
    // Anti-entropy off: only read repair may copy the newer version.
    let (peers, key) = cluster(dir.path(), 4, &["--anti-entropy-interval", "0s"]).await;
    let (k, replicas) = key_not_on_p4(&peers, &key).await;
    let p4 = &peers[3];
    set_peer(p4.addrs().id, Mutation::ReadWithoutWriteBack, mutated);
    let holder = &peers[replicas[0]];
    let mut rec = Recorder::new(&k);

    rec.put(p4, &key, b"v1").await;
    let start = rec.now_us();
    let mut clock = Clock::new(peers[0].addrs().id, 1, Hlc::default());
    let newer = Record::put(
        b"v2".to_vec(),
        clock.tick(WallClock::system().now_ms() + 100),
    );
    apply(holder, &key, &k, &newer).await;
    let version = Some(format_version(&newer));
    rec.record(
        OpKind::Put,
        Some(b"v2"),
        version,
        Outcome::Unknown,
        start,
        holder,
    );

    let name = holder.addrs().name.clone();
    read_until(&mut rec, p4, &key, |op| op.value.as_deref() == Some("v2")).await;
    read_until(&mut rec, p4, &key, |op| !op.replicas.contains(&name)).await;

    set_peer(p4.addrs().id, Mutation::ReadWithoutWriteBack, false);
    stop(peers).await;
    (rec.check(), rec.ops)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_read_without_write_back_is_flagged() {
    let (report, ops) = read_without_write_back(true).await;
    let text = format!("{}\n{:#?}", report.render(5), ops);
    let linear = report.linear.as_ref().expect("checked");
    assert_eq!(linear.violations.len(), 1, "{text}");
    assert!(!report.is_clean(), "{text}");
    let (report, _) = read_without_write_back(false).await;
    assert!(report.is_clean(), "{}", report.render(5));
}

/// Mutation (b): a replica's "I hold a newer version" counted as an
/// acknowledgement of a put that skipped the first phase. A write stamped
/// 400 ms ahead (a fast clock, within the maximum offset) is on every
/// replica; a later put through p4 (which has seen none of the key's
/// versions) is acknowledged, then a read through p4.
async fn newer_counted_without_first_phase(mutated: bool) -> (Report, Vec<Op>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (peers, key) = cluster(dir.path(), 4, &[]).await;
    let (k, replicas) = key_not_on_p4(&peers, &key).await;
    let p4 = &peers[3];
    set_peer(p4.addrs().id, Mutation::WriteWithoutFirstPhase, mutated);
    let mut rec = Recorder::new(&k);

    // Every replica applied it: an acknowledged write.
    let start = rec.now_us();
    let mut fast = Clock::new(peers[0].addrs().id, 1, Hlc::default());
    let ahead = Record::put(
        b"v1".to_vec(),
        fast.tick(WallClock::system().now_ms() + 400),
    );
    for i in &replicas {
        apply(&peers[*i], &key, &k, &ahead).await;
    }
    let version = Some(format_version(&ahead));
    let first = &peers[replicas[0]];
    rec.record(OpKind::Put, Some(b"v1"), version, Outcome::Ok, start, first);

    rec.put(p4, &key, b"v2").await;
    rec.get(p4, &key).await;

    set_peer(p4.addrs().id, Mutation::WriteWithoutFirstPhase, false);
    stop(peers).await;
    (rec.check(), rec.ops)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_version_counted_as_an_acknowledgement_is_flagged() {
    let (report, ops) = newer_counted_without_first_phase(true).await;
    let text = format!("{}\n{:#?}", report.render(5), ops);
    let linear = report.linear.as_ref().expect("checked");
    assert_eq!(linear.violations.len(), 1, "{text}");
    assert!(!report.is_clean(), "{text}");
    let (report, ops) = newer_counted_without_first_phase(false).await;
    assert!(report.is_clean(), "{}\n{:#?}", report.render(5), ops);
}
