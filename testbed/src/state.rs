//! The cluster directory's state file, `DIR/testbed.json`: which peers the
//! testbed started, where, with which flags and key, and the fault settings
//! it last sent each of them. Every `ringkv testbed` command reads it, and
//! those that change the cluster write it back (atomically: a temporary
//! file renamed over the old one). IO: the file only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::faults::FaultSettings;
use crate::netns::{KernelFaults, Net};

/// The state file's name inside the cluster directory.
pub const STATE_FILE: &str = "testbed.json";

/// Format version written to the state file; a file of another version is
/// refused rather than misread.
const FORMAT: u32 = 1;

/// One peer the testbed started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerState {
    /// Its name (`p1`, `p2`, ...), also its `--name`.
    pub name: String,
    /// The OS process id of its latest start.
    pub pid: u32,
    /// Its QUIC address (the `addr` other peers list it under).
    pub addr: SocketAddr,
    /// Its admin HTTP address.
    pub admin: SocketAddr,
    /// Its data dir.
    pub data: PathBuf,
    /// Its log file (stdout and stderr of every start, appended).
    pub log: PathBuf,
    /// The fault settings last sent to it (`{}` when healed).
    #[serde(default)]
    pub faults: FaultSettings,
    /// Whether it was told to leave (SIGTERM) or killed by the testbed, so
    /// `status` can tell an expected absence from a crash.
    #[serde(default)]
    pub stopped_by_testbed: Option<String>,
    /// `ringkv node` flags of this peer alone, after the cluster's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_flags: Vec<String>,
    /// The `ringkv` binary this peer runs, if not the cluster's ([`State::bin`]):
    /// a rolling upgrade restarts peers one by one on another build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin: Option<PathBuf>,
    /// Environment variables this peer's process gets (after the
    /// testbed's own `RINGKV_*` are removed), e.g. the test-only
    /// `RINGKV_TEST_PROTOCOL_MAX`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Its kernel-made faults (multi-host mode only): iptables rules in
    /// its namespace and its link state, which outlive its process.
    #[serde(default, skip_serializing_if = "KernelFaults::is_healed")]
    pub kernel: KernelFaults,
    /// Whether it was moved to its second address (multi-host mode,
    /// `readdress`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub moved: bool,
}

/// The whole state file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Format version ([`FORMAT`]).
    pub format: u32,
    /// The `ringkv` binary that runs the peers.
    pub bin: PathBuf,
    /// The cluster key every peer and client uses.
    pub cluster_key: String,
    /// Extra `ringkv node` flags given after `--` to `up`; every start and
    /// restart passes them again.
    pub node_flags: Vec<String>,
    /// Whether the peers run with `--testbed-faults` (the binary supports
    /// the fault switch).
    pub fault_switch: bool,
    /// The peers, in start order.
    pub peers: Vec<PeerState>,
    /// The multi-host mode's network (`up --netns`): every peer in a
    /// namespace of its own on this bridge's subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<Net>,
    /// This cluster's label on its bridge (a random id), so that `down`
    /// never removes another cluster's network on the same subnet.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns_owner: String,
    /// The host's neighbour table limits before `up --netns` raised them
    /// (restored by `down`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbour_limits: Option<[u64; 2]>,
    /// The token of the peers' admin HTTP, which the multi-host mode
    /// serves on a bridge address (a token is required off loopback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
}

impl State {
    /// A state with no peers yet.
    pub fn new(bin: PathBuf, node_flags: Vec<String>, fault_switch: bool) -> Self {
        Self {
            format: FORMAT,
            bin,
            cluster_key: String::new(),
            node_flags,
            fault_switch,
            peers: Vec::new(),
            netns: None,
            netns_owner: String::new(),
            neighbour_limits: None,
            admin_token: None,
        }
    }

    /// The state file of the cluster in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// Reads the state of the cluster in `dir`.
    ///
    /// # Errors
    /// No state file (no cluster there), or one this version cannot read.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no testbed cluster in {} ({} is missing); start one with `ringkv testbed up --dir {}`",
                dir.display(),
                path.display(),
                dir.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let state: Self = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a testbed state file (corrupt or from another program); remove the directory after stopping its peers",
                path.display()
            )
        })?;
        if state.format != FORMAT {
            bail!(
                "{} has format {}, this ringkv reads format {FORMAT}",
                path.display(),
                state.format
            );
        }
        Ok(state)
    }

    /// Writes the state to `dir` atomically, readable by its owner only
    /// (mode 0600: it holds the cluster key).
    ///
    /// # Errors
    /// The directory is not writable.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = Self::path(dir);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).expect("the state serializes");
        write_private(&tmp, (text + "\n").as_bytes())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// The index of the peer called `name`.
    ///
    /// # Errors
    /// No such peer; the message lists the known names.
    pub fn index_of(&self, name: &str) -> Result<usize> {
        self.peers
            .iter()
            .position(|p| p.name == name)
            .with_context(|| {
                let names: Vec<&str> = self.peers.iter().map(|p| p.name.as_str()).collect();
                format!(
                    "no peer called {name:?} in this testbed (peers: {})",
                    names.join(", ")
                )
            })
    }

    /// The next unused peer name.
    pub fn next_name(&self) -> String {
        let mut i = self.peers.len() + 1;
        while self.peers.iter().any(|p| p.name == format!("p{i}")) {
            i += 1;
        }
        format!("p{i}")
    }
}

/// Writes `bytes` to a new file at `path` created with mode 0600, so the
/// secret is never readable by others, not even for a moment (a leftover
/// file is removed first: an existing file keeps its mode when opened).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let mut s = State::new(
            "/bin/ringkv".into(),
            vec!["--dead-grace".into(), "0s".into()],
            true,
        );
        s.cluster_key = "rkv1-abc".into();
        s.peers.push(PeerState {
            name: "p1".into(),
            pid: 42,
            addr: "127.0.0.1:4001".parse().unwrap(),
            admin: "127.0.0.1:5001".parse().unwrap(),
            data: "/tmp/x/p1".into(),
            log: "/tmp/x/p1.log".into(),
            faults: FaultSettings::default(),
            stopped_by_testbed: None,
            extra_flags: Vec::new(),
            bin: None,
            env: BTreeMap::new(),
            kernel: KernelFaults::default(),
            moved: false,
        });
        s
    }

    #[test]
    fn state_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = sample();
        s.save(dir.path()).unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), s);
    }

    #[cfg(unix)]
    #[test]
    fn the_state_file_holding_the_key_is_private_even_over_an_old_public_one() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = State::path(dir.path());
        std::fs::write(&path, "{}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let tmp = dir.path().join(format!("{STATE_FILE}.tmp"));
        std::fs::write(&tmp, "left over").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        sample().save(dir.path()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
        assert_eq!(State::load(dir.path()).unwrap(), sample());
    }

    #[test]
    fn a_missing_state_file_says_how_to_start_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = State::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no testbed cluster"), "{err}");
        assert!(err.contains("testbed up"), "{err}");
    }

    #[test]
    fn a_corrupt_state_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(State::path(dir.path()), "{not json").unwrap();
        let err = format!("{:#}", State::load(dir.path()).unwrap_err());
        assert!(err.contains("not a testbed state file"), "{err}");
        assert!(err.contains("testbed.json"), "{err}");
    }

    #[test]
    fn unknown_peer_names_list_the_known_ones() {
        let err = sample().index_of("p9").unwrap_err().to_string();
        assert!(err.contains("\"p9\"") && err.contains("p1"), "{err}");
    }

    #[test]
    fn next_name_skips_names_in_use() {
        let mut s = sample();
        assert_eq!(s.next_name(), "p2");
        s.peers[0].name = "p2".into();
        assert_eq!(s.next_name(), "p3");
    }
}
