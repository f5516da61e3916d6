//! `ringkv`: the peer daemon and its command-line client.

/// mimalloc rather than glibc's allocator: a quorum get allocates a few
/// dozen small objects (tasks, buffers, answers), and glibc spent about a
/// fifth of the peers' CPU in malloc and free. See docs/BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod cli;
mod coordinator;
mod daemon;
mod datadir;
mod faults;
mod handoff;
mod hot;
mod keyargs;
mod readiness;
mod resp;
mod rpc;
mod status;

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// ringkv: a peer-to-peer, leaderless, sharded key-value store.
#[derive(Debug, Parser)]
#[command(name = "ringkv", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a peer: join a cluster (or start one) and serve until SIGTERM.
    Node(Box<daemon::NodeArgs>),
    /// Members as a peer sees them (like `serf members`, `nodetool status`).
    Members(cli::cluster::MembersArgs),
    /// The ring: a live peer's with --peer, or `simulate` and `sweep`.
    Ring(RingArgs),
    /// The replicas of a key (like `nodetool getendpoints`).
    Owners(cli::cluster::OwnersArgs),
    /// Print a new cluster key.
    Keygen,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match &cli.command {
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
        other => block_on(other),
    };
    match result {
        Ok(text) => {
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Commands that talk to the network run on a tokio runtime.
fn block_on(command: &Command) -> anyhow::Result<String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match command {
            Command::Node(args) => daemon::run(args).await.map(|()| String::new()),
            Command::Members(args) => cli::cluster::members(args).await,
            Command::Owners(args) => cli::cluster::owners(args).await,
            Command::Put(args) => cli::kv::put(args).await,
            Command::Get(args) => cli::kv::get(args).await,
            Command::Del(args) => cli::kv::del(args).await,
            Command::Bench(args) => cli::bench::bench(args).await,
            Command::Hot(args) => cli::cluster::hot(args).await,
            Command::Handoff(args) => cli::handoff::handoff(args).await,
            Command::Keys(args) => cli::handoff::keys(args).await,
            Command::Ring(RingArgs {
                peer: Some(peer), ..
            }) => cli::cluster::ring(peer).await,
            Command::Ring(_) => {
                anyhow::bail!("ringkv ring needs --peer ADDR, or a subcommand: simulate, sweep")
            }
            _ => unreachable!("handled without a runtime"),
        }
    })
}
