//! The one connection a peer holds to each other peer, shared by the
//! gossip runner (datagrams, one-way streams) and the replica pool
//! (request streams), whichever of the two sides dialled it.
//!
//! Before, the runner and the pool each kept a connection of their own to
//! every peer, each way, and a connection dropped from either table stayed
//! open for ever (its dialer's keep-alives kept it from idling out): at 30
//! idle peers each held 148 connections on average, 199 at most, for 29
//! others (docs/BENCHMARKS.md). Now both use the entry here, either side
//! may send requests on a connection the other dialled (the runner reads
//! requests on every connection, with the same role checks), and peer
//! links send no keep-alives: a connection that no table holds and nobody
//! uses ends at the idle timeout.
//!
//! Which connection is the link:
//! - **the newest offered wins.** The other side dialled because it holds
//!   none of ours (it restarted, or dropped ours when our state changed);
//!   the one nobody uses any more idles out.
//! - **Two peers that dial each other at the same moment** each end up
//!   sending on the connection the other dialled, and both would stay in
//!   use for ever. So the one replaced is kept as a spare, and when the
//!   other side is heard on the spare, the spare becomes the link if the
//!   smaller node id dialled it ([`promotes`]). Both sides apply the same
//!   rule, so they settle on the connection the smaller id dialled, and
//!   the other idles out.
//!
//! Only connections whose certificate was checked against the member at
//! the address are offered here (the runner's `is_member_at`, the pool's
//! `expect_peer`), so a spare is one of those too.
//!
//! Builds from before this served requests only on connections they had
//! accepted, so a request on a connection such a peer dialled would wait
//! for ever. A member that serves both ways says so in its signed
//! metadata ([`SHARED_TAG`]), and the pool sends requests on a connection
//! the other side dialled only to such a member (it dials one of its own
//! otherwise, as before). The tag changed no message: tags are part of
//! every version's metadata.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ringkv_ring::NodeId;

/// Metadata tag of a member that serves requests on every connection,
/// whichever side dialled it.
pub const SHARED_TAG: &str = "links";

/// Says in `meta` that this member serves requests both ways.
pub fn advertise(meta: &mut crate::Meta) {
    meta.tags.insert(SHARED_TAG.to_owned(), "1".to_owned());
}

/// Whether the member with `meta` serves requests on a connection it
/// dialled.
#[must_use]
pub fn serves_both_ways(meta: &crate::Meta) -> bool {
    meta.tags.get(SHARED_TAG).is_some_and(|v| v == "1")
}

/// Whether a spare connection between `me` and `peer` that the other side
/// was heard on becomes the link (pure): when the smaller of the two ids
/// dialled it. `dialled_by_me`: this side dialled it.
#[must_use]
pub fn promotes(me: NodeId, peer: NodeId, dialled_by_me: bool) -> bool {
    me != peer && dialled_by_me == (me < peer)
}

/// An entry: the link, and the one it replaced (still open, maybe still
/// used by the other side).
#[derive(Debug)]
struct Entry {
    link: quinn::Connection,
    spare: Option<quinn::Connection>,
}

/// The table: cheap to clone, safe to use from both runtimes.
#[derive(Debug, Clone, Default)]
pub struct Links {
    links: Arc<Mutex<HashMap<SocketAddr, Entry>>>,
    /// This peer (`None`: a client's table, which never promotes).
    me: Option<NodeId>,
}

impl Links {
    /// The table of peer `me`.
    #[must_use]
    pub fn new(me: NodeId) -> Self {
        Self {
            links: Arc::default(),
            me: Some(me),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, Entry>> {
        // The map stays consistent whatever panicked while holding it.
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The open connection to `addr`, if any (a closed one is dropped).
    #[must_use]
    pub fn get(&self, addr: SocketAddr) -> Option<quinn::Connection> {
        let mut links = self.lock();
        match links.get(&addr) {
            Some(e) if e.link.close_reason().is_none() => Some(e.link.clone()),
            Some(_) => {
                links.remove(&addr);
                None
            }
            None => None,
        }
    }

    /// Makes `conn` the connection to `addr` (the newest wins); the one
    /// it replaces, if open, becomes the spare.
    pub fn insert(&self, addr: SocketAddr, conn: quinn::Connection) {
        let mut links = self.lock();
        let spare = links
            .remove(&addr)
            .map(|e| e.link)
            .filter(|old| old.close_reason().is_none() && old.stable_id() != conn.stable_id());
        links.insert(addr, Entry { link: conn, spare });
    }

    /// The other side (node `peer`) was heard on `conn` from `addr`: if
    /// `conn` is the spare there and [`promotes`] says so, it becomes the
    /// link (and the link the spare).
    pub fn heard(&self, addr: SocketAddr, peer: NodeId, conn: &quinn::Connection) {
        let Some(me) = self.me else { return };
        let mut links = self.lock();
        let Some(entry) = links.get_mut(&addr) else {
            return;
        };
        let is_spare = entry
            .spare
            .as_ref()
            .is_some_and(|s| s.stable_id() == conn.stable_id());
        if is_spare && promotes(me, peer, conn.side().is_client()) {
            if let Some(spare) = entry.spare.take() {
                let link = std::mem::replace(&mut entry.link, spare);
                entry.spare = (link.close_reason().is_none()).then_some(link);
            }
        }
    }

    /// Drops the connection to `addr`, if any (not closed: requests in
    /// flight on it finish).
    pub fn remove(&self, addr: SocketAddr) {
        self.lock().remove(&addr);
    }

    /// Drops `conn` if it is still the one for `addr` (a concurrent call
    /// may have put a newer one there).
    pub fn remove_if(&self, addr: SocketAddr, conn: &quinn::Connection) {
        let mut links = self.lock();
        if links.get(&addr).map(|e| e.link.stable_id()) == Some(conn.stable_id()) {
            links.remove(&addr);
        }
    }

    /// Keeps only the links for which `keep` holds.
    pub fn retain(&self, mut keep: impl FnMut(&SocketAddr, &quinn::Connection) -> bool) {
        self.lock().retain(|a, e| keep(a, &e.link));
    }

    /// Links held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_of_a_simultaneous_dial_settle_on_the_smaller_ids_connection() {
        let (small, large) = (NodeId([1; 16]), NodeId([9; 16]));
        // Each side ends up sending on the connection the other dialled
        // and hears the other on its own dial, its spare.
        // The smaller side promotes its own dial; the larger does not
        // (it hears the smaller on the smaller's dial, its link already).
        assert!(promotes(small, large, true));
        assert!(!promotes(large, small, true));
        // A spare the other side dialled: promoted by the larger side
        // only when the smaller dialled it.
        assert!(promotes(large, small, false));
        assert!(!promotes(small, large, false));
        // Never towards itself.
        assert!(!promotes(small, small, true));
    }
}
