//! Storage for ringkv: one sled database per peer, records ordered by ring
//! position.
//!
//! - [`keys`]: the pure encoding of record keys in ring order, which lets a
//!   token range be read as at most two contiguous scans.
//! - [`Record`], [`Version`], [`Hlc`], [`Clock`]: values and tombstones,
//!   their versions, the apply-if-newer rule and the clock that mints
//!   versions (pure).
//! - [`Store`]: the sled trees (records, hints, meta), apply-if-newer per
//!   key, range scans, tombstone collection, durable writes by group commit.
//! - [`Hint`], [`HintLimits`]: hinted handoff, writes a replica missed kept
//!   durably until it is back (methods on [`Store`], in `hints`).
//! - [`StoreError`].
//!
//! sled and bincode stay behind this crate: nothing in its API names them.

#![warn(missing_docs)]

mod codec;
mod error;
mod hints;
pub mod keys;
mod ranges;
mod record;
mod store;

pub use error::StoreError;
pub use hints::{Hint, HintLimits};
pub use ranges::{Page, Summary, VersionPage};
pub use record::{Clock, Hlc, Record, Version};
pub use store::Store;
