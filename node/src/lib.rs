//! ringkv's peer daemon and command-line client as a library; the
//! `ringkv` binary (`main.rs`) parses the command line and runs it. A test
//! starts a peer in-process with [`daemon::start`] and stops it with
//! [`daemon::Peer::shutdown`].
//!
//! Module map (one job each; IO says whether it touches sockets, disk or
//! the clock):
//!
//! - [`command`]: the `ringkv` command line (clap) and what each
//!   subcommand runs. IO: through the modules it calls.
//! - [`config`]: `ringkv node`'s flags, environment and `--config` file,
//!   layered into [`config::Settings`] and checked. IO: reads the file.
//! - [`daemon`]: start a peer from settings and bound sockets, its
//!   background tasks, signals and the graceful leave. IO: sockets, store.
//! - `seeds`: `--join` seed names (host:port) and the plan of when to
//!   resolve them again and retry the join (bounded, jittered backoff;
//!   again after a partition). Pure; the resolver and the task that drives
//!   it are in `daemon`.
//! - `health_check`: `ringkv health`, a one-shot GET of a peer's
//!   `/health` for container health checks. IO: TCP.
//! - `ring_view`: which members the ring is built from, given a view, the
//!   time and the dead grace. Pure (no clock, no IO).
//! - `readiness`: the ready tag, who announced which ring, whether the
//!   views agree. Pure.
//! - `routing`: the members as replicas and which ring each announced
//!   it holds, per view and ring (cached). Pure.
//! - `shared`: the state a peer's tasks share (`Kv`). No IO of its own.
//! - `status`: members, ring and owners replies. Pure.
//! - `revocation`: the revoked client credentials carried in gossip
//!   metadata: parse, merge, check. Pure.
//! - `keyring`: the peer's keyring (install, use, remove cluster keys),
//!   on this peer or fanned out to every live member. IO: data dir,
//!   network.
//! - `coordinator`: quorum reads and writes, read repair, hints (async
//!   fan-out; pure decisions in `coordinator::plan`). IO: network.
//! - `handoff`: ranges follow the ring: pulls, anti-entropy, cleanup, the
//!   leave handover. IO: network, store.
//! - `rpc`: the QUIC request protocol: wire types, codec, client, replica
//!   pool. IO: network.
//! - `server`: the one request dispatch, for every request kind. IO:
//!   streams.
//! - `resp`: the Redis protocol front door. IO: TCP.
//! - `admin`: admin HTTP (/health, /metrics, /v1/*), its bearer token,
//!   header timeout and connection cap. IO: TCP.
//! - `cli`: the client subcommands (members, ring, put, get, bench, ...).
//!   IO: network, stdout.
//! - `datadir`: identity, incarnation, cluster key, known peers on disk.
//!   IO: disk.
//! - `hot`: the hot-key sketch (Space-Saving). Pure.
//! - `disk`: whether the data dir's free space allows writes (the rule is
//!   pure; reading the free space is IO).
//! - `wall`: the one wall-clock source (skewable by the testbed). IO:
//!   reads the clock.
//! - `clock_offset`: the other peers' clock offsets from probe round
//!   trips, whether this peer's clock is beyond the maximum offset, and
//!   what a long absence does to its data. Pure.
//! - `fuzzing` (hidden): one entry point per decoder for the cargo-fuzz
//!   targets in `fuzz/`; each calls the daemon's own decoder. Pure.
//! - `keyargs`: the cluster-key flags and small argument parsers, among
//!   them `parse_duration` (humantime, plain seconds, at most a year). IO:
//!   reads a key file.

#![warn(missing_docs)]

mod admin;
#[doc(hidden)]
pub mod attack;
mod cli;
mod clock_offset;
pub mod command;
pub mod config;
mod coordinator;
pub mod daemon;
mod datadir;
mod disk;
mod fanout;
#[doc(hidden)]
pub mod fuzzing;
mod handoff;
mod health_check;
mod hot;
mod keyargs;
mod keyring;
mod mutation;
mod readiness;
mod removenode;
mod resp;
mod revocation;
mod ring_view;
mod routing;
mod rpc;
mod seeds;
mod server;
mod shared;
mod status;
#[cfg(test)]
mod test_support;
mod wall;
