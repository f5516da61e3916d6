//! Starting one `ringkv node` process and knowing when it serves: the
//! peer writes a ready file (`--ready-file PATH`: JSON with its id, name,
//! addresses and pid) once every listener is up, and [`wait`] polls it
//! with a deadline. One spawner ([`start`]) for the testbed's clusters and
//! node's integration tests; the detached peers of `ringkv testbed` are
//! started by `procs` and read the same file. IO: processes, files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

/// How long a peer may take to start serving on a loaded machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What `ringkv node --ready-file` writes once the peer serves.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Ready {
    /// Its node id (hex).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its bound QUIC (UDP) address.
    pub quic: SocketAddr,
    /// Its admin HTTP address, when it serves one.
    pub admin: Option<SocketAddr>,
    /// Its RESP address, when it serves one.
    pub resp: Option<SocketAddr>,
    /// The process id that wrote it.
    pub pid: u32,
}

/// The ready file of a peer whose data dir is `data`: beside it, so that
/// it is never mistaken for the peer's own files.
pub fn path_for(data: &Path) -> PathBuf {
    data.with_extension("ready")
}

/// The ready file at `path`, once it holds one written by `pid`.
pub fn read(path: &Path, pid: u32) -> Option<Ready> {
    let text = std::fs::read_to_string(path).ok()?;
    let ready: Ready = serde_json::from_str(&text).ok()?;
    (ready.pid == pid).then_some(ready)
}

/// Polls `path` until `pid` wrote its ready file, `gone()` says the
/// process exited, or `timeout` passes.
///
/// # Errors
/// The process exited or did not get ready in time.
pub fn wait(
    path: &Path,
    pid: u32,
    timeout: Duration,
    mut gone: impl FnMut() -> bool,
) -> Result<Ready> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(ready) = read(path, pid) {
            return Ok(ready);
        }
        if gone() {
            bail!("the peer (pid {pid}) exited before it was ready");
        }
        if Instant::now() > deadline {
            bail!("the peer (pid {pid}) was not ready within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How to start one `ringkv node` child process.
#[derive(Debug, Clone)]
pub struct PeerCommand {
    /// The `ringkv` binary.
    pub bin: PathBuf,
    /// Its data dir (`--data`).
    pub data: PathBuf,
    /// Its name (`--name`).
    pub name: String,
    /// What it binds (`--listen`), e.g. `127.0.0.1:0`.
    pub listen: String,
    /// Further `ringkv node` flags.
    pub args: Vec<String>,
    /// Its `RUST_LOG`.
    pub log_level: String,
    /// Where its stdout and stderr go; discarded when `None`.
    pub log: Option<PathBuf>,
}

/// Starts the peer as a child of this process (killed by whoever holds
/// it) and waits until it serves.
///
/// # Errors
/// It cannot be started, exits, or is not ready within [`START_TIMEOUT`];
/// the child is killed then.
pub fn start(peer: &PeerCommand) -> Result<(Child, Ready)> {
    let ready_path = path_for(&peer.data);
    let _ = std::fs::remove_file(&ready_path);
    let (stdout, stderr) = match &peer.log {
        Some(log) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .with_context(|| format!("cannot open {}", log.display()))?;
            (Stdio::from(file.try_clone()?), Stdio::from(file))
        }
        None => (Stdio::null(), Stdio::null()),
    };
    let mut child = Command::new(&peer.bin)
        .args(["node", "--data"])
        .arg(&peer.data)
        .args(["--listen", &peer.listen, "--name", &peer.name])
        .arg("--ready-file")
        .arg(&ready_path)
        .args(&peer.args)
        .env("RUST_LOG", &peer.log_level)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("cannot start {}", peer.bin.display()))?;
    let pid = child.id();
    let waited = wait(&ready_path, pid, START_TIMEOUT, || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    match waited {
        Ok(ready) => Ok((child, ready)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            let log = peer
                .log
                .as_ref()
                .map_or_else(String::new, |l| format!("; see {}", l.display()));
            Err(e).with_context(|| format!("peer {} did not start{log}", peer.name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_file_counts_only_for_its_own_pid() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = path_for(&dir.path().join("p1"));
        assert_eq!(read(&path, 7), None, "no file yet");
        std::fs::write(
            &path,
            r#"{"id":"ab","name":"p1","quic":"127.0.0.1:1","admin":null,"resp":"127.0.0.1:3","pid":7}"#,
        )
        .expect("write");
        let ready = read(&path, 7).expect("ready");
        assert_eq!(ready.quic, "127.0.0.1:1".parse().expect("addr"));
        assert_eq!(ready.admin, None);
        assert_eq!(read(&path, 8), None, "another pid's file is stale");
        let err = wait(&path, 8, Duration::from_secs(5), || true).expect_err("gone");
        assert!(err.to_string().contains("exited"), "{err}");
    }
}
