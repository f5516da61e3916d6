//! What a peer keeps in its data directory: its key pair (its identity),
//! its incarnation (which must only grow), the keyring (so a restart
//! needs no flags), and the addresses of peers it has seen (so a restart
//! rejoins even when its seeds are gone). Small files, written atomically
//! (write to a temporary file, then rename).

use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use ringkv_gossip::transport::keyring::Keyring;
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

    /// Where the keyring is kept (mode 0600): `cluster.key`, which holds
    /// the one cluster key until a key is installed.
    pub(crate) fn cluster_key_path(&self) -> PathBuf {
        self.path(CLUSTER_KEY_FILE)
    }

    /// The keyring stored here, if any.
    pub(crate) fn keyring(&self) -> Result<Option<Keyring>> {
        let path = self.path(CLUSTER_KEY_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => {
                Ok(Some(Keyring::parse(&text).with_context(|| {
                    format!("{} is corrupt", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Settles which cluster this directory belongs to. A stored keyring
    /// wins: a key given with it must be one of its keys or name the same
    /// cluster (a key file from before a rotation), and changes nothing.
    /// A new directory stores what it is given, or a new key.
    pub(crate) fn bind_cluster(&self, given: Option<Keyring>) -> Result<(Keyring, bool)> {
        match (self.keyring()?, given) {
            (Some(stored), Some(given)) => {
                let ours = stored.cluster_id() == given.cluster_id()
                    || given.keys().iter().any(|k| stored.holds(k));
                if !ours {
                    bail!(
                        "data dir {} belongs to another cluster (none of its keyring's keys is the one given); \
                         use a fresh --data directory to join this cluster",
                        self.root.display()
                    );
                }
                Ok((stored, false))
            }
            (Some(stored), None) => Ok((stored, false)),
            (None, Some(given)) => {
                self.store_keyring(&given)?;
                Ok((given, false))
            }
            (None, None) => {
                let keyring = Keyring::new(ClusterKey::generate(&mut rand::rng()));
                self.store_keyring(&keyring)?;
                Ok((keyring, true))
            }
        }
    }

    /// Replaces the stored keyring, atomically, mode 0600.
    pub(crate) fn store_keyring(&self, keyring: &Keyring) -> Result<()> {
        write_private(&self.path(CLUSTER_KEY_FILE), keyring.to_text().as_bytes())
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
    // `mode` applies only when the file is created: a leftover temporary
    // file (a crash mid-write, or someone's) keeps its own, so set it on
    // the open handle before anything secret is written.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot restrict {}", tmp.display()))?;
    }
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

    fn key(n: u8) -> ClusterKey {
        ClusterKey::from_bytes([n; 32])
    }

    #[test]
    fn a_leftover_temporary_file_does_not_loosen_the_key_file() {
        // Review of the rotation, finding 7: a world-readable
        // `cluster.tmp` left behind was renamed over `cluster.key` with its
        // own mode.
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::open(tmp.path()).expect("open");
        let leftover = dir.cluster_key_path().with_extension("tmp");
        fs::write(&leftover, b"junk").expect("leftover");
        fs::set_permissions(&leftover, fs::Permissions::from_mode(0o666)).expect("chmod");
        dir.bind_cluster(Some(Keyring::new(key(1))))
            .expect("new dir");
        assert_eq!(mode(&dir.cluster_key_path()), 0o600);
    }

    #[test]
    fn a_stored_keyring_wins_over_any_key_of_its_cluster_and_refuses_others() {
        use ringkv_gossip::transport::keyring::Fingerprint;
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::open(tmp.path()).expect("open");
        dir.bind_cluster(Some(Keyring::new(key(1))))
            .expect("new dir");
        let mut rotated = Keyring::new(key(1));
        rotated.install(key(2)).expect("room");
        rotated
            .use_key(&Fingerprint::of(&key(2)))
            .expect("installed");
        rotated
            .remove(&Fingerprint::of(&key(1)))
            .expect("secondary");
        dir.store_keyring(&rotated).expect("stored");
        assert_eq!(mode(&dir.cluster_key_path()), 0o600);
        // The old key file, given again on restart, names the same cluster
        // but does not bring the removed key back.
        let (kept, _) = dir
            .bind_cluster(Some(Keyring::new(key(1))))
            .expect("same cluster");
        assert_eq!(kept, rotated);
        let (kept, _) = dir
            .bind_cluster(Some(Keyring::new(key(2))))
            .expect("installed key");
        assert_eq!(kept, rotated);
        let e = dir
            .bind_cluster(Some(Keyring::new(key(3))))
            .expect_err("another cluster");
        assert!(e.to_string().contains("belongs to another cluster"), "{e}");
        assert_eq!(dir.keyring().expect("reads"), Some(rotated));
    }
}
