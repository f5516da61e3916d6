//! The `ringkv testbed` commands on local clusters: argument types and the
//! code that runs each one ([`crate::control`], [`crate::watch`],
//! [`crate::load`], [`crate::check`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::check;
use crate::control::{render_rows, Testbed};
use crate::faults;
use crate::history::{History, Writer};
use crate::load::{self, KvClient, LivePeers, LoadConfig};
use crate::watch::{self, WatchLimits};

/// Where a testbed cluster lives.
#[derive(Debug, Clone, Args)]
pub struct DirArgs {
    /// The cluster directory: state file, peers' data dirs and logs.
    #[arg(long, env = "RINGKV_TESTBED_DIR", default_value = "ringkv-testbed")]
    pub dir: PathBuf,
}

/// Arguments of `ringkv testbed up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Peers to start.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub nodes: u64,
    /// The cluster directory.
    #[command(flatten)]
    pub dir: DirArgs,
    /// How long the peers may take to converge.
    #[arg(long, default_value = "60s", value_parser = crate::cli::parse_duration)]
    pub converge_timeout: Duration,
    /// Put every peer in a Linux network namespace of its own, on a bridge
    /// the testbed creates (needs root, iproute2 and iptables): the
    /// multi-host mode, where faults come from the kernel.
    #[arg(long)]
    pub netns: bool,
    /// Flags for every `ringkv node`, after `--` (e.g. `-- --dead-grace 0s`).
    #[arg(last = true)]
    pub node_flags: Vec<String>,
}

/// Arguments of the commands that name one peer.
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// The peer's name (`p1`, `p2`, ...; see `status`).
    pub node: String,
    /// The cluster directory.
    #[command(flatten)]
    pub dir: DirArgs,
}

/// Arguments of `ringkv testbed partition`.
#[derive(Debug, Args)]
pub struct PartitionArgs {
    /// The two sides: `p1,p2 / p3,p4,p5`.
    #[arg(required = true, num_args = 1..)]
    pub sides: Vec<String>,
    /// One way only: what the left side sends to the right is dropped,
    /// the other way arrives (multi-host mode).
    #[arg(long)]
    pub one_way: bool,
    /// The cluster directory.
    #[command(flatten)]
    pub dir: DirArgs,
}

/// Arguments of `ringkv testbed link`.
#[derive(Debug, Args)]
pub struct LinkArgs {
    /// The peer.
    pub node: String,
    /// `down` (its cable pulled) or `up`.
    pub state: String,
    /// The cluster directory.
    #[command(flatten)]
    pub dir: DirArgs,
}

/// Arguments of `ringkv testbed loss`.
#[derive(Debug, Args)]
pub struct LossArgs {
    /// The peer.
    pub node: String,
    /// Fraction of its datagrams dropped: `10%` or `0.1` (`0` stops it).
    pub loss: String,
    /// The cluster directory.
    #[command(flatten)]
    pub dir: DirArgs,
}

/// Arguments of `ringkv testbed delay`.
#[derive(Debug, Args)]
pub struct DelayArgs {
    /// The peer.
    pub node: String,
    /// Delay of every datagram it sends: `50ms` (`0ms` stops it).
    pub delay: String,
    /// The cluster directory.
    #[command(flatten)]
    pub dir: DirArgs,
}

/// Arguments of `ringkv testbed skew`.
#[derive(Debug, Args)]
pub struct SkewArgs {
    /// The peer.
    pub node: String,
    /// Offset of its wall clock: `+2s`, `-500ms`, `1d` (`0` clears it).
    #[arg(allow_hyphen_values = true)]
    pub offset: String,
    /// The cluster directory.
    #[command(flatten)]
    pub dir: DirArgs,
}

/// Arguments of `ringkv testbed disk`.
#[derive(Debug, Args)]
pub struct DiskArgs {
    /// The peer.
    pub node: String,
    /// `full` (its data dir reads as having no free space) or `free`.
    pub state: String,
    /// The cluster directory.
    #[command(flatten)]
    pub dir: DirArgs,
}

/// Arguments of `ringkv testbed load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Operations per second.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,
    /// How long to run.
    #[arg(long, default_value = "30s", value_parser = crate::cli::parse_duration)]
    pub duration: Duration,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub keys: u64,
    /// Share of gets, 0 to 1.
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Where to write the history (default: DIR/history.jsonl).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the key, operation and peer choices.
    #[arg(long, default_value_t = 1, env = "RINGKV_SEED")]
    pub seed: u64,
    /// Check the history when done (exit non-zero on any violation).
    #[arg(long)]
    pub check: bool,
    /// The cluster directory.
    #[command(flatten)]
    pub dir: DirArgs,
}

/// Arguments of `ringkv testbed check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The history file (from `load`).
    pub history: PathBuf,
    /// Violations listed at most.
    #[arg(long, default_value_t = 20)]
    pub show: usize,
    /// Linearizability search states per key before giving up on it.
    #[arg(long, default_value_t = check::linear::Config::default().max_states_per_key)]
    pub max_states: u64,
}

/// Arguments of `ringkv testbed watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Stop after this long.
    #[arg(long, default_value = "1h", value_parser = crate::cli::parse_duration)]
    pub duration: Duration,
    /// Stop as soon as every live peer agrees (exit non-zero if --duration
    /// passes first).
    #[arg(long)]
    pub until_converged: bool,
    /// The cluster directory.
    #[command(flatten)]
    pub dir: DirArgs,
}

/// The `ringkv` binary itself: it runs the peers.
///
/// # Errors
/// The path of the running program is unknown.
pub fn this_binary() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find the ringkv binary to run peers with")
}

/// `up`.
///
/// # Errors
/// See [`Testbed::up`].
pub fn up(args: &UpArgs) -> Result<String> {
    let bin = this_binary()?;
    let n = usize::try_from(args.nodes)?;
    let (tb, took) = Testbed::up(
        &args.dir.dir,
        &bin,
        n,
        args.node_flags.clone(),
        args.converge_timeout,
        args.netns,
    )?;
    let mut out = format!(
        "{n} peers up and converged in {:.1} s in {}\n",
        took.as_secs_f64(),
        tb.dir.display()
    );
    if !tb.state.fault_switch {
        out.push_str("note: this ringkv has no fault switch; partition, heal, loss and delay will be refused\n");
    }
    out.push_str(&tb.table(true));
    let _ = writeln!(
        out,
        "cluster key: in {} (mode 0600; clients take --cluster-key-file)\nnext: `ringkv testbed watch`, `ringkv testbed kill p2`, `ringkv testbed load`, `ringkv testbed down`",
        tb.state
            .peers
            .first()
            .map_or_else(|| tb.dir.clone(), |p| p.data.join("cluster.key"))
            .display()
    );
    Ok(out)
}

/// `down`.
///
/// # Errors
/// No cluster there, or a peer survived SIGKILL.
pub fn down(dir: &DirArgs) -> Result<String> {
    let mut tb = Testbed::open(&dir.dir)?;
    let done = tb.down()?;
    let rows: Vec<[String; 2]> = done
        .into_iter()
        .map(|(n, how)| [n, how.to_owned()])
        .collect();
    Ok(render_rows(&rows))
}

/// `status`.
///
/// # Errors
/// No cluster there.
pub fn status(dir: &DirArgs) -> Result<String> {
    Ok(Testbed::open(&dir.dir)?.table(true))
}

/// The one-peer faults: kill, stop, cont, leave, restart.
#[derive(Clone, Copy, Debug)]
pub enum PeerAction {
    /// SIGKILL.
    Kill,
    /// SIGSTOP.
    Stop,
    /// SIGCONT.
    Cont,
    /// SIGTERM, wait until gone.
    Leave,
    /// Start again from its data dir.
    Restart,
    /// Start again from its data dir at another address.
    Readdress,
}

/// Runs a one-peer fault.
///
/// # Errors
/// Unknown peer, or the peer is not in a state the action applies to.
pub fn peer_action(action: PeerAction, args: &PeerArgs) -> Result<String> {
    let mut tb = Testbed::open(&args.dir.dir)?;
    let name = &args.node;
    match action {
        PeerAction::Kill => tb.kill(name)?,
        PeerAction::Stop => tb.stop(name)?,
        PeerAction::Cont => tb.cont(name)?,
        PeerAction::Leave => tb.leave(name)?,
        PeerAction::Restart => tb.restart(name)?,
        PeerAction::Readdress => tb.readdress(name)?,
    }
    let i = tb.state.index_of(name)?;
    let p = &tb.state.peers[i];
    Ok(format!(
        "{name}: {} (pid {}, {})\n",
        tb.process(i).word(),
        p.pid,
        p.addr
    ))
}

/// `add`.
///
/// # Errors
/// No cluster there, or the peer does not start.
pub fn add(dir: &DirArgs) -> Result<String> {
    let mut tb = Testbed::open(&dir.dir)?;
    let i = tb.add()?;
    let p = &tb.state.peers[i];
    Ok(format!(
        "{} started (pid {}, {}, admin {})\n",
        p.name, p.pid, p.addr, p.admin
    ))
}

/// `partition A,B / C,D,E`.
///
/// # Errors
/// Bad sides, unknown peers, or no fault switch.
pub fn partition(args: &PartitionArgs) -> Result<String> {
    let (a, b) = faults::parse_partition(&args.sides.join(" "))?;
    let mut tb = Testbed::open(&args.dir.dir)?;
    if args.one_way {
        tb.cut(&a, &b, false)?;
        return Ok(format!(
            "cut {} -> {} (one way)\n",
            a.join(","),
            b.join(",")
        ));
    }
    tb.partition(&a, &b)?;
    Ok(format!("partitioned {} / {}\n", a.join(","), b.join(",")))
}

/// `link NODE down|up`.
///
/// # Errors
/// Not `up` or `down`, unknown peer, or not the multi-host mode.
pub fn link(args: &LinkArgs) -> Result<String> {
    let up = match args.state.as_str() {
        "up" => true,
        "down" => false,
        other => bail!("{other:?}: expected `up` or `down`"),
    };
    Testbed::open(&args.dir.dir)?.link(&args.node, up)?;
    Ok(format!("{}: link {}\n", args.node, args.state))
}

/// `heal`.
///
/// # Errors
/// No fault switch, or a peer refuses.
pub fn heal(dir: &DirArgs) -> Result<String> {
    Testbed::open(&dir.dir)?.heal()?;
    Ok("healed: every peer's faults cleared\n".into())
}

/// `loss NODE 10%`.
///
/// # Errors
/// Bad loss, unknown peer, or no fault switch.
pub fn loss(args: &LossArgs) -> Result<String> {
    let loss = faults::parse_loss(&args.loss)?;
    Testbed::open(&args.dir.dir)?.loss(&args.node, loss)?;
    Ok(format!(
        "{}: {:.1}% datagram loss\n",
        args.node,
        loss * 100.0
    ))
}

/// `delay NODE 50ms`.
///
/// # Errors
/// Bad delay, unknown peer, or no fault switch.
pub fn delay(args: &DelayArgs) -> Result<String> {
    let ms = faults::parse_delay_ms(&args.delay)?;
    Testbed::open(&args.dir.dir)?.delay(&args.node, ms)?;
    Ok(format!(
        "{}: {ms} ms delay on every datagram it sends\n",
        args.node
    ))
}

/// `skew NODE +2s`.
///
/// # Errors
/// Bad offset, unknown peer, or no fault switch.
pub fn skew(args: &SkewArgs) -> Result<String> {
    let ms = faults::parse_clock_offset_ms(&args.offset)?;
    Testbed::open(&args.dir.dir)?.skew(&args.node, ms)?;
    Ok(format!("{}: wall clock {ms:+} ms\n", args.node))
}

/// `disk NODE full|free`.
///
/// # Errors
/// Not `full` or `free`, unknown peer, or no fault switch.
pub fn disk(args: &DiskArgs) -> Result<String> {
    let full = parse_disk_state(&args.state)?;
    Testbed::open(&args.dir.dir)?.full_disk(&args.node, full)?;
    Ok(format!(
        "{}: data dir {}\n",
        args.node,
        if full {
            "reads as full"
        } else {
            "has its real free space"
        }
    ))
}

/// `full` or `free`.
///
/// # Errors
/// Anything else.
pub fn parse_disk_state(text: &str) -> Result<bool> {
    match text {
        "full" => Ok(true),
        "free" => Ok(false),
        other => anyhow::bail!("{other:?}: expected `full` or `free`"),
    }
}

/// `watch`.
///
/// # Errors
/// No cluster there; with --until-converged, the duration passed first.
pub fn watch_cmd(args: &WatchArgs) -> Result<String> {
    // Fail early on a missing or corrupt state file.
    Testbed::open(&args.dir.dir)?;
    let dir = args.dir.dir.clone();
    let targets = move || {
        Testbed::open(&dir)
            .map(|tb| watch::targets(&tb.state))
            .unwrap_or_default()
    };
    let (summary, converged) = watch::watch(
        targets,
        WatchLimits {
            duration: args.duration,
            until_converged: args.until_converged,
        },
    );
    if args.until_converged && !converged {
        bail!("{}", summary.trim_end());
    }
    Ok(summary)
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Keeps `peers` equal to the running peers of the cluster in `dir`,
/// re-reading its state file every 300 ms, until `stop` is set.
fn follow_state_file(dir: PathBuf, peers: LivePeers, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(tb) = Testbed::open(&dir) {
                *peers.lock().expect("not poisoned") = tb.running_addrs();
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
}

/// `load`.
///
/// # Errors
/// No cluster there, no running peer, or the history cannot be written.
pub fn load_cmd<C: KvClient>(args: &LoadArgs) -> Result<String> {
    if !(0.0..=1.0).contains(&args.read_ratio) {
        bail!("--read-ratio must be between 0 and 1");
    }
    let tb = Testbed::open(&args.dir.dir)?;
    let running = tb.running_addrs();
    if running.is_empty() {
        bail!("no peer of {} is running", args.dir.dir.display());
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.dir.dir.join("history.jsonl"));
    eprintln!(
        "seed {} (RINGKV_SEED or --seed to replay the choices)",
        args.seed
    );
    let peers: LivePeers = Arc::new(Mutex::new(running));
    let stop = Arc::new(AtomicBool::new(false));
    follow_state_file(args.dir.dir.clone(), peers.clone(), stop.clone());
    let cfg = LoadConfig {
        rate: args.rate,
        duration: Some(args.duration),
        keys: args.keys,
        read_ratio: args.read_ratio,
        seed: args.seed,
        ..LoadConfig::default()
    };
    let summary = run_load::<C>(&tb.state.cluster_key, peers, &cfg, stop.clone(), &out, true);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let summary = summary?;
    let mut text = summary.render();
    let _ = writeln!(text, "history: {}", out.display());
    if args.check {
        let report = check::check(&History::read(&out)?);
        text.push_str(&report.render(20));
        if !report.is_clean() {
            print!("{text}");
            bail!("the history has {} violations", report.violations.len());
        }
    }
    Ok(text)
}

/// Runs a workload on a runtime of its own, writing the history to `out`.
///
/// # Errors
/// The client cannot start, or the history cannot be written.
pub fn run_load<C: KvClient>(
    cluster_key: &str,
    peers: LivePeers,
    cfg: &LoadConfig,
    stop: Arc<AtomicBool>,
    out: &Path,
    progress: bool,
) -> Result<load::LoadSummary> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let writer = Writer::create(out, unix_ms())?;
    let clock = Instant::now();
    runtime.block_on(async {
        let client = C::connect(cluster_key)?;
        load::run(client, peers, cfg, stop, writer, clock, progress).await
    })
}

/// `check`.
///
/// # Errors
/// The file is not a history, or the history has violations.
pub fn check_cmd(args: &CheckArgs) -> Result<String> {
    let limit = check::linear::Config {
        max_states_per_key: args.max_states,
    };
    let report = check::check_linearizable(&History::read(&args.history)?, &limit);
    let text = report.render(args.show);
    if !report.is_clean() {
        print!("{text}");
        bail!(
            "{} violations in {}",
            report.violation_count(),
            args.history.display()
        );
    }
    Ok(text)
}

/// Arguments of `ringkv testbed scenario`.
#[derive(Debug, Args)]
pub struct ScenarioArgs {
    /// The scenario file (see testbed/scenarios/).
    pub file: PathBuf,
    /// The cluster directory (default: a new temporary one, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Leave the peers running at the end (needs --dir).
    #[arg(long, requires = "dir")]
    pub keep: bool,
    /// Start the peers on this `ringkv` binary (an older build) instead of
    /// this one; `upgrade NODE bin=self` steps move them to this one (a
    /// rolling upgrade between two real builds, docs/upgrades.md).
    #[arg(long, value_name = "PATH")]
    pub peer_bin: Option<PathBuf>,
    /// Run it in the multi-host mode (see `testbed up --netns`).
    #[arg(long)]
    pub netns: bool,
}

/// Refuses a `--peer-bin` that is not a `ringkv` binary this machine
/// runs, before anything starts.
fn check_peer_bin(bin: &Path) -> Result<()> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("--peer-bin {}: cannot run it", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.starts_with("ringkv") {
        bail!(
            "--peer-bin {}: not a ringkv binary (`--version` printed {:?})",
            bin.display(),
            text.trim()
        );
    }
    Ok(())
}

/// `scenario FILE`.
///
/// # Errors
/// A bad file, a cluster that does not come up, or a failed step.
pub fn scenario_cmd<C: KvClient>(args: &ScenarioArgs) -> Result<String> {
    let scenario = crate::scenario::Scenario::read(&args.file)?;
    if let Some(bin) = &args.peer_bin {
        check_peer_bin(bin)?;
    }
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().join("cluster")
        }
    };
    let report = crate::scenario::run::<C>(
        &scenario,
        &crate::scenario::RunOptions {
            bin: this_binary()?,
            peer_bin: args.peer_bin.clone(),
            dir,
            progress: true,
            keep: args.keep,
            down_on_interrupt: !args.keep,
            netns: args.netns,
        },
    )?;
    // The steps were printed as they ran: end with the totals.
    let mut text = String::new();
    if let Some(l) = &report.load {
        text.push_str(&l.render());
    }
    if let Some(c) = &report.check {
        text.push_str(&c.render(10));
    }
    if let Some(f) = &report.failure {
        print!("{text}");
        bail!("scenario {} failed: {f}", scenario.name);
    }
    let _ = writeln!(text, "scenario {} passed", scenario.name);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_bin_that_is_not_ringkv_is_refused_before_anything_starts() {
        let missing = check_peer_bin(Path::new("/nonexistent/ringkv")).expect_err("refused");
        assert!(
            format!("{missing:#}").contains("cannot run it"),
            "{missing:#}"
        );
        // Runs, but is not ringkv (prints no `ringkv` version).
        let other = check_peer_bin(Path::new("/bin/true")).expect_err("refused");
        assert!(
            format!("{other:#}").contains("not a ringkv binary"),
            "{other:#}"
        );
    }
}
