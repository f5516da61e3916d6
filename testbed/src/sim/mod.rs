//! The message-level simulator: thousands of SWIM state machines on a
//! virtual clock, exchanging real encoded messages over a simulated network
//! with seeded loss, delay and partitions. Same seed, same run, byte for
//! byte: all randomness comes from one ChaCha8 stream per run (and one per
//! peer, derived from it), and nothing iterates a hash map.

mod network;
mod report;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_gossip::{Channel, Config, Meta, NodeId, Swim};
use ringkv_gossip::{ClusterId, Entry, InsecureAuth};

pub use report::{FailureReport, MembershipChange, Report, Traffic};

/// A fault or change at a point in simulated time.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// SIGKILL `count` random running peers.
    Kill {
        /// How many.
        count: usize,
    },
    /// Cut `fraction` of the peers off from the rest until `heal_at`.
    Partition {
        /// Share of peers on the small side.
        fraction: f64,
        /// When the partition heals (simulated time since start).
        heal_at: Duration,
    },
    /// Pause (SIGSTOP) `count` random peers for `length`.
    Pause {
        /// How many.
        count: usize,
        /// For how long.
        length: Duration,
    },
    /// Start `count` new peers that join through a random running peer.
    Join {
        /// How many.
        count: usize,
    },
    /// `count` random peers leave gracefully.
    Leave {
        /// How many.
        count: usize,
    },
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Peers at the start, all joined (a warm cluster).
    pub nodes: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// One-way network delay; each message gets up to a quarter more.
    pub delay: Duration,
    /// Simulated time to run.
    pub duration: Duration,
    /// The membership config every peer runs.
    pub gossip: Config,
    /// Timed steps: `(when, what)`.
    pub steps: Vec<(Duration, Step)>,
}

/// Where a peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Running,
    Paused { until: Duration },
    Killed,
    Left,
}

struct Peer {
    swim: Swim<ChaCha8Rng>,
    life: Life,
    /// The wake-up currently scheduled (older ones in the heap are stale).
    wake: Option<Duration>,
    /// Messages that arrived while paused, in arrival order.
    backlog: Vec<(Channel, Vec<u8>)>,
    /// Partition side: messages cross only between equal sides.
    side: u8,
    started: Duration,
    stopped: Option<Duration>,
}

#[derive(Debug)]
enum Ev {
    Deliver {
        to: usize,
        channel: Channel,
        bytes: Vec<u8>,
    },
    Wake {
        peer: usize,
    },
    Step {
        index: usize,
    },
    Heal,
    Resume {
        peer: usize,
    },
}

/// An event in the queue, ordered by time then by insertion.
#[derive(Debug)]
struct Queued {
    key: Reverse<(Duration, u64)>,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

/// Most messages kept for a paused peer (a socket buffer's worth).
const BACKLOG_MAX: usize = 4096;
/// How long a leaving peer keeps gossiping before it stops.
const LEAVE_LINGER: Duration = Duration::from_secs(3);

/// A simulation in progress.
pub struct Simulation {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    epoch: Instant,
    now: Duration,
    peers: Vec<Peer>,
    by_addr: BTreeMap<SocketAddr, usize>,
    queue: BinaryHeap<Queued>,
    next_ev: u64,
    partitioned: bool,
    record: report::Recorder,
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("peers", &self.peers.len())
            .field("now", &self.now)
            .finish()
    }
}

/// The address of simulated peer `i`: loopback, never sent to.
fn sim_addr(i: usize) -> SocketAddr {
    let i = u32::try_from(i).expect("fewer than 2^24 peers");
    let [_, a, b, c] = i.to_be_bytes();
    SocketAddr::from((Ipv4Addr::new(127, a, b, c.max(1)), 7000 + (i & 0xff) as u16))
}

impl Simulation {
    /// Builds the warm cluster: every peer knows every other Alive.
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let epoch = Instant::now();
        let mut sim = Self {
            rng: ChaCha8Rng::seed_from_u64(0),
            epoch,
            now: Duration::ZERO,
            peers: Vec::with_capacity(cfg.nodes),
            by_addr: BTreeMap::new(),
            queue: BinaryHeap::new(),
            next_ev: 0,
            partitioned: false,
            record: report::Recorder::default(),
            cfg,
        };
        sim.rng = ChaCha8Rng::seed_from_u64(rng.random());
        for _ in 0..sim.cfg.nodes {
            sim.spawn_peer();
        }
        let all: Vec<Entry> = sim
            .peers
            .iter()
            .map(|p| p.swim.me_entry().clone())
            .collect();
        let now = sim.instant();
        for i in 0..sim.peers.len() {
            sim.peers[i].swim.handle_restore(now, all.clone());
            sim.schedule_wake(i);
        }
        for (index, (at, _)) in sim.cfg.steps.clone().into_iter().enumerate() {
            sim.push(at, Ev::Step { index });
        }
        sim
    }

    fn instant(&self) -> Instant {
        self.epoch + self.now
    }

    fn spawn_peer(&mut self) -> usize {
        let i = self.peers.len();
        let name = format!("node-{}", i + 1);
        let id = NodeId::from_name(&format!("sim {name}"));
        let meta = Meta::new(sim_addr(i), name.clone());
        self.record.add_peer(id, &name);
        let rng = ChaCha8Rng::seed_from_u64(self.rng.random());
        // Simulator only: a cheap, forgeable MAC stands in for Ed25519, so
        // thousands of peers stay fast while every statement is still
        // checked against its author.
        let auth = Box::new(InsecureAuth::for_id(id));
        let swim = Swim::new(
            self.cfg.gossip.clone(),
            id,
            1,
            meta,
            rng,
            auth,
            self.instant(),
        );
        self.by_addr.insert(sim_addr(i), i);
        self.peers.push(Peer {
            swim,
            life: Life::Running,
            wake: None,
            backlog: Vec::new(),
            side: 0,
            started: self.now,
            stopped: None,
        });
        self.schedule_wake(i);
        i
    }

    fn push(&mut self, at: Duration, ev: Ev) {
        self.next_ev += 1;
        self.queue.push(Queued {
            key: Reverse((at, self.next_ev)),
            ev,
        });
    }

    /// Runs to the end and reports.
    pub fn run(mut self) -> Report {
        let end = self.cfg.duration;
        while let Some(Queued {
            key: Reverse((at, _)),
            ev,
        }) = self.queue.pop()
        {
            if at > end {
                break;
            }
            self.now = at;
            self.handle(ev);
        }
        self.now = end;
        let traffic = self.traffic();
        let wrong = self.final_view_errors();
        let mut report = self.record.finish(&self.cfg, traffic);
        report.final_view_errors = wrong;
        report
    }

    /// Pairs (observer, subject) of running peers where the observer's view
    /// is wrong at the end: a running peer not held live, or a stopped
    /// peer held live.
    fn final_view_errors(&self) -> usize {
        let mut wrong = 0;
        for (o, observer) in self.peers.iter().enumerate() {
            if observer.life != Life::Running {
                continue;
            }
            for (s, subject) in self.peers.iter().enumerate() {
                if s == o {
                    continue;
                }
                let id = subject.swim.me().id;
                let held_live = observer.swim.member(&id).is_some_and(|m| m.state.is_live());
                let is_running = matches!(subject.life, Life::Running | Life::Paused { .. });
                wrong += usize::from(held_live != is_running);
            }
        }
        wrong
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Wake { peer } => {
                let p = &self.peers[peer];
                if p.life != Life::Running || p.wake != Some(self.now) {
                    return;
                }
                self.peers[peer].wake = None;
                let now = self.instant();
                self.peers[peer].swim.handle_timeout(now);
                self.after_input(peer);
            }
            Ev::Deliver { to, channel, bytes } => self.deliver(to, channel, bytes),
            Ev::Step { index } => self.step(index),
            Ev::Heal => {
                self.partitioned = false;
                for p in &mut self.peers {
                    p.side = 0;
                }
                self.record.healed(self.now);
            }
            Ev::Resume { peer } => self.resume(peer),
        }
    }

    fn deliver(&mut self, to: usize, channel: Channel, bytes: Vec<u8>) {
        match self.peers[to].life {
            Life::Killed | Life::Left => {}
            Life::Paused { .. } => {
                if self.peers[to].backlog.len() < BACKLOG_MAX {
                    self.peers[to].backlog.push((channel, bytes));
                }
            }
            Life::Running => {
                self.feed(to, channel, &bytes);
                self.after_input(to);
            }
        }
    }

    fn feed(&mut self, to: usize, channel: Channel, bytes: &[u8]) {
        let now = self.instant();
        let swim = &mut self.peers[to].swim;
        // Decode errors cannot happen between honest simulated peers; they
        // would show in the peer's decode_errors counter.
        let _ = match channel {
            Channel::Datagram => swim.handle_datagram(now, bytes),
            Channel::Stream => swim.handle_stream(now, bytes),
        };
    }

    fn after_input(&mut self, peer: usize) {
        self.drain(peer);
        self.schedule_wake(peer);
    }

    /// Sends what the peer wants sent and records its events.
    fn drain(&mut self, from: usize) {
        while let Some(tx) = self.peers[from].swim.poll_transmit() {
            let Some(&to) = self.by_addr.get(&tx.to) else {
                continue;
            };
            if let Some(at) = network::route(
                &mut self.rng,
                &self.cfg,
                self.now,
                &self.peers[from],
                &self.peers[to],
                tx.channel,
            ) {
                self.push(
                    at,
                    Ev::Deliver {
                        to,
                        channel: tx.channel,
                        bytes: tx.bytes,
                    },
                );
            }
        }
        let observer = self.peers[from].swim.me().id;
        while let Some(event) = self.peers[from].swim.poll_event() {
            self.record
                .event(self.now, observer, &event, self.partitioned);
        }
    }

    fn schedule_wake(&mut self, peer: usize) {
        let Some(at) = self.peers[peer].swim.poll_timeout() else {
            return;
        };
        let at = at.saturating_duration_since(self.epoch).max(self.now);
        if self.peers[peer].wake == Some(at) {
            return;
        }
        self.peers[peer].wake = Some(at);
        self.push(at, Ev::Wake { peer });
    }

    fn running(&self) -> Vec<usize> {
        (0..self.peers.len())
            .filter(|&i| self.peers[i].life == Life::Running)
            .collect()
    }

    fn pick_running(&mut self, count: usize) -> Vec<usize> {
        let mut running = self.running();
        running.shuffle(&mut self.rng);
        running.truncate(count);
        running.sort_unstable();
        running
    }

    fn step(&mut self, index: usize) {
        let step = self.cfg.steps[index].1.clone();
        match step {
            Step::Kill { count } => {
                for i in self.pick_running(count) {
                    self.peers[i].life = Life::Killed;
                    self.peers[i].stopped = Some(self.now);
                    let id = self.peers[i].swim.me().id;
                    self.record.killed(self.now, id);
                }
            }
            Step::Partition { fraction, heal_at } => {
                let n = ((self.peers.len() as f64) * fraction).round() as usize;
                let mut all: Vec<usize> = (0..self.peers.len()).collect();
                all.shuffle(&mut self.rng);
                for &i in &all[..n.min(all.len())] {
                    self.peers[i].side = 1;
                }
                self.partitioned = true;
                self.record.partitioned(self.now);
                self.push(heal_at.max(self.now), Ev::Heal);
            }
            Step::Pause { count, length } => {
                for i in self.pick_running(count) {
                    let until = self.now + length;
                    self.peers[i].life = Life::Paused { until };
                    let id = self.peers[i].swim.me().id;
                    self.record.paused(id);
                    self.push(until, Ev::Resume { peer: i });
                }
            }
            Step::Join { count } => {
                for _ in 0..count {
                    let seeds = self.pick_running(1);
                    let i = self.spawn_peer();
                    let id = self.peers[i].swim.me().id;
                    self.record.joined(self.now, id);
                    let addrs = seeds.into_iter().map(sim_addr).collect();
                    let now = self.instant();
                    self.peers[i].swim.handle_join(now, addrs);
                    self.after_input(i);
                }
            }
            Step::Leave { count } => {
                for i in self.pick_running(count) {
                    let id = self.peers[i].swim.me().id;
                    self.record.left(self.now, id);
                    let now = self.instant();
                    self.peers[i].swim.handle_leave(now);
                    self.after_input(i);
                    let stop = self.now + LEAVE_LINGER;
                    self.push(stop, Ev::Resume { peer: i });
                }
            }
        }
    }

    /// Ends a pause (backlog first, as a resumed process finds its socket
    /// full after its timers are overdue), or stops a peer that left.
    fn resume(&mut self, peer: usize) {
        if self.peers[peer].swim.has_left() {
            self.peers[peer].life = Life::Left;
            self.peers[peer].stopped = Some(self.now);
            return;
        }
        if !matches!(self.peers[peer].life, Life::Paused { .. }) {
            return;
        }
        self.peers[peer].life = Life::Running;
        self.peers[peer].wake = None;
        // The worst order for the stall guard: overdue timers fire before
        // the backlog is read.
        let now = self.instant();
        self.peers[peer].swim.handle_timeout(now);
        self.drain(peer);
        for (channel, bytes) in std::mem::take(&mut self.peers[peer].backlog) {
            self.feed(peer, channel, &bytes);
            self.drain(peer);
        }
        self.schedule_wake(peer);
    }

    fn traffic(&self) -> Traffic {
        let mut t = Traffic::default();
        for p in &self.peers {
            let s = p.swim.stats();
            t.datagrams += s.datagrams_sent;
            t.datagram_bytes += s.datagram_bytes_sent;
            t.streams += s.streams_sent;
            t.stream_bytes += s.stream_bytes_sent;
            let until = p.stopped.unwrap_or(self.now);
            t.peer_seconds += until.saturating_sub(p.started).as_secs_f64();
        }
        t
    }
}

/// The cluster id every simulated peer uses.
pub fn sim_cluster() -> ClusterId {
    ClusterId(*b"ringkv-simulated")
}

/// Runs one simulation.
pub fn simulate(cfg: SimConfig) -> Report {
    Simulation::new(cfg).run()
}

#[cfg(test)]
mod tests;
