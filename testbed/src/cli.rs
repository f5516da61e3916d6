//! `ringkv testbed ...`: the commands the `ringkv` binary hands over.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use ringkv_gossip::Config;
use serde::Serialize;

use crate::sim::{self, Report, SimConfig, Step};

/// Testbed commands.
#[derive(Debug, Subcommand)]
pub enum TestbedCommand {
    /// Simulate thousands of peers' membership protocol in virtual time.
    Simulate(SimulateArgs),
    /// Real peers on this machine: kill -9 one at a time and time the
    /// detection; idle CPU and memory; an optional soak for false positives.
    BenchMembership(crate::bench::BenchMembershipArgs),
    /// Start a local cluster of real peers in a directory and wait until it
    /// has converged; the peers keep running after this command ends.
    Up(crate::commands::UpArgs),
    /// Stop every peer of the cluster (SIGTERM, then SIGKILL).
    Down(crate::commands::DirArgs),
    /// The peers, their processes and their live views.
    Status(crate::commands::DirArgs),
    /// SIGKILL a peer.
    Kill(crate::commands::PeerArgs),
    /// Pause a peer (SIGSTOP).
    Stop(crate::commands::PeerArgs),
    /// Resume a paused peer (SIGCONT).
    Cont(crate::commands::PeerArgs),
    /// Make a peer leave gracefully (SIGTERM) and wait until it exits.
    Leave(crate::commands::PeerArgs),
    /// Start a stopped peer again: same data dir, addresses and flags.
    Restart(crate::commands::PeerArgs),
    /// Start a stopped peer again at a new address, same identity
    /// (multi-host mode): a pod back with a new IP.
    Readdress(crate::commands::PeerArgs),
    /// Start one more peer, joining the cluster.
    Add(crate::commands::DirArgs),
    /// Cut two groups of peers off from each other: `p1,p2 / p3,p4,p5`.
    Partition(crate::commands::PartitionArgs),
    /// Clear every partition, loss and delay.
    Heal(crate::commands::DirArgs),
    /// Take a peer's network link down or up: `link p2 down` (multi-host
    /// mode, `up --netns`).
    Link(crate::commands::LinkArgs),
    /// Drop a fraction of a peer's datagrams: `loss p2 10%`.
    Loss(crate::commands::LossArgs),
    /// Delay every datagram a peer sends: `delay p2 50ms`.
    Delay(crate::commands::DelayArgs),
    /// Skew a peer's wall clock: `skew p2 +2s`, `skew p2 -500ms`, `skew p2 0`.
    Skew(crate::commands::SkewArgs),
    /// Make a peer's data dir read as full, or not: `disk p2 full`, `disk p2 free`.
    Disk(crate::commands::DiskArgs),
    /// Puts and gets through random live peers, recorded to a history.
    Load(crate::commands::LoadArgs),
    /// Check a history for lost writes, stale and phantom reads, and linearizability.
    Check(crate::commands::CheckArgs),
    /// Every peer's view of every other, live, until converged or a time.
    Watch(crate::commands::WatchArgs),
    /// Run a scenario: a cluster, a workload, timed faults and assertions.
    Scenario(crate::commands::ScenarioArgs),
    /// Five peers under load; kill one, watch detection and convergence,
    /// restart it, check that nothing was lost; writes report.html.
    Demo(crate::demo::DemoArgs),
}

/// Which membership configuration the simulated peers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// ringkv's defaults.
    Ringkv,
    /// memberlist's LAN defaults: 1 s probes, 500 ms timeout, suspicion
    /// multiplier 4, gossip every 200 ms to 3 peers.
    Memberlist,
}

/// Arguments of `ringkv testbed simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Peers at the start (a warm, converged cluster).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(2..=100_000))]
    pub nodes: u64,
    /// Seed: the same seed gives the same output, byte for byte.
    #[arg(long, default_value_t = 1, env = "RINGKV_SEED")]
    pub seed: u64,
    /// Probability that a datagram is lost, 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub loss: f64,
    /// One-way network delay in milliseconds.
    #[arg(long, default_value_t = 1.0, value_parser = parse_delay)]
    pub delay: f64,
    /// Simulated seconds to run.
    #[arg(long, default_value_t = 60.0, value_parser = parse_duration_secs)]
    pub duration: f64,
    /// Kill K random peers at time T: `K@T`, e.g. `1@10s`.
    #[arg(long, value_name = "K@T")]
    pub kill: Vec<String>,
    /// Cut fraction F of the peers off at T1 until T2: `F@T1..T2`.
    #[arg(long, value_name = "F@T1..T2")]
    pub partition: Vec<String>,
    /// Pause K random peers at T for D: `K@T+D`, e.g. `1@20s+5s`.
    #[arg(long, value_name = "K@T+D")]
    pub pause: Vec<String>,
    /// K new peers join through a random peer at T: `K@T`.
    #[arg(long, value_name = "K@T")]
    pub join: Vec<String>,
    /// K random peers leave gracefully at T: `K@T`.
    #[arg(long, value_name = "K@T")]
    pub leave: Vec<String>,
    /// Membership configuration to run.
    #[arg(long, value_enum, default_value_t = Profile::Ringkv)]
    pub profile: Profile,
    /// Run this many seeds (seed, seed+1, ...) and report percentiles.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub runs: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    let v = if s.ends_with('%') { v / 100.0 } else { v };
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s} is not between 0 and 1"))
    }
}

fn parse_delay(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches("ms")
        .parse()
        .map_err(|_| format!("{s:?} is not a number of ms"))?;
    if (0.0..=10_000.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} ms is outside 0..=10000"))
    }
}

fn parse_duration_secs(s: &str) -> Result<f64, String> {
    let d = parse_duration(s)?;
    if d.is_zero() || d > Duration::from_secs(24 * 3600) {
        return Err(format!("{s}: between 0 and 24 h"));
    }
    Ok(d.as_secs_f64())
}

/// The longest duration a testbed flag or scenario takes.
const DURATION_MAX: Duration = Duration::from_secs(365 * 86_400);

/// A duration as people type it: `10s`, `500ms`, `2m`, `10h`, `1d`,
/// fractions like `0.2s`, or plain seconds; at most a year. Units,
/// fractions and sums (`1h 30m`) are humantime's; plain seconds and the
/// limit are ours (`ringkv node` has its own, the same way).
///
/// # Errors
/// A message naming the text: not a duration, or more than a year.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() => {
            Duration::try_from_secs_f64(secs).map_err(|_| format!("{s}: out of range"))?
        }
        _ => humantime::parse_duration(s)
            .map_err(|e| format!("{s:?} is not a duration like 30s or 500ms ({e})"))?,
    };
    if d > DURATION_MAX {
        return Err(format!("{s}: out of range"));
    }
    Ok(d)
}

fn parse_count_at(s: &str) -> Result<(usize, &str)> {
    let (k, rest) = s
        .split_once('@')
        .with_context(|| format!("{s:?}: expected K@T"))?;
    let k: usize = k
        .parse()
        .with_context(|| format!("{s:?}: {k:?} is not a count"))?;
    Ok((k, rest))
}

/// Parses the fault flags into timed steps, checked against the run.
fn steps(args: &SimulateArgs, duration: Duration) -> Result<Vec<(Duration, Step)>> {
    let time = |t: &str| parse_duration(t).map_err(anyhow::Error::msg);
    let mut out = Vec::new();
    for s in &args.kill {
        let (count, t) = parse_count_at(s)?;
        out.push((time(t)?, Step::Kill { count }));
    }
    for s in &args.join {
        let (count, t) = parse_count_at(s)?;
        out.push((time(t)?, Step::Join { count }));
    }
    for s in &args.leave {
        let (count, t) = parse_count_at(s)?;
        out.push((time(t)?, Step::Leave { count }));
    }
    for s in &args.pause {
        let (count, rest) = parse_count_at(s)?;
        let (t, d) = rest
            .split_once('+')
            .with_context(|| format!("{s:?}: expected K@T+D"))?;
        out.push((
            time(t)?,
            Step::Pause {
                count,
                length: time(d)?,
            },
        ));
    }
    for s in &args.partition {
        let (f, rest) = s
            .split_once('@')
            .with_context(|| format!("{s:?}: expected F@T1..T2"))?;
        let fraction = parse_fraction(f).map_err(anyhow::Error::msg)?;
        let (t1, t2) = rest
            .split_once("..")
            .with_context(|| format!("{s:?}: expected F@T1..T2"))?;
        let (start, heal_at) = (time(t1)?, time(t2)?);
        if heal_at <= start {
            bail!("{s:?}: the heal must come after the cut");
        }
        out.push((start, Step::Partition { fraction, heal_at }));
    }
    for (at, step) in &out {
        if *at >= duration {
            bail!(
                "a step at {:.1} s is past the end of the run ({:.1} s): {step:?}",
                at.as_secs_f64(),
                duration.as_secs_f64()
            );
        }
        let count = match step {
            Step::Kill { count }
            | Step::Join { count }
            | Step::Leave { count }
            | Step::Pause { count, .. } => *count,
            Step::Partition { .. } => 0,
        };
        if count > 100_000 {
            bail!("{step:?}: at most 100000 peers per step");
        }
    }
    out.sort_by_key(|s| s.0);
    Ok(out)
}

fn config_for(args: &SimulateArgs, seed: u64) -> Result<SimConfig> {
    let duration = Duration::from_secs_f64(args.duration);
    let mut gossip = match args.profile {
        Profile::Ringkv => Config::default(),
        Profile::Memberlist => Config::memberlist_like(),
    };
    gossip.cluster = sim::sim_cluster();
    Ok(SimConfig {
        nodes: usize::try_from(args.nodes).context("node count")?,
        seed,
        loss: args.loss,
        delay: Duration::from_secs_f64(args.delay / 1000.0),
        duration,
        gossip,
        steps: steps(args, duration)?,
    })
}

#[derive(Debug, Serialize)]
struct Summary {
    runs: usize,
    first_seed: u64,
    detection_first_suspected: Percentiles,
    detection_all_dead: Percentiles,
    change_spread: Percentiles,
    failures_not_detected: usize,
    changes_not_spread: usize,
    false_positives: usize,
    bytes_per_peer_second: Percentiles,
    messages_per_peer_second: Percentiles,
    reports: Vec<Report>,
}

#[derive(Debug, Serialize)]
struct Percentiles {
    samples: usize,
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

impl Percentiles {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            (!v.is_empty()).then(|| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1])
        };
        Self {
            samples: v.len(),
            p50: pick(0.5),
            p99: pick(0.99),
            max: v.last().copied(),
        }
    }

    fn render(&self, unit: &str) -> String {
        match (self.p50, self.p99, self.max) {
            (Some(a), Some(b), Some(c)) => format!(
                "p50 {a:.3}{unit}  p99 {b:.3}{unit}  max {c:.3}{unit}  ({} samples)",
                self.samples
            ),
            _ => "no samples".into(),
        }
    }
}

fn summarize(reports: Vec<Report>, first_seed: u64) -> Summary {
    let f = |pick: &dyn Fn(&Report) -> Vec<Option<f64>>| -> (Vec<f64>, usize) {
        let all: Vec<Option<f64>> = reports.iter().flat_map(pick).collect();
        let missing = all.iter().filter(|v| v.is_none()).count();
        (all.into_iter().flatten().collect(), missing)
    };
    let (suspected, _) = f(&|r| r.failures.iter().map(|x| x.first_suspected_after).collect());
    let (dead, not_detected) = f(&|r| r.failures.iter().map(|x| x.all_dead_after).collect());
    let (spread, not_spread) = f(&|r| r.changes.iter().map(|x| x.everyone_after).collect());
    Summary {
        runs: reports.len(),
        first_seed,
        detection_first_suspected: Percentiles::of(suspected),
        detection_all_dead: Percentiles::of(dead),
        change_spread: Percentiles::of(spread),
        failures_not_detected: not_detected,
        changes_not_spread: not_spread,
        false_positives: reports.iter().map(|r| r.false_positives.len()).sum(),
        bytes_per_peer_second: Percentiles::of(
            reports
                .iter()
                .map(|r| r.traffic.bytes_per_peer_second())
                .collect(),
        ),
        messages_per_peer_second: Percentiles::of(
            reports
                .iter()
                .map(|r| r.traffic.messages_per_peer_second())
                .collect(),
        ),
        reports,
    }
}

/// Runs `ringkv testbed simulate`. Returns the output; wall time goes to
/// stderr so the output stays identical for a seed.
pub fn simulate(args: &SimulateArgs) -> Result<String> {
    let started = Instant::now();
    let mut reports = Vec::new();
    for run in 0..args.runs {
        let seed = args.seed.wrapping_add(run);
        reports.push(sim::simulate(config_for(args, seed)?));
    }
    eprintln!(
        "simulated in {:.1} s of wall time",
        started.elapsed().as_secs_f64()
    );
    if args.runs == 1 {
        let report = reports.pop().expect("one run");
        if args.json {
            return Ok(serde_json::to_string_pretty(&report).expect("reports serialize") + "\n");
        }
        return Ok(report.render());
    }
    let summary = summarize(reports, args.seed);
    if args.json {
        return Ok(serde_json::to_string_pretty(&summary).expect("reports serialize") + "\n");
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} runs of {} peers, seeds {}..{}",
        summary.runs,
        args.nodes,
        args.seed,
        args.seed + args.runs - 1
    );
    let _ = writeln!(
        out,
        "first suspicion after a kill:  {}",
        summary.detection_first_suspected.render(" s")
    );
    let _ = writeln!(
        out,
        "dead at every running peer:    {}",
        summary.detection_all_dead.render(" s")
    );
    let _ = writeln!(
        out,
        "join/leave known to everyone:  {}",
        summary.change_spread.render(" s")
    );
    let _ = writeln!(
        out,
        "failures never detected: {}, changes never spread: {}, false positives: {}",
        summary.failures_not_detected, summary.changes_not_spread, summary.false_positives
    );
    let _ = writeln!(
        out,
        "bytes sent per peer per second: {}",
        summary.bytes_per_peer_second.render(" B/s")
    );
    let _ = writeln!(
        out,
        "messages per peer per second:   {}",
        summary.messages_per_peer_second.render("")
    );
    Ok(out)
}

/// Runs a testbed command; `C` is the store client the workload uses.
///
/// # Errors
/// The command's own, with a message for people.
pub fn run<C: crate::load::KvClient>(cmd: &TestbedCommand) -> Result<String> {
    use crate::commands::{self as c, PeerAction};
    match cmd {
        TestbedCommand::Simulate(args) => simulate(args),
        TestbedCommand::BenchMembership(args) => crate::bench::bench_membership(args),
        TestbedCommand::Up(args) => c::up(args),
        TestbedCommand::Down(dir) => c::down(dir),
        TestbedCommand::Status(dir) => c::status(dir),
        TestbedCommand::Kill(args) => c::peer_action(PeerAction::Kill, args),
        TestbedCommand::Stop(args) => c::peer_action(PeerAction::Stop, args),
        TestbedCommand::Cont(args) => c::peer_action(PeerAction::Cont, args),
        TestbedCommand::Leave(args) => c::peer_action(PeerAction::Leave, args),
        TestbedCommand::Restart(args) => c::peer_action(PeerAction::Restart, args),
        TestbedCommand::Readdress(args) => c::peer_action(PeerAction::Readdress, args),
        TestbedCommand::Add(dir) => c::add(dir),
        TestbedCommand::Partition(args) => c::partition(args),
        TestbedCommand::Heal(dir) => c::heal(dir),
        TestbedCommand::Link(args) => c::link(args),
        TestbedCommand::Loss(args) => c::loss(args),
        TestbedCommand::Delay(args) => c::delay(args),
        TestbedCommand::Skew(args) => c::skew(args),
        TestbedCommand::Disk(args) => c::disk(args),
        TestbedCommand::Load(args) => c::load_cmd::<C>(args),
        TestbedCommand::Check(args) => c::check_cmd(args),
        TestbedCommand::Watch(args) => c::watch_cmd(args),
        TestbedCommand::Scenario(args) => c::scenario_cmd::<C>(args),
        TestbedCommand::Demo(args) => crate::demo::demo::<C>(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_people_type_them() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("60s", ms(60_000)),
            ("500ms", ms(500)),
            ("0.2s", ms(200)),
            ("2m", ms(120_000)),
            ("1h", ms(3_600_000)),
            ("1d", ms(86_400_000)),
            ("600", ms(600_000)),
            ("365d", DURATION_MAX),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text:?}");
        }
        for text in ["forever", "soon", "", "3x"] {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains("not a duration"), "{text:?}: {err}");
        }
        for text in ["366d", "-1"] {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains("out of range"), "{text:?}: {err}");
        }
    }
}
