//! Hand-wired protocol tests: two to four `Swim` peers (and sometimes
//! "puppets", addresses the test answers for itself), bytes carried by the
//! test, virtual time advanced in 10 ms steps. Every run is seeded, so a
//! failure replays exactly; the `expect_*` helpers name what is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ringkv_ring::NodeId;

use crate::config::Config;
use crate::proto::codec;
use crate::proto::member::{Incarnation, Member, Meta, State};
use crate::proto::message::{Body, ClusterId, Envelope, Update};
use crate::proto::swim::{Channel, Event, Swim, Transmit};

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
    Swim::new(config, id(i), incarnation, meta(i), rng, now)
}

fn peer(i: usize, incarnation: Incarnation, seed: u64, now: Instant) -> Peer {
    peer_with(Config::for_test(), i, incarnation, seed, now)
}

/// An envelope as peer (or puppet) `from` would send it.
fn envelope(from: usize, body: Body, updates: Vec<Update>) -> Envelope {
    Envelope {
        cluster: Config::for_test().cluster,
        from: id(from),
        from_addr: addr(from),
        view: 0,
        body,
        updates,
    }
}

fn alive(i: usize, incarnation: Incarnation) -> Update {
    Update::Alive {
        id: id(i),
        incarnation,
        meta: meta(i).into(),
    }
}

fn member(i: usize, incarnation: Incarnation, state: State) -> Member {
    Member {
        id: id(i),
        incarnation,
        state,
        meta: meta(i).into(),
    }
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
    /// Addresses the test answers for: pings to them are acked.
    puppets: BTreeMap<SocketAddr, NodeId>,
    log: Vec<Sent>,
    events: Vec<(Instant, usize, Event)>,
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
            puppets: BTreeMap::new(),
            log: Vec::new(),
            events: Vec::new(),
        }
    }

    /// `n` peers, all joined through peer 0 and seeing each other Alive,
    /// with nothing left to gossip.
    fn joined(n: usize, seed: u64) -> Self {
        let mut net = Self::new(n, seed);
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
        let env = codec::decode(&t.bytes, usize::MAX).expect("peers send what they can decode");
        let mut sent = Sent {
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
        res.unwrap_or_else(|e| panic!("n{to} rejected a message from n{from}: {e}"));
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

// ---- joining --------------------------------------------------------------

#[test]
fn join_through_a_seed_lists_both_alive_and_views_agree() {
    for_seeds(|seed| {
        let mut net = Net::new(2, seed);
        assert!(
            net.p(0).is_joined(),
            "a peer without seeds is a cluster of one"
        );
        net.join(1, 0);

        // One push-pull and its reply: done at once, no timer needed.
        assert!(net.p(1).is_joined());
        expect_event(&net, 1, &Event::JoinedCluster);
        expect_event(&net, 0, &Event::MemberJoined(id(1)));
        expect_event(&net, 1, &Event::MemberJoined(id(0)));
        expect_no_event(&net, 0, &Event::JoinedCluster);
        expect_member(&net, 0, 1, State::Alive, 1);
        expect_member(&net, 1, 0, State::Alive, 1);
        assert_eq!(net.p(0).live_count(), 1);
        assert_eq!(net.p(1).live_count(), 1);
        assert_eq!(net.p(0).view_digest(), net.p(1).view_digest());

        // Every message carries the sender's digest: after a few pings each
        // side knows the other agrees.
        net.run_for(ms(1_000));
        assert_eq!(net.p(0).agreement(), (1, 1));
        assert_eq!(net.p(1).agreement(), (1, 1));
        assert!(net.p(0).stats().probes > 0 && net.p(1).stats().probes > 0);
        assert_eq!(
            net.p(0).stats().probes_failed + net.p(1).stats().probes_failed,
            0
        );
    });
}

#[test]
fn join_retries_with_backoff_until_the_seed_answers() {
    for_seeds(|seed| {
        let mut net = Net::new(2, seed);
        net.crash(0);
        net.join(1, 0);
        net.run_for(ms(1_500));
        assert!(!net.p(1).is_joined());

        let joins: Vec<Instant> = net
            .log
            .iter()
            .filter(|s| s.from == 1 && matches!(s.env.body, Body::PushPull { join: true, .. }))
            .map(|s| s.at)
            .collect();
        assert!(
            joins.len() >= 4,
            "expected several join attempts, got {}",
            joins.len()
        );
        let gaps: Vec<Duration> = joins.windows(2).map(|w| w[1] - w[0]).collect();
        let config = Config::for_test();
        for pair in gaps.windows(2) {
            assert!(pair[1] >= pair[0], "backoff must not shrink: {gaps:?}");
        }
        assert!(
            gaps.iter().all(|g| *g <= config.join_retry_max + STEP),
            "backoff capped: {gaps:?}"
        );
        assert!(gaps[0] < gaps[gaps.len() - 1], "backoff grows: {gaps:?}");

        // The seed comes up: the next retry gets an answer.
        let now = net.now;
        net.restart(0, peer(0, 1, seed, now));
        net.run_until(
            config.join_retry_max * 2,
            "n1 joined once the seed is up",
            |net| net.p(1).is_joined(),
        );
        expect_event(&net, 1, &Event::JoinedCluster);
        expect_member(&net, 0, 1, State::Alive, 1);
        expect_member(&net, 1, 0, State::Alive, 1);
    });
}

#[test]
fn third_peer_joining_through_the_seed_reaches_the_other_peer_by_gossip() {
    for_seeds(|seed| {
        let mut net = Net::joined(2, seed);
        assert!(net.elapsed() < ms(1_000), "the first two settled quickly");
        let before = net.log.len();
        let t_join = net.now;
        let now = net.now;
        net.peers.push(Some(peer(2, 1, seed, now)));
        net.join(2, 0);
        expect_member(&net, 0, 2, State::Alive, 1);
        expect_member(&net, 2, 1, State::Alive, 1);

        // Well before any periodic push-pull (push_pull_interval is 2 s).
        net.run_until(ms(800), "n1 learned n2", |net| {
            net.state_of(1, 2) == Some(State::Alive)
        });
        let learned = expect_event(&net, 1, &Event::MemberJoined(id(2)));
        assert!(learned >= t_join);
        let streams_to_n1 = net.log[before..]
            .iter()
            .filter(|s| s.to == addr(1) && s.channel == Channel::Stream)
            .count();
        assert_eq!(
            streams_to_n1, 0,
            "n1 must learn n2 from gossip, not push-pull"
        );
        expect_member(&net, 1, 2, State::Alive, 1);
        net.settle(&[0, 1, 2]);
    });
}

// ---- failure detection ------------------------------------------------------

#[test]
fn unanswered_probe_asks_helpers_then_suspects_then_declares_dead() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        let config = Config::for_test();
        let t_crash = net.now;
        net.crash(2);
        net.run_until(ms(3_000), "n0 and n1 hold n2 dead", |net| {
            net.state_of(0, 2) == Some(State::Dead) && net.state_of(1, 2) == Some(State::Dead)
        });

        // The first peer to suspect n2 through its own failed probe (the other
        // may have heard it from it, or suspected it too).
        let (t_suspect, p) = (0..2)
            .filter(|&p| net.p(p).stats().suspicions_raised > 0)
            .map(|p| (expect_event(&net, p, &Event::MemberSuspected(id(2))), p))
            .min()
            .expect("someone raised a suspicion itself");
        let helper = 1 - p;
        let ping_req = expect_sent(&net, "a PingReq about n2 before the first suspicion", |s| {
            s.from == p
                && s.at >= t_crash
                && s.at <= t_suspect
                && matches!(s.env.body, Body::PingReq { target, .. } if target == id(2))
        });
        let (
            Body::PingReq {
                seq, target_addr, ..
            },
            to,
            t_req,
        ) = (&ping_req.env.body, ping_req.to, ping_req.at)
        else {
            unreachable!()
        };
        assert_eq!(*target_addr, addr(2));
        assert_eq!(to, addr(helper), "the only possible helper");
        let ping = expect_sent(&net, "the direct ping of that probe", |s| {
            s.from == p
                && s.to == addr(2)
                && matches!(s.env.body, Body::Ping { seq: q, .. } if q == *seq)
        });
        assert!(
            t_req - ping.at >= config.probe_timeout,
            "indirect only after the probe timeout"
        );
        assert!(
            t_suspect - ping.at >= config.probe_timeout + config.indirect_timeout,
            "suspect only when the indirect probe's time is up too"
        );
        // The helper tried n2 itself and, getting nothing, nacked (Lifeguard).
        expect_sent(&net, "the helper's own ping of n2", |s| {
            s.from == helper
                && s.to == addr(2)
                && s.at >= t_req
                && matches!(s.env.body, Body::Ping { .. })
        });
        expect_sent(&net, "the helper's nack to the prober", |s| {
            s.from == helper
                && s.to == addr(p)
                && matches!(s.env.body, Body::Nack { seq: q } if q == *seq)
        });
        assert!(net.p(p).stats().suspicions_raised >= 1);
        assert!(net.p(p).stats().probes_failed >= 1);

        // Then the suspicion ran out: Dead, no sooner than the minimum.
        for q in 0..2 {
            let suspected = expect_event(&net, q, &Event::MemberSuspected(id(2)));
            let dead = expect_event(&net, q, &Event::MemberDead(id(2)));
            let min = config.suspicion_min(3);
            let max = min * config.suspicion_max_mult;
            let took = dead - suspected;
            assert!(
                took >= min || q != p,
                "n{p} declared dead after {took:?}, before the minimum {min:?}"
            );
            assert!(
                took <= max + STEP,
                "n{q} declared dead after {took:?}, past the maximum {max:?}"
            );
            expect_member(&net, q, 2, State::Dead, 1);
            assert_eq!(net.p(q).live_count(), 1);
        }
        assert_eq!(net.p(0).view_digest(), net.p(1).view_digest());
    });
}

#[test]
fn indirect_ack_through_a_helper_prevents_suspicion() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        // n0 and n2 cannot hear each other; n1 reaches both.
        net.partition(&[0], &[2]);
        let t_cut = net.now;
        net.run_for(ms(2_000));

        let forwarded = net
            .log
            .iter()
            .filter(|s| {
                s.at >= t_cut
                    && s.from == 1
                    && s.to == addr(0)
                    && matches!(s.env.body, Body::Ack { .. })
            })
            .count();
        assert!(forwarded > 0, "n1 forwarded acks from n2 to n0");
        expect_sent(&net, "a PingReq from n0 about n2", |s| {
            s.from == 0 && matches!(s.env.body, Body::PingReq { target, .. } if target == id(2))
        });
        for (i, j) in [(0, 2), (2, 0)] {
            expect_no_event(&net, i, &Event::MemberSuspected(id(j)));
            expect_member(&net, i, j, State::Alive, 1);
        }
    });
}

#[test]
fn suspected_peer_refutes_with_higher_incarnation() {
    for_seeds(|seed| {
        let mut net = Net::joined(2, seed);
        // n1's acks to n0 are lost: n0's probes of n1 fail; nothing else is.
        net.drop_rule = Some(Box::new(|from, to, env| {
            from == 1 && to == 0 && matches!(env.body, Body::Ack { .. })
        }));
        net.run_until(ms(2_000), "n0 suspects n1", |net| {
            net.event_at(0, &Event::MemberSuspected(id(1))).is_some()
        });
        let t_suspect = net.now;
        // The suspect heard it at once (sent to it directly) and refuted.
        expect_event(&net, 1, &Event::IncarnationChanged(2));
        assert!(net.p(1).stats().refutations >= 1);
        net.run_until(ms(1_000), "n0 saw n1 recover", |net| {
            net.event_at(0, &Event::MemberRecovered(id(1))).is_some()
        });
        net.drop_rule = None;

        let recovered = expect_event(&net, 0, &Event::MemberRecovered(id(1)));
        assert!(recovered >= t_suspect);
        assert!(net.p(1).me().incarnation >= 2);
        assert_eq!(
            net.p(0).member(&id(1)).map(|m| m.incarnation),
            Some(net.p(1).me().incarnation)
        );
        expect_no_event(&net, 0, &Event::MemberDead(id(1)));
        net.settle(&[0, 1]);
        expect_member(&net, 0, 1, State::Alive, net.p(1).me().incarnation);
        assert_eq!(net.p(0).view_digest(), net.p(1).view_digest());
    });
}

/// Time from the first suspicion of a puppet to its death at a lone
/// `Swim`, with `confirmers` other puppets confirming at once.
fn time_to_dead(seed: u64, confirmers: &[usize]) -> Duration {
    // n0 is real; n1..=n5 are puppets that answer its pings. n5 is the
    // suspect, n1 the first suspecter, n2..=n4 possible confirmers.
    let mut net = Net::new(1, seed);
    for i in 1..=5 {
        net.puppets.insert(addr(i), id(i));
    }
    let members = (1..=5).map(|i| member(i, 1, State::Alive)).collect();
    let body = Body::PushPull {
        join: false,
        reply: true,
        members,
    };
    net.inject(0, Channel::Stream, &envelope(1, body, Vec::new()));
    assert_eq!(net.p(0).live_count(), 5);
    net.run_for(ms(500));

    let start = net.now;
    let suspect = |by: usize| Update::Suspect {
        id: id(5),
        incarnation: 1,
        by: id(by),
    };
    net.inject(
        0,
        Channel::Datagram,
        &envelope(1, Body::Gossip, vec![suspect(1)]),
    );
    for &c in confirmers {
        net.inject(
            0,
            Channel::Datagram,
            &envelope(c, Body::Gossip, vec![suspect(c)]),
        );
    }
    expect_event(&net, 0, &Event::MemberSuspected(id(5)));
    net.run_until(ms(2_000), "n0 declared n5 dead", |net| {
        net.state_of(0, 5) == Some(State::Dead)
    });
    assert_eq!(
        net.p(0).stats().suspicions_raised,
        0,
        "the puppets answered every probe"
    );
    net.now - start
}

#[test]
fn confirmations_from_distinct_peers_shorten_the_suspicion_timeout() {
    let config = Config::for_test();
    // Six peers: min = base * max(1, log10 6), max = min * mult, K = 3.
    let min = config.suspicion_min(6);
    let max = min * config.suspicion_max_mult;
    let k = config.suspicion_confirmations;
    assert_eq!(k, 3);
    let lifeguard = |c: u32| {
        let frac = f64::from(c + 1).ln() / f64::from(k + 1).ln();
        max.saturating_sub((max - min).mul_f64(frac)).max(min)
    };
    let cases: [(&[usize], u32); 5] = [
        (&[], 0),
        (&[1], 0),
        (&[2], 1),
        (&[2, 3], 2),
        (&[2, 3, 4], 3),
    ];
    let mut last = None;
    for (confirmers, c) in cases {
        let took = time_to_dead(7, confirmers);
        let want = lifeguard(c);
        assert!(
            took >= want && took <= want + STEP,
            "with confirmers {confirmers:?} ({c} distinct): dead after {took:?}, want {want:?}"
        );
        if !confirmers.is_empty() && confirmers != [1] {
            assert!(
                last.is_some_and(|l| took < l),
                "more confirmations must shorten the timeout"
            );
        }
        last = Some(took);
    }
    assert!(lifeguard(0) == max && lifeguard(3) == min);
}

#[test]
fn crashed_peer_is_declared_dead_before_the_maximum_when_others_confirm() {
    for_seeds(|seed| {
        let mut net = Net::joined(4, seed);
        let config = Config::for_test();
        net.crash(3);
        net.run_until(ms(3_000), "all survivors hold n3 dead", |net| {
            (0..3).all(|i| net.state_of(i, 3) == Some(State::Dead))
        });
        let max = config.suspicion_min(4) * config.suspicion_max_mult;
        let first_suspect = (0..3)
            .map(|i| expect_event(&net, i, &Event::MemberSuspected(id(3))))
            .min()
            .expect("3");
        let first_dead = (0..3)
            .map(|i| expect_event(&net, i, &Event::MemberDead(id(3))))
            .min()
            .expect("3");
        assert!(
            first_dead - first_suspect < max,
            "confirmations should have shortened {max:?}; took {:?}",
            first_dead - first_suspect
        );
        let suspecters: BTreeSet<NodeId> = net
            .log
            .iter()
            .flat_map(|s| s.env.updates.iter())
            .filter_map(|u| match u {
                Update::Suspect { id: i, by, .. } if *i == id(3) => Some(*by),
                _ => None,
            })
            .collect();
        assert!(
            suspecters.len() >= 2,
            "several independent suspecters gossiped: {suspecters:?}"
        );
    });
}

#[test]
fn push_pull_report_of_death_only_suspects_a_live_member() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        // n1 claims, in a full-state exchange, that n2 is dead.
        let members = vec![
            member(1, 1, State::Alive),
            member(2, 1, State::Dead),
            member(0, 1, State::Alive),
        ];
        let body = Body::PushPull {
            join: false,
            reply: true,
            members,
        };
        net.inject(0, Channel::Stream, &envelope(1, body, Vec::new()));
        expect_event(&net, 0, &Event::MemberSuspected(id(2)));
        expect_no_event(&net, 0, &Event::MemberDead(id(2)));
        // n2 gets its chance and refutes.
        net.run_until(ms(2_000), "n0 holds n2 alive again", |net| {
            net.state_of(0, 2) == Some(State::Alive)
        });
        expect_event(&net, 0, &Event::MemberRecovered(id(2)));
        expect_no_event(&net, 0, &Event::MemberDead(id(2)));
        assert!(net.p(2).me().incarnation >= 2);
    });
}

#[test]
fn missing_nacks_raise_health_score_and_acks_lower_it() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        assert_eq!(net.p(0).health_score(), 0);
        // Nothing reaches n0: no acks, no nacks. The fault is on its side.
        net.cut.insert((1, 0));
        net.cut.insert((2, 0));
        net.run_until(ms(2_000), "n0's health score rose", |net| {
            net.p(0).health_score() >= 2
        });
        net.cut.clear();
        net.run_until(ms(15_000), "n0 healthy again with everyone Alive", |net| {
            net.p(0).health_score() == 0 && net.all_alive(&[0, 1, 2])
        });
    });
}

// ---- gossip ---------------------------------------------------------------

#[test]
fn update_is_piggybacked_at_most_retransmit_limit_times() {
    for_seeds(|seed| {
        let mut net = Net::joined(4, seed);
        let limit = Config::for_test().retransmit_limit(4);
        let start = net.log.len();
        let mut new_meta = meta(0);
        new_meta.tags.insert("rack".into(), "r1".into());
        let now = net.now;
        net.p_mut(0).handle_update_meta(now, new_meta);
        net.run_for(ms(3_000));

        let is_it =
            |u: &Update| matches!(u, Update::Alive { id: i, incarnation: 2, .. } if *i == id(0));
        for i in 0..4 {
            let sends = net.log[start..]
                .iter()
                .filter(|s| s.from == i && carries(&s.env, is_it))
                .count();
            let sends = u32::try_from(sends).expect("few");
            if i == 0 {
                assert_eq!(
                    sends, limit,
                    "the origin sends its update exactly {limit} times"
                );
            } else {
                assert!(
                    sends <= limit,
                    "n{i} relayed the update {sends} times, limit {limit}"
                );
            }
            assert_eq!(net.p(i).pending_broadcasts(), 0, "n{i} retired it");
        }
        for i in 1..4 {
            expect_member(&net, i, 0, State::Alive, 2);
        }
    });
}

#[test]
fn datagrams_stay_within_max_datagram_size_with_many_queued_updates() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        let config = Config::for_test();
        // 150 members with bulky metadata land on n0 at once.
        let fakes: Vec<Member> = (0..150u16)
            .map(|k| {
                let mut m = Meta::new(
                    SocketAddr::from(([127, 0, 0, 2], 8000 + k)),
                    format!("fake-{k}"),
                );
                m.tags.insert("padding".into(), "x".repeat(200));
                m.build = "ringkv 0.1.0 (test build with a long version string)".into();
                Member {
                    id: NodeId::from_name(&format!("fake-{k}")),
                    incarnation: 1,
                    state: State::Alive,
                    meta: m.into(),
                }
            })
            .collect();
        let fake_ids: BTreeSet<NodeId> = fakes.iter().map(|m| m.id).collect();
        let start = net.log.len();
        let body = Body::PushPull {
            join: false,
            reply: true,
            members: fakes,
        };
        net.inject(0, Channel::Stream, &envelope(1, body, Vec::new()));
        assert!(net.p(0).pending_broadcasts() >= 150);
        net.run_for(ms(2_000));

        let datagrams: Vec<&Sent> = net.log[start..]
            .iter()
            .filter(|s| s.channel == Channel::Datagram)
            .collect();
        let largest = datagrams.iter().map(|s| s.len).max().unwrap_or(0);
        for s in &datagrams {
            assert!(
                s.len <= config.max_datagram_size,
                "n{} sent a {}-byte datagram",
                s.from,
                s.len
            );
        }
        assert!(
            largest > config.max_datagram_size - 300,
            "datagrams are packed (largest {largest} bytes)"
        );
        let spread: BTreeSet<NodeId> = datagrams
            .iter()
            .filter(|s| s.from == 0)
            .flat_map(|s| s.env.updates.iter().map(Update::id))
            .filter(|i| fake_ids.contains(i))
            .collect();
        assert_eq!(
            spread.len(),
            fake_ids.len(),
            "every queued update was sent at least once"
        );
    });
}

#[test]
fn metadata_update_reaches_others_as_meta_changed() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        let mut new_meta = meta(0);
        new_meta.weight = 3;
        new_meta.zone = Some("z1".into());
        let now = net.now;
        net.p_mut(0).handle_update_meta(now, new_meta.clone());
        net.flush();
        expect_event(&net, 0, &Event::IncarnationChanged(2));
        assert_eq!(*net.p(0).me().meta, new_meta);

        net.run_until(ms(1_000), "n1 and n2 have n0's new metadata", |net| {
            (1..3).all(|i| net.p(i).member(&id(0)).is_some_and(|m| *m.meta == new_meta))
        });
        for i in 1..3 {
            expect_event(&net, i, &Event::MetaChanged(id(0)));
            expect_member(&net, i, 0, State::Alive, 2);
            assert!(
                !net.has_event_since(i, &Event::MemberJoined(id(0)), now),
                "n{i}: a metadata change is no join"
            );
        }
        // The same metadata again changes nothing.
        let events = net.events.len();
        net.p_mut(0).handle_update_meta(now, new_meta);
        net.flush();
        assert_eq!(net.p(0).me().incarnation, 2);
        assert_eq!(net.events.len(), events);
    });
}

// ---- leaving and restarting ---------------------------------------------------

#[test]
fn leave_is_seen_as_left_not_dead_and_is_final_for_its_incarnation() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        let limit = Config::for_test().retransmit_limit(3);
        let now = net.now;
        net.p_mut(2).handle_leave(now);
        net.flush();
        assert!(net.p(2).has_left());
        net.run_until(ms(2_000), "n2's leave spread", |net| {
            net.p(2).leave_spread(limit)
        });
        net.crash(2);
        net.run_for(ms(3_000));

        for i in 0..2 {
            expect_event(&net, i, &Event::MemberLeft(id(2)));
            expect_no_event(&net, i, &Event::MemberSuspected(id(2)));
            expect_no_event(&net, i, &Event::MemberDead(id(2)));
            expect_member(&net, i, 2, State::Left, 1);
            assert_eq!(net.p(i).live_count(), 1);
        }
        assert_eq!(net.p(0).view_digest(), net.p(1).view_digest());

        // A stale Alive of the same incarnation does not bring it back...
        let digest = net.p(0).view_digest();
        let t_stale = net.now;
        net.inject(
            0,
            Channel::Datagram,
            &envelope(1, Body::Gossip, vec![alive(2, 1)]),
        );
        net.inject(
            0,
            Channel::Stream,
            &envelope(
                1,
                Body::PushPull {
                    join: false,
                    reply: true,
                    members: vec![member(2, 1, State::Alive)],
                },
                Vec::new(),
            ),
        );
        expect_member(&net, 0, 2, State::Left, 1);
        assert!(
            !net.has_event_since(0, &Event::MemberJoined(id(2)), t_stale),
            "a stale Alive revived n2"
        );
        assert_eq!(net.p(0).view_digest(), digest);

        // ...a restart with a higher incarnation does.
        let now = net.now;
        net.restart(2, peer(2, 2, seed, now));
        net.join(2, 0);
        assert!(net.has_event_since(0, &Event::MemberJoined(id(2)), t_stale));
        net.run_until(ms(1_000), "n1 holds n2 alive again", |net| {
            net.state_of(1, 2) == Some(State::Alive)
        });
        assert!(net.has_event_since(1, &Event::MemberJoined(id(2)), t_stale));
        expect_member(&net, 1, 2, State::Alive, 2);
        assert_eq!(
            net.p(2).me().incarnation,
            2,
            "a Left of an older life needs no refutation"
        );
    });
}

#[test]
fn peer_restarted_with_higher_incarnation_after_death_rejoins() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        net.crash(2);
        net.run_until(ms(3_000), "n2 dead at both", |net| {
            net.state_of(0, 2) == Some(State::Dead) && net.state_of(1, 2) == Some(State::Dead)
        });
        // Dead is final for its incarnation: a stale Alive changes nothing.
        let digest = net.p(0).view_digest();
        net.inject(
            0,
            Channel::Datagram,
            &envelope(1, Body::Gossip, vec![alive(2, 1)]),
        );
        expect_member(&net, 0, 2, State::Dead, 1);
        assert_eq!(net.p(0).view_digest(), digest);

        let t_restart = net.now;
        net.restart(2, peer(2, 2, seed, t_restart));
        net.join(2, 0);
        assert!(net.p(2).is_joined());
        net.run_until(ms(1_000), "n2 Alive at both", |net| {
            net.all_alive(&[0, 1, 2])
        });
        for i in 0..2 {
            assert!(net.has_event_since(i, &Event::MemberJoined(id(2)), t_restart));
            expect_member(&net, i, 2, State::Alive, 2);
        }
        assert_eq!(net.p(2).me().incarnation, 2, "no refutation needed");
        net.settle(&[0, 1, 2]);
    });
}

#[test]
fn peer_restarted_with_its_old_incarnation_refutes_its_own_death() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        net.crash(2);
        net.run_until(ms(3_000), "n2 dead at both", |net| {
            net.state_of(0, 2) == Some(State::Dead) && net.state_of(1, 2) == Some(State::Dead)
        });
        let t_restart = net.now;
        // It lost its persisted incarnation: the seed's reply tells it it is dead.
        net.restart(2, peer(2, 1, seed, t_restart));
        net.join(2, 0);
        expect_event(&net, 2, &Event::IncarnationChanged(2));
        net.run_until(ms(1_000), "n2 Alive at both", |net| {
            net.all_alive(&[0, 1, 2])
        });
        for i in 0..2 {
            assert!(net.has_event_since(i, &Event::MemberJoined(id(2)), t_restart));
            expect_member(&net, i, 2, State::Alive, 2);
        }
    });
}

#[test]
fn metadata_update_after_leave_does_not_revive_the_leaver() {
    let mut net = Net::joined(3, 17);
    let now = net.now;
    net.p_mut(2).handle_leave(now);
    let mut new_meta = meta(2);
    new_meta.status = crate::proto::member::NodeStatus::Leaving;
    net.p_mut(2).handle_update_meta(now, new_meta);
    net.flush();
    net.run_for(ms(1_000));
    for i in 0..2 {
        assert_eq!(
            net.state_of(i, 2),
            Some(State::Left),
            "n{i} must hold n2 Left\n{}",
            net.matrix()
        );
    }
}

// ---- robustness ---------------------------------------------------------------

#[test]
fn message_from_another_cluster_is_dropped() {
    for_seeds(|seed| {
        let mut net = Net::joined(2, seed);
        let digest = net.p(0).view_digest();
        let events = net.events.len();

        // A whole peer configured for another cluster tries to join through n0.
        let other = Config {
            cluster: ClusterId([7; 16]),
            ..Config::for_test()
        };
        let now = net.now;
        net.peers
            .push(Some(peer_with(other.clone(), 2, 1, seed, now)));
        net.join(2, 0);
        assert_eq!(net.p(0).stats().foreign_dropped, 1);
        net.run_for(ms(500));
        assert!(
            net.p(0).stats().foreign_dropped >= 2,
            "its retries are dropped too"
        );
        assert!(!net.p(2).is_joined());
        assert!(net.p(0).member(&id(2)).is_none());

        // A datagram with statements that would matter if it were ours.
        let before = net.p(1).stats().foreign_dropped;
        let mut env = envelope(
            2,
            Body::Gossip,
            vec![
                alive(2, 1),
                Update::Suspect {
                    id: id(0),
                    incarnation: 1,
                    by: id(2),
                },
            ],
        );
        env.cluster = other.cluster;
        net.inject(1, Channel::Datagram, &env);
        assert_eq!(net.p(1).stats().foreign_dropped, before + 1);

        for i in 0..2 {
            assert!(net.p(i).member(&id(2)).is_none());
            assert_eq!(net.p(i).me().incarnation, 1);
            assert_eq!(net.p(i).view_digest(), digest);
        }
        assert!(
            net.events[events..].iter().all(|(_, p, _)| *p == 2),
            "no events at n0 or n1"
        );
    });
}

#[test]
fn garbage_bytes_are_rejected_and_change_nothing() {
    for_seeds(|seed| {
        let mut net = Net::joined(2, seed);
        let valid = codec::encode(&envelope(1, Body::Gossip, vec![alive(3, 1)])).expect("encodes");
        let mut trailing = valid.clone();
        trailing.push(0);
        let mut bad_version = valid.clone();
        bad_version[2] = 99;
        let garbage: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("two bytes", b"RG".to_vec()),
            ("bad magic", b"XX\x01\x00\x00".to_vec()),
            ("bad version", bad_version),
            ("header only", b"RG\x01".to_vec()),
            ("truncated", valid[..valid.len() - 5].to_vec()),
            ("trailing byte", trailing),
            (
                "random",
                (0..200u32)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect(),
            ),
            ("too large", [b"RG\x01".as_slice(), &[0u8; 3_000]].concat()),
        ];
        let now = net.now;
        let p = net.p_mut(0);
        let digest = p.view_digest();
        let members: Vec<Member> = p.members().cloned().collect();
        let timers = p.pending_timers();
        let stats = p.stats().clone();
        for (what, bytes) in &garbage {
            assert!(
                p.handle_datagram(now, bytes).is_err(),
                "{what}: datagram accepted"
            );
            assert!(
                p.handle_stream(now, bytes).is_err(),
                "{what}: stream accepted"
            );
        }
        assert_eq!(
            p.stats().decode_errors,
            stats.decode_errors + 2 * garbage.len() as u64
        );
        assert_eq!(p.view_digest(), digest);
        assert_eq!(p.members().cloned().collect::<Vec<_>>(), members);
        assert_eq!(p.pending_timers(), timers);
        assert!(p.poll_transmit().is_none());
        assert!(p.poll_event().is_none());
        let after = p.stats();
        assert_eq!(
            (after.foreign_dropped, after.refutations, after.probes),
            (stats.foreign_dropped, stats.refutations, stats.probes)
        );
        // The valid message is still accepted afterwards.
        p.handle_datagram(now, &valid).expect("valid bytes decode");
        assert!(p.member(&id(3)).is_some());
    });
}

#[test]
fn claims_at_the_highest_incarnation_do_not_panic() {
    let t0 = Instant::now();
    for update in [
        Update::Suspect {
            id: id(0),
            incarnation: u64::MAX,
            by: id(1),
        },
        Update::Alive {
            id: id(0),
            incarnation: u64::MAX,
            meta: meta(0).into(),
        },
    ] {
        let mut p = peer(0, 1, 20, t0);
        let bytes = codec::encode(&envelope(1, Body::Gossip, vec![update])).expect("encodes");
        p.handle_datagram(t0, &bytes).expect("decodes");
        assert!(p.me().incarnation >= 1, "incarnation never decreases");
    }
}

#[test]
fn stalled_peer_suspects_nobody_while_catching_up() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        let config = Config::for_test();
        let before = net.p(0).stats().clone();
        assert_eq!(before.stalls, 0);
        // n0's loop stalls for far longer than stall_threshold.
        net.paused.insert(0);
        net.run_for(config.stall_threshold * 3);
        net.paused.clear();
        // From now on nothing reaches n0: no acks, no refutations.
        net.cut.insert((1, 0));
        net.cut.insert((2, 0));
        let resumed = net.now + STEP;
        net.step();

        assert_eq!(net.p(0).stats().stalls, 1);
        assert!(net.p(0).is_catching_up(net.now));
        // Every step that runs entirely inside the catch-up window.
        while net.p(0).is_catching_up(net.now + STEP) {
            net.step();
            for j in 1..3 {
                assert!(
                    !net.has_event_since(0, &Event::MemberSuspected(id(j)), resumed),
                    "n0 suspected n{j} while catching up"
                );
            }
            assert!(net.elapsed() < ms(20_000), "catch-up window never ends");
        }
        let after = net.p(0).stats().clone();
        assert!(
            after.probes_failed > before.probes_failed,
            "probes failed inside the window"
        );
        assert_eq!(
            after.suspicions_raised, before.suspicions_raised,
            "yet nobody was suspected"
        );
        assert_eq!(after.stalls, 1, "one stall, counted once");

        // The guard is bounded: after the window, silence counts again.
        net.run_until(ms(5_000), "n0 suspects someone after catching up", |net| {
            net.p(0).stats().suspicions_raised > before.suspicions_raised
        });
    });
}

#[test]
fn partition_heals_without_rejoining() {
    for_seeds(|seed| {
        let mut net = Net::joined(4, seed);
        let (left, right) = ([0, 1], [2, 3]);
        net.partition(&left, &right);
        net.run_until(ms(5_000), "each half holds the other Dead", |net| {
            left.iter().all(|&a| {
                right.iter().all(|&b| {
                    net.state_of(a, b) == Some(State::Dead)
                        && net.state_of(b, a) == Some(State::Dead)
                })
            })
        });
        for i in 0..4 {
            assert_eq!(net.p(i).live_count(), 1, "n{i} sees only its half");
        }
        let healed = net.now;
        net.cut.clear();

        let all = [0, 1, 2, 3];
        net.run_until(ms(20_000), "everyone Alive at everyone", |net| {
            net.all_alive(&all)
        });
        net.settle(&all);
        for i in all {
            assert_eq!(net.p(i).live_count(), 3);
            assert!(net.p(i).is_joined());
        }
        // The halves found each other by pinging the dead, then swapped state.
        expect_sent(&net, "a ping to a member held dead, after the heal", |s| {
            s.at >= healed
                && matches!(&s.env.body, Body::Ping { target, .. }
                if matches!(s.env.updates.first(), Some(Update::Dead { id: d, .. }) if d == target))
        });
        expect_sent(&net, "a push-pull across the former partition", |s| {
            s.at >= healed
                && s.delivered
                && s.channel == Channel::Stream
                && left.contains(&s.from) != net.index_of(s.to).is_some_and(|t| left.contains(&t))
        });
    });
}

#[test]
fn dead_members_are_reaped_after_dead_reap_after() {
    for_seeds(|seed| {
        let config = Config {
            dead_reap_after: ms(3_000),
            ..Config::for_test()
        };
        let mut net = Net::with_config(3, seed, &config);
        for i in 1..3 {
            net.join(i, 0);
        }
        net.run_until(ms(3_000), "all Alive", |net| net.all_alive(&[0, 1, 2]));
        net.crash(2);
        net.run_until(ms(3_000), "n2 dead at both", |net| {
            net.state_of(0, 2) == Some(State::Dead) && net.state_of(1, 2) == Some(State::Dead)
        });
        net.run_until(ms(20_000), "n2 forgotten at both", |net| {
            net.p(0).member(&id(2)).is_none() && net.p(1).member(&id(2)).is_none()
        });
        for i in 0..2 {
            let dead = expect_event(&net, i, &Event::MemberDead(id(2)));
            let reaped = expect_event(&net, i, &Event::MemberReaped(id(2)));
            assert!(
                reaped - dead >= config.dead_reap_after,
                "n{i} reaped n2 too early"
            );
        }
        net.settle(&[0, 1]);
        assert_eq!(net.p(0).members().count(), 1);
    });
}

#[test]
fn own_failed_probe_of_a_suspect_counts_as_a_confirmation() {
    // A long maximum so n0 surely probes the suspect before it runs out.
    let config = Config {
        suspicion_max_mult: 20,
        ..Config::for_test()
    };
    let max = config.suspicion_min(6) * config.suspicion_max_mult;
    for_seeds(|seed| {
        // n0 is real; n1..=n4 are puppets that answer; n5 answers nothing.
        let mut net = Net::with_config(1, seed, &config);
        for i in 1..=4 {
            net.puppets.insert(addr(i), id(i));
        }
        let members = (1..=5).map(|i| member(i, 1, State::Alive)).collect();
        let body = Body::PushPull {
            join: false,
            reply: true,
            members,
        };
        net.inject(0, Channel::Stream, &envelope(1, body, Vec::new()));
        // n1 suspects n5 before n0 ever probes it.
        let start = net.now;
        let suspect = Update::Suspect {
            id: id(5),
            incarnation: 1,
            by: id(1),
        };
        net.inject(
            0,
            Channel::Datagram,
            &envelope(1, Body::Gossip, vec![suspect]),
        );
        expect_event(&net, 0, &Event::MemberSuspected(id(5)));
        net.run_until(max + STEP, "n0 declared n5 dead", |net| {
            net.state_of(0, 5) == Some(State::Dead)
        });
        expect_sent(&net, "n0's own ping of the suspect", |s| {
            s.from == 0 && s.to == addr(5) && matches!(s.env.body, Body::Ping { .. })
        });
        expect_sent(&net, "n0's confirmation of the suspicion", |s| {
            s.from == 0
                && carries(
                    &s.env,
                    |u| matches!(u, Update::Suspect { id: i, by, .. } if *i == id(5) && *by == id(0)),
                )
        });
        let took = net.now - start;
        assert!(
            took < max,
            "no confirmation counted: dead after the maximum {took:?}"
        );
    });
}

#[test]
fn stalled_peer_reads_its_inbox_before_declaring_anyone_dead() {
    for_seeds(|seed| {
        let mut net = Net::joined(2, seed);
        let config = Config::for_test();
        // n1's acks to n0 are lost until n0 suspects n1.
        net.drop_rule = Some(Box::new(|from, to, env| {
            from == 1 && to == 0 && matches!(env.body, Body::Ack { .. })
        }));
        net.run_until(ms(2_000), "n0 suspects n1", |net| {
            net.state_of(0, 1) == Some(State::Suspect)
        });
        net.drop_rule = None;
        // Then n0's loop stalls past the suspicion's deadline, while n1's
        // refutation waits in n0's inbox.
        net.hold = true;
        net.paused.insert(0);
        net.run_for(config.suspicion_min(2) * config.suspicion_max_mult + ms(500));
        assert!(
            net.held.iter().any(|(from, _, _)| *from == 1),
            "n1's refutation is waiting"
        );
        net.paused.clear();
        let resumed = net.now + STEP;
        net.step();

        assert_eq!(net.p(0).stats().stalls, 1);
        expect_no_event(&net, 0, &Event::MemberDead(id(1)));
        assert!(net.has_event_since(0, &Event::MemberRecovered(id(1)), resumed));
        expect_member(&net, 0, 1, State::Alive, net.p(1).me().incarnation);
        net.run_until(ms(5_000), "everyone Alive again", |net| {
            net.all_alive(&[0, 1])
        });
        expect_no_event(&net, 0, &Event::MemberDead(id(1)));
    });
}

#[test]
fn ping_meant_for_another_peer_is_not_acked() {
    for_seeds(|seed| {
        let mut net = Net::joined(2, seed);
        let acks = |net: &Net, seq: u64| {
            net.log
                .iter()
                .filter(|s| s.from == 0 && s.env.body == Body::Ack { seq })
                .count()
        };
        // A peer that used to live at n0's address.
        let ping = Body::Ping {
            seq: 1_000_001,
            target: id(9),
        };
        net.inject(0, Channel::Datagram, &envelope(1, ping, Vec::new()));
        assert_eq!(acks(&net, 1_000_001), 0, "n0 acked a ping meant for n9");
        let ping = Body::Ping {
            seq: 1_000_002,
            target: id(0),
        };
        net.inject(0, Channel::Datagram, &envelope(1, ping, Vec::new()));
        assert_eq!(acks(&net, 1_000_002), 1);
    });
}

#[test]
fn indirect_probes_run_for_others_are_bounded_and_nacked() {
    for_seeds(|seed| {
        let mut net = Net::joined(2, seed);
        let config = Config::for_test();
        let start = net.log.len();
        // A flood of requests to probe n9, which does not exist.
        let flood = config.forward_probes_max + 50;
        for k in 0..flood {
            let seq = 2_000_000 + k as u64;
            let body = Body::PingReq {
                seq,
                target: id(9),
                target_addr: addr(9),
            };
            net.inject(0, Channel::Datagram, &envelope(1, body, Vec::new()));
        }
        let pings = net.log[start..]
            .iter()
            .filter(|s| s.from == 0 && s.to == addr(9) && matches!(s.env.body, Body::Ping { .. }))
            .count();
        assert_eq!(
            pings, config.forward_probes_max,
            "one ping per request, up to the bound"
        );
        net.run_for(config.probe_timeout + STEP);
        let nacks = net.log[start..]
            .iter()
            .filter(|s| {
                s.from == 0
                    && s.to == addr(1)
                    && matches!(s.env.body, Body::Nack { seq } if seq >= 2_000_000)
            })
            .count();
        assert_eq!(
            nacks, pings,
            "every forwarded probe that timed out is nacked"
        );
        // The slots are free again.
        let body = Body::PingReq {
            seq: 3_000_000,
            target: id(9),
            target_addr: addr(9),
        };
        let before = net.log.len();
        net.inject(0, Channel::Datagram, &envelope(1, body, Vec::new()));
        assert!(net.log[before..]
            .iter()
            .any(|s| s.from == 0 && s.to == addr(9)));
        assert!(net.all_alive(&[0, 1]));
    });
}

#[test]
fn halves_that_forgot_each_other_meet_again_through_seed_contact() {
    let config = Config {
        dead_reap_after: ms(3_000),
        ..Config::for_test()
    };
    for_seeds(|seed| {
        let mut net = Net::with_config(4, seed, &config);
        for i in 1..4 {
            net.join(i, 0);
        }
        let all = [0, 1, 2, 3];
        net.run_until(ms(3_000), "all Alive", |net| net.all_alive(&all));
        let (left, right) = ([0, 1], [2, 3]);
        net.partition(&left, &right);
        net.run_until(ms(30_000), "each half forgot the other", |net| {
            all.iter().all(|&i| net.p(i).members().count() == 1)
        });
        net.cut.clear();
        net.run_until(ms(20_000), "everyone Alive at everyone", |net| {
            net.all_alive(&all)
        });
        net.settle(&all);
    });
}
