//! The peer-to-peer and client request protocol over QUIC streams: the wire
//! types ([`api`]), the one encoding module ([`codec`]), the CLI's client
//! ([`client`]) and the replica connection pool ([`pool`]).

pub(crate) mod api;
pub(crate) mod client;
pub(crate) mod codec;
pub(crate) mod pool;
