//! The `ringkv` command line: one clap [`Cli`] with a subcommand per job,
//! and what each runs. `ringkv node` starts a peer ([`crate::daemon`]);
//! the others are clients of a peer or offline tools.

use clap::{Parser, Subcommand};

use crate::cli;
use crate::config::NodeArgs;

/// ringkv: a peer-to-peer, leaderless, sharded key-value store.
#[derive(Debug, Parser)]
#[command(name = "ringkv", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a peer: join a cluster (or start one) and serve until SIGTERM.
    Node(Box<NodeArgs>),
    /// Members as a peer sees them (like `serf members`, `nodetool status`).
    Members(cli::cluster::MembersArgs),
    /// The ring: a live peer's with --peer, or `simulate` and `sweep`.
    Ring(RingArgs),
    /// The replicas of a key (like `nodetool getendpoints`).
    Owners(cli::cluster::OwnersArgs),
    /// Print a new cluster key.
    Keygen,
    /// The cluster keys every peer holds: install, use, remove, list
    /// (rotating the cluster key without downtime; fingerprints only).
    #[command(subcommand)]
    Keyring(cli::keyring::KeyringCommand),
    /// Drop a dead member from the ring now, before its dead grace ends
    /// (like `nodetool removenode`); its ranges move to the others at once.
    Removenode(cli::removenode::RemoveNodeArgs),
    /// Anti-entropy now on one peer (like `nodetool repair`), with a
    /// progress bar: it pulls every newer record its ranges' other live
    /// replicas hold.
    Repair(cli::repair::RepairArgs),
    /// Client credentials: issue them from the cluster key, for the CLI.
    #[command(subcommand)]
    Credentials(cli::credentials::CredentialsCommand),
    /// Store a value through any peer.
    Put(cli::kv::PutArgs),
    /// Read a value through any peer (raw bytes to stdout; exit 1 if absent).
    Get(cli::kv::GetArgs),
    /// Delete a key through any peer.
    Del(cli::kv::DelArgs),
    /// Load a cluster with puts and gets; report ops/s and latency.
    Bench(cli::bench::BenchArgs),
    /// The keys a peer coordinates most requests for, recently.
    Hot(cli::cluster::PeerArgs),
    /// Handoff on a peer: ranges it is receiving, with progress bars.
    Handoff(cli::handoff::HandoffArgs),
    /// The keys a peer holds in its own store (not coordinated), in ring
    /// order.
    Keys(cli::handoff::KeysArgs),
    /// Ask a peer's admin HTTP for /health: exit 0 when healthy, 1 when
    /// not or no answer (for container health checks).
    Health(crate::health_check::HealthArgs),
    /// Local clusters and the membership simulator.
    #[command(subcommand)]
    Testbed(ringkv_testbed::cli::TestbedCommand),
}

/// `ringkv ring`: a live peer's ring, or a simulation.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct RingArgs {
    #[command(subcommand)]
    command: Option<RingCommand>,
    #[command(flatten)]
    peer: Option<cli::cluster::PeerArgs>,
}

#[derive(Debug, Subcommand)]
enum RingCommand {
    /// Share of every node in a made-up cluster, and what adding or
    /// removing nodes moves (exact from arcs, checked by sampling).
    Simulate(cli::ring::SimulateArgs),
    /// Balance for several vnode counts, to choose one.
    Sweep(cli::ring::SweepArgs),
}

impl Cli {
    /// Runs the commands that need no tokio runtime (offline tools, the
    /// testbed, which starts its own); `None` for the others, which
    /// [`Self::run`] runs on the caller's runtime.
    pub fn run_blocking(&self) -> Option<anyhow::Result<String>> {
        Some(match &self.command {
            Command::Ring(RingArgs {
                command: Some(RingCommand::Simulate(args)),
                ..
            }) => cli::ring::simulate(args),
            Command::Ring(RingArgs {
                command: Some(RingCommand::Sweep(args)),
                ..
            }) => cli::ring::sweep(args),
            Command::Testbed(cmd) => ringkv_testbed::cli::run::<cli::testbed::QuicKv>(cmd),
            Command::Keygen => Ok(cli::cluster::keygen()),
            Command::Credentials(cli::credentials::CredentialsCommand::Issue(args)) => {
                cli::credentials::run_blocking(args)
            }
            _ => return None,
        })
    }

    /// Runs a command that talks to the network: its output for stdout.
    ///
    /// # Errors
    /// Whatever the command fails with, for the user.
    ///
    /// # Panics
    /// For a command [`Self::run_blocking`] runs.
    pub async fn run(&self) -> anyhow::Result<String> {
        match &self.command {
            Command::Node(args) => crate::daemon::run(args).await.map(|()| String::new()),
            Command::Members(args) => cli::cluster::members(args).await,
            Command::Owners(args) => cli::cluster::owners(args).await,
            Command::Put(args) => cli::kv::put(args).await,
            Command::Get(args) => cli::kv::get(args).await,
            Command::Del(args) => cli::kv::del(args).await,
            Command::Bench(args) => cli::bench::bench(args).await,
            Command::Hot(args) => cli::cluster::hot(args).await,
            Command::Handoff(args) => cli::handoff::handoff(args).await,
            Command::Keys(args) => cli::handoff::keys(args).await,
            Command::Keyring(cmd) => cli::keyring::run(cmd).await,
            Command::Removenode(args) => cli::removenode::run(args).await,
            Command::Repair(args) => cli::repair::run(args).await,
            Command::Health(args) => crate::health_check::health(args).await,
            Command::Credentials(cli::credentials::CredentialsCommand::Revoke(args)) => {
                cli::credentials::revoke(args).await
            }
            Command::Ring(RingArgs {
                peer: Some(peer), ..
            }) => cli::cluster::ring(peer).await,
            Command::Ring(_) => {
                anyhow::bail!("ringkv ring needs --peer ADDR, or a subcommand: simulate, sweep")
            }
            _ => unreachable!("run_blocking runs it without a runtime"),
        }
    }
}

/// The exit status of a failed command, from the kind of the peer's error
/// (never from its wording): 2 nothing was written (a definite failure), 3
/// the outcome is unknown (it may have been applied), 4 the request was
/// refused (bad input or credentials), 5 the peer was overloaded (retry
/// later); 1 for everything else, including a key that is absent.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    use crate::rpc::api::{ErrorKind, RequestError};
    match err.chain().find_map(|c| c.downcast_ref::<RequestError>()) {
        Some(e) => match e.kind {
            ErrorKind::Definite => 2,
            ErrorKind::Unknown | ErrorKind::NotHeld => 3,
            ErrorKind::Refused => 4,
            ErrorKind::Overloaded => 5,
        },
        None => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::exit_code;
    use crate::rpc::api::{ErrorKind, RequestError};

    #[test]
    fn exit_codes_follow_the_error_kind_not_its_text() {
        let of = |kind, text: &str| {
            let e: anyhow::Error = RequestError::new(kind, text.to_owned()).into();
            exit_code(&e.context("put"))
        };
        assert_eq!(of(ErrorKind::Definite, "anything"), 2);
        assert_eq!(of(ErrorKind::Unknown, "nothing was written"), 3);
        assert_eq!(of(ErrorKind::NotHeld, "x"), 3);
        assert_eq!(of(ErrorKind::Refused, "x"), 4);
        assert_eq!(of(ErrorKind::Overloaded, "x"), 5);
        assert_eq!(exit_code(&anyhow::anyhow!("\"k\" not found")), 1);
    }
}
