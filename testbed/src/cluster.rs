//! Local clusters of real `ringkv node` processes on 127.0.0.1: ephemeral
//! ports, one data dir per peer, kill -9, SIGTERM, restart, and each peer's
//! view read over its admin HTTP. Every process is killed when the cluster
//! drops.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

/// One peer process.
#[derive(Debug)]
pub struct Peer {
    /// Its name (p1, p2, ...).
    pub name: String,
    /// Its data dir.
    pub data: PathBuf,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its admin HTTP address.
    pub admin: SocketAddr,
    child: Option<Child>,
}

impl Peer {
    /// The OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A local cluster.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    /// The peers, in start order.
    pub peers: Vec<Peer>,
    /// The cluster key.
    pub key: String,
    extra: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.peers {
            if let Some(mut child) = p.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn spawn(
    bin: &Path,
    data: &Path,
    name: &str,
    listen: &str,
    extra: &[String],
) -> Result<(Child, SocketAddr, SocketAddr)> {
    let log =
        std::fs::File::create(data.with_extension("log")).context("cannot create a peer log")?;
    let mut child = Command::new(bin)
        .args(["node", "--data"])
        .arg(data)
        .args(["--listen", listen, "--admin", "127.0.0.1:0", "--name", name])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut addr, mut admin) = (None, None);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split(" listening on ").nth(1) {
                addr = rest
                    .split(',')
                    .next()
                    .and_then(|a| a.parse::<SocketAddr>().ok());
            }
            if let Some(rest) = line.split("admin HTTP on http://").nth(1) {
                admin = rest.trim().parse::<SocketAddr>().ok();
            }
            if let (Some(a), Some(b)) = (addr, admin) {
                let _ = tx.send((a, b));
                addr = None;
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok((addr, admin)) => Ok((child, addr, admin)),
        Err(_) => {
            let _ = child.kill();
            bail!(
                "peer {name} did not start; see {}",
                data.with_extension("log").display()
            )
        }
    }
}

impl Cluster {
    /// Starts `n` peers in `dir`, the first creating the cluster and the
    /// others joining through it. `extra` goes to every `ringkv node`.
    pub fn start(bin: &Path, dir: &Path, n: usize, extra: &[String]) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut cluster = Self {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            peers: Vec::new(),
            key: String::new(),
            extra: extra.to_vec(),
        };
        cluster.add()?;
        cluster.key = std::fs::read_to_string(cluster.peers[0].data.join("cluster.key"))?
            .trim()
            .to_owned();
        for _ in 1..n {
            cluster.add()?;
        }
        Ok(cluster)
    }

    /// Starts one more peer, joining through the first running one.
    pub fn add(&mut self) -> Result<usize> {
        let name = format!("p{}", self.peers.len() + 1);
        let data = self.dir.join(&name);
        let mut extra = self.extra.clone();
        if let Some(seed) = self.peers.iter().find(|p| p.is_running()) {
            extra.extend([
                "--join".into(),
                seed.addr.to_string(),
                "--cluster-key".into(),
                self.key.clone(),
            ]);
        }
        let (child, addr, admin) = spawn(&self.bin, &data, &name, "127.0.0.1:0", &extra)?;
        self.peers.push(Peer {
            name,
            data,
            addr,
            admin,
            child: Some(child),
        });
        Ok(self.peers.len() - 1)
    }

    /// SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.peers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts a stopped peer from its data dir, on its old address.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        let p = &self.peers[i];
        let (child, addr, admin) = spawn(
            &self.bin,
            &p.data,
            &p.name,
            &p.addr.to_string(),
            &self.extra,
        )?;
        let p = &mut self.peers[i];
        (p.child, p.addr, p.admin) = (Some(child), addr, admin);
        Ok(())
    }

    /// Running peers' indices.
    pub fn running(&self) -> Vec<usize> {
        (0..self.peers.len())
            .filter(|&i| self.peers[i].is_running())
            .collect()
    }

    /// A peer's members JSON (`/v1/members`), or `None` if it does not
    /// answer.
    pub fn members(&self, i: usize) -> Option<Value> {
        let body = http_get(self.peers[i].admin, "/v1/members").ok()?;
        serde_json::from_str(&body).ok()
    }
}

/// A plain HTTP/1.1 GET of a local admin endpoint; the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: ringkv\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let body = text.split("\r\n\r\n").nth(1).context("no HTTP body")?;
    Ok(body.to_owned())
}

/// `(utime + stime)` clock ticks and resident kB of a process (Linux).
pub fn proc_usage(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit(')').next()?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks, rss))
}
