//! Local ringkv clusters of real processes, faults, workloads and the
//! checker (issue 7, to come), and the message-level gossip simulator.

#![warn(missing_docs)]

pub mod cli;
pub mod sim;
