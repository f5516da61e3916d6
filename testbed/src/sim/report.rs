//! What the simulator measures and how it prints it. Everything here is in
//! simulated time; wall time is the caller's business, so a report is the
//! same, byte for byte, for the same seed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use ringkv_gossip::{Event, NodeId};
use serde::Serialize;

use super::SimConfig;

/// One killed peer: how fast the cluster noticed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailureReport {
    /// The peer.
    pub peer: String,
    /// When it was killed (s).
    pub at: f64,
    /// Seconds until the first peer suspected it.
    pub first_suspected_after: Option<f64>,
    /// Seconds until every running peer held it dead.
    pub all_dead_after: Option<f64>,
    /// Running peers that never saw it dead.
    pub missing: usize,
}

/// A join or a leave: how long until every running peer knew.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MembershipChange {
    /// `join` or `leave`.
    pub kind: String,
    /// The peer.
    pub peer: String,
    /// When it happened (s).
    pub at: f64,
    /// Seconds until every running peer knew.
    pub everyone_after: Option<f64>,
    /// Running peers that never learned it.
    pub missing: usize,
}

/// Traffic totals.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Traffic {
    /// Datagrams sent by all peers.
    pub datagrams: u64,
    /// Their bytes.
    pub datagram_bytes: u64,
    /// Stream messages (push-pull) sent by all peers.
    pub streams: u64,
    /// Their bytes.
    pub stream_bytes: u64,
    /// Sum over peers of the seconds each ran.
    pub peer_seconds: f64,
}

impl Traffic {
    /// Messages sent per peer per second.
    pub fn messages_per_peer_second(&self) -> f64 {
        (self.datagrams + self.streams) as f64 / self.peer_seconds.max(1e-9)
    }

    /// Bytes sent per peer per second.
    pub fn bytes_per_peer_second(&self) -> f64 {
        (self.datagram_bytes + self.stream_bytes) as f64 / self.peer_seconds.max(1e-9)
    }
}

/// Everything a run measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Peers at the start.
    pub nodes: usize,
    /// The seed.
    pub seed: u64,
    /// Datagram loss probability.
    pub loss: f64,
    /// One-way delay (ms).
    pub delay_ms: f64,
    /// Simulated seconds.
    pub duration: f64,
    /// Killed peers.
    pub failures: Vec<FailureReport>,
    /// Joins and leaves.
    pub changes: Vec<MembershipChange>,
    /// Running, unpaused, reachable peers declared dead by someone.
    pub false_positives: Vec<String>,
    /// Dead declarations across a partition (expected while it lasts).
    pub partition_deaths: u64,
    /// Seconds from heal until every running peer held every running peer
    /// alive again, if there was a partition.
    pub heal_after: Option<f64>,
    /// Paused peers declared dead while paused (expected if long enough).
    pub paused_deaths: u64,
    /// Traffic.
    pub traffic: Traffic,
    /// At the end: (observer, subject) pairs where a running peer's view
    /// of another peer's liveness is wrong. 0 means converged.
    pub final_view_errors: usize,
}

#[derive(Debug, Default)]
struct PeerInfo {
    name: String,
    killed: Option<Duration>,
    left: Option<Duration>,
    joined: Option<Duration>,
    paused: bool,
}

/// Collects events during a run.
#[derive(Debug, Default)]
pub(super) struct Recorder {
    peers: BTreeMap<NodeId, PeerInfo>,
    order: Vec<NodeId>,
    first_suspect: BTreeMap<NodeId, Duration>,
    /// (subject, observer) → first time the observer saw the subject dead.
    dead_seen: BTreeMap<(NodeId, NodeId), Duration>,
    /// (subject, observer) → first time the observer saw it join.
    join_seen: BTreeMap<(NodeId, NodeId), Duration>,
    /// (subject, observer) → first time the observer saw it leave.
    left_seen: BTreeMap<(NodeId, NodeId), Duration>,
    /// Last time any observer saw any subject change liveness.
    last_change: Duration,
    false_positives: Vec<NodeId>,
    partition_deaths: u64,
    paused_deaths: u64,
    partitioned_at: Option<Duration>,
    healed_at: Option<Duration>,
    /// After heal: last time a peer recovered or rejoined.
    last_recovery: Option<Duration>,
}

impl Recorder {
    pub(super) fn add_peer(&mut self, id: NodeId, name: &str) {
        self.order.push(id);
        self.peers.insert(
            id,
            PeerInfo {
                name: name.to_owned(),
                ..PeerInfo::default()
            },
        );
    }

    pub(super) fn killed(&mut self, now: Duration, id: NodeId) {
        self.peers.get_mut(&id).expect("known peer").killed = Some(now);
    }

    pub(super) fn left(&mut self, now: Duration, id: NodeId) {
        self.peers.get_mut(&id).expect("known peer").left = Some(now);
    }

    pub(super) fn joined(&mut self, now: Duration, id: NodeId) {
        self.peers.get_mut(&id).expect("known peer").joined = Some(now);
    }

    pub(super) fn paused(&mut self, id: NodeId) {
        self.peers.get_mut(&id).expect("known peer").paused = true;
    }

    pub(super) fn partitioned(&mut self, now: Duration) {
        self.partitioned_at = Some(now);
    }

    pub(super) fn healed(&mut self, now: Duration) {
        self.healed_at = Some(now);
    }

    pub(super) fn event(
        &mut self,
        now: Duration,
        observer: NodeId,
        event: &Event,
        partitioned: bool,
    ) {
        match *event {
            Event::MemberSuspected(id) => {
                self.first_suspect.entry(id).or_insert(now);
            }
            Event::MemberDead(id) => {
                self.last_change = now;
                self.dead_seen.entry((id, observer)).or_insert(now);
                let Some(info) = self.peers.get(&id) else {
                    return;
                };
                if info.killed.is_some() || info.left.is_some() {
                    return;
                }
                if info.paused {
                    self.paused_deaths += 1;
                } else if partitioned
                    || self
                        .healed_at
                        .is_some_and(|h| now < h + Duration::from_secs(30))
                {
                    self.partition_deaths += 1;
                } else if !self.false_positives.contains(&id) {
                    self.false_positives.push(id);
                }
            }
            Event::MemberJoined(id) | Event::MemberRecovered(id) => {
                self.last_change = now;
                self.join_seen.entry((id, observer)).or_insert(now);
                if self.healed_at.is_some() {
                    self.last_recovery = Some(now);
                }
            }
            Event::MemberLeft(id) => {
                self.last_change = now;
                self.left_seen.entry((id, observer)).or_insert(now);
            }
            _ => {}
        }
    }

    /// Observers that were running at the end and saw `subject`'s change
    /// happen (running when it happened, and not the subject).
    fn observers(&self, subject: NodeId, since: Duration) -> impl Iterator<Item = NodeId> + '_ {
        self.order.iter().copied().filter(move |o| {
            let info = &self.peers[o];
            *o != subject
                && info.killed.is_none()
                && info.left.is_none()
                && info.joined.is_none_or(|j| j <= since)
        })
    }

    fn spread(
        &self,
        seen: &BTreeMap<(NodeId, NodeId), Duration>,
        subject: NodeId,
        at: Duration,
    ) -> (Option<f64>, usize) {
        let mut last = at;
        let mut missing = 0;
        for o in self.observers(subject, at) {
            match seen.get(&(subject, o)) {
                Some(t) if *t >= at => last = last.max(*t),
                _ => missing += 1,
            }
        }
        let after = (missing == 0).then(|| (last - at).as_secs_f64());
        (after, missing)
    }

    pub(super) fn finish(self, cfg: &SimConfig, traffic: Traffic) -> Report {
        let mut failures = Vec::new();
        let mut changes = Vec::new();
        for id in &self.order {
            let info = &self.peers[id];
            if let Some(at) = info.killed {
                let (all_dead_after, missing) = self.spread(&self.dead_seen, *id, at);
                let first_suspected_after = self
                    .first_suspect
                    .get(id)
                    .filter(|t| **t >= at)
                    .map(|t| (*t - at).as_secs_f64());
                failures.push(FailureReport {
                    peer: info.name.clone(),
                    at: at.as_secs_f64(),
                    first_suspected_after,
                    all_dead_after,
                    missing,
                });
            }
            if let Some(at) = info.joined {
                let (everyone_after, missing) = self.spread(&self.join_seen, *id, at);
                changes.push(MembershipChange {
                    kind: "join".into(),
                    peer: info.name.clone(),
                    at: at.as_secs_f64(),
                    everyone_after,
                    missing,
                });
            }
            if let Some(at) = info.left {
                let (everyone_after, missing) = self.spread(&self.left_seen, *id, at);
                changes.push(MembershipChange {
                    kind: "leave".into(),
                    peer: info.name.clone(),
                    at: at.as_secs_f64(),
                    everyone_after,
                    missing,
                });
            }
        }
        changes.sort_by(|a, b| a.at.total_cmp(&b.at));
        failures.sort_by(|a, b| a.at.total_cmp(&b.at));
        let heal_after = self.healed_at.map(|h| {
            self.last_recovery
                .map_or(0.0, |r| r.saturating_sub(h).as_secs_f64())
        });
        Report {
            nodes: cfg.nodes,
            seed: cfg.seed,
            loss: cfg.loss,
            delay_ms: cfg.delay.as_secs_f64() * 1000.0,
            duration: cfg.duration.as_secs_f64(),
            failures,
            changes,
            false_positives: self
                .false_positives
                .iter()
                .map(|id| self.peers[id].name.clone())
                .collect(),
            partition_deaths: self.partition_deaths,
            heal_after,
            paused_deaths: self.paused_deaths,
            traffic,
            final_view_errors: 0,
        }
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "never".into(), |s| format!("{s:.3} s"))
}

impl Report {
    /// The report as text for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "simulated {} peers for {:.0} s, seed {}, loss {:.1}%, delay {:.1} ms",
            self.nodes,
            self.duration,
            self.seed,
            self.loss * 100.0,
            self.delay_ms
        );
        for f in &self.failures {
            let _ = writeln!(
                out,
                "kill {} at {:.3} s: first suspected after {}, dead at every running peer after {}{}",
                f.peer,
                f.at,
                secs(f.first_suspected_after),
                secs(f.all_dead_after),
                if f.missing > 0 { format!(" ({} peers never saw it)", f.missing) } else { String::new() }
            );
        }
        for c in &self.changes {
            let _ = writeln!(
                out,
                "{} {} at {:.3} s: known to every running peer after {}{}",
                c.kind,
                c.peer,
                c.at,
                secs(c.everyone_after),
                if c.missing > 0 {
                    format!(" ({} peers never learned it)", c.missing)
                } else {
                    String::new()
                }
            );
        }
        if let Some(h) = self.heal_after {
            let _ = writeln!(
                out,
                "partition healed: every running peer alive to every other {h:.3} s after the heal"
            );
        }
        let _ = writeln!(
            out,
            "false positives (running peers declared dead): {}{}",
            self.false_positives.len(),
            if self.false_positives.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.false_positives.join(", "))
            }
        );
        if self.partition_deaths > 0 || self.paused_deaths > 0 {
            let _ = writeln!(
                out,
                "expected deaths: {} across the partition, {} of paused peers",
                self.partition_deaths, self.paused_deaths
            );
        }
        let _ = writeln!(
            out,
            "views at the end: {}",
            if self.final_view_errors == 0 {
                "every running peer holds exactly the running peers live".to_owned()
            } else {
                format!("{} wrong (observer, peer) pairs", self.final_view_errors)
            }
        );
        let t = &self.traffic;
        let _ = writeln!(
            out,
            "traffic per peer: {:.1} messages/s, {:.0} B/s sent ({:.0} B/s datagrams, {:.0} B/s push-pull)",
            t.messages_per_peer_second(),
            t.bytes_per_peer_second(),
            t.datagram_bytes as f64 / t.peer_seconds.max(1e-9),
            t.stream_bytes as f64 / t.peer_seconds.max(1e-9)
        );
        out
    }
}
