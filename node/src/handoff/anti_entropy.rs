//! Anti-entropy: one range at a time, at a bounded rate, compare this
//! peer's summary with another replica's and pull what is newer. Does IO.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use ringkv_gossip::runner::View;
use ringkv_gossip::State;
use ringkv_ring::Ring;
use tracing::{debug, info};

use crate::coordinator::REPLICAS;
use crate::readiness::{holder, ring_tag, Holder};

use super::Handoff;

/// Longest one anti-entropy comparison (summaries and the diff) may take.
const ANTI_ENTROPY_STEP_MAX: Duration = Duration::from_secs(30);

impl Handoff {
    /// One range comparison every `--anti-entropy-interval`, while this
    /// peer holds its current ring fully.
    pub(super) async fn anti_entropy_loop(self: Arc<Self>) {
        let mut turn = 0usize;
        loop {
            tokio::time::sleep(self.cfg.anti_entropy).await;
            let Some(ring) = self.kv.ring.borrow().ring.clone() else {
                continue;
            };
            let view = self.kv.view.borrow().clone();
            if self.announced(&view).as_deref() != Some(ring_tag(&ring).as_str()) {
                continue;
            }
            let step = self.anti_entropy_step(&ring, &view, &mut turn);
            if tokio::time::timeout(ANTI_ENTROPY_STEP_MAX, step)
                .await
                .is_err()
            {
                debug!("anti-entropy: a comparison took too long; moving on");
            }
        }
    }

    /// Compares one of this peer's ranges with one other replica.
    async fn anti_entropy_step(&self, ring: &Ring, view: &View, turn: &mut usize) {
        let mine = ring.ranges_replicated_by(&self.kv.me, REPLICAS);
        if mine.is_empty() {
            return;
        }
        let (range, replicas) = &mine[*turn % mine.len()];
        let others: Vec<Holder> = replicas
            .iter()
            .filter(|id| **id != self.kv.me)
            .filter_map(|id| holder(view, id))
            .filter(|(_, s)| *s == State::Alive)
            .map(|(h, _)| h)
            .collect();
        let round = *turn / mine.len();
        *turn += 1;
        if others.is_empty() {
            return;
        }
        let other = &others[round % others.len()];
        let theirs = match self.summary_at(range, other).await {
            Ok(s) => s,
            Err(e) => {
                debug!(err = %format!("{e:#}"), "anti-entropy: no summary");
                return;
            }
        };
        let store = self.kv.store.clone();
        let r = *range;
        let Ok(Ok(mine)) = tokio::task::spawn_blocking(move || store.summary(&r)).await else {
            return;
        };
        if mine.hash == theirs.hash {
            return;
        }
        match self.diff_from(range, other, false).await {
            Ok(0) => {}
            Ok(n) => {
                self.repairs.fetch_add(n, Relaxed);
                info!(range = %range, from = %other.name, records = n, "anti-entropy repaired records");
            }
            Err(e) => debug!(err = %format!("{e:#}"), "anti-entropy: diff failed"),
        }
    }
}
