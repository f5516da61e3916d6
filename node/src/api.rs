//! The client protocol on a peer's QUIC endpoint (authenticated with the
//! cluster key): one request per bidirectional stream, JSON, the client
//! finishes its side after the request and the peer answers and finishes.
//! Limits: a request is at most 64 KiB; an answer at most 16 MiB.

use serde::{Deserialize, Serialize};

/// Largest request a peer reads.
pub(crate) const REQUEST_MAX: usize = 64 * 1024;
/// Largest answer a client reads.
pub(crate) const REPLY_MAX: usize = 16 * 1024 * 1024;

/// What a client can ask.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    /// The membership as this peer sees it.
    Members,
    /// The ring as this peer built it.
    Ring,
    /// The replicas of a key.
    Owners {
        /// The key, as bytes.
        key: Vec<u8>,
    },
}

/// One member, as `ringkv members` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MemberRow {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) addr: String,
    pub(crate) state: String,
    pub(crate) incarnation: u64,
    pub(crate) zone: Option<String>,
    pub(crate) weight: u32,
    pub(crate) status: String,
    /// Share of the key space owned as primary, if in the ring.
    pub(crate) ownership: Option<f64>,
    /// Whether this row is the answering peer.
    pub(crate) this_peer: bool,
}

/// Answer to [`Request::Members`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MembersReply {
    /// Changes with every membership change this peer saw.
    pub(crate) index: u64,
    pub(crate) view_digest: String,
    pub(crate) ring_digest: Option<String>,
    /// Live peers whose last message carried the same view digest.
    pub(crate) agreeing: usize,
    /// Live peers heard from.
    pub(crate) reporting: usize,
    pub(crate) joined: bool,
    pub(crate) members: Vec<MemberRow>,
}

/// One node's place in the ring.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RingNodeRow {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) tokens: u32,
    pub(crate) share: f64,
    pub(crate) replica_share: f64,
}

/// Answer to [`Request::Ring`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RingReply {
    pub(crate) digest: String,
    pub(crate) vnodes: u32,
    pub(crate) replication: usize,
    pub(crate) nodes: Vec<RingNodeRow>,
    /// Token ranges `(start, end]` in hex with their owner's name.
    pub(crate) ranges: Vec<(String, String, String)>,
}

/// One replica of a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReplicaRow {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) addr: String,
}

/// Answer to [`Request::Owners`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OwnersReply {
    pub(crate) position: String,
    pub(crate) replicas: Vec<ReplicaRow>,
}

/// Every answer: the value, or an error a person can read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reply<T> {
    Ok(T),
    Error(String),
}
