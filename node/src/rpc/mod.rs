//! The peer-to-peer and client request protocol over QUIC streams: the wire
//! types ([`api`]), the one encoding module ([`codec`]), the CLI's client
//! ([`client`]), the replica connection pool ([`pool`]) and the one request
//! dispatch ([`server`]).

pub(crate) mod api;
pub(crate) mod client;
pub(crate) mod codec;
pub(crate) mod pool;
pub(crate) mod server;
