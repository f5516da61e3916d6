//! A peer's keyring: the cluster keys it holds, as Serf's keyring does.
//! Pure (no IO): the rules for installing, using and removing keys, the
//! fingerprints operators name keys by, and the text form stored in a
//! data dir's `cluster.key`.
//!
//! - The **primary** key signs this peer's certificate, and this peer
//!   presents that certificate on every new connection, as server and as
//!   client.
//! - Every installed key, primary or not, is trusted: a peer certificate
//!   signed by any of them is a peer's, a client credential signed by any
//!   of their client CAs a client's.
//! - The primary is never removed; a key becomes primary only once it is
//!   installed (the cluster-wide check, that every live member has it, is
//!   the caller's).
//! - A key that was the primary before is **retired** until it is
//!   removed: only a retired key vouches for the primary (signs a cross
//!   certificate of the primary's CA, `live.rs`), so holders of an older
//!   key still reach peers that switched. A key that was only installed
//!   vouches for nothing: otherwise the new key would vouch for the old
//!   one, and whoever holds the old key (the leaked one) could chain a
//!   certificate of their own through that cross certificate to the new
//!   key, for good.
//! - The **cluster id** (carried by every gossip message and bound into
//!   every signed statement) is the first key's, and stays when the keys
//!   rotate: it names the cluster, it is not a secret.
//!
//! The text form: one key per line (`rkv1-...`, followed by the word
//! `retired` for a retired key), the primary first, then
//! `cluster-id` and 32 hex digits when the cluster id is not the primary's
//! own. A keyring of one key whose id it is, is exactly the one line that
//! `cluster.key` always held, so every older reader of that file still
//! reads it. Lines starting with `#` are comments.

use std::fmt;

use thiserror::Error;

use crate::proto::message::ClusterId;
use crate::transport::tls::{hex_value, ClusterKey};

/// Most keys a keyring holds. Each one costs a certificate in every
/// handshake (see [`crate::transport::live`]); a rotation needs two.
pub const KEYS_MAX: usize = 8;

/// Longest keyring text accepted: [`KEYS_MAX`] key lines, the id line
/// and room for comments.
pub const KEYRING_TEXT_MAX: usize = 4096;

/// Fewest hex digits a fingerprint given by an operator may have.
pub const FINGERPRINT_MIN_DIGITS: usize = 8;

/// Word before the cluster id in the text form.
const CLUSTER_ID_WORD: &str = "cluster-id";
/// The word after a retired key's line in the text form.
const RETIRED_WORD: &str = "retired";

/// A keyring operation was refused. No variant changes the keyring: the
/// operation is checked whole before anything is applied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyringError {
    /// A fingerprint is not 8 to 32 hex digits.
    /// (The text is not repeated: it could be a key given by mistake.)
    #[error("invalid key fingerprint: expected 8 to 32 hex digits (as `ringkv keyring list` shows them), got {0} characters")]
    BadFingerprint(usize),
    /// No installed key has this fingerprint.
    #[error("no installed key has fingerprint {0}")]
    NotInstalled(String),
    /// More than one installed key starts with this fingerprint.
    #[error("fingerprint {0} matches more than one installed key: give more digits")]
    Ambiguous(String),
    /// The key to remove is the primary.
    #[error("key {0} is the primary key: switch to another key (`ringkv keyring use`) before removing it")]
    RemovePrimary(String),
    /// The keyring is full.
    #[error("the keyring holds {KEYS_MAX} keys already: remove one first")]
    Full,
    /// The text is not a keyring (the reason never repeats a key).
    #[error("invalid keyring: {0}")]
    BadText(String),
}

/// What an operation did. Repeating one is harmless: it reports that it
/// had nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The keyring changed.
    Changed,
    /// It was so already (key installed, already primary, not installed).
    Unchanged,
}

/// A key's fingerprint: the hex of its [`ClusterId`], which is public
/// (derived one way from the key) and reveals nothing of the key. Shown
/// as its first 8 digits, the short form the startup banner prints; an
/// operator may give any prefix of 8 to 32 digits.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The full (32-digit) fingerprint of `key`.
    pub fn of(key: &ClusterKey) -> Self {
        Self(
            key.cluster_id()
                .0
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// Parses what an operator typed: 8 to 32 hex digits, any case.
    ///
    /// # Errors
    /// [`KeyringError::BadFingerprint`] otherwise.
    pub fn parse(text: &str) -> Result<Self, KeyringError> {
        let t = text.trim();
        let ok = (FINGERPRINT_MIN_DIGITS..=32).contains(&t.len())
            && t.bytes().all(|b| hex_value(b).is_some());
        if !ok {
            return Err(KeyringError::BadFingerprint(t.chars().count()));
        }
        Ok(Self(t.to_ascii_lowercase()))
    }

    /// The short form: the first 8 digits.
    pub fn short(&self) -> &str {
        &self.0[..FINGERPRINT_MIN_DIGITS.min(self.0.len())]
    }

    /// All the digits given (32 for [`Fingerprint::of`]).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `key` has this fingerprint (this is a prefix of its own).
    pub fn matches(&self, key: &ClusterKey) -> bool {
        Self::of(key).0.starts_with(&self.0)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.short())
    }
}

/// The keys a peer holds: a primary and up to [`KEYS_MAX`]` - 1` more,
/// and the cluster's id. `Debug` shows fingerprints only.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyring {
    cluster: ClusterId,
    /// The primary first; no key twice; never empty.
    keys: Vec<ClusterKey>,
    /// The installed keys that were the primary before (never the
    /// primary itself): only these vouch for the primary.
    retired: Vec<ClusterKey>,
}

impl Keyring {
    /// A keyring of one key, in the cluster that key names (a new
    /// cluster, or a data dir from before keyrings).
    pub fn new(primary: ClusterKey) -> Self {
        Self {
            cluster: primary.cluster_id(),
            keys: vec![primary],
            retired: Vec::new(),
        }
    }

    /// The cluster's id: the first key's, whatever the keys are now.
    pub fn cluster_id(&self) -> ClusterId {
        self.cluster
    }

    /// The key this peer signs its certificate with.
    pub fn primary(&self) -> &ClusterKey {
        &self.keys[0]
    }

    /// Every key, the primary first.
    pub fn keys(&self) -> &[ClusterKey] {
        &self.keys
    }

    /// The fingerprints of every key, the primary first.
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.keys.iter().map(Fingerprint::of).collect()
    }

    /// The installed keys that were the primary before, in key order:
    /// the only ones that vouch for the primary (cross certificates).
    pub fn retired(&self) -> impl Iterator<Item = &ClusterKey> {
        self.keys[1..].iter().filter(|k| self.retired.contains(k))
    }

    /// Whether `key` is installed.
    pub fn holds(&self, key: &ClusterKey) -> bool {
        self.keys.contains(key)
    }

    /// The index of the one key `fp` names, if any.
    ///
    /// # Errors
    /// [`KeyringError::Ambiguous`] if it names more than one.
    fn find(&self, fp: &Fingerprint) -> Result<Option<usize>, KeyringError> {
        let mut found = self.keys.iter().enumerate().filter(|(_, k)| fp.matches(k));
        match (found.next(), found.next()) {
            (None, _) => Ok(None),
            (Some((i, _)), None) => Ok(Some(i)),
            (Some(_), Some(_)) => Err(KeyringError::Ambiguous(fp.as_str().to_owned())),
        }
    }

    /// The installed key `fp` names.
    ///
    /// # Errors
    /// None or more than one does.
    pub fn key(&self, fp: &Fingerprint) -> Result<&ClusterKey, KeyringError> {
        match self.find(fp)? {
            Some(i) => Ok(&self.keys[i]),
            None => Err(KeyringError::NotInstalled(fp.to_string())),
        }
    }

    /// Installs `key` as a secondary key: trusted, not presented.
    ///
    /// # Errors
    /// [`KeyringError::Full`]; nothing changed.
    pub fn install(&mut self, key: ClusterKey) -> Result<Change, KeyringError> {
        if self.holds(&key) {
            return Ok(Change::Unchanged);
        }
        if self.keys.len() >= KEYS_MAX {
            return Err(KeyringError::Full);
        }
        self.keys.push(key);
        Ok(Change::Changed)
    }

    /// Makes the installed key `fp` names the primary; the old primary
    /// stays installed.
    ///
    /// # Errors
    /// No installed key or more than one has that fingerprint; nothing
    /// changed.
    pub fn use_key(&mut self, fp: &Fingerprint) -> Result<Change, KeyringError> {
        match self.find(fp)? {
            None => Err(KeyringError::NotInstalled(fp.to_string())),
            Some(0) => Ok(Change::Unchanged),
            Some(i) => {
                let key = self.keys.remove(i);
                self.retired.retain(|k| k != &key);
                self.retired.push(self.keys[0].clone());
                self.keys.insert(0, key);
                Ok(Change::Changed)
            }
        }
    }

    /// Removes the secondary key `fp` names; one not installed is
    /// nothing to do.
    ///
    /// # Errors
    /// It is the primary, or the fingerprint is ambiguous; nothing
    /// changed.
    pub fn remove(&mut self, fp: &Fingerprint) -> Result<Change, KeyringError> {
        match self.find(fp)? {
            None => Ok(Change::Unchanged),
            Some(0) => Err(KeyringError::RemovePrimary(fp.to_string())),
            Some(i) => {
                let key = self.keys.remove(i);
                self.retired.retain(|k| k != &key);
                Ok(Change::Changed)
            }
        }
    }

    /// The text form (secret: it holds every key).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for key in &self.keys {
            out.push_str(&key.to_string());
            if self.retired.contains(key) {
                out.push(' ');
                out.push_str(RETIRED_WORD);
            }
            out.push('\n');
        }
        if self.cluster != self.primary().cluster_id() {
            out.push_str(CLUSTER_ID_WORD);
            out.push(' ');
            for b in self.cluster.0 {
                out.push_str(&format!("{b:02x}"));
            }
            out.push('\n');
        }
        out
    }

    /// Parses [`Keyring::to_text`]'s form, which includes a plain key
    /// file (one line).
    ///
    /// # Errors
    /// [`KeyringError::BadText`] naming the line and what is wrong with
    /// it (never the key).
    pub fn parse(text: &str) -> Result<Self, KeyringError> {
        if text.len() > KEYRING_TEXT_MAX {
            return Err(KeyringError::BadText(format!(
                "{} bytes, more than the {KEYRING_TEXT_MAX} a keyring takes",
                text.len()
            )));
        }
        let bad = |n: usize, why: String| KeyringError::BadText(format!("line {n}: {why}"));
        let mut keys: Vec<ClusterKey> = Vec::new();
        let mut retired: Vec<ClusterKey> = Vec::new();
        let mut cluster = None;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(id) = line.strip_prefix(CLUSTER_ID_WORD) {
                if cluster.is_some() {
                    return Err(bad(n, "a second cluster-id".to_owned()));
                }
                cluster = Some(
                    parse_id(id.trim())
                        .ok_or_else(|| bad(n, "cluster-id needs 32 hex digits".to_owned()))?,
                );
                continue;
            }
            let (line, is_retired) = match line.split_once(char::is_whitespace) {
                Some((key, word)) if word.trim() == RETIRED_WORD => (key, true),
                Some(_) => {
                    return Err(bad(
                        n,
                        format!("a key may only be followed by `{RETIRED_WORD}`"),
                    ))
                }
                None => (line, false),
            };
            let key = ClusterKey::parse(line).map_err(|e| bad(n, e.to_string()))?;
            if keys.contains(&key) {
                return Err(bad(n, "the same key twice".to_owned()));
            }
            if keys.len() >= KEYS_MAX {
                return Err(bad(n, format!("more than {KEYS_MAX} keys")));
            }
            if is_retired {
                if keys.is_empty() {
                    return Err(bad(n, "the primary cannot be retired".to_owned()));
                }
                retired.push(key.clone());
            }
            keys.push(key);
        }
        let Some(primary) = keys.first() else {
            return Err(KeyringError::BadText("no key in it".to_owned()));
        };
        Ok(Self {
            cluster: cluster.unwrap_or_else(|| primary.cluster_id()),
            keys,
            retired,
        })
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("primary", &Fingerprint::of(self.primary()))
            .field("keys", &self.fingerprints())
            .finish()
    }
}

fn parse_id(hex: &str) -> Option<ClusterId> {
    let bytes = hex.as_bytes();
    if bytes.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        id[i] = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(ClusterId(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ClusterKey {
        ClusterKey::from_bytes([n; 32])
    }

    fn fp(n: u8) -> Fingerprint {
        Fingerprint::of(&key(n))
    }

    #[test]
    fn install_adds_a_trusted_key_and_keeps_the_primary() {
        let mut ring = Keyring::new(key(1));
        assert_eq!(ring.install(key(2)), Ok(Change::Changed));
        assert_eq!(ring.primary(), &key(1));
        assert_eq!(ring.fingerprints(), vec![fp(1), fp(2)]);
        assert_eq!(
            ring.install(key(2)),
            Ok(Change::Unchanged),
            "again: nothing to do"
        );
        assert_eq!(ring.install(key(1)), Ok(Change::Unchanged));
        assert_eq!(ring.keys().len(), 2);
    }

    #[test]
    fn a_full_keyring_refuses_another_key_and_stays_as_it_was() {
        let mut ring = Keyring::new(key(0));
        for n in 1..KEYS_MAX as u8 {
            ring.install(key(n)).expect("room");
        }
        let before = ring.clone();
        assert_eq!(ring.install(key(99)), Err(KeyringError::Full));
        assert_eq!(ring, before);
    }

    #[test]
    fn use_switches_the_primary_only_to_an_installed_key() {
        let mut ring = Keyring::new(key(1));
        let before = ring.clone();
        assert_eq!(
            ring.use_key(&fp(2)),
            Err(KeyringError::NotInstalled(fp(2).to_string()))
        );
        assert_eq!(ring, before, "a refused use changes nothing");
        ring.install(key(2)).expect("installs");
        assert_eq!(ring.use_key(&fp(2)), Ok(Change::Changed));
        assert_eq!(ring.primary(), &key(2));
        assert!(ring.holds(&key(1)), "the old primary stays installed");
        assert_eq!(ring.use_key(&fp(2)), Ok(Change::Unchanged));
        // A short fingerprint (8 digits, as listed) names the key too.
        let short = Fingerprint::parse(fp(1).short()).expect("8 digits");
        assert_eq!(ring.use_key(&short), Ok(Change::Changed));
        assert_eq!(ring.primary(), &key(1));
    }

    #[test]
    fn remove_refuses_the_primary_and_drops_a_secondary() {
        let mut ring = Keyring::new(key(1));
        ring.install(key(2)).expect("installs");
        let before = ring.clone();
        assert_eq!(
            ring.remove(&fp(1)),
            Err(KeyringError::RemovePrimary(fp(1).to_string()))
        );
        assert_eq!(ring, before, "a refused remove changes nothing");
        ring.use_key(&fp(2)).expect("installed");
        assert_eq!(ring.remove(&fp(1)), Ok(Change::Changed));
        assert_eq!(ring.keys(), &[key(2)]);
        assert!(!ring.holds(&key(1)));
        assert_eq!(ring.remove(&fp(1)), Ok(Change::Unchanged), "gone already");
        assert_eq!(
            ring.remove(&fp(2)),
            Err(KeyringError::RemovePrimary(fp(2).to_string()))
        );
    }

    #[test]
    fn the_cluster_id_outlives_the_key_it_came_from() {
        let mut ring = Keyring::new(key(1));
        let id = key(1).cluster_id();
        ring.install(key(2)).expect("installs");
        ring.use_key(&fp(2)).expect("installed");
        ring.remove(&fp(1)).expect("secondary");
        assert_eq!(ring.cluster_id(), id);
        assert_ne!(ring.primary().cluster_id(), id);
    }

    #[test]
    fn fingerprints_are_hex_prefixes_and_bad_ones_get_a_clear_error() {
        assert_eq!(fp(1).as_str().len(), 32);
        assert_eq!(fp(1).to_string().len(), 8);
        assert!(Fingerprint::parse(fp(1).as_str())
            .expect("32 digits")
            .matches(&key(1)));
        assert!(Fingerprint::parse(&fp(1).short().to_uppercase())
            .expect("any case")
            .matches(&key(1)));
        assert!(!Fingerprint::parse(fp(1).short())
            .expect("8")
            .matches(&key(2)));
        for bad in [
            "",
            "abc",
            "1234567",
            "zzzzzzzz",
            &"0".repeat(33),
            &key(1).to_string(),
        ] {
            let e = Fingerprint::parse(bad).expect_err(bad);
            assert!(e.to_string().contains("8 to 32 hex digits"), "{e}");
            assert!(
                !e.to_string().contains(&key(1).to_string()[5..20]),
                "echoes a key: {e}"
            );
        }
    }

    #[test]
    fn text_round_trips_and_one_key_is_the_old_key_file() {
        let one = Keyring::new(key(1));
        assert_eq!(one.to_text(), format!("{}\n", key(1)));
        assert_eq!(Keyring::parse(&one.to_text()), Ok(one));

        let mut ring = Keyring::new(key(1));
        ring.install(key(2)).expect("installs");
        ring.use_key(&fp(2)).expect("installed");
        ring.remove(&fp(1)).expect("secondary");
        ring.install(key(3)).expect("installs");
        let text = ring.to_text();
        assert!(text.contains("cluster-id "), "{text}");
        assert_eq!(Keyring::parse(&text), Ok(ring.clone()));
        let commented = format!("# ringkv keyring\n\n{text}");
        assert_eq!(Keyring::parse(&commented), Ok(ring));
    }

    #[test]
    fn bad_text_is_refused_naming_the_line_never_the_key() {
        let k = key(1).to_string();
        for (text, want) in [
            (String::new(), "no key"),
            ("# only a comment\n".to_owned(), "no key"),
            (format!("{k}\n{k}\n"), "line 2: the same key twice"),
            (
                format!("{k}\ncluster-id 12\n"),
                "line 2: cluster-id needs 32 hex",
            ),
            (
                format!("{k}\n{}x\n", &k[..k.len() - 1]),
                "line 2: invalid cluster key",
            ),
            ("x".repeat(KEYRING_TEXT_MAX + 1), "more than the 4096"),
        ] {
            let e = Keyring::parse(&text).expect_err(&text).to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains(&k[5..20]), "echoes a key: {e}");
        }
        let too_many: String = (0..=KEYS_MAX as u8)
            .map(|n| format!("{}\n", key(n)))
            .collect();
        assert!(Keyring::parse(&too_many)
            .expect_err("too many")
            .to_string()
            .contains("more than 8 keys"));
    }

    #[test]
    fn only_a_former_primary_is_retired_and_the_text_keeps_it() {
        let mut ring = Keyring::new(key(1));
        ring.install(key(2)).expect("installs");
        assert_eq!(ring.retired().count(), 0, "installed is not retired");
        ring.use_key(&fp(2)).expect("installed");
        assert_eq!(ring.retired().collect::<Vec<_>>(), [&key(1)]);
        let text = ring.to_text();
        assert!(text.contains(&format!("{} retired\n", key(1))), "{text}");
        assert_eq!(Keyring::parse(&text), Ok(ring.clone()));
        // Switching back: the new primary is no longer retired, the one it
        // replaces is.
        ring.use_key(&fp(1)).expect("installed");
        assert_eq!(ring.retired().collect::<Vec<_>>(), [&key(2)]);
        ring.remove(&fp(2)).expect("secondary");
        assert_eq!(ring.retired().count(), 0);
        assert!(!ring.to_text().contains("retired"));
    }

    #[test]
    fn a_retired_primary_or_another_word_is_refused() {
        let (k1, k2) = (key(1).to_string(), key(2).to_string());
        for (text, want) in [
            (
                format!("{k1} retired\n"),
                "line 1: the primary cannot be retired",
            ),
            (
                format!("{k1}\n{k2} revoked\n"),
                "line 2: a key may only be followed",
            ),
        ] {
            let e = Keyring::parse(&text).expect_err(&text).to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn debug_shows_fingerprints_only() {
        let mut ring = Keyring::new(key(1));
        ring.install(key(2)).expect("installs");
        let debug = format!("{ring:?}");
        assert!(debug.contains(fp(2).short()), "{debug}");
        for k in [key(1), key(2)] {
            assert!(!debug.contains(&k.to_string()[5..21]), "{debug}");
        }
    }
}
