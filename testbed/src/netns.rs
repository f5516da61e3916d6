//! The multi-host mode (`--netns`): every peer in a Linux network
//! namespace of its own, with its own address on a bridge the testbed
//! creates and removes, so that peers talk over real, distinct addresses
//! and faults come from the kernel, outside the peer.
//!
//! The layout, for a cluster given subnet `S` (chosen free at `up`):
//!
//! - bridge `rkvS` in the host namespace, address `10.213.S.1/24`: the
//!   testbed itself (its load, its observer) talks to the peers from there;
//! - peer `pN` in namespace `rkvS-pN`, interface `eth0` at
//!   `10.213.S.(10+N)/24` (a veth whose other end, `rkvSpN`, is a port of
//!   the bridge), QUIC on port 7000 and admin HTTP on 7080; `readdress
//!   NODE` moves it to `10.213.S.(130+N)` and back, as a pod comes back
//!   with a new IP;
//! - no default route, no NAT, and `FORWARD` rules (tagged
//!   `ringkv-testbed`) that drop whatever would cross between the bridge
//!   and the host's other interfaces: the /24 exists only there;
//! - `/etc/netns/rkvS-pN/hosts`, which `ip netns exec` mounts over
//!   `/etc/hosts`, names every possible peer `pN.ringkv.test`, so peers
//!   join each other by name;
//! - in each namespace the iptables chains `rkv-in` (from `INPUT`) and
//!   `rkv-out` (from `OUTPUT`) hold the kernel faults: partitions (both
//!   ways or one way, any protocol) and random loss (`-m statistic`),
//!   rewritten whole on every change. Faults act between peers: traffic
//!   to and from the testbed at `.1` is left alone, except `link NODE
//!   down`, which takes the peer's cable out.
//!
//! The plans (which commands, which rules, which files) are pure and
//! tested here; [`Host`] runs them (IO: `ip`, `iptables-restore`,
//! `/etc/netns`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

/// The comment on every host firewall rule the testbed adds.
pub const TAG: &str = "ringkv-testbed";
/// The domain of the peers' names.
pub const DOMAIN: &str = "ringkv.test";
/// Every peer's QUIC port.
pub const QUIC_PORT: u16 = 7000;
/// Every peer's admin HTTP port.
pub const ADMIN_PORT: u16 = 7080;
/// Peers one cluster can hold (`.11` to `.130`, and `.131` to `.250`
/// for the same peers once moved).
pub const MAX_PEERS: usize = 120;
/// The first two octets of every testbed subnet.
const PREFIX: [u8; 2] = [10, 213];
/// The chain of inbound kernel faults in each namespace.
const CHAIN_IN: &str = "rkv-in";
/// The chain of outbound kernel faults in each namespace.
const CHAIN_OUT: &str = "rkv-out";

/// One cluster's network: the third octet of its /24.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Net {
    /// `S` in `10.213.S.0/24`, bridge `rkvS`.
    pub subnet: u8,
}

/// The kernel-made faults of one peer, as recorded in the state file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelFaults {
    /// Peers whose packets to this one are dropped on arrival.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop_in: Vec<Ipv4Addr>,
    /// Peers this one's packets to are dropped on the way out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop_out: Vec<Ipv4Addr>,
    /// Fraction of packets to and from other peers dropped, each way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Whether its link to the bridge is down.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub link_down: bool,
}

impl KernelFaults {
    /// Whether nothing is injected.
    pub fn is_healed(&self) -> bool {
        self.drop_in.is_empty()
            && self.drop_out.is_empty()
            && self.loss.unwrap_or(0.0) == 0.0
            && !self.link_down
    }

    /// A short description for tables, or `None` when healed.
    pub fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.drop_in == self.drop_out && !self.drop_in.is_empty() {
            parts.push(format!("cut from {}", self.drop_in.len()));
        } else {
            if !self.drop_in.is_empty() {
                parts.push(format!("deaf to {}", self.drop_in.len()));
            }
            if !self.drop_out.is_empty() {
                parts.push(format!("mute to {}", self.drop_out.len()));
            }
        }
        if let Some(l) = self.loss.filter(|l| *l > 0.0) {
            parts.push(format!("kernel loss {:.0}%", l * 100.0));
        }
        if self.link_down {
            parts.push("link down".into());
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// One command to run: its argv and what it reads on stdin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Its standard input, if any.
    pub stdin: Option<String>,
}

fn cmd(argv: &[&str]) -> Cmd {
    Cmd {
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        stdin: None,
    }
}

/// The peer number of a testbed name: `p3` is 3.
pub fn peer_number(name: &str) -> Option<usize> {
    let n: usize = name.strip_prefix('p')?.parse().ok()?;
    (1..=MAX_PEERS).contains(&n).then_some(n)
}

impl Net {
    /// The bridge's name.
    pub fn bridge(self) -> String {
        format!("rkv{}", self.subnet)
    }

    /// The /24, as `10.213.S.0/24`.
    pub fn cidr(self) -> String {
        format!("{}.{}.{}.0/24", PREFIX[0], PREFIX[1], self.subnet)
    }

    /// The host's (the testbed's) address on the bridge.
    pub fn host_ip(self) -> Ipv4Addr {
        Ipv4Addr::new(PREFIX[0], PREFIX[1], self.subnet, 1)
    }

    /// Peer `pN`'s first address.
    ///
    /// # Panics
    /// `n` outside `1..=MAX_PEERS`.
    pub fn peer_ip(self, n: usize) -> Ipv4Addr {
        self.peer_ip_at(n, false)
    }

    /// Peer `pN`'s address, first (`.10+N`) or moved (`.130+N`).
    ///
    /// # Panics
    /// `n` outside `1..=MAX_PEERS`.
    pub fn peer_ip_at(self, n: usize, moved: bool) -> Ipv4Addr {
        assert!((1..=MAX_PEERS).contains(&n), "peer number {n}");
        let base = if moved { 10 + MAX_PEERS } else { 10 };
        let last = u8::try_from(base + n).expect("at most 250");
        Ipv4Addr::new(PREFIX[0], PREFIX[1], self.subnet, last)
    }

    /// Peer `pN`'s QUIC address.
    pub fn quic(self, n: usize, moved: bool) -> SocketAddr {
        SocketAddr::from((self.peer_ip_at(n, moved), QUIC_PORT))
    }

    /// Peer `pN`'s admin HTTP address.
    pub fn admin(self, n: usize, moved: bool) -> SocketAddr {
        SocketAddr::from((self.peer_ip_at(n, moved), ADMIN_PORT))
    }

    /// Commands that move peer `pN` from one of its addresses to the
    /// other (its process stopped: nothing listens on the old one).
    pub fn readdress(self, n: usize, to_moved: bool) -> Vec<Cmd> {
        let ns = self.namespace(n);
        let old = format!("{}/24", self.peer_ip_at(n, !to_moved));
        let new = format!("{}/24", self.peer_ip_at(n, to_moved));
        vec![
            cmd(&["ip", "-n", &ns, "addr", "del", &old, "dev", "eth0"]),
            cmd(&["ip", "-n", &ns, "addr", "add", &new, "dev", "eth0"]),
        ]
    }

    /// Peer `pN`'s name in every namespace's hosts file.
    pub fn host_name(n: usize) -> String {
        format!("p{n}.{DOMAIN}")
    }

    /// What every namespace of this cluster starts with.
    pub fn namespace_prefix(self) -> String {
        format!("rkv{}-", self.subnet)
    }

    /// Peer `pN`'s namespace.
    pub fn namespace(self, n: usize) -> String {
        format!("{}p{n}", self.namespace_prefix())
    }

    /// The bridge end of peer `pN`'s veth.
    pub fn host_veth(self, n: usize) -> String {
        format!("rkv{}p{n}", self.subnet)
    }

    /// The `FORWARD` rules that keep the bridge isolated, in the order
    /// they are inserted at the top (so the last ends up first): drop what
    /// would leave or enter the bridge through another interface, accept
    /// what stays on it (which only reaches iptables when the host bridges
    /// through netfilter, and must not meet a `DROP` policy there).
    pub fn forward_rules(self) -> Vec<Vec<String>> {
        let br = self.bridge();
        let tag = ["-m", "comment", "--comment", TAG];
        let rule = |parts: &[&str]| -> Vec<String> {
            parts
                .iter()
                .chain(tag.iter())
                .map(|s| (*s).to_owned())
                .collect()
        };
        vec![
            rule(&["-i", &br, "!", "-o", &br, "-j", "DROP"]),
            rule(&["-o", &br, "!", "-i", &br, "-j", "DROP"]),
            rule(&["-i", &br, "-o", &br, "-j", "ACCEPT"]),
        ]
    }

    /// Commands that bring the bridge up, once `ip link add` has created
    /// it (that step is the allocation: see [`Host::create`]).
    pub fn bridge_up(self) -> Vec<Cmd> {
        let br = self.bridge();
        let addr = format!("{}/24", self.host_ip());
        let mut out = vec![
            cmd(&["ip", "addr", "add", &addr, "dev", &br]),
            cmd(&["ip", "link", "set", &br, "up"]),
        ];
        for r in self.forward_rules() {
            let mut argv = vec!["iptables".to_owned(), "-I".to_owned(), "FORWARD".to_owned()];
            argv.extend(r);
            out.push(Cmd { argv, stdin: None });
        }
        out
    }

    /// Commands that create peer `pN`'s namespace and wire it to the
    /// bridge: an address on its /24 and no route anywhere else.
    pub fn peer_up(self, n: usize) -> Vec<Cmd> {
        let ns = self.namespace(n);
        let host = self.host_veth(n);
        let inner = format!("rkv{}q{n}", self.subnet);
        let addr = format!("{}/24", self.peer_ip(n));
        let br = self.bridge();
        vec![
            cmd(&["ip", "netns", "add", &ns]),
            cmd(&[
                "ip", "link", "add", &host, "type", "veth", "peer", "name", &inner,
            ]),
            cmd(&["ip", "link", "set", &inner, "netns", &ns]),
            cmd(&["ip", "link", "set", &host, "master", &br]),
            cmd(&["ip", "link", "set", &host, "up"]),
            cmd(&["ip", "-n", &ns, "link", "set", &inner, "name", "eth0"]),
            cmd(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"]),
            cmd(&["ip", "-n", &ns, "link", "set", "eth0", "up"]),
            cmd(&["ip", "-n", &ns, "link", "set", "lo", "up"]),
            Cmd {
                argv: ["ip", "netns", "exec", &ns, "iptables-restore"]
                    .map(str::to_owned)
                    .to_vec(),
                stdin: Some(format!(
                    "*filter\n:{CHAIN_IN} - [0:0]\n:{CHAIN_OUT} - [0:0]\n-A INPUT -j {CHAIN_IN}\n-A OUTPUT -j {CHAIN_OUT}\nCOMMIT\n"
                )),
            },
        ]
    }

    /// The hosts file of every namespace: localhost and every possible
    /// peer's name at its current address (the peers in `moved` at their
    /// second one). A name whose peer is not there yet does not answer,
    /// like a stopped machine.
    pub fn hosts_file(self, moved: &[usize]) -> String {
        let mut out = String::from("127.0.0.1 localhost\n::1 localhost\n");
        let _ = writeln!(out, "{} testbed.{DOMAIN}", self.host_ip());
        for n in 1..=MAX_PEERS {
            let ip = self.peer_ip_at(n, moved.contains(&n));
            let _ = writeln!(out, "{ip} {}", Self::host_name(n));
        }
        out
    }

    /// The `iptables-restore --noflush` input that makes a peer's fault
    /// chains say exactly `faults` (flushed, then rebuilt).
    pub fn fault_rules(self, faults: &KernelFaults) -> String {
        let host = self.host_ip();
        let mut out = format!("*filter\n-F {CHAIN_IN}\n-F {CHAIN_OUT}\n");
        for ip in &faults.drop_in {
            let _ = writeln!(out, "-A {CHAIN_IN} -s {ip} -j DROP");
        }
        for ip in &faults.drop_out {
            let _ = writeln!(out, "-A {CHAIN_OUT} -d {ip} -j DROP");
        }
        if let Some(p) = faults.loss.filter(|l| *l > 0.0) {
            let p = p.min(1.0);
            let _ = writeln!(
                out,
                "-A {CHAIN_IN} -i eth0 ! -s {host} -m statistic --mode random --probability {p:.6} -j DROP"
            );
            let _ = writeln!(
                out,
                "-A {CHAIN_OUT} -o eth0 ! -d {host} -m statistic --mode random --probability {p:.6} -j DROP"
            );
        }
        out.push_str("COMMIT\n");
        out
    }

    /// The command that sets peer `pN`'s link up or down (its bridge end).
    pub fn link(self, n: usize, up: bool) -> Cmd {
        cmd(&[
            "ip",
            "link",
            "set",
            &self.host_veth(n),
            if up { "up" } else { "down" },
        ])
    }

    /// `ip netns exec NS` in front of a peer's command line.
    pub fn exec_prefix(self, n: usize) -> Vec<String> {
        vec!["netns".to_owned(), "exec".to_owned(), self.namespace(n)]
    }
}

/// Runs a command; its stdout.
///
/// # Errors
/// It cannot be started or exits non-zero (the error holds its stderr).
pub fn run(c: &Cmd) -> Result<String> {
    let (prog, args) = c.argv.split_first().context("an empty command")?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(if c.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!("cannot run {prog} (the multi-host mode needs iproute2 and iptables)")
        })?;
    if let Some(text) = &c.stdin {
        let mut stdin = child.stdin.take().context("no stdin")?;
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            c.argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why this machine cannot run the multi-host mode, if it cannot: not
/// root, no `ip`, no `iptables-restore`, or no permission to create a
/// namespace (a container without `CAP_SYS_ADMIN`).
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("the multi-host mode (--netns) needs root: it creates network namespaces, a bridge and firewall rules".into());
    }
    for (prog, pkg) in [("ip", "iproute2"), ("iptables-restore", "iptables")] {
        let found = Command::new(prog)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!(
                "the multi-host mode (--netns) needs `{prog}`: install {pkg}"
            ));
        }
    }
    let probe = format!("rkvprobe-{}", std::process::id());
    if let Err(e) = run(&cmd(&["ip", "netns", "add", &probe])) {
        return Some(format!(
            "this machine cannot create network namespaces ({e:#}); the multi-host mode needs them"
        ));
    }
    let _ = run(&cmd(&["ip", "netns", "del", &probe]));
    None
}

/// The host's neighbour (ARP) table limits, soft and hard.
const GC_THRESH: [&str; 2] = [
    "/proc/sys/net/ipv4/neigh/default/gc_thresh2",
    "/proc/sys/net/ipv4/neigh/default/gc_thresh3",
];
/// What the mode needs of them: the neighbour table is one table for all
/// of the host's namespaces, and N peers that all talk to each other hold
/// about N² entries (a peer of its own per namespace per peer), so at 40
/// peers the default hard limit of 1024 overflows ("neighbor table
/// overflow" in the kernel log) and new peers never reach their seed.
/// Room for [`MAX_PEERS`].
const GC_THRESH_NEEDED: [u64; 2] = [8192, 16384];

/// Raises the host's neighbour table limits to [`GC_THRESH_NEEDED`] where
/// they are lower; the old values, for [`restore_neighbour_limits`], when
/// anything was raised.
///
/// # Errors
/// The limits cannot be read or written.
pub fn raise_neighbour_limits() -> Result<Option<[u64; 2]>> {
    let mut old = [0u64; 2];
    for (i, path) in GC_THRESH.iter().enumerate() {
        old[i] = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {path}"))?
            .trim()
            .parse()
            .with_context(|| format!("{path} is not a number"))?;
    }
    if old.iter().zip(GC_THRESH_NEEDED).all(|(o, n)| *o >= n) {
        return Ok(None);
    }
    // The hard limit first when raising, so soft <= hard throughout.
    for i in [1, 0] {
        let want = old[i].max(GC_THRESH_NEEDED[i]);
        std::fs::write(GC_THRESH[i], format!("{want}\n"))
            .with_context(|| format!("cannot raise {}", GC_THRESH[i]))?;
    }
    Ok(Some(old))
}

/// Puts back limits [`raise_neighbour_limits`] raised, unless someone
/// changed them since (then they are left as they are).
pub fn restore_neighbour_limits(old: [u64; 2]) {
    for i in [0, 1] {
        let now: Option<u64> = std::fs::read_to_string(GC_THRESH[i])
            .ok()
            .and_then(|t| t.trim().parse().ok());
        if now == Some(old[i].max(GC_THRESH_NEEDED[i])) {
            let _ = std::fs::write(GC_THRESH[i], format!("{}\n", old[i]));
        }
    }
}

/// The IO shell: creates and removes a cluster's network.
#[derive(Debug)]
pub struct Host;

/// The alias a cluster's bridge carries.
fn label_of(owner: &str) -> String {
    format!("{TAG}:{owner}")
}

/// The alias of `net`'s bridge, if the bridge exists.
fn bridge_label(net: Net) -> Option<String> {
    let path = std::path::Path::new("/sys/class/net")
        .join(net.bridge())
        .join("ifalias");
    std::fs::read_to_string(path)
        .ok()
        .map(|t| t.trim().to_owned())
}

/// The host ends of veths named for `net` (`rkvSpN`, and `rkvSqN` if a
/// move into its namespace failed).
fn host_veths(net: Net) -> Vec<String> {
    let (p, q) = (format!("rkv{}p", net.subnet), format!("rkv{}q", net.subnet));
    let ours = |n: &str| {
        [&p, &q].iter().any(|pre| {
            n.strip_prefix(pre.as_str())
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| ours(n))
                .collect()
        })
        .unwrap_or_default()
}

fn hosts_dir(ns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(ns)
}

/// Whether `S`'s /24 is already in use on this host: an interface of
/// that name, an address or a route in it.
fn in_use(net: Net) -> bool {
    if std::path::Path::new("/sys/class/net")
        .join(net.bridge())
        .exists()
    {
        return true;
    }
    let cidr = net.cidr();
    let addrs = run(&cmd(&["ip", "-4", "addr", "show", "to", &cidr])).unwrap_or_default();
    let routes = run(&cmd(&["ip", "-4", "route", "show", "match", &cidr])).unwrap_or_default();
    !addrs.trim().is_empty() || routes.lines().any(|l| !l.starts_with("default"))
}

impl Host {
    /// Creates a bridge on a free subnet (the first free one from
    /// `start`, so that clusters in different directories rarely race
    /// for the same one; `ip link add` is the atomic claim), labelled as
    /// `owner`'s (its alias), so that [`Host::remove`] never takes down
    /// another cluster's network that later got the same subnet. `record`
    /// is called with each subnet before it is claimed: the state file
    /// names it before anything of it exists.
    ///
    /// # Errors
    /// The mode is unavailable, `record` fails, or no subnet is free.
    pub fn create(
        start: u8,
        owner: &str,
        mut record: impl FnMut(Net) -> Result<()>,
    ) -> Result<Net> {
        if let Some(why) = unavailable() {
            bail!("{why}");
        }
        for k in 0..=255u16 {
            let subnet = u8::try_from((u16::from(start) + k) % 256).expect("mod 256");
            let net = Net { subnet };
            if in_use(net) {
                continue;
            }
            record(net)?;
            if run(&cmd(&[
                "ip",
                "link",
                "add",
                &net.bridge(),
                "type",
                "bridge",
            ]))
            .is_err()
            {
                continue;
            }
            let label = cmd(&[
                "ip",
                "link",
                "set",
                &net.bridge(),
                "alias",
                &label_of(owner),
            ]);
            for c in std::iter::once(label).chain(net.bridge_up()) {
                if let Err(e) = run(&c) {
                    let _ = Self::remove(net, owner);
                    return Err(e);
                }
            }
            return Ok(net);
        }
        bail!("no free subnet in 10.213.0.0/16 for a testbed bridge");
    }

    /// Creates peer `pN`'s namespace (replacing a leftover of the same
    /// name) and its hosts file.
    ///
    /// # Errors
    /// A command fails.
    pub fn add_peer(net: Net, n: usize, moved: &[usize]) -> Result<()> {
        let ns = net.namespace(n);
        let _ = run(&cmd(&["ip", "netns", "del", &ns]));
        let dir = hosts_dir(&ns);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(dir.join("hosts"), net.hosts_file(moved))
            .with_context(|| format!("cannot write {}/hosts", dir.display()))?;
        for c in net.peer_up(n) {
            if let Err(e) = run(&c) {
                let _ = run(&cmd(&["ip", "netns", "del", &ns]));
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Moves peer `pN` to its other address and rewrites the hosts file
    /// of every peer in `peers` to say so (in place: `ip netns exec`
    /// bind-mounts the file, so a running peer reads the new names, as
    /// it would after a DNS update).
    ///
    /// # Errors
    /// A command fails or a hosts file cannot be written.
    pub fn readdress(
        net: Net,
        n: usize,
        to_moved: bool,
        peers: &[usize],
        moved: &[usize],
    ) -> Result<()> {
        let [del, add] = <[Cmd; 2]>::try_from(net.readdress(n, to_moved)).expect("two steps");
        run(&del)?;
        if let Err(e) = run(&add) {
            // Put the old address back: a peer with none cannot restart.
            let back = net.readdress(n, !to_moved);
            let _ = run(&back[1]);
            return Err(e);
        }
        let text = net.hosts_file(moved);
        for &m in peers {
            let path = hosts_dir(&net.namespace(m)).join("hosts");
            std::fs::write(&path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// Makes peer `pN`'s kernel faults exactly `faults`.
    ///
    /// # Errors
    /// A command fails.
    pub fn apply(net: Net, n: usize, faults: &KernelFaults) -> Result<()> {
        let ns = net.namespace(n);
        run(&Cmd {
            argv: ["ip", "netns", "exec", &ns, "iptables-restore", "--noflush"]
                .map(str::to_owned)
                .to_vec(),
            stdin: Some(net.fault_rules(faults)),
        })?;
        run(&net.link(n, !faults.link_down))?;
        Ok(())
    }

    /// Removes everything of `net`, `owner`'s cluster network: every
    /// namespace named for it (also those a crashed run left behind and
    /// the state file never recorded) and the processes still in them,
    /// their hosts files, leftover veths, the bridge and its `FORWARD`
    /// rules. What is already gone is skipped. When the bridge exists but
    /// is labelled for another owner (the subnet was free again, after a
    /// reboot or an earlier `down`, and another cluster took it), nothing
    /// is touched and `Ok(false)` says so.
    ///
    /// # Errors
    /// Something remains after the attempt.
    pub fn remove(net: Net, owner: &str) -> Result<bool> {
        if bridge_label(net).is_some_and(|l| l != label_of(owner)) {
            return Ok(false);
        }
        let prefix = net.namespace_prefix();
        let listed = run(&cmd(&["ip", "netns", "list"])).unwrap_or_default();
        for ns in listed
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|ns| ns.starts_with(&prefix))
        {
            // A process left in a namespace keeps it (and its veth)
            // alive after `ip netns del` removes the name.
            let pids = run(&cmd(&["ip", "netns", "pids", ns])).unwrap_or_default();
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            let _ = run(&cmd(&["ip", "netns", "del", ns]));
        }
        for veth in host_veths(net) {
            let _ = run(&cmd(&["ip", "link", "del", &veth]));
        }
        if let Ok(entries) = std::fs::read_dir("/etc/netns") {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let br = net.bridge();
        if std::path::Path::new("/sys/class/net").join(&br).exists() {
            let _ = run(&cmd(&["ip", "link", "del", &br]));
        }
        for r in net.forward_rules() {
            // A rule may have been added twice by interrupted runs.
            for _ in 0..8 {
                let mut argv = vec!["iptables".to_owned(), "-D".to_owned(), "FORWARD".to_owned()];
                argv.extend(r.iter().cloned());
                if run(&Cmd { argv, stdin: None }).is_err() {
                    break;
                }
            }
        }
        let left = Self::leftovers(net);
        if !left.is_empty() {
            bail!("could not remove {}", left.join(", "));
        }
        Ok(true)
    }

    /// What of `net` still exists: namespaces, the bridge, rules.
    pub fn leftovers(net: Net) -> Vec<String> {
        let mut out = Vec::new();
        let prefix = net.namespace_prefix();
        let listed = run(&cmd(&["ip", "netns", "list"])).unwrap_or_default();
        out.extend(
            listed
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|ns| ns.starts_with(&prefix))
                .map(|ns| format!("namespace {ns}")),
        );
        if std::path::Path::new("/sys/class/net")
            .join(net.bridge())
            .exists()
        {
            out.push(format!("bridge {}", net.bridge()));
        }
        out.extend(
            host_veths(net)
                .into_iter()
                .map(|v| format!("interface {v}")),
        );
        let rules = run(&cmd(&["iptables", "-S", "FORWARD"])).unwrap_or_default();
        let br = net.bridge();
        out.extend(
            rules
                .lines()
                .filter(|l| l.contains(TAG) && l.split_whitespace().any(|w| w == br))
                .map(|l| format!("rule `{l}`")),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET: Net = Net { subnet: 42 };

    #[test]
    fn names_and_addresses_follow_the_layout() {
        assert_eq!(NET.bridge(), "rkv42");
        assert_eq!(NET.cidr(), "10.213.42.0/24");
        assert_eq!(NET.host_ip().to_string(), "10.213.42.1");
        assert_eq!(NET.quic(3, false).to_string(), "10.213.42.13:7000");
        assert_eq!(NET.admin(3, false).to_string(), "10.213.42.13:7080");
        assert_eq!(NET.quic(3, true).to_string(), "10.213.42.133:7000");
        assert_eq!(NET.peer_ip_at(MAX_PEERS, true).to_string(), "10.213.42.250");
        let moves: Vec<String> = NET
            .readdress(3, true)
            .iter()
            .map(|c| c.argv.join(" "))
            .collect();
        assert_eq!(
            moves,
            [
                "ip -n rkv42-p3 addr del 10.213.42.13/24 dev eth0",
                "ip -n rkv42-p3 addr add 10.213.42.133/24 dev eth0"
            ]
        );
        assert_eq!(NET.namespace(3), "rkv42-p3");
        assert_eq!(peer_number("p3"), Some(3));
        assert_eq!(peer_number("p0"), None);
        assert_eq!(peer_number("q3"), None);
        assert_eq!(peer_number("p121"), None);
        // Interface names hold at most 15 bytes.
        let widest = Net { subnet: 255 };
        assert!(widest.host_veth(MAX_PEERS).len() <= 15);
        assert!(format!("rkv{}q{MAX_PEERS}", widest.subnet).len() <= 15);
    }

    #[test]
    fn a_namespace_gets_an_address_on_its_subnet_and_no_route_out() {
        let plan = NET.peer_up(2);
        let text: Vec<String> = plan.iter().map(|c| c.argv.join(" ")).collect();
        assert!(text.contains(&"ip -n rkv42-p2 addr add 10.213.42.12/24 dev eth0".to_owned()));
        assert!(
            !text
                .iter()
                .any(|t| t.contains("route") || t.contains("default")),
            "no route but the /24's own: {text:?}"
        );
        assert!(!text
            .iter()
            .any(|t| t.contains("MASQUERADE") || t.contains("nat")));
        assert!(text.contains(&"ip link set rkv42p2 master rkv42".to_owned()));
    }

    #[test]
    fn the_bridge_is_fenced_off_from_every_other_interface() {
        let rules: Vec<String> = NET.forward_rules().iter().map(|r| r.join(" ")).collect();
        assert!(rules.iter().all(|r| r.contains(TAG)), "{rules:?}");
        assert!(rules.contains(
            &"-i rkv42 ! -o rkv42 -j DROP -m comment --comment ringkv-testbed".to_owned()
        ));
        assert!(rules.contains(
            &"-o rkv42 ! -i rkv42 -j DROP -m comment --comment ringkv-testbed".to_owned()
        ));
        let up: Vec<String> = NET.bridge_up().iter().map(|c| c.argv.join(" ")).collect();
        assert_eq!(up[0], "ip addr add 10.213.42.1/24 dev rkv42");
        assert!(!up.iter().any(|t| t.contains("nat") || t.contains("route")));
    }

    #[test]
    fn every_peer_is_named_in_every_hosts_file() {
        let hosts = NET.hosts_file(&[]);
        assert!(hosts.contains("10.213.42.11 p1.ringkv.test\n"));
        assert!(hosts.contains(&format!("10.213.42.130 p{MAX_PEERS}.ringkv.test\n")));
        assert!(hosts.starts_with("127.0.0.1 localhost\n"));
        let moved = NET.hosts_file(&[2]);
        assert!(moved.contains("10.213.42.132 p2.ringkv.test\n"), "{moved}");
        assert!(moved.contains("10.213.42.11 p1.ringkv.test\n"));
    }

    #[test]
    fn fault_rules_rebuild_the_chains_from_scratch() {
        let healed = NET.fault_rules(&KernelFaults::default());
        assert_eq!(healed, "*filter\n-F rkv-in\n-F rkv-out\nCOMMIT\n");
        let f = KernelFaults {
            drop_in: vec![NET.peer_ip(3)],
            drop_out: vec![NET.peer_ip(4)],
            loss: Some(0.1),
            link_down: false,
        };
        let rules = NET.fault_rules(&f);
        assert!(
            rules.contains("-A rkv-in -s 10.213.42.13 -j DROP\n"),
            "{rules}"
        );
        assert!(
            rules.contains("-A rkv-out -d 10.213.42.14 -j DROP\n"),
            "{rules}"
        );
        assert!(rules.contains(
            "-A rkv-in -i eth0 ! -s 10.213.42.1 -m statistic --mode random --probability 0.100000 -j DROP\n"
        ));
        assert!(rules.contains("-A rkv-out -o eth0 ! -d 10.213.42.1 -m statistic"));
        assert!(rules.ends_with("COMMIT\n"));
        assert_eq!(
            f.describe().unwrap(),
            "deaf to 1, mute to 1, kernel loss 10%"
        );
        assert!(KernelFaults::default().describe().is_none());
        assert!(KernelFaults::default().is_healed());
        assert!(!f.is_healed());
    }
}
