//! Driving a scenario: bring the cluster up, start the sampler, run the
//! steps in order until one fails, and always stop the cluster at the end
//! (also on Ctrl-C). IO: processes, HTTP, files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::check;
use crate::control::Testbed;
use crate::load::{KvClient, LivePeers, LoadSummary};
use crate::watch;

use super::report::{Event, RunReport};
use super::sample::{spawn_sampler, Sampling};
use super::spec::{LoadSpec, Scenario, Step};
use super::workload::RunningLoad;

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
    /// The `ringkv` binary: the testbed's own, and what `upgrade NODE
    /// bin=self` switches a peer to.
    pub bin: PathBuf,
    /// The binary the peers start on, when not `bin` (an older build, for
    /// a rolling upgrade between two real builds: docs/upgrades.md).
    pub peer_bin: Option<PathBuf>,
    /// The cluster directory.
    pub dir: PathBuf,
    /// Print each step as it runs (to stdout).
    pub progress: bool,
    /// Leave the peers running at the end.
    pub keep: bool,
    /// Stop the peers and exit on Ctrl-C or SIGTERM (they are detached,
    /// so they would otherwise outlive the run).
    pub down_on_interrupt: bool,
    /// Put every peer in a network namespace of its own (the multi-host
    /// mode, [`crate::netns`]).
    pub netns: bool,
}

/// Runs a scenario with `C` as the store client.
///
/// # Errors
/// The cluster does not come up; a failing step is not an error but the
/// report's `failure`.
pub fn run<C: KvClient>(scenario: &Scenario, opts: &RunOptions) -> Result<RunReport> {
    let steps = scenario.timed_steps()?;
    refuse_if_running(&opts.dir)?;
    let (tb, up_took) = bring_up(scenario, opts)?;
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
        add_flags: scenario.add_flags.clone(),
        dir: dir.clone(),
        own_bin: opts.bin.clone(),
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

/// Refuses a directory whose testbed still runs, before starting
/// anything, so that whatever fails afterwards is this run's to clean up.
fn refuse_if_running(dir: &Path) -> Result<()> {
    if let Ok(old) = Testbed::open(dir) {
        let running = old.still_running();
        if !running.is_empty() {
            bail!(
                "a testbed is already running in {} (peers {}); stop it with `ringkv testbed down --dir {}`",
                dir.display(),
                running.join(", "),
                dir.display()
            );
        }
    }
    Ok(())
}

/// Starts the scenario's peers and waits until they converge; the
/// testbed and how long that took.
fn bring_up(scenario: &Scenario, opts: &RunOptions) -> Result<(Testbed, Duration)> {
    let up = Testbed::up(
        &opts.dir,
        opts.peer_bin.as_ref().unwrap_or(&opts.bin),
        scenario.nodes,
        scenario.node_flags.clone(),
        Duration::from_secs(60),
        opts.netns,
    );
    up.inspect_err(|_| {
        // `up` leaves peers that did not converge running, for a
        // person to look at; a scripted run stops them.
        if !opts.keep {
            if let Ok(mut tb) = Testbed::open(&opts.dir) {
                let _ = tb.down();
            }
        }
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

/// The runner's state between steps.
pub(super) struct Ctx<C> {
    pub(super) client: std::marker::PhantomData<C>,
    pub(super) tb: Arc<Mutex<Testbed>>,
    pub(super) live: LivePeers,
    pub(super) load: Option<RunningLoad>,
    pub(super) load_summary: Option<LoadSummary>,
    pub(super) check: Option<check::Report>,
    pub(super) history: Option<PathBuf>,
    pub(super) key: String,
    pub(super) spec: LoadSpec,
    /// Flags of the peers `add` starts.
    pub(super) add_flags: Vec<String>,
    pub(super) dir: PathBuf,
    /// The testbed's own binary (`upgrade NODE bin=self`).
    pub(super) own_bin: PathBuf,
    pub(super) started: Instant,
    /// When each peer last had a fault applied (for detection times).
    pub(super) last_fault: std::collections::BTreeMap<String, Duration>,
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
                        Step::Kill(_) if n.contains(',') => {
                            let names: Vec<String> = n.split(',').map(str::to_owned).collect();
                            tb.kill_all(&names)?;
                            for name in &names {
                                self.last_fault.insert(name.clone(), t0);
                            }
                        }
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
            Step::Upgrade { node, bin, env } => {
                let bin = bin.as_ref().map(|b| {
                    if b == crate::scenario::spec::SELF_BIN {
                        self.own_bin.clone()
                    } else {
                        PathBuf::from(b)
                    }
                });
                self.tb.lock().expect("not poisoned").restart_as(
                    node,
                    bin,
                    env.iter().cloned().collect(),
                )?;
                self.last_fault.insert(node.clone(), t0);
                self.refresh_live();
                format!("{node} restarted on the new build")
            }
            Step::Add => {
                let name = {
                    let mut tb = self.tb.lock().expect("not poisoned");
                    let i = tb.add_with(self.add_flags.clone())?;
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
            Step::OneWay(a, b) => {
                self.tb.lock().expect("not poisoned").cut(a, b, false)?;
                String::new()
            }
            Step::Readdress(n) => {
                self.tb.lock().expect("not poisoned").readdress(n)?;
                self.last_fault.insert(n.clone(), t0);
                self.refresh_live();
                let tb = self.tb.lock().expect("not poisoned");
                let i = tb.state.index_of(n)?;
                format!("{n} restarted at {}", tb.state.peers[i].addr)
            }
            Step::ExpectAddress(n, limit) => self.expect_address(n, *limit)?,
            Step::ExpectNobodyDead(d) => self.expect_nobody_dead(*d)?,
            Step::Link(n, up) => {
                self.tb.lock().expect("not poisoned").link(n, *up)?;
                self.last_fault.insert(n.clone(), t0);
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
            Step::Skew(n, ms) => {
                self.tb.lock().expect("not poisoned").skew(n, *ms)?;
                String::new()
            }
            Step::Disk(n, full) => {
                self.tb.lock().expect("not poisoned").full_disk(n, *full)?;
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
            Step::ExpectWireVersion(v, limit) => self.expect_wire_version(*v, *limit)?,
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
}
