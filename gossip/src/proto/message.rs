//! Wire types: the protocol, spelled out.
//!
//! Every message is an [`Envelope`]: the cluster id (messages from another
//! cluster are dropped), the sender's id and address, the sender's view
//! digest (so divergence shows at once) and ring-shape digest, one
//! [`Body`], and piggybacked [`Update`]s.
//!
//! The two digests: `view` is the XOR over every member of a hash of
//! `(id, incarnation, state)`, so it changes with every statement,
//! metadata-only ones included; `shape` (wire version 3) is the XOR over
//! every member of a hash of `(id, state, weight, zone, status)`, what the
//! ring is built from, so a tag change (an incarnation bump that carries
//! only metadata) leaves it as it was. Peers count agreement on each
//! ([`crate::Swim::agreement`], [`crate::Swim::ring_agreement`]). Both are
//! fixed-size integers (a varint of at most 9 bytes each), counted in the
//! datagram budget like the rest of the envelope; the decoder's limits
//! (`codec.rs`) are unchanged. Datagrams (probes, acks, gossip) stay under the configured
//! datagram size; push-pull travels on a stream.
//!
//! The exchanges:
//! - Probe: `Ping{seq, target}` → `Ack{seq}`. A probe of a suspected or dead
//!   peer carries that peer's own state first, so it refutes at once.
//! - Indirect probe: `PingReq{seq, target}` to k peers; each pings the
//!   target with its own seq and forwards the `Ack{seq}`, or sends
//!   `Nack{seq}` when the target stays silent (Lifeguard: a nack proves the
//!   helper is alive, so silence counts against this peer's health).
//! - `Gossip`: only piggybacked updates, to a few random peers per round.
//! - `PushPull{members, join, reply}`: full state one way, full state back,
//!   each member as its signed statements ([`Entry`]).
//!
//! Every [`Update`] is signed by its author (`auth.rs`): Alive and Left by
//! the member itself, Suspect and Dead by their `by`. Relays never change
//! them.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use ringkv_ring::NodeId;
use serde::{Deserialize, Serialize};

use crate::proto::auth::{PublicKey, Sig};
use crate::proto::member::{Incarnation, Member, Meta, State};

/// Identity of a cluster, derived from its secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub [u8; 16]);

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// Everything a peer sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Sender's cluster.
    pub cluster: ClusterId,
    /// Sender.
    pub from: NodeId,
    /// Where to answer the sender.
    pub from_addr: SocketAddr,
    /// Sender's membership view digest when it sent this.
    pub view: u64,
    /// Sender's ring-shape digest when it sent this (wire version 3).
    pub shape: u64,
    /// The message itself.
    pub body: Body,
    /// Membership updates riding along.
    pub updates: Vec<Update>,
}

/// The message kinds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// Are you alive? Answer with `Ack { seq }`.
    Ping {
        /// Sender's probe number.
        seq: u64,
        /// Who the sender meant to probe; others ignore it.
        target: NodeId,
    },
    /// Please probe `target` for me and forward its ack.
    PingReq {
        /// The requester's probe number, echoed in the forwarded ack/nack.
        seq: u64,
        /// Who to probe.
        target: NodeId,
        /// Where.
        target_addr: SocketAddr,
    },
    /// Answer to `Ping`, or a forwarded answer to `PingReq`.
    Ack {
        /// The probe number answered.
        seq: u64,
    },
    /// The target of an indirect probe did not answer in time.
    Nack {
        /// The requester's probe number.
        seq: u64,
    },
    /// Nothing but the piggybacked updates.
    Gossip,
    /// Full state exchange.
    PushPull {
        /// Sent by a joining peer to its seed.
        join: bool,
        /// This is the answer to a push-pull (do not answer it).
        reply: bool,
        /// Every member the sender knows, itself included, each with the
        /// signed statements behind it.
        members: Vec<Entry>,
    },
}

/// One membership statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Update {
    /// The member is alive at this incarnation, with this metadata.
    Alive {
        /// Member.
        id: NodeId,
        /// Incarnation.
        incarnation: Incarnation,
        /// Its metadata.
        meta: Arc<Meta>,
        /// The member's public key (its id is a hash of it).
        #[serde(with = "serde_bytes")]
        key: PublicKey,
        /// The member's signature.
        sig: Sig,
    },
    /// `by` suspects the member at this incarnation.
    Suspect {
        /// Member.
        id: NodeId,
        /// Incarnation.
        incarnation: Incarnation,
        /// The suspecting peer (counted as a Lifeguard confirmation).
        by: NodeId,
        /// `by`'s signature.
        sig: Sig,
    },
    /// `by` declared the member dead at this incarnation.
    Dead {
        /// Member.
        id: NodeId,
        /// Incarnation.
        incarnation: Incarnation,
        /// The peer whose suspicion ran out.
        by: NodeId,
        /// `by`'s signature.
        sig: Sig,
    },
    /// The member left gracefully at this incarnation.
    Left {
        /// Member.
        id: NodeId,
        /// Incarnation.
        incarnation: Incarnation,
        /// The member's signature.
        sig: Sig,
    },
}

impl Update {
    /// The member the update is about.
    pub fn id(&self) -> NodeId {
        match self {
            Self::Alive { id, .. }
            | Self::Suspect { id, .. }
            | Self::Dead { id, .. }
            | Self::Left { id, .. } => *id,
        }
    }

    /// Its incarnation.
    pub fn incarnation(&self) -> Incarnation {
        match self {
            Self::Alive { incarnation, .. }
            | Self::Suspect { incarnation, .. }
            | Self::Dead { incarnation, .. }
            | Self::Left { incarnation, .. } => *incarnation,
        }
    }

    /// The state it asserts.
    pub fn state(&self) -> State {
        match self {
            Self::Alive { .. } => State::Alive,
            Self::Suspect { .. } => State::Suspect,
            Self::Dead { .. } => State::Dead,
            Self::Left { .. } => State::Left,
        }
    }

    /// Its signature.
    pub fn sig(&self) -> &Sig {
        match self {
            Self::Alive { sig, .. }
            | Self::Suspect { sig, .. }
            | Self::Dead { sig, .. }
            | Self::Left { sig, .. } => sig,
        }
    }

    /// Its signature, to fill in.
    pub fn sig_mut(&mut self) -> &mut Sig {
        match self {
            Self::Alive { sig, .. }
            | Self::Suspect { sig, .. }
            | Self::Dead { sig, .. }
            | Self::Left { sig, .. } => sig,
        }
    }
}

/// A member as its signed statements: what push-pull sends, so every
/// entry of a full state is checked like gossip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The member's latest accepted Alive (its metadata and key). Shared,
    /// like `Meta`: every table that holds the statement points at one copy.
    pub alive: Arc<Update>,
    /// A later Suspect, Dead or Left about it, when that is its state.
    pub latest: Option<Arc<Update>>,
}

impl Entry {
    /// An entry of `alive` and, when the member is not Alive, `latest`.
    pub fn new(alive: Update, latest: Option<Update>) -> Self {
        Self {
            alive: Arc::new(alive),
            latest: latest.map(Arc::new),
        }
    }

    /// The statement that decides the member's current state.
    pub fn current(&self) -> &Update {
        self.latest.as_deref().unwrap_or(&self.alive)
    }

    /// Its public key, when `alive` is an Alive.
    pub fn key(&self) -> Option<&PublicKey> {
        match &*self.alive {
            Update::Alive { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Whether the entry has the right shape: an Alive, then optionally a
    /// Suspect, Dead or Left about the same member at no lower incarnation.
    pub fn is_well_formed(&self) -> bool {
        if self.alive.state() != State::Alive {
            return false;
        }
        self.latest.as_ref().is_none_or(|l| {
            l.state() != State::Alive
                && l.id() == self.alive.id()
                && l.incarnation() >= self.alive.incarnation()
        })
    }

    /// The member this entry describes; `None` when `alive` is not an
    /// Alive.
    pub fn member(&self) -> Option<Member> {
        let current = self.current();
        let Update::Alive { meta, .. } = &*self.alive else {
            return None;
        };
        Some(Member {
            id: current.id(),
            incarnation: current.incarnation(),
            state: current.state(),
            meta: meta.clone(),
        })
    }
}
