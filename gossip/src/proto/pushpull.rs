//! Full-state exchange: joining through seeds, the periodic push-pull with a
//! random peer, contact with seeds outside the view, and reaping the
//! long-dead.

use std::net::SocketAddr;
use std::time::Instant;

use rand::RngCore;
use ringkv_ring::NodeId;

use crate::proto::auth::Reject;
use crate::proto::member::State;
use crate::proto::message::{Body, Entry, Update};
use crate::proto::swim::{Disagreement, Event, Source, Swim};
use crate::proto::timer::TimerKind;

impl<R: RngCore> Swim<R> {
    /// This peer and every member it knows, as signed entries.
    pub(crate) fn full_state(&self) -> Vec<Entry> {
        std::iter::once(self.me_entry.clone())
            .chain(self.entries.values().cloned())
            .collect()
    }

    pub(crate) fn push_pull_with(&mut self, _now: Instant, addr: SocketAddr) {
        let members = self.full_state();
        self.send_stream(
            addr,
            Body::PushPull {
                join: false,
                reply: false,
                members,
            },
        );
    }

    pub(crate) fn send_join(&mut self, now: Instant) {
        for seed in self.seeds.clone() {
            let members = self.full_state();
            self.send_stream(
                seed,
                Body::PushPull {
                    join: true,
                    reply: false,
                    members,
                },
            );
        }
        self.timers
            .set(now + self.join_backoff, TimerKind::JoinRetry);
    }

    pub(crate) fn on_join_retry(&mut self, now: Instant) {
        if self.joined || self.left {
            return;
        }
        self.join_backoff = (self.join_backoff * 2).min(self.config.join_retry_max);
        self.send_join(now);
    }

    pub(crate) fn on_push_pull(
        &mut self,
        now: Instant,
        from_addr: SocketAddr,
        reply: bool,
        entries: Vec<Entry>,
    ) {
        self.merge_entries(now, entries);
        if reply {
            if !self.joined {
                self.joined = true;
                self.events_push(Event::JoinedCluster);
            }
        } else {
            let members = self.full_state();
            self.send_stream(
                from_addr,
                Body::PushPull {
                    join: false,
                    reply: true,
                    members,
                },
            );
        }
    }

    /// Merges a remote full state, every statement checked as if it came
    /// by gossip. First the Alive statements (so every member's key is
    /// learned before the suspicions it signed are checked), then the
    /// later statements.
    fn merge_entries(&mut self, now: Instant, entries: Vec<Entry>) {
        let mut later = Vec::new();
        for entry in entries {
            if !entry.is_well_formed() {
                self.reject(Reject::Malformed);
                continue;
            }
            let id = entry.alive.id();
            let known = id == self.me.id || self.members.contains_key(&id);
            let gone = matches!(
                entry.latest.as_deref().map(Update::state),
                Some(State::Dead | State::Left)
            );
            // What we hold already is most of a full state: skip it
            // before cloning anything (apply would ignore it too).
            let inc = entry.alive.incarnation();
            let stale = if id == self.me.id {
                inc <= self.me.incarnation
            } else {
                self.members
                    .get(&id)
                    .is_some_and(|m| !m.is_superseded_by(inc, State::Alive))
            };
            if (known || !gone) && !stale {
                // Known members, and new ones that are alive or suspected:
                // learn them alive, then hear the rest, so a suspect gets
                // its full chance to refute here too.
                self.apply(now, (*entry.alive).clone(), Source::PushPull);
            }
            if entry.latest.is_some() {
                later.push((known || !gone, entry));
            }
        }
        for (learned, entry) in later {
            let Some(latest) = entry.latest.as_deref().cloned() else {
                continue;
            };
            if learned {
                self.apply(now, latest, Source::PushPull);
            } else {
                self.insert_gone(now, entry);
            }
        }
    }

    /// A member dead or gone before we knew it: remember it quietly (it
    /// may come back from a partition, and the view should match our
    /// peers'), once both its statements check out.
    fn insert_gone(&mut self, now: Instant, entry: Entry) {
        let Some(member) = entry.member() else {
            return;
        };
        if self.members.contains_key(&member.id)
            || self.reaped_at_or_after(&member.id, member.incarnation)
        {
            return;
        }
        if self.members.len() >= self.config.members_max {
            self.reject(Reject::TableFull);
            return;
        }
        if !self.accept(&entry.alive, Source::PushPull) {
            return;
        }
        let latest = entry.latest.as_deref().expect("gone entries have a latest");
        if !self.within_jump(entry.alive.incarnation(), latest.incarnation()) {
            self.reject(Reject::IncarnationJump);
            return;
        }
        // The Alive's key is not learned yet: check the Left against it.
        let checked = match latest {
            Update::Left { .. } => self.check_with_key(latest, &entry),
            _ => self.check(latest, Source::PushPull),
        };
        if let Err(reason) = checked {
            self.reject(reason);
            return;
        }
        self.entries.insert(member.id, entry);
        self.insert_member(now, member);
    }

    pub(crate) fn on_push_pull_tick(&mut self, now: Instant) {
        let period = self.config.push_pull_period(self.live.len() + 1);
        let next = now + period / 2 + self.jitter(period);
        self.timers.set(next, TimerKind::PushPull);
        if self.left {
            return;
        }
        if let Some(&id) = self.live.pick(&mut self.rng, 1, &[]).first() {
            let addr = self.members[&id].meta.addr;
            self.push_pull_with(now, addr);
        }
    }

    /// Notes the view `from` reported (after applying what it carried)
    /// and starts a push-pull with it when its view has differed from
    /// this one for longer than an update is gossiped: one of the two
    /// missed an update that gossip will not bring again (each is sent a
    /// bounded number of times, to random peers), and the periodic
    /// push-pull may be 30 s away. Seen in a loaded five-peer cluster: one
    /// peer missed another's ready announcement for 8 s and kept routing
    /// around a replica that held its ranges, failing writes when a third
    /// died. Push-pull sends both full states, so whichever side missed
    /// the update gets it.
    ///
    /// A repair that leaves the views different (a statement one side
    /// cannot check, a peer that reports a false digest) doubles the wait
    /// before the next with that peer, up to the periodic push-pull's, so
    /// such a peer neither costs a full state every 2 s nor takes every
    /// repair slot from peers that did miss something.
    pub(crate) fn repair_if_disagreeing(&mut self, now: Instant, from: NodeId, view: u64) {
        if self.left {
            self.disagree.clear();
            return;
        }
        if view == self.digest {
            self.disagree.remove(&from);
            return;
        }
        if !self.live.contains(&from) {
            return;
        }
        let n = self.live.len() + 1;
        let Some(period) = self.config.repair_period(n) else {
            self.disagree.clear();
            return;
        };
        let d = *self.disagree.entry(from).or_insert(Disagreement {
            since: now,
            repairs: 0,
        });
        let wait = self
            .config
            .disagreement_max(n)
            .saturating_mul(1 << d.repairs.min(16))
            .min(self.config.push_pull_period(n));
        if now.saturating_duration_since(d.since) < wait
            || self.repair_after.is_some_and(|t| now < t)
        {
            return;
        }
        let Some(addr) = self.members.get(&from).map(|m| m.meta.addr) else {
            return;
        };
        self.repair_after = Some(now + period);
        self.disagree.insert(
            from,
            Disagreement {
                since: now,
                repairs: d.repairs.saturating_add(1),
            },
        );
        self.stats.view_repairs += 1;
        self.push_pull_with(now, addr);
    }

    /// The seed addresses no live member has: where a partitioned or
    /// rescheduled part of the cluster may be.
    pub(crate) fn seeds_outside_view(&self) -> Vec<SocketAddr> {
        let live: Vec<SocketAddr> = self
            .live
            .as_slice()
            .iter()
            .map(|id| self.members[id].meta.addr)
            .collect();
        self.seeds
            .iter()
            .filter(|s| !live.contains(s))
            .copied()
            .collect()
    }

    pub(crate) fn on_seed_contact(&mut self, now: Instant) {
        let next = now + self.config.seed_contact_interval;
        self.timers.set(next, TimerKind::SeedContact);
        if self.left || self.seeds.is_empty() {
            return;
        }
        let outside = self.seeds_outside_view();
        if outside.is_empty() {
            return;
        }
        let pick = outside
            [usize::try_from(self.rng.next_u64() % outside.len() as u64).expect("index fits")];
        self.push_pull_with(now, pick);
    }

    pub(crate) fn on_reap(&mut self, now: Instant) {
        self.timers
            .set(now + std::time::Duration::from_secs(10), TimerKind::Reap);
        let old: Vec<NodeId> = self
            .gone_since
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= self.config.dead_reap_after)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            self.gone_since.remove(&id);
            let Some(member) = self.members.remove(&id) else {
                continue;
            };
            self.entries.remove(&id);
            self.digest ^= member.digest_part();
            self.shape ^= member.shape_part();
            self.dead.remove(&id);
            self.peer_views.remove(&id);
            self.disagree.remove(&id);
            if self.reaped.len() < self.config.members_max {
                self.reaped.insert(id, (member.incarnation, now));
            }
            self.events_push(Event::MemberReaped(id));
        }
        let keep = self.config.dead_reap_after;
        self.reaped
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < keep);
    }
}
