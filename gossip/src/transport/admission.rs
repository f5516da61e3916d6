//! Which incoming QUIC handshakes the endpoint takes on: a pure account of
//! the handshakes in progress, in total and per source address, and the
//! decision for a new one. No IO: the runner's accept loop asks
//! [`Handshakes::admit`] for every `quinn::Incoming` and acts on the answer.
//!
//! Why: a handshake holds a slot until it completes or times out, and a
//! QUIC Initial costs its sender nothing (no key, no reply needed). Without
//! limits, a couple of dozen stalled Initials a second from one host keep
//! every slot busy and lock out the CLI, joins and re-dials. So:
//! - one source address may hold only a few slots
//!   ([`HandshakeLimits::per_source_max`]); more from it are ignored;
//! - once half the slots are busy, a source must prove it receives at its
//!   address (a stateless QUIC Retry, [`HandshakeLimits::validate_above`]),
//!   which a spoofed flood cannot, and the Retry itself holds no slot;
//! - when every slot is busy, new handshakes are refused (the client learns
//!   at once that the peer is overloaded).
//!
//! Invariant: `total` is the sum of the per-source counts, and no source
//! with a count of zero is kept, so the map holds at most
//! `handshakes_max` entries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::error::ConfigError;

/// Limits on handshakes in progress. `Default` is the production setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Most handshakes in progress at once; beyond it new ones are refused
    /// (`CONNECTION_REFUSED`, which the CLI reports as overloaded). 64: a
    /// loopback or LAN handshake finishes in a few milliseconds, so 64 at
    /// once is far above what joins, re-dials and CLIs of a cluster of
    /// hundreds start in one handshake timeout.
    pub handshakes_max: usize,
    /// With more handshakes than this in progress, a source whose address
    /// is not validated yet gets a QUIC Retry instead of a slot: it must
    /// echo a token sent to its address, which costs a real client one
    /// round trip and a spoofing sender everything. 32, half the slots: an
    /// idle or normally busy peer never pays the round trip.
    pub validate_above: usize,
    /// Most handshakes in progress from one IP address; more Initials from
    /// it are ignored (no answer, no state). 8: one host runs a few peers
    /// and CLIs (a local testbed puts all of them on 127.0.0.1), and their
    /// handshakes finish in milliseconds; an ignored real client resends
    /// its Initial after its probe timeout (about a second), so a burst is
    /// delayed, not lost. One flooding host then holds at most an eighth of
    /// the slots.
    pub per_source_max: usize,
    /// How long a handshake may take before its slot is freed. 3 s: about
    /// ten times a slow WAN round trip with loss, and the time after which
    /// the CLI gives up anyway.
    pub handshake_timeout: Duration,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            handshakes_max: 64,
            validate_above: 32,
            per_source_max: 8,
            handshake_timeout: Duration::from_secs(3),
        }
    }
}

impl HandshakeLimits {
    /// Checks that the limits make sense together.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field: zero slots, a per-source bound or
    /// Retry threshold above the total, or a zero timeout.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: String| Err(ConfigError { field, reason });
        if self.handshakes_max == 0 {
            return bad("handshakes_max", "must be at least 1".to_owned());
        }
        if self.per_source_max == 0 || self.per_source_max > self.handshakes_max {
            return bad(
                "per_source_max",
                format!(
                    "must be between 1 and handshakes_max ({})",
                    self.handshakes_max
                ),
            );
        }
        if self.validate_above > self.handshakes_max {
            return bad(
                "validate_above",
                format!("must be at most handshakes_max ({})", self.handshakes_max),
            );
        }
        if self.handshake_timeout.is_zero() {
            return bad("handshake_timeout", "must be above zero".to_owned());
        }
        Ok(())
    }
}

/// What to do with an incoming handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Take it: a slot is now held for it until [`Handshakes::finish`].
    Accept,
    /// Answer with a stateless Retry (address validation); no slot held.
    Retry,
    /// Every slot is busy: refuse it (the client hears `CONNECTION_REFUSED`).
    RefuseFull,
    /// Its source holds its share of slots already: ignore it silently.
    IgnoreSource,
}

/// The handshakes in progress. See the module doc.
#[derive(Debug)]
pub struct Handshakes {
    limits: HandshakeLimits,
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

impl Handshakes {
    /// None in progress yet.
    pub fn new(limits: HandshakeLimits) -> Self {
        Self {
            limits,
            total: 0,
            by_source: HashMap::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &HandshakeLimits {
        &self.limits
    }

    /// Handshakes in progress.
    pub fn in_progress(&self) -> usize {
        self.total
    }

    /// Decides for a handshake from `source`; `validated` is whether its
    /// address was proven (it echoed a Retry token), `may_retry` whether a
    /// Retry can still be sent to it. On [`Admit::Accept`] a slot is taken,
    /// to be given back with [`finish`](Self::finish).
    pub fn admit(&mut self, source: IpAddr, validated: bool, may_retry: bool) -> Admit {
        let source = source.to_canonical();
        let from_source = self.by_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.limits.per_source_max {
            return Admit::IgnoreSource;
        }
        if self.total >= self.limits.handshakes_max {
            return Admit::RefuseFull;
        }
        if self.total >= self.limits.validate_above && !validated && may_retry {
            return Admit::Retry;
        }
        self.total += 1;
        *self.by_source.entry(source).or_insert(0) += 1;
        Admit::Accept
    }

    /// Gives back the slot of a handshake from `source` that finished,
    /// failed or timed out.
    pub fn finish(&mut self, source: IpAddr) {
        let source = source.to_canonical();
        let Some(count) = self.by_source.get_mut(&source) else {
            debug_assert!(false, "finish without an accepted handshake from {source}");
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.by_source.remove(&source);
        }
        self.total = self.total.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn limits() -> HandshakeLimits {
        HandshakeLimits {
            handshakes_max: 8,
            validate_above: 4,
            per_source_max: 2,
            handshake_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn one_source_gets_its_share_and_no_more() {
        let mut h = Handshakes::new(limits());
        assert_eq!(h.admit(ip(2), false, true), Admit::Accept);
        assert_eq!(h.admit(ip(2), false, true), Admit::Accept);
        assert_eq!(h.admit(ip(2), true, false), Admit::IgnoreSource);
        // Another source is not affected.
        assert_eq!(h.admit(ip(3), false, true), Admit::Accept);
        h.finish(ip(2));
        assert_eq!(h.admit(ip(2), false, true), Admit::Accept);
        assert_eq!(h.in_progress(), 3);
    }

    #[test]
    fn past_the_threshold_unvalidated_sources_get_a_retry_and_hold_no_slot() {
        let mut h = Handshakes::new(limits());
        for last in 2..6 {
            assert_eq!(h.admit(ip(last), false, true), Admit::Accept);
        }
        assert_eq!(h.admit(ip(9), false, true), Admit::Retry);
        assert_eq!(h.in_progress(), 4, "a Retry takes no slot");
        // The same client, back with its token: validated, accepted.
        assert_eq!(h.admit(ip(9), true, false), Admit::Accept);
    }

    #[test]
    fn when_every_slot_is_busy_new_handshakes_are_refused_until_one_finishes() {
        let mut h = Handshakes::new(limits());
        for last in 2..10 {
            assert_eq!(h.admit(ip(last), true, false), Admit::Accept);
        }
        assert_eq!(h.admit(ip(20), true, false), Admit::RefuseFull);
        assert_eq!(h.admit(ip(20), false, true), Admit::RefuseFull);
        h.finish(ip(5));
        assert_eq!(h.admit(ip(20), true, false), Admit::Accept);
    }

    #[test]
    fn the_source_table_forgets_sources_with_nothing_in_progress() {
        let mut h = Handshakes::new(limits());
        assert_eq!(h.admit(ip(2), false, true), Admit::Accept);
        h.finish(ip(2));
        assert!(h.by_source.is_empty());
        assert_eq!(h.in_progress(), 0);
    }

    #[test]
    fn v4_mapped_v6_addresses_count_as_their_v4_source() {
        let mut h = Handshakes::new(limits());
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().expect("an address");
        assert_eq!(h.admit(mapped, false, true), Admit::Accept);
        assert_eq!(h.admit(ip(2), false, true), Admit::Accept);
        assert_eq!(h.admit(mapped, false, true), Admit::IgnoreSource);
    }

    #[test]
    fn defaults_are_valid_and_nonsense_is_not() {
        assert_eq!(HandshakeLimits::default().validate(), Ok(()));
        let bad = [
            HandshakeLimits {
                handshakes_max: 0,
                ..limits()
            },
            HandshakeLimits {
                per_source_max: 9,
                ..limits()
            },
            HandshakeLimits {
                validate_above: 9,
                ..limits()
            },
            HandshakeLimits {
                handshake_timeout: Duration::ZERO,
                ..limits()
            },
        ];
        for limits in bad {
            assert!(limits.validate().is_err(), "{limits:?}");
        }
    }
}
