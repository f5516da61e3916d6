//! The IO side of gossip: QUIC endpoints and their mutual-TLS setup, and
//! the testbed's fault switch under the endpoint's UDP socket, and the
//! Ed25519 signer of membership statements.

pub mod faults;
pub mod sign;
pub mod tls;
