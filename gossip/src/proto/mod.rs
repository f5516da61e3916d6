//! The sans-IO membership core: no sockets, no clock, no OS randomness.
//! `codec` is the only place messages become bytes.

pub mod auth;
pub(crate) mod awareness;
pub(crate) mod broadcast;
pub mod codec;
pub(crate) mod correction;
pub(crate) mod idset;
pub mod member;
pub mod message;
pub(crate) mod probe;
pub(crate) mod pushpull;
pub(crate) mod suspicion;
pub mod swim;
pub(crate) mod timer;
pub(crate) mod verify;
pub mod version;

#[cfg(test)]
mod tests;
