//! Scenarios: a cluster, an optional workload, and a timed list of steps
//! (the testbed's commands plus waits and assertions), read from TOML.
//! The runner is also the engine of `ringkv testbed demo`.
//!
//! ```toml
//! name = "kill-restart"
//! nodes = 5
//! node_flags = ["--dead-grace", "0s"]
//! [load]
//! rate = 200
//! keys = 1000
//! [[step]]
//! run = "load start"
//! [[step]]
//! at = "3s"              # not before 3 s after the cluster is up
//! run = "kill p3"
//! [[step]]
//! run = "expect p3 dead within 20s"
//! ```
//!
//! Step language: `kill|stop|cont|leave|restart NODE`, `add`,
//! `partition A,B / C,D`, `heal`, `loss NODE 10%`, `delay NODE 50ms`,
//! `wait 2s`, `load start`, `load stop`, `expect converged within 30s`,
//! `expect NODE alive|suspect|dead|left [from A,B] within 15s` (as every
//! other running peer, or A and B, see it), and `check` (stops the workload, checks its history,
//! fails on any violation). The first failed step ends the run; the cluster
//! is always stopped at the end. IO: processes, HTTP, files.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use crate::check;
use crate::cli::parse_duration;
use crate::commands::run_load;
use crate::control::Testbed;
use crate::faults;
use crate::history::History;
use crate::load::{KvClient, LivePeers, LoadConfig, LoadSummary};
use crate::procs::ProcState;
use crate::watch::{self, Snapshot};

/// A scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// What it shows, for people.
    #[serde(default)]
    pub description: String,
    /// Peers started at the beginning.
    pub nodes: usize,
    /// Extra `ringkv node` flags for every peer.
    #[serde(default)]
    pub node_flags: Vec<String>,
    /// The workload `load start` runs.
    #[serde(default)]
    pub load: LoadSpec,
    /// The steps, in order.
    #[serde(rename = "step")]
    pub steps: Vec<StepSpec>,
}

/// The workload of a scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    /// Operations per second.
    #[serde(default = "default_rate")]
    pub rate: u32,
    /// Distinct keys.
    #[serde(default = "default_keys")]
    pub keys: u64,
    /// Share of gets.
    #[serde(default = "default_read_ratio")]
    pub read_ratio: f64,
    /// Seed of the choices.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_rate() -> u32 {
    200
}
fn default_keys() -> u64 {
    1000
}
fn default_read_ratio() -> f64 {
    0.5
}
fn default_seed() -> u64 {
    1
}

impl Default for LoadSpec {
    fn default() -> Self {
        Self {
            rate: default_rate(),
            keys: default_keys(),
            read_ratio: default_read_ratio(),
            seed: default_seed(),
        }
    }
}

/// A step as written in the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Not before this long after the cluster came up.
    #[serde(default)]
    pub at: Option<String>,
    /// The step, in the step language.
    pub run: String,
}

/// A parsed step.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// SIGKILL a peer.
    Kill(String),
    /// SIGSTOP a peer.
    Stop(String),
    /// SIGCONT a peer.
    Cont(String),
    /// SIGTERM a peer and wait until it exits.
    Leave(String),
    /// Start a peer again.
    Restart(String),
    /// Start one more peer.
    Add,
    /// Cut two groups off from each other.
    Partition(Vec<String>, Vec<String>),
    /// Clear all faults.
    Heal,
    /// Datagram loss on a peer.
    Loss(String, f64),
    /// Outgoing delay on a peer, in ms.
    Delay(String, u64),
    /// Do nothing for a while.
    Wait(Duration),
    /// Start the workload.
    LoadStart,
    /// Stop the workload (and run its final reads).
    LoadStop,
    /// Every running peer agrees, within a bound.
    ExpectConverged(Duration),
    /// Every running peer holds every range of its ring (handoff done),
    /// within a bound.
    ExpectHandoff(Duration),
    /// Every other running peer (or those listed) sees a peer in a
    /// state, within a bound.
    ExpectState {
        /// The peer observed.
        node: String,
        /// `alive`, `suspect`, `dead` or `left`.
        state: String,
        /// Only these observers (`from A,B`); all other running peers if
        /// empty.
        from: Vec<String>,
        /// The bound.
        within: Duration,
    },
    /// Stop the workload and check its history.
    Check,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |d: &Duration| format!("{}s", d.as_secs_f64());
        match self {
            Self::Kill(n) => write!(f, "kill {n}"),
            Self::Stop(n) => write!(f, "stop {n}"),
            Self::Cont(n) => write!(f, "cont {n}"),
            Self::Leave(n) => write!(f, "leave {n}"),
            Self::Restart(n) => write!(f, "restart {n}"),
            Self::Add => write!(f, "add"),
            Self::Partition(a, b) => write!(f, "partition {} / {}", a.join(","), b.join(",")),
            Self::Heal => write!(f, "heal"),
            Self::Loss(n, l) => write!(f, "loss {n} {}%", l * 100.0),
            Self::Delay(n, ms) => write!(f, "delay {n} {ms}ms"),
            Self::Wait(d) => write!(f, "wait {}", secs(d)),
            Self::LoadStart => write!(f, "load start"),
            Self::LoadStop => write!(f, "load stop"),
            Self::ExpectConverged(d) => write!(f, "expect converged within {}", secs(d)),
            Self::ExpectHandoff(d) => write!(f, "expect handoff within {}", secs(d)),
            Self::ExpectState {
                node,
                state,
                from,
                within,
            } => {
                write!(f, "expect {node} {state} ")?;
                if !from.is_empty() {
                    write!(f, "from {} ", from.join(","))?;
                }
                write!(f, "within {}", secs(within))
            }
            Self::Check => write!(f, "check"),
        }
    }
}

fn duration(text: &str) -> Result<Duration> {
    parse_duration(text).map_err(anyhow::Error::msg)
}

impl FromStr for Step {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let one = |make: fn(String) -> Self| -> Result<Self> {
            match words.as_slice() {
                [_, node] => Ok(make((*node).to_owned())),
                _ => bail!("{s:?}: expected `{} NODE`", words[0]),
            }
        };
        let Some(first) = words.first() else {
            bail!("an empty step");
        };
        match *first {
            "kill" => one(Self::Kill),
            "stop" => one(Self::Stop),
            "cont" => one(Self::Cont),
            "leave" => one(Self::Leave),
            "restart" => one(Self::Restart),
            "add" if words.len() == 1 => Ok(Self::Add),
            "heal" if words.len() == 1 => Ok(Self::Heal),
            "check" if words.len() == 1 => Ok(Self::Check),
            "partition" => {
                let (a, b) = faults::parse_partition(&words[1..].join(" "))?;
                Ok(Self::Partition(a, b))
            }
            "loss" => match words.as_slice() {
                [_, n, l] => Ok(Self::Loss((*n).to_owned(), faults::parse_loss(l)?)),
                _ => bail!("{s:?}: expected `loss NODE 10%`"),
            },
            "delay" => match words.as_slice() {
                [_, n, d] => Ok(Self::Delay((*n).to_owned(), faults::parse_delay_ms(d)?)),
                _ => bail!("{s:?}: expected `delay NODE 50ms`"),
            },
            "wait" => match words.as_slice() {
                [_, d] => Ok(Self::Wait(duration(d)?)),
                _ => bail!("{s:?}: expected `wait 2s`"),
            },
            "load" => match words.as_slice() {
                [_, "start"] => Ok(Self::LoadStart),
                [_, "stop"] => Ok(Self::LoadStop),
                _ => bail!("{s:?}: expected `load start` or `load stop`"),
            },
            "expect" => match words.as_slice() {
                [_, "converged", "within", d] => Ok(Self::ExpectConverged(duration(d)?)),
                [_, "handoff", "within", d] => Ok(Self::ExpectHandoff(duration(d)?)),
                [_, n, st @ ("alive" | "suspect" | "dead" | "left"), rest @ ..] => {
                    let (from, d) = match rest {
                        ["within", d] => (Vec::new(), d),
                        ["from", who, "within", d] => {
                            (who.split(',').filter(|w| !w.is_empty()).map(str::to_owned).collect(), d)
                        }
                        _ => bail!("{s:?}: expected `expect NODE {st} [from A,B] within 15s`"),
                    };
                    Ok(Self::ExpectState {
                        node: (*n).to_owned(),
                        state: (*st).to_owned(),
                        from,
                        within: duration(d)?,
                    })
                }
                _ => bail!("{s:?}: expected `expect converged within 30s`, `expect handoff within 60s` or `expect NODE dead [from A,B] within 15s`"),
            },
            _ => bail!("{s:?}: unknown step (kill, stop, cont, leave, restart, add, partition, heal, loss, delay, wait, load start, load stop, expect, check)"),
        }
    }
}

impl Scenario {
    /// Reads and validates a scenario file.
    ///
    /// # Errors
    /// Unreadable, not TOML of this shape, or a step that does not parse
    /// (the message names the step).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses and validates scenario text.
    ///
    /// # Errors
    /// See [`Self::read`].
    pub fn parse(text: &str) -> Result<Self> {
        let s: Self = toml::from_str(text).context("not a scenario")?;
        if !(1..=64).contains(&s.nodes) {
            bail!("nodes = {}: between 1 and 64", s.nodes);
        }
        crate::control::check_node_flags(&s.node_flags)?;
        s.timed_steps()?;
        Ok(s)
    }

    /// The steps, parsed, with their earliest start.
    ///
    /// # Errors
    /// A step or an `at` does not parse.
    pub fn timed_steps(&self) -> Result<Vec<(Option<Duration>, Step)>> {
        self.steps
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let at = spec.at.as_deref().map(duration).transpose();
                let step = spec.run.parse::<Step>();
                match (at, step) {
                    (Ok(at), Ok(step)) => Ok((at, step)),
                    (Err(e), _) | (_, Err(e)) => Err(e.context(format!("step {}", i + 1))),
                }
            })
            .collect()
    }
}

/// One membership sample for the timeline.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Since the cluster came up.
    pub at: Duration,
    /// Every peer's observation.
    pub snapshot: Snapshot,
}

/// What one step did.
#[derive(Clone, Debug)]
pub struct Event {
    /// When it started, since the cluster came up.
    pub at: Duration,
    /// The step.
    pub step: String,
    /// How long it took.
    pub took: Duration,
    /// What it found, for people.
    pub note: String,
    /// Whether it succeeded.
    pub ok: bool,
}

/// The result of a scenario run.
#[derive(Debug)]
pub struct RunReport {
    /// The scenario's name.
    pub name: String,
    /// The cluster directory.
    pub dir: PathBuf,
    /// How long `up` took (start and converge).
    pub up_took: Duration,
    /// Every step run.
    pub events: Vec<Event>,
    /// The first failure, if any.
    pub failure: Option<String>,
    /// The workload's counts, if one ran.
    pub load: Option<LoadSummary>,
    /// The checker's report, if `check` ran.
    pub check: Option<check::Report>,
    /// Membership samples, every 250 ms.
    pub timeline: Vec<Sample>,
    /// The history file, if a workload ran.
    pub history: Option<PathBuf>,
    /// Wall-clock ms when the cluster came up (the zero of every time).
    pub started_unix_ms: u64,
}

impl RunReport {
    /// Whether every step passed.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    /// The report for people.
    pub fn render(&self) -> String {
        use fmt::Write as _;
        let mut out = format!(
            "scenario {}: cluster up in {:.1} s\n",
            self.name,
            self.up_took.as_secs_f64()
        );
        for e in &self.events {
            let _ = writeln!(
                out,
                "{:7.2} s  {:<36} {:6.2} s  {}{}",
                e.at.as_secs_f64(),
                e.step,
                e.took.as_secs_f64(),
                if e.ok { "" } else { "FAILED: " },
                e.note
            );
        }
        if let Some(l) = &self.load {
            out.push_str(&l.render());
        }
        if let Some(c) = &self.check {
            out.push_str(&c.render(10));
        }
        let _ = writeln!(
            out,
            "{}",
            match &self.failure {
                None => format!("scenario {} passed", self.name),
                Some(f) => format!("scenario {} FAILED: {f}", self.name),
            }
        );
        out
    }
}

/// A running workload.
struct RunningLoad {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<LoadSummary>>,
}

/// Stops every peer when dropped, whatever happened.
struct DownGuard(Arc<Mutex<Testbed>>);

impl Drop for DownGuard {
    fn drop(&mut self) {
        let mut tb = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = tb.down();
    }
}

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The `ringkv` binary.
    pub bin: PathBuf,
    /// The cluster directory.
    pub dir: PathBuf,
    /// Print each step as it runs (to stdout).
    pub progress: bool,
    /// Leave the peers running at the end.
    pub keep: bool,
    /// Stop the peers and exit on Ctrl-C or SIGTERM (they are detached,
    /// so they would otherwise outlive the run).
    pub down_on_interrupt: bool,
}

/// Runs a scenario with `C` as the store client.
///
/// # Errors
/// The cluster does not come up; a failing step is not an error but the
/// report's `failure`.
pub fn run<C: KvClient>(scenario: &Scenario, opts: &RunOptions) -> Result<RunReport> {
    let steps = scenario.timed_steps()?;
    // Refuse before starting anything, so a failure below is ours to clean.
    if let Ok(old) = Testbed::open(&opts.dir) {
        let running = old.still_running();
        if !running.is_empty() {
            bail!(
                "a testbed is already running in {} (peers {}); stop it with `ringkv testbed down --dir {}`",
                opts.dir.display(),
                running.join(", "),
                opts.dir.display()
            );
        }
    }
    let up = Testbed::up(
        &opts.dir,
        &opts.bin,
        scenario.nodes,
        scenario.node_flags.clone(),
        Duration::from_secs(60),
    );
    let (tb, up_took) = match up {
        Ok(up) => up,
        Err(e) => {
            // `up` leaves peers that did not converge running, for a
            // person to look at; a scripted run stops them.
            if !opts.keep {
                if let Ok(mut tb) = Testbed::open(&opts.dir) {
                    let _ = tb.down();
                }
            }
            return Err(e);
        }
    };
    let started = Instant::now();
    let started_unix_ms = crate::commands::unix_ms();
    let key = tb.state.cluster_key.clone();
    let dir = tb.dir.clone();
    let tb = Arc::new(Mutex::new(tb));
    let guard = (!opts.keep).then(|| DownGuard(tb.clone()));
    if opts.down_on_interrupt {
        stop_on_interrupt(dir.clone());
    }
    if opts.progress {
        println!(
            "scenario {}: {} peers up in {:.1} s ({})",
            scenario.name,
            scenario.nodes,
            up_took.as_secs_f64(),
            dir.display()
        );
    }
    let live: LivePeers = Arc::new(Mutex::new(tb.lock().expect("not poisoned").running_addrs()));
    let timeline = Arc::new(Mutex::new(Vec::new()));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = spawn_sampler(Sampling {
        tb: tb.clone(),
        live: live.clone(),
        timeline: timeline.clone(),
        on: sampling.clone(),
        started,
        progress: opts.progress,
    });
    let mut ctx = Ctx::<C> {
        client: std::marker::PhantomData,
        tb,
        live,
        load: None,
        load_summary: None,
        check: None,
        history: None,
        key,
        spec: scenario.load.clone(),
        dir: dir.clone(),
        started,
        last_fault: Default::default(),
    };
    let (events, failure) = ctx.run_steps(steps, opts.progress);
    if let Some(running) = ctx.load.take() {
        running.stop.store(true, Ordering::Relaxed);
        let _ = running.handle.join();
    }
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    drop(guard);
    let timeline = std::mem::take(&mut *timeline.lock().expect("not poisoned"));
    Ok(RunReport {
        name: scenario.name.clone(),
        dir,
        up_took,
        events,
        failure,
        load: ctx.load_summary,
        check: ctx.check,
        timeline,
        history: ctx.history,
        started_unix_ms,
    })
}

/// The peers are detached, so a Ctrl-C (or SIGTERM) of the run would
/// leave them running: on either, stop the cluster in `dir` (from its
/// state file, which every step keeps current) and exit with 130.
fn stop_on_interrupt(dir: PathBuf) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("\ninterrupted: stopping the peers in {}", dir.display());
            if let Ok(mut tb) = Testbed::open(&dir) {
                let _ = tb.down();
            }
            std::process::exit(130);
        });
    });
}

/// What the sampler shares with the runner.
struct Sampling {
    tb: Arc<Mutex<Testbed>>,
    live: LivePeers,
    timeline: Arc<Mutex<Vec<Sample>>>,
    on: Arc<AtomicBool>,
    started: Instant,
    /// Print each change of a peer's state (as most running peers see it).
    progress: bool,
}

/// Lines for peers whose state, as most running peers see it, changed
/// between two samples: `p3 is suspect (2 of 4 running peers)`.
pub fn changes(before: Option<&Snapshot>, now: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for p in &now.peers {
        let Some(c) = now.consensus(&p.name) else {
            continue;
        };
        if before.and_then(|b| b.consensus(&p.name)) == Some(c) {
            continue;
        }
        let seeing = now
            .peers
            .iter()
            .filter(|o| o.view.is_some() && now.cell(o, &p.name) == c)
            .count();
        let asked = now.peers.iter().filter(|o| o.view.is_some()).count();
        let state = match c {
            'A' => "alive",
            'S' => "suspect",
            'D' => "dead",
            'L' => "left",
            _ => "unknown",
        };
        out.push(format!(
            "{} is {state} ({seeing} of {asked} running peers)",
            p.name
        ));
    }
    out
}

fn spawn_sampler(s: Sampling) -> JoinHandle<()> {
    let Sampling {
        tb,
        live,
        timeline,
        on,
        started,
        progress,
    } = s;
    std::thread::spawn(move || {
        let mut last: Option<Snapshot> = None;
        while on.load(Ordering::Relaxed) {
            let (targets, addrs) = {
                let tb = tb.lock().expect("not poisoned");
                (
                    watch::targets(&tb.state),
                    tb.state
                        .peers
                        .iter()
                        .map(|p| (p.name.clone(), p.addr))
                        .collect::<Vec<_>>(),
                )
            };
            let at = started.elapsed();
            let snapshot = watch::observe(&targets);
            let running: Vec<_> = snapshot.running().into_iter().map(str::to_owned).collect();
            *live.lock().expect("not poisoned") = addrs
                .iter()
                .filter(|(n, _)| running.contains(n))
                .map(|(_, a)| *a)
                .collect();
            if progress {
                // Skip the first sample: the cluster is known to be up.
                if last.is_some() {
                    for line in changes(last.as_ref(), &snapshot) {
                        println!("{:7.2} s    · {line}", at.as_secs_f64());
                    }
                }
                last = Some(snapshot.clone());
            }
            timeline
                .lock()
                .expect("not poisoned")
                .push(Sample { at, snapshot });
            std::thread::sleep(Duration::from_millis(250));
        }
    })
}

/// The runner's state between steps.
struct Ctx<C> {
    client: std::marker::PhantomData<C>,
    tb: Arc<Mutex<Testbed>>,
    live: LivePeers,
    load: Option<RunningLoad>,
    load_summary: Option<LoadSummary>,
    check: Option<check::Report>,
    history: Option<PathBuf>,
    key: String,
    spec: LoadSpec,
    dir: PathBuf,
    started: Instant,
    /// When each peer last had a fault applied (for detection times).
    last_fault: std::collections::BTreeMap<String, Duration>,
}

impl<C: KvClient> Ctx<C> {
    /// Runs the steps in order until one fails; the events and the
    /// failure.
    fn run_steps(
        &mut self,
        steps: Vec<(Option<Duration>, Step)>,
        progress: bool,
    ) -> (Vec<Event>, Option<String>) {
        let mut events = Vec::new();
        for (at, step) in steps {
            if let Some(wait) = at.and_then(|at| at.checked_sub(self.started.elapsed())) {
                std::thread::sleep(wait);
            }
            let event = self.run_one(&step, progress);
            let ok = event.ok;
            let note = event.note.clone();
            events.push(event);
            if !ok {
                return (events, Some(format!("{step}: {note}")));
            }
        }
        (events, None)
    }

    /// Runs one step, printing it when `progress`.
    fn run_one(&mut self, step: &Step, progress: bool) -> Event {
        let t0 = self.started.elapsed();
        if progress {
            println!("{:7.2} s  {step}", t0.as_secs_f64());
        }
        let result = self.step(step, t0);
        let event = Event {
            at: t0,
            step: step.to_string(),
            took: self.started.elapsed() - t0,
            ok: result.is_ok(),
            note: match result {
                Ok(n) => n,
                Err(e) => format!("{e:#}"),
            },
        };
        if progress && !(event.ok && event.note.is_empty()) {
            println!(
                "{:7.2} s    → {}{}",
                (t0 + event.took).as_secs_f64(),
                if event.ok { "" } else { "FAILED: " },
                event.note
            );
        }
        event
    }

    fn refresh_live(&self) {
        let addrs = self.tb.lock().expect("not poisoned").running_addrs();
        *self.live.lock().expect("not poisoned") = addrs;
    }

    fn step(&mut self, step: &Step, t0: Duration) -> Result<String> {
        let note = match step {
            Step::Kill(n) | Step::Stop(n) | Step::Cont(n) | Step::Leave(n) | Step::Restart(n) => {
                {
                    let mut tb = self.tb.lock().expect("not poisoned");
                    match step {
                        Step::Kill(_) => tb.kill(n)?,
                        Step::Stop(_) => tb.stop(n)?,
                        Step::Cont(_) => tb.cont(n)?,
                        Step::Leave(_) => tb.leave(n)?,
                        _ => tb.restart(n)?,
                    }
                }
                self.last_fault.insert(n.clone(), t0);
                self.refresh_live();
                String::new()
            }
            Step::Add => {
                let name = {
                    let mut tb = self.tb.lock().expect("not poisoned");
                    let i = tb.add()?;
                    tb.state.peers[i].name.clone()
                };
                self.last_fault.insert(name.clone(), t0);
                self.refresh_live();
                format!("{name} started")
            }
            Step::Partition(a, b) => {
                self.tb.lock().expect("not poisoned").partition(a, b)?;
                String::new()
            }
            Step::Heal => {
                self.tb.lock().expect("not poisoned").heal()?;
                String::new()
            }
            Step::Loss(n, l) => {
                self.tb.lock().expect("not poisoned").loss(n, *l)?;
                String::new()
            }
            Step::Delay(n, ms) => {
                self.tb.lock().expect("not poisoned").delay(n, *ms)?;
                String::new()
            }
            Step::Wait(d) => {
                std::thread::sleep(*d);
                String::new()
            }
            Step::LoadStart => self.load_start()?,
            Step::LoadStop => self.load_stop()?,
            Step::ExpectConverged(limit) => {
                let targets = watch::targets(&self.tb.lock().expect("not poisoned").state);
                let took = watch::wait_converged(&targets, *limit).map_err(anyhow::Error::msg)?;
                format!("converged after {:.2} s", took.as_secs_f64())
            }
            Step::ExpectHandoff(limit) => self.expect_handoff(*limit)?,
            Step::ExpectState {
                node,
                state,
                from,
                within,
            } => self.expect_state(node, state, from, *within)?,
            Step::Check => self.check()?,
        };
        Ok(note)
    }

    fn load_start(&mut self) -> Result<String> {
        if self.load.is_some() {
            bail!("the workload is already running");
        }
        let path = self.dir.join("history.jsonl");
        // A run's choices replay from its seed; RINGKV_SEED picks another.
        let seed = std::env::var("RINGKV_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(self.spec.seed);
        let cfg = LoadConfig {
            rate: self.spec.rate,
            duration: None,
            keys: self.spec.keys,
            read_ratio: self.spec.read_ratio,
            seed,
            ..LoadConfig::default()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (key, live, out, stop2) = (
            self.key.clone(),
            self.live.clone(),
            path.clone(),
            stop.clone(),
        );
        let handle =
            std::thread::spawn(move || run_load::<C>(&key, live, &cfg, stop2, &out, false));
        self.load = Some(RunningLoad { stop, handle });
        self.history = Some(path);
        Ok(format!(
            "{} ops/s over {} keys, seed {seed}",
            self.spec.rate, self.spec.keys
        ))
    }

    fn load_stop(&mut self) -> Result<String> {
        let running = self.load.take().context("no workload is running")?;
        running.stop.store(true, Ordering::Relaxed);
        let summary = running
            .handle
            .join()
            .map_err(|_| anyhow::anyhow!("the workload panicked"))??;
        let note = summary.render().trim_end().to_owned();
        self.load_summary = Some(summary);
        Ok(note)
    }

    fn check(&mut self) -> Result<String> {
        let mut note = String::new();
        if self.load.is_some() {
            note = self.load_stop()? + "; ";
        }
        let path = self
            .history
            .clone()
            .context("no workload ran: nothing to check")?;
        let report = check::check(&History::read(&path)?);
        let [po, pf, pu] = report.puts;
        note.push_str(&format!(
            "{po} acknowledged writes ({pf} failed, {pu} unknown), {} keys verified; lost writes {}, stale reads {}, phantom reads {}, failed write reads {}",
            report.keys_verified,
            report.lost_writes(),
            report.count(check::Kind::StaleRead),
            report.count(check::Kind::PhantomRead),
            report.count(check::Kind::FailedWriteRead)
        ));
        let clean = report.is_clean();
        self.check = Some(report);
        if !clean {
            bail!("{note}");
        }
        Ok(note)
    }

    /// Waits until every running peer reports `ringkv_handoff_ready 1`
    /// and no pending range on its metrics.
    fn expect_handoff(&self, limit: Duration) -> Result<String> {
        let start = Instant::now();
        let mut last = String::from("no peer answered");
        while start.elapsed() < limit {
            let (peers, running): (Vec<_>, Vec<bool>) = {
                let tb = self.tb.lock().expect("not poisoned");
                let running = (0..tb.state.peers.len())
                    .map(|i| tb.process(i) == ProcState::Running)
                    .collect();
                (tb.state.peers.clone(), running)
            };
            let mut waiting = Vec::new();
            let mut keys = 0.0;
            for (p, _) in peers.iter().zip(&running).filter(|(_, r)| **r) {
                let metric = |text: &str, name: &str| {
                    text.lines().find_map(|l| {
                        l.strip_prefix(name)?
                            .strip_prefix(' ')?
                            .trim()
                            .parse::<f64>()
                            .ok()
                    })
                };
                match crate::http::get(p.admin, "/metrics") {
                    Ok(text) => {
                        let ready = metric(&text, "ringkv_handoff_ready") == Some(1.0);
                        let pending = metric(&text, "ringkv_handoff_pending_ranges").unwrap_or(1.0);
                        keys += metric(&text, "ringkv_handoff_keys_moved_total").unwrap_or(0.0);
                        if !ready || pending > 0.0 {
                            waiting.push(p.name.clone());
                        }
                    }
                    Err(_) => waiting.push(p.name.clone()),
                }
            }
            if waiting.is_empty() {
                return Ok(format!(
                    "every peer holds its ranges after {:.2} s ({keys:.0} keys moved so far)",
                    start.elapsed().as_secs_f64()
                ));
            }
            last = format!("still receiving: {}", waiting.join(", "));
            std::thread::sleep(Duration::from_millis(250));
        }
        bail!(
            "handoff not done within {:.0} s: {last}",
            limit.as_secs_f64()
        )
    }

    fn expect_state(
        &self,
        name: &str,
        state: &str,
        from: &[String],
        limit: Duration,
    ) -> Result<String> {
        let start = Instant::now();
        let want = watch::letter(Some(state));
        let mut last = String::new();
        while start.elapsed() < limit {
            let targets = watch::targets(&self.tb.lock().expect("not poisoned").state);
            for who in from.iter().map(String::as_str).chain([name]) {
                if !targets.iter().any(|t| t.name == who) {
                    bail!("no peer called {who:?}");
                }
            }
            let snap = watch::observe(&targets);
            let observers: Vec<_> = snap
                .peers
                .iter()
                .filter(|o| o.name != name && o.process == ProcState::Running)
                .filter(|o| from.is_empty() || from.contains(&o.name))
                .collect();
            let seen: Vec<(String, char)> = observers
                .iter()
                .map(|o| (o.name.clone(), snap.cell(o, name)))
                .collect();
            if !observers.is_empty() && seen.iter().all(|(_, c)| *c == want) {
                let since = self
                    .last_fault
                    .get(name)
                    .map(|t| {
                        format!(
                            ", {:.2} s after the {name} step",
                            (self.started.elapsed() - *t).as_secs_f64()
                        )
                    })
                    .unwrap_or_default();
                return Ok(format!(
                    "{state} at {} after {:.2} s{since}",
                    if from.is_empty() {
                        "every running peer".to_owned()
                    } else {
                        from.join(", ")
                    },
                    start.elapsed().as_secs_f64()
                ));
            }
            last = seen
                .iter()
                .map(|(o, c)| format!("{o}:{c}"))
                .collect::<Vec<_>>()
                .join(" ");
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "not {state} everywhere within {:.0} s (views: {last})",
            limit.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_parses_and_prints_back() {
        for text in [
            "kill p3",
            "stop p2",
            "cont p2",
            "leave p1",
            "restart p3",
            "add",
            "partition p1,p2 / p3,p4,p5",
            "heal",
            "loss p2 10%",
            "delay p2 50ms",
            "wait 2s",
            "load start",
            "load stop",
            "expect converged within 30s",
            "expect p3 dead within 15s",
            "expect p1 dead from p3,p4 within 20s",
            "check",
        ] {
            let step: Step = text.parse().unwrap();
            let again: Step = step.to_string().parse().unwrap();
            assert_eq!(step, again, "{text}");
        }
    }

    #[test]
    fn bad_steps_say_what_is_expected() {
        for (text, hint) in [
            ("explode p1", "unknown step"),
            ("kill", "kill NODE"),
            ("expect p3 sleepy within 5s", "expect NODE dead"),
            ("wait forever", "not a duration"),
            ("partition p1 p2", "two sides"),
            ("loss p1 200%", "between 0% and 100%"),
        ] {
            let err = format!("{:#}", text.parse::<Step>().unwrap_err());
            assert!(err.contains(hint), "{text}: {err}");
        }
    }

    #[test]
    fn scenarios_name_the_bad_step() {
        let text = "name = \"x\"\nnodes = 3\n[[step]]\nrun = \"add\"\n[[step]]\nrun = \"fly\"\n";
        let err = format!("{:#}", Scenario::parse(text).unwrap_err());
        assert!(err.contains("step 2"), "{err}");
        let err = format!(
            "{:#}",
            Scenario::parse("name = \"x\"\nnodes = 3\nstep = []\ncolour = 1\n").unwrap_err()
        );
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn state_changes_are_reported_once_per_change() {
        use crate::watch::{Observed, PeerView};
        let snap = |p2: &str| Snapshot {
            peers: vec![
                Observed {
                    name: "p1".into(),
                    process: ProcState::Running,
                    view: Some(PeerView {
                        states: [("p1", "alive"), ("p2", p2)]
                            .iter()
                            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                            .collect(),
                        ring_digest: None,
                        index: 1,
                    }),
                },
                Observed {
                    name: "p2".into(),
                    process: ProcState::Gone,
                    view: None,
                },
            ],
        };
        let (a, s) = (snap("alive"), snap("suspect"));
        assert!(changes(Some(&a), &a).is_empty());
        assert_eq!(
            changes(Some(&a), &s),
            ["p2 is suspect (1 of 1 running peers)"]
        );
        assert_eq!(changes(None, &a).len(), 2, "everything is news at first");
    }

    #[test]
    fn the_shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let s = Scenario::read(&path).unwrap();
                assert_eq!(s.nodes, 5, "{}", path.display());
                n += 1;
            }
        }
        assert!(n >= 5, "the four scenarios and the demo ship");
    }
}
