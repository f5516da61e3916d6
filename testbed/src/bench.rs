//! `ringkv testbed bench-membership`: real peers on this machine, kill -9
//! one at a time, and how long until every live peer marks it dead and all
//! rings agree again; idle CPU and memory per peer; and, optionally, a soak
//! of idle peers checked for false positives. The peers are a testbed
//! cluster ([`crate::control`]), on loopback or, with `--netns`, each in
//! a network namespace of its own ([`crate::netns`]).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde_json::Value;

use crate::control::Testbed;
use crate::procs::{proc_usage, ProcState};

/// Arguments of `ringkv testbed bench-membership`.
#[derive(Debug, Args)]
pub struct BenchMembershipArgs {
    /// Peers to start (at most 64 on loopback, 120 with --netns).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(3..=120))]
    pub nodes: u64,
    /// Peers to kill -9, one at a time (each restarted before the next).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub kills: u64,
    /// Seconds of idle CPU and memory measurement.
    #[arg(long, default_value_t = 30)]
    pub idle: u64,
    /// Seconds of idle soak afterwards, watching for false positives.
    #[arg(long, default_value_t = 0)]
    pub soak: u64,
    /// The peers' --dead-grace: how long a dead peer stays in the ring.
    #[arg(long, default_value = "0s")]
    pub dead_grace: String,
    /// Directory for the peers' data and logs (default: a temporary one).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Each peer in a network namespace of its own (the multi-host mode;
    /// needs root, iproute2 and iptables).
    #[arg(long)]
    pub netns: bool,
}

/// The bench's cluster: a testbed cluster, stopped (and its network
/// removed) when dropped.
struct Cluster(Testbed);

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.0.down();
    }
}

impl Cluster {
    fn running(&self) -> Vec<usize> {
        (0..self.0.state.peers.len())
            .filter(|&i| self.0.process(i) == ProcState::Running)
            .collect()
    }

    fn members(&self, i: usize) -> Option<Value> {
        let body = crate::http::get(self.0.state.peers[i].admin, "/v1/members").ok()?;
        serde_json::from_str(&body).ok()
    }

    fn pid(&self, i: usize) -> Option<u32> {
        (self.0.process(i) == ProcState::Running).then(|| self.0.state.peers[i].pid)
    }

    fn name(&self, i: usize) -> String {
        self.0.state.peers[i].name.clone()
    }
}

fn state_of(view: &Value, name: &str) -> Option<String> {
    view["members"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
        .and_then(|m| m["state"].as_str().map(str::to_owned))
}

/// Polls until `check` holds for the cluster, at most `limit`.
fn poll(
    cluster: &Cluster,
    limit: Duration,
    mut check: impl FnMut(&Cluster) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check(cluster) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

/// All running peers list exactly the running peers alive, with one ring.
fn converged(c: &Cluster) -> bool {
    let running = c.running();
    let mut digest: Option<Value> = None;
    for &i in &running {
        let Some(v) = c.members(i) else { return false };
        let alive = v["members"]
            .as_array()
            .map_or(0, |ms| ms.iter().filter(|m| m["state"] == "alive").count());
        if alive != running.len() || v["ring_digest"].is_null() {
            return false;
        }
        match &digest {
            None => digest = Some(v["ring_digest"].clone()),
            Some(d) if *d != v["ring_digest"] => return false,
            Some(_) => {}
        }
    }
    true
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Runs the benchmark and returns its report.
pub fn bench_membership(args: &BenchMembershipArgs) -> Result<String> {
    let bin = std::env::current_exe().context("cannot find the ringkv binary")?;
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let n = usize::try_from(args.nodes)?;
    if n > 64 && !args.netns {
        bail!("--nodes {n}: at most 64 on loopback; --netns holds up to 120");
    }
    let extra = vec!["--dead-grace".to_owned(), args.dead_grace.clone()];
    let mut out = String::new();
    let started = Instant::now();
    let up = Testbed::up(
        &dir.join("cluster"),
        &bin,
        n,
        extra,
        Duration::from_secs(180),
        args.netns,
    );
    let tb = match up {
        Ok((tb, _)) => tb,
        Err(e) => {
            // `up` leaves peers that did not converge running for a
            // person to look at; the bench stops them (and removes the
            // network) before its directory may go.
            if let Ok(mut tb) = Testbed::open(&dir.join("cluster")) {
                let _ = tb.down();
            }
            return Err(e);
        }
    };
    let mut cluster = Cluster(tb);
    let Some(took) = poll(&cluster, Duration::from_secs(60), converged) else {
        bail!(
            "{n} peers did not converge within 60 s; logs in {}",
            dir.display()
        );
    };
    let _ = writeln!(
        out,
        "{n} peers started and converged in {:.2} s (last join {:.2} s)",
        started.elapsed().as_secs_f64(),
        took.as_secs_f64()
    );

    // Idle CPU and memory.
    let before: Vec<Option<(u64, u64)>> = (0..n)
        .map(|i| cluster.pid(i).and_then(proc_usage))
        .collect();
    std::thread::sleep(Duration::from_secs(args.idle));
    let after: Vec<Option<(u64, u64)>> = (0..n)
        .map(|i| cluster.pid(i).and_then(proc_usage))
        .collect();
    let mut cpu = Vec::new();
    let mut rss = Vec::new();
    for (b, a) in before.iter().zip(&after) {
        if let (Some((t0, _)), Some((t1, r))) = (b, a) {
            // Linux counts CPU time in ticks of 1/100 s.
            cpu.push((t1 - t0) as f64 / (args.idle as f64 * 100.0) * 100.0);
            rss.push(*r as f64 / 1024.0);
        }
    }
    let _ = writeln!(
        out,
        "idle for {} s: CPU per peer mean {:.2}% max {:.2}%; resident memory per peer mean {:.1} MB max {:.1} MB",
        args.idle,
        cpu.iter().sum::<f64>() / cpu.len().max(1) as f64,
        cpu.iter().copied().fold(0.0, f64::max),
        rss.iter().sum::<f64>() / rss.len().max(1) as f64,
        rss.iter().copied().fold(0.0, f64::max)
    );

    // Kills.
    let (mut dead_times, mut ring_times) = (Vec::new(), Vec::new());
    for k in 0..usize::try_from(args.kills)? {
        let victim = 1 + k % (n - 1);
        let name = cluster.name(victim);
        let ring_before = cluster
            .members(0)
            .map(|v| v["ring_digest"].clone())
            .unwrap_or(Value::Null);
        let killed = Instant::now();
        cluster.0.kill(&name)?;
        let dead = poll(&cluster, Duration::from_secs(60), |c| {
            c.running()
                .iter()
                .all(|&i| c.members(i).and_then(|v| state_of(&v, &name)).as_deref() == Some("dead"))
        });
        let ring = poll(&cluster, Duration::from_secs(120), |c| {
            let views: Vec<Option<Value>> = c.running().iter().map(|&i| c.members(i)).collect();
            let digests: Vec<Value> = views
                .iter()
                .map(|v| v.as_ref().map_or(Value::Null, |v| v["ring_digest"].clone()))
                .collect();
            digests.windows(2).all(|w| w[0] == w[1])
                && digests
                    .first()
                    .is_some_and(|d| !d.is_null() && *d != ring_before)
        });
        // Both from the kill (the ring poll starts once all saw it dead).
        let ring = ring.map(|_| killed.elapsed());
        let (d, r) = (dead.map(|d| d.as_secs_f64()), ring.map(|r| r.as_secs_f64()));
        let _ = writeln!(
            out,
            "kill -9 {name}: dead at every live peer after {}, rings agree without it after {}",
            d.map_or_else(|| "never".into(), |s| format!("{s:.2} s")),
            r.map_or_else(|| "never".into(), |s| format!("{s:.2} s"))
        );
        dead_times.extend(d);
        ring_times.extend(r);
        cluster.0.restart(&name)?;
        if poll(&cluster, Duration::from_secs(60), converged).is_none() {
            bail!(
                "the cluster did not converge after restarting {name}; logs in {}",
                dir.display()
            );
        }
    }
    if args.kills > 0 {
        let worst = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
        let _ = writeln!(
            out,
            "over {} kills: dead everywhere median {:.2} s, worst {:.2} s; rings agree median {:.2} s, worst {:.2} s (dead grace {})",
            args.kills,
            median(&mut dead_times.clone()),
            worst(&dead_times),
            median(&mut ring_times.clone()),
            worst(&ring_times),
            args.dead_grace
        );
    }

    // Soak: nobody running may ever be seen dead or suspect.
    if args.soak > 0 {
        let start = Instant::now();
        let mut false_positives = 0u64;
        let mut suspicions = 0u64;
        while start.elapsed() < Duration::from_secs(args.soak) {
            for i in cluster.running() {
                if let Some(v) = cluster.members(i) {
                    for m in v["members"].as_array().into_iter().flatten() {
                        match m["state"].as_str() {
                            Some("dead") => false_positives += 1,
                            Some("suspect") => suspicions += 1,
                            _ => {}
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let refuted: u64 = cluster
            .running()
            .iter()
            .filter_map(|&i| cluster.members(i))
            .flat_map(|v| v["members"].as_array().cloned().unwrap_or_default())
            .filter(|m| m["this_peer"] == true)
            .map(|m| m["incarnation"].as_u64().unwrap_or(0))
            .sum();
        let _ = writeln!(
            out,
            "soak of {} s, {} idle peers: {} dead sightings (false positives), {} suspect sightings; sum of incarnations {} (restarts and refutations raise it)",
            args.soak,
            cluster.running().len(),
            false_positives,
            suspicions,
            refuted
        );
    }
    drop(cluster);
    Ok(out)
}
