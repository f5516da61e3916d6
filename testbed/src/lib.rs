//! Local ringkv clusters of real processes, faults, workloads and the
//! checker (issue 7), and the message-level gossip simulator (issue 3).
//!
//! Nothing is here yet; the crate exists so the workspace has its final
//! shape and dependency directions from the first commit.

#![warn(missing_docs)]
