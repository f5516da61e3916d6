//! The IO side of gossip: QUIC endpoints and their mutual-TLS setup, and
//! the testbed's fault switch under the endpoint's UDP socket.

pub mod faults;
pub mod tls;
