//! Membership configuration: every default named, with its reason.

use std::time::Duration;

use crate::error::ConfigError;
use crate::proto::message::ClusterId;

/// Tunables of the SWIM state machine. `Default` is the production setting
/// for a LAN or one region; [`Config::memberlist_like`] reproduces the
/// defaults of HashiCorp memberlist's LAN profile for comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Messages carrying another cluster id are dropped. Derived from the
    /// cluster secret by the daemon.
    pub cluster: ClusterId,
    /// A new probe starts every period. 300 ms: with N peers probing in
    /// shuffled round-robin, a failed peer is first probed after about one
    /// period, and within 4.6 periods at p99, which puts first suspicion
    /// under 2 s. Probes overlap when their cycle is longer than this.
    pub probe_interval: Duration,
    /// Wait this long for a direct ack before asking others to probe. 150 ms
    /// is about 100x a LAN round trip.
    pub probe_timeout: Duration,
    /// After the probe timeout, this long for an indirect ack or nack
    /// before the probe fails. 250 ms: two round trips through a helper,
    /// with room for a slow one.
    pub indirect_timeout: Duration,
    /// Peers asked to probe indirectly (k in SWIM). 3: under 10% loss all
    /// three paths fail only 4% of the time.
    pub indirect_probes: usize,
    /// When a peer hears a new suspicion it probes the suspect itself with
    /// probability `suspicion_probes / N`, so about this many independent
    /// checks run cluster-wide within one probe cycle. A dead peer collects
    /// its Lifeguard confirmations in under a second instead of waiting for
    /// round-robin probes; a live one just answers them. 6: twice the
    /// confirmations expected. 0 turns it off (memberlist has none).
    pub suspicion_probes: u32,
    /// Suspicion timeout per log10(cluster size), before confirmations
    /// shrink it: min = base * max(1, log10 N). 500 ms gives 1.5 s at
    /// 1,000 peers: a live suspect is told directly when suspected and its
    /// refutation crosses the cluster in well under that.
    pub suspicion_base: Duration,
    /// A fresh suspicion starts at `max = min * suspicion_max_mult` and
    /// shrinks to `min` as independent confirmations arrive (Lifeguard). 6,
    /// as in Lifeguard: a lone suspicion from a lossy link has plenty of time
    /// to be refuted.
    pub suspicion_max_mult: u32,
    /// Independent confirmations that shrink a suspicion to its minimum
    /// (Lifeguard's K). 3: with a real failure, peers that probe the dead
    /// peer confirm within a few periods.
    pub suspicion_confirmations: u32,
    /// Ceiling of the local health multiplier (Lifeguard awareness); probe
    /// timeouts and periods stretch by `score + 1`. 8, as in Lifeguard.
    pub awareness_max: u32,
    /// Each update is sent about `retransmit_mult * ceil(log10(N + 1))`
    /// times. 4: at 1,000 peers, 16 sends reach everyone with high
    /// probability even at 10% loss.
    pub retransmit_mult: u32,
    /// Period of gossip to random peers. 200 ms: an update crosses 1,000
    /// peers in about five rounds, one second.
    pub gossip_interval: Duration,
    /// Peers per gossip round. 3: fan-out 4 counting the probe, enough for
    /// epidemic spread under loss without flooding.
    pub gossip_fanout: usize,
    /// Full-state exchange with one random peer, every this long at up to 32
    /// peers, stretched by `ceil(log2(N/32)) + 1` beyond (memberlist's rule),
    /// so its bandwidth stays flat as the cluster grows. 30 s.
    pub push_pull_interval: Duration,
    /// A live peer whose reported view has differed from this peer's for
    /// longer than an update is retransmitted (`retransmit_limit(N)` gossip
    /// rounds) missed something gossip will no longer bring: this peer
    /// starts a push-pull with it then, at most once every this long, in
    /// clusters of up to [`REPAIR_PEERS_MAX`] peers. Beyond, an update has
    /// many more relays, full states are large, and views keep moving (at
    /// 1,000 peers and 10% loss they never stay equal): one repair per
    /// peer per push-pull period there still added 2.4 KB/s per peer (18%)
    /// in the simulator. 2 s.
    pub repair_interval: Duration,
    /// Dead and left members are forgotten this long after they changed
    /// state. 30 min: long enough to heal partitions by gossip, short
    /// enough that the member table does not grow forever.
    pub dead_reap_after: Duration,
    /// Now and then a peer exchanges state with a seed that is not in its
    /// view, so two halves that forgot each other meet again. 60 s.
    pub seed_contact_interval: Duration,
    /// Largest datagram this peer sends, in bytes. 1,200: what QUIC
    /// guarantees on any path. Updates that do not fit wait.
    pub max_datagram_size: usize,
    /// Largest stream message (push-pull) accepted, in bytes. 8 MiB holds
    /// the state of about 50,000 peers.
    pub max_stream_message: usize,
    /// A wake-up this much later than asked means this peer's own loop
    /// stalled (paused, swapped, starved). 1 s, two probe periods.
    pub stall_threshold: Duration,
    /// Joining retries with doubling backoff up to this. 30 s.
    pub join_retry_max: Duration,
    /// Most updates waiting to be gossiped; the most-sent are dropped
    /// first beyond it. 8,192: a full cluster's worth of changes at once.
    pub broadcast_queue_max: usize,
    /// Most indirect probes this peer runs for others at once. 256: far
    /// above k per period from every peer, so a flood cannot grow memory.
    pub forward_probes_max: usize,
    /// A statement about a member whose incarnation is more than this above
    /// the last one accepted for it is dropped, signed or not. A member
    /// raises its own incarnation by one per refutation or metadata change,
    /// so 2^20 (a million) is far beyond any honest gap, while a peer that
    /// signs a wild Suspect cannot push anyone near `u64::MAX`, where it
    /// could no longer refute.
    pub incarnation_jump_max: u64,
    /// Most members (live, dead and left) this peer holds; statements about
    /// new members beyond it are dropped and counted. 20,000: well above
    /// the 1,000-peer clusters the defaults are tuned for and inside what
    /// a push-pull stream holds, yet a process that invents members cannot
    /// grow this peer's memory, probe list or ring without bound.
    pub members_max: usize,
    /// Newest wire version this peer decodes and sends (the oldest is
    /// always `codec::MIN_VERSION`); advertised to the cluster in its
    /// metadata. `codec::VERSION` in every production build; only a
    /// rolling-upgrade rehearsal raises it to `codec::TEST_VERSION`
    /// (docs/upgrades.md).
    pub protocol_max: u8,
}

/// The largest cluster in which a peer repairs a disagreeing view by
/// push-pull at once (see [`Config::repair_interval`]).
pub const REPAIR_PEERS_MAX: usize = 32;

impl Default for Config {
    fn default() -> Self {
        Self {
            cluster: ClusterId([0; 16]),
            probe_interval: Duration::from_millis(300),
            probe_timeout: Duration::from_millis(150),
            indirect_timeout: Duration::from_millis(250),
            indirect_probes: 3,
            suspicion_probes: 6,
            suspicion_base: Duration::from_millis(500),
            suspicion_max_mult: 6,
            suspicion_confirmations: 3,
            awareness_max: 8,
            retransmit_mult: 4,
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 3,
            push_pull_interval: Duration::from_secs(30),
            repair_interval: Duration::from_secs(2),
            dead_reap_after: Duration::from_secs(30 * 60),
            seed_contact_interval: Duration::from_secs(60),
            max_datagram_size: 1200,
            max_stream_message: 8 * 1024 * 1024,
            stall_threshold: Duration::from_secs(1),
            join_retry_max: Duration::from_secs(30),
            broadcast_queue_max: 8192,
            forward_probes_max: 256,
            incarnation_jump_max: 1 << 20,
            members_max: 20_000,
            protocol_max: crate::proto::codec::VERSION,
        }
    }
}

impl Config {
    /// HashiCorp memberlist's LAN defaults mapped onto ours: 1 s probes,
    /// 500 ms probe timeout, suspicion multiplier 4 (min = 4 * log10 N * 1 s),
    /// gossip every 200 ms to 3 peers. For side-by-side comparisons.
    pub fn memberlist_like() -> Self {
        Self {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_timeout: Duration::from_millis(500),
            suspicion_probes: 0,
            suspicion_base: Duration::from_secs(4),
            suspicion_confirmations: 2,
            stall_threshold: Duration::from_secs(2),
            ..Self::default()
        }
    }

    /// Fast timers for tests on one machine.
    pub fn for_test() -> Self {
        Self {
            probe_interval: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(40),
            indirect_timeout: Duration::from_millis(60),
            suspicion_base: Duration::from_millis(150),
            gossip_interval: Duration::from_millis(40),
            push_pull_interval: Duration::from_secs(2),
            seed_contact_interval: Duration::from_secs(5),
            stall_threshold: Duration::from_millis(300),
            join_retry_max: Duration::from_secs(1),
            ..Self::default()
        }
    }

    /// Checks every field's range.
    ///
    /// # Errors
    /// The first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: &str| {
            Err(ConfigError {
                field,
                reason: reason.into(),
            })
        };
        if self.probe_interval.is_zero() {
            return bad("probe_interval", "must be above zero");
        }
        if !(crate::proto::codec::MIN_VERSION..=crate::proto::codec::MAX_KNOWN_VERSION)
            .contains(&self.protocol_max)
        {
            return bad("protocol_max", "must be a wire version this build knows");
        }
        if self.probe_timeout.is_zero() || self.probe_timeout >= self.probe_interval {
            return bad(
                "probe_timeout",
                "must be above zero and below probe_interval",
            );
        }
        if self.suspicion_base.is_zero() {
            return bad("suspicion_base", "must be above zero");
        }
        if self.suspicion_max_mult == 0 {
            return bad("suspicion_max_mult", "must be at least 1");
        }
        if self.retransmit_mult == 0 {
            return bad("retransmit_mult", "must be at least 1");
        }
        if self.gossip_interval.is_zero()
            || self.push_pull_interval.is_zero()
            || self.repair_interval.is_zero()
        {
            return bad("gossip_interval", "intervals must be above zero");
        }
        if self.max_datagram_size < 512 || self.max_datagram_size > 65_000 {
            return bad("max_datagram_size", "must be between 512 and 65000 bytes");
        }
        if self.max_stream_message < self.max_datagram_size {
            return bad("max_stream_message", "must be at least max_datagram_size");
        }
        if self.broadcast_queue_max == 0 || self.forward_probes_max == 0 {
            return bad("broadcast_queue_max", "queue limits must be at least 1");
        }
        if self.incarnation_jump_max == 0 || self.incarnation_jump_max > 1 << 40 {
            return bad("incarnation_jump_max", "must be between 1 and 2^40");
        }
        if self.members_max == 0 {
            return bad("members_max", "must be at least 1");
        }
        Ok(())
    }

    /// Minimum suspicion timeout for a cluster of `n` peers.
    pub fn suspicion_min(&self, n: usize) -> Duration {
        let scale = (n.max(1) as f64).log10().max(1.0);
        self.suspicion_base.mul_f64(scale)
    }

    /// Sends per update for a cluster of `n` peers.
    pub fn retransmit_limit(&self, n: usize) -> u32 {
        let scale = ((n + 1) as f64).log10().ceil().max(1.0);
        self.retransmit_mult * scale as u32
    }

    /// How long a live peer's view may differ from this peer's before a
    /// push-pull repairs it, in a cluster of `n` peers: as long as an
    /// update is still being gossiped.
    pub fn disagreement_max(&self, n: usize) -> Duration {
        self.gossip_interval * self.retransmit_limit(n)
    }

    /// Least time between two repairs by push-pull in a cluster of `n`
    /// peers (see [`Config::repair_interval`]); `None`: no repairs beyond
    /// [`REPAIR_PEERS_MAX`] peers.
    pub fn repair_period(&self, n: usize) -> Option<Duration> {
        (n <= REPAIR_PEERS_MAX).then_some(self.repair_interval)
    }

    /// Push-pull period for a cluster of `n` peers.
    pub fn push_pull_period(&self, n: usize) -> Duration {
        if n <= 32 {
            return self.push_pull_interval;
        }
        let scale = ((n as f64).log2() - 32f64.log2()).ceil() + 1.0;
        self.push_pull_interval.mul_f64(scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        Config::memberlist_like().validate().unwrap();
        Config::for_test().validate().unwrap();
    }

    #[test]
    fn validate_names_the_bad_field() {
        let c = Config {
            probe_timeout: Duration::from_secs(1),
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "probe_timeout");
        let c = Config {
            max_datagram_size: 10,
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "max_datagram_size");
    }

    #[test]
    fn timeouts_scale_with_cluster_size() {
        let c = Config::default();
        assert_eq!(c.suspicion_min(5), Duration::from_millis(500));
        assert_eq!(c.suspicion_min(1000), Duration::from_millis(1500));
        assert_eq!(c.retransmit_limit(9), 4);
        assert_eq!(c.retransmit_limit(1000), 16);
        assert_eq!(c.push_pull_period(10), Duration::from_secs(30));
        assert_eq!(c.push_pull_period(1000), Duration::from_secs(180));
    }
}
