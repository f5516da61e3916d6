//! Timers as data: a kind, a deadline, and a heap ordered by deadline.
//! Timers are never cancelled; a handler checks whether its timer is still
//! current (probe sequence number, suspicion deadline) and ignores it if
//! not, as quinn-proto and foca do.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use ringkv_ring::NodeId;

/// What a timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// Start the next probe (and judge the last one).
    Probe,
    /// The direct ack for probe `seq` is late: probe indirectly.
    ProbeTimeout { seq: u64 },
    /// Probe `seq`'s time is up: judge it.
    ProbeEnd { seq: u64 },
    /// Send a nack for the indirect probe `seq` run for another peer.
    ForwardNack { seq: u64 },
    /// A suspicion of this member may have run out.
    Suspicion { id: NodeId },
    /// Gossip to random peers.
    Gossip,
    /// One extra gossip round now: a member was just found dead here
    /// (see `Swim::gossip_soon`).
    GossipNow,
    /// Full-state exchange with a random peer.
    PushPull,
    /// Forget long-dead members.
    Reap,
    /// Retry joining through the seeds.
    JoinRetry,
    /// Exchange state with a seed that is not in the view.
    SeedContact,
}

/// Pending timers, earliest first.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, TimerKind)>>,
    counter: u64,
}

impl Timers {
    pub(crate) fn set(&mut self, at: Instant, kind: TimerKind) {
        self.counter += 1;
        self.heap.push(Reverse((at, self.counter, kind)));
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes and returns the earliest timer due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, TimerKind)> {
        if self.next()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse((at, _, kind))| (at, kind))
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timers_fire_in_deadline_order_then_insertion_order() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.set(t0 + Duration::from_millis(20), TimerKind::Gossip);
        t.set(t0 + Duration::from_millis(10), TimerKind::Probe);
        t.set(t0 + Duration::from_millis(10), TimerKind::Reap);
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(t.pop_due(t0), None);
        let later = t0 + Duration::from_millis(30);
        let kinds: Vec<_> = std::iter::from_fn(|| t.pop_due(later))
            .map(|(_, k)| k)
            .collect();
        assert_eq!(
            kinds,
            vec![TimerKind::Probe, TimerKind::Reap, TimerKind::Gossip]
        );
    }
}
