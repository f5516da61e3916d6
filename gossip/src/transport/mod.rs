//! The IO side of gossip: QUIC endpoints and their mutual-TLS setup, the
//! admission of incoming handshakes, and the testbed's fault switch under
//! the endpoint's UDP socket.

pub mod admission;
pub mod faults;
pub mod tls;
