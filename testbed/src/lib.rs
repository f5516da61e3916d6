//! Local ringkv clusters of real processes and what the testbed does with
//! them: start and stop ([`control`], [`state`], [`procs`]), break on
//! purpose ([`faults`]), watch converge ([`watch`]), load with a recorded
//! history ([`load`], [`history`]) and check it ([`check`]); scripted
//! runs ([`scenario`]), the demo ([`demo`]) and its page ([`report`]); the
//! membership benchmark ([`bench`], on [`cluster`]) and the message-level
//! gossip simulator ([`sim`]).

#![warn(missing_docs)]

pub mod bench;
pub mod check;
pub mod cli;
pub mod commands;
pub mod control;
pub mod demo;
pub mod faults;
pub mod history;
pub mod http;
pub mod load;
pub mod netns;
pub mod procs;
pub mod ready;
pub mod report;
pub mod scenario;
pub mod sim;
pub mod state;
pub mod watch;
