//! The sled store: trees `records` (store key from [`keys`], value from
//! [`codec`]), `hints` (see [`hints`](crate::hints)) and `meta`
//! (generation, HLC high-water mark); apply-if-newer per key; group commit.
//! Does IO.
//!
//! Group commit: every write, once done in sled, takes a ticket from a
//! counter. A caller that needs durability waits until a flush that
//! *started after its ticket was issued* has finished. One caller at a time
//! leads a flush (an async mutex); it first reads the counter, flushes, then
//! marks every ticket up to what it read durable, so callers that queued
//! behind it during the flush are covered by one flush of their own instead
//! of one each.

use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ringkv_ring::TokenRange;

use crate::codec;
use crate::error::StoreError;
use crate::hints::HintTree;
use crate::keys;
use crate::record::{Hlc, Record, Version};

const RECORDS: &str = "records";
const HINTS: &str = "hints";
const META: &str = "meta";
const META_GENERATION: &[u8] = b"generation";
const META_HLC_FLOOR: &[u8] = b"hlc_floor";
/// Compare-and-swap attempts on one key before giving up: every failed
/// attempt means another writer changed the key in between.
const MAX_CAS_ATTEMPTS: usize = 1_000;

/// The node's record store. Cheap to clone (an `Arc` inside); `Send + Sync`.
///
/// Durable writes ([`apply`](Self::apply), [`sync`](Self::sync)) must be
/// awaited inside a tokio runtime (the flush runs on its blocking pool).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    db: sled::Db,
    records: sled::Tree,
    hints: HintTree,
    meta: sled::Tree,
    generation: u32,
    hlc_floor: Mutex<Hlc>,
    /// Records in `records`, tombstones included.
    count: AtomicUsize,
    commit: GroupCommit,
}

#[derive(Default)]
struct GroupCommit {
    /// Tickets issued so far; a ticket is issued after its write is done.
    issued: AtomicU64,
    /// Every ticket up to this one is covered by a finished flush.
    durable: AtomicU64,
    /// Held by the caller leading a flush.
    leader: tokio::sync::Mutex<()>,
}

impl Store {
    /// Opens or creates the store at `dir`.
    ///
    /// If the records tree is empty (a new store, or one recreated after
    /// its disk was lost or found unreadable) a new generation is persisted
    /// in meta before this returns: the larger of the previous one plus one
    /// and the wall clock in seconds, so that a peer that lost its disk, and
    /// with it the record of its old generation, still gets a new one.
    /// Reopening a store that holds records keeps its generation.
    ///
    /// Never deletes anything: an unreadable store is an error.
    ///
    /// # Errors
    /// [`StoreError::Sled`] if sled cannot open the directory (missing
    /// permissions, locked by another process, corrupt),
    /// [`StoreError::Corrupt`] if a meta entry does not decode.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open()?;
        let records = db.open_tree(RECORDS)?;
        // Counts the hints it holds: O(hints) at open.
        let hints = HintTree::open(db.open_tree(HINTS)?)?;
        let meta = db.open_tree(META)?;

        let stored_generation = meta
            .get(META_GENERATION)?
            .map(|v| codec::decode_generation(&v))
            .transpose()?;
        let generation = match stored_generation {
            Some(generation) if !records.is_empty() => generation,
            previous => {
                let generation = next_generation(previous, wall_secs());
                meta.insert(META_GENERATION, &codec::encode_generation(generation))?;
                db.flush()?;
                generation
            }
        };
        let hlc_floor = meta
            .get(META_HLC_FLOOR)?
            .map(|v| codec::decode_hlc(&v))
            .transpose()?
            .unwrap_or_default();
        let count = records.len();

        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                db,
                records,
                hints,
                meta,
                generation,
                hlc_floor: Mutex::new(hlc_floor),
                count: AtomicUsize::new(count),
                commit: GroupCommit::default(),
            }),
        })
    }

    /// This store's generation, stamped on the versions its node writes.
    pub fn generation(&self) -> u32 {
        self.inner.generation
    }

    /// Persisted HLC high-water mark: the node's [`Clock`](crate::Clock)
    /// starts above it.
    pub fn hlc_floor(&self) -> Hlc {
        *self
            .inner
            .hlc_floor
            .lock()
            .expect("hlc floor lock poisoned")
    }

    /// Records the HLC high-water mark, if above the current one (cheap:
    /// no flush of its own; it becomes durable with the next
    /// [`apply`](Self::apply) or [`sync`](Self::sync), or sled's periodic
    /// flush).
    ///
    /// # Errors
    /// [`StoreError::Sled`]; the mark is then unchanged.
    pub fn store_hlc_floor(&self, hlc: Hlc) -> Result<(), StoreError> {
        let mut floor = self
            .inner
            .hlc_floor
            .lock()
            .expect("hlc floor lock poisoned");
        if hlc > *floor {
            self.inner
                .meta
                .insert(META_HLC_FLOOR, &codec::encode_hlc(hlc))?;
            *floor = hlc;
        }
        Ok(())
    }

    /// Applies `record` to `key` if it is newer than what is stored
    /// (atomically per key; idempotent). Returns whether it changed
    /// anything.
    ///
    /// Durable when the returned future completes, whether or not it
    /// changed anything (an equal record written by someone else is flushed
    /// too): concurrent callers share one flush, and a caller never returns
    /// before a flush that started after its write was done.
    ///
    /// # Errors
    /// [`StoreError::Encode`] (nothing changed), [`StoreError::Corrupt`] if
    /// the stored record does not decode (nothing changed),
    /// [`StoreError::Contention`], [`StoreError::Sled`], or a flush error
    /// ([`StoreError::Sled`], [`StoreError::FlushTask`]) after which the
    /// write is applied but maybe not durable.
    pub async fn apply(&self, key: &[u8], record: Record) -> Result<bool, StoreError> {
        let (changed, ticket) = self.apply_inner(key, &record)?;
        self.wait_durable(ticket).await?;
        Ok(changed)
    }

    /// [`apply`](Self::apply) without waiting for the flush (for batches;
    /// call [`sync`](Self::sync) after).
    ///
    /// # Errors
    /// As [`apply`](Self::apply), without the flush errors.
    pub fn apply_nosync(&self, key: &[u8], record: Record) -> Result<bool, StoreError> {
        self.apply_inner(key, &record).map(|(changed, _)| changed)
    }

    /// Makes every write done before this call durable (one flush shared
    /// with concurrent callers).
    ///
    /// # Errors
    /// [`StoreError::Sled`] or [`StoreError::FlushTask`]: the writes may
    /// not be durable.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let ticket = self.inner.commit.issue();
        self.wait_durable(ticket).await
    }

    /// The record stored for `key`, tombstone or value.
    ///
    /// # Errors
    /// [`StoreError::Sled`], [`StoreError::Corrupt`].
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let stored = keys::encode(key);
        self.inner
            .records
            .get(&stored)?
            .map(|v| codec::decode_record(&v, || describe(&stored)))
            .transpose()
    }

    /// The version of the record of `key`, if any, read without decoding
    /// or copying its value.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn version_of(&self, key: &[u8]) -> Result<Option<Version>, StoreError> {
        let stored = keys::encode(key);
        self.inner
            .records
            .get(&stored)?
            .map(|v| codec::decode_record_version(&v, || describe(&stored)))
            .transpose()
    }

    /// Records whose key position falls in `range` (`(start, end]`,
    /// wrapping), in store order (ring position, then key): `(user key,
    /// record)`. A record that does not decode is an `Err` item; the scan
    /// goes on after it.
    pub fn scan(
        &self,
        range: &TokenRange,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Record), StoreError>> + '_ {
        keys::scan_bounds(range)
            .into_iter()
            .flat_map(move |(lo, hi)| {
                let hi = hi.map_or(Bound::Unbounded, Bound::Excluded);
                self.inner.records.range((Bound::Included(lo), hi))
            })
            .map(|item| {
                let (stored, value) = item?;
                let (_, key) = keys::decode(&stored).ok_or_else(|| StoreError::Corrupt {
                    what: describe(&stored),
                    reason: "record key shorter than its position".to_owned(),
                })?;
                let record = codec::decode_record(&value, || describe(&stored))?;
                Ok((key.to_vec(), record))
            })
    }

    /// Deletes dead records that died before `before_ms` (wall-clock
    /// milliseconds, the grace already taken off): tombstones whose
    /// version's physical time is older, and expired values whose expiry
    /// is older (see [`Record::dead_since_ms`]). Returns how many. A record
    /// replaced concurrently is left alone. Not flushed: a collection lost
    /// in a crash is redone.
    ///
    /// # Errors
    /// [`StoreError::Sled`], or [`StoreError::Corrupt`] at the first record
    /// that does not decode (the ones before it are collected).
    pub fn collect_tombstones(&self, before_ms: u64) -> Result<usize, StoreError> {
        let mut collected = 0;
        for item in self.inner.records.iter() {
            let (stored, value) = item?;
            let record = codec::decode_record(&value, || describe(&stored))?;
            // `before_ms` is at or before now, so a value expired by then
            // is expired now.
            if record
                .dead_since_ms(before_ms)
                .is_none_or(|since| since >= before_ms)
            {
                continue;
            }
            let swapped =
                self.inner
                    .records
                    .compare_and_swap(&stored, Some(&value), None::<&[u8]>)?;
            if swapped.is_ok() {
                self.inner.count.fetch_sub(1, Ordering::SeqCst);
                collected += 1;
            }
        }
        Ok(collected)
    }

    /// Number of records, tombstones included.
    pub fn len(&self) -> usize {
        self.inner.count.load(Ordering::SeqCst)
    }

    /// Whether the store holds no records (not even tombstones).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The records tree (for the range operations).
    pub(crate) fn records_tree(&self) -> &sled::Tree {
        &self.inner.records
    }

    /// The meta tree (for progress entries).
    pub(crate) fn meta_tree(&self) -> &sled::Tree {
        &self.inner.meta
    }

    /// Recounts the records after a bulk deletion.
    pub(crate) fn recount(&self) {
        self.inner
            .count
            .store(self.inner.records.len(), Ordering::SeqCst);
    }

    /// The hints tree.
    pub(crate) fn hint_tree(&self) -> &HintTree {
        &self.inner.hints
    }

    /// A group-commit ticket for a write that is done (to pass to
    /// [`wait_durable`](Self::wait_durable)).
    pub(crate) fn issue_ticket(&self) -> u64 {
        self.inner.commit.issue()
    }

    /// Applies without flushing; returns whether it changed anything and
    /// the ticket to wait on for durability.
    fn apply_inner(&self, key: &[u8], record: &Record) -> Result<(bool, u64), StoreError> {
        let inner = &self.inner;
        let stored = keys::encode(key);
        let encoded = codec::encode_record(record)?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let current = inner.records.get(&stored)?;
            if let Some(bytes) = &current {
                let old = codec::decode_record(bytes, || describe(&stored))?;
                if !old.is_superseded_by(record) {
                    // Nothing to change, but what is there may not be
                    // durable yet: the ticket covers it.
                    return Ok((false, inner.commit.issue()));
                }
            }
            let swapped = inner.records.compare_and_swap(
                &stored,
                current.as_ref(),
                Some(encoded.as_slice()),
            )?;
            if swapped.is_ok() {
                if current.is_none() {
                    inner.count.fetch_add(1, Ordering::SeqCst);
                }
                return Ok((true, inner.commit.issue()));
            }
        }
        Err(StoreError::Contention {
            attempts: MAX_CAS_ATTEMPTS,
        })
    }

    /// Returns once a flush that started after `ticket` was issued has
    /// finished.
    pub(crate) async fn wait_durable(&self, ticket: u64) -> Result<(), StoreError> {
        let commit = &self.inner.commit;
        if commit.durable.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let _leader = commit.leader.lock().await;
        if commit.durable.load(Ordering::SeqCst) >= ticket {
            // The flush led by the caller before us covered this ticket.
            return Ok(());
        }
        // Every ticket up to `target` was issued after its write was done,
        // so the flush below, started after this read, covers them all.
        let target = commit.issued.load(Ordering::SeqCst);
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::FlushTask(e.to_string()))??;
        commit.durable.fetch_max(target, Ordering::SeqCst);
        Ok(())
    }
}

impl GroupCommit {
    /// A ticket for a write that is done.
    fn issue(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::SeqCst) + 1
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .field("generation", &self.inner.generation)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// The generation a store gets when it starts empty: above the previous
/// one if it is known, and at least the wall clock in seconds if not (a
/// lost disk took the previous one with it). Never 0.
fn next_generation(previous: Option<u32>, wall_secs: u64) -> u32 {
    let from_clock = u32::try_from(wall_secs).unwrap_or(u32::MAX);
    let after_previous = previous.map_or(1, |g| g.saturating_add(1));
    after_previous.max(from_clock).max(1)
}

/// Wall-clock seconds since the Unix epoch (0 if the clock is before it).
fn wall_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A store key for error messages: its hex, shortened.
fn describe(stored: &[u8]) -> String {
    describe_key("record", stored)
}

/// `what` and the key's hex, shortened to 40 bytes, for error messages
/// about any tree.
pub(crate) fn describe_key(what: &str, stored: &[u8]) -> String {
    let mut out = format!("{what} ");
    for b in stored.iter().take(40) {
        out.push_str(&format!("{b:02x}"));
    }
    if stored.len() > 40 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_generation_is_above_the_previous_and_the_clock() {
        assert_eq!(next_generation(None, 0), 1);
        assert_eq!(next_generation(None, 1_700_000_000), 1_700_000_000);
        assert_eq!(
            next_generation(Some(1_700_000_000), 1_700_000_000),
            1_700_000_001
        );
        assert_eq!(next_generation(Some(5), 1_700_000_000), 1_700_000_000);
        assert_eq!(next_generation(Some(u32::MAX), 0), u32::MAX);
        assert_eq!(next_generation(None, u64::MAX), u32::MAX);
    }
}
