//! Authorship of membership statements (DESIGN.md, "Authorship").
//!
//! A statement that member X is Alive (with its metadata) or has Left
//! counts only if X signed it; a Suspect or Dead counts only if the peer in
//! its `by` signed it. Relays pass statements on unchanged, so gossip still
//! spreads them, but nobody can speak for another member. X's public key
//! travels in its Alive statements and is checked against X's id (the id is
//! a hash of the key), so checking needs no extra round trip; once learned,
//! a member's key never changes.
//!
//! The core is pure: the signer and verifier come in as an [`Auth`] given
//! at construction. The daemon uses Ed25519 with the node's TLS identity
//! key (`transport::sign`); the simulator and unit tests use
//! [`InsecureAuth`], which is cheap, deterministic, and forgeable by design.
//!
//! What is signed ([`statement_bytes`]): a domain tag, the cluster id (a
//! statement from one cluster means nothing in another), the kind, the
//! member, the incarnation, and then the key and encoded metadata (Alive)
//! or the `by` (Suspect, Dead).

use std::fmt;

use ringkv_ring::NodeId;
use serde::{Deserialize, Serialize};

use crate::proto::codec;
use crate::proto::message::{ClusterId, Update};

/// A raw 32-byte public key (Ed25519 in the daemon).
pub type PublicKey = [u8; 32];

/// A 64-byte signature (Ed25519 in the daemon). All zeros means unsigned.
/// Encoded as one byte string (serde_bytes), not 64 separate elements.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sig(#[serde(with = "serde_bytes")] pub [u8; 64]);

impl Sig {
    /// No signature at all.
    pub const NONE: Self = Self([0; 64]);

    /// From 64 raw bytes; `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The 64 raw bytes.
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0
    }

    /// Whether this is [`Sig::NONE`].
    pub fn is_none(&self) -> bool {
        *self == Self::NONE
    }
}

impl fmt::Debug for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sig(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// Signs this peer's statements and checks everyone's. Given to
/// [`crate::Swim::new`]; the state machine never looks inside.
pub trait Auth: fmt::Debug + Send {
    /// This peer's public key.
    fn public_key(&self) -> PublicKey;
    /// Signs `msg` with this peer's private key.
    fn sign(&self, msg: &[u8]) -> Sig;
    /// Whether `sig` is `key`'s signature of `msg`.
    fn verify(&self, key: &PublicKey, msg: &[u8], sig: &Sig) -> bool;
    /// Whether `key` is the key of member `id` (the id is derived from it).
    fn key_matches(&self, id: &NodeId, key: &PublicKey) -> bool;
}

/// SIMULATOR AND TESTS ONLY: a keyed blake3 MAC whose key is the public
/// key, which is derived from the node id. It tells apart statements
/// signed by the wrong member (or not at all), which is what the protocol
/// logic needs to be tested, and costs a few hundred nanoseconds; but
/// anyone can compute anyone's "signature", so it protects nothing.
#[derive(Clone, Debug)]
pub struct InsecureAuth {
    key: PublicKey,
}

impl InsecureAuth {
    /// The insecure signer of member `id`.
    pub fn for_id(id: NodeId) -> Self {
        Self {
            key: Self::key_of(&id),
        }
    }

    fn key_of(id: &NodeId) -> PublicKey {
        blake3::derive_key("ringkv insecure sim/test key", id.as_bytes())
    }
}

impl Auth for InsecureAuth {
    fn public_key(&self) -> PublicKey {
        self.key
    }

    fn sign(&self, msg: &[u8]) -> Sig {
        let mut sig = [1; 64];
        sig[..32].copy_from_slice(blake3::keyed_hash(&self.key, msg).as_bytes());
        Sig(sig)
    }

    fn verify(&self, key: &PublicKey, msg: &[u8], sig: &Sig) -> bool {
        sig.0[32..] == [1; 32] && sig.0[..32] == *blake3::keyed_hash(key, msg).as_bytes()
    }

    fn key_matches(&self, id: &NodeId, key: &PublicKey) -> bool {
        Self::key_of(id) == *key
    }
}

/// Why a statement (or a whole entry) was dropped. Each is counted in
/// [`Rejections`]; nothing else changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    /// It carried no signature.
    Unsigned,
    /// The signature is not its author's.
    BadSignature,
    /// Its author (a Suspect's or Dead's `by`) is not a member we know, so
    /// its key is unknown.
    UnknownSigner,
    /// An Alive whose key does not hash to its member's id, or differs
    /// from the key already learned for that member.
    KeyMismatch,
    /// Its incarnation is more than `incarnation_jump_max` above the last
    /// accepted one for that member, or cannot be outbid.
    IncarnationJump,
    /// An Alive whose weight is outside `1..=WEIGHT_MAX`.
    Weight,
    /// A new member while the table holds `members_max` already.
    TableFull,
    /// A push-pull entry that is not an Alive plus an optional later
    /// statement about the same member.
    Malformed,
    /// A connection whose certificate is not the member it was meant to
    /// reach (counted by the runner).
    PeerMismatch,
}

impl Reject {
    /// Every reason, in metric order.
    pub const ALL: [Self; 9] = [
        Self::Unsigned,
        Self::BadSignature,
        Self::UnknownSigner,
        Self::KeyMismatch,
        Self::IncarnationJump,
        Self::Weight,
        Self::TableFull,
        Self::Malformed,
        Self::PeerMismatch,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::BadSignature => "bad_signature",
            Self::UnknownSigner => "unknown_signer",
            Self::KeyMismatch => "key_mismatch",
            Self::IncarnationJump => "incarnation_jump",
            Self::Weight => "weight",
            Self::TableFull => "table_full",
            Self::Malformed => "malformed",
            Self::PeerMismatch => "peer_mismatch",
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Statements dropped, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rejections([u64; Reject::ALL.len()]);

impl Rejections {
    /// Counts one.
    pub fn count(&mut self, reason: Reject) {
        self.0[reason as usize] += 1;
    }

    /// How many for `reason`.
    pub fn get(&self, reason: Reject) -> u64 {
        self.0[reason as usize]
    }

    /// All reasons together.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `(label, count)` for every reason.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Reject::ALL.iter().map(|r| (r.as_str(), self.get(*r)))
    }
}

/// The bytes a statement's signature covers (see the module doc). The
/// signature itself is not part of them.
pub fn statement_bytes(cluster: &ClusterId, update: &Update) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"ringkv membership statement v1\0");
    out.extend_from_slice(&cluster.0);
    let tag = update.state() as u8;
    out.push(tag);
    out.extend_from_slice(update.id().as_bytes());
    out.extend_from_slice(&update.incarnation().to_be_bytes());
    match update {
        Update::Alive { key, meta, .. } => {
            out.extend_from_slice(key);
            codec::encode_part_into(meta.as_ref(), &mut out);
        }
        Update::Suspect { by, .. } | Update::Dead { by, .. } => {
            out.extend_from_slice(by.as_bytes());
        }
        Update::Left { .. } => {}
    }
    out
}

/// The member whose key must have signed `update`.
pub fn author(update: &Update) -> NodeId {
    match update {
        Update::Alive { id, .. } | Update::Left { id, .. } => *id,
        Update::Suspect { by, .. } | Update::Dead { by, .. } => *by,
    }
}

/// Signs `update` in place with `auth` (its `sig` field is replaced).
pub fn sign(auth: &dyn Auth, cluster: &ClusterId, mut update: Update) -> Update {
    let sig = auth.sign(&statement_bytes(cluster, &update));
    *update.sig_mut() = sig;
    update
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_auth_tells_signers_apart() {
        let (a, b) = (NodeId::from_name("a"), NodeId::from_name("b"));
        let (sa, sb) = (InsecureAuth::for_id(a), InsecureAuth::for_id(b));
        let sig = sa.sign(b"hello");
        assert!(sb.verify(&sa.public_key(), b"hello", &sig));
        assert!(!sb.verify(&sb.public_key(), b"hello", &sig));
        assert!(!sb.verify(&sa.public_key(), b"hellO", &sig));
        assert!(!sb.verify(&sa.public_key(), b"hello", &Sig::NONE));
        assert!(sa.key_matches(&a, &sa.public_key()));
        assert!(!sa.key_matches(&b, &sa.public_key()));
    }

    #[test]
    fn sig_round_trips_through_bytes() {
        let sig = InsecureAuth::for_id(NodeId::from_name("a")).sign(b"x");
        assert_eq!(Sig::from_slice(&sig.to_bytes()), Some(sig));
        assert_eq!(Sig::from_slice(&[0; 63]), None);
        assert_eq!(Sig::from_slice(&[0; 65]), None);
    }
}
