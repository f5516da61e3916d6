//! The IO side of gossip: QUIC endpoints and their mutual-TLS setup.

pub mod tls;
