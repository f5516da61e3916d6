//! Wire-version rules, pure (no IO): the protocol range a member
//! advertises, the cluster gate, and the version a frame to one peer is
//! encoded at. See docs/upgrades.md for the rules in prose.
//!
//! A member advertises `(min, max)` in its signed Alive metadata, as the
//! tag [`PROTOCOL_TAG`] (`"3-4"`), so the range rides on statements every
//! build already decodes: adding it changed no message. A member without
//! the tag is a build from before ranges were gossiped and speaks exactly
//! [`codec::VERSION`] (3).
//!
//! The gate is the lowest `max` over the live members, this peer
//! included: a version is sent only once every live member speaks it.
//! It is recomputed from the current view, so it drops back as soon as a
//! member with a lower maximum joins or an upgraded one restarts on an
//! old build; dead and left members do not hold it down.

use crate::proto::codec;
use crate::proto::member::{Member, Meta, State};

/// Metadata tag holding a member's protocol range, `"<min>-<max>"`.
pub const PROTOCOL_TAG: &str = "proto";

/// The range of wire versions one member speaks, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolRange {
    /// Oldest version it decodes and sends.
    pub min: u8,
    /// Newest version it decodes and sends.
    pub max: u8,
}

impl ProtocolRange {
    /// What a build from before protocol ranges speaks.
    pub const LEGACY: Self = Self {
        min: codec::VERSION,
        max: codec::VERSION,
    };

    /// The range a member advertises; [`Self::LEGACY`] when its metadata
    /// has no (or an unreadable) tag.
    #[must_use]
    pub fn of(meta: &Meta) -> Self {
        meta.tags
            .get(PROTOCOL_TAG)
            .and_then(|t| Self::parse(t))
            .unwrap_or(Self::LEGACY)
    }

    /// Parses `"<min>-<max>"` with `min <= max`.
    #[must_use]
    pub fn parse(tag: &str) -> Option<Self> {
        let (min, max) = tag.split_once('-')?;
        let range = Self {
            min: min.parse().ok()?,
            max: max.parse().ok()?,
        };
        (range.min <= range.max).then_some(range)
    }

    /// Writes this range into `meta`'s tags.
    pub fn advertise(self, meta: &mut Meta) {
        meta.tags.insert(PROTOCOL_TAG.to_owned(), self.to_string());
    }
}

impl std::fmt::Display for ProtocolRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// The cluster gate: the lowest maximum among `ours` and the live
/// (Alive or Suspect) members in `members`. A version above it is not
/// sent to anyone.
pub fn cluster_version<'a>(ours: u8, members: impl IntoIterator<Item = &'a Member>) -> u8 {
    members
        .into_iter()
        .filter(|m| matches!(m.state, State::Alive | State::Suspect))
        .map(|m| ProtocolRange::of(&m.meta).max)
        .fold(ours, u8::min)
}

/// The version of a frame to one peer: the gate, lowered to what the peer
/// speaks (its advertised range, or a version negotiated on its
/// connection) when known; [`codec::MIN_VERSION`] to an address no live
/// member advertises (a seed being joined, a dead member being re-probed),
/// since every supported build decodes that.
#[must_use]
pub fn send_version(gate: u8, peer: Option<ProtocolRange>) -> u8 {
    match peer {
        Some(range) => gate.min(range.max).max(codec::MIN_VERSION),
        None => codec::MIN_VERSION,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_ring::NodeId;
    use std::sync::Arc;

    fn member(i: u8, state: State, range: Option<&str>) -> Member {
        let mut meta = Meta::new(
            format!("127.0.0.1:{}", 7000 + u16::from(i))
                .parse()
                .expect("addr"),
            format!("n{i}"),
        );
        if let Some(r) = range {
            meta.tags.insert(PROTOCOL_TAG.to_owned(), r.to_owned());
        }
        Member {
            id: NodeId::from_name(&format!("n{i}")),
            incarnation: 1,
            state,
            meta: Arc::new(meta),
        }
    }

    #[test]
    fn the_range_round_trips_through_metadata_and_defaults_to_legacy() {
        let mut meta = Meta::new("127.0.0.1:1".parse().expect("addr"), "a");
        assert_eq!(ProtocolRange::of(&meta), ProtocolRange::LEGACY);
        let range = ProtocolRange { min: 3, max: 4 };
        range.advertise(&mut meta);
        assert_eq!(meta.tags[PROTOCOL_TAG], "3-4");
        assert_eq!(ProtocolRange::of(&meta), range);
        for bad in ["", "4", "4-3", "x-4", "3-300"] {
            assert_eq!(ProtocolRange::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_gate_rises_only_when_every_live_member_speaks_the_version() {
        let old = |i| member(i, State::Alive, None);
        let new = |i| member(i, State::Alive, Some("3-4"));
        // Rolling 3 peers: this peer (new) first, then the others.
        assert_eq!(cluster_version(4, &[old(1), old(2)]), 3);
        assert_eq!(cluster_version(4, &[new(1), old(2)]), 3);
        assert_eq!(cluster_version(4, &[new(1), new(2)]), 4);
        // A suspect still counts; dead and left members do not.
        assert_eq!(
            cluster_version(4, &[new(1), member(2, State::Suspect, None)]),
            3
        );
        assert_eq!(
            cluster_version(4, &[new(1), member(2, State::Dead, None)]),
            4
        );
        assert_eq!(
            cluster_version(4, &[new(1), member(2, State::Left, Some("3-3"))]),
            4
        );
        // An old member joining drops it back; so does this peer's own max.
        assert_eq!(cluster_version(4, &[new(1), new(2), old(3)]), 3);
        assert_eq!(cluster_version(3, &[new(1), new(2)]), 3);
        // Alone, a peer speaks its own max.
        assert_eq!(cluster_version(4, &[]), 4);
    }

    #[test]
    fn a_frame_goes_out_at_the_gate_lowered_to_its_peer() {
        let both = ProtocolRange { min: 3, max: 4 };
        assert_eq!(send_version(4, Some(both)), 4);
        assert_eq!(send_version(3, Some(both)), 3);
        assert_eq!(send_version(4, Some(ProtocolRange::LEGACY)), 3);
        // Unknown address: the oldest version, which every build decodes.
        assert_eq!(send_version(4, None), codec::MIN_VERSION);
    }
}
