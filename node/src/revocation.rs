//! The revocation list of client credentials, carried in gossip: every
//! peer announces the revocations it knows in its own metadata tag
//! [`REVOKED_TAG`] (so each is signed by the peer that states it, like all
//! metadata), adopts those other live members announce, and refuses a
//! client credential that any of them covers. Pure: parsing, merging and
//! checking; the daemon's task and the request dispatch call it.
//!
//! Bounds: at most [`REVOKED_MAX`] entries per tag (a revocation beyond is
//! refused with a clear error, never dropped silently); an entry is
//! forgotten once every credential it covers has expired (a credential
//! lives at most a year, see `keyargs::parse_duration`), so the list
//! empties by itself. A tag that does not parse is ignored whole.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ringkv_gossip::runner::View;
use ringkv_gossip::transport::credentials::{ClientTag, Revocation};

/// The metadata tag holding a peer's revocations.
pub(crate) const REVOKED_TAG: &str = "revoked";
/// Most revocations a tag holds: 16 entries of 27 bytes keep a member's
/// Alive (which carries all its metadata) well inside one 1,200-byte
/// gossip datagram beside the other tags.
pub(crate) const REVOKED_MAX: usize = 16;
/// After this long past `before`, every credential a revocation covers has
/// expired (they live at most a year, plus a day of slack for clocks).
const FORGET_AFTER_SECS: u64 = 366 * 86_400;

/// The revocations of a tag value: `HASH:BEFORE` entries, comma
/// separated (16 hex digits, Unix seconds). `None` if any entry is
/// malformed or there are too many.
pub(crate) fn parse(value: &str) -> Option<Vec<Revocation>> {
    if value.is_empty() {
        return Some(Vec::new());
    }
    let entries: Vec<&str> = value.split(',').collect();
    if entries.len() > REVOKED_MAX {
        return None;
    }
    entries
        .into_iter()
        .map(|e| {
            let (hash, before) = e.split_once(':')?;
            if hash.len() != 16 {
                return None;
            }
            let raw = u64::from_str_radix(hash, 16).ok()?;
            Some(Revocation {
                name_hash: raw.to_be_bytes(),
                before: before.parse().ok()?,
            })
        })
        .collect()
}

/// The tag value of `list` (the inverse of [`parse`]).
pub(crate) fn format(list: &[Revocation]) -> String {
    let mut out = String::new();
    for (i, r) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{:016x}:{}", u64::from_be_bytes(r.name_hash), r.before);
    }
    out
}

/// `list` with `add` merged in: one entry per name (the latest `before`),
/// without those forgotten at `now` (Unix seconds), in a fixed order.
///
/// # Errors
/// More than [`REVOKED_MAX`] names would remain.
pub(crate) fn merge(
    list: &[Revocation],
    add: &[Revocation],
    now: u64,
) -> Result<Vec<Revocation>, String> {
    let mut by_name: BTreeMap<[u8; 8], u64> = BTreeMap::new();
    for r in list.iter().chain(add) {
        if r.before.saturating_add(FORGET_AFTER_SECS) < now {
            continue;
        }
        let before = by_name.entry(r.name_hash).or_insert(r.before);
        *before = (*before).max(r.before);
    }
    if by_name.len() > REVOKED_MAX {
        return Err(format!(
            "the revocation list is full ({REVOKED_MAX} names): entries leave it a year after they were made; rotate the cluster key to revoke more now"
        ));
    }
    Ok(by_name
        .into_iter()
        .map(|(name_hash, before)| Revocation { name_hash, before })
        .collect())
}

/// Every revocation this peer and the live members announce.
pub(crate) fn announced(view: &View) -> Vec<Revocation> {
    view.live()
        .filter_map(|m| m.meta.tags.get(REVOKED_TAG))
        .filter_map(|v| parse(v))
        .flatten()
        .collect()
}

/// Whether any revocation in `view` covers `tag`.
pub(crate) fn is_revoked(view: &View, tag: &ClientTag) -> bool {
    announced(view).iter().any(|r| r.covers(tag))
}

#[cfg(test)]
mod tests {
    use ringkv_gossip::transport::credentials::name_hash;

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn r(name: &str, before: u64) -> Revocation {
        Revocation {
            name_hash: name_hash(name),
            before,
        }
    }

    #[test]
    fn tags_round_trip_and_junk_is_ignored_whole() {
        let list = vec![r("a", NOW), r("b", NOW - 5)];
        assert_eq!(parse(&format(&list)), Some(list));
        assert_eq!(parse(""), Some(vec![]));
        for junk in [
            "x",
            "00:1",
            "0011223344556677",
            "0011223344556677:x",
            "zz11223344556677:1",
        ] {
            assert_eq!(parse(junk), None, "{junk}");
        }
        let many: Vec<_> = (0..=REVOKED_MAX)
            .map(|i| r(&format!("n{i}"), NOW))
            .collect();
        assert_eq!(parse(&format(&many)), None);
    }

    #[test]
    fn merge_keeps_the_latest_per_name_forgets_old_ones_and_is_bounded() {
        let merged = merge(&[r("a", NOW - 10)], &[r("a", NOW), r("b", NOW)], NOW).unwrap();
        assert_eq!(merged.len(), 2);
        assert!(merged.contains(&r("a", NOW)));
        let old = r("c", NOW - FORGET_AFTER_SECS - 1);
        assert_eq!(merge(&[old], &[], NOW).unwrap(), vec![]);
        let full: Vec<_> = (0..REVOKED_MAX).map(|i| r(&format!("n{i}"), NOW)).collect();
        assert!(merge(&full, &[r("one more", NOW)], NOW)
            .unwrap_err()
            .contains("full"));
        assert_eq!(
            merge(&full, &[r("n0", NOW + 1)], NOW).unwrap().len(),
            REVOKED_MAX
        );
    }
}
