//! The one wall-clock source of a peer. Every wall-clock read (version
//! stamps, expiry, hints, tombstone collection, the last-up mark, clock
//! offset probes) goes through [`WallClock::now_ms`], so the testbed can
//! skew a peer's clock at run time through its fault switch
//! (`clock_offset_ms`) and every part of the peer sees the same skew. Does
//! IO: it reads the system clock.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ringkv_gossip::transport::faults::FaultSwitch;

/// A peer's wall clock: the system clock, plus the fault switch's offset
/// when the testbed runs the peer.
#[derive(Debug, Clone, Default)]
pub(crate) struct WallClock {
    faults: Option<Arc<FaultSwitch>>,
}

impl WallClock {
    /// The system clock, skewed by `faults`' clock offset if given.
    pub(crate) fn new(faults: Option<Arc<FaultSwitch>>) -> Self {
        Self { faults }
    }

    /// The system clock alone.
    pub(crate) fn system() -> Self {
        Self::default()
    }

    /// Milliseconds since the Unix epoch (0 before it).
    pub(crate) fn now_ms(&self) -> u64 {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        match &self.faults {
            Some(f) => system.saturating_add_signed(f.clock_offset_ms()),
            None => system,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_gossip::transport::faults::Faults;

    #[test]
    fn the_fault_switch_skews_every_read() {
        let switch = Arc::new(FaultSwitch::new(Some(1)));
        let clock = WallClock::new(Some(switch.clone()));
        let before = WallClock::system().now_ms();
        switch.set(Faults {
            clock_offset_ms: 3_600_000,
            ..Faults::default()
        });
        let ahead = clock.now_ms();
        assert!(ahead >= before + 3_600_000, "{ahead} vs {before}");
        switch.set(Faults {
            clock_offset_ms: -3_600_000,
            ..Faults::default()
        });
        assert!(clock.now_ms() + 3_000_000 < before);
        switch.set(Faults::default());
        assert!(clock.now_ms() >= before);
    }
}
