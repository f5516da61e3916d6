//! Command-line subcommands that run in the `ringkv` process itself.

pub(crate) mod bench;
pub(crate) mod cluster;
pub(crate) mod credentials;
pub(crate) mod handoff;
pub(crate) mod keyring;
pub(crate) mod kv;
pub(crate) mod removenode;
pub(crate) mod repair;
pub(crate) mod ring;
pub(crate) mod table;
pub(crate) mod testbed;
