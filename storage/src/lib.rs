//! Storage for ringkv (issue 5 builds the sled store on top of this).
//!
//! So far: [`keys`], the pure encoding of record keys in ring order, which
//! lets a token range be read as one contiguous scan.

#![warn(missing_docs)]

pub mod keys;
