//! The IO side of gossip: QUIC endpoints and their mutual-TLS setup, client
//! credentials and the roles they give, the
//! admission of incoming handshakes, the Ed25519 signer of membership
//! statements, and the testbed's fault switch under the endpoint's UDP
//! socket.

pub mod admission;
pub mod credentials;
pub mod faults;
pub mod sign;
pub mod tls;
