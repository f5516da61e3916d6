//! The handoff phase machine: given the ring, the view and the time, what
//! the handoff loop does next: wait, pull the ring's ranges, or delete the
//! ranges this peer no longer replicates. Pure: time comes in as `now`,
//! the view and ring as arguments; the loop in `mod.rs` does the IO and
//! reports back with [`Phase::handle_sync_done`] and
//! [`Phase::handle_sync_failed`].
//!
//! The clean-up rule (DESIGN, Handoff): a peer deletes a range only when
//! every replica the ring gives that range is alive and has announced the
//! ring (its ready tag is the ring's tag). A dead or suspect member has
//! announced nothing: it blocks the ranges it replicates until the ring no
//! longer holds it (the dead grace, `ring_view`), and then the ring is
//! planned again with the live holders. The rule is per range: a range
//! whose replicas all announced is dropped even while another is blocked.
//! A graceful leave ends under the same rule ([`not_handed_over`]): when
//! every range it holds data in has all its replicas announced.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ringkv_gossip::runner::View;
use ringkv_gossip::{NodeId, State};
use ringkv_ring::handoff::{pulls, Pull};
use ringkv_ring::{NodeSpec, Ring, TokenRange, DEFAULT_VNODES};

use crate::coordinator::REPLICAS;
use crate::mutation::{self, Mutation};
use crate::readiness::{holder, is_ready, ring_tag, views_agree, READY_TAG};

/// Longest wait, beyond the settle time, for the live peers to agree on
/// the view before a ring change moves data anyway.
pub(crate) const AGREEMENT_WAIT_MAX: Duration = Duration::from_secs(10);
/// Pause after a failed sync before the next try.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the handoff loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing yet.
    Wait,
    /// Pull every range this peer replicates in `ring` and did not hold,
    /// then announce `tag`.
    Sync { ring: Ring, tag: String },
    /// Delete what this peer holds in `ranges`, which it does not
    /// replicate in `ring` and whose replicas there all announced it;
    /// `complete`: after these, nothing of an older ring is left here.
    CleanUp {
        ring: Ring,
        ranges: Vec<TokenRange>,
        complete: bool,
    },
}

/// A range of a ring and those of its replicas that have not announced
/// the ring (dead, suspect, or still pulling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blocked {
    pub(crate) range: TokenRange,
    pub(crate) waiting: Vec<NodeId>,
}

/// Whether member `id` is alive and announced `tag`: only such a member
/// counts as holding the ring's ranges.
pub(crate) fn announced(view: &View, id: &NodeId, tag: &str) -> bool {
    is_ready(view, id, tag) && holder(view, id).is_some_and(|(_, s)| s == State::Alive)
}

/// Every range of `ring` (one per token, in ring order) with its replicas.
fn replica_arcs(ring: &Ring) -> impl Iterator<Item = (TokenRange, Vec<NodeId>)> + '_ {
    ring.ranges()
        .map(|(range, _)| (range, ring.replicas_of(range.end, REPLICAS)))
}

/// The ranges `me` does not replicate in `ring`, split into those whose
/// replicas all hold the ring (`ready` says who announced it) and may be
/// dropped, and those still blocked, with who they wait for.
pub(crate) fn cleanup_plan(
    ring: &Ring,
    me: &NodeId,
    ready: &dyn Fn(&NodeId) -> bool,
) -> (Vec<TokenRange>, Vec<Blocked>) {
    let (mut droppable, mut blocked) = (Vec::new(), Vec::new());
    for (range, replicas) in replica_arcs(ring) {
        if replicas.contains(me) {
            continue;
        }
        // The mutation (tests only, see crate::mutation) waits for nobody.
        let unconfirmed = mutation::on_thread(Mutation::CleanupUnconfirmed);
        let waiting: Vec<NodeId> = replicas
            .into_iter()
            .filter(|id| !unconfirmed && !ready(id))
            .collect();
        if waiting.is_empty() {
            droppable.push(range);
        } else {
            blocked.push(Blocked { range, waiting });
        }
    }
    (droppable, blocked)
}

/// For a leaving peer: the ranges of `ring` (the ring without it) where
/// it holds data (`holds`) whose replicas have not all announced `ring`.
/// The leave is done when this is empty.
pub(crate) fn not_handed_over(
    ring: &Ring,
    holds: &dyn Fn(&TokenRange) -> bool,
    ready: &dyn Fn(&NodeId) -> bool,
) -> Vec<Blocked> {
    replica_arcs(ring)
        .filter_map(|(range, replicas)| {
            let waiting: Vec<NodeId> = replicas.into_iter().filter(|id| !ready(id)).collect();
            (!waiting.is_empty()).then_some(Blocked { range, waiting })
        })
        .filter(|b| holds(&b.range))
        .collect()
}

/// The ring of the members other than this peer that announced a ring:
/// those still pulling their first ranges have nothing to give. Leaving
/// members count (they are in `full`, the ring that still holds them):
/// until they are done their copies may be the only live ones.
fn announced_ring(current: &Ring, full: Option<&Ring>, view: &View) -> Option<Ring> {
    let others: Vec<NodeSpec> = full
        .unwrap_or(current)
        .nodes()
        .iter()
        .filter(|n| n.id != view.me.id && has_announced(view, &n.id))
        .cloned()
        .collect();
    Ring::build(&others, DEFAULT_VNODES).ok()
}

/// Whether `id` announced any ring (a peer that never did, or restarted
/// and has not yet, may hold nothing of its ranges).
fn has_announced(view: &View, id: &NodeId) -> bool {
    view.members
        .iter()
        .any(|m| m.id == *id && m.meta.tags.contains_key(READY_TAG))
}

/// A range a sync pulls, and from whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PlannedPull {
    /// The positions concerned, `(start, end]`.
    pub(crate) range: TokenRange,
    /// Live holders that announced a ring, in the order to try them: the
    /// range is copied from one and compared with others, a majority of
    /// them in all.
    pub(crate) sources: Vec<NodeId>,
    /// Live holders that have announced no ring yet (still pulling their
    /// first ranges, or restarted and not yet settled). They may lack what
    /// was written before they joined, but hold every write they
    /// acknowledged: while too few replicas of a key had announced, writes
    /// were acknowledged by such replicas alone (the route's degraded
    /// mode). So the pull also merges their keys and versions until it
    /// has merged a majority of all the live holders.
    pub(crate) unannounced: Vec<NodeId>,
    /// Planned against the guessed ring of the members that announced
    /// (see [`plan_pulls`]); its checkpoint is kept apart.
    pub(crate) guess: bool,
}

impl PlannedPull {
    /// Nobody live to pull from.
    pub(crate) fn is_empty(&self) -> bool {
        self.sources.is_empty() && self.unannounced.is_empty()
    }

    /// How many holders a complete pull has merged: a majority of the
    /// live holders, and among them a majority of those that announced.
    pub(crate) fn needed(&self) -> (usize, usize) {
        let majority = |n: usize| if n == 0 { 0 } else { n / 2 + 1 };
        (
            majority(self.sources.len()),
            majority(self.sources.len() + self.unannounced.len()),
        )
    }
}

/// What a sync of `ring` pulls. Planned against `ready`, the ring this
/// peer last held fully; for a peer that holds none, against the ring of
/// the other members, which is where the data was while this peer was not
/// in the ring. Sources are the live holders there: those that announced
/// a ring, and those that have not ([`PlannedPull::unannounced`]).
///
/// A range none of whose holders there is live and announced is also
/// planned against the ring of the others that announced, leaving members
/// included: after joiners died before they pulled, the live copies may be
/// only there. That ring is a guess at where data was (it gives every
/// range to the members that announced, which may never have replicated
/// it), so its holders are added to the range's own, never used in their
/// place: a cluster whose first pulls a failure interrupted has writes
/// acknowledged by replicas that announced nothing, and a joiner that
/// copied only from the announced members lost them (issue 13: the
/// readdress scenario, 4 of 732 writes). `full` is the ring that still
/// counts leaving members.
pub(crate) fn plan_pulls(
    ready: Option<&Ring>,
    ring: &Ring,
    full: Option<&Ring>,
    view: &View,
) -> Vec<PlannedPull> {
    let me = view.me.id;
    let live = |id: &NodeId| holder(view, id).is_some_and(|(_, s)| s.is_live());
    let announced = |id: &NodeId| has_announced(view, id) && live(id);
    let others = if ready.is_some() {
        None
    } else {
        ring_of_others(ring, full, &me)
    };
    let base = ready.or(others.as_ref());
    let plan = |base: Option<&Ring>| -> Vec<PlannedPull> {
        let sources = pulls(base, ring, &me, REPLICAS, &announced);
        let holders = pulls(base, ring, &me, REPLICAS, &live);
        sources
            .into_iter()
            .zip(holders)
            .map(|(s, h): (Pull, Pull)| {
                debug_assert_eq!(s.range, h.range);
                let unannounced = h
                    .sources
                    .into_iter()
                    .filter(|id| !s.sources.contains(id))
                    .collect();
                PlannedPull {
                    range: s.range,
                    sources: s.sources,
                    unannounced,
                    guess: false,
                }
            })
            .collect()
    };
    let mut plan = plan(base);
    let orphans: Vec<TokenRange> = plan
        .iter()
        .filter(|p| p.sources.is_empty())
        .map(|p| p.range)
        .collect();
    plan.retain(|p| !p.is_empty());
    // A peer that held no ring also merges a majority of the announced
    // ring's holders, for every range: peers joining at the same moment
    // are in the ring of the others too, push the old holders out of a
    // range's replicas there, and count as (empty) holders of it. The
    // announced ring is then the old one. (In a steady cluster with one
    // joiner the two rings are the same, and so are the plans.)
    if ready.is_some() && orphans.is_empty() {
        return plan;
    }
    if let Some(guess) = announced_ring(ring, full, view) {
        let again: Vec<PlannedPull> = pulls(Some(&guess), ring, &me, REPLICAS, &announced)
            .into_iter()
            .filter(|p| ready.is_none() || orphans.iter().any(|o| overlap(o, &p.range)))
            .map(|p| PlannedPull {
                range: p.range,
                sources: p.sources,
                unannounced: Vec::new(),
                guess: true,
            })
            .filter(|p| {
                !p.is_empty()
                    && !plan.iter().any(|q| {
                        q.range == p.range && q.sources == p.sources && q.unannounced.is_empty()
                    })
            })
            .collect();
        plan.extend(again);
    }
    plan
}

/// The ring of every member but `me` (`full`, with the leaving ones, when
/// given): for a peer that never held a ring, where its ranges were.
fn ring_of_others(current: &Ring, full: Option<&Ring>, me: &NodeId) -> Option<Ring> {
    let others: Vec<NodeSpec> = full
        .unwrap_or(current)
        .nodes()
        .iter()
        .filter(|n| n.id != *me)
        .cloned()
        .collect();
    Ring::build(&others, DEFAULT_VNODES).ok()
}

/// Whether two ranges share a position.
pub(crate) fn overlap(a: &TokenRange, b: &TokenRange) -> bool {
    a.intervals()
        .any(|(lo, hi)| b.intervals().any(|(l, h)| lo <= h && l <= hi))
}

/// Neighbouring ranges joined, so that a delete scans each stretch once.
fn coalesce(ranges: &[TokenRange]) -> Vec<TokenRange> {
    let mut out: Vec<TokenRange> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(prev) if prev.end == r.start => prev.end = r.end,
            _ => out.push(*r),
        }
    }
    out
}

/// Clean-up progress for one ring.
#[derive(Debug)]
struct CleanUpState {
    tag: String,
    /// Since when each droppable range's replicas have all announced.
    ready_since: BTreeMap<TokenRange, Instant>,
    /// Ranges deleted already.
    dropped: BTreeSet<TokenRange>,
    /// Every foreign range is deleted: nothing left to do for this ring.
    complete: bool,
}

/// The times the machine works with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PhaseConfig {
    /// The ring must be unchanged, and the views agree, this long before
    /// data moves.
    pub(crate) settle: Duration,
    /// Ranges are deleted this long after the members announced the ring.
    pub(crate) cleanup_grace: Duration,
}

/// The state between two ticks.
#[derive(Debug)]
pub(crate) struct Phase {
    cfg: PhaseConfig,
    /// The ring being settled, and since when it has been the ring.
    seen: Option<(String, Instant)>,
    /// Since when the live peers' views agree (for the ring in `seen`).
    agreed_since: Option<Instant>,
    /// The ring last synced here, before the view shows its announcement.
    synced: Option<String>,
    /// No sync before this (after a failure).
    retry_at: Option<Instant>,
    /// Clean-up progress for the ring this peer holds.
    cleanup: Option<CleanUpState>,
}

impl Phase {
    pub(crate) fn new(cfg: PhaseConfig) -> Self {
        Self {
            cfg,
            seen: None,
            agreed_since: None,
            synced: None,
            retry_at: None,
            cleanup: None,
        }
    }

    /// One tick of the loop at `now`: `ring` is the current ring (of the
    /// members that are not leaving), `announced` the ring tag this peer
    /// announced, `leaving` whether it is leaving (then a graceful leave
    /// is in charge and the machine waits).
    pub(crate) fn handle_tick(
        &mut self,
        now: Instant,
        view: &View,
        ring: &Ring,
        announced: Option<&str>,
        leaving: bool,
    ) -> Action {
        if leaving {
            return Action::Wait;
        }
        let tag = ring_tag(ring);
        let holds = announced == Some(tag.as_str()) || self.synced.as_deref() == Some(&tag);
        if !holds {
            return self.settle(now, view, ring, tag);
        }
        self.clean_up(now, view, ring, &tag)
    }

    /// Settle: the ring must stay put before data moves, and the live
    /// peers must agree on the view for as long, so that every coordinator
    /// routes writes here before this peer merges what it pulls (a write
    /// through a coordinator still on the old ring would miss this peer).
    /// Agreement is waited for at most [`AGREEMENT_WAIT_MAX`] beyond the
    /// settle time: in a large cluster some peers are heard from only
    /// rarely, and anti-entropy repairs what a late write missed.
    fn settle(&mut self, now: Instant, view: &View, ring: &Ring, tag: String) -> Action {
        let since = match &self.seen {
            Some((t, since)) if *t == tag => *since,
            _ => {
                self.seen = Some((tag, now));
                self.agreed_since = None;
                self.retry_at = None;
                return Action::Wait;
            }
        };
        if views_agree(view) {
            self.agreed_since.get_or_insert(now);
        } else {
            self.agreed_since = None;
        }
        let settle = self.cfg.settle;
        let stable = now.saturating_duration_since(since);
        let agreed = self
            .agreed_since
            .is_some_and(|at| now.saturating_duration_since(at) >= settle);
        if stable < settle || (!agreed && stable < settle + AGREEMENT_WAIT_MAX) {
            return Action::Wait;
        }
        if self.retry_at.is_some_and(|at| now < at) {
            return Action::Wait;
        }
        Action::Sync {
            ring: ring.clone(),
            tag,
        }
    }

    /// Holding the current ring: delete each foreign range once every
    /// replica of it has announced the ring and the grace has passed since.
    fn clean_up(&mut self, now: Instant, view: &View, ring: &Ring, tag: &str) -> Action {
        let me = view.me.id;
        let state = match &mut self.cleanup {
            Some(s) if s.tag == tag => s,
            slot => slot.insert(CleanUpState {
                tag: tag.to_owned(),
                ready_since: BTreeMap::new(),
                dropped: BTreeSet::new(),
                complete: false,
            }),
        };
        if state.complete {
            return Action::Wait;
        }
        let ready = |id: &NodeId| *id == me || announced(view, id, tag);
        let (droppable, blocked) = cleanup_plan(ring, &me, &ready);
        let droppable: BTreeSet<TokenRange> = droppable
            .into_iter()
            .filter(|r| !state.dropped.contains(r))
            .collect();
        // A range that is blocked again (a replica turned suspect) waits
        // the whole grace again.
        state.ready_since.retain(|r, _| droppable.contains(r));
        for r in &droppable {
            state.ready_since.entry(*r).or_insert(now);
        }
        let grace = self.cfg.cleanup_grace;
        let due: Vec<TokenRange> = state
            .ready_since
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= grace)
            .map(|(r, _)| *r)
            .collect();
        if due.is_empty() {
            return Action::Wait;
        }
        for r in &due {
            state.ready_since.remove(r);
            state.dropped.insert(*r);
        }
        state.complete = blocked.is_empty() && state.ready_since.is_empty();
        Action::CleanUp {
            ring: ring.clone(),
            ranges: coalesce(&due),
            complete: state.complete,
        }
    }

    /// The sync of `tag`'s ring succeeded: this peer holds it.
    pub(crate) fn handle_sync_done(&mut self, tag: &str) {
        self.synced = Some(tag.to_owned());
        self.retry_at = None;
    }

    /// The sync failed at `now`: the next try waits [`RETRY_AFTER`].
    pub(crate) fn handle_sync_failed(&mut self, now: Instant) {
        self.retry_at = Some(now + RETRY_AFTER);
    }
}

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;
