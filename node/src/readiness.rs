//! Readiness: which ring each peer announced it holds fully, who holds
//! which ranges, and whether the live peers' views agree. Pure: reads
//! the gossip view, does no IO.

use std::net::SocketAddr;

use ringkv_gossip::runner::View;
use ringkv_gossip::{NodeId, State};
use ringkv_ring::Ring;

/// Metadata tag carrying the short digest of the ring a peer holds fully.
pub(crate) const READY_TAG: &str = "ready";
/// The tag of the ring before the announced one, while this peer still
/// holds what it replicated there (until its clean-up is complete): a
/// coordinator may ask it for those keys as a stand-in.
pub(crate) const PREVIOUS_TAG: &str = "ready-prev";

/// A peer known from the view.
#[derive(Debug, Clone)]
pub(crate) struct Holder {
    pub(crate) id: NodeId,
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
}

/// Whether every live peer last reported the ring shape this peer's view
/// has: the same members in the same states, with the same weights, zones
/// and statuses (gossip's ring agreement). Metadata-only changes, such as
/// a peer announcing its ready tag, do not count: they bump the
/// announcer's incarnation, and so the full view digest, but not the ring
/// anyone builds, and waiting on them made every announcement restart
/// every other peer's settle (issue 13 item 5).
pub(crate) fn views_agree(view: &View) -> bool {
    let (agreeing, reporting) = view.ring_agreement;
    // `live()` counts this peer too; `agreement` only the others.
    agreeing == reporting && reporting + 1 >= view.live().count()
}

/// The short digest peers announce for `ring`.
pub(crate) fn ring_tag(ring: &Ring) -> String {
    ring.digest().short()
}

/// Whether member `id` announced that it holds `tag`'s ring fully.
pub(crate) fn is_ready(view: &View, id: &NodeId, tag: &str) -> bool {
    std::iter::once(&view.me)
        .chain(view.members.iter())
        .find(|m| m.id == *id)
        .is_some_and(|m| m.meta.tags.get(READY_TAG).map(String::as_str) == Some(tag))
}

pub(crate) fn holder(view: &View, id: &NodeId) -> Option<(Holder, State)> {
    std::iter::once(&view.me)
        .chain(view.members.iter())
        .find(|m| m.id == *id)
        .map(|m| {
            (
                Holder {
                    id: m.id,
                    name: m.meta.name.clone(),
                    addr: m.meta.addr,
                },
                m.state,
            )
        })
}
