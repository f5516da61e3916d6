//! Local clusters of real `ringkv node` processes on 127.0.0.1: ephemeral
//! ports, one data dir per peer, kill -9, SIGTERM, restart, and each peer's
//! view read over its admin HTTP. Every process is killed when the cluster
//! drops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;

use anyhow::{Context as _, Result};
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
    let mut args = vec!["--admin".to_owned(), "127.0.0.1:0".to_owned()];
    args.extend(extra.iter().cloned());
    let (child, ready) = crate::ready::start(&crate::ready::PeerCommand {
        bin: bin.to_path_buf(),
        data: data.to_path_buf(),
        name: name.to_owned(),
        listen: listen.to_owned(),
        args,
        log_level: "info".to_owned(),
        log: Some(data.with_extension("log")),
    })?;
    let admin = ready.admin.context("the peer serves no admin HTTP")?;
    Ok((child, ready.quic, admin))
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
                "--cluster-key-file".into(),
                seed.data.join("cluster.key").display().to_string(),
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

/// A GET of a local admin endpoint; the body (see [`crate::http::get`]).
///
/// # Errors
/// No answer, or a status that is not 2xx.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    crate::http::get(addr, path)
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
