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
//! - **Two dials at once** (the two peers dialling each other, or the
//!   runner and the pool of one peer both dialling) can leave each side
//!   sending on a different connection, and both would stay in use for
//!   ever. So the one replaced is kept as a spare, and when the other side
//!   is heard on its spare, the side with the larger node id follows it
//!   (makes it its link), and the side with the smaller id does only if
//!   it dialled that connection itself ([`promotes`]). The smaller side
//!   thus moves only between its own dials, the larger follows whatever
//!   the smaller sends on, and they settle on one; the other idles out.
//!
//! Only connections whose certificate was checked are offered here (the
//! runner's `is_member_at`, the pool's `expect_peer`: the certificate of a
//! member the view holds at the address, or any cluster peer at an
//! address with no member yet, a seed), so a spare is one of those too.
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
/// was heard on becomes the link (pure): always on the side with the
/// larger id, only its own dials on the side with the smaller.
/// `dialled_by_me`: this side dialled it.
#[must_use]
pub fn promotes(me: NodeId, peer: NodeId, dialled_by_me: bool) -> bool {
    me != peer && (me > peer || dialled_by_me)
}

/// An entry: the link, and the one it replaced (still open, maybe still
/// used by the other side).
#[derive(Debug)]
struct Entry {
    link: quinn::Connection,
    spare: Option<quinn::Connection>,
    /// The peer serves requests only on connections it accepted (an
    /// older build): a connection it dialled is never promoted over ours.
    own_dials_only: bool,
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
        self.put(addr, conn, false);
    }

    /// [`insert`](Self::insert) of a connection this peer dialled because
    /// the peer at `addr` serves requests only on connections it accepted
    /// (an older build): from now on, until the entry is removed, a
    /// connection that peer dialled is never promoted over this one.
    pub fn insert_own_dial(&self, addr: SocketAddr, conn: quinn::Connection) {
        self.put(addr, conn, true);
    }

    fn put(&self, addr: SocketAddr, conn: quinn::Connection, own_dials_only: bool) {
        let mut links = self.lock();
        let (spare, pinned) = match links.remove(&addr) {
            Some(e) => (Some(e.link), e.own_dials_only),
            None => (None, false),
        };
        let spare =
            spare.filter(|old| old.close_reason().is_none() && old.stable_id() != conn.stable_id());
        links.insert(
            addr,
            Entry {
                link: conn,
                spare,
                own_dials_only: own_dials_only || pinned,
            },
        );
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
        let ours = conn.side().is_client();
        if is_spare && (ours || !entry.own_dials_only) && promotes(me, peer, ours) {
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
    fn the_larger_id_follows_and_the_smaller_keeps_to_its_own_dials() {
        let (small, large) = (NodeId([1; 16]), NodeId([9; 16]));
        // The smaller side moves only to its own dials.
        assert!(promotes(small, large, true));
        assert!(!promotes(small, large, false));
        // The larger follows whatever the smaller is heard on.
        assert!(promotes(large, small, true));
        assert!(promotes(large, small, false));
        // Never towards itself.
        assert!(!promotes(small, small, true));
    }

    /// Two connections X and Y between `small` and `large`; each side
    /// holds one as its link and the other as its spare, and sends on its
    /// link. Steps: every side hears the other on the connection the other
    /// sends on and applies the rule, until nothing changes. Returns the
    /// links.
    fn settle(small_link: char, large_link: char, small_dialled: [char; 2]) -> (char, char) {
        let (small, large) = (NodeId([1; 16]), NodeId([9; 16]));
        let (mut s, mut l) = (small_link, large_link);
        for _ in 0..4 {
            // large hears small on s.
            if l != s && promotes(large, small, !small_dialled.contains(&s)) {
                l = s;
            }
            // small hears large on l.
            if s != l && promotes(small, large, small_dialled.contains(&l)) {
                s = l;
            }
        }
        (s, l)
    }

    #[test]
    fn two_connections_between_a_pair_settle_on_one_whatever_each_side_holds() {
        // Who dialled X and Y (the small side dialled those listed), and
        // which each side holds: every case ends on one connection.
        for small_dialled in [vec!['X'], vec!['Y'], vec!['X', 'Y'], vec![]] {
            let dialled = [
                small_dialled.first().copied().unwrap_or('-'),
                small_dialled.get(1).copied().unwrap_or('-'),
            ];
            for (s, l) in [('X', 'Y'), ('Y', 'X'), ('X', 'X'), ('Y', 'Y')] {
                let (s2, l2) = settle(s, l, dialled);
                assert_eq!(
                    s2, l2,
                    "small dialled {small_dialled:?}, held small {s} large {l}"
                );
            }
        }
    }
}
