//! `ringkv testbed demo`: five peers under a workload, one killed and
//! restarted, the history checked; a short report on stdout and a
//! self-contained `report.html`. The scenario is `scenarios/demo.toml`, run
//! by the scenario engine; this module adds the narrative: detection and
//! convergence times from the membership samples, and the handoff figures
//! the peers export. IO: processes, HTTP, files.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::control::Testbed;
use crate::history::History;
use crate::load::KvClient;
use crate::scenario::{self, RunOptions, RunReport, Scenario};

/// The demo's scenario.
pub const DEMO_SCENARIO: &str = include_str!("../scenarios/demo.toml");

/// Arguments of `ringkv testbed demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The cluster directory (default: a temporary one, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Where to write the HTML report.
    #[arg(long, default_value = "report.html")]
    pub report: PathBuf,
    /// Leave the peers running at the end (needs --dir).
    #[arg(long, requires = "dir")]
    pub keep: bool,
}

/// When a peer's fault was seen, from the membership samples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Detection {
    /// The fault's time since the cluster came up.
    pub at: f64,
    /// Until some running peer first saw it suspect or dead.
    pub first_suspected: Option<f64>,
    /// Until every other running peer saw it dead.
    pub dead_everywhere: Option<f64>,
}

/// The first `kill NODE` of the run, and how it was detected.
pub fn detection(run: &RunReport) -> Option<(String, Detection)> {
    let kill = run.events.iter().find(|e| e.step.starts_with("kill "))?;
    let victim = kill.step["kill ".len()..].trim().to_owned();
    let at = kill.at.as_secs_f64();
    let mut d = Detection {
        at,
        ..Detection::default()
    };
    for s in run.timeline.iter().filter(|s| s.at.as_secs_f64() >= at) {
        let observers: Vec<char> = s
            .snapshot
            .peers
            .iter()
            .filter(|o| o.name != victim && o.view.is_some())
            .map(|o| s.snapshot.cell(o, &victim))
            .collect();
        let t = s.at.as_secs_f64() - at;
        if d.first_suspected.is_none() && observers.iter().any(|c| matches!(c, 'S' | 'D')) {
            d.first_suspected = Some(t);
        }
        if d.dead_everywhere.is_none()
            && !observers.is_empty()
            && observers.iter().all(|c| *c == 'D')
        {
            d.dead_everywhere = Some(t);
            break;
        }
    }
    Some((victim, d))
}

/// Sums of the handoff-related counters every running peer exports.
fn handoff_metrics(tb: &Testbed) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for (i, p) in tb.state.peers.iter().enumerate() {
        if tb.process(i) != crate::procs::ProcState::Running {
            continue;
        }
        let Ok(text) = crate::http::get(p.admin, "/metrics") else {
            continue;
        };
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name_labels, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let name = name_labels.split('{').next().unwrap_or(name_labels);
            if !(name.contains("handoff") || name == "ringkv_hints_replayed_total") {
                continue;
            }
            if let Ok(v) = value.trim().parse::<f64>() {
                *sums.entry(name.to_owned()).or_default() += v;
            }
        }
    }
    sums
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "never".into(), |s| format!("{s:.2} s"))
}

/// Runs the demo.
///
/// # Errors
/// The cluster does not come up, a step fails, or a write was lost.
pub fn demo<C: KvClient>(args: &DemoArgs) -> Result<String> {
    let scenario = Scenario::parse(DEMO_SCENARIO).context("the built-in demo scenario")?;
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().join("cluster")
        }
    };
    println!(
        "ringkv demo: {} peers on 127.0.0.1 under {} ops/s; p3 is killed with SIGKILL, detected, restarted; then every acknowledged write is checked\n",
        scenario.nodes, scenario.load.rate
    );
    let run = scenario::run::<C>(
        &scenario,
        &RunOptions {
            bin: crate::commands::this_binary()?,
            peer_bin: None,
            dir: dir.clone(),
            progress: true,
            // The figures are read after the run; the demo stops the peers.
            keep: true,
            down_on_interrupt: !args.keep,
            netns: false,
        },
    )?;
    // Read the figures before the peers go.
    let mut tb = Testbed::open(&run.dir)?;
    let metrics = handoff_metrics(&tb);
    if !args.keep {
        tb.down()?;
    }
    let summary = narrative(&run, &metrics);
    let history = run.history.as_deref().map(History::read).transpose()?;
    let page = crate::report::html(&run, history.as_ref(), &summary);
    std::fs::write(&args.report, page)
        .with_context(|| format!("cannot write {}", args.report.display()))?;
    let mut out = format!("\n{summary}");
    let _ = writeln!(out, "report: {}", args.report.display());
    if let Some(f) = &run.failure {
        print!("{out}");
        bail!("the demo failed: {f}");
    }
    Ok(out)
}

/// The demo's closing report.
pub fn narrative(run: &RunReport, metrics: &BTreeMap<String, f64>) -> String {
    let mut out = String::new();
    let peers = run.timeline.first().map_or(0, |s| s.snapshot.peers.len());
    let _ = writeln!(
        out,
        "cluster: {peers} peers up and converged in {:.2} s",
        run.up_took.as_secs_f64()
    );
    if let Some((victim, d)) = detection(run) {
        let _ = writeln!(
            out,
            "kill -9 {victim} at {:.1} s: first suspected after {}, dead at every live peer after {} (sampled every 0.25 s)",
            d.at,
            secs(d.first_suspected),
            secs(d.dead_everywhere)
        );
    }
    for e in run
        .events
        .iter()
        .filter(|e| e.step.starts_with("expect") || e.step.starts_with("restart"))
    {
        let _ = writeln!(
            out,
            "{:7.2} s  {}: {}",
            e.at.as_secs_f64(),
            e.step,
            if e.note.is_empty() { "done" } else { &e.note }
        );
    }
    if let Some(l) = &run.load {
        out.push_str("workload: ");
        out.push_str(&l.render());
    }
    if metrics.is_empty() {
        let _ = writeln!(out, "handoff: these peers export no handoff metrics");
    } else {
        for (name, v) in metrics {
            let _ = writeln!(out, "handoff: {name} = {v} (sum over the running peers)");
        }
    }
    match &run.check {
        Some(c) => {
            let [po, _, pu] = c.puts;
            let _ = writeln!(
                out,
                "checker: {po} acknowledged writes ({pu} unknown) over {} keys, {} keys verified at the end; lost writes: {} (must be 0), stale reads: {}, phantom reads: {}",
                c.keys_written,
                c.keys_verified,
                c.lost_writes(),
                c.count(crate::check::Kind::StaleRead),
                c.count(crate::check::Kind::PhantomRead)
            );
            for v in c.violations.iter().take(10) {
                let _ = writeln!(
                    out,
                    "  {} on {:?} (read #{}): {}",
                    v.kind, v.key, v.read, v.detail
                );
            }
        }
        None => {
            let _ = writeln!(out, "checker: did not run");
        }
    }
    let _ = writeln!(
        out,
        "{}",
        match &run.failure {
            None => "demo passed: the cluster lost a peer, healed, and lost nothing".to_owned(),
            Some(f) => format!("demo FAILED: {f}"),
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::procs::ProcState;
    use crate::scenario::{Event, Sample};
    use crate::watch::{Observed, PeerView, Snapshot};

    fn sample(at_ms: u64, p2: &str, p3: &str) -> Sample {
        let view = |p3: &str| {
            Some(PeerView {
                states: [("p1", "alive"), ("p2", "alive"), ("p3", p3)]
                    .iter()
                    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                    .collect(),
                ring_digest: Some("r".into()),
                index: 1,
            })
        };
        Sample {
            at: Duration::from_millis(at_ms),
            snapshot: Snapshot {
                peers: vec![
                    Observed {
                        name: "p1".into(),
                        process: ProcState::Running,
                        view: view(p3),
                    },
                    Observed {
                        name: "p2".into(),
                        process: ProcState::Running,
                        view: view(p2),
                    },
                    Observed {
                        name: "p3".into(),
                        process: ProcState::Gone,
                        view: None,
                    },
                ],
            },
        }
    }

    #[test]
    fn detection_times_come_from_the_samples_after_the_kill() {
        let run = RunReport {
            name: "demo".into(),
            dir: "/tmp".into(),
            up_took: Duration::from_millis(500),
            events: vec![Event {
                at: Duration::from_secs(1),
                step: "kill p3".into(),
                took: Duration::ZERO,
                note: String::new(),
                ok: true,
            }],
            failure: None,
            load: None,
            check: None,
            // p1's view of p3 is the first cell; p2's the second argument.
            timeline: vec![
                sample(500, "alive", "alive"),
                sample(1250, "alive", "alive"),
                sample(1500, "alive", "suspect"),
                sample(2000, "suspect", "dead"),
                sample(2500, "dead", "dead"),
            ],
            history: None,
            started_unix_ms: 0,
        };
        let (victim, d) = detection(&run).unwrap();
        assert_eq!(victim, "p3");
        assert_eq!(d.first_suspected, Some(0.5));
        assert_eq!(d.dead_everywhere, Some(1.5));
        let text = narrative(&run, &BTreeMap::new());
        assert!(text.contains("first suspected after 0.50 s"), "{text}");
        assert!(text.contains("no handoff metrics"), "{text}");
    }
}
