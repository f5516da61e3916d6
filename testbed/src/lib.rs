//! Local ringkv clusters of real processes ([`cluster`], and the
//! membership benchmark on them), the message-level gossip simulator
//! ([`sim`]); faults, workloads and the checker come with issue 7.

#![warn(missing_docs)]

pub mod bench;
pub mod cli;
pub mod cluster;
pub mod sim;
