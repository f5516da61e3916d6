//! Peer processes as the OS sees them: started detached (their own process
//! group, output appended to a log file, so they outlive the command that
//! started them and a Ctrl-C in its terminal), signalled by pid, and
//! checked in `/proc` (Linux). IO: processes, `/proc`, log files.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// What a pid is, as far as the testbed cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcState {
    /// Running (or sleeping): it should answer.
    Running,
    /// Stopped by SIGSTOP: alive, but it cannot answer.
    Stopped,
    /// Gone: exited, a zombie, or the pid now belongs to another program.
    Gone,
}

impl ProcState {
    /// A word for tables.
    pub fn word(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Gone => "gone",
        }
    }
}

/// The state of `pid`, provided it is still the peer whose data dir is
/// `data` (a reused pid is reported [`ProcState::Gone`]).
pub fn state(pid: u32, data: &Path) -> ProcState {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return ProcState::Gone;
    };
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return ProcState::Gone;
    };
    let needle = data.as_os_str().as_encoded_bytes();
    if !cmdline.split(|b| *b == 0).any(|arg| arg == needle) {
        return ProcState::Gone;
    }
    match stat
        .rsplit(')')
        .next()
        .and_then(|s| s.trim().chars().next())
    {
        Some('Z' | 'X' | 'x') | None => ProcState::Gone,
        Some('T' | 't') => ProcState::Stopped,
        Some(_) => ProcState::Running,
    }
}

/// Sends `signal` to `pid`.
///
/// # Errors
/// The process does not exist or may not be signalled.
pub fn signal(pid: u32, signal: i32) -> Result<()> {
    let pid = i32::try_from(pid).context("a pid out of range")?;
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc != 0 {
        bail!(
            "cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Starts `bin args` detached, with `env` added to its environment: a process group of its own, no stdin, stdout
/// and stderr appended to `log`. A thread reaps it if it exits while this
/// process still runs, so it never lingers as a zombie. Returns its pid,
/// the log's length before the start (where this start's output begins),
/// and a flag the reaper sets once it has exited (right after the start,
/// `/proc` cannot tell yet: the child has not exec'd).
///
/// # Errors
/// The log cannot be opened or the binary cannot be started.
pub fn spawn_detached(
    bin: &Path,
    args: &[String],
    env: &BTreeMap<String, String>,
    log: &Path,
) -> Result<(u32, u64, std::sync::Arc<std::sync::atomic::AtomicBool>)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let offset = file.metadata()?.len();
    let mut cmd = Command::new(bin);
    // The testbed's own settings must not leak into its peers (a
    // RINGKV_JOIN or RINGKV_CLUSTER_KEY in the caller's shell would).
    // RINGKV_TEST_* (test-only switches of debug builds, such as
    // RINGKV_TEST_MUTATIONS) are meant for the peers and pass.
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if name_text.starts_with("RINGKV_") && !name_text.starts_with("RINGKV_TEST_") {
            cmd.env_remove(name);
        }
    }
    let mut child = cmd
        .envs(env)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let pid = child.id();
    let exited = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = exited.clone();
    std::thread::spawn(move || {
        let _ = child.wait();
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    Ok((pid, offset, exited))
}

/// The text of `log` from byte `offset` on.
pub fn log_since(log: &Path, offset: u64) -> String {
    let bytes = std::fs::read(log).unwrap_or_default();
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The last `n` lines of a text, for error messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls until `pid` is gone, at most `limit`; whether it went.
pub fn wait_gone(pid: u32, data: &Path, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if state(pid, data) == ProcState::Gone {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then SIGKILL if it has not exited within `grace`. Returns
/// whether SIGKILL was needed.
///
/// # Errors
/// The process survived SIGKILL for 5 s (it should not).
pub fn terminate(pid: u32, data: &Path, grace: Duration) -> Result<bool> {
    if state(pid, data) == ProcState::Gone {
        return Ok(false);
    }
    // A stopped process cannot act on SIGTERM until it continues.
    let _ = signal(pid, libc::SIGCONT);
    let _ = signal(pid, libc::SIGTERM);
    if wait_gone(pid, data, grace) {
        return Ok(false);
    }
    let _ = signal(pid, libc::SIGKILL);
    if !wait_gone(pid, data, Duration::from_secs(5)) {
        bail!("process {pid} survived SIGKILL for 5 s");
    }
    Ok(true)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_process_is_seen_running_stopped_and_gone() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker");
        let log = dir.path().join("sleep.log");
        let args = vec![
            "-c".to_owned(),
            "echo started; exec sleep 30".to_owned(),
            marker.display().to_string(),
        ];
        let (pid, offset, _) =
            spawn_detached(Path::new("/bin/sh"), &args, &BTreeMap::new(), &log).unwrap();
        assert_eq!(offset, 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !log_since(&log, 0).contains("started") {
            assert!(Instant::now() < deadline, "the child never wrote its log");
            std::thread::sleep(Duration::from_millis(20));
        }
        // `exec sleep` keeps the marker argument only in sh's cmdline, so
        // identify the process by its own arguments instead.
        let sleep_arg = Path::new("30");
        // `started` is printed just before the exec: poll until it is done.
        while state(pid, sleep_arg) != ProcState::Running {
            assert!(Instant::now() < deadline, "never seen running as sleep");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(state(pid, Path::new("/nonexistent")), ProcState::Gone);
        signal(pid, libc::SIGSTOP).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while state(pid, sleep_arg) != ProcState::Stopped {
            assert!(Instant::now() < deadline, "never seen stopped");
            std::thread::sleep(Duration::from_millis(20));
        }
        let killed = terminate(pid, sleep_arg, Duration::from_secs(10)).unwrap();
        assert!(!killed, "sleep exits on SIGTERM");
        assert_eq!(state(pid, sleep_arg), ProcState::Gone);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
