//! SWIM membership for ringkv, with the Lifeguard extensions.
//!
//! [`proto`] is a sans-IO state machine: messages and timer expiries in,
//! messages, timer deadlines and membership events out, with time and
//! randomness passed in, so tests and the simulator replay exactly from a
//! seed. [`runner`] is the thin tokio shell that drives it over QUIC
//! ([`transport`]: mutual TLS rooted in the cluster key, and the admission
//! of incoming handshakes).

#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod links;
pub mod proto;
pub mod runner;
pub mod transport;

pub use config::Config;
pub use error::{CodecError, ConfigError};
pub use proto::auth::{Auth, InsecureAuth, PublicKey, Reject, Rejections, Sig};
pub use proto::member::{Incarnation, Member, Meta, NodeStatus, State};
pub use proto::message::{Body, ClusterId, Entry, Envelope, Update};
pub use proto::swim::{Channel, Event, Stats, Swim, Transmit};
pub use ringkv_ring::NodeId;
pub use transport::sign::Ed25519Auth;
pub use transport::tls::{ClusterKey, NodeIdentity, TlsError};
