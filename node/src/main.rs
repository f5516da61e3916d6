//! `ringkv`: the peer daemon and its command-line client.

mod cli;

use std::io::Write as _;
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
    /// Placement: simulate rings and compare vnode counts.
    #[command(subcommand)]
    Ring(RingCommand),
    /// Local clusters and the membership simulator.
    #[command(subcommand)]
    Testbed(ringkv_testbed::cli::TestbedCommand),
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
    let result = match &cli.command {
        Command::Ring(RingCommand::Simulate(args)) => cli::ring::simulate(args),
        Command::Ring(RingCommand::Sweep(args)) => cli::ring::sweep(args),
        Command::Testbed(cmd) => ringkv_testbed::cli::run(cmd),
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
