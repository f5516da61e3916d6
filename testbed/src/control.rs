//! A testbed cluster in a directory: `up`, `down`, `status`, and the
//! faults (kill, stop, cont, leave, restart, add, partition, heal, loss,
//! delay), each acting on real `ringkv node` processes and recording what
//! it did in the state file ([`crate::state`]). The peers are detached, so
//! every command is a separate invocation that reads the state file, acts,
//! and writes it back. IO: processes, files, HTTP.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::faults::{self, FaultSettings};
use crate::netns::{self, KernelFaults, Net};
use crate::procs::{self, ProcState};
use crate::state::{PeerState, State};
use crate::watch;

/// How long a peer may take to print its addresses after a start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a peer may take to leave after SIGTERM before SIGKILL (the
/// daemon waits at most 5 s for its leave to spread).
const TERM_GRACE: Duration = Duration::from_secs(10);
/// How long a peer asked to leave gracefully may take: it first hands its
/// ranges to the others (see docs/handoff.md), which takes longer than a
/// plain exit.
const LEAVE_GRACE: Duration = Duration::from_secs(90);

/// The hidden flag that arms a peer's fault switch.
pub const FAULT_FLAG: &str = "--testbed-faults";

/// A testbed cluster: its directory and its state.
#[derive(Debug)]
pub struct Testbed {
    /// The cluster directory.
    pub dir: PathBuf,
    /// The state file's content.
    pub state: State,
}

/// Whether `bin` accepts the fault switch flag: `ringkv node
/// --testbed-faults --help` succeeds only if the flag is known.
pub fn supports_fault_switch(bin: &Path) -> bool {
    std::process::Command::new(bin)
        .args(["node", FAULT_FLAG, "--help"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Testbed {
    /// Opens the cluster in `dir`.
    ///
    /// # Errors
    /// No state file there, or a corrupt one.
    pub fn open(dir: &Path) -> Result<Self> {
        let state = State::load(dir)?;
        crate::http::set_token(state.admin_token.clone());
        Ok(Self {
            dir: dir.to_path_buf(),
            state,
        })
    }

    /// Writes the state file.
    ///
    /// # Errors
    /// The directory is not writable.
    pub fn save(&self) -> Result<()> {
        self.state.save(&self.dir)
    }

    /// Starts `nodes` peers in `dir` (the first creates the cluster, the
    /// others join it) and waits until they have converged.
    ///
    /// # Errors
    /// A cluster is already running there, a peer does not start, or the
    /// peers do not converge within `converge_limit`.
    pub fn up(
        dir: &Path,
        bin: &Path,
        nodes: usize,
        node_flags: Vec<String>,
        converge_limit: Duration,
        netns: bool,
    ) -> Result<(Self, Duration)> {
        if nodes == 0 {
            bail!("a cluster needs at least one peer");
        }
        if netns && nodes > netns::MAX_PEERS {
            bail!(
                "the multi-host mode holds at most {} peers",
                netns::MAX_PEERS
            );
        }
        check_node_flags(&node_flags)?;
        if netns {
            if let Some(why) = netns::unavailable() {
                bail!("{why}");
            }
        }
        if State::path(dir).exists() {
            let old = Self::open(dir)?;
            let running = old.still_running();
            if !running.is_empty() {
                bail!(
                    "a testbed is already running in {} (peers {}); stop it with `ringkv testbed down --dir {}`",
                    dir.display(),
                    running.join(", "),
                    dir.display()
                );
            }
            // A stopped cluster's leftovers: only what the testbed made.
            for p in &old.state.peers {
                let _ = std::fs::remove_dir_all(&p.data);
                let _ = std::fs::remove_file(&p.log);
            }
            if let Some(net) = old.state.netns {
                netns::Host::remove(net, &old.state.netns_owner)?;
            }
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let bin = bin.canonicalize().unwrap_or_else(|_| bin.to_path_buf());
        let fault_switch = supports_fault_switch(&bin);
        let mut tb = Self {
            dir: dir.canonicalize()?,
            state: State::new(bin, node_flags, fault_switch),
        };
        crate::http::set_token(None);
        if netns {
            tb.make_network()?;
        }
        let started = Instant::now();
        for _ in 0..nodes {
            if let Err(e) = tb.add() {
                let _ = tb.down();
                return Err(e);
            }
        }
        let converged = watch::wait_converged(&watch::targets(&tb.state), converge_limit);
        if let Err(e) = converged {
            bail!(
                "{e}; the peers are still running: see `ringkv testbed status --dir {}` and the logs there",
                tb.dir.display()
            );
        }
        Ok((tb, started.elapsed()))
    }

    /// The multi-host mode's network and admin token, recorded in the
    /// state file before any of it exists so that `down` finds it after a
    /// crash.
    fn make_network(&mut self) -> Result<()> {
        let token: String = rand::random::<[u8; 32]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let token_file = self.token_file();
        crate::state::write_private(&token_file, format!("{token}\n").as_bytes())
            .with_context(|| format!("cannot write {}", token_file.display()))?;
        let hint = self
            .dir
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .fold(0u8, |h, b| h.wrapping_mul(31).wrapping_add(*b));
        let owner: String = rand::random::<[u8; 8]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.state.netns_owner.clone_from(&owner);
        self.state.admin_token = Some(token);
        crate::http::set_token(self.state.admin_token.clone());
        self.state.neighbour_limits = netns::raise_neighbour_limits()?;
        let created = netns::Host::create(hint, &owner, |net| {
            self.state.netns = Some(net);
            self.save()
        });
        if let Err(e) = created {
            self.state.netns = None;
            let _ = self.save();
            return Err(e);
        }
        Ok(())
    }

    fn token_file(&self) -> PathBuf {
        self.dir.join("admin.token")
    }

    /// Peer `i`'s number in the multi-host mode's layout.
    fn number(&self, i: usize) -> Result<usize> {
        let name = &self.state.peers[i].name;
        netns::peer_number(name).with_context(|| {
            format!(
                "{name} has no place on the testbed bridge (p1 to p{})",
                netns::MAX_PEERS
            )
        })
    }

    /// Numbers of the peers at their second address.
    fn moved_numbers(&self) -> Vec<usize> {
        self.state
            .peers
            .iter()
            .filter(|p| p.moved)
            .filter_map(|p| netns::peer_number(&p.name))
            .collect()
    }

    /// Starts a stopped peer again at its other address (multi-host
    /// mode): same data dir, so same identity, and every hosts file now
    /// names it there, as a pod that comes back with a new IP.
    ///
    /// # Errors
    /// Unknown peer, it still runs, not the multi-host mode, or it does
    /// not start.
    pub fn readdress(&mut self, name: &str) -> Result<()> {
        let net = self.require_netns("readdress")?;
        let i = self.require(name, &[ProcState::Gone], "readdress")?;
        let n = self.number(i)?;
        let to_moved = !self.state.peers[i].moved;
        self.state.peers[i].moved = to_moved;
        let peers: Vec<usize> = self
            .state
            .peers
            .iter()
            .filter_map(|p| netns::peer_number(&p.name))
            .collect();
        let moved = self.moved_numbers();
        if let Err(e) = netns::Host::readdress(net, n, to_moved, &peers, &moved) {
            self.state.peers[i].moved = !to_moved;
            return Err(e);
        }
        let p = &mut self.state.peers[i];
        (p.addr, p.admin) = (net.quic(n, to_moved), net.admin(n, to_moved));
        self.save()?;
        self.restart(name)
    }

    fn require_netns(&self, what: &str) -> Result<Net> {
        self.state.netns.with_context(|| {
            format!("{what} needs the multi-host mode: start the cluster with `ringkv testbed up --netns` (or run the scenario with --netns)")
        })
    }

    /// Names of the peers whose processes still exist (running or
    /// stopped).
    pub fn still_running(&self) -> Vec<String> {
        (0..self.state.peers.len())
            .filter(|&i| self.process(i) != ProcState::Gone)
            .map(|i| self.state.peers[i].name.clone())
            .collect()
    }

    fn start_args(&self, p: &PeerState, listen: &str, admin: &str) -> Vec<String> {
        let mut args = vec![
            "node".to_owned(),
            "--data".to_owned(),
            p.data.display().to_string(),
            "--listen".to_owned(),
            listen.to_owned(),
            "--admin".to_owned(),
            admin.to_owned(),
            "--name".to_owned(),
            p.name.clone(),
            "--ready-file".to_owned(),
            crate::ready::path_for(&p.data).display().to_string(),
        ];
        if self.state.fault_switch {
            args.push(FAULT_FLAG.to_owned());
        }
        if self.state.netns.is_some() {
            args.extend([
                "--admin-token-file".to_owned(),
                self.token_file().display().to_string(),
            ]);
        }
        let seed = self
            .state
            .peers
            .iter()
            .find(|q| q.name != p.name && procs::state(q.pid, &q.data) == ProcState::Running);
        if let Some(seed) = seed {
            // In the multi-host mode, by name: each namespace resolves
            // it through its own hosts file.
            let at = match self.state.netns {
                Some(_) => format!("{}.{}:{}", seed.name, netns::DOMAIN, netns::QUIC_PORT),
                None => seed.addr.to_string(),
            };
            args.extend([
                "--join".to_owned(),
                at,
                "--cluster-key-file".to_owned(),
                seed.data.join("cluster.key").display().to_string(),
            ]);
        }
        args.extend(self.state.node_flags.iter().cloned());
        args.extend(p.extra_flags.iter().cloned());
        args
    }

    /// Starts peer `i`'s process and waits for its addresses.
    fn start(&mut self, i: usize, listen: &str, admin: &str) -> Result<()> {
        let args = self.start_args(&self.state.peers[i], listen, admin);
        let p = &self.state.peers[i];
        let ready_path = crate::ready::path_for(&p.data);
        let _ = std::fs::remove_file(&ready_path);
        let bin = p.bin.as_ref().unwrap_or(&self.state.bin);
        let (pid, offset, exited) = match self.state.netns {
            // `ip netns exec` enters the namespace, mounts its hosts file
            // and execs the peer: the pid is the peer's.
            Some(net) => {
                let mut full = net.exec_prefix(self.number(i)?);
                full.push(bin.display().to_string());
                full.extend(args);
                procs::spawn_detached(Path::new("ip"), &full, &p.env, &p.log)?
            }
            None => procs::spawn_detached(bin, &args, &p.env, &p.log)?,
        };
        let gone = || exited.load(std::sync::atomic::Ordering::Relaxed);
        match crate::ready::wait(&ready_path, pid, START_TIMEOUT, gone) {
            Ok(ready) => {
                let admin = ready.admin.context("the peer serves no admin HTTP")?;
                let p = &mut self.state.peers[i];
                (p.pid, p.addr, p.admin, p.stopped_by_testbed) = (pid, ready.quic, admin, None);
                Ok(())
            }
            Err(e) => {
                let _ = procs::signal(pid, libc::SIGKILL);
                let text = procs::log_since(&p.log, offset);
                Err(e).with_context(|| {
                    format!(
                        "peer {} did not start; the end of {}:\n{}",
                        p.name,
                        p.log.display(),
                        procs::tail(&text, 15)
                    )
                })
            }
        }
    }

    /// Starts one more peer, joining the cluster; its index.
    ///
    /// # Errors
    /// It does not start.
    pub fn add(&mut self) -> Result<usize> {
        self.add_with(Vec::new())
    }

    /// Starts one more peer with `flags` of its own (after the cluster's).
    ///
    /// # Errors
    /// Bad flags, or the peer does not start.
    pub fn add_with(&mut self, flags: Vec<String>) -> Result<usize> {
        check_node_flags(&flags)?;
        let name = self.state.next_name();
        let unspecified: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        self.state.peers.push(PeerState {
            data: self.dir.join(&name),
            log: self.dir.join(format!("{name}.log")),
            name,
            pid: 0,
            addr: unspecified,
            admin: unspecified,
            faults: FaultSettings::default(),
            stopped_by_testbed: None,
            extra_flags: flags,
            bin: None,
            env: std::collections::BTreeMap::new(),
            kernel: KernelFaults::default(),
            moved: false,
        });
        let i = self.state.peers.len() - 1;
        let (listen, admin) = match self.state.netns {
            Some(net) => {
                let moved = self.moved_numbers();
                let placed = self.number(i).and_then(|n| {
                    netns::Host::add_peer(net, n, &moved)?;
                    Ok((
                        net.quic(n, false).to_string(),
                        net.admin(n, false).to_string(),
                    ))
                });
                match placed {
                    Ok(at) => at,
                    Err(e) => {
                        self.state.peers.pop();
                        return Err(e);
                    }
                }
            }
            None => ("127.0.0.1:0".to_owned(), "127.0.0.1:0".to_owned()),
        };
        if let Err(e) = self.start(i, &listen, &admin) {
            self.state.peers.pop();
            return Err(e);
        }
        if self.state.cluster_key.is_empty() {
            let path = self.state.peers[i].data.join("cluster.key");
            self.state.cluster_key = std::fs::read_to_string(&path)
                .with_context(|| format!("the first peer wrote no {}", path.display()))?
                .trim()
                .to_owned();
        }
        self.save()?;
        Ok(i)
    }

    /// The process state of peer `i`.
    pub fn process(&self, i: usize) -> ProcState {
        let p = &self.state.peers[i];
        procs::state(p.pid, &p.data)
    }

    fn require(&self, name: &str, want: &[ProcState], action: &str) -> Result<usize> {
        let i = self.state.index_of(name)?;
        let now = self.process(i);
        if !want.contains(&now) {
            bail!("cannot {action} {name}: its process is {}", now.word());
        }
        Ok(i)
    }

    /// SIGKILL.
    ///
    /// # Errors
    /// Unknown peer, or it is not running.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        let i = self.require(name, &[ProcState::Running, ProcState::Stopped], "kill")?;
        let p = &self.state.peers[i];
        procs::signal(p.pid, libc::SIGKILL)?;
        if !procs::wait_gone(p.pid, &p.data, Duration::from_secs(5)) {
            bail!("{name} survived SIGKILL for 5 s");
        }
        self.state.peers[i].stopped_by_testbed = Some("killed".into());
        self.save()
    }

    /// SIGKILL to every peer in `names` at once (a power loss): all are
    /// signalled before any is waited for, so none of them notices
    /// another's death (no hint is written, nothing is flushed for it).
    ///
    /// # Errors
    /// An unknown peer or one not running (then none is killed), or one
    /// that survives SIGKILL.
    pub fn kill_all(&mut self, names: &[String]) -> Result<()> {
        let mut at = Vec::new();
        for name in names {
            at.push(self.require(name, &[ProcState::Running, ProcState::Stopped], "kill")?);
        }
        for &i in &at {
            procs::signal(self.state.peers[i].pid, libc::SIGKILL)?;
        }
        for (&i, name) in at.iter().zip(names) {
            let p = &self.state.peers[i];
            if !procs::wait_gone(p.pid, &p.data, Duration::from_secs(5)) {
                bail!("{name} survived SIGKILL for 5 s");
            }
            self.state.peers[i].stopped_by_testbed = Some("killed".into());
        }
        self.save()
    }

    /// SIGSTOP: the peer freezes (a long GC pause, a hung VM).
    ///
    /// # Errors
    /// Unknown peer, or it is not running.
    pub fn stop(&mut self, name: &str) -> Result<()> {
        let i = self.require(name, &[ProcState::Running], "stop")?;
        procs::signal(self.state.peers[i].pid, libc::SIGSTOP)
    }

    /// SIGCONT.
    ///
    /// # Errors
    /// Unknown peer, or it is not stopped.
    pub fn cont(&mut self, name: &str) -> Result<()> {
        let i = self.require(name, &[ProcState::Stopped], "continue")?;
        procs::signal(self.state.peers[i].pid, libc::SIGCONT)
    }

    /// SIGTERM: the peer leaves gracefully; waits until it has exited
    /// (SIGKILL after a bound).
    ///
    /// # Errors
    /// Unknown peer, or it is not running.
    pub fn leave(&mut self, name: &str) -> Result<()> {
        let i = self.require(name, &[ProcState::Running, ProcState::Stopped], "leave")?;
        let p = &self.state.peers[i];
        let forced = procs::terminate(p.pid, &p.data, LEAVE_GRACE)?;
        if forced {
            eprintln!(
                "{name} did not exit within {} s of SIGTERM; killed",
                LEAVE_GRACE.as_secs()
            );
        }
        self.state.peers[i].stopped_by_testbed = Some("left".into());
        self.save()
    }

    /// Starts a peer that is not running again, from its data dir, on its
    /// old addresses if it can, with the same flags. Its fault settings are
    /// sent again.
    ///
    /// Either old port may have been taken meanwhile (the kernel hands out
    /// ephemeral ports again): first the admin port falls back to a new
    /// one, then the QUIC port too. The peer's identity is in its data dir
    /// and it joins through a running peer, so a new QUIC address is only
    /// news for the others; the state file records the new addresses. A
    /// peer whose fault settings name the old address must be given them
    /// again.
    ///
    /// # Errors
    /// Unknown peer, it still runs, or it does not start on any of these.
    pub fn restart(&mut self, name: &str) -> Result<()> {
        self.restart_as(name, None, std::collections::BTreeMap::new())
    }

    /// [`Self::restart`], first switching the peer to binary `bin` (when
    /// given) and adding `env` to its environment (kept for later
    /// restarts): one peer's step of a rolling upgrade.
    ///
    /// # Errors
    /// As [`Self::restart`].
    pub fn restart_as(
        &mut self,
        name: &str,
        bin: Option<PathBuf>,
        env: std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let i = self.require(name, &[ProcState::Gone], "restart")?;
        if bin.is_some() {
            self.state.peers[i].bin = bin;
        }
        self.state.peers[i].env.extend(env);
        let (addr, admin) = (
            self.state.peers[i].addr.to_string(),
            self.state.peers[i].admin.to_string(),
        );
        let any = "127.0.0.1:0";
        if self.state.netns.is_some() {
            // Its own address on the bridge: nobody else can take it.
            self.start(i, &addr, &admin)?;
        } else if self.start(i, &addr, &admin).is_err() && self.start(i, &addr, any).is_err() {
            self.start(i, any, any)?;
        }
        self.save()?;
        let p = &self.state.peers[i];
        if !p.faults.is_healed() {
            faults::send(&p.name, p.admin, &p.faults)?;
        }
        Ok(())
    }

    /// Stops every peer (SIGTERM, SIGKILL after a bound); the names and how
    /// each went.
    ///
    /// # Errors
    /// A peer survived SIGKILL.
    pub fn down(&mut self) -> Result<Vec<(String, &'static str)>> {
        let mut out = Vec::new();
        let was_up: Vec<bool> = (0..self.state.peers.len())
            .map(|i| self.process(i) != ProcState::Gone)
            .collect();
        // Signal everyone first so they leave in parallel, then wait.
        for (p, up) in self.state.peers.iter().zip(&was_up) {
            if *up {
                let _ = procs::signal(p.pid, libc::SIGCONT);
                let _ = procs::signal(p.pid, libc::SIGTERM);
            }
        }
        for (p, up) in self.state.peers.iter().zip(&was_up) {
            let how = if !up {
                "not running"
            } else if procs::terminate(p.pid, &p.data, TERM_GRACE)? {
                "killed after SIGTERM timed out"
            } else {
                "stopped"
            };
            out.push((p.name.clone(), how));
        }
        for p in &mut self.state.peers {
            p.stopped_by_testbed.get_or_insert_with(|| "down".into());
        }
        self.save()?;
        if let Some(net) = self.state.netns {
            let how = if netns::Host::remove(net, &self.state.netns_owner)? {
                "removed"
            } else {
                "left alone: another testbed's now"
            };
            out.push((format!("network {}", net.cidr()), how));
        }
        if let Some(old) = self.state.neighbour_limits.take() {
            netns::restore_neighbour_limits(old);
            self.save()?;
        }
        Ok(out)
    }

    fn require_switch(&self) -> Result<()> {
        if !self.state.fault_switch {
            bail!(
                "this cluster's peers run without the fault switch: {} does not accept {FAULT_FLAG}",
                self.state.bin.display()
            );
        }
        Ok(())
    }

    fn set_faults(&mut self, i: usize, settings: FaultSettings) -> Result<()> {
        let p = &self.state.peers[i];
        if procs::state(p.pid, &p.data) == ProcState::Running {
            faults::send(&p.name, p.admin, &settings)?;
        }
        // A peer that is down gets its settings when it restarts.
        self.state.peers[i].faults = settings;
        Ok(())
    }

    /// Cuts the peers named in `a` off from those in `b`, both ways.
    ///
    /// # Errors
    /// Unknown peers, no fault switch, or a peer refuses.
    pub fn partition(&mut self, a: &[String], b: &[String]) -> Result<()> {
        if self.state.netns.is_some() {
            return self.cut(a, b, true);
        }
        self.require_switch()?;
        let ia = a
            .iter()
            .map(|n| self.state.index_of(n))
            .collect::<Result<Vec<_>>>()?;
        let ib = b
            .iter()
            .map(|n| self.state.index_of(n))
            .collect::<Result<Vec<_>>>()?;
        for (mine, theirs) in [(&ia, &ib), (&ib, &ia)] {
            let drop: Vec<SocketAddr> = theirs.iter().map(|&j| self.state.peers[j].addr).collect();
            for &i in mine.iter() {
                let mut s = self.state.peers[i].faults.clone();
                s.drop = drop.clone();
                self.set_faults(i, s)?;
            }
        }
        self.save()
    }

    /// Drops, in the kernel, the packets the peers in `from` send to
    /// those in `to`; with `both_ways`, those back too (multi-host mode).
    ///
    /// # Errors
    /// Unknown peers, not the multi-host mode, or iptables fails.
    pub fn cut(&mut self, from: &[String], to: &[String], both_ways: bool) -> Result<()> {
        self.require_netns(if both_ways {
            "a kernel partition"
        } else {
            "a one-way partition"
        })?;
        // By the addresses they are at now: rules name addresses, as a
        // firewall does, so a peer moved later escapes them.
        let ips = |names: &[String]| -> Result<Vec<(usize, std::net::Ipv4Addr)>> {
            names
                .iter()
                .map(|n| {
                    let i = self.state.index_of(n)?;
                    match self.state.peers[i].addr.ip() {
                        std::net::IpAddr::V4(ip) => Ok((i, ip)),
                        std::net::IpAddr::V6(ip) => bail!("{n} is at {ip}, not on the bridge"),
                    }
                })
                .collect()
        };
        let (from, to) = (ips(from)?, ips(to)?);
        let add = |list: &mut Vec<std::net::Ipv4Addr>, more: &[(usize, std::net::Ipv4Addr)]| {
            for (_, ip) in more {
                if !list.contains(ip) {
                    list.push(*ip);
                }
            }
        };
        for &(i, _) in &from {
            let mut k = self.state.peers[i].kernel.clone();
            add(&mut k.drop_out, &to);
            if both_ways {
                add(&mut k.drop_in, &to);
            }
            self.set_kernel(i, k)?;
        }
        if both_ways {
            for &(i, _) in &to {
                let mut k = self.state.peers[i].kernel.clone();
                add(&mut k.drop_out, &from);
                add(&mut k.drop_in, &from);
                self.set_kernel(i, k)?;
            }
        }
        self.save()
    }

    fn set_kernel(&mut self, i: usize, faults: KernelFaults) -> Result<()> {
        let net = self.require_netns("a kernel fault")?;
        netns::Host::apply(net, self.number(i)?, &faults)?;
        self.state.peers[i].kernel = faults;
        Ok(())
    }

    /// Takes a peer's link to the bridge down or brings it back up
    /// (multi-host mode): its cable pulled, for everyone including the
    /// testbed.
    ///
    /// # Errors
    /// Unknown peer, not the multi-host mode, or `ip` fails.
    pub fn link(&mut self, name: &str, up: bool) -> Result<()> {
        self.require_netns("link down")?;
        let i = self.state.index_of(name)?;
        let mut k = self.state.peers[i].kernel.clone();
        k.link_down = !up;
        self.set_kernel(i, k)?;
        self.save()
    }

    /// Heals every fault on every peer (`{}`), and in the multi-host mode
    /// every kernel fault too.
    ///
    /// # Errors
    /// No fault switch, or a running peer refuses.
    pub fn heal(&mut self) -> Result<()> {
        if self.state.netns.is_some() {
            for i in 0..self.state.peers.len() {
                self.set_kernel(i, KernelFaults::default())?;
            }
        }
        if self.state.fault_switch {
            for i in 0..self.state.peers.len() {
                self.set_faults(i, FaultSettings::default())?;
            }
        } else if self.state.netns.is_none() {
            self.require_switch()?;
        }
        self.save()
    }

    /// Sets the loss fraction of one peer, keeping its other settings.
    ///
    /// # Errors
    /// Unknown peer, no fault switch, or it refuses.
    pub fn loss(&mut self, name: &str, loss: f64) -> Result<()> {
        let i = self.state.index_of(name)?;
        if self.state.netns.is_some() {
            let mut k = self.state.peers[i].kernel.clone();
            k.loss = (loss > 0.0).then_some(loss);
            self.set_kernel(i, k)?;
            return self.save();
        }
        self.require_switch()?;
        let mut s = self.state.peers[i].faults.clone();
        s.loss = (loss > 0.0).then_some(loss);
        self.set_faults(i, s)?;
        self.save()
    }

    /// Sets the outgoing delay of one peer, keeping its other settings.
    ///
    /// # Errors
    /// Unknown peer, no fault switch, or it refuses.
    pub fn delay(&mut self, name: &str, delay_ms: u64) -> Result<()> {
        self.require_switch()?;
        let i = self.state.index_of(name)?;
        let mut s = self.state.peers[i].faults.clone();
        s.delay_ms = (delay_ms > 0).then_some(delay_ms);
        self.set_faults(i, s)?;
        self.save()
    }

    /// Sets the wall-clock offset of one peer, keeping its other settings.
    ///
    /// # Errors
    /// Unknown peer, no fault switch, or it refuses.
    pub fn skew(&mut self, name: &str, offset_ms: i64) -> Result<()> {
        self.require_switch()?;
        let i = self.state.index_of(name)?;
        let mut s = self.state.peers[i].faults.clone();
        s.clock_offset_ms = (offset_ms != 0).then_some(offset_ms);
        self.set_faults(i, s)?;
        self.save()
    }

    /// Makes one peer's data dir read as full (or not), keeping its other
    /// settings.
    ///
    /// # Errors
    /// Unknown peer, no fault switch, or it refuses.
    pub fn full_disk(&mut self, name: &str, full: bool) -> Result<()> {
        self.require_switch()?;
        let i = self.state.index_of(name)?;
        let mut s = self.state.peers[i].faults.clone();
        s.full_disk = full;
        self.set_faults(i, s)?;
        self.save()
    }

    /// QUIC addresses of the running peers.
    pub fn running_addrs(&self) -> Vec<SocketAddr> {
        (0..self.state.peers.len())
            .filter(|&i| self.process(i) == ProcState::Running)
            .map(|i| self.state.peers[i].addr)
            .collect()
    }

    /// The peer table, with each running peer's own view from its admin
    /// HTTP when `live` is set.
    pub fn table(&self, live: bool) -> String {
        let snap = live.then(|| watch::observe(&watch::targets(&self.state)));
        let mut rows =
            vec![["name", "pid", "quic", "admin", "process", "view", "faults"].map(str::to_owned)];
        for (i, p) in self.state.peers.iter().enumerate() {
            let process = self.process(i);
            let mut word = process.word().to_owned();
            if let (ProcState::Gone, Some(why)) = (process, &p.stopped_by_testbed) {
                word = format!("gone ({why})");
            }
            let view = snap.as_ref().and_then(|s| s.peers.get(i)).map_or_else(
                || "-".into(),
                |o| match &o.view {
                    Some(v) => {
                        let alive = v.states.values().filter(|s| *s == "alive").count();
                        format!(
                            "{alive}/{} alive, ring {}",
                            v.states.len(),
                            v.ring_digest.as_deref().map_or("-", watch::short)
                        )
                    }
                    None if process == ProcState::Running => "no answer".into(),
                    None => "-".into(),
                },
            );
            rows.push([
                p.name.clone(),
                p.pid.to_string(),
                p.addr.to_string(),
                p.admin.to_string(),
                word,
                view,
                match (p.kernel.describe(), p.faults.is_healed()) {
                    (Some(k), true) => k,
                    (Some(k), false) => format!("{k}, {}", p.faults.describe()),
                    (None, _) => p.faults.describe(),
                },
            ]);
        }
        let mut out = render_rows(&rows);
        if let Some(s) = snap {
            let _ = writeln!(
                out,
                "{}",
                s.disagreement()
                    .map_or_else(|| "converged".into(), |w| format!("not converged: {w}"))
            );
        }
        out
    }
}

/// Flags the testbed sets itself for every peer.
const OWN_FLAGS: [&str; 9] = [
    "--data",
    "--ready-file",
    "--listen",
    "--admin",
    "--name",
    "--join",
    "--cluster-key",
    "--cluster-key-file",
    FAULT_FLAG,
];

/// Refuses node flags the testbed sets itself.
///
/// # Errors
/// One of [`OWN_FLAGS`], alone or as `--flag=value`.
pub fn check_node_flags(flags: &[String]) -> Result<()> {
    for f in flags {
        let name = f.split('=').next().unwrap_or(f);
        if OWN_FLAGS.contains(&name) {
            bail!("{name} is set by the testbed for each peer; leave it out of the node flags");
        }
        if name == "--admin-token-file" {
            bail!("--admin-token-file: the testbed sets its peers' admin access itself (on 127.0.0.1 without a token, or with its own token with --netns); leave it out of the node flags");
        }
    }
    Ok(())
}

/// Aligned columns.
pub fn render_rows<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, w) in r.iter().zip(widths) {
            let _ = write!(line, "{c:w$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_flags_the_testbed_sets_are_refused() {
        let flags = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(check_node_flags(&flags(&["--dead-grace", "0s"])).is_ok());
        let err = check_node_flags(&flags(&["--listen=127.0.0.1:1"])).unwrap_err();
        assert!(
            err.to_string().contains("--listen is set by the testbed"),
            "{err}"
        );
        assert!(check_node_flags(&flags(&["--data", "/x"])).is_err());
        let err = check_node_flags(&flags(&["--admin-token-file=/t"])).unwrap_err();
        assert!(err.to_string().contains("without a token"), "{err}");
    }

    #[test]
    fn peers_are_started_with_a_ready_file_beside_their_data() {
        let tb = Testbed {
            dir: PathBuf::from("/tmp/tb"),
            state: State::new(PathBuf::from("/bin/ringkv"), Vec::new(), false),
        };
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let p = PeerState {
            name: "p1".to_owned(),
            pid: 0,
            addr,
            admin: addr,
            data: PathBuf::from("/tmp/tb/p1"),
            log: PathBuf::from("/tmp/tb/p1.log"),
            faults: FaultSettings::default(),
            stopped_by_testbed: None,
            extra_flags: Vec::new(),
            bin: None,
            env: std::collections::BTreeMap::new(),
            kernel: KernelFaults::default(),
            moved: false,
        };
        let args = tb.start_args(&p, "127.0.0.1:0", "127.0.0.1:0");
        let at = args
            .iter()
            .position(|a| a == "--ready-file")
            .expect("--ready-file");
        assert_eq!(args[at + 1], "/tmp/tb/p1.ready");
        let own = check_node_flags(&["--ready-file=/x".to_owned()]).unwrap_err();
        assert!(own.to_string().contains("set by the testbed"), "{own}");
    }

    #[test]
    fn rows_align() {
        let t = render_rows(&[
            ["a".to_owned(), "bb".to_owned()],
            ["ccc".to_owned(), "d".to_owned()],
        ]);
        assert_eq!(t, "a    bb\nccc  d\n");
    }
}
