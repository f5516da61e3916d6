//! One probe cycle: ping a member in shuffled round-robin order; if no ack
//! by the probe timeout, ask k members to probe it indirectly; if still no
//! ack when the indirect timeout ends, suspect it (or, if it is suspected
//! already, confirm the suspicion). Suspicion probes run the same cycle on a
//! peer just heard to be suspected. Also this peer's part in others'
//! indirect probes, and the pings to dead members that find healed
//! partitions.

use std::net::SocketAddr;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, RngCore};
use ringkv_ring::NodeId;

use crate::proto::member::{Incarnation, State};
use crate::proto::message::Body;
use crate::proto::swim::{Source, Swim};
use crate::proto::timer::TimerKind;

/// Most outstanding pings to dead members.
const DEAD_PINGS_MAX: usize = 16;
/// Most probes in flight (one round-robin, the rest suspicion probes).
const PROBES_MAX: usize = 8;

/// The probe in flight.
#[derive(Clone, Debug)]
pub(crate) struct Probe {
    pub(crate) target: NodeId,
    pub(crate) incarnation: Incarnation,
    pub(crate) nacks_expected: u32,
    pub(crate) nacks: u32,
    /// Started on hearing a suspicion, outside the round-robin order.
    pub(crate) suspicion_probe: bool,
}

/// An indirect probe this peer runs for another.
#[derive(Clone, Debug)]
pub(crate) struct Forward {
    pub(crate) origin: SocketAddr,
    pub(crate) origin_seq: u64,
}

impl<R: RngCore> Swim<R> {
    /// Adds a new live member at a random place among those not yet probed
    /// this round, so it is probed within the round.
    pub(crate) fn add_to_probe_order(&mut self, id: NodeId) {
        let lo = self.probe_next.min(self.probe_order.len());
        let at = self.rng.random_range(lo..=self.probe_order.len());
        self.probe_order.insert(at, id);
    }

    fn next_probe_target(&mut self) -> Option<NodeId> {
        // Bounded: at most one pass over the old order and one reshuffle.
        for _ in 0..=2 * (self.probe_order.len() + 1) {
            if self.probe_next >= self.probe_order.len() {
                self.probe_order = self.live.as_slice().to_vec();
                self.probe_order.shuffle(&mut self.rng);
                self.probe_next = 0;
                if self.probe_order.is_empty() {
                    return None;
                }
            }
            let id = self.probe_order[self.probe_next];
            self.probe_next += 1;
            if self.live.contains(&id) {
                return Some(id);
            }
        }
        None
    }

    pub(crate) fn on_probe_tick(&mut self, now: Instant) {
        let period = self.awareness.scale(self.config.probe_interval);
        self.timers.set(now + period, TimerKind::Probe);
        if self.left {
            return;
        }
        // One round-robin probe at a time: while the last is still running
        // (a slow peer stretches the cycle), skip this tick.
        if self.probes.values().any(|p| !p.suspicion_probe) {
            return;
        }
        if let Some(target) = self.next_probe_target() {
            self.start_probe(now, target, false);
        }
        self.reprobe_own_suspects(now);
    }

    /// Rule 5 of correction.rs: while a suspicion this peer raised lasts,
    /// it probes the suspect again every probe period, the suspicion first
    /// in the ping. A live suspect that already refuted answers it (rule 2)
    /// and repeats its Alive in the ack, so the one peer that holds the
    /// suspicion without ever having gossiped it stale cannot miss the
    /// refutation. A dead suspect just costs one probe a period.
    fn reprobe_own_suspects(&mut self, now: Instant) {
        let me = self.me.id;
        let own: Vec<NodeId> = self
            .suspicions
            .iter()
            .filter(|(_, s)| s.first_suspecter() == Some(me))
            .map(|(id, _)| *id)
            .collect();
        for id in own {
            if self.probes.len() >= PROBES_MAX {
                return;
            }
            let suspected = self
                .members
                .get(&id)
                .is_some_and(|m| m.state == State::Suspect);
            if suspected && !self.probes.values().any(|p| p.target == id) {
                self.start_probe(now, id, true);
            }
        }
    }

    /// With probability `suspicion_probes / N`, probes a peer we just heard
    /// is suspected, to add an independent confirmation (or not) quickly.
    pub(crate) fn maybe_probe_suspect(&mut self, now: Instant, id: NodeId) {
        let fanout = self.config.suspicion_probes;
        if fanout == 0 || self.left || self.probes.len() >= PROBES_MAX {
            return;
        }
        if self.probes.values().any(|p| p.target == id) {
            return;
        }
        let p = (f64::from(fanout) / self.live.len().max(1) as f64).min(1.0);
        if self.rng.random_bool(p) {
            self.start_probe(now, id, true);
        }
    }

    fn start_probe(&mut self, now: Instant, target: NodeId, suspicion_probe: bool) {
        let member = &self.members[&target];
        let (addr, incarnation) = (member.meta.addr, member.incarnation);
        // Lifeguard: a suspected peer hears it in the probe and refutes at
        // once in its ack.
        let first = (member.state == State::Suspect)
            .then(|| self.entries.get(&target).map(|e| e.current().clone()))
            .flatten();
        let seq = self.next_seq();
        self.stats.probes += 1;
        let probe = Probe {
            target,
            incarnation,
            nacks_expected: 0,
            nacks: 0,
            suspicion_probe,
        };
        self.probes.insert(seq, probe);
        self.send_datagram(addr, Body::Ping { seq, target }, first);
        let timeout = self.awareness.scale(self.config.probe_timeout);
        let end = self
            .awareness
            .scale(self.config.probe_timeout + self.config.indirect_timeout);
        self.timers
            .set(now + timeout, TimerKind::ProbeTimeout { seq });
        self.timers.set(now + end, TimerKind::ProbeEnd { seq });
    }

    /// Judges a probe whose time is up: no ack means suspect it, or confirm
    /// the suspicion if it is suspected already.
    pub(crate) fn on_probe_end(&mut self, now: Instant, seq: u64) {
        // An acked probe was removed when its ack arrived.
        let Some(probe) = self.probes.remove(&seq) else {
            return;
        };
        self.stats.probes_failed += 1;
        // Lifeguard: nacks prove the helpers heard us; missing ones suggest
        // the trouble is on our side.
        let delta = if probe.nacks_expected > 0 {
            probe.nacks_expected - probe.nacks.min(probe.nacks_expected)
        } else {
            1
        };
        self.awareness.apply(i64::from(delta));
        if self.is_catching_up(now) {
            return;
        }
        let Some(entry) = self.members.get(&probe.target) else {
            return;
        };
        let m = entry;
        if m.incarnation != probe.incarnation {
            return;
        }
        let (addr, me) = (m.meta.addr, self.me.id);
        match m.state {
            State::Alive => {
                let update = self.own_suspect(probe.target, probe.incarnation);
                if self.apply(now, update.clone(), Source::Local) {
                    self.stats.suspicions_raised += 1;
                    // Tell the suspect straight away so it can refute before
                    // anyone else has even heard.
                    self.send_datagram(addr, Body::Gossip, Some(update));
                }
            }
            State::Suspect => {
                let counts = self
                    .suspicions
                    .get(&probe.target)
                    .is_some_and(|s| s.would_count(&me));
                if counts {
                    let update = self.own_suspect(probe.target, probe.incarnation);
                    self.confirm_suspicion(probe.target, update);
                }
            }
            State::Dead | State::Left => {}
        }
    }

    pub(crate) fn on_probe_timeout(&mut self, _now: Instant, seq: u64) {
        let Some(probe) = self.probes.get(&seq) else {
            return;
        };
        let target = probe.target;
        let Some(target_addr) = self.members.get(&target).map(|e| e.meta.addr) else {
            return;
        };
        let helpers = self
            .live
            .pick(&mut self.rng, self.config.indirect_probes, &[target]);
        for helper in &helpers {
            let addr = self.members[helper].meta.addr;
            self.send_datagram(
                addr,
                Body::PingReq {
                    seq,
                    target,
                    target_addr,
                },
                None,
            );
        }
        // Retry the direct path too (memberlist falls back to TCP here): on a
        // lossy link it is the likeliest to get through, and every probe that
        // fails by accident costs a suspicion and a refutation gossiped to
        // every peer.
        self.send_datagram(target_addr, Body::Ping { seq, target }, None);
        if let Some(p) = self.probes.get_mut(&seq) {
            p.nacks_expected = u32::try_from(helpers.len()).expect("k is small");
        }
    }

    pub(crate) fn on_ping(&mut self, _now: Instant, from: SocketAddr, seq: u64, target: NodeId) {
        if target != self.me.id {
            // Meant for another peer that used to have this address.
            return;
        }
        self.send_datagram(from, Body::Ack { seq }, None);
    }

    pub(crate) fn on_ping_req(
        &mut self,
        now: Instant,
        origin: SocketAddr,
        seq: u64,
        target: NodeId,
        target_addr: SocketAddr,
    ) {
        if target == self.me.id {
            self.send_datagram(origin, Body::Ack { seq }, None);
            return;
        }
        if self.forwards.len() >= self.config.forward_probes_max {
            return;
        }
        let mine = self.next_seq();
        self.forwards.insert(
            mine,
            Forward {
                origin,
                origin_seq: seq,
            },
        );
        let first = self
            .members
            .get(&target)
            .filter(|e| e.state == State::Suspect)
            .and_then(|_| self.entries.get(&target))
            .map(|e| e.current().clone());
        self.send_datagram(target_addr, Body::Ping { seq: mine, target }, first);
        self.timers.set(
            now + self.config.probe_timeout,
            TimerKind::ForwardNack { seq: mine },
        );
    }

    pub(crate) fn on_ack(&mut self, now: Instant, seq: u64) {
        if self.probes.remove(&seq).is_some() {
            self.awareness.apply(-1);
            return;
        }
        if let Some(f) = self.forwards.remove(&seq) {
            self.send_datagram(f.origin, Body::Ack { seq: f.origin_seq }, None);
            return;
        }
        if let Some(id) = self.dead_pings.remove(&seq) {
            // A member we hold dead answered: the partition healed. Its ack
            // carried its refutation; now swap full state with it.
            if let Some(addr) = self.members.get(&id).map(|e| e.meta.addr) {
                self.push_pull_with(now, addr);
            }
        }
    }

    pub(crate) fn on_nack(&mut self, seq: u64) {
        if let Some(p) = self.probes.get_mut(&seq) {
            p.nacks += 1;
        }
    }

    pub(crate) fn on_forward_nack(&mut self, _now: Instant, seq: u64) {
        if let Some(f) = self.forwards.remove(&seq) {
            self.send_datagram(f.origin, Body::Nack { seq: f.origin_seq }, None);
        }
    }

    /// Pings one random dead member, telling it that it is held dead; if it
    /// is alive behind a healed partition it refutes in its ack.
    pub(crate) fn ping_dead_member(&mut self, _now: Instant) {
        let Some(&id) = self.dead.pick(&mut self.rng, 1, &[]).first() else {
            return;
        };
        if self.dead_pings.len() >= DEAD_PINGS_MAX {
            self.dead_pings.pop_first();
        }
        let seq = self.next_seq();
        self.dead_pings.insert(seq, id);
        let member = &self.members[&id];
        let addr = member.meta.addr;
        let first = self.entries.get(&id).map(|e| e.current().clone());
        self.send_datagram(addr, Body::Ping { seq, target: id }, first);
    }
}
