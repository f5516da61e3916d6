//! What a page received during a pull must satisfy before anything of it
//! is applied: its keys fall in the range asked for, come in store order
//! strictly after the cursor asked from, keys and values are within the
//! protocol's limits, it holds as many records as it says, and its cursor
//! is its last record's (so every page moves the pull strictly forward).
//! A source that breaks any of these is lying or broken; the pull from it
//! fails and the page is dropped whole. Pure: no IO.

use anyhow::{anyhow, bail, Result};
use ringkv_ring::{key_position, TokenRange};
use ringkv_storage::{keys, Record, Version};

use crate::rpc::api::{RangePageReply, KEY_MAX, REPLY_MAX, VALUE_MAX};
use crate::rpc::codec;

/// The records of a page of `range` asked for after `after` with
/// `max_bytes`, once the page passed every check: its blake3 hash, its
/// decoding, [`check_page_size`] and [`check_page`]. The pull applies
/// nothing of a page this refuses.
///
/// # Errors
/// Which check failed, saying nothing of the page was applied.
pub(crate) fn accept_page(
    range: &TokenRange,
    after: Option<&[u8]>,
    page: &RangePageReply,
    max_bytes: usize,
) -> Result<Vec<(Vec<u8>, Record)>> {
    if *blake3::hash(&page.batch).as_bytes() != page.check {
        bail!("a page failed its blake3 check; nothing of it was applied");
    }
    let records: Vec<(Vec<u8>, Record)> = codec::decode(&page.batch, REPLY_MAX)?;
    check_page_size(
        page.records as usize,
        records.len(),
        page.batch.len(),
        max_bytes,
    )
    .and_then(|()| check_page(range, after, &records, page.next.as_deref()))
    .map_err(|e| anyhow!("a bad page of range {range}, nothing of it was applied: {e}"))?;
    Ok(records)
}

/// Why a page was rejected. Nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PageError {
    /// A key's ring position lies outside the range asked for.
    #[error("key #{index} lies outside the range {range}")]
    OutsideRange { index: usize, range: TokenRange },
    /// A key is not strictly after the cursor asked from, or after the
    /// key before it (store order).
    #[error("key #{index} is not strictly after the cursor or the key before it")]
    Backwards { index: usize },
    /// A key is empty or over the key limit, or a value over the value
    /// limit.
    #[error("record #{index} is over the limits (key {key} bytes, value {value} bytes)")]
    TooLarge {
        index: usize,
        key: usize,
        value: usize,
    },
    /// The page says it holds another number of records than it does.
    #[error("the page says it holds {said} records and holds {held}")]
    Miscounted { said: usize, held: usize },
    /// The page's encoded batch is larger than asked for by more than one
    /// record can explain.
    #[error("the page is {len} bytes, over the {max} asked for by more than a record")]
    Oversized { len: usize, max: usize },
    /// The cursor of the next page is not this page's last record (it does
    /// not move the pull forward, or skips records).
    #[error("the cursor of the next page is not the page's last record")]
    BadCursor,
}

/// A page's keys in order, each with its value's size.
pub(crate) trait PageItem {
    fn key(&self) -> &[u8];
    fn value_len(&self) -> usize;
}

impl PageItem for (Vec<u8>, Record) {
    fn key(&self) -> &[u8] {
        &self.0
    }
    fn value_len(&self) -> usize {
        self.1.value.as_ref().map_or(0, Vec::len)
    }
}

impl PageItem for (Vec<u8>, Version) {
    fn key(&self) -> &[u8] {
        &self.0
    }
    fn value_len(&self) -> usize {
        0
    }
}

/// Checks the items of a page of `range` asked for after `after` (a store
/// key), whose next-page cursor is `next`.
///
/// # Errors
/// The first [`PageError`] found.
pub(crate) fn check_page<T: PageItem>(
    range: &TokenRange,
    after: Option<&[u8]>,
    items: &[T],
    next: Option<&[u8]>,
) -> Result<(), PageError> {
    let mut previous: Option<Vec<u8>> = after.map(<[u8]>::to_vec);
    for (index, item) in items.iter().enumerate() {
        let (key, value) = (item.key(), item.value_len());
        if key.is_empty() || key.len() > KEY_MAX || value > VALUE_MAX {
            return Err(PageError::TooLarge {
                index,
                key: key.len(),
                value,
            });
        }
        if !range.contains(key_position(key)) {
            return Err(PageError::OutsideRange {
                index,
                range: *range,
            });
        }
        let stored = keys::encode(key);
        if previous.as_ref().is_some_and(|p| stored <= *p) {
            return Err(PageError::Backwards { index });
        }
        previous = Some(stored);
    }
    match next {
        None => Ok(()),
        // Only a full page has a next one, and its cursor is its last
        // record: strictly after `after`, and nothing skipped.
        Some(n) if items.last().is_some() && previous.as_deref() == Some(n) => Ok(()),
        Some(_) => Err(PageError::BadCursor),
    }
}

/// Checks what a page says about itself against what it holds: its record
/// count, and its batch's size against the `max_bytes` asked for (a page
/// may pass it by one record, never more).
///
/// # Errors
/// [`PageError::Miscounted`] or [`PageError::Oversized`].
pub(crate) fn check_page_size(
    said: usize,
    held: usize,
    batch_len: usize,
    max_bytes: usize,
) -> Result<(), PageError> {
    if said != held {
        return Err(PageError::Miscounted { said, held });
    }
    // One record over: its key, its value, and its framing.
    let max = max_bytes.saturating_add(KEY_MAX + VALUE_MAX + 4096);
    if batch_len > max {
        return Err(PageError::Oversized {
            len: batch_len,
            max: max_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ringkv_ring::{NodeId, Token};
    use ringkv_storage::Hlc;

    use super::*;

    fn version() -> Version {
        Version {
            hlc: Hlc::new(1, 0),
            generation: 1,
            node: NodeId::from_name("check"),
        }
    }

    /// The keys `key-0..` whose positions fall in `range`, in store order.
    fn keys_in(range: &TokenRange, n: usize) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = (0..)
            .map(|i| format!("key-{i}").into_bytes())
            .filter(|k| range.contains(key_position(k)))
            .take(n)
            .collect();
        out.sort_by_key(|k| keys::encode(k));
        out
    }

    fn records(keys: &[Vec<u8>]) -> Vec<(Vec<u8>, Record)> {
        keys.iter()
            .map(|k| (k.clone(), Record::put(b"v".to_vec(), version())))
            .collect()
    }

    fn half() -> TokenRange {
        TokenRange::new(Token(0), Token(u64::MAX / 2))
    }

    #[test]
    fn an_honest_page_passes() {
        let range = half();
        let page = records(&keys_in(&range, 5));
        let last = keys::encode(&page[4].0);
        assert_eq!(check_page(&range, None, &page, Some(&last)), Ok(()));
        assert_eq!(check_page(&range, None, &page, None), Ok(()));
        // Resumed after the second record: the rest.
        let after = keys::encode(&page[1].0);
        assert_eq!(check_page(&range, Some(&after), &page[2..], None), Ok(()));
        assert_eq!(
            check_page::<(Vec<u8>, Record)>(&range, None, &[], None),
            Ok(())
        );
    }

    #[test]
    fn a_key_outside_the_range_fails_the_page() {
        let range = half();
        let mut page = records(&keys_in(&range, 3));
        let outside = (0..)
            .map(|i| format!("out-{i}").into_bytes())
            .find(|k| !range.contains(key_position(k)))
            .expect("a key outside");
        page.push((outside, Record::put(b"x".to_vec(), version())));
        assert!(matches!(
            check_page(&range, None, &page, None),
            Err(PageError::OutsideRange { index: 3, .. })
        ));
    }

    #[test]
    fn keys_at_or_before_the_cursor_or_out_of_order_fail_the_page() {
        let range = half();
        let page = records(&keys_in(&range, 4));
        let after = keys::encode(&page[2].0);
        assert_eq!(
            check_page(&range, Some(&after), &page, None),
            Err(PageError::Backwards { index: 0 })
        );
        let mut swapped = page.clone();
        swapped.swap(1, 2);
        assert_eq!(
            check_page(&range, None, &swapped, None),
            Err(PageError::Backwards { index: 2 })
        );
        let mut repeated = page.clone();
        repeated.push(page[3].clone());
        assert_eq!(
            check_page(&range, None, &repeated, None),
            Err(PageError::Backwards { index: 4 })
        );
    }

    #[test]
    fn a_cursor_that_does_not_move_forward_fails_the_page() {
        let range = half();
        let page = records(&keys_in(&range, 3));
        let after = keys::encode(&page[0].0);
        // An empty page with a cursor: the pull would never end.
        assert_eq!(
            check_page::<(Vec<u8>, Record)>(&range, Some(&after), &[], Some(&after)),
            Err(PageError::BadCursor)
        );
        // A cursor back before the last record, or past it (skipping).
        let back = keys::encode(&page[1].0);
        assert_eq!(
            check_page(&range, None, &page, Some(&back)),
            Err(PageError::BadCursor)
        );
        let mut past = keys::encode(&page[2].0);
        past.push(0);
        assert_eq!(
            check_page(&range, None, &page, Some(&past)),
            Err(PageError::BadCursor)
        );
    }

    #[test]
    fn oversized_records_and_pages_and_miscounts_fail() {
        let range = half();
        let key = keys_in(&range, 1).remove(0);
        let big = vec![(key.clone(), Record::put(vec![0; VALUE_MAX + 1], version()))];
        assert!(matches!(
            check_page(&range, None, &big, None),
            Err(PageError::TooLarge { index: 0, .. })
        ));
        let empty_key = vec![(Vec::new(), version())];
        assert!(matches!(
            check_page(&TokenRange::new(Token(0), Token(0)), None, &empty_key, None),
            Err(PageError::TooLarge { index: 0, .. })
        ));
        assert_eq!(check_page_size(3, 3, 1000, 1000), Ok(()));
        assert!(matches!(
            check_page_size(4, 3, 1000, 1000),
            Err(PageError::Miscounted { said: 4, held: 3 })
        ));
        assert!(matches!(
            check_page_size(1, 1, 1000 + KEY_MAX + VALUE_MAX + 4097, 1000),
            Err(PageError::Oversized { .. })
        ));
    }

    /// A page as a source sends it: the batch encoded, hashed, counted.
    fn reply(records: &[(Vec<u8>, Record)], next: Option<Vec<u8>>) -> RangePageReply {
        let batch = codec::encode(&records.to_vec());
        RangePageReply {
            check: *blake3::hash(&batch).as_bytes(),
            records: u32::try_from(records.len()).expect("few records"),
            estimate: 0,
            batch,
            next,
        }
    }

    #[test]
    fn a_lying_source_s_pages_are_refused_whole_and_an_honest_one_s_accepted() {
        let range = half();
        let good = records(&keys_in(&range, 4));
        let last = keys::encode(&good[3].0);
        let accepted = accept_page(&range, None, &reply(&good, Some(last.clone())), 1 << 20)
            .expect("an honest page");
        assert_eq!(accepted, good);

        // A key of another range slipped in among good ones.
        let outside = (0..)
            .map(|i| format!("out-{i}").into_bytes())
            .find(|k| !range.contains(key_position(k)))
            .expect("a key outside");
        let mut lying = good.clone();
        lying.insert(2, (outside, Record::put(b"evil".to_vec(), version())));
        let err = accept_page(&range, None, &reply(&lying, None), 1 << 20).expect_err("refused");
        let text = format!("{err:#}");
        assert!(
            text.contains("outside the range") && text.contains("nothing of it was applied"),
            "{text}"
        );
        // A cursor that does not move: the same page again, for ever.
        let err = accept_page(
            &range,
            Some(&last),
            &reply(&good, Some(last.clone())),
            1 << 20,
        )
        .expect_err("refused");
        assert!(format!("{err:#}").contains("not strictly after"), "{err:#}");
        // A record count that does not match, and a tampered batch.
        let mut miscounted = reply(&good, None);
        miscounted.records = 9;
        assert!(accept_page(&range, None, &miscounted, 1 << 20).is_err());
        let mut tampered = reply(&good, None);
        tampered.batch[3] ^= 1;
        let err = accept_page(&range, None, &tampered, 1 << 20).expect_err("refused");
        assert!(format!("{err:#}").contains("blake3"), "{err:#}");
    }

    #[test]
    fn versions_listings_are_checked_the_same_way() {
        let range = half();
        let listed: Vec<(Vec<u8>, Version)> = keys_in(&range, 3)
            .into_iter()
            .map(|k| (k, version()))
            .collect();
        assert_eq!(check_page(&range, None, &listed, None), Ok(()));
        let all = TokenRange::new(Token(0), Token(0));
        let outside = (0..)
            .map(|i| format!("out-{i}").into_bytes())
            .find(|k| !range.contains(key_position(k)))
            .expect("a key outside");
        assert_eq!(
            check_page(&all, None, &[(outside.clone(), version())], None),
            Ok(())
        );
        assert!(matches!(
            check_page(&range, None, &[(outside, version())], None),
            Err(PageError::OutsideRange { .. })
        ));
    }
}
