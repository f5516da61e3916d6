//! What a key holds: a value or a tombstone, stamped with a version, and the
//! apply-if-newer rule between two records. Also [`Clock`], the hybrid
//! logical clock that mints versions. Pure: no IO, no clock reads (wall
//! time is passed in).

use ringkv_ring::NodeId;
use serde::{Deserialize, Serialize};

/// A hybrid logical clock reading: wall-clock milliseconds, plus a counter
/// that orders readings within one millisecond (or while the wall clock
/// lags behind a reading already issued or seen).
///
/// Ordered by `(physical_ms, logical)`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch (or the highest such value seen).
    pub physical_ms: u64,
    /// Tie-breaker within one `physical_ms`.
    pub logical: u32,
}

impl Hlc {
    /// The reading `(physical_ms, logical)`.
    pub const fn new(physical_ms: u64, logical: u32) -> Self {
        Self {
            physical_ms,
            logical,
        }
    }

    /// The smallest reading strictly greater than this one.
    pub const fn next(self) -> Self {
        match self.logical.checked_add(1) {
            Some(logical) => Self::new(self.physical_ms, logical),
            // The counter is exhausted: borrow the next millisecond.
            None => Self::new(self.physical_ms.saturating_add(1), 0),
        }
    }
}

/// The version of a write. Versions are totally ordered by
/// `(hlc, generation, node)`, field order, and a write applies only over
/// a strictly older one.
///
/// Why this order:
/// - `hlc` first: it carries causality. A coordinator advances its clock
///   past every version it has read or received ([`Clock::observe`]), so a
///   write that follows a read has a larger `hlc` and wins over what was
///   read, whatever node or generation wrote it.
/// - `generation` next: a peer that lost its disk also lost its clock's
///   high-water mark, and could mint the same `hlc` again under the same
///   node id. Its new generation makes such a version differ from (and beat)
///   the one minted before the loss, so replicas never hold two different
///   records under equal versions.
/// - `node` last: two writers can read the same `hlc`; the node id breaks
///   the tie so that every replica picks the same winner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// The writer's clock reading.
    pub hlc: Hlc,
    /// The writer's store generation (see `Store::generation`).
    pub generation: u32,
    /// The writer.
    pub node: NodeId,
}

/// What a key holds: a value, or a tombstone (`value: None`) that records a
/// delete until it is collected.
///
/// A value may carry an absolute expiry (`expires_ms`, wall-clock
/// milliseconds). From that instant on it reads as absent everywhere
/// ([`live_value`](Self::live_value)), but it stays a record with its
/// version: it still beats older versions and loses to newer ones (newest
/// version wins is the only merge rule), and it is collected like a
/// tombstone once the grace has passed since it expired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The value; `None` for a tombstone. Encoded as one byte string
    /// (`serde_bytes`), not byte by byte: the same bytes in bincode, many
    /// times faster.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// The version of the write that produced this record.
    pub version: Version,
    /// When the value expires (wall-clock milliseconds since the Unix
    /// epoch); `None` never. Meaningless on a tombstone.
    pub expires_ms: Option<u64>,
}

impl Record {
    /// A record holding `value`.
    pub fn put(value: Vec<u8>, version: Version) -> Self {
        Self {
            value: Some(value),
            version,
            expires_ms: None,
        }
    }

    /// A record holding `value` until `expires_ms` (wall-clock
    /// milliseconds since the Unix epoch), absent from then on.
    pub fn put_expiring(value: Vec<u8>, version: Version, expires_ms: u64) -> Self {
        Self {
            value: Some(value),
            version,
            expires_ms: Some(expires_ms),
        }
    }

    /// A tombstone: the key was deleted by the write `version`.
    pub fn tombstone(version: Version) -> Self {
        Self {
            value: None,
            version,
            expires_ms: None,
        }
    }

    /// Whether this record is a delete marker.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Whether this record holds a value that has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.value.is_some() && self.expires_ms.is_some_and(|at| at <= now_ms)
    }

    /// The value as a reader sees it at `now_ms`: `None` for a tombstone or
    /// an expired value.
    pub fn live_value(&self, now_ms: u64) -> Option<&[u8]> {
        if self.is_expired(now_ms) {
            return None;
        }
        self.value.as_deref()
    }

    /// Since when (wall-clock milliseconds) this record has been dead: a
    /// tombstone since its write, an expired value since its expiry; `None`
    /// for a value that is live or may still be. The garbage collector
    /// removes a record dead for longer than the grace.
    pub fn dead_since_ms(&self, now_ms: u64) -> Option<u64> {
        if self.is_tombstone() {
            Some(self.version.hlc.physical_ms)
        } else if self.is_expired(now_ms) {
            self.expires_ms
        } else {
            None
        }
    }

    /// The apply-if-newer rule: true when `other` should replace `self`,
    /// that is when its version is strictly newer. Equal versions never
    /// replace each other, which makes applying idempotent.
    pub fn is_superseded_by(&self, other: &Self) -> bool {
        other.version > self.version
    }
}

/// Hybrid logical clock of one writer. Pure: wall time is passed in.
///
/// Every version it issues is strictly greater than every version it
/// issued or observed before, and than the floor it was created with, even
/// when the wall clock goes backwards.
#[derive(Debug, Clone)]
pub struct Clock {
    node: NodeId,
    generation: u32,
    last: Hlc,
}

impl Clock {
    /// A clock for `node` in store generation `generation` whose readings
    /// all lie above `floor` (a persisted high-water mark, see
    /// `Store::hlc_floor`).
    pub fn new(node: NodeId, generation: u32, floor: Hlc) -> Self {
        Self {
            node,
            generation,
            last: floor,
        }
    }

    /// A fresh version: physical time is `max(wall_ms, last.physical_ms)`,
    /// the logical counter is bumped on ties; strictly greater than every
    /// version issued or observed before.
    pub fn tick(&mut self, wall_ms: u64) -> Version {
        let hlc = if wall_ms > self.last.physical_ms {
            Hlc::new(wall_ms, 0)
        } else {
            self.last.next()
        };
        debug_assert!(hlc > self.last, "a tick must move the clock forward");
        self.last = hlc;
        Version {
            hlc,
            generation: self.generation,
            node: self.node,
        }
    }

    /// Advances past a version read or received, so that the next
    /// [`tick`](Self::tick) beats it (a write that follows a read wins over
    /// what was read).
    pub fn observe(&mut self, seen: &Version) {
        self.last = self.last.max(seen.hlc);
    }

    /// The highest reading issued or observed so far (or the floor).
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// The node this clock writes for.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The generation stamped on the versions it issues.
    pub fn generation(&self) -> u32 {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeId {
        NodeId::from_name(name)
    }

    fn version(ms: u64, logical: u32, generation: u32, name: &str) -> Version {
        Version {
            hlc: Hlc::new(ms, logical),
            generation,
            node: node(name),
        }
    }

    #[test]
    fn versions_order_by_hlc_then_generation_then_node() {
        let (a, b) = if node("a") < node("b") {
            ("a", "b")
        } else {
            ("b", "a")
        };
        // hlc dominates generation and node.
        assert!(version(10, 0, 1, b) < version(10, 1, 0, a));
        assert!(version(10, 5, 9, b) < version(11, 0, 0, a));
        // Equal hlc: the generation decides, whatever the node.
        assert!(version(10, 0, 1, b) < version(10, 0, 2, a));
        // Equal hlc and generation: the node id breaks the tie.
        assert!(version(10, 0, 1, a) < version(10, 0, 1, b));
        assert_eq!(version(10, 0, 1, a), version(10, 0, 1, a));
    }

    #[test]
    fn only_a_strictly_newer_record_supersedes() {
        let old = Record::put(b"old".to_vec(), version(10, 0, 1, "a"));
        let new = Record::tombstone(version(10, 1, 1, "a"));
        assert!(old.is_superseded_by(&new));
        assert!(!new.is_superseded_by(&old));
        // Equal versions never replace each other, even with other values.
        let twin = Record::put(b"other".to_vec(), old.version);
        assert!(!old.is_superseded_by(&twin));
        assert!(!old.is_superseded_by(&old.clone()));
        assert!(new.is_tombstone());
        assert!(!old.is_tombstone());
    }

    #[test]
    fn an_expiring_value_reads_as_absent_from_its_expiry_on() {
        let r = Record::put_expiring(b"v".to_vec(), version(10, 0, 1, "a"), 1_000);
        assert_eq!(r.live_value(999), Some(&b"v"[..]));
        assert!(!r.is_expired(999));
        assert_eq!(r.live_value(1_000), None);
        assert!(r.is_expired(1_000));
        assert_eq!(r.dead_since_ms(999), None);
        assert_eq!(r.dead_since_ms(5_000), Some(1_000));
        let plain = Record::put(b"v".to_vec(), version(10, 0, 1, "a"));
        assert_eq!(plain.live_value(u64::MAX), Some(&b"v"[..]));
        assert_eq!(plain.dead_since_ms(u64::MAX), None);
        let gone = Record::tombstone(version(10, 0, 1, "a"));
        assert_eq!(gone.live_value(0), None);
        assert_eq!(gone.dead_since_ms(0), Some(10));
    }

    #[test]
    fn expiry_does_not_change_which_version_wins() {
        // An expired newer value still beats an older live one: the key
        // reads as absent, the old value does not come back.
        let old = Record::put(b"old".to_vec(), version(10, 0, 1, "a"));
        let expired = Record::put_expiring(b"new".to_vec(), version(11, 0, 1, "a"), 12);
        assert!(old.is_superseded_by(&expired));
        assert!(!expired.is_superseded_by(&old));
        let newer = Record::put(b"newer".to_vec(), version(20, 0, 1, "a"));
        assert!(expired.is_superseded_by(&newer));
    }

    #[test]
    fn tick_is_strictly_increasing_even_when_wall_time_goes_backwards() {
        let mut clock = Clock::new(node("a"), 3, Hlc::default());
        let walls = [100, 100, 101, 50, 50, 0, 200, 199, 200, 201];
        let mut prev: Option<Version> = None;
        for wall in walls {
            let v = clock.tick(wall);
            assert_eq!(v.generation, 3);
            assert_eq!(v.node, node("a"));
            assert!(v.hlc.physical_ms >= wall);
            if let Some(p) = prev {
                assert!(v > p, "{v:?} after {p:?}");
                assert!(v.hlc > p.hlc);
            }
            prev = Some(v);
            assert_eq!(clock.last(), v.hlc);
        }
        // Wall time ahead of the clock resets the counter.
        assert_eq!(clock.tick(500).hlc, Hlc::new(500, 0));
    }

    #[test]
    fn tick_starts_above_the_floor() {
        let floor = Hlc::new(1_000, 7);
        let mut clock = Clock::new(node("a"), 1, floor);
        assert_eq!(clock.tick(10).hlc, Hlc::new(1_000, 8));
        let mut clock = Clock::new(node("a"), 1, Hlc::new(5, u32::MAX));
        assert_eq!(clock.tick(0).hlc, Hlc::new(6, 0));
    }

    #[test]
    fn a_tick_after_observe_beats_the_observed_version() {
        let mut clock = Clock::new(node("a"), 1, Hlc::default());
        clock.tick(100);
        // A version from the future, from a higher generation and any node.
        let seen = version(5_000, 42, u32::MAX, "z");
        clock.observe(&seen);
        let mine = clock.tick(100);
        assert!(mine > seen);
        assert_eq!(mine.hlc, Hlc::new(5_000, 43));
        // Observing something older changes nothing.
        clock.observe(&version(1, 0, 0, "b"));
        assert!(clock.tick(100) > mine);
    }
}
