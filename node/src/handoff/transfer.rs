//! Pulls: the ranges this peer gains, each streamed page by page from a
//! live holder with checkpoints, or diffed when this peer already holds
//! an old copy, then compared with enough other holders; at a bounded
//! rate. Does IO (sled through the store, QUIC through the peer pool).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use ringkv_gossip::runner::View;
use ringkv_gossip::State;
use ringkv_ring::{Ring, TokenRange};
use ringkv_storage::Record;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::readiness::{holder, Holder};
use crate::rpc::api::{RangePageReply, Reply, Request, SummaryReply, VersionsReply, REPLY_MAX};
use crate::rpc::codec;

use super::check::{accept_page, check_page};
use super::phase::{plan_pulls, PlannedPull};
use super::{stored_ready_ring, Handoff, Transfer, PAGE_MAX, PULL_PREFIX, RANGE_TIMEOUT};

/// Keys fetched per `ReadMany`.
const FETCH_BATCH: usize = 512;
/// Keys and versions per listing page.
const VERSIONS_PAGE: u32 = 8192;

/// A page applied and being flushed, not yet checkpointed.
struct Flushing {
    flush: tokio::task::JoinHandle<Result<(), ringkv_storage::StoreError>>,
    /// The cursor after the page.
    next: Option<Vec<u8>>,
    records: u64,
    bytes: u64,
    estimate: u64,
}

/// A transfer checkpoint, per range.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Checkpoint {
    /// Store key of the last record applied.
    cursor: Option<Vec<u8>>,
    /// The range came over from one holder; what remains is verification.
    copied: bool,
    /// The holder it came from: a copy counts only while that holder is
    /// still among the range's sources (a plan made since may not list
    /// it, when it never held the range).
    source: Option<ringkv_gossip::NodeId>,
}

impl Checkpoint {
    /// The holders this copy merged already: the one a resumed copy came
    /// from, so that comparing again with it does not count it twice.
    fn merged(&self) -> Vec<ringkv_gossip::NodeId> {
        self.source.filter(|_| self.copied).into_iter().collect()
    }
}

fn pull_name(range: &TokenRange) -> String {
    format!("{PULL_PREFIX}{:016x}-{:016x}", range.start.0, range.end.0)
}

impl Handoff {
    /// Pulls every range this peer replicates in `ring` and did not hold.
    pub(super) async fn sync_ring(self: &Arc<Self>, ring: &Ring, tag: &str) -> Result<()> {
        let view = self.kv.view.borrow().clone();
        let full = self.kv.ring.borrow().full.clone();
        let ready = stored_ready_ring(&self.kv);
        let plan = plan_pulls(ready.as_ref(), ring, full.as_ref(), &view);
        let work: Vec<PlannedPull> = plan.into_iter().filter(|p| !p.is_empty()).collect();
        {
            let mut p = self.progress.lock().expect("progress lock");
            p.ring = Some(tag.to_owned());
            p.pending_ranges = work.len();
        }
        if !work.is_empty() {
            info!(ranges = work.len(), ring = tag, "handoff: pulling ranges");
        }
        let slots = Arc::new(Semaphore::new(self.cfg.max_transfers.max(1)));
        let mut tasks = JoinSet::new();
        for pull in work {
            let permit = slots.clone().acquire_owned().await?;
            let (me, view) = (self.clone(), view.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let range = pull.range;
                let outcome = me.transfer(&pull, &view).await;
                me.progress
                    .lock()
                    .expect("progress lock")
                    .transfers
                    .remove(&range);
                outcome.with_context(|| format!("range {range}"))
            });
        }
        let mut failed = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {
                    self.ranges_completed.fetch_add(1, Relaxed);
                    let mut p = self.progress.lock().expect("progress lock");
                    p.pending_ranges = p.pending_ranges.saturating_sub(1);
                }
                Ok(Err(e)) => failed = Some(e),
                Err(e) => failed = Some(anyhow!("transfer task failed: {e}")),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// One range: copy it from a holder, then compare with enough others.
    async fn transfer(&self, pull: &PlannedPull, view: &View) -> Result<()> {
        let name = if pull.guess {
            format!("{}-guess", pull_name(&pull.range))
        } else {
            pull_name(&pull.range)
        };
        let mut cp: Checkpoint = self
            .kv
            .store
            .progress(&name)?
            .and_then(|b| codec::decode(&b, 1 << 20).ok())
            .unwrap_or_default();
        if cp.copied && !cp.source.is_some_and(|s| pull.sources.contains(&s)) {
            cp = Checkpoint::default();
        }
        // Sources as the view is now, not as it was when the ring's pulls
        // were planned: a holder that died since is skipped, and a suspect
        // one is tried last (waiting on a dead source costs the range
        // timeout, and stalls every range behind it after a kill).
        let now_view = self.kv.view.borrow().clone();
        let live_now = |ids: &[ringkv_gossip::NodeId]| -> Vec<Holder> {
            let mut found: Vec<(Holder, State)> = ids
                .iter()
                .filter_map(|id| holder(&now_view, id).or_else(|| holder(view, id)))
                .filter(|(_, s)| s.is_live())
                .collect();
            found.sort_by_key(|(_, s)| *s != State::Alive);
            found.into_iter().map(|(h, _)| h).collect()
        };
        let sources = live_now(&pull.sources);
        let unannounced = live_now(&pull.unannounced);
        let mut used = cp.merged();
        if !cp.copied && !pull.sources.is_empty() {
            // A peer back from a long absence holds an old copy: diffing
            // keys and versions moves only what changed. Anyone else holds
            // at most the writes sent to it since the change: stream.
            let holds_some = self.rejoined
                && cp.cursor.is_none()
                && !self
                    .kv
                    .store
                    .page(&pull.range, None, 1, 1)?
                    .records
                    .is_empty();
            for source in &sources {
                let outcome = if holds_some {
                    self.diff_from(&pull.range, source, false).await.map(|_| ())
                } else {
                    self.stream(&pull.range, source, &name, &mut cp).await
                };
                match outcome {
                    Ok(()) => {
                        cp.copied = true;
                        cp.source = Some(source.id);
                        self.kv.store.set_progress(&name, &codec::encode(&cp))?;
                        used.push(source.id);
                        break;
                    }
                    Err(e) => {
                        warn!(range = %pull.range, source = %source.name, err = %format!("{e:#}"), "transfer failed; trying another holder");
                    }
                }
            }
            if !cp.copied {
                bail!("no holder of the range answered");
            }
        }
        // Every quorum write reached a majority of the holders: after
        // merging a majority of those that announced, and a majority of
        // all the live ones, this peer has them all.
        let (announced_needed, needed) = pull.needed();
        let mut merged_announced = used.len();
        for source in sources.iter().filter(|s| !used.contains(&s.id)) {
            if merged_announced >= announced_needed {
                break;
            }
            match self.verify_with(&pull.range, source).await {
                Ok(()) => merged_announced += 1,
                Err(e) => {
                    debug!(range = %pull.range, source = %source.name, err = %format!("{e:#}"), "cannot compare with this holder")
                }
            }
        }
        if merged_announced < announced_needed {
            bail!("compared with {merged_announced} of the {announced_needed} holders needed");
        }
        // Holders that announced nothing serve no summary (they are still
        // receiving), but list what they hold: whatever they acknowledged.
        let mut merged = merged_announced;
        for source in &unannounced {
            if merged >= needed {
                break;
            }
            match self.diff_from(&pull.range, source, true).await {
                Ok(_) => merged += 1,
                Err(e) => {
                    debug!(range = %pull.range, source = %source.name, err = %format!("{e:#}"), "cannot list what this holder holds")
                }
            }
        }
        if merged < needed {
            bail!(
                "merged {merged} of the {needed} live holders needed ({} of them announced no ring yet)",
                pull.unannounced.len()
            );
        }
        Ok(())
    }

    /// Compares summaries with `source` and pulls what differs.
    async fn verify_with(&self, range: &TokenRange, source: &Holder) -> Result<()> {
        let theirs = self.summary_at(range, source).await?;
        let store = self.kv.store.clone();
        let range2 = *range;
        let mine = tokio::task::spawn_blocking(move || store.summary(&range2)).await??;
        if mine.hash != theirs.hash {
            self.diff_from(range, source, false).await?;
        }
        Ok(())
    }

    pub(super) async fn summary_at(
        &self,
        range: &TokenRange,
        source: &Holder,
    ) -> Result<SummaryReply> {
        self.ask(source, &Request::RangeSummary { range: *range })
            .await
    }

    async fn ask<T: serde::de::DeserializeOwned>(
        &self,
        source: &Holder,
        req: &Request,
    ) -> Result<T> {
        let request = self
            .kv
            .peers
            .request_within(source.addr, req, RANGE_TIMEOUT);
        let bytes = unless_dead(self.kv.view.clone(), source.id, request)
            .await
            .map_err(|e| anyhow!("{}: {e}", source.name))?;
        match codec::decode::<Reply<T>>(&bytes, REPLY_MAX)? {
            Reply::Ok(v) => Ok(v),
            Reply::Err { message, .. } => Err(anyhow!("{}: {message}", source.name)),
        }
    }

    /// Waits as the rate limit asks before taking `bytes` more.
    async fn throttle(&self, bytes: usize) {
        if self.cfg.rate == 0 {
            return;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / self.cfg.rate as f64);
        let wait = {
            let mut next = self.next_free.lock().await;
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + cost;
            start.saturating_duration_since(now)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Copies `range` from `source` page by page, resuming at the
    /// checkpoint. Three pages are in motion at once: the next one is
    /// fetched while this one is applied and the previous one is flushed.
    async fn stream(
        &self,
        range: &TokenRange,
        source: &Holder,
        name: &str,
        cp: &mut Checkpoint,
    ) -> Result<()> {
        self.progress
            .lock()
            .expect("progress lock")
            .transfers
            .insert(
                *range,
                Transfer {
                    source: source.name.clone(),
                    total_records: 0,
                    records: 0,
                    bytes: 0,
                    started: Instant::now(),
                },
            );
        let max_bytes = u32::try_from(self.cfg.page_bytes.min(PAGE_MAX)).unwrap_or(u32::MAX);
        let fetch = |after: Option<Vec<u8>>| {
            let (kv, addr, id) = (self.kv.clone(), source.addr, source.id);
            let req = Request::RangePage {
                range: *range,
                after,
                max_bytes,
            };
            tokio::spawn(async move {
                let request = kv.peers.request_within(addr, &req, RANGE_TIMEOUT);
                unless_dead(kv.view.clone(), id, request).await
            })
        };
        // The cursor the page in flight was asked from.
        let mut asked = cp.cursor.clone();
        // Paused or cancelled before its first page too: most ranges are
        // one page, so a gate only between pages would pause almost none.
        self.gate(range).await?;
        let mut next = Some(fetch(asked.clone()));
        let mut flushing: Option<Flushing> = None;
        while let Some(pending) = next.take() {
            let bytes = pending
                .await?
                .map_err(|e| anyhow!("{}: {e}", source.name))?;
            let page = match codec::decode::<Reply<RangePageReply>>(&bytes, REPLY_MAX)? {
                Reply::Ok(p) => p,
                Reply::Err { message, .. } => bail!("{}: {message}", source.name),
            };
            let records = accept_page(range, asked.as_deref(), &page, max_bytes as usize)
                .map_err(|e| anyhow!("{}: {e:#}", source.name))?;
            if let Some(after) = &page.next {
                if let Err(e) = self.gate(range).await {
                    // Cancelled: what was applied stays; the checkpoint of
                    // the page before is kept, so nothing is skipped.
                    if let Some(previous) = flushing.take() {
                        self.checkpoint(range, name, cp, previous).await?;
                    }
                    return Err(e);
                }
                next = Some(fetch(Some(after.clone())));
                asked = Some(after.clone());
            }
            self.throttle(page.batch.len()).await;
            let n = records.len() as u64;
            let store = self.kv.store.clone();
            tokio::task::spawn_blocking(move || {
                for (key, record) in records {
                    store.apply_nosync(&key, record)?;
                }
                Ok::<_, ringkv_storage::StoreError>(())
            })
            .await??;
            // The previous page is checkpointed once its flush is done;
            // this page's flush then runs while the next page is applied.
            if let Some(previous) = flushing.take() {
                self.checkpoint(range, name, cp, previous).await?;
            }
            let store = self.kv.store.clone();
            flushing = Some(Flushing {
                flush: tokio::spawn(async move { store.sync().await }),
                next: page.next,
                records: n,
                bytes: page.batch.len() as u64,
                estimate: page.estimate,
            });
        }
        if let Some(last) = flushing.take() {
            self.checkpoint(range, name, cp, last).await?;
        }
        Ok(())
    }

    /// Waits for a page's flush, then moves the checkpoint past it: a
    /// resumed transfer never skips a record that was not durable.
    async fn checkpoint(
        &self,
        range: &TokenRange,
        name: &str,
        cp: &mut Checkpoint,
        page: Flushing,
    ) -> Result<()> {
        page.flush
            .await
            .map_err(|e| anyhow!("the flush task failed: {e}"))??;
        cp.cursor = page.next;
        self.kv.store.set_progress(name, &codec::encode(&*cp))?;
        self.keys_moved.fetch_add(page.records, Relaxed);
        self.bytes_moved.fetch_add(page.bytes, Relaxed);
        if let Some(t) = self
            .progress
            .lock()
            .expect("progress lock")
            .transfers
            .get_mut(range)
        {
            t.total_records = t.total_records.max(page.estimate);
            t.records += page.records;
            t.bytes += page.bytes;
        }
        Ok(())
    }

    /// Lists `source`'s keys and versions in `range` and pulls every
    /// record newer there than here; returns how many changed here.
    /// `any`: what it holds even while it is still receiving its first
    /// ranges (a holder that announced nothing yet; it refuses otherwise).
    pub(super) async fn diff_from(
        &self,
        range: &TokenRange,
        source: &Holder,
        any: bool,
    ) -> Result<u64> {
        let mut after: Option<Vec<u8>> = None;
        let mut changed = 0;
        loop {
            self.gate(range).await?;
            let page: VersionsReply = self
                .ask(
                    source,
                    &Request::RangeVersions {
                        range: *range,
                        after: after.clone(),
                        max: VERSIONS_PAGE,
                        any,
                    },
                )
                .await?;
            check_page(
                range,
                after.as_deref(),
                &page.versions,
                page.next.as_deref(),
            )
            .map_err(|e| {
                anyhow!(
                    "{} sent a bad listing of range {range}, nothing of it was used: {e}",
                    source.name
                )
            })?;
            let mut want = Vec::new();
            for (key, version) in page.versions {
                // The version alone: the value here is not needed to tell.
                let here = self.kv.store.version_of(&key)?;
                if here.is_none_or(|v| v < version) {
                    want.push(key);
                }
            }
            for chunk in want.chunks(FETCH_BATCH) {
                let keys = chunk.to_vec();
                let records: Vec<Option<Record>> = self
                    .ask(source, &Request::ReadMany { keys: keys.clone() })
                    .await?;
                for (key, record) in keys.iter().zip(records) {
                    if let Some(record) = record {
                        let size = key.len() + record.value.as_ref().map_or(0, Vec::len);
                        if self.kv.store.apply_nosync(key, record)? {
                            changed += 1;
                            self.bytes_moved.fetch_add(size as u64, Relaxed);
                        }
                    }
                }
                self.kv.store.sync().await?;
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        self.keys_moved.fetch_add(changed, Relaxed);
        Ok(changed)
    }
}

/// `request`, unless the view declares `source` dead (or gone) first: a
/// request to a peer killed mid-transfer would otherwise wait out the
/// whole range timeout.
async fn unless_dead<T, E: std::fmt::Display>(
    mut view: tokio::sync::watch::Receiver<Arc<View>>,
    source: ringkv_gossip::NodeId,
    request: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T> {
    let dead = async move {
        loop {
            let gone = holder(&view.borrow_and_update(), &source).is_none_or(|(_, s)| !s.is_live());
            if gone || view.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        r = request => r.map_err(|e| anyhow!("{e}")),
        () = dead => Err(anyhow!("the source was declared dead during the transfer")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ringkv_gossip::runner::View;
    use ringkv_gossip::{NodeId, State};

    use super::{unless_dead, Checkpoint};
    use crate::test_support::member;

    fn view(source: State) -> Arc<View> {
        Arc::new(crate::test_support::view(
            member("me", State::Alive, None),
            vec![member("src", source, None)],
        ))
    }

    /// A request to a source that dies mid-transfer ends when the view
    /// says so, not after the range timeout (seen in the demo: every
    /// range behind a killed source waited its 20 s).
    #[tokio::test(start_paused = true)]
    async fn a_request_to_a_source_declared_dead_ends_at_once() {
        let (tx, rx) = tokio::sync::watch::channel(view(State::Alive));
        let never = std::future::pending::<Result<(), String>>();
        let waiting = tokio::spawn(unless_dead(rx, NodeId::from_name("src"), never));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "the source is alive: keep waiting");
        tx.send(view(State::Suspect)).expect("send");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "suspect is not dead");
        tx.send(view(State::Dead)).expect("send");
        let out = tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("ended within a second of the source's death")
            .expect("task");
        let e = out.expect_err("no answer from a dead source");
        assert!(e.to_string().contains("declared dead"), "{e}");
    }

    /// A copy resumed from its checkpoint has merged its source already:
    /// comparing with that holder again must not count it a second time
    /// (it did: the copy counted one, the comparison another, so a range
    /// of three holders was "merged from a majority" having seen one).
    #[test]
    fn a_resumed_copy_counts_its_source_once() {
        let src = NodeId::from_name("src");
        let resumed = Checkpoint {
            cursor: None,
            copied: true,
            source: Some(src),
        };
        assert_eq!(resumed.merged(), vec![src]);
        let midway = Checkpoint {
            cursor: Some(b"k".to_vec()),
            copied: false,
            source: None,
        };
        assert!(
            midway.merged().is_empty(),
            "nothing merged before the copy ends"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_from_a_live_source_is_returned() {
        let (_tx, rx) = tokio::sync::watch::channel(view(State::Alive));
        let answer = async { Ok::<_, String>(7) };
        let got = unless_dead(rx, NodeId::from_name("src"), answer).await;
        assert_eq!(got.expect("the answer"), 7);
    }
}
