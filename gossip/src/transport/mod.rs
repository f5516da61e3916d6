//! The IO side of gossip: QUIC endpoints and their mutual-TLS setup, client
//! credentials and the roles they give, the keyring and the live TLS
//! material that follows it as keys rotate, the
//! admission of incoming handshakes, the Ed25519 signer of membership
//! statements, and the testbed's fault switch under the endpoint's UDP
//! socket.

pub mod admission;
pub mod credentials;
pub mod faults;
pub mod keyring;
pub mod live;
pub mod sign;
pub mod tls;
