//! The peer-to-peer and client request protocol over QUIC streams: the wire
//! types ([`api`]), the one encoding module ([`codec`]), the one client
//! ([`client`]) and the replica pool on top of it ([`pool`]). The one
//! request dispatch is `crate::server`, above every module it calls, so
//! that none of them depends back on the protocol crate's dispatcher.

pub(crate) mod api;
pub(crate) mod client;
pub(crate) mod codec;
#[cfg(test)]
mod layout_tests;
pub(crate) mod pool;
