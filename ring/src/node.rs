//! The membership view the ring is built from: node ids, weights, zones.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::RingError;

/// A node's 128-bit identity. The ring orders nodes, and breaks token
/// collisions, by this id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub [u8; 16]);

impl NodeId {
    /// A deterministic id derived from a name; for simulations and tests, so
    /// the same names always give the same ring.
    pub fn from_name(name: &str) -> Self {
        let hash = blake3::derive_key("ringkv 2026 simulated node id", name.as_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&hash[..16]);
        Self(id)
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The first 8 hex digits, for tables and logs.
    pub fn short(&self) -> String {
        self.to_string()[..8].to_owned()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl FromStr for NodeId {
    type Err = RingError;

    /// Parses the 32-digit hex form that `Display` prints.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RingError::BadNodeId {
            text: s.chars().take(64).collect(),
        };
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut id = [0u8; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(id))
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 16]>::deserialize(d).map(Self)
        }
    }
}

/// One node of the membership view, as far as placement cares.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeSpec {
    /// The node's identity.
    pub id: NodeId,
    /// Capacity weight: the node gets `vnodes * weight` tokens. At least 1.
    pub weight: u32,
    /// Failure zone (rack, availability zone). When any node has a zone,
    /// replicas go to distinct zones first; a node without one counts as its
    /// own unnamed zone.
    pub zone: Option<String>,
}

impl NodeSpec {
    /// A node of weight 1 with no zone.
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            weight: 1,
            zone: None,
        }
    }

    /// The same node with another weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The same node in a zone.
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_round_trips_through_hex() {
        let id = NodeId::from_name("node-1");
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<NodeId>().unwrap(), id);
        assert_eq!(id.short(), text[..8]);
    }

    #[test]
    fn node_id_rejects_bad_hex() {
        assert!("abc".parse::<NodeId>().is_err());
        assert!("zz".repeat(16).parse::<NodeId>().is_err());
        assert!("é".repeat(16).parse::<NodeId>().is_err());
        assert!(
            "+0".repeat(16).parse::<NodeId>().is_err(),
            "from_str_radix alone takes '+'"
        );
    }

    #[test]
    fn names_give_distinct_stable_ids() {
        assert_eq!(NodeId::from_name("a"), NodeId::from_name("a"));
        assert_ne!(NodeId::from_name("a"), NodeId::from_name("b"));
    }
}
