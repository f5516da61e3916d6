//! Hand-wired protocol tests: two to four `Swim` peers (and sometimes
//! "puppets", addresses the test answers for itself), bytes carried by the
//! test, virtual time advanced in 10 ms steps. Every run is seeded, so a
//! failure replays exactly; the `expect_*` helpers name what is missing.
//!
//! This file is the harness: peer and message builders, `for_seeds`, the
//! `Net` (peers, puppets, the wire, virtual time, a log of both) and the
//! `expect_*` helpers. Each submodule holds the tests of one protocol area.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ringkv_ring::NodeId;

use crate::config::Config;
use crate::proto::auth::{self, InsecureAuth, Sig};
use crate::proto::codec;
use crate::proto::member::{Incarnation, Member, Meta, State};
use crate::proto::message::{Body, ClusterId, Entry, Envelope, Update};
use crate::proto::swim::{Channel, Event, Swim, Transmit};

mod bad_input;
mod correction;
mod dissemination;
mod forgery;
mod health;
mod join;
mod lifecycle;
mod partitions;
mod probe;
mod ring_agreement;
mod suspicion;
mod upgrade;

type Peer = Swim<ChaCha8Rng>;

/// Virtual time step of [`Net::step`].
const STEP: Duration = Duration::from_millis(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7001 + u16::try_from(i).expect("few peers")))
}

fn id(i: usize) -> NodeId {
    NodeId::from_name(&format!("n{i}"))
}

fn meta(i: usize) -> Meta {
    Meta::new(addr(i), format!("n{i}"))
}

fn peer_with(config: Config, i: usize, incarnation: Incarnation, seed: u64, now: Instant) -> Peer {
    let rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000).wrapping_add(i as u64));
    let auth = Box::new(InsecureAuth::for_id(id(i)));
    Swim::new(config, id(i), incarnation, meta(i), rng, auth, now)
}

fn peer(i: usize, incarnation: Incarnation, seed: u64, now: Instant) -> Peer {
    peer_with(Config::for_test(), i, incarnation, seed, now)
}

/// An envelope as peer (or puppet) `from` would send it.
/// A push-pull reply carrying `members`: a full state to inject.
fn full_state(members: Vec<Entry>) -> Body {
    Body::PushPull {
        join: false,
        reply: true,
        members,
    }
}

fn envelope(from: usize, body: Body, updates: Vec<Update>) -> Envelope {
    Envelope {
        cluster: Config::for_test().cluster,
        from: id(from),
        from_addr: addr(from),
        view: 0,
        shape: 0,
        body,
        updates,
    }
}

/// `update` signed by its author (the test auth: see `auth.rs`).
fn signed(update: Update) -> Update {
    let author = InsecureAuth::for_id(auth::author(&update));
    auth::sign(&author, &Config::for_test().cluster, update)
}

/// The public key of peer `i`.
fn key(i: usize) -> auth::PublicKey {
    auth::Auth::public_key(&InsecureAuth::for_id(id(i)))
}

fn alive(i: usize, incarnation: Incarnation) -> Update {
    alive_with(i, incarnation, meta(i))
}

fn alive_with(i: usize, incarnation: Incarnation, meta: Meta) -> Update {
    alive_of(id(i), incarnation, meta)
}

/// An Alive of any member, signed by it.
fn alive_of(id: NodeId, incarnation: Incarnation, meta: Meta) -> Update {
    signed(Update::Alive {
        id,
        incarnation,
        meta: meta.into(),
        key: auth::Auth::public_key(&InsecureAuth::for_id(id)),
        sig: Sig::NONE,
    })
}

/// Member `i` as a push-pull or restore entry; a Suspect or Dead is
/// by peer 0.
fn member(i: usize, incarnation: Incarnation, state: State) -> Entry {
    let (id, by, sig) = (id(i), id(0), Sig::NONE);
    let latest = match state {
        State::Alive => None,
        State::Suspect => Some(Update::Suspect {
            id,
            incarnation,
            by,
            sig,
        }),
        State::Dead => Some(Update::Dead {
            id,
            incarnation,
            by,
            sig,
        }),
        State::Left => Some(Update::Left {
            id,
            incarnation,
            sig,
        }),
    };
    Entry::new(alive(i, incarnation), latest.map(signed))
}

/// Seeds every scenario runs with; a failure prints its seed.
const SEEDS: u64 = 32;

fn for_seeds(scenario: impl Fn(u64)) {
    struct Report(u64);
    impl Drop for Report {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!("failing seed: {}", self.0);
            }
        }
    }
    for seed in 1..=SEEDS {
        let _report = Report(seed);
        scenario(seed);
    }
}

/// One transmit, as the net saw it.
#[derive(Debug)]
struct Sent {
    at: Instant,
    from: usize,
    to: SocketAddr,
    channel: Channel,
    len: usize,
    env: Envelope,
    /// Wire version the frame was encoded at.
    version: u8,
    delivered: bool,
}

/// Decides whether to drop a message: `(from, to, envelope)`.
type DropRule = Box<dyn Fn(usize, usize, &Envelope) -> bool>;

/// The peers, the wire between them and a log of both.
struct Net {
    t0: Instant,
    now: Instant,
    /// `None`: crashed (its traffic is dropped).
    peers: Vec<Option<Peer>>,
    /// Not driven; traffic to them is dropped, or held with `hold`.
    paused: BTreeSet<usize>,
    /// Whether traffic to paused peers waits in their inbox.
    hold: bool,
    /// Messages waiting for a paused peer: `(from, to, transmit)`.
    held: Vec<(usize, usize, Transmit)>,
    /// `(from, to)` pairs whose traffic is dropped.
    cut: BTreeSet<(usize, usize)>,
    drop_rule: Option<DropRule>,
    /// Senders all of whose datagrams are lost (their streams get through,
    /// as QUIC retransmits them).
    datagrams_lost_from: BTreeSet<usize>,
    /// Addresses the test answers for: pings to them are acked.
    puppets: BTreeMap<SocketAddr, NodeId>,
    log: Vec<Sent>,
    events: Vec<(Instant, usize, Event)>,
    /// With `Some`, a rejected delivery is recorded here (`(from, to)`)
    /// instead of failing the test.
    rejected: Option<Vec<(usize, usize)>>,
}

impl Net {
    fn new(n: usize, seed: u64) -> Self {
        Self::with_config(n, seed, &Config::for_test())
    }

    fn with_config(n: usize, seed: u64, config: &Config) -> Self {
        let t0 = Instant::now();
        let peers = (0..n)
            .map(|i| Some(peer_with(config.clone(), i, 1, seed, t0)))
            .collect();
        Self {
            t0,
            now: t0,
            peers,
            paused: BTreeSet::new(),
            hold: false,
            held: Vec::new(),
            cut: BTreeSet::new(),
            drop_rule: None,
            datagrams_lost_from: BTreeSet::new(),
            puppets: BTreeMap::new(),
            log: Vec::new(),
            events: Vec::new(),
            rejected: None,
        }
    }

    /// `n` peers, all joined through peer 0 and seeing each other Alive,
    /// with nothing left to gossip.
    fn joined(n: usize, seed: u64) -> Self {
        Self::joined_with(n, seed, &Config::for_test())
    }

    /// Three peers with `config`, joined through n0, then n2 crashed and
    /// held dead by n0 and n1.
    fn with_n2_dead(seed: u64, config: &Config) -> Self {
        let mut net = Self::with_config(3, seed, config);
        for i in 1..3 {
            net.join(i, 0);
        }
        net.run_until(ms(3_000), "all Alive", |net| net.all_alive(&[0, 1, 2]));
        net.crash(2);
        net.run_until(ms(3_000), "n2 dead at both", |net| {
            net.state_of(0, 2) == Some(State::Dead) && net.state_of(1, 2) == Some(State::Dead)
        });
        net
    }

    /// [`Net::joined`] with `config`.
    fn joined_with(n: usize, seed: u64, config: &Config) -> Self {
        let mut net = Self::with_config(n, seed, config);
        for i in 1..n {
            net.join(i, 0);
        }
        let all: Vec<usize> = (0..n).collect();
        net.run_until(
            ms(3_000),
            "every peer joined and seeing all others Alive",
            |net| all.iter().all(|&i| net.p(i).is_joined()) && net.all_alive(&all),
        );
        net.settle(&all);
        // A few probe periods of steady state.
        net.run_for(ms(500));
        net
    }

    fn p(&self, i: usize) -> &Peer {
        self.peers[i]
            .as_ref()
            .unwrap_or_else(|| panic!("n{i} is crashed"))
    }

    fn p_mut(&mut self, i: usize) -> &mut Peer {
        self.peers[i]
            .as_mut()
            .unwrap_or_else(|| panic!("n{i} is crashed"))
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn join(&mut self, i: usize, seed: usize) {
        let now = self.now;
        self.p_mut(i).handle_join(now, vec![addr(seed)]);
        self.flush();
    }

    fn crash(&mut self, i: usize) -> Peer {
        self.peers[i]
            .take()
            .unwrap_or_else(|| panic!("n{i} already crashed"))
    }

    fn restart(&mut self, i: usize, peer: Peer) {
        assert!(self.peers[i].is_none(), "n{i} is still running");
        self.peers[i] = Some(peer);
    }

    fn partition(&mut self, left: &[usize], right: &[usize]) {
        for &a in left {
            for &b in right {
                self.cut.insert((a, b));
                self.cut.insert((b, a));
            }
        }
    }

    fn index_of(&self, to: SocketAddr) -> Option<usize> {
        self.peers
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.me().meta.addr == to))
    }

    /// Hands one encoded envelope to peer `to`, then carries what follows.
    fn inject(&mut self, to: usize, channel: Channel, env: &Envelope) {
        let bytes = codec::encode(env).expect("test envelopes encode");
        let now = self.now;
        let p = self.p_mut(to);
        let res = match channel {
            Channel::Datagram => p.handle_datagram(now, &bytes),
            Channel::Stream => p.handle_stream(now, &bytes),
        };
        res.expect("test envelopes decode");
        self.flush();
    }

    /// Carries every queued transmit (and the answers they cause) at `now`.
    fn flush(&mut self) {
        for _ in 0..10_000 {
            let mut batch = Vec::new();
            for (i, p) in self.peers.iter_mut().enumerate() {
                if let Some(p) = p {
                    while let Some(t) = p.poll_transmit() {
                        batch.push((i, t));
                    }
                }
            }
            self.collect_events();
            if batch.is_empty() {
                return;
            }
            for (from, t) in batch {
                self.carry(from, t);
            }
        }
        panic!(
            "messages still flowing after 10,000 rounds at {:?}",
            self.elapsed()
        );
    }

    fn carry(&mut self, from: usize, t: Transmit) {
        let (env, version) =
            codec::decode_versioned(&t.bytes, usize::MAX, codec::MAX_KNOWN_VERSION)
                .expect("peers send what they can decode");
        let mut sent = Sent {
            version,
            at: self.now,
            from,
            to: t.to,
            channel: t.channel,
            len: t.bytes.len(),
            env,
            delivered: false,
        };
        if let Some(&puppet) = self.puppets.get(&t.to) {
            if let Body::Ping { seq, target } = sent.env.body {
                if target == puppet {
                    let mut ack = sent.env.clone();
                    ack.from = puppet;
                    ack.from_addr = t.to;
                    ack.view = 0;
                    ack.body = Body::Ack { seq };
                    ack.updates.clear();
                    let bytes = codec::encode(&ack).expect("ack encodes");
                    let now = self.now;
                    self.p_mut(from)
                        .handle_datagram(now, &bytes)
                        .expect("ack decodes");
                }
            }
            self.log.push(sent);
            return;
        }
        let to = self.index_of(t.to);
        if let Some(to) = to.filter(|to| self.hold && self.paused.contains(to)) {
            self.held.push((from, to, t));
            self.log.push(sent);
            return;
        }
        let dropped = match to {
            None => true,
            Some(to) => {
                self.paused.contains(&to)
                    || self.cut.contains(&(from, to))
                    || (t.channel == Channel::Datagram && self.datagrams_lost_from.contains(&from))
                    || self
                        .drop_rule
                        .as_ref()
                        .is_some_and(|rule| rule(from, to, &sent.env))
            }
        };
        if let (Some(to), false) = (to, dropped) {
            self.deliver(from, to, &t);
            sent.delivered = true;
        }
        self.log.push(sent);
    }

    fn deliver(&mut self, from: usize, to: usize, t: &Transmit) {
        let now = self.now;
        let p = self.p_mut(to);
        let res = match t.channel {
            Channel::Datagram => p.handle_datagram(now, &t.bytes),
            Channel::Stream => p.handle_stream(now, &t.bytes),
        };
        match (res, self.rejected.as_mut()) {
            (Ok(()), _) => {}
            (Err(_), Some(rejected)) => rejected.push((from, to)),
            (Err(e), None) => panic!("n{to} rejected a message from n{from}: {e}"),
        }
    }

    fn collect_events(&mut self) {
        for (i, p) in self.peers.iter_mut().enumerate() {
            if let Some(p) = p {
                while let Some(e) = p.poll_event() {
                    self.events.push((self.now, i, e));
                }
            }
        }
    }

    /// Advances one step: due timers fire, then the traffic is carried.
    fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        for (i, p) in self.peers.iter_mut().enumerate() {
            let Some(p) = p else { continue };
            if self.paused.contains(&i) {
                continue;
            }
            if p.poll_timeout().is_some_and(|at| at <= now) {
                p.handle_timeout(now);
            }
        }
        // Inboxes of resumed peers are read after their timers ran.
        let held = std::mem::take(&mut self.held);
        for (from, to, t) in held {
            if self.paused.contains(&to) {
                self.held.push((from, to, t));
            } else if self.peers[to].is_some() {
                self.deliver(from, to, &t);
            }
        }
        self.flush();
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
            self.step();
        }
    }

    /// Steps until `done` holds, at most `limit`; returns when it held.
    #[track_caller]
    fn run_until(&mut self, limit: Duration, what: &str, done: impl Fn(&Self) -> bool) -> Instant {
        let until = self.now + limit;
        while !done(self) {
            assert!(
                self.now < until,
                "after {limit:?} (t = {:?}) still not: {what}\n{}",
                self.elapsed(),
                self.matrix()
            );
            self.step();
        }
        self.now
    }

    /// Runs until `among` have nothing left to gossip and equal digests.
    fn settle(&mut self, among: &[usize]) {
        self.run_until(
            ms(5_000),
            "quiet: no pending broadcasts and equal digests",
            |net| {
                among.iter().all(|&i| net.p(i).pending_broadcasts() == 0)
                    && among
                        .iter()
                        .all(|&i| net.p(i).view_digest() == net.p(among[0]).view_digest())
            },
        );
    }

    fn state_of(&self, i: usize, j: usize) -> Option<State> {
        self.p(i).member(&id(j)).map(|m| m.state)
    }

    fn all_alive(&self, among: &[usize]) -> bool {
        among.iter().all(|&i| {
            among
                .iter()
                .all(|&j| i == j || self.state_of(i, j) == Some(State::Alive))
        })
    }

    fn events_of(&self, i: usize) -> Vec<(Duration, &Event)> {
        self.events
            .iter()
            .filter(|(_, p, _)| *p == i)
            .map(|(at, _, e)| (*at - self.t0, e))
            .collect()
    }

    fn event_at(&self, i: usize, want: &Event) -> Option<Instant> {
        self.events
            .iter()
            .find(|(_, p, e)| *p == i && e == want)
            .map(|(at, _, _)| *at)
    }

    fn has_event_since(&self, i: usize, want: &Event, since: Instant) -> bool {
        self.events
            .iter()
            .any(|(at, p, e)| *p == i && e == want && *at >= since)
    }

    /// Who sees whom how, for failure messages.
    fn matrix(&self) -> String {
        let mut out = String::new();
        for (i, p) in self.peers.iter().enumerate() {
            let Some(p) = p else {
                out.push_str(&format!("n{i}: crashed\n"));
                continue;
            };
            let me = p.me();
            out.push_str(&format!(
                "n{i} (inc {} {}):",
                me.incarnation,
                me.state.letter()
            ));
            for m in p.members() {
                let name = &m.meta.name;
                out.push_str(&format!(" {name}={}{}", m.state.letter(), m.incarnation));
            }
            out.push('\n');
        }
        out
    }
}

// ---- expect helpers -------------------------------------------------------

#[track_caller]
fn expect_event(net: &Net, i: usize, want: &Event) -> Instant {
    net.event_at(i, want).unwrap_or_else(|| {
        panic!(
            "n{i} never emitted {want:?}; its events: {:?}\n{}",
            net.events_of(i),
            net.matrix()
        )
    })
}

#[track_caller]
fn expect_no_event(net: &Net, i: usize, unwanted: &Event) {
    if let Some(at) = net.event_at(i, unwanted) {
        panic!(
            "n{i} emitted {unwanted:?} at {:?}; its events: {:?}\n{}",
            at - net.t0,
            net.events_of(i),
            net.matrix()
        );
    }
}

#[track_caller]
fn expect_member(net: &Net, i: usize, j: usize, state: State, incarnation: Incarnation) {
    match net.p(i).member(&id(j)) {
        Some(m) if m.state == state && m.incarnation == incarnation => {}
        Some(m) => panic!(
            "n{i} holds n{j} as {} inc {}, wanted {state} inc {incarnation}\n{}",
            m.state,
            m.incarnation,
            net.matrix()
        ),
        None => panic!(
            "n{i} does not know n{j}, wanted {state} inc {incarnation}\n{}",
            net.matrix()
        ),
    }
}

/// The first logged transmit matching `pred`.
#[track_caller]
fn expect_sent<'a>(net: &'a Net, what: &str, pred: impl Fn(&Sent) -> bool) -> &'a Sent {
    net.log
        .iter()
        .find(|s| pred(s))
        .unwrap_or_else(|| panic!("nothing sent: {what}\n{}", net.matrix()))
}

fn carries(env: &Envelope, want: impl Fn(&Update) -> bool) -> bool {
    env.updates.iter().any(want)
}
