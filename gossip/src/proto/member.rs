//! Members, their states and metadata, and the rules that order updates.
//!
//! Precedence (the SWIM paper's, as a single order): an update about a
//! member replaces what we hold when its `(incarnation, state)` is greater,
//! with states ranked `Alive < Suspect < Dead < Left`. So a suspicion beats
//! an Alive of the same incarnation, only a higher incarnation refutes it,
//! Dead and Left are final for their incarnation, and a restarted peer comes
//! back with a higher incarnation. Metadata rides on Alive updates, so a
//! metadata change is an Alive with a new incarnation.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use ringkv_ring::NodeId;
use serde::{Deserialize, Serialize};

/// A member's incarnation: only its owner raises it, to refute suspicion,
/// to change metadata, or on restart.
pub type Incarnation = u64;

/// Highest capacity weight a member may announce; an Alive outside
/// `1..=WEIGHT_MAX` is dropped. A node of weight w owns `vnodes * w` ring
/// tokens, so 1,000 (150,000 tokens at the default 150 vnodes) leaves room
/// for a thousandfold difference in machine size while a single member
/// cannot blow up every peer's ring, or take it over with a wild weight.
pub const WEIGHT_MAX: u32 = 1000;

/// Liveness of a member, in precedence order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum State {
    /// Answering probes.
    Alive,
    /// Missed a probe; will be declared dead unless it refutes in time.
    Suspect,
    /// Confirmed failed.
    Dead,
    /// Left gracefully.
    Left,
}

impl State {
    /// One letter for matrices and tables: A, S, D, L.
    pub fn letter(self) -> char {
        match self {
            Self::Alive => 'A',
            Self::Suspect => 'S',
            Self::Dead => 'D',
            Self::Left => 'L',
        }
    }

    /// Whether the member counts as in the cluster (Alive or Suspect).
    pub fn is_live(self) -> bool {
        matches!(self, Self::Alive | Self::Suspect)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
            Self::Left => "left",
        };
        f.write_str(s)
    }
}

/// Where a node is in its lifecycle, as it announces it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeStatus {
    /// Joined the membership but not yet serving its ranges.
    Joining,
    /// Serving.
    #[default]
    Normal,
    /// Streaming its ranges away before leaving.
    Leaving,
}

/// What a member tells the cluster about itself. Versioned by the
/// incarnation of the Alive update that carries it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Meta {
    /// Address peers send gossip (QUIC) to.
    pub addr: SocketAddr,
    /// Admin HTTP address, if it serves one.
    pub admin: Option<SocketAddr>,
    /// Human name, for tables and logs.
    pub name: String,
    /// Capacity weight for the ring, `1..=WEIGHT_MAX`.
    pub weight: u32,
    /// Failure zone, if set.
    pub zone: Option<String>,
    /// Lifecycle status.
    pub status: NodeStatus,
    /// Build version string.
    pub build: String,
    /// Further key/value tags (ranges ready, client ports, ...).
    pub tags: BTreeMap<String, String>,
}

impl Meta {
    /// Minimal metadata: an address and a name, weight 1, status Normal.
    pub fn new(addr: SocketAddr, name: impl Into<String>) -> Self {
        Self {
            addr,
            admin: None,
            name: name.into(),
            weight: 1,
            zone: None,
            status: NodeStatus::Normal,
            build: String::new(),
            tags: BTreeMap::new(),
        }
    }
}

/// A member as gossiped: who, which incarnation, what state, its metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Identity.
    pub id: NodeId,
    /// Incarnation of this statement.
    pub incarnation: Incarnation,
    /// State at that incarnation.
    pub state: State,
    /// Metadata (from the latest Alive we accepted). Shared: every peer's
    /// table can point at one copy per member incarnation.
    pub meta: Arc<Meta>,
}

impl Member {
    /// Whether `(incarnation, state)` supersedes what `self` holds.
    pub fn is_superseded_by(&self, incarnation: Incarnation, state: State) -> bool {
        (incarnation, state) > (self.incarnation, self.state)
    }

    /// This member's contribution to the view digest.
    pub(crate) fn digest_part(&self) -> u64 {
        digest_part(&self.id, self.incarnation, self.state)
    }

    /// This member's contribution to the ring-shape digest.
    pub(crate) fn shape_part(&self) -> u64 {
        shape_part(&self.id, self.state, &self.meta)
    }
}

/// Hash of one member's `(id, incarnation, state)`; the view digest is the
/// XOR of these, so it updates in O(1) and ignores order.
pub(crate) fn digest_part(id: &NodeId, incarnation: Incarnation, state: State) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(id.as_bytes());
    h.update(&incarnation.to_be_bytes());
    h.update(&[state as u8]);
    let out = h.finalize();
    u64::from_le_bytes(out.as_bytes()[..8].try_into().expect("32-byte hash"))
}

/// Hash of what one member gives the ring: `(id, state, weight, zone,
/// status)`. The ring-shape digest is the XOR of these: unlike the view
/// digest it leaves out the incarnation and every other metadata field, so
/// a metadata-only change (a tag, the admin address, the build) leaves it
/// as it was, while a change of state, weight, zone or status does not.
pub(crate) fn shape_part(id: &NodeId, state: State, meta: &Meta) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"ringkv shape part");
    h.update(id.as_bytes());
    h.update(&[state as u8]);
    h.update(&meta.weight.to_be_bytes());
    match &meta.zone {
        None => {
            h.update(&[0]);
        }
        Some(zone) => {
            h.update(&[1]);
            h.update(&(zone.len() as u64).to_be_bytes());
            h.update(zone.as_bytes());
        }
    }
    let status = match meta.status {
        NodeStatus::Joining => 0u8,
        NodeStatus::Normal => 1,
        NodeStatus::Leaving => 2,
    };
    h.update(&[status]);
    let out = h.finalize();
    u64::from_le_bytes(out.as_bytes()[..8].try_into().expect("32-byte hash"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(incarnation: Incarnation, state: State) -> Member {
        Member {
            id: NodeId::from_name("m"),
            incarnation,
            state,
            meta: Meta::new("127.0.0.1:1".parse().unwrap(), "m").into(),
        }
    }

    #[test]
    fn suspicion_beats_alive_of_the_same_incarnation() {
        assert!(member(3, State::Alive).is_superseded_by(3, State::Suspect));
        assert!(!member(3, State::Suspect).is_superseded_by(3, State::Alive));
    }

    #[test]
    fn only_a_higher_incarnation_refutes() {
        assert!(member(3, State::Suspect).is_superseded_by(4, State::Alive));
        assert!(!member(3, State::Suspect).is_superseded_by(2, State::Alive));
        assert!(member(3, State::Dead).is_superseded_by(4, State::Alive));
    }

    #[test]
    fn dead_and_left_are_final_for_their_incarnation() {
        for state in [State::Alive, State::Suspect] {
            assert!(!member(5, State::Dead).is_superseded_by(5, state));
            assert!(!member(5, State::Left).is_superseded_by(5, state));
        }
        assert!(!member(5, State::Left).is_superseded_by(5, State::Dead));
        assert!(member(5, State::Dead).is_superseded_by(5, State::Left));
        assert!(member(5, State::Left).is_superseded_by(6, State::Alive));
    }

    #[test]
    fn equal_statements_do_not_supersede() {
        assert!(!member(1, State::Alive).is_superseded_by(1, State::Alive));
    }

    #[test]
    fn digest_part_distinguishes_incarnation_and_state() {
        let id = NodeId::from_name("x");
        assert_ne!(
            digest_part(&id, 1, State::Alive),
            digest_part(&id, 2, State::Alive)
        );
        assert_ne!(
            digest_part(&id, 1, State::Alive),
            digest_part(&id, 1, State::Suspect)
        );
    }

    #[test]
    fn shape_part_ignores_incarnation_and_other_metadata() {
        let a = member(1, State::Alive);
        let mut meta = (*a.meta).clone();
        meta.tags.insert("ready".into(), "abcd".into());
        meta.build = "next".into();
        meta.admin = Some("127.0.0.1:2".parse().unwrap());
        let b = Member {
            incarnation: 2,
            meta: meta.into(),
            ..a.clone()
        };
        assert_eq!(a.shape_part(), b.shape_part());
        assert_ne!(a.digest_part(), b.digest_part());
    }

    #[test]
    fn shape_part_distinguishes_state_weight_zone_and_status() {
        let a = member(1, State::Alive);
        let with = |f: &dyn Fn(&mut Meta)| {
            let mut meta = (*a.meta).clone();
            f(&mut meta);
            shape_part(&a.id, a.state, &meta)
        };
        assert_ne!(a.shape_part(), shape_part(&a.id, State::Suspect, &a.meta));
        assert_ne!(a.shape_part(), shape_part(&a.id, State::Dead, &a.meta));
        assert_ne!(a.shape_part(), with(&|m| m.weight = 2));
        assert_ne!(a.shape_part(), with(&|m| m.zone = Some("z".into())));
        assert_ne!(a.shape_part(), with(&|m| m.status = NodeStatus::Leaving));
        assert_ne!(a.shape_part(), with(&|m| m.status = NodeStatus::Joining));
    }
}
