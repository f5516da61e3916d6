//! Lifeguard suspicion timeouts: a suspicion starts at `max` and shrinks
//! toward `min` as independent peers confirm it,
//! `timeout = max - (max - min) * ln(C + 1) / ln(K + 1)`, never below `min`,
//! where C is the number of confirmations so far and K the number expected.

use std::time::{Duration, Instant};

use ringkv_ring::NodeId;

use crate::proto::member::Incarnation;

/// One running suspicion.
#[derive(Clone, Debug)]
pub(crate) struct Suspicion {
    pub(crate) incarnation: Incarnation,
    start: Instant,
    min: Duration,
    max: Duration,
    expected: u32,
    /// Peers whose suspicion counted (the first suspecter included);
    /// bounded by `expected + 1`.
    confirmers: Vec<NodeId>,
}

impl Suspicion {
    pub(crate) fn new(
        incarnation: Incarnation,
        by: NodeId,
        now: Instant,
        min: Duration,
        max: Duration,
        expected: u32,
    ) -> Self {
        Self {
            incarnation,
            start: now,
            min,
            max: max.max(min),
            expected,
            confirmers: vec![by],
        }
    }

    /// Counts a confirmation from `by`; true when it was new and changed
    /// the deadline (worth gossiping on).
    pub(crate) fn confirm(&mut self, by: NodeId) -> bool {
        if self.confirmations() >= self.expected || self.confirmers.contains(&by) {
            return false;
        }
        self.confirmers.push(by);
        true
    }

    /// Whether a suspicion by `by` would count as a new confirmation.
    pub(crate) fn would_count(&self, by: &NodeId) -> bool {
        self.confirmations() < self.expected && !self.confirmers.contains(by)
    }

    /// Who raised the suspicion first.
    pub(crate) fn first_suspecter(&self) -> Option<NodeId> {
        self.confirmers.first().copied()
    }

    /// Independent confirmations after the first suspicion.
    pub(crate) fn confirmations(&self) -> u32 {
        u32::try_from(self.confirmers.len() - 1).expect("bounded by expected")
    }

    /// Current timeout from the start.
    pub(crate) fn timeout(&self) -> Duration {
        if self.expected == 0 {
            return self.min;
        }
        let frac = f64::from(self.confirmations() + 1).ln() / f64::from(self.expected + 1).ln();
        let span = self.max.saturating_sub(self.min);
        self.max
            .saturating_sub(span.mul_f64(frac.clamp(0.0, 1.0)))
            .max(self.min)
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.start + self.timeout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: &str) -> NodeId {
        NodeId::from_name(n)
    }

    #[test]
    fn starts_at_max_and_shrinks_to_min_with_confirmations() {
        let now = Instant::now();
        let (min, max) = (Duration::from_secs(2), Duration::from_secs(12));
        let mut s = Suspicion::new(1, id("a"), now, min, max, 3);
        assert_eq!(s.timeout(), max);
        assert!(s.confirm(id("b")));
        // ln 2 / ln 4 = 0.5: halfway.
        assert_eq!(s.timeout(), Duration::from_secs(7));
        assert!(!s.confirm(id("b")), "the same peer counts once");
        assert!(
            !s.confirm(id("a")),
            "the first suspecter is not a confirmation"
        );
        assert!(s.confirm(id("c")));
        assert!(s.confirm(id("d")));
        assert_eq!(s.timeout(), min);
        assert!(!s.confirm(id("e")), "beyond K nothing changes");
        assert_eq!(s.deadline(), now + min);
    }

    #[test]
    fn no_expected_confirmations_means_min() {
        let s = Suspicion::new(
            1,
            id("a"),
            Instant::now(),
            Duration::from_secs(1),
            Duration::from_secs(6),
            0,
        );
        assert_eq!(s.timeout(), Duration::from_secs(1));
    }
}
