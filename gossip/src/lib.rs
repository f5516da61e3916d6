//! SWIM membership for ringkv (issue 3 builds it): a sans-IO state machine
//! in `proto`, and the QUIC transport that drives it (issue 4).
//!
//! Nothing is here yet; the crate exists so the workspace has its final
//! shape and dependency directions from the first commit.

#![warn(missing_docs)]
