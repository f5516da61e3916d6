//! Range operations for handoff and anti-entropy: pages of records in
//! ring order with a resume cursor, blake3 summaries of a range, deleting
//! a range, and small named progress entries (transfer checkpoints) in the
//! meta tree. Does IO.
//!
//! A cursor is the store key (position, then user key) of the last record
//! returned: the next page starts strictly after it, so a transfer resumes
//! exactly where it stopped, whatever was written meanwhile.

use std::ops::Bound;

use ringkv_ring::TokenRange;

use crate::codec;
use crate::error::StoreError;
use crate::keys;
use crate::record::{Record, Version};
use crate::store::{describe_key, Store};

/// Prefix of progress entries in the meta tree.
const PROGRESS_PREFIX: &[u8] = b"progress/";

/// One page of a range, in store order.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// `(user key, record)`, in ring order.
    pub records: Vec<(Vec<u8>, Record)>,
    /// Where the next page starts (after this store key); `None` when the
    /// range is exhausted.
    pub next: Option<Vec<u8>>,
    /// Encoded bytes of the records in the page (values included).
    pub bytes: usize,
}

/// Keys and versions of a page, and the cursor of the next one.
pub type VersionPage = (Vec<(Vec<u8>, Version)>, Option<Vec<u8>>);

/// A blake3 summary of the records in a range: equal summaries mean equal
/// contents (keys, versions, values and tombstones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// blake3 over every (store key, encoded record) in order.
    pub hash: [u8; 32],
    /// Records in the range, tombstones included.
    pub records: u64,
}

impl Store {
    /// Store-key iterator over `range`, starting strictly after `after`.
    fn range_iter<'a>(
        &'a self,
        range: &TokenRange,
        after: Option<&'a [u8]>,
    ) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), StoreError>> + 'a {
        keys::scan_bounds(range)
            .into_iter()
            .flat_map(move |(lo, hi)| {
                let hi = hi.map_or(Bound::Unbounded, Bound::Excluded);
                let lo = match after {
                    Some(a) if a >= lo.as_slice() => Bound::Excluded(a.to_vec()),
                    _ => Bound::Included(lo),
                };
                let empty = match (&lo, &hi) {
                    (Bound::Excluded(l), Bound::Excluded(h)) => l >= h,
                    _ => false,
                };
                let iter = (!empty).then(|| self.records_tree().range((lo, hi)));
                iter.into_iter().flatten()
            })
            .map(|item| item.map_err(StoreError::from))
    }

    /// Up to `max_records` records (and about `max_bytes`: at least one
    /// record is returned if any remain) of `range` after the cursor.
    ///
    /// # Errors
    /// [`StoreError::Sled`], or [`StoreError::Corrupt`] for a record that
    /// does not decode.
    pub fn page(
        &self,
        range: &TokenRange,
        after: Option<&[u8]>,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Page, StoreError> {
        let mut page = Page::default();
        let mut last: Option<Vec<u8>> = None;
        let mut full = false;
        for item in self.range_iter(range, after) {
            if page.records.len() >= max_records.max(1) || page.bytes >= max_bytes {
                full = true;
                break;
            }
            let (stored, value) = item?;
            let (_, key) = keys::decode(&stored).ok_or_else(|| StoreError::Corrupt {
                what: describe_key("record", &stored),
                reason: "record key shorter than its position".to_owned(),
            })?;
            let record = codec::decode_record(&value, || describe_key("record", &stored))?;
            page.bytes += stored.len() + value.len();
            page.records.push((key.to_vec(), record));
            last = Some(stored.to_vec());
        }
        page.next = if full { last } else { None };
        Ok(page)
    }

    /// The keys and versions of up to `max` records of `range` after the
    /// cursor, and the cursor of the next page (`None` at the end). Reads
    /// only each record's version: values are neither decoded nor copied,
    /// so listing a range of large values costs about what listing small
    /// ones does.
    ///
    /// # Errors
    /// As [`page`](Self::page).
    pub fn versions(
        &self,
        range: &TokenRange,
        after: Option<&[u8]>,
        max: usize,
    ) -> Result<VersionPage, StoreError> {
        let max = max.max(1);
        let mut versions = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        for item in self.range_iter(range, after) {
            if versions.len() >= max {
                return Ok((versions, last));
            }
            let (stored, value) = item?;
            let (_, key) = keys::decode(&stored).ok_or_else(|| StoreError::Corrupt {
                what: describe_key("record", &stored),
                reason: "record key shorter than its position".to_owned(),
            })?;
            let version = codec::decode_record_version(&value, || describe_key("record", &stored))?;
            versions.push((key.to_vec(), version));
            last = Some(stored.to_vec());
        }
        Ok((versions, None))
    }

    /// The blake3 summary of `range`.
    ///
    /// # Errors
    /// [`StoreError::Sled`].
    pub fn summary(&self, range: &TokenRange) -> Result<Summary, StoreError> {
        let mut hasher = blake3::Hasher::new();
        let mut records = 0u64;
        for item in self.range_iter(range, None) {
            let (stored, value) = item?;
            hasher.update(&(stored.len() as u64).to_be_bytes());
            hasher.update(&stored);
            hasher.update(&(value.len() as u64).to_be_bytes());
            hasher.update(&value);
            records += 1;
        }
        Ok(Summary {
            hash: *hasher.finalize().as_bytes(),
            records,
        })
    }

    /// Deletes every record of `range`; returns how many. Not flushed: a
    /// deletion lost in a crash is redone by the next clean-up.
    ///
    /// # Errors
    /// [`StoreError::Sled`].
    pub fn delete_range(&self, range: &TokenRange) -> Result<usize, StoreError> {
        let mut deleted = 0;
        let mut batch = sled::Batch::default();
        let stored: Vec<sled::IVec> = self
            .range_iter(range, None)
            .map(|item| item.map(|(k, _)| k))
            .collect::<Result<_, _>>()?;
        for key in &stored {
            batch.remove(key);
            deleted += 1;
        }
        self.records_tree().apply_batch(batch)?;
        self.recount();
        Ok(deleted)
    }

    /// Reads the progress entry `name` (a transfer checkpoint).
    ///
    /// # Errors
    /// [`StoreError::Sled`].
    pub fn progress(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .meta_tree()
            .get(progress_key(name))?
            .map(|v| v.to_vec()))
    }

    /// Writes the progress entry `name` (not flushed by itself: it rides
    /// on the next flush, and a lost checkpoint only repeats work).
    ///
    /// # Errors
    /// [`StoreError::Sled`].
    pub fn set_progress(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta_tree().insert(progress_key(name), value)?;
        Ok(())
    }

    /// Removes the progress entry `name`.
    ///
    /// # Errors
    /// [`StoreError::Sled`].
    pub fn clear_progress(&self, name: &str) -> Result<(), StoreError> {
        self.meta_tree().remove(progress_key(name))?;
        Ok(())
    }

    /// Every progress entry whose name starts with `prefix`.
    ///
    /// # Errors
    /// [`StoreError::Sled`].
    pub fn progress_entries(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let full = progress_key(prefix);
        self.meta_tree()
            .scan_prefix(&full)
            .map(|item| {
                let (k, v) = item?;
                let name = String::from_utf8_lossy(&k[PROGRESS_PREFIX.len()..]).into_owned();
                Ok((name, v.to_vec()))
            })
            .collect()
    }

    /// Deletes every record (a node that was gone too long drops its old
    /// data rather than bringing deleted keys back); returns how many.
    ///
    /// # Errors
    /// [`StoreError::Sled`].
    pub fn clear_records(&self) -> Result<usize, StoreError> {
        let n = self.records_tree().len();
        self.records_tree().clear()?;
        self.recount();
        Ok(n)
    }
}

fn progress_key(name: &str) -> Vec<u8> {
    let mut k = PROGRESS_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Hlc;
    use proptest::prelude::*;
    use ringkv_ring::{key_position, NodeId, Token};

    fn version(ms: u64) -> Version {
        Version {
            hlc: Hlc::new(ms, 0),
            generation: 1,
            node: NodeId::from_name("w"),
        }
    }

    fn store_with(keys: &[String]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (i, k) in keys.iter().enumerate() {
            store
                .apply_nosync(
                    k.as_bytes(),
                    Record::put(vec![1; i % 7], version(i as u64 + 1)),
                )
                .unwrap();
        }
        (dir, store)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Pages of any size, chained by their cursors, return exactly the
        /// keys whose positions fall in the range, each once, in order.
        #[test]
        fn paging_returns_the_range_exactly_once(
            n in 0usize..200,
            start in any::<u64>(),
            end in any::<u64>(),
            per_page in 1usize..17,
        ) {
            let keys: Vec<String> = (0..n).map(|i| format!("key-{i}")).collect();
            let (_dir, store) = store_with(&keys);
            let range = TokenRange::new(Token(start), Token(end));
            let mut got = Vec::new();
            let mut cursor: Option<Vec<u8>> = None;
            loop {
                let page = store.page(&range, cursor.as_deref(), per_page, usize::MAX).unwrap();
                prop_assert!(page.records.len() <= per_page);
                got.extend(page.records.into_iter().map(|(k, _)| k));
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            let mut want: Vec<Vec<u8>> = keys
                .iter()
                .filter(|k| range.contains(key_position(k.as_bytes())))
                .map(|k| k.as_bytes().to_vec())
                .collect();
            want.sort_by_key(|k| keys::encode(k));
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn summaries_differ_exactly_when_contents_differ() {
        let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
        let (_d1, a) = store_with(&keys);
        let (_d2, b) = store_with(&keys);
        let full = TokenRange::new(Token(0), Token(0));
        assert_eq!(a.summary(&full).unwrap(), b.summary(&full).unwrap());
        assert_eq!(a.summary(&full).unwrap().records, 50);
        // A newer version of one key changes the summary.
        b.apply_nosync(b"k7", Record::put(vec![9], version(1000)))
            .unwrap();
        assert_ne!(a.summary(&full).unwrap(), b.summary(&full).unwrap());
        // The same write on the other side makes them equal again.
        a.apply_nosync(b"k7", Record::put(vec![9], version(1000)))
            .unwrap();
        assert_eq!(a.summary(&full).unwrap(), b.summary(&full).unwrap());
        // A tombstone counts.
        a.apply_nosync(b"k8", Record::tombstone(version(2000)))
            .unwrap();
        assert_ne!(a.summary(&full).unwrap(), b.summary(&full).unwrap());
    }

    #[test]
    fn delete_range_removes_only_that_range_and_recounts() {
        let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        let (_d, store) = store_with(&keys);
        let half = TokenRange::new(Token(0), Token(u64::MAX / 2));
        let inside = keys
            .iter()
            .filter(|k| half.contains(key_position(k.as_bytes())))
            .count();
        assert_eq!(store.delete_range(&half).unwrap(), inside);
        assert_eq!(store.len(), 100 - inside);
        for k in &keys {
            let present = store.get(k.as_bytes()).unwrap().is_some();
            assert_eq!(present, !half.contains(key_position(k.as_bytes())), "{k}");
        }
    }

    #[test]
    fn progress_entries_round_trip_and_list_by_prefix() {
        let (_d, store) = store_with(&[]);
        store.set_progress("pull/a", b"1").unwrap();
        store.set_progress("pull/b", b"2").unwrap();
        store.set_progress("other", b"3").unwrap();
        assert_eq!(store.progress("pull/a").unwrap(), Some(b"1".to_vec()));
        let listed = store.progress_entries("pull/").unwrap();
        assert_eq!(listed.len(), 2);
        store.clear_progress("pull/a").unwrap();
        assert_eq!(store.progress("pull/a").unwrap(), None);
        assert_eq!(store.progress_entries("pull/").unwrap().len(), 1);
    }
}
