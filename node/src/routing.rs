//! Routing state a peer shares between requests: the members as replicas
//! (who and where), and which ring each announced it holds fully, built
//! once per view and ring (cached in `Kv`). Pure: reads the view and the
//! ring, does no IO. The coordinator plans each key's route from it.

use std::net::SocketAddr;
use std::sync::Arc;

use ringkv_gossip::runner::View;
use ringkv_gossip::NodeId;

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

impl Announced {
    /// Whether the member holds a key's range fully, given whether it is a
    /// replica of the key in the earlier ring it announced.
    pub(crate) fn holds(self, replica_in_its_ring: bool) -> bool {
        match self {
            Self::Current => true,
            Self::Earlier(_) => replica_in_its_ring,
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
}

impl Routing {
    pub(crate) fn new(view: Arc<View>, ring: Arc<RingState>) -> Self {
        let tag = ring.ring.as_ref().map(crate::readiness::ring_tag);
        let earlier: Vec<String> = ring
            .earlier
            .iter()
            .map(crate::readiness::ring_tag)
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
        }
    }

    pub(crate) fn replica(&self, id: &NodeId) -> Option<Replica> {
        self.members.get(id).map(|(r, _)| r.clone())
    }

    /// Whether `id` holds `key`'s range fully, by the ring it announced:
    /// the current one, or the one before, whose ranges it still holds
    /// (`previous_replicas` are that ring's replicas of the key).
    pub(crate) fn holds(&self, id: &NodeId, earlier_replicas: &[Vec<NodeId>]) -> bool {
        self.members.get(id).is_some_and(|(_, a)| {
            let in_its_ring = match a {
                Announced::Earlier(i) => earlier_replicas.get(*i).is_some_and(|r| r.contains(id)),
                _ => false,
            };
            a.holds(in_its_ring)
        })
    }
}
