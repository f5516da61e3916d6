//! The IO side of gossip: QUIC endpoints and their mutual-TLS setup, the
//! admission of incoming handshakes, the Ed25519 signer of membership
//! statements, and the testbed's fault switch under the endpoint's UDP
//! socket.

pub mod admission;
pub mod faults;
pub mod sign;
pub mod tls;
