//! Key positions and token ranges on the `u64` ring. Pure, no IO.
//!
//! A key's position is `XXH3-64(key)` with seed 0, or of the text inside the
//! key's first `{...}` when that text is not empty (Redis-style hash tags:
//! `user:{42}:name` and `user:{42}:email` land together).
//!
//! Why XXH3 and not blake3 (a departure from DESIGN.md, see
//! docs/BENCHMARKS.md): positions are persisted in every store key, so the
//! function must be a fixed, portable specification, and it runs on every
//! request. blake3 of a 16-byte key costs about 90 ns here, more than a whole
//! lookup in the fastest published ring crate; XXH3-64 costs a few ns and is
//! frozen since xxHash 0.8. A cryptographic hash buys nothing for placement:
//! with any public hash, keys that land on one node are found by trying
//! about N of them. Cassandra (Murmur3) and Redis Cluster (CRC16) make the
//! same choice. Node tokens and the ring digest stay blake3.
//!
//! A token owns the half-open range `(previous token, token]`, so a key
//! belongs to the first token at or after its position, wrapping past
//! `u64::MAX` to the start.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A point on the ring: a node's token or a key's position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(pub u64);

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The part of `key` that is hashed: the text inside the first `{...}` when
/// it is not empty, else the whole key (the rule Redis Cluster uses).
pub fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let rest = &key[open + 1..];
    match rest.iter().position(|&b| b == b'}') {
        Some(close) if close > 0 => &rest[..close],
        _ => key,
    }
}

/// Position of raw bytes on the ring: `XXH3-64(bytes)`, seed 0. No hash-tag
/// processing; see [`key_position`] for user keys.
#[inline]
pub fn hash_position(bytes: &[u8]) -> Token {
    Token(xxhash_rust::xxh3::xxh3_64(bytes))
}

/// Position of a user key on the ring, honouring hash tags.
#[inline]
pub fn key_position(key: &[u8]) -> Token {
    hash_position(hash_tag(key))
}

/// A half-open wrapping range of positions `(start, end]`.
///
/// `start == end` means the whole ring (a ring with one distinct token owns
/// everything); there is no empty range. When `start > end` the range wraps
/// past `u64::MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TokenRange {
    /// Exclusive lower bound.
    pub start: Token,
    /// Inclusive upper bound.
    pub end: Token,
}

impl TokenRange {
    /// The range `(start, end]`.
    pub fn new(start: Token, end: Token) -> Self {
        Self { start, end }
    }

    /// Whether the range covers the whole ring.
    pub fn is_full(&self) -> bool {
        self.start == self.end
    }

    /// Whether the range wraps past `u64::MAX` (the full ring does not).
    pub fn wraps(&self) -> bool {
        self.start > self.end
    }

    /// Whether `pos` lies in `(start, end]`.
    pub fn contains(&self, pos: Token) -> bool {
        let (s, e, p) = (self.start.0, self.end.0, pos.0);
        match s.cmp(&e) {
            std::cmp::Ordering::Less => s < p && p <= e,
            std::cmp::Ordering::Greater => p > s || p <= e,
            std::cmp::Ordering::Equal => true,
        }
    }

    /// Number of positions in the range, `1..=2^64`.
    pub fn len(&self) -> u128 {
        if self.is_full() {
            1u128 << 64
        } else {
            u128::from(self.end.0.wrapping_sub(self.start.0))
        }
    }

    /// Always false: a range holds at least one position. Present so the
    /// `len` / `is_empty` pair is complete.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The fraction of the whole ring this range covers, in `(0, 1]`.
    pub fn fraction(&self) -> f64 {
        self.len() as f64 / RING_SIZE
    }

    /// The range as at most two non-wrapping inclusive intervals
    /// `[lo, hi]`, in ascending order; what a sorted store scans.
    pub fn intervals(&self) -> impl Iterator<Item = (u64, u64)> {
        let (s, e) = (self.start.0, self.end.0);
        let (first, second) = if s < e {
            (Some((s + 1, e)), None)
        } else {
            // Wrapping or full: (s, MAX] then [0, e]. The first part is empty
            // when s == MAX.
            let low = Some((0, e));
            let high = (s < u64::MAX).then(|| (s + 1, u64::MAX));
            (low, high)
        };
        first.into_iter().chain(second)
    }
}

impl fmt::Display for TokenRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {}]", self.start, self.end)
    }
}

/// The number of positions on the ring, as a float, for fractions.
pub(crate) const RING_SIZE: f64 = 18_446_744_073_709_551_616.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tag_uses_first_non_empty_braces() {
        assert_eq!(hash_tag(b"user:{42}:name"), b"42");
        assert_eq!(hash_tag(b"{a}{b}"), b"a");
        assert_eq!(hash_tag(b"no-tag"), b"no-tag");
        // Empty braces and unclosed braces hash the whole key, as in Redis.
        assert_eq!(hash_tag(b"x{}y"), b"x{}y");
        assert_eq!(hash_tag(b"x{y"), b"x{y");
        // Only the first `{` counts, even when its tag is empty.
        assert_eq!(hash_tag(b"{}{z}"), b"{}{z}");
        assert_eq!(hash_tag(b"a}{b}"), b"b");
    }

    #[test]
    fn tagged_keys_share_a_position() {
        assert_eq!(key_position(b"user:{42}:name"), key_position(b"order:{42}"));
        assert_eq!(key_position(b"user:{42}:name"), hash_position(b"42"));
        assert_ne!(key_position(b"user:42:name"), key_position(b"order:42"));
    }

    #[test]
    fn position_is_frozen_xxh3() {
        // Reference values of XXH3-64 (seed 0) from the xxHash spec's test
        // vectors: positions are persisted, so they must never change.
        assert_eq!(hash_position(b""), Token(0x2d06_8005_38d3_94c2));
        assert_eq!(
            key_position(b"hello"),
            Token(xxhash_rust::xxh3::xxh3_64(b"hello"))
        );
    }

    #[test]
    fn range_contains_is_half_open() {
        let r = TokenRange::new(Token(10), Token(20));
        assert!(!r.contains(Token(10)));
        assert!(r.contains(Token(11)));
        assert!(r.contains(Token(20)));
        assert!(!r.contains(Token(21)));
        assert_eq!(r.len(), 10);
    }

    #[test]
    fn wrapping_range_covers_both_ends() {
        let r = TokenRange::new(Token(u64::MAX - 1), Token(1));
        assert!(r.wraps());
        assert!(r.contains(Token(u64::MAX)));
        assert!(r.contains(Token(0)));
        assert!(r.contains(Token(1)));
        assert!(!r.contains(Token(2)));
        assert!(!r.contains(Token(u64::MAX - 1)));
        assert_eq!(r.len(), 3);
        let parts: Vec<_> = r.intervals().collect();
        assert_eq!(parts, vec![(0, 1), (u64::MAX, u64::MAX)]);
    }

    #[test]
    fn equal_bounds_mean_the_whole_ring() {
        let r = TokenRange::new(Token(5), Token(5));
        assert!(r.is_full());
        assert!(r.contains(Token(5)) && r.contains(Token(0)) && r.contains(Token(u64::MAX)));
        assert_eq!(r.len(), 1u128 << 64);
        assert_eq!(r.fraction(), 1.0);
        let parts: Vec<_> = r.intervals().collect();
        assert_eq!(parts, vec![(0, 5), (6, u64::MAX)]);
        let top = TokenRange::new(Token(u64::MAX), Token(u64::MAX));
        assert_eq!(top.intervals().collect::<Vec<_>>(), vec![(0, u64::MAX)]);
    }

    #[test]
    fn range_ending_at_max_does_not_wrap() {
        let r = TokenRange::new(Token(3), Token(u64::MAX));
        assert!(!r.wraps());
        assert_eq!(r.intervals().collect::<Vec<_>>(), vec![(4, u64::MAX)]);
    }
}
