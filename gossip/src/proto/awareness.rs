//! Lifeguard's local health multiplier: a score that rises when this peer
//! misses acks or nacks or has to refute a suspicion of itself (signs that
//! the fault is here, not there), and falls with each successful probe.
//! Probe timeouts and periods stretch by `score + 1`, so a slow peer stops
//! accusing healthy ones.

use std::time::Duration;

/// The local health score, `0..=max`.
#[derive(Clone, Debug)]
pub(crate) struct Awareness {
    score: u32,
    max: u32,
}

impl Awareness {
    pub(crate) fn new(max: u32) -> Self {
        Self { score: 0, max }
    }

    /// Adds `delta` (may be negative), clamped to `0..=max`.
    pub(crate) fn apply(&mut self, delta: i64) {
        let next = (i64::from(self.score) + delta).clamp(0, i64::from(self.max));
        self.score = u32::try_from(next).expect("clamped to u32 range");
    }

    pub(crate) fn score(&self) -> u32 {
        self.score
    }

    /// `d` stretched by the current health: `d * (score + 1)`.
    pub(crate) fn scale(&self, d: Duration) -> Duration {
        d * (self.score + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_is_clamped_and_scales_timeouts() {
        let mut a = Awareness::new(8);
        a.apply(-3);
        assert_eq!(a.score(), 0);
        assert_eq!(
            a.scale(Duration::from_millis(200)),
            Duration::from_millis(200)
        );
        a.apply(2);
        assert_eq!(
            a.scale(Duration::from_millis(200)),
            Duration::from_millis(600)
        );
        a.apply(100);
        assert_eq!(a.score(), 8);
    }
}
