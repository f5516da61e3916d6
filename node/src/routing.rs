//! Routing state a peer shares between requests: the members as replicas
//! (who and where), and which ring each announced it holds fully, built
//! once per view and ring (cached in `Kv`). Pure: reads the view and the
//! ring, does no IO. The coordinator plans each key's route from it.

use std::net::SocketAddr;
use std::sync::Arc;

use ringkv_gossip::runner::View;
use ringkv_gossip::{Member, NodeId, State};
use ringkv_ring::{NodeSpec, Ring, DEFAULT_VNODES};

use crate::ring_view::RingState;

/// Replication factor (N).
pub(crate) const REPLICAS: usize = 3;

/// A replica of the key: who and where.
#[derive(Debug, Clone)]
pub(crate) struct Replica {
    pub(crate) id: NodeId,
    /// Shared, so that routing a request clones no string.
    pub(crate) name: Arc<str>,
    pub(crate) addr: SocketAddr,
}

impl PartialEq for Replica {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl std::fmt::Display for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// Which ring a member announced it holds fully, as a coordinator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Announced {
    /// The coordinator's current ring: it holds every range it replicates.
    Current,
    /// One of the coordinator's earlier rings (`RingState::earlier`, by
    /// index): it holds the ranges it replicated there, and is still
    /// receiving the ones the newer rings gave it.
    Earlier(usize),
    /// None of those (a new peer pulling its first ranges, or one far
    /// behind): it holds nothing for sure.
    Nothing,
}

/// How many rings announced by others, and never held by this peer,
/// are rebuilt from the view (a cap on the work per view).
const RECONSTRUCTED_MAX: usize = 4;

impl Announced {
    /// Whether the member holds a key's range fully, given whether it is a
    /// replica of the key in the ring it announced or in the ring before,
    /// which it announces (`ready-prev`) until its clean-up is complete.
    /// Anything else it may hold is not announced: as a stand-in for a key
    /// of neither ring it answers "not held", which costs the read an
    /// answer (seen in a new cluster's demo), so it is not asked.
    pub(crate) fn holds(self, replica_in_its_ring: bool) -> bool {
        match self {
            Self::Current | Self::Earlier(_) => replica_in_its_ring,
            Self::Nothing => false,
        }
    }
}

/// The members as replicas, and whether each announced the current ring
/// ready, for one view and one ring.
#[derive(Debug)]
pub(crate) struct Routing {
    pub(crate) view: Arc<View>,
    pub(crate) ring: Arc<RingState>,
    pub(crate) members: std::collections::HashMap<NodeId, (Replica, Announced)>,
    /// Rings that members announced and this peer never had (so they are
    /// not among `ring.earlier`), rebuilt from the view: `Earlier(i)` with
    /// `i >= ring.earlier.len()` indexes these.
    reconstructed: Vec<Ring>,
    /// Whether a member that is not dead or gone announced a ring this
    /// peer can neither find nor rebuild: what it holds is unknown, so
    /// "too few holders" may be ignorance, not a new cluster.
    pub(crate) unplaced: bool,
    /// Members that still hold the ring before the one they announced
    /// (their `ready-prev` tag), by `Announced::Earlier` index.
    previous: std::collections::HashMap<NodeId, usize>,
}

impl Routing {
    pub(crate) fn new(view: Arc<View>, ring: Arc<RingState>) -> Self {
        let tag = ring.ring.as_ref().map(crate::readiness::ring_tag);
        let mut earlier: Vec<String> = ring
            .earlier
            .iter()
            .map(crate::readiness::ring_tag)
            .collect();
        let reconstructed = reconstruct(&view, tag.as_deref(), &earlier);
        earlier.extend(reconstructed.iter().map(crate::readiness::ring_tag));
        let mut unplaced = false;
        let previous = std::iter::once(&view.me)
            .chain(view.members.iter())
            .filter_map(|m| {
                let t = m.meta.tags.get(crate::readiness::PREVIOUS_TAG)?;
                Some((m.id, earlier.iter().position(|e| e == t)?))
            })
            .collect();
        let members = std::iter::once(&view.me)
            .chain(view.members.iter())
            .map(|m| {
                let announced = m.meta.tags.get(crate::readiness::READY_TAG);
                let ready = match announced {
                    Some(a) if Some(a) == tag.as_ref() => Announced::Current,
                    Some(a) => earlier
                        .iter()
                        .position(|e| e == a)
                        .map_or(Announced::Nothing, Announced::Earlier),
                    None => Announced::Nothing,
                };
                if ready == Announced::Nothing
                    && announced.is_some()
                    && matches!(m.state, State::Alive | State::Suspect)
                {
                    unplaced = true;
                }
                let replica = Replica {
                    id: m.id,
                    name: Arc::from(m.meta.name.as_str()),
                    addr: m.meta.addr,
                };
                (m.id, (replica, ready))
            })
            .collect();
        Self {
            view,
            ring,
            members,
            reconstructed,
            unplaced,
            previous,
        }
    }

    /// The earlier rings a member may have announced, by `Earlier` index:
    /// this peer's own earlier rings, then the rebuilt ones.
    pub(crate) fn earlier_rings(&self) -> impl Iterator<Item = &Ring> {
        self.ring.earlier.iter().chain(self.reconstructed.iter())
    }

    pub(crate) fn replica(&self, id: &NodeId) -> Option<Replica> {
        self.members.get(id).map(|(r, _)| r.clone())
    }

    /// Whether `id` holds a key's range fully, by the ring it announced:
    /// `current` are the current ring's replicas of the key, and
    /// `earlier_replicas` each earlier ring's (by [`Announced::Earlier`]
    /// index).
    pub(crate) fn holds(
        &self,
        id: &NodeId,
        current: &[NodeId],
        earlier_replicas: &[Vec<NodeId>],
    ) -> bool {
        let in_ring = |i: usize| earlier_replicas.get(i).is_some_and(|r| r.contains(id));
        let in_previous = self.previous.get(id).is_some_and(|i| in_ring(*i));
        self.members.get(id).is_some_and(|(_, a)| {
            let in_its_ring = match a {
                Announced::Current => current.contains(id),
                Announced::Earlier(i) => in_ring(*i),
                Announced::Nothing => false,
            };
            a.holds(in_its_ring || in_previous)
        })
    }
}

/// Rebuilds the rings that members announced and this peer never had.
///
/// A peer that joined after a ring was announced never built it, so
/// without this it would take the members that hold that ring (the old
/// holders, before they announce the new one) for members holding
/// nothing, find too few holders for every key, and route in degraded
/// mode: reads and writes on the new, still-empty peers alone (seen in the
/// joiners-die scenario: writes acknowledged by two joiners only, lost
/// when they died). The members that announced a tag, or all the members
/// that announced any, are what such a ring was made of in the common
/// cases (a stable ring, then joins); a candidate counts only if its
/// digest is the tag, so a wrong guess changes nothing.
fn reconstruct(view: &View, current: Option<&str>, known: &[String]) -> Vec<Ring> {
    let all: Vec<&Member> = std::iter::once(&view.me)
        .chain(view.members.iter())
        .filter(|m| m.state != State::Left)
        .collect();
    let tag_of = |m: &Member| m.meta.tags.get(crate::readiness::READY_TAG).cloned();
    let prev_of = |m: &Member| m.meta.tags.get(crate::readiness::PREVIOUS_TAG).cloned();
    let mut unknown: Vec<String> = all
        .iter()
        .flat_map(|m| [tag_of(m), prev_of(m)])
        .flatten()
        .filter(|t| Some(t.as_str()) != current && !known.contains(t))
        .collect();
    unknown.sort();
    unknown.dedup();
    let build = |members: Vec<&Member>| -> Option<Ring> {
        let mut specs: Vec<NodeSpec> = members.into_iter().map(crate::ring_view::spec).collect();
        specs.sort_by_key(|s| s.id);
        Ring::build(&specs, DEFAULT_VNODES).ok()
    };
    let announced_any: Vec<&Member> = all
        .iter()
        .copied()
        .filter(|m| tag_of(m).is_some())
        .collect();
    let any_ring = if unknown.is_empty() {
        None
    } else {
        build(announced_any)
    };
    let mut out = Vec::new();
    for t in unknown.iter().take(RECONSTRUCTED_MAX) {
        let same: Vec<&Member> = all
            .iter()
            .copied()
            .filter(|m| tag_of(m).as_ref() == Some(t) || prev_of(m).as_ref() == Some(t))
            .collect();
        let found = build(same)
            .filter(|r| crate::readiness::ring_tag(r) == *t)
            .or_else(|| {
                any_ring
                    .clone()
                    .filter(|r| crate::readiness::ring_tag(r) == *t)
            });
        out.extend(found);
    }
    out
}

#[cfg(test)]
mod tests;
