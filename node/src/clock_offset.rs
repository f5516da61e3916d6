//! Bounded clock offset (CockroachDB's max-offset idea, for a leaderless
//! store). A peer probes the others' wall clocks (`Request::Time`) and
//! estimates each offset from the round trip: the remote clock was read
//! somewhere between sending and receiving, so `offset = remote - (sent +
//! rtt / 2)`, give or take `rtt / 2`. Of the last few samples per peer the
//! one with the shortest round trip is kept (NTP's clock filter). A peer
//! farther than the maximum offset from most of the peers it measured
//! (counting only offsets beyond the bound by more than their
//! uncertainty) is the one whose clock is wrong: it stops coordinating
//! writes until its clock is back. Pure: times are arguments.
//!
//! With two peers a wrong clock cannot be told from a right one: both see
//! the same offset and both stop coordinating writes.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use ringkv_gossip::NodeId;

/// The default clock offset bound (`--max-clock-offset`), as CockroachDB's.
pub(crate) const MAX_CLOCK_OFFSET_DEFAULT: Duration = Duration::from_millis(500);
/// Samples kept per peer.
const SAMPLES_MAX: usize = 4;
/// Samples older than this are forgotten.
const SAMPLE_AGE_MAX: Duration = Duration::from_secs(30);
/// Peers measured before a verdict can be "beyond" (fewer when the
/// cluster has fewer).
const VOTES_MIN: usize = 3;

/// One probe's estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    /// The remote clock minus this peer's, in milliseconds.
    offset_ms: i64,
    /// Half the round trip: the estimate's uncertainty.
    uncertainty_ms: u64,
    at: Instant,
}

/// What this peer's clock looks like from the samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Verdict {
    /// No peer measured yet (alone, or just started).
    #[default]
    Unmeasured,
    /// Within the bound of most peers measured; `offset_ms` is this
    /// peer's clock minus the median of theirs.
    Within { offset_ms: i64, measured: usize },
    /// Beyond the bound from `far` of the `measured` peers.
    Beyond {
        offset_ms: i64,
        far: usize,
        measured: usize,
    },
}

impl Verdict {
    /// This peer's clock minus the others' (median), if measured.
    pub(crate) fn offset_ms(&self) -> Option<i64> {
        match self {
            Self::Unmeasured => None,
            Self::Within { offset_ms, .. } | Self::Beyond { offset_ms, .. } => Some(*offset_ms),
        }
    }

    pub(crate) fn is_beyond(&self) -> bool {
        matches!(self, Self::Beyond { .. })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unmeasured => f.write_str("no peer's clock measured yet"),
            Self::Within {
                offset_ms,
                measured,
            } => write!(
                f,
                "this peer's clock is {offset_ms:+} ms from the median of {measured} peer(s)"
            ),
            Self::Beyond {
                offset_ms,
                far,
                measured,
            } => write!(
                f,
                "this peer's clock is {offset_ms:+} ms from the median of the peers it measured, beyond the maximum offset from {far} of {measured}"
            ),
        }
    }
}

/// The samples of every peer measured.
#[derive(Debug, Default)]
pub(crate) struct Offsets {
    peers: HashMap<NodeId, VecDeque<Sample>>,
}

impl Offsets {
    /// Takes one probe of `peer`: sent at `sent_ms` by this peer's wall
    /// clock, answered with `remote_ms`, after `rtt` (monotonic), at `now`.
    pub(crate) fn record(
        &mut self,
        peer: NodeId,
        sent_ms: u64,
        remote_ms: u64,
        rtt: Duration,
        now: Instant,
    ) {
        let rtt_ms = u64::try_from(rtt.as_millis()).unwrap_or(u64::MAX);
        let midpoint = i128::from(sent_ms) + i128::from(rtt_ms / 2);
        let offset = i128::from(remote_ms) - midpoint;
        let offset_ms =
            i64::try_from(offset).unwrap_or(if offset < 0 { i64::MIN } else { i64::MAX });
        let samples = self.peers.entry(peer).or_default();
        samples.push_back(Sample {
            offset_ms,
            uncertainty_ms: rtt_ms.div_ceil(2),
            at: now,
        });
        while samples.len() > SAMPLES_MAX {
            samples.pop_front();
        }
    }

    /// Forgets peers that are not members any more.
    pub(crate) fn retain(&mut self, member: impl Fn(&NodeId) -> bool) {
        self.peers.retain(|id, _| member(id));
    }

    /// This peer's clock against the others', at `now`, for `max_offset`,
    /// with `peers` other live members. Until [`VOTES_MIN`] of them (or all,
    /// when fewer) are measured, the missing ones count as agreeing: the
    /// first peer measured being the one with the wrong clock must not make
    /// this one stop.
    pub(crate) fn verdict(&self, max_offset: Duration, peers: usize, now: Instant) -> Verdict {
        let max_ms = u64::try_from(max_offset.as_millis()).unwrap_or(u64::MAX);
        let best: Vec<Sample> = self
            .peers
            .values()
            .filter_map(|samples| best_sample(samples, now))
            .collect();
        if best.is_empty() {
            return Verdict::Unmeasured;
        }
        let far = best
            .iter()
            .filter(|s| s.offset_ms.unsigned_abs().saturating_sub(s.uncertainty_ms) > max_ms)
            .count();
        // Theirs minus mine, so mine minus theirs is the negation.
        let offset_ms = median(best.iter().map(|s| s.offset_ms).collect()).saturating_neg();
        let measured = best.len();
        if far * 2 > measured.max(peers.min(VOTES_MIN)) {
            Verdict::Beyond {
                offset_ms,
                far,
                measured,
            }
        } else {
            Verdict::Within {
                offset_ms,
                measured,
            }
        }
    }
}

/// Of one peer's fresh samples, the newest, or an older one with a shorter
/// round trip that agrees with it (their intervals overlap). A clock that
/// stepped makes the older samples disagree, so the step shows at the next
/// sample even when the older ones had shorter round trips.
fn best_sample(samples: &VecDeque<Sample>, now: Instant) -> Option<Sample> {
    let mut fresh = samples
        .iter()
        .rev()
        .filter(|s| now.saturating_duration_since(s.at) <= SAMPLE_AGE_MAX);
    let newest = *fresh.next()?;
    let mut best = newest;
    for s in fresh {
        let apart = s.offset_ms.abs_diff(newest.offset_ms);
        if s.uncertainty_ms < best.uncertainty_ms
            && apart <= s.uncertainty_ms.saturating_add(newest.uncertainty_ms)
        {
            best = *s;
        }
    }
    Some(best)
}

/// What other peers' clocks said when this peer started after an apparent
/// long absence (measured by its own clock, which may have jumped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Confirmation {
    /// A peer answered, and its clock is within the maximum offset of ours.
    Agrees,
    /// Peers answered, and their clocks are far from ours.
    Disagrees { offset_ms: i64 },
    /// No peer answered (alone, or the whole cluster is down).
    Nobody,
}

/// What a peer does with its data after being away `away` by its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AbsenceAction {
    /// Nothing: it was not away long.
    Keep,
    /// Keep the records but compare its ranges afresh: away longer than
    /// the dead grace, the others took writes without it.
    Compare,
    /// Drop its records and pull its ranges afresh: away longer than the
    /// tombstone grace, its records could bring deleted keys back. Only
    /// when another peer's clock confirms the absence: a clock that jumped
    /// must never make a peer drop its data.
    Clear,
}

/// The absence rule (see [`AbsenceAction`]).
pub(crate) fn absence_action(
    away: Duration,
    dead_grace: Duration,
    tombstone_grace: Duration,
    confirmation: Confirmation,
) -> AbsenceAction {
    if away > tombstone_grace {
        if confirmation == Confirmation::Agrees {
            AbsenceAction::Clear
        } else {
            AbsenceAction::Compare
        }
    } else if away > dead_grace {
        AbsenceAction::Compare
    } else {
        AbsenceAction::Keep
    }
}

/// How the answers of the peers asked at start-up confirm this peer's
/// clock: `offsets` are theirs minus ours, each with its uncertainty.
pub(crate) fn confirmation(offsets: &[(i64, u64)], max_offset: Duration) -> Confirmation {
    let max_ms = u64::try_from(max_offset.as_millis()).unwrap_or(u64::MAX);
    if offsets.is_empty() {
        return Confirmation::Nobody;
    }
    if offsets
        .iter()
        .any(|(o, u)| o.unsigned_abs().saturating_sub(*u) <= max_ms)
    {
        return Confirmation::Agrees;
    }
    Confirmation::Disagrees {
        offset_ms: median(offsets.iter().map(|(o, _)| *o).collect()).saturating_neg(),
    }
}

/// The median of `values` (not empty); of the two middle ones of an even
/// count, the one nearer zero, so one wrong clock of two does not make the
/// right one look off.
fn median(mut values: Vec<i64>) -> i64 {
    values.sort_unstable();
    let upper = values[values.len() / 2];
    if values.len() % 2 == 1 {
        return upper;
    }
    let lower = values[values.len() / 2 - 1];
    if lower.unsigned_abs() <= upper.unsigned_abs() {
        lower
    } else {
        upper
    }
}

#[cfg(test)]
mod tests;
