//! Placement for ringkv: a consistent-hash ring with virtual nodes.
//!
//! Pure: no IO, no async, no clocks, no randomness. The ring is a function
//! of the membership view (node id, weight, zone) and the vnode count, so
//! every peer with the same view builds the same ring and the same digest.
//!
//! - [`token`]: key → position (XXH3-64, hash tags), [`Token`], [`TokenRange`].
//! - [`Ring`]: build, owner and replica lookup, ranges, digest.
//! - [`moves()`]: ring A → ring B as range moves, exact.
//! - [`analysis`]: exact shares and balance from arc lengths, move costs
//!   against `hash % N` and the ideal, and sampled cross-checks.

#![warn(missing_docs)]

pub mod analysis;
mod error;
pub mod handoff;
mod moves;
mod node;
mod ring;
pub mod token;

pub use error::RingError;
pub use moves::{moved_fraction, moves, RangeMove};
pub use node::{NodeId, NodeSpec};
pub use ring::{vnode_token, Ring, RingDigest, DEFAULT_VNODES, MAX_TOKENS};
pub use token::{hash_tag, key_position, Token, TokenRange};
