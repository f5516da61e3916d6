//! `ringkv`: the peer daemon and its command-line client. Parses the
//! command line, sets up logging, and runs the command
//! ([`ringkv_node::command`]) on a tokio runtime when it needs one.

/// mimalloc rather than glibc's allocator: a quorum get allocates a few
/// dozen small objects (tasks, buffers, answers), and glibc spent about a
/// fifth of the peers' CPU in malloc and free. See docs/BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::Parser as _;
use ringkv_node::command::Cli;

fn main() -> ExitCode {
    // This kernel, like many, backs anonymous memory with transparent huge
    // pages whenever a 2 MiB region is aligned ("always"); mimalloc
    // reserves and commits its arenas in such regions, so a few KiB used
    // in one cost 2 MiB resident. An idle peer was 84 MB resident (debug
    // build, 10 peers) with them and 31 MB without. Best effort: a kernel
    // without the prctl just keeps huge pages. See docs/BENCHMARKS.md.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = cli.run_blocking().unwrap_or_else(|| block_on(&cli));
    match result {
        Ok(text) => {
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(ringkv_node::command::exit_code(&err))
        }
    }
}

/// Commands that talk to the network run on a tokio runtime.
fn block_on(cli: &Cli) -> anyhow::Result<String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(cli.run())
}
