//! Builders the unit tests share: node ids from names, rings, members
//! with a ready tag, and views. Test-only.

use std::sync::Arc;

use ringkv_gossip::runner::View;
use ringkv_gossip::{Member, Meta, NodeId, NodeStatus, State, Stats};
use ringkv_ring::{NodeSpec, Ring, DEFAULT_VNODES};

use crate::readiness::READY_TAG;

pub(crate) fn id(name: &str) -> NodeId {
    NodeId::from_name(name)
}

/// The ring of `names`, weight 1 each.
pub(crate) fn ring(names: &[&str]) -> Ring {
    let mut specs: Vec<NodeSpec> = names.iter().map(|n| NodeSpec::new(id(n))).collect();
    specs.sort_by_key(|s| s.id);
    Ring::build(&specs, DEFAULT_VNODES).expect("a ring")
}

/// A normal member named `name`, announcing `ready` when given.
pub(crate) fn member(name: &str, state: State, ready: Option<&str>) -> Member {
    let mut meta = Meta::new("127.0.0.1:1".parse().expect("addr"), name);
    meta.status = NodeStatus::Normal;
    if let Some(tag) = ready {
        meta.tags.insert(READY_TAG.to_owned(), tag.to_owned());
    }
    Member {
        id: id(name),
        incarnation: 1,
        state,
        meta: Arc::new(meta),
    }
}

/// The view of `me` with `members`, joined, nobody reporting agreement.
pub(crate) fn view(me: Member, members: Vec<Member>) -> View {
    View {
        me,
        members,
        digest: 0,
        agreement: (0, 0),
        shape: 0,
        ring_agreement: (0, 0),
        joined: true,
        stats: Stats::default(),
        health: 0,
        index: 0,
    }
}
