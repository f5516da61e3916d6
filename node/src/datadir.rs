//! What a peer keeps in its data directory: its key pair (its identity),
//! its incarnation (which must only grow), the cluster key (so a restart
//! needs no flags), and the addresses of peers it has seen (so a restart
//! rejoins even when its seeds are gone). Small files, written atomically
//! (write to a temporary file, then rename).

use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use ringkv_gossip::{ClusterKey, NodeIdentity};

const KEY_FILE: &str = "node.key";
const INCARNATION_FILE: &str = "incarnation";
const CLUSTER_KEY_FILE: &str = "cluster.key";
const PEERS_FILE: &str = "peers.json";
/// Most peer addresses remembered.
const PEERS_MAX: usize = 256;

/// A peer's data directory.
#[derive(Debug, Clone)]
pub(crate) struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Opens (creating if needed) the directory.
    pub(crate) fn open(root: &Path) -> Result<Self> {
        fs::create_dir_all(root)
            .with_context(|| format!("cannot create data dir {}", root.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The peer's identity, created on first start.
    pub(crate) fn identity(&self) -> Result<NodeIdentity> {
        let path = self.path(KEY_FILE);
        if path.exists() {
            let der = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            return NodeIdentity::from_pkcs8_der(&der)
                .with_context(|| format!("{} is not a ringkv node key", path.display()));
        }
        let identity = NodeIdentity::generate().context("cannot generate a node key")?;
        write_private(&path, &identity.to_pkcs8_der())?;
        Ok(identity)
    }

    /// The next incarnation: one above the last stored, stored at once so a
    /// crash right after cannot reuse it.
    pub(crate) fn next_incarnation(&self) -> Result<u64> {
        let path = self.path(INCARNATION_FILE);
        let last = match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .with_context(|| format!("{} is corrupt", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let next = last.checked_add(1).context("incarnation exhausted")?;
        self.store_incarnation(next)?;
        Ok(next)
    }

    /// Records an incarnation the protocol moved to.
    pub(crate) fn store_incarnation(&self, incarnation: u64) -> Result<()> {
        write_atomic(
            &self.path(INCARNATION_FILE),
            format!("{incarnation}\n").as_bytes(),
        )
    }

    /// Where the cluster key is kept (mode 0600).
    pub(crate) fn cluster_key_path(&self) -> PathBuf {
        self.path(CLUSTER_KEY_FILE)
    }

    /// The cluster key stored here, if any.
    pub(crate) fn cluster_key(&self) -> Result<Option<ClusterKey>> {
        let path = self.path(CLUSTER_KEY_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => {
                Ok(Some(ClusterKey::parse(&text).with_context(|| {
                    format!("{} is corrupt", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Settles which cluster this directory belongs to: the given key must
    /// match the stored one; a new directory stores what it is given.
    pub(crate) fn bind_cluster(&self, given: Option<ClusterKey>) -> Result<(ClusterKey, bool)> {
        match (self.cluster_key()?, given) {
            (Some(stored), Some(given)) => {
                if stored.cluster_id() != given.cluster_id() {
                    bail!(
                        "data dir {} belongs to another cluster (its key differs from the one given); \
                         use a fresh --data directory to join this cluster",
                        self.root.display()
                    );
                }
                Ok((stored, false))
            }
            (Some(stored), None) => Ok((stored, false)),
            (None, Some(given)) => {
                write_private(
                    &self.path(CLUSTER_KEY_FILE),
                    format!("{given}\n").as_bytes(),
                )?;
                Ok((given, false))
            }
            (None, None) => {
                let key = ClusterKey::generate(&mut rand::rng());
                write_private(&self.path(CLUSTER_KEY_FILE), format!("{key}\n").as_bytes())?;
                Ok((key, true))
            }
        }
    }

    /// Peer addresses seen before, for rejoining.
    pub(crate) fn peers(&self) -> Vec<SocketAddr> {
        fs::read(self.path(PEERS_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Vec<SocketAddr>>(&bytes).ok())
            .unwrap_or_default()
    }

    /// Remembers peer addresses (at most [`PEERS_MAX`]).
    pub(crate) fn store_peers(&self, peers: &[SocketAddr]) -> Result<()> {
        let peers = &peers[..peers.len().min(PEERS_MAX)];
        let json = serde_json::to_vec(peers).expect("addresses serialize");
        write_atomic(&self.path(PEERS_FILE), &json)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with_mode(path, bytes, 0o644)
}

/// Secrets are created unreadable to others from the first byte.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with_mode(path, bytes, 0o600)
}

fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    // The rename itself must survive a crash too.
    if let Some(dir) = path.parent() {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn the_cluster_key_file_is_private_whether_generated_or_given() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = DataDir::open(&tmp.path().join("a")).expect("open");
        let (key, created) = first.bind_cluster(None).expect("generate");
        assert!(created);
        assert_eq!(mode(&first.cluster_key_path()), 0o600);
        let second = DataDir::open(&tmp.path().join("b")).expect("open");
        second.bind_cluster(Some(key)).expect("given");
        assert_eq!(mode(&second.cluster_key_path()), 0o600);
    }
}
