//! The simulated network: who can reach whom, what is lost, how late.

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use ringkv_gossip::Channel;

use super::{Peer, SimConfig};

/// When a message sent now from `from` to `to` arrives, or `None` if it is
/// lost. Datagrams are lost with the configured probability; streams are
/// reliable (QUIC retransmits) but each lost packet costs them a
/// retransmission round. Nothing crosses a partition.
pub(super) fn route(
    rng: &mut ChaCha8Rng,
    cfg: &SimConfig,
    now: Duration,
    from: &Peer,
    to: &Peer,
    channel: Channel,
) -> Option<Duration> {
    if from.side != to.side {
        return None;
    }
    let jitter = if cfg.delay.is_zero() {
        Duration::ZERO
    } else {
        cfg.delay.mul_f64(rng.random::<f64>() / 4.0)
    };
    let mut at = now + cfg.delay + jitter;
    match channel {
        Channel::Datagram => {
            if cfg.loss > 0.0 && rng.random_bool(cfg.loss.min(1.0)) {
                return None;
            }
        }
        Channel::Stream => {
            // Bounded: at most 8 retransmission rounds, then it gets through.
            for _ in 0..8 {
                if cfg.loss <= 0.0 || !rng.random_bool(cfg.loss.min(1.0)) {
                    break;
                }
                at += cfg.delay * 3 + Duration::from_millis(1);
            }
        }
    }
    Some(at)
}
