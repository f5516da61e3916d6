//! Hinted handoff storage: writes a replica missed, kept durably by the
//! coordinator until the replica is back. Methods on [`Store`]; the sled
//! tree `hints` and its counters live in [`HintTree`]. Does IO.
//!
//! One tree, two kinds of entries, always changed together in one atomic
//! sled batch:
//! - the hint: `0x00 ‖ target (16 bytes) ‖ user key` → value from
//!   [`codec::encode_hint_value`] (record and creation time). One per
//!   (target, key): a newer version replaces an older one.
//! - its age index: `0x01 ‖ target ‖ created_ms (8 bytes, big-endian) ‖ user
//!   key` → empty, so a target's hints read oldest first, and expire by age,
//!   as prefix scans.
//!
//! Writers (add, remove, expire) take one mutex for the read-check-write of
//! a hint (hints are written only while a replica is down, so the lock is
//! not contended on the write path of records); readers do not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use ringkv_ring::NodeId;

use crate::codec;
use crate::error::StoreError;
use crate::record::Record;
use crate::store::Store;

/// Tag of a hint entry.
const HINT: u8 = 0;
/// Tag of an age-index entry.
const AGE: u8 = 1;
/// Length of a node id in a key.
const TARGET_LEN: usize = 16;
/// Length of a creation time in an age-index key.
const CREATED_LEN: usize = 8;

/// A write a replica missed, kept by the coordinator until the replica is
/// back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The replica that missed the write.
    pub target: NodeId,
    /// The user key.
    pub key: Vec<u8>,
    /// What the replica should apply (value or tombstone).
    pub record: Record,
    /// When the hint was made (wall-clock milliseconds); expiry counts from
    /// it.
    pub created_ms: u64,
}

/// Limits on the hints a store keeps.
#[derive(Clone, Copy, Debug)]
pub struct HintLimits {
    /// Most bytes all hints may take (keys and values in the tree, index
    /// included); default 256 MiB.
    pub max_bytes: u64,
    /// Hints older than this are expired; default 3 hours (like Cassandra's
    /// `max_hint_window`).
    pub max_age_ms: u64,
}

impl Default for HintLimits {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
            max_age_ms: 3 * 60 * 60 * 1000,
        }
    }
}

/// The `hints` tree and its counters.
pub(crate) struct HintTree {
    tree: sled::Tree,
    /// Hints stored.
    count: AtomicU64,
    /// Bytes they take, see [`hint_size`].
    bytes: AtomicU64,
    /// Held by writers across the read-check-write of one hint.
    write: Mutex<()>,
}

impl HintTree {
    /// Wraps the opened `hints` tree and counts what it holds (one scan of
    /// the hint entries, values not decoded).
    pub(crate) fn open(tree: sled::Tree) -> Result<Self, StoreError> {
        let (mut count, mut bytes) = (0u64, 0u64);
        for item in tree.scan_prefix([HINT]) {
            let (stored, value) = item?;
            let key_len = stored
                .len()
                .checked_sub(1 + TARGET_LEN)
                .ok_or_else(|| corrupt(&stored, "hint key shorter than its target"))?;
            count += 1;
            bytes += hint_size(key_len, value.len());
        }
        Ok(Self {
            tree,
            count: AtomicU64::new(count),
            bytes: AtomicU64::new(bytes),
            write: Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The mutex guards no data, only sled entries that each batch
        // leaves consistent: a panic elsewhere cannot leave them half done.
        self.write.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `hint` unless an equal or newer version is already there
    /// (then `Ok(true)`, unchanged) or it would take the total past
    /// `max_bytes` (then `Ok(false)`, unchanged). Not flushed.
    fn add(&self, hint: &Hint, limits: HintLimits) -> Result<bool, StoreError> {
        let value = codec::encode_hint_value(&hint.record, hint.created_ms)?;
        let stored = hint_key(&hint.target, &hint.key);
        let new_size = hint_size(hint.key.len(), value.len());
        let _write = self.lock();
        let old = match self.tree.get(&stored)? {
            Some(bytes) => {
                let (record, created_ms) = codec::decode_hint_value(&bytes, || describe(&stored))?;
                if !record.is_superseded_by(&hint.record) {
                    return Ok(true);
                }
                Some((created_ms, hint_size(hint.key.len(), bytes.len())))
            }
            None => None,
        };
        let old_size = old.map_or(0, |(_, size)| size);
        let total = self.bytes.load(Ordering::SeqCst);
        if new_size > old_size && total.saturating_sub(old_size) + new_size > limits.max_bytes {
            return Ok(false);
        }
        let mut batch = sled::Batch::default();
        if let Some((created_ms, _)) = old {
            batch.remove(age_key(&hint.target, created_ms, &hint.key));
        }
        batch.insert(stored, value);
        batch.insert(age_key(&hint.target, hint.created_ms, &hint.key), &[]);
        self.tree.apply_batch(batch)?;
        if old.is_none() {
            self.count.fetch_add(1, Ordering::SeqCst);
        }
        self.bytes.fetch_add(new_size, Ordering::SeqCst);
        self.bytes.fetch_sub(old_size, Ordering::SeqCst);
        Ok(true)
    }

    /// Removes the hint for (`target`, `key`) if its stored value is still
    /// `expected` (made at `created_ms`); returns whether it did.
    fn remove_if(
        &self,
        target: &NodeId,
        key: &[u8],
        created_ms: u64,
        expected: &[u8],
    ) -> Result<bool, StoreError> {
        let stored = hint_key(target, key);
        let _write = self.lock();
        let Some(current) = self.tree.get(&stored)? else {
            return Ok(false);
        };
        if current != expected {
            return Ok(false);
        }
        let mut batch = sled::Batch::default();
        batch.remove(stored);
        batch.remove(age_key(target, created_ms, key));
        self.tree.apply_batch(batch)?;
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.bytes
            .fetch_sub(hint_size(key.len(), current.len()), Ordering::SeqCst);
        Ok(true)
    }

    /// Up to `max` hints for `target`, oldest first.
    fn for_target(&self, target: &NodeId, max: usize) -> Result<Vec<Hint>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(age_prefix(target)) {
            if out.len() >= max {
                break;
            }
            let (index, _) = item?;
            let (created_ms, key) = split_age_key(&index)?;
            let stored = hint_key(target, key);
            // Read after the index entry without the lock: the hint may
            // have been removed or replaced meanwhile (a replacement has
            // its own index entry).
            let Some(value) = self.tree.get(&stored)? else {
                continue;
            };
            let (record, stored_created) = codec::decode_hint_value(&value, || describe(&stored))?;
            if stored_created != created_ms {
                continue;
            }
            out.push(Hint {
                target: *target,
                key: key.to_vec(),
                record,
                created_ms,
            });
        }
        Ok(out)
    }

    /// Distinct targets of the stored hints, in id order: one seek per
    /// target.
    fn targets(&self) -> Result<Vec<NodeId>, StoreError> {
        let mut out = Vec::new();
        let mut from = vec![HINT];
        // Terminates: `from` grows strictly past each target found, so
        // there is one iteration per distinct target plus one.
        while let Some(item) = self.tree.range(from.clone()..).next() {
            let (stored, _) = item?;
            if stored.first() != Some(&HINT) {
                break;
            }
            let target = split_hint_key(&stored)?.0;
            out.push(target);
            match u128::from_be_bytes(target.0).checked_add(1) {
                Some(next) => from = hint_prefix(&NodeId(next.to_be_bytes())),
                None => break,
            }
        }
        Ok(out)
    }

    /// Deletes the hints created before `cutoff_ms`; returns how many.
    fn expire(&self, cutoff_ms: u64) -> Result<usize, StoreError> {
        let mut expired = 0;
        for target in self.targets()? {
            let lo = age_prefix(&target);
            let mut hi = lo.clone();
            hi.extend_from_slice(&cutoff_ms.to_be_bytes());
            for item in self.tree.range(lo..hi) {
                let (index, _) = item?;
                let (created_ms, key) = split_age_key(&index)?;
                let stored = hint_key(&target, key);
                let Some(value) = self.tree.get(&stored)? else {
                    continue;
                };
                let (_, stored_created) = codec::decode_hint_value(&value, || describe(&stored))?;
                // Replaced meanwhile by a hint with another creation time:
                // that one has its own index entry.
                if stored_created == created_ms
                    && self.remove_if(&target, key, created_ms, &value)?
                {
                    expired += 1;
                }
            }
        }
        Ok(expired)
    }

    fn stats(&self) -> (u64, u64) {
        (
            self.count.load(Ordering::SeqCst),
            self.bytes.load(Ordering::SeqCst),
        )
    }
}

impl Store {
    /// Stores a hint durably: when the returned future completes it is on
    /// disk (group commit, like [`apply`](Self::apply)).
    ///
    /// A hint for a (target, key) that already has one replaces it only if
    /// its record's version is newer; otherwise nothing changes and this
    /// returns `Ok(true)` (the stored hint already carries that write or a
    /// newer one).
    ///
    /// Returns `Ok(false)`, storing nothing, when the hint would take the
    /// hints' total past `limits.max_bytes` (a replacement that does not
    /// grow the total is always taken): the caller counts a dropped hint.
    /// Never blocks on space.
    ///
    /// # Errors
    /// [`StoreError::Encode`] (nothing changed), [`StoreError::Corrupt`] if
    /// the stored hint for that (target, key) does not decode (nothing
    /// changed), [`StoreError::Sled`], or a flush error
    /// ([`StoreError::Sled`], [`StoreError::FlushTask`]) after which the
    /// hint is stored but maybe not durable.
    pub async fn add_hint(&self, hint: Hint, limits: HintLimits) -> Result<bool, StoreError> {
        if !self.hint_tree().add(&hint, limits)? {
            return Ok(false);
        }
        let ticket = self.issue_ticket();
        self.wait_durable(ticket).await?;
        Ok(true)
    }

    /// Up to `max` hints for `target`, oldest first (by `created_ms`, then
    /// key).
    ///
    /// # Errors
    /// [`StoreError::Sled`], or [`StoreError::Corrupt`] at the first hint
    /// that does not decode.
    pub fn hints_for(&self, target: &NodeId, max: usize) -> Result<Vec<Hint>, StoreError> {
        self.hint_tree().for_target(target, max)
    }

    /// Removes a delivered hint, only if the stored hint for its (target,
    /// key) is still exactly `hint` (compare-and-swap): a newer hint stored
    /// meanwhile is kept. Not flushed: a removal lost in a crash means the
    /// hint is delivered again, which applying makes harmless.
    ///
    /// # Errors
    /// [`StoreError::Encode`] if `hint` cannot be encoded (it cannot have
    /// been stored either), [`StoreError::Sled`]; nothing changed.
    pub fn remove_hint(&self, hint: &Hint) -> Result<(), StoreError> {
        let expected = codec::encode_hint_value(&hint.record, hint.created_ms)?;
        self.hint_tree()
            .remove_if(&hint.target, &hint.key, hint.created_ms, &expected)?;
        Ok(())
    }

    /// The targets that have hints, in id order.
    ///
    /// # Errors
    /// [`StoreError::Sled`], [`StoreError::Corrupt`] for a malformed key.
    pub fn hint_targets(&self) -> Result<Vec<NodeId>, StoreError> {
        self.hint_tree().targets()
    }

    /// Deletes the hints created before `now_ms - limits.max_age_ms`;
    /// returns how many. Not flushed: an expiry lost in a crash is redone.
    ///
    /// # Errors
    /// [`StoreError::Sled`], or [`StoreError::Corrupt`] at the first hint
    /// that does not decode (the ones expired before it stay expired).
    pub fn expire_hints(&self, now_ms: u64, limits: HintLimits) -> Result<usize, StoreError> {
        self.hint_tree()
            .expire(now_ms.saturating_sub(limits.max_age_ms))
    }

    /// `(count, bytes)` of the hints stored; bytes count keys and values
    /// in the tree, index included (what [`HintLimits::max_bytes`] limits).
    /// O(1): counters kept by every change and recounted at open.
    pub fn hint_stats(&self) -> (u64, u64) {
        self.hint_tree().stats()
    }
}

/// Bytes a hint takes in the tree: its key and value, and its index key.
fn hint_size(key_len: usize, value_len: usize) -> u64 {
    let hint = 1 + TARGET_LEN + key_len + value_len;
    let age = 1 + TARGET_LEN + CREATED_LEN + key_len;
    (hint + age) as u64
}

fn hint_prefix(target: &NodeId) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + TARGET_LEN);
    out.push(HINT);
    out.extend_from_slice(target.as_bytes());
    out
}

fn hint_key(target: &NodeId, key: &[u8]) -> Vec<u8> {
    let mut out = hint_prefix(target);
    out.extend_from_slice(key);
    out
}

fn age_prefix(target: &NodeId) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + TARGET_LEN + CREATED_LEN);
    out.push(AGE);
    out.extend_from_slice(target.as_bytes());
    out
}

fn age_key(target: &NodeId, created_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut out = age_prefix(target);
    out.extend_from_slice(&created_ms.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// A hint key's target and user key.
fn split_hint_key(stored: &[u8]) -> Result<(NodeId, &[u8]), StoreError> {
    stored
        .split_first()
        .filter(|(&tag, _)| tag == HINT)
        .and_then(|(_, rest)| rest.split_first_chunk::<TARGET_LEN>())
        .map(|(target, key)| (NodeId(*target), key))
        .ok_or_else(|| corrupt(stored, "not a hint key"))
}

/// An age-index key's creation time and user key.
fn split_age_key(stored: &[u8]) -> Result<(u64, &[u8]), StoreError> {
    stored
        .split_first()
        .filter(|(&tag, _)| tag == AGE)
        .and_then(|(_, rest)| rest.get(TARGET_LEN..))
        .and_then(|rest| rest.split_first_chunk::<CREATED_LEN>())
        .map(|(created, key)| (u64::from_be_bytes(*created), key))
        .ok_or_else(|| corrupt(stored, "not a hint age-index key"))
}

fn corrupt(stored: &[u8], reason: &str) -> StoreError {
    StoreError::Corrupt {
        what: describe(stored),
        reason: reason.to_owned(),
    }
}

/// A hints-tree key for error messages: its hex, shortened.
fn describe(stored: &[u8]) -> String {
    crate::store::describe_key("hint", stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back_into_their_parts() {
        let target = NodeId::from_name("t");
        let stored = hint_key(&target, b"key");
        assert_eq!(split_hint_key(&stored).unwrap(), (target, &b"key"[..]));
        let index = age_key(&target, 42, b"key");
        assert_eq!(split_age_key(&index).unwrap(), (42, &b"key"[..]));
        assert!(split_hint_key(&index).is_err());
        assert!(split_age_key(&stored).is_err());
        assert!(split_hint_key(&[HINT, 1, 2]).is_err());
        assert!(split_age_key(&age_prefix(&target)).is_err());
        // The age index orders by creation time before the key.
        assert!(age_key(&target, 1, b"z") < age_key(&target, 2, b"a"));
    }
}
