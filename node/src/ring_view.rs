//! Which members the ring is built from, given a membership view: live
//! members, dead ones for the dead grace after this peer first saw them
//! dead (a short blip must not reshuffle data), never members that left;
//! leaving members apart, since their ranges are read from them until
//! taken over. Pure: time comes in as `now`, and the task that follows the
//! view and publishes [`RingState`] is in `daemon/tasks.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ringkv_gossip::runner::View;
use ringkv_gossip::{Member, NodeId, NodeStatus, State};
use ringkv_ring::{NodeSpec, Ring, DEFAULT_VNODES};

/// The ring as this peer currently builds it.
#[derive(Debug, Default)]
pub(crate) struct RingState {
    /// The ring of the members that are not leaving: where data belongs.
    pub(crate) ring: Option<Ring>,
    /// The ring that still counts leaving members, when any are leaving:
    /// their ranges are read from them until the others hold them.
    pub(crate) full: Option<Ring>,
    /// The rings before `ring` (each different from the next), most recent
    /// first, at most [`EARLIER_RINGS`]: a member that announced one still
    /// holds its ranges of it (nothing is dropped before every replica of
    /// a range announced the current ring), and serves them while it pulls
    /// what the newer rings gave it.
    pub(crate) earlier: Vec<Ring>,
    /// How many times it was rebuilt since start.
    pub(crate) rebuilds: u64,
}

/// Earlier rings kept: enough for the joins of a few peers at once.
pub(crate) const EARLIER_RINGS: usize = 8;

/// When this peer first saw each member dead (kept between views).
pub(crate) type DeadSince = BTreeMap<NodeId, Instant>;

/// Dead members an operator removed from the ring before their dead grace
/// ended (`ringkv removenode`). A removed member seen live again is a
/// member again (it left the set).
pub(crate) type Removed = BTreeSet<NodeId>;

/// The members a ring is built from, each list sorted by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RingMembers {
    /// The ring's members: live ones that are not leaving, and dead ones
    /// within the grace.
    pub(crate) members: Vec<NodeSpec>,
    /// Live members that are leaving: out of the ring, still read from.
    pub(crate) leaving: Vec<NodeSpec>,
}

/// A member as a ring node: its id, weight (at least 1) and zone.
pub(crate) fn spec(m: &Member) -> NodeSpec {
    let mut s = NodeSpec::new(m.id).with_weight(m.meta.weight.max(1));
    s.zone = m.meta.zone.clone();
    s
}

/// The ring's members in `view` at `now`. A member first seen dead is
/// stamped `now` in `dead_since` and kept while `now` is less than
/// `dead_grace` past its stamp, unless it is in `removed`; a member seen
/// live again or left loses its stamp and leaves `removed`.
pub(crate) fn ring_members(
    view: &View,
    dead_since: &mut DeadSince,
    removed: &mut Removed,
    now: Instant,
    dead_grace: Duration,
) -> RingMembers {
    let mut out = RingMembers::default();
    if view.me.meta.status == NodeStatus::Leaving {
        out.leaving.push(spec(&view.me));
    } else {
        out.members.push(spec(&view.me));
    }
    for m in &view.members {
        match m.state {
            State::Alive | State::Suspect if m.meta.status == NodeStatus::Leaving => {
                dead_since.remove(&m.id);
                removed.remove(&m.id);
                out.leaving.push(spec(m));
            }
            State::Alive | State::Suspect => {
                dead_since.remove(&m.id);
                removed.remove(&m.id);
                out.members.push(spec(m));
            }
            State::Dead => {
                let since = *dead_since.entry(m.id).or_insert(now);
                if now.duration_since(since) < dead_grace && !removed.contains(&m.id) {
                    out.members.push(spec(m));
                }
            }
            State::Left => {
                dead_since.remove(&m.id);
                removed.remove(&m.id);
            }
        }
    }
    out.members.sort_by_key(|s| s.id);
    out.leaving.sort_by_key(|s| s.id);
    out
}

/// The ring state for `members`, the `rebuilds`-th build: the ring of the
/// members, and when some are leaving, the ring that counts them too.
///
/// # Errors
/// When the members make no ring (see [`Ring::build`]).
pub(crate) fn build(
    members: &RingMembers,
    rebuilds: u64,
) -> Result<RingState, ringkv_ring::RingError> {
    let ring = Ring::build(&members.members, DEFAULT_VNODES)?;
    let full = if members.leaving.is_empty() {
        None
    } else {
        let mut all = members.members.clone();
        all.extend(members.leaving.iter().cloned());
        all.sort_by_key(|s| s.id);
        Ring::build(&all, DEFAULT_VNODES).ok()
    };
    Ok(RingState {
        ring: Some(ring),
        full,
        earlier: Vec::new(),
        rebuilds,
    })
}

impl RingState {
    /// `self`, following `before`: the earlier rings are `before`'s ring
    /// (when it differs from this one) and `before`'s earlier rings, none
    /// twice and none equal to this one.
    pub(crate) fn after(mut self, before: &Self) -> Self {
        let current = self.ring.as_ref().map(Ring::digest);
        let mut earlier: Vec<Ring> = Vec::new();
        for r in before.ring.iter().chain(before.earlier.iter()) {
            let d = r.digest();
            if Some(d) != current && earlier.iter().all(|e| e.digest() != d) {
                earlier.push(r.clone());
            }
        }
        earlier.truncate(EARLIER_RINGS);
        self.earlier = earlier;
        self
    }
}

#[cfg(test)]
mod tests;
