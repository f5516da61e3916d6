//! Errors from building and comparing rings.

use thiserror::Error;

use crate::node::NodeId;

/// What went wrong building a ring. No ring is built when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RingError {
    /// The membership view had no nodes; a ring needs at least one.
    #[error("cannot build a ring from an empty membership view")]
    Empty,
    /// `vnodes` was 0, which would give every node zero tokens.
    #[error("vnodes must be at least 1")]
    ZeroVnodes,
    /// A node had weight 0; remove it from the view instead.
    #[error("node {node} has weight 0; weights start at 1")]
    ZeroWeight {
        /// The node with weight 0.
        node: NodeId,
    },
    /// The same node id appeared twice in the view.
    #[error("node {node} appears twice in the membership view")]
    DuplicateNode {
        /// The repeated id.
        node: NodeId,
    },
    /// `vnodes * weight` summed over the view exceeded [`crate::MAX_TOKENS`].
    #[error("the ring would have {tokens} tokens, more than the limit of {limit}")]
    TooManyTokens {
        /// Tokens the view asked for.
        tokens: u64,
        /// The limit.
        limit: u64,
    },
    /// A node id was not 32 hex digits.
    #[error("bad node id {text:?}: expected 32 hex digits")]
    BadNodeId {
        /// The text that failed to parse (at most 64 characters of it).
        text: String,
    },
}
