//! The SWIM state machine with Lifeguard. Sans-IO: no sockets, no clock, no
//! threads. Time comes in as `now`, randomness from the generator it was
//! built with, and everything it wants done comes out of `poll_*`.
//!
//! Call order, for a shell or a simulator:
//! 1. Build it with [`Swim::new`]; call [`Swim::handle_join`] with seeds, or
//!    not, to start a cluster of one.
//! 2. Feed it: [`Swim::handle_datagram`] and [`Swim::handle_stream`] for
//!    received bytes, [`Swim::handle_timeout`] when [`Swim::poll_timeout`]
//!    is reached, and the `handle_*` requests (leave, metadata).
//! 3. After every call, drain [`Swim::poll_transmit`] (send each to its
//!    address on its channel) and [`Swim::poll_event`].
//!
//! Invariants: `members` never holds this peer; `live` holds exactly the
//! Alive and Suspect members and `dead` the Dead ones; `digest` is the XOR of
//! every member's digest part, this peer's included; each suspicion belongs
//! to a Suspect member at the suspicion's incarnation; `entries` holds, for
//! every member, the signed statements behind its state (`auth.rs`), and
//! `me_entry` this peer's own.
//!
//! Authorship: a statement from the network changes nothing unless its
//! author signed it (`auth.rs`), its incarnation is within
//! `incarnation_jump_max` of the last accepted one, an Alive's weight is in
//! `1..=WEIGHT_MAX`, and a new member fits `members_max`. Checks run only on
//! statements that would change something, so the many repeats gossip
//! carries cost nothing. Rejections are counted in [`Stats::rejected`].

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore};
use ringkv_ring::NodeId;

use crate::config::Config;
use crate::error::CodecError;
use crate::proto::auth::{self, Auth, Reject, Rejections};
use crate::proto::awareness::Awareness;
use crate::proto::broadcast::Broadcasts;
use crate::proto::codec;
use crate::proto::idset::IdSet;
use crate::proto::member::{digest_part, shape_part, Incarnation, Member, Meta, State};
use crate::proto::message::{Body, Entry, Envelope, Update};
use crate::proto::probe::{Forward, Probe};
use crate::proto::suspicion::Suspicion;
use crate::proto::timer::{TimerKind, Timers};
use crate::proto::version;

/// How bytes travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Unreliable, unordered, at most `max_datagram_size` (QUIC datagram).
    Datagram,
    /// Reliable (QUIC stream), at most `max_stream_message`.
    Stream,
}

/// Bytes to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// How to send them.
    pub channel: Channel,
    /// The encoded message.
    pub bytes: Vec<u8>,
}

/// What changed, for the owner of the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A member became live: new, or back from Dead or Left.
    MemberJoined(NodeId),
    /// A member is suspected.
    MemberSuspected(NodeId),
    /// A suspected member refuted and is Alive again.
    MemberRecovered(NodeId),
    /// A member was declared dead.
    MemberDead(NodeId),
    /// A member left gracefully.
    MemberLeft(NodeId),
    /// A live member's metadata changed.
    MetaChanged(NodeId),
    /// A long-dead or long-gone member was forgotten.
    MemberReaped(NodeId),
    /// A seed answered: this peer has the cluster's state.
    JoinedCluster,
    /// This peer's incarnation rose (persist it: it must only grow).
    IncarnationChanged(Incarnation),
}

/// Counters, for metrics and the simulator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Probes started.
    pub probes: u64,
    /// Probes that got no ack in their period.
    pub probes_failed: u64,
    /// Suspicions this peer raised itself.
    pub suspicions_raised: u64,
    /// Times this peer refuted a suspicion or death of itself.
    pub refutations: u64,
    /// Datagrams sent and their bytes.
    pub datagrams_sent: u64,
    /// Bytes in datagrams sent.
    pub datagram_bytes_sent: u64,
    /// Stream messages sent.
    pub streams_sent: u64,
    /// Bytes in stream messages sent.
    pub stream_bytes_sent: u64,
    /// Messages received (both channels).
    pub messages_received: u64,
    /// Bytes received (both channels).
    pub bytes_received: u64,
    /// Messages that did not decode.
    pub decode_errors: u64,
    /// Messages from another cluster.
    pub foreign_dropped: u64,
    /// Stalls of this peer's own loop noticed.
    pub stalls: u64,
    /// Push-pulls started because a live peer's view stayed different
    /// from this peer's past the gossip of an update (a missed update).
    pub view_repairs: u64,
    /// Statements dropped, by reason (unsigned, forged, too big a jump...).
    pub rejected: Rejections,
    /// Messages decoded, by wire version (`[v - MIN_VERSION]`): shows when
    /// a rolled cluster has switched to a new version.
    pub received_by_version: [u64; VERSIONS],
}

/// Wire versions this build knows: `MIN_VERSION..=MAX_KNOWN_VERSION`.
pub const VERSIONS: usize = (codec::MAX_KNOWN_VERSION - codec::MIN_VERSION + 1) as usize;

/// A live peer whose reported view differs from this peer's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Disagreement {
    /// Since when, or since the last repair with it.
    pub(crate) since: Instant,
    /// Repairs with it since the views last agreed.
    pub(crate) repairs: u32,
}

/// Where an update came from; push-pull states are weaker evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Gossip,
    PushPull,
    Local,
}

/// Reap scan period.
const REAP_PERIOD: Duration = Duration::from_secs(10);
/// Most events or transmits queued before the caller drains them; beyond,
/// the oldest events are dropped (transmits are never dropped: they are
/// bounded by the work one call does).
const EVENTS_MAX: usize = 65_536;
/// Live members told of a graceful leave on a stream, besides the
/// datagram gossip.
pub const LEAVE_NOTICES: usize = 3;

/// One peer's membership protocol. See the module doc for the call order.
#[derive(Debug)]
pub struct Swim<R> {
    pub(crate) config: Config,
    pub(crate) rng: R,
    pub(crate) me: Member,
    pub(crate) left: bool,
    pub(crate) members: BTreeMap<NodeId, Member>,
    /// The signed statements behind each member's state (same keys).
    pub(crate) entries: BTreeMap<NodeId, Entry>,
    /// This peer's own latest Alive and, once it left, its Left.
    pub(crate) me_entry: Entry,
    /// Signs this peer's statements and checks others'.
    pub(crate) auth: Box<dyn Auth>,
    /// When each Dead or Left member became so (for reaping).
    pub(crate) gone_since: BTreeMap<NodeId, Instant>,
    pub(crate) live: IdSet,
    pub(crate) dead: IdSet,
    pub(crate) digest: u64,
    /// Ring-shape digest: XOR of every member's [`Member::shape_part`].
    pub(crate) shape: u64,
    /// What each peer last reported: `(view digest, ring-shape digest)`.
    pub(crate) peer_views: BTreeMap<NodeId, (u64, u64)>,
    /// Live peers whose reported view differs from this peer's: since
    /// when (or since the last repair with them), and how many repairs
    /// with them have not made the views agree (each doubles the wait).
    pub(crate) disagree: BTreeMap<NodeId, Disagreement>,
    /// Members forgotten by reaping, with the incarnation they were gone
    /// at and when: a full state from a peer that has not reaped them yet
    /// must not bring them back (each peer reaps on its own timer, so the
    /// views differ for a while, and a repair would otherwise restore
    /// them and restart their clock, for ever). Kept `dead_reap_after`.
    pub(crate) reaped: BTreeMap<NodeId, (Incarnation, Instant)>,
    /// No repair by push-pull before this (see [`Config::repair_period`]).
    pub(crate) repair_after: Option<Instant>,
    /// Whether a [`TimerKind::GossipNow`] is set and not yet run.
    pub(crate) gossip_now_set: bool,
    pub(crate) probe_order: Vec<NodeId>,
    pub(crate) probe_next: usize,
    /// Probes in flight by seq: the round-robin one and suspicion probes.
    pub(crate) probes: BTreeMap<u64, Probe>,
    pub(crate) forwards: BTreeMap<u64, Forward>,
    /// Pings sent to dead members to find healed partitions: seq → member.
    pub(crate) dead_pings: BTreeMap<u64, NodeId>,
    pub(crate) suspicions: BTreeMap<NodeId, Suspicion>,
    pub(crate) broadcasts: Broadcasts,
    pub(crate) awareness: Awareness,
    pub(crate) timers: Timers,
    pub(crate) seq: u64,
    pub(crate) seeds: Vec<SocketAddr>,
    pub(crate) joined: bool,
    pub(crate) join_backoff: Duration,
    /// Until then, this peer convicts nobody: its own loop stalled.
    pub(crate) catch_up_until: Option<Instant>,
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) stats: Stats,
}

impl<R: RngCore> Swim<R> {
    /// A peer alone in its cluster, joined to nobody yet.
    ///
    /// `incarnation` must be above any this peer used before (the daemon
    /// persists it); `rng` is this peer's only source of randomness; `auth`
    /// signs this peer's statements (its key must match `id`) and checks
    /// everyone else's.
    ///
    /// # Panics
    /// If `config` does not validate, or `auth`'s key is not `id`'s.
    pub fn new(
        config: Config,
        id: NodeId,
        incarnation: Incarnation,
        meta: Meta,
        rng: R,
        auth: Box<dyn Auth>,
        now: Instant,
    ) -> Self {
        config.validate().expect("gossip config must validate");
        assert!(
            auth.key_matches(&id, &auth.public_key()),
            "the signing key must be this node's identity"
        );
        let me = Member {
            id,
            incarnation,
            state: State::Alive,
            meta: Arc::new(meta),
        };
        let digest = me.digest_part();
        let shape = me.shape_part();
        let alive = auth::sign(
            auth.as_ref(),
            &config.cluster,
            Update::Alive {
                id,
                incarnation,
                meta: me.meta.clone(),
                key: auth.public_key(),
                sig: auth::Sig::NONE,
            },
        );
        let mut swim = Self {
            entries: BTreeMap::new(),
            me_entry: Entry::new(alive, None),
            auth,
            broadcasts: Broadcasts::new(config.broadcast_queue_max),
            awareness: Awareness::new(config.awareness_max),
            join_backoff: config.probe_interval,
            config,
            rng,
            me,
            left: false,
            members: BTreeMap::new(),
            gone_since: BTreeMap::new(),
            live: IdSet::default(),
            dead: IdSet::default(),
            digest,
            shape,
            peer_views: BTreeMap::new(),
            disagree: BTreeMap::new(),
            reaped: BTreeMap::new(),
            repair_after: None,
            gossip_now_set: false,
            probe_order: Vec::new(),
            probe_next: 0,
            probes: BTreeMap::new(),
            forwards: BTreeMap::new(),
            dead_pings: BTreeMap::new(),
            suspicions: BTreeMap::new(),
            timers: Timers::default(),
            seq: 0,
            seeds: Vec::new(),
            joined: true,
            catch_up_until: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        };
        // Spread the periodic timers so peers started together do not
        // probe and gossip in lockstep.
        let probe_at = now + swim.jitter(swim.config.probe_interval);
        let gossip_at = now + swim.jitter(swim.config.gossip_interval);
        let pp_at =
            now + swim.config.push_pull_interval + swim.jitter(swim.config.push_pull_interval);
        let seed_at = now
            + swim.config.seed_contact_interval
            + swim.jitter(swim.config.seed_contact_interval);
        swim.timers.set(probe_at, TimerKind::Probe);
        swim.timers.set(gossip_at, TimerKind::Gossip);
        swim.timers.set(pp_at, TimerKind::PushPull);
        swim.timers.set(now + REAP_PERIOD, TimerKind::Reap);
        swim.timers.set(seed_at, TimerKind::SeedContact);
        swim
    }

    // ---- requests -------------------------------------------------------

    /// Joins a cluster through `seeds` (addresses of any of its peers):
    /// sends each a push-pull and retries with backoff until one answers.
    pub fn handle_join(&mut self, now: Instant, seeds: Vec<SocketAddr>) {
        self.observe_time(now);
        self.seeds = seeds
            .into_iter()
            .filter(|a| *a != self.me.meta.addr)
            .collect();
        if self.seeds.is_empty() {
            return;
        }
        self.joined = false;
        self.join_backoff = self.config.probe_interval;
        self.send_join(now);
    }

    /// Replaces the seed list with fresh addresses (the daemon re-resolves
    /// seed host names on each join attempt and after a partition). Not
    /// joined yet: sends each new seed a join at once (the retry timer
    /// keeps running). Joined: a push-pull to each seed that is not a
    /// live member, so a peer cut off from its seeds, or whose seeds
    /// moved to new addresses, merges with them again. An empty list
    /// (after dropping this peer's own address) keeps the old one.
    pub fn handle_seeds(&mut self, now: Instant, seeds: Vec<SocketAddr>) {
        self.observe_time(now);
        let seeds: Vec<SocketAddr> = seeds
            .into_iter()
            .filter(|a| *a != self.me.meta.addr)
            .collect();
        if self.left || seeds.is_empty() {
            return;
        }
        self.seeds = seeds;
        if !self.joined {
            self.send_join(now);
            return;
        }
        for seed in self.seeds_outside_view() {
            self.push_pull_with(now, seed);
        }
    }

    /// Leaves gracefully: announces Left and stops probing. Keep driving the
    /// machine until [`Swim::leave_spread`] or a timeout, then stop.
    pub fn handle_leave(&mut self, now: Instant) {
        self.observe_time(now);
        if self.left {
            return;
        }
        self.left = true;
        self.set_self_state(State::Left);
        let update = self.signed(Update::Left {
            id: self.me.id,
            incarnation: self.me.incarnation,
            sig: auth::Sig::NONE,
        });
        self.me_entry.latest = Some(Arc::new(update.clone()));
        self.broadcasts.push(update);
        // Tell a few peers at once rather than waiting for the next round.
        self.gossip_round(now, false);
    }

    /// After [`Swim::handle_leave`]: queues the Left as stream messages to
    /// up to `k` live members. Datagrams may all be lost, and a lost Left
    /// ends as Dead; the shell sends these on QUIC streams and stops only
    /// once one was acknowledged. Draws no randomness, so a simulator that
    /// does not call it replays as before.
    pub fn queue_leave_notices(&mut self, k: usize) {
        let Some(update) = self
            .me_entry
            .latest
            .as_deref()
            .cloned()
            .filter(|_| self.left)
        else {
            return;
        };
        let targets: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|m| m.state.is_live())
            .take(k)
            .map(|m| m.meta.addr)
            .collect();
        for addr in targets {
            let mut env = self.envelope(Body::Gossip);
            env.updates.push(update.clone());
            self.push_transmit(addr, Channel::Stream, &env);
        }
    }

    /// Replaces this peer's metadata: a new incarnation carries it.
    pub fn handle_update_meta(&mut self, now: Instant, meta: Meta) {
        self.observe_time(now);
        // After leaving, a new Alive would undo the Left we announced.
        if self.left || meta == *self.me.meta {
            return;
        }
        // Never wraps: statements about us are bounded by
        // `incarnation_jump_max`, so this is out of reach in practice; if
        // it ever were reached the metadata simply stays.
        let Some(next) = self.me.incarnation.checked_add(1) else {
            return;
        };
        self.shape ^= self.me.shape_part();
        self.me.meta = Arc::new(meta);
        self.shape ^= self.me.shape_part();
        self.bump_incarnation(next);
    }

    /// Loads a view known to be current (a simulator's warm start, or a
    /// restarted peer's saved members) without treating it as news: no
    /// events, nothing queued for gossip. Members already known, and this
    /// peer, are left as they are. Trusted input (this peer's own disk or
    /// the simulator): signatures are not checked here, but badly formed
    /// entries and those beyond `members_max` are still skipped.
    pub fn handle_restore(&mut self, now: Instant, entries: Vec<Entry>) {
        self.observe_time(now);
        for entry in entries {
            let Some(member) = entry.is_well_formed().then(|| entry.member()).flatten() else {
                continue;
            };
            if member.id != self.me.id
                && !self.members.contains_key(&member.id)
                && self.members.len() < self.config.members_max
            {
                self.entries.insert(member.id, entry);
                self.insert_member_quietly(now, member);
            }
        }
        self.probe_order.clear();
        self.probe_next = 0;
    }

    // ---- inputs ---------------------------------------------------------

    /// A datagram arrived.
    ///
    /// # Errors
    /// The bytes did not decode; nothing changed but the error counter.
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) -> Result<(), CodecError> {
        self.handle_bytes(now, bytes, self.config.max_datagram_size.max(2048))
    }

    /// A stream message arrived (push-pull).
    ///
    /// # Errors
    /// The bytes did not decode; nothing changed but the error counter.
    pub fn handle_stream(&mut self, now: Instant, bytes: &[u8]) -> Result<(), CodecError> {
        self.handle_bytes(now, bytes, self.config.max_stream_message)
    }

    fn handle_bytes(&mut self, now: Instant, bytes: &[u8], limit: usize) -> Result<(), CodecError> {
        self.observe_time(now);
        self.stats.messages_received += 1;
        self.stats.bytes_received += bytes.len() as u64;
        let env = match codec::decode_versioned(bytes, limit, self.config.protocol_max) {
            Ok((env, version)) => {
                if let Some(n) = self
                    .stats
                    .received_by_version
                    .get_mut(usize::from(version - codec::MIN_VERSION))
                {
                    *n += 1;
                }
                env
            }
            Err(e) => {
                self.stats.decode_errors += 1;
                return Err(e);
            }
        };
        self.handle_envelope(now, env);
        Ok(())
    }

    /// A decoded message arrived (the simulator may skip the bytes).
    pub fn handle_envelope(&mut self, now: Instant, env: Envelope) {
        if env.cluster != self.config.cluster {
            self.stats.foreign_dropped += 1;
            return;
        }
        if env.from == self.me.id {
            return;
        }
        if self.peer_views.len() < 4 * (self.members.len() + 16)
            || self.peer_views.contains_key(&env.from)
        {
            self.peer_views.insert(env.from, (env.view, env.shape));
        }
        // Applies them, and answers the stale ones (correction.rs).
        self.apply_gossip(now, env.from_addr, env.updates);
        let (from, view) = (env.from, env.view);
        let full_state = matches!(env.body, Body::PushPull { .. });
        match env.body {
            Body::Ping { seq, target } => self.on_ping(now, env.from_addr, seq, target),
            Body::PingReq {
                seq,
                target,
                target_addr,
            } => {
                self.on_ping_req(now, env.from_addr, seq, target, target_addr);
            }
            Body::Ack { seq } => self.on_ack(now, seq),
            Body::Nack { seq } => self.on_nack(seq),
            Body::Gossip => {}
            Body::PushPull {
                join: _,
                reply,
                members,
            } => {
                self.on_push_pull(now, env.from_addr, reply, members);
            }
        }
        // A full state is itself the repair (its digest was taken before
        // either side merged): judging it would have both sides repair.
        if !full_state {
            self.repair_if_disagreeing(now, from, view);
        }
    }

    /// Timers due at `now` fire.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe_time(now);
        // Bounded: each timer is popped once; handlers add timers in the
        // future of `now`, except a GossipNow (at `now`), whose handler
        // adds none.
        while let Some((_, kind)) = self.timers.pop_due(now) {
            self.on_timer(now, kind);
        }
    }

    fn on_timer(&mut self, now: Instant, kind: TimerKind) {
        match kind {
            TimerKind::Probe => self.on_probe_tick(now),
            TimerKind::ProbeTimeout { seq } => self.on_probe_timeout(now, seq),
            TimerKind::ProbeEnd { seq } => self.on_probe_end(now, seq),
            TimerKind::ForwardNack { seq } => self.on_forward_nack(now, seq),
            TimerKind::Suspicion { id } => self.on_suspicion_timer(now, id),
            TimerKind::Gossip => {
                self.gossip_round(now, true);
                let next = now + self.config.gossip_interval;
                self.timers.set(next, TimerKind::Gossip);
            }
            TimerKind::GossipNow => {
                self.gossip_now_set = false;
                self.gossip_round(now, false);
            }
            TimerKind::PushPull => self.on_push_pull_tick(now),
            TimerKind::Reap => self.on_reap(now),
            TimerKind::JoinRetry => self.on_join_retry(now),
            TimerKind::SeedContact => self.on_seed_contact(now),
        }
    }

    // ---- outputs --------------------------------------------------------

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next membership event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Swim::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ---- getters --------------------------------------------------------

    /// This peer as it presents itself.
    pub fn me(&self) -> &Member {
        &self.me
    }

    /// Every other member known, dead and left ones included, by id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// One member (not this peer).
    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        self.members.get(id)
    }

    /// Live members (Alive or Suspect), this peer not counted.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// Digest of this peer's view: every member's (id, incarnation, state).
    pub fn view_digest(&self) -> u64 {
        self.digest
    }

    /// Digest of what this peer's view gives the ring: every member's
    /// (id, state, weight, zone, status); see [`Member`]'s metadata. Unlike
    /// [`Swim::view_digest`] it stays put through metadata-only changes
    /// (tags, incarnation bumps that carry them).
    pub fn shape_digest(&self) -> u64 {
        self.shape
    }

    /// `(agreeing, reporting)`: of the live peers whose digest this peer has
    /// heard, how many last reported the same view as this peer's now.
    pub fn agreement(&self) -> (usize, usize) {
        self.agreement_by(|(view, _)| view == self.digest)
    }

    /// Like [`Swim::agreement`], over the ring-shape digest: how many live
    /// peers last reported the same members, states, weights, zones and
    /// statuses as this peer holds now, whatever their metadata otherwise.
    pub fn ring_agreement(&self) -> (usize, usize) {
        self.agreement_by(|(_, shape)| shape == self.shape)
    }

    fn agreement_by(&self, same: impl Fn((u64, u64)) -> bool) -> (usize, usize) {
        let mut agree = 0;
        let mut heard = 0;
        for id in self.live.as_slice() {
            if let Some(view) = self.peer_views.get(id) {
                heard += 1;
                agree += usize::from(same(*view));
            }
        }
        (agree, heard)
    }

    /// Whether a seed has answered (always true without seeds).
    pub fn is_joined(&self) -> bool {
        self.joined
    }

    /// Whether this peer has left.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// After [`Swim::handle_leave`]: whether the Left update has been sent
    /// at least `times` times (or retired after its last send).
    pub fn leave_spread(&self, times: u32) -> bool {
        self.left && self.broadcasts.sent(&self.me.id).is_none_or(|n| n >= times)
    }

    /// Lifeguard local health score (0 is healthy).
    pub fn health_score(&self) -> u32 {
        self.awareness.score()
    }

    /// The signed statements behind member `id` (not this peer).
    pub fn entry(&self, id: &NodeId) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// This peer's own signed statements (its latest Alive, its Left).
    pub fn me_entry(&self) -> &Entry {
        &self.me_entry
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Updates waiting to be gossiped.
    pub fn pending_broadcasts(&self) -> usize {
        self.broadcasts.len()
    }

    /// Pending timers (for leak checks in tests).
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    // ---- updates --------------------------------------------------------

    /// Applies one membership statement, by the precedence rules in
    /// `member.rs`, once it passes the authorship checks (`verify.rs`).
    /// Returns whether anything changed.
    pub(crate) fn apply(&mut self, now: Instant, update: Update, source: Source) -> bool {
        let id = update.id();
        if id == self.me.id {
            return self.apply_about_me(update, source);
        }
        let (incarnation, mut state) = (update.incarnation(), update.state());
        let Some(entry) = self.members.get(&id) else {
            return self.apply_unknown(now, update, source);
        };
        let current = (entry.incarnation, entry.state);
        // Push-pull: a peer that believes a member dead makes us suspect it,
        // so it still gets a chance to refute (memberlist does the same).
        // That suspicion is ours, so we sign it.
        let downgrade = source == Source::PushPull && state == State::Dead && current.1.is_live();
        if downgrade {
            state = State::Suspect;
        }
        if (incarnation, state) <= current {
            if let (Update::Suspect { by, .. }, (inc, State::Suspect)) = (&update, current) {
                let counts = self.suspicions.get(&id).is_some_and(|s| s.would_count(by));
                if inc == incarnation && counts && self.accept(&update, source) {
                    self.confirm_suspicion(id, update);
                }
            }
            return false;
        }
        if !self.within_jump(current.0, incarnation) {
            self.reject(Reject::IncarnationJump);
            return false;
        }
        if !self.accept(&update, source) {
            return false;
        }
        let statement = if downgrade {
            self.own_suspect(id, incarnation)
        } else {
            update
        };
        self.set_member(now, statement);
        true
    }

    fn apply_unknown(&mut self, now: Instant, update: Update, source: Source) -> bool {
        let (id, incarnation) = (update.id(), update.incarnation());
        // Without metadata we cannot add a member we never saw alive.
        let Update::Alive { meta, .. } = &update else {
            return false;
        };
        if self.reaped_at_or_after(&id, incarnation) {
            return false;
        }
        if self.members.len() >= self.config.members_max {
            self.reject(Reject::TableFull);
            return false;
        }
        if !self.accept(&update, source) {
            return false;
        }
        let member = Member {
            id,
            incarnation,
            state: State::Alive,
            meta: meta.clone(),
        };
        self.entries.insert(id, Entry::new(update, None));
        self.insert_member(now, member);
        self.events_push(Event::MemberJoined(id));
        self.rebroadcast(id);
        true
    }

    /// A statement about this peer: refute suspicion, death or a stale
    /// leave with a higher incarnation. Only statements their author
    /// signed count (a Left or Alive of ours must be ours: an earlier life
    /// of this peer), and never one this peer could not outbid: a claim
    /// beyond `incarnation_jump_max` or at `u64::MAX` is dropped, not
    /// adopted, so nobody can push us where refuting is impossible.
    fn apply_about_me(&mut self, update: Update, source: Source) -> bool {
        let incarnation = update.incarnation();
        let mine = self.me.incarnation;
        let newer = match update.state() {
            // Someone remembers a later life of ours (we lost our
            // incarnation): move past it.
            State::Alive => incarnation > mine,
            State::Suspect | State::Dead | State::Left => incarnation >= mine,
        };
        if self.left || !newer {
            return false;
        }
        let Some(next) = incarnation
            .checked_add(1)
            .filter(|_| self.within_jump(mine, incarnation))
        else {
            self.reject(Reject::IncarnationJump);
            return false;
        };
        match self.check(&update, source) {
            Ok(()) => {}
            // A suspecter we do not know yet may be known to others, who
            // would believe it: refuting costs nothing, so refute anyway.
            Err(Reject::UnknownSigner)
                if matches!(update.state(), State::Suspect | State::Dead) => {}
            Err(reason) => {
                self.reject(reason);
                return false;
            }
        }
        if update.state() != State::Alive {
            self.stats.refutations += 1;
            self.awareness.apply(1);
        }
        self.bump_incarnation(next);
        true
    }

    /// Raises this peer's incarnation and announces it Alive, signed.
    pub(crate) fn bump_incarnation(&mut self, to: Incarnation) {
        debug_assert!(to > self.me.incarnation, "incarnations only grow");
        self.digest ^= self.me.digest_part();
        self.me.incarnation = to;
        self.digest ^= self.me.digest_part();
        self.events_push(Event::IncarnationChanged(to));
        let update = self.signed(Update::Alive {
            id: self.me.id,
            incarnation: to,
            meta: self.me.meta.clone(),
            key: self.auth.public_key(),
            sig: auth::Sig::NONE,
        });
        self.me_entry.alive = Arc::new(update.clone());
        self.broadcasts.push(update);
    }

    fn set_self_state(&mut self, state: State) {
        self.digest ^= self.me.digest_part();
        self.shape ^= self.me.shape_part();
        self.me.state = state;
        self.digest ^= self.me.digest_part();
        self.shape ^= self.me.shape_part();
    }

    pub(crate) fn insert_member(&mut self, now: Instant, member: Member) {
        if member.state.is_live() {
            self.add_to_probe_order(member.id);
        }
        self.insert_member_quietly(now, member);
    }

    /// Inserts a member without touching the probe order.
    fn insert_member_quietly(&mut self, now: Instant, member: Member) {
        let id = member.id;
        self.digest ^= member.digest_part();
        self.shape ^= member.shape_part();
        match member.state {
            State::Alive | State::Suspect => {
                self.live.insert(id);
            }
            State::Dead => {
                self.dead.insert(id);
            }
            State::Left => {}
        }
        if !member.state.is_live() {
            self.gone_since.insert(id, now);
        }
        self.members.insert(id, member);
    }

    /// Moves a known member to the state `statement` (checked, signed)
    /// asserts, keeps the statement to relay, and emits the events.
    fn set_member(&mut self, now: Instant, statement: Update) {
        let (id, incarnation, state) = (statement.id(), statement.incarnation(), statement.state());
        let (meta, by) = match &statement {
            Update::Alive { meta, .. } => (Some(meta.clone()), self.me.id),
            Update::Suspect { by, .. } | Update::Dead { by, .. } => (None, *by),
            Update::Left { .. } => (None, self.me.id),
        };
        if let Some(signed) = self.entries.get_mut(&id) {
            if state == State::Alive {
                signed.alive = Arc::new(statement);
                signed.latest = None;
            } else {
                signed.latest = Some(Arc::new(statement));
            }
        }
        let entry = self.members.get_mut(&id).expect("caller checked");
        let before = entry.state;
        self.digest ^= entry.digest_part();
        self.shape ^= entry.shape_part();
        let meta_changed = meta.as_ref().is_some_and(|m| *m != entry.meta);
        entry.incarnation = incarnation;
        entry.state = state;
        if let Some(meta) = meta {
            entry.meta = meta;
        }
        if state.is_live() {
            self.gone_since.remove(&id);
        } else if before != state {
            self.gone_since.insert(id, now);
        }
        self.digest ^= digest_part(&id, incarnation, state);
        self.shape ^= shape_part(&id, state, &entry.meta);

        if state.is_live() {
            self.dead.remove(&id);
            if self.live.insert(id) {
                self.add_to_probe_order(id);
            }
        } else {
            self.live.remove(&id);
            self.disagree.remove(&id);
            if state == State::Dead {
                self.dead.insert(id);
            } else {
                self.dead.remove(&id);
            }
        }
        if state != State::Suspect {
            self.suspicions.remove(&id);
        }

        match (before, state) {
            (_, State::Suspect) => {
                self.start_suspicion(now, id, incarnation, by);
                if before != State::Suspect {
                    self.events_push(Event::MemberSuspected(id));
                }
                if by != self.me.id {
                    self.maybe_probe_suspect(now, id);
                }
            }
            (State::Suspect, State::Alive) => self.events_push(Event::MemberRecovered(id)),
            (State::Dead | State::Left, State::Alive) => self.events_push(Event::MemberJoined(id)),
            (b, State::Dead) if b != State::Dead => {
                self.events_push(Event::MemberDead(id));
                self.gossip_soon(now);
            }
            (b, State::Left) if b != State::Left => self.events_push(Event::MemberLeft(id)),
            _ => {}
        }
        if meta_changed && state == State::Alive && before.is_live() {
            self.events_push(Event::MetaChanged(id));
        }
        self.rebroadcast(id);
    }

    /// Has the update just queued gossiped in a round of its own as soon
    /// as this input is handled, rather than at the next periodic round
    /// (up to `gossip_interval` away, at every hop): a death reaches every
    /// peer sooner. One such round at a time, so a push-pull that brings
    /// many changes adds one round, not one each. Not for suspicions:
    /// at 1,000 peers and 10% loss they are many (most refuted), eager
    /// rounds for them added a third to every peer's datagrams, and the
    /// faster confirmations convicted a live peer in one of 20 seeds.
    fn gossip_soon(&mut self, now: Instant) {
        if !self.gossip_now_set {
            self.gossip_now_set = true;
            self.timers.set(now, TimerKind::GossipNow);
        }
    }

    /// Whether `id` was reaped here at `incarnation` or later: what a
    /// peer that has not reaped it yet says of it is old news.
    pub(crate) fn reaped_at_or_after(&self, id: &NodeId, incarnation: Incarnation) -> bool {
        self.reaped
            .get(id)
            .is_some_and(|(reaped, _)| incarnation <= *reaped)
    }

    /// Queues the signed statement behind our view of `id` for gossip.
    pub(crate) fn rebroadcast(&mut self, id: NodeId) {
        if let Some(entry) = self.entries.get(&id) {
            self.broadcasts.push(entry.current().clone());
        }
    }

    pub(crate) fn events_push(&mut self, event: Event) {
        if self.events.len() >= EVENTS_MAX {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    // ---- suspicion ------------------------------------------------------

    fn start_suspicion(&mut self, now: Instant, id: NodeId, incarnation: Incarnation, by: NodeId) {
        let n = self.live.len() + 1;
        let min = self.config.suspicion_min(n);
        let max = min * self.config.suspicion_max_mult;
        // Confirmations can only come from peers other than the suspect and
        // the first suspecter.
        let expected = self
            .config
            .suspicion_confirmations
            .min(u32::try_from(n.saturating_sub(2)).unwrap_or(u32::MAX));
        let s = Suspicion::new(incarnation, by, now, min, max, expected);
        let deadline = s.deadline();
        self.suspicions.insert(id, s);
        self.timers.set(deadline, TimerKind::Suspicion { id });
    }

    /// Counts `update` (a checked Suspect of `id` at its suspicion's
    /// incarnation) as a Lifeguard confirmation, and relays it.
    pub(crate) fn confirm_suspicion(&mut self, id: NodeId, update: Update) {
        let Update::Suspect { by, .. } = &update else {
            return;
        };
        let Some(s) = self.suspicions.get_mut(&id) else {
            return;
        };
        if s.confirm(*by) {
            let deadline = s.deadline();
            self.timers.set(deadline, TimerKind::Suspicion { id });
            // Pass the confirmation on so others count it too.
            self.broadcasts.push(update);
        }
    }

    fn on_suspicion_timer(&mut self, now: Instant, id: NodeId) {
        let Some(s) = self.suspicions.get(&id) else {
            return;
        };
        let deadline = s.deadline();
        if now < deadline {
            return;
        }
        if let Some(until) = self.catch_up_until.filter(|u| now < *u) {
            // Our own loop stalled: the refutation may be sitting in our
            // inbox. Judge after catching up.
            self.timers.set(until, TimerKind::Suspicion { id });
            return;
        }
        let incarnation = s.incarnation;
        let dead = self.signed(Update::Dead {
            id,
            incarnation,
            by: self.me.id,
            sig: auth::Sig::NONE,
        });
        self.apply(now, dead, Source::Local);
    }

    // ---- time -----------------------------------------------------------

    /// Notices stalls of this peer's own loop: a call arriving long after
    /// the earliest timer was due means nothing ran here for a while, so
    /// silence from others proves nothing until inputs are caught up.
    fn observe_time(&mut self, now: Instant) {
        let Some(due) = self.timers.next() else {
            return;
        };
        if now > due + self.config.stall_threshold {
            self.stats.stalls += 1;
            let window = self
                .config
                .stall_threshold
                .max(self.config.probe_interval * 2);
            self.catch_up_until = Some(now + window);
        }
    }

    /// Whether this peer is catching up after a stall (convicts nobody).
    pub fn is_catching_up(&self, now: Instant) -> bool {
        self.catch_up_until.is_some_and(|u| now < u)
    }

    pub(crate) fn jitter(&mut self, span: Duration) -> Duration {
        let nanos = u64::try_from(span.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(self.rng.random_range(0..nanos))
    }

    // ---- sending --------------------------------------------------------

    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Sends `body` to `to` as a datagram, filling the room left with
    /// piggybacked updates; `first` is placed before the queued ones.
    pub(crate) fn send_datagram(&mut self, to: SocketAddr, body: Body, first: Option<Update>) {
        let mut env = self.envelope(body);
        let exclude = first.as_ref().map(Update::id);
        let mut used = codec::header_len() + codec::encoded_len(&env) + codec::varint_max();
        if let Some(update) = first {
            used += codec::encoded_len(&update);
            env.updates.push(update);
        }
        let budget = self.config.max_datagram_size.saturating_sub(used);
        let limit = self.config.retransmit_limit(self.live.len() + 1);
        env.updates
            .extend(self.broadcasts.take(budget, limit, exclude));
        self.push_transmit(to, Channel::Datagram, &env);
    }

    pub(crate) fn send_stream(&mut self, to: SocketAddr, body: Body) {
        let env = self.envelope(body);
        self.push_transmit(to, Channel::Stream, &env);
    }

    pub(crate) fn envelope(&self, body: Body) -> Envelope {
        Envelope {
            cluster: self.config.cluster,
            from: self.me.id,
            from_addr: self.me.meta.addr,
            view: self.digest,
            shape: self.shape,
            body,
            updates: Vec::new(),
        }
    }

    /// The cluster gate ([`version::cluster_version`]): the newest wire
    /// version every live member, this peer included, speaks.
    pub fn cluster_version(&self) -> u8 {
        version::cluster_version(self.config.protocol_max, self.members.values())
    }

    /// The version a frame to `to` goes out at ([`version::send_version`]).
    fn send_version(&self, to: SocketAddr) -> u8 {
        if self.config.protocol_max <= codec::MIN_VERSION {
            // Nothing newer to gate: skip the scan.
            return codec::MIN_VERSION;
        }
        let peer = self
            .members
            .values()
            .find(|m| m.meta.addr == to && matches!(m.state, State::Alive | State::Suspect))
            .map(|m| version::ProtocolRange::of(&m.meta));
        version::send_version(self.cluster_version(), peer)
    }

    pub(crate) fn push_transmit(&mut self, to: SocketAddr, channel: Channel, env: &Envelope) {
        let version = self.send_version(to);
        let Ok(bytes) = codec::encode_at(env, version) else {
            return;
        };
        match channel {
            Channel::Datagram => {
                self.stats.datagrams_sent += 1;
                self.stats.datagram_bytes_sent += bytes.len() as u64;
            }
            Channel::Stream => {
                self.stats.streams_sent += 1;
                self.stats.stream_bytes_sent += bytes.len() as u64;
            }
        }
        self.transmits.push_back(Transmit { to, channel, bytes });
    }

    /// One gossip round: the queued updates to `fanout` random live peers;
    /// with `heal`, also a probe of one dead member with probability
    /// dead / (live + 1), so healed partitions are found.
    pub(crate) fn gossip_round(&mut self, now: Instant, heal: bool) {
        if !self.broadcasts.is_empty() {
            let targets = self
                .live
                .pick(&mut self.rng, self.config.gossip_fanout, &[]);
            for id in targets {
                if self.broadcasts.is_empty() {
                    break;
                }
                let addr = self.members[&id].meta.addr;
                self.send_datagram(addr, Body::Gossip, None);
            }
        }
        if heal && !self.left && !self.dead.is_empty() {
            let p = self.dead.len() as f64 / (self.live.len() + 1) as f64;
            if self.rng.random_bool(p.min(1.0)) {
                self.ping_dead_member(now);
            }
        }
    }
}
