//! `ringkv repair`: anti-entropy now, over every range this peer
//! replicates (or those overlapping one range, or the one holding a key),
//! against every other live replica of each, instead of one range per
//! `--anti-entropy-interval` (like `nodetool repair` on one node). This
//! peer ends with the newest record of every key any live replica of its
//! ranges holds; run it on each peer to repair every direction. One run at
//! a time; its progress is in `ringkv handoff`. Does IO.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_gossip::State;
use ringkv_ring::{Token, TokenRange};
use tracing::info;

use crate::coordinator::REPLICAS;
use crate::readiness::{holder, ring_tag, Holder};
use crate::rpc::api::{ErrorKind, RepairRow, RequestError};

use super::Handoff;

/// Longest one comparison (summaries and the diff) may take.
const STEP_MAX: Duration = Duration::from_secs(30);

/// Failures kept in the progress, the first ones.
const FAILURES_SHOWN: usize = 8;

/// A run: what it reports, and when it started.
#[derive(Debug, Default)]
pub(super) struct RepairState {
    row: RepairRow,
    started: Option<Instant>,
}

/// Whether two ranges share a position: on a circle, two arcs `(s, e]`
/// meet exactly when one holds the other's end.
pub(crate) fn overlaps(a: &TokenRange, b: &TokenRange) -> bool {
    a.contains(b.end) || b.contains(a.end)
}

/// Which of `mine` a repair covers: all, those overlapping `range`, or the
/// one holding `key`'s position. Pure.
pub(crate) fn selected(
    mine: &[(TokenRange, Vec<ringkv_gossip::NodeId>)],
    range: Option<&TokenRange>,
    key: Option<Token>,
) -> Vec<(TokenRange, Vec<ringkv_gossip::NodeId>)> {
    mine.iter()
        .filter(|(r, _)| range.is_none_or(|want| overlaps(r, want)))
        .filter(|(r, _)| key.is_none_or(|k| r.contains(k)))
        .cloned()
        .collect()
}

impl Handoff {
    /// The current run's progress (the last run's, once it ended).
    pub(crate) fn repair_report(&self) -> Option<RepairRow> {
        let state = self.repair.lock().expect("repair lock");
        state.started.map(|at| {
            let mut row = state.row.clone();
            if row.running {
                row.elapsed = at.elapsed().as_secs_f64();
            }
            row
        })
    }

    /// Starts a repair of this peer's ranges (those overlapping `range`,
    /// or holding `key`, when given) in the background; answers with its
    /// progress at the start.
    ///
    /// # Errors
    /// A run is in progress, this peer has no ring or is still receiving
    /// its ranges, or it replicates nothing that was asked (`Refused`).
    pub(crate) fn start_repair(
        self: &Arc<Self>,
        range: Option<TokenRange>,
        key: Option<Vec<u8>>,
    ) -> Result<RepairRow, RequestError> {
        let refused = |m: String| RequestError::new(ErrorKind::Refused, m);
        let Some(ring) = self.kv.ring.borrow().ring.clone() else {
            return Err(refused("this peer has no ring yet".to_owned()));
        };
        let view = self.kv.view.borrow().clone();
        if self.announced(&view).as_deref() != Some(ring_tag(&ring).as_str()) {
            return Err(refused(
                "this peer is still receiving its ranges: repair once `ringkv handoff` says ready"
                    .to_owned(),
            ));
        }
        let mine = ring.ranges_replicated_by(&self.kv.me, REPLICAS);
        let position = key.as_deref().map(ringkv_ring::key_position);
        let ranges = selected(&mine, range.as_ref(), position);
        if ranges.is_empty() {
            return Err(refused(match (range, key) {
                (Some(r), _) => format!("this peer replicates nothing in {r}"),
                (_, Some(_)) => "this peer does not replicate that key".to_owned(),
                _ => "this peer replicates no range".to_owned(),
            }));
        }
        let row = {
            let mut state = self.repair.lock().expect("repair lock");
            if state.row.running {
                return Err(refused(format!(
                    "a repair is running already ({} of {} ranges done)",
                    state.row.ranges_done, state.row.ranges_total
                )));
            }
            *state = RepairState {
                row: RepairRow {
                    running: true,
                    ranges_total: ranges.len() as u64,
                    ..RepairRow::default()
                },
                started: Some(Instant::now()),
            };
            state.row.clone()
        };
        info!(ranges = ranges.len(), "repair started");
        let me = self.clone();
        tokio::spawn(async move { me.repair_run(ranges).await });
        Ok(row)
    }

    async fn repair_run(self: Arc<Self>, ranges: Vec<(TokenRange, Vec<ringkv_gossip::NodeId>)>) {
        for (range, replicas) in &ranges {
            let view = self.kv.view.borrow().clone();
            let others: Vec<Holder> = replicas
                .iter()
                .filter(|id| **id != self.kv.me)
                .filter_map(|id| holder(&view, id))
                .filter(|(_, s)| *s == State::Alive)
                .map(|(h, _)| h)
                .collect();
            for other in &others {
                let outcome = tokio::time::timeout(STEP_MAX, self.compare(range, other)).await;
                let mut state = self.repair.lock().expect("repair lock");
                state.row.compared += 1;
                match outcome {
                    Ok(Ok(None)) => {}
                    Ok(Ok(Some(n))) => {
                        state.row.differed += 1;
                        state.row.records += n;
                    }
                    Ok(Err(e)) => fail(
                        &mut state.row,
                        format!("{range} with {}: {e:#}", other.name),
                    ),
                    Err(_) => fail(
                        &mut state.row,
                        format!("{range} with {}: no answer within {STEP_MAX:?}", other.name),
                    ),
                }
            }
            let mut state = self.repair.lock().expect("repair lock");
            if others.is_empty() {
                fail(
                    &mut state.row,
                    format!("{range}: no other replica is alive"),
                );
            }
            state.row.ranges_done += 1;
        }
        let mut state = self.repair.lock().expect("repair lock");
        state.row.running = false;
        if let Some(at) = state.started {
            state.row.elapsed = at.elapsed().as_secs_f64();
        }
        info!(
            ranges = state.row.ranges_done,
            records = state.row.records,
            failed = state.row.failed,
            "repair done"
        );
    }

    /// One comparison: `None` when the summaries agree, else the records
    /// pulled.
    async fn compare(&self, range: &TokenRange, other: &Holder) -> anyhow::Result<Option<u64>> {
        let theirs = self.summary_at(range, other).await?;
        let store = self.kv.store.clone();
        let r = *range;
        let mine = tokio::task::spawn_blocking(move || store.summary(&r)).await??;
        if mine.hash == theirs.hash {
            return Ok(None);
        }
        let n = self.diff_from(range, other, false).await?;
        self.repairs.fetch_add(n, Relaxed);
        Ok(Some(n))
    }
}

fn fail(row: &mut RepairRow, why: String) {
    row.failed += 1;
    if row.failures.len() < FAILURES_SHOWN {
        row.failures.push(why);
    }
}

#[cfg(test)]
mod tests {
    use ringkv_gossip::NodeId;

    use super::*;

    fn r(s: u64, e: u64) -> TokenRange {
        TokenRange {
            start: Token(s),
            end: Token(e),
        }
    }

    #[test]
    fn arcs_overlap_when_one_holds_the_others_end_wrapping_included() {
        assert!(overlaps(&r(10, 20), &r(15, 30)));
        assert!(overlaps(&r(10, 20), &r(12, 18)), "inside");
        assert!(
            !overlaps(&r(10, 20), &r(20, 30)),
            "(10,20] and (20,30] share nothing"
        );
        assert!(!overlaps(&r(10, 20), &r(30, 40)));
        assert!(overlaps(&r(u64::MAX - 5, 5), &r(0, 1)), "wrapping");
        assert!(overlaps(&r(0, 1), &r(u64::MAX - 5, 5)), "either way round");
    }

    #[test]
    fn a_repair_covers_every_range_or_those_asked_for() {
        let n = vec![NodeId::from_name("a")];
        let mine = vec![
            (r(0, 10), n.clone()),
            (r(10, 20), n.clone()),
            (r(50, 60), n.clone()),
        ];
        assert_eq!(selected(&mine, None, None).len(), 3);
        let some = selected(&mine, Some(&r(5, 15)), None);
        assert_eq!(
            some.iter().map(|x| x.0).collect::<Vec<_>>(),
            [r(0, 10), r(10, 20)]
        );
        let one = selected(&mine, None, Some(Token(55)));
        assert_eq!(one.iter().map(|x| x.0).collect::<Vec<_>>(), [r(50, 60)]);
        assert!(selected(&mine, Some(&r(20, 50)), None).is_empty());
    }
}
