//! SWIM membership for ringkv, with the Lifeguard extensions.
//!
//! [`proto`] is a sans-IO state machine: messages and timer expiries in,
//! messages, timer deadlines and membership events out, with time and
//! randomness passed in, so tests and the simulator replay exactly from a
//! seed. The QUIC transport that drives it is a thin shell (issue 4).

#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod proto;

pub use config::Config;
pub use error::{CodecError, ConfigError};
pub use proto::member::{Incarnation, Member, Meta, NodeStatus, State};
pub use proto::message::{Body, ClusterId, Envelope, Update};
pub use proto::swim::{Channel, Event, Stats, Swim, Transmit};
pub use ringkv_ring::NodeId;
