//! Record keys in ring order. Pure, no IO.
//!
//! A record's store key is its 8-byte ring position, big-endian, followed
//! by the user key. Byte order of store keys is then ring order, so the keys
//! whose positions fall in a [`TokenRange`] are at most two contiguous
//! scans (two when the range wraps past `u64::MAX`).

use ringkv_ring::{key_position, Token, TokenRange};

/// Length of the position prefix.
pub const POSITION_LEN: usize = 8;

/// The store key for a user key: position (big-endian) then the key.
pub fn encode(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(POSITION_LEN + key.len());
    out.extend_from_slice(&key_position(key).0.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// Splits a store key into its position and user key; `None` when it is
/// shorter than the prefix (not a record key).
pub fn decode(stored: &[u8]) -> Option<(Token, &[u8])> {
    let (head, key) = stored.split_first_chunk::<POSITION_LEN>()?;
    Some((Token(u64::from_be_bytes(*head)), key))
}

/// Inclusive-start, exclusive-end byte bounds of the store-key scans that
/// cover `range`, in ascending order. An `end` of `None` means "to the end
/// of the keyspace".
pub fn scan_bounds(range: &TokenRange) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    range
        .intervals()
        .map(|(lo, hi)| {
            let start = lo.to_be_bytes().to_vec();
            // Every key whose position is `hi` sorts below `hi + 1`.
            let end = hi.checked_add(1).map(|next| next.to_be_bytes().to_vec());
            (start, end)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn in_bounds(stored: &[u8], bounds: &[(Vec<u8>, Option<Vec<u8>>)]) -> bool {
        bounds.iter().any(|(lo, hi)| {
            stored >= lo.as_slice() && hi.as_ref().is_none_or(|h| stored < h.as_slice())
        })
    }

    #[test]
    fn encode_then_decode_gives_back_the_key() {
        let stored = encode(b"user:42");
        let (pos, key) = decode(&stored).unwrap();
        assert_eq!(key, b"user:42");
        assert_eq!(pos, key_position(b"user:42"));
        assert_eq!(decode(b"short"), None);
    }

    proptest! {
        #[test]
        fn scan_bounds_select_exactly_the_range(
            start: u64, end: u64, keys in proptest::collection::vec(any::<Vec<u8>>(), 1..64)
        ) {
            let range = TokenRange::new(Token(start), Token(end));
            let bounds = scan_bounds(&range);
            for key in &keys {
                let stored = encode(key);
                prop_assert_eq!(in_bounds(&stored, &bounds), range.contains(key_position(key)));
            }
            // The range's own edges: the start is out, the end is in.
            let at = |p: u64| { let mut k = p.to_be_bytes().to_vec(); k.push(b'x'); k };
            prop_assert_eq!(in_bounds(&at(end), &bounds), true);
            if start != end {
                prop_assert_eq!(in_bounds(&at(start), &bounds), false);
            }
        }

        #[test]
        fn store_key_order_is_ring_order(a: Vec<u8>, b: Vec<u8>) {
            let (ea, eb) = (encode(&a), encode(&b));
            let (pa, pb) = (key_position(&a), key_position(&b));
            if pa != pb {
                prop_assert_eq!(ea < eb, pa < pb);
            }
        }
    }
}
