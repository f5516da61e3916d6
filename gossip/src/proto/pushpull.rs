//! Full-state exchange: joining through seeds, the periodic push-pull with a
//! random peer, contact with seeds outside the view, and reaping the
//! long-dead.

use std::net::SocketAddr;
use std::time::Instant;

use rand::RngCore;
use ringkv_ring::NodeId;

use crate::proto::member::{Member, State};
use crate::proto::message::{Body, Update};
use crate::proto::swim::{Event, Source, Swim};
use crate::proto::timer::TimerKind;

impl<R: RngCore> Swim<R> {
    /// This peer and every member it knows.
    pub(crate) fn full_state(&self) -> Vec<Member> {
        std::iter::once(self.me.clone())
            .chain(self.members.values().cloned())
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
        from: NodeId,
        from_addr: SocketAddr,
        reply: bool,
        members: Vec<Member>,
    ) {
        for member in members {
            self.merge_member(now, member, from);
        }
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

    /// Merges one member of a remote full state.
    fn merge_member(&mut self, now: Instant, m: Member, from: NodeId) {
        if m.id == self.me.id || self.members.contains_key(&m.id) {
            self.apply(now, Update::of_member(&m, from), Source::PushPull);
            return;
        }
        match m.state {
            State::Alive => {
                self.apply(now, Update::of_member(&m, from), Source::PushPull);
            }
            State::Suspect => {
                // Learn it alive, then hear the suspicion, so it gets its
                // full chance to refute here too.
                let (id, incarnation) = (m.id, m.incarnation);
                let alive = Member {
                    state: State::Alive,
                    ..m
                };
                self.apply(now, Update::of_member(&alive, from), Source::PushPull);
                self.apply(
                    now,
                    Update::Suspect {
                        id,
                        incarnation,
                        by: from,
                    },
                    Source::PushPull,
                );
            }
            // Gone before we knew it: remember it quietly (it may come back
            // from a partition, and the view should match our peers').
            State::Dead | State::Left => self.insert_member(now, m),
        }
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

    pub(crate) fn on_seed_contact(&mut self, now: Instant) {
        let next = now + self.config.seed_contact_interval;
        self.timers.set(next, TimerKind::SeedContact);
        if self.left || self.seeds.is_empty() {
            return;
        }
        let live_addrs: Vec<SocketAddr> = self
            .live
            .as_slice()
            .iter()
            .map(|id| self.members[id].meta.addr)
            .collect();
        let outside: Vec<SocketAddr> = self
            .seeds
            .iter()
            .filter(|s| !live_addrs.contains(s))
            .copied()
            .collect();
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
            self.digest ^= member.digest_part();
            self.dead.remove(&id);
            self.peer_views.remove(&id);
            self.events_push(Event::MemberReaped(id));
        }
    }
}
