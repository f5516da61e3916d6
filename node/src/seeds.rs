//! Seeds given by name (`--join host:port`): the checked form of a name,
//! and [`SeedPlan`], the pure decision of when to resolve the names again
//! and hand the addresses to gossip. Time and randomness are inputs; no
//! IO (the resolver and the task that drives the plan are in
//! `daemon/seeds.rs`).
//!
//! The plan resolves again on every join attempt, with a bounded,
//! jittered exponential backoff, until the peer is settled: joined, with
//! at least one other live member, and with a live member at one of the
//! seed addresses (when the names resolve to any address but its own).
//! A settled peer that later finds itself alone, or its seeds gone (a
//! partition, or seeds that moved to new addresses), starts over at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::RngCore;

/// One `--join` seed: a host name or IP literal and a port, as given
/// (`ringkv-0.ringkv.default.svc.cluster.local:7000`, `localhost:7001`,
/// `10.0.0.5:7000`, `[::1]:7000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeedName {
    /// The host part, without brackets for IPv6 literals.
    pub(crate) host: String,
    /// The port.
    pub(crate) port: u16,
}

impl SeedName {
    /// Checks `text` is `host:port` with a port from 1 to 65535.
    ///
    /// # Errors
    /// A message naming what is wrong, for the user.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let bad = |why: &str| {
            format!("--join {text:?}: {why}; give host:port, e.g. ringkv-0.ringkv:7000 or 127.0.0.1:7001")
        };
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let (host, port) = rest
                .split_once("]:")
                .ok_or_else(|| bad("an IPv6 address needs [addr]:port"))?;
            (host, port)
        } else {
            t.rsplit_once(':').ok_or_else(|| bad("no port"))?
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host.contains(':') && !t.starts_with('[') {
            return Err(bad("an IPv6 address needs [addr]:port"));
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
        if !host.chars().all(valid) {
            return Err(bad("the host has characters no host name has"));
        }
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
        if port == 0 {
            return Err(bad("port 0 is not a peer's port"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for SeedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Backoff between two resolve-and-join attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeedRetry {
    /// Wait after the first attempt. 1s: a seed that is starting (its pod
    /// just scheduled, its DNS record not yet published) is usually there
    /// within a few seconds.
    pub(crate) base: Duration,
    /// Longest wait: 30s, gossip's own `join_retry_max`, so a peer cut off
    /// for long finds its seeds again within half a minute of their return
    /// while costing a lookup every 30s at most.
    pub(crate) max: Duration,
}

impl Default for SeedRetry {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl SeedRetry {
    /// The wait after attempt `attempt` (0 the first): `base * 2^attempt`
    /// capped at `max`, then jittered to a uniform point of its upper half
    /// ("equal jitter"), so peers cut off together do not retry in step.
    pub(crate) fn delay(&self, attempt: u32, rng: &mut impl RngCore) -> Duration {
        let full = self
            .base
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max);
        let half = full / 2;
        let span = u64::try_from((full - half).as_micros()).unwrap_or(u64::MAX);
        let jitter = if span == 0 {
            0
        } else {
            rng.next_u64() % (span + 1)
        };
        half + Duration::from_micros(jitter)
    }
}

/// What the membership view says, as the plan needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sighting {
    /// Gossip's joined flag: a seed answered (or none was needed).
    pub(crate) joined: bool,
    /// Live members other than this peer.
    pub(crate) live_others: usize,
    /// Whether the last resolution gave any address other than this
    /// peer's own.
    pub(crate) seeds_known: bool,
    /// Whether a live member is at one of those addresses.
    pub(crate) seed_live: bool,
}

impl Sighting {
    /// Joined, not alone, and (when the names point anywhere but here)
    /// in touch with a seed.
    pub(crate) fn settled(&self) -> bool {
        self.joined && self.live_others > 0 && (self.seed_live || !self.seeds_known)
    }
}

/// When to resolve the seed names again and hand the addresses to
/// gossip. Call [`Self::handle_view`] whenever the view changes,
/// [`Self::poll_timeout`] for the next deadline, and
/// [`Self::handle_timeout`] when it passes: `true` means resolve now and
/// pass what comes back to gossip.
#[derive(Debug, Clone)]
pub(crate) struct SeedPlan {
    retry: SeedRetry,
    /// Attempts since the peer was last settled.
    attempt: u32,
    /// The next attempt, when one is due (`None`: settled).
    next: Option<Instant>,
}

impl SeedPlan {
    /// A plan for a peer whose first attempt was made at `now` (the
    /// daemon resolves the names once at start): the next is due after
    /// the first backoff.
    pub(crate) fn new(retry: SeedRetry, now: Instant, rng: &mut impl RngCore) -> Self {
        Self {
            retry,
            attempt: 1,
            next: Some(now + retry.delay(0, rng)),
        }
    }

    /// The next attempt's deadline, if one is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    /// Attempts made since the peer was last settled.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The view changed. Settled: no more attempts. Not settled and none
    /// due (it was settled: a partition, or its seeds went away): an
    /// attempt at once, the backoff starting over.
    pub(crate) fn handle_view(&mut self, now: Instant, sighting: Sighting) {
        if sighting.settled() {
            self.next = None;
            self.attempt = 0;
        } else if self.next.is_none() {
            self.attempt = 0;
            self.next = Some(now);
        }
    }

    /// Whether an attempt is due at `now`; if so, the next one is
    /// scheduled after the backoff.
    pub(crate) fn handle_timeout(&mut self, now: Instant, rng: &mut impl RngCore) -> bool {
        match self.next {
            Some(at) if at <= now => {
                self.next = Some(now + self.retry.delay(self.attempt, rng));
                self.attempt = self.attempt.saturating_add(1);
                true
            }
            _ => false,
        }
    }
}

/// Every address of every name, in order, without repeats or `me`.
pub(crate) fn merge(resolved: &[Vec<SocketAddr>], me: SocketAddr) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for addr in resolved.iter().flatten() {
        if *addr != me && !out.contains(addr) {
            out.push(*addr);
        }
    }
    out
}

#[cfg(test)]
mod tests;
