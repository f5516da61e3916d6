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
//!   runner and the pool of one peer both dialling, or both after a
//!   partition) can leave each side sending on a different connection,
//!   and both would stay in use for ever. So the side with the larger
//!   node id follows the other: when it hears the smaller side on another
//!   connection it knows (one it held before), that one becomes its link
//!   ([`follows`]). The smaller side never changes its link on hearing,
//!   only by its own inserts, so there is nothing to flap between: the
//!   pair settles on the smaller side's link with its next message, and
//!   the other connections idle out.
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

use std::collections::{HashMap, HashSet};
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

/// Whether the side `me` of a pair, hearing `peer` on a connection it
/// knows that is not its link, makes that connection its link (pure):
/// only the side with the larger id follows, and only to a connection it
/// dialled itself or one a peer dialled that serves requests both ways
/// (an older build's would be unusable for requests, and the pool would
/// dial again at once). `dialled_by_me`: this side dialled it.
#[must_use]
pub fn follows(me: NodeId, peer: NodeId, dialled_by_me: bool, peer_two_way: bool) -> bool {
    me > peer && (dialled_by_me || peer_two_way)
}

/// Connections to one peer remembered besides the link, newest first:
/// the ones the link replaced that may still be open and used.
const KNOWN_MAX: usize = 4;

/// An entry: the link, and others it replaced (still open, maybe still
/// used by the other side).
#[derive(Debug)]
struct Entry {
    link: quinn::Connection,
    known: Vec<quinn::Connection>,
}

/// The table: cheap to clone, safe to use from both runtimes.
#[derive(Debug, Clone, Default)]
pub struct Links {
    links: Arc<Mutex<HashMap<SocketAddr, Entry>>>,
    /// Members that serve requests both ways ([`SHARED_TAG`]), as the
    /// runner last saw them.
    two_way: Arc<Mutex<HashSet<NodeId>>>,
    /// This peer (`None`: a client's table, which never follows).
    me: Option<NodeId>,
}

impl Links {
    /// The table of peer `me`.
    #[must_use]
    pub fn new(me: NodeId) -> Self {
        Self {
            links: Arc::default(),
            two_way: Arc::default(),
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
    /// it replaces, if open, is remembered.
    pub fn insert(&self, addr: SocketAddr, conn: quinn::Connection) {
        let mut links = self.lock();
        let mut known = match links.remove(&addr) {
            Some(e) => {
                let mut known = e.known;
                known.insert(0, e.link);
                known
            }
            None => Vec::new(),
        };
        known.retain(|c| c.close_reason().is_none() && c.stable_id() != conn.stable_id());
        known.truncate(KNOWN_MAX);
        links.insert(addr, Entry { link: conn, known });
    }

    /// Which members serve requests both ways (the runner sets it when
    /// the view changes).
    pub fn set_two_way(&self, members: HashSet<NodeId>) {
        *self.two_way.lock().unwrap_or_else(PoisonError::into_inner) = members;
    }

    /// The other side (node `peer`) was heard on `conn` from `addr`: if
    /// `conn` is a known connection there other than the link and
    /// [`follows`] says so, it becomes the link (the link is remembered).
    pub fn heard(&self, addr: SocketAddr, peer: NodeId, conn: &quinn::Connection) {
        let Some(me) = self.me else { return };
        if me <= peer {
            return;
        }
        let two_way = self
            .two_way
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&peer);
        let mut links = self.lock();
        let Some(entry) = links.get_mut(&addr) else {
            return;
        };
        if entry.link.stable_id() == conn.stable_id() {
            return;
        }
        let Some(i) = entry
            .known
            .iter()
            .position(|c| c.stable_id() == conn.stable_id())
        else {
            return;
        };
        if follows(me, peer, conn.side().is_client(), two_way) {
            let heard = entry.known.remove(i);
            let link = std::mem::replace(&mut entry.link, heard);
            if link.close_reason().is_none() {
                entry.known.insert(0, link);
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

    const SMALL: NodeId = NodeId([1; 16]);
    const LARGE: NodeId = NodeId([9; 16]);

    #[test]
    fn only_the_larger_id_follows_and_never_to_an_old_builds_dial() {
        assert!(follows(LARGE, SMALL, true, true));
        assert!(follows(LARGE, SMALL, false, true));
        assert!(follows(LARGE, SMALL, true, false));
        // An older build's dial carries no requests from us.
        assert!(!follows(LARGE, SMALL, false, false));
        // The smaller never moves on hearing.
        assert!(!follows(SMALL, LARGE, true, true));
        assert!(!follows(SMALL, LARGE, false, true));
        assert!(!follows(SMALL, SMALL, true, true));
    }

    /// A pair with connections 0..k between them; each side holds a link
    /// and knows all of them. Messages the smaller side sent earlier on
    /// other connections (`stray`) arrive first, then the smaller side's
    /// current traffic; the larger side applies [`follows`] to each. The
    /// larger side's final link.
    fn larger_after(small_link: usize, stray: &[usize], small_dialled: &[usize]) -> usize {
        let mut large_link = usize::MAX;
        for &c in stray.iter().chain([&small_link]) {
            if c != large_link && follows(LARGE, SMALL, !small_dialled.contains(&c), true) {
                large_link = c;
            }
        }
        large_link
    }

    #[test]
    fn the_pair_settles_on_the_smaller_sides_link_whatever_came_before() {
        // Three connections (runner and pool of one side and the other
        // side's runner all dialled), any of them the smaller side's link,
        // any earlier stray traffic on the others.
        for small_link in 0..3 {
            for stray in [vec![], vec![0], vec![2, 1], vec![1, 0, 2, 1]] {
                for small_dialled in [vec![], vec![0], vec![1, 2], vec![0, 1, 2]] {
                    assert_eq!(
                        larger_after(small_link, &stray, &small_dialled),
                        small_link,
                        "stray {stray:?}, small dialled {small_dialled:?}"
                    );
                }
            }
        }
    }
}
