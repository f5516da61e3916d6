//! Handoff and anti-entropy: data follows the ring.
//!
//! - When the ring has been stable for the settle time, this peer plans
//!   the ranges it now replicates but did not hold in the last ring it held
//!   completely (`ringkv_ring::handoff::pulls`), and pulls each from a live
//!   holder: pages read by sled range scan, each checked with blake3,
//!   applied newest-version-wins, flushed, and checkpointed in sled so a
//!   transfer resumes after a broken connection or a restart. A range this
//!   peer already holds something of is diffed (keys and versions) rather
//!   than streamed whole. Then the range is compared, by blake3 summary,
//!   with enough other holders that every quorum write is seen.
//! - When every range is in, the peer announces the ring's digest in its
//!   gossiped metadata (tag `ready`). Coordinators route around replicas
//!   that have not announced the current ring (see `coordinator::plan::Route`).
//! - Once every live member has announced the current ring, and a grace
//!   has passed, the peer deletes the ranges it no longer replicates.
//! - A leaving peer announces `Leaving`, so the others' rings drop it and
//!   they pull from it; it waits until they are all ready, then leaves.
//! - Anti-entropy: one range at a time, at a bounded rate, the peer
//!   compares its summary with another replica's and pulls what is newer.
//!
//! Planning and routing are pure (ring crate, `coordinator::plan`); this is
//! the IO.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use ringkv_gossip::runner::{Command, View};
use ringkv_gossip::{Meta, NodeId, NodeStatus, State};
use ringkv_ring::handoff::{foreign_ranges, pulls, Pull};
use ringkv_ring::{NodeSpec, Ring, TokenRange, DEFAULT_VNODES};
use ringkv_storage::Record;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::coordinator::REPLICAS;
use crate::readiness::{holder, is_ready, ring_tag, views_agree, Holder, READY_TAG};
use crate::rpc::api::{
    HandoffReply, RangePageReply, Reply, Request, SummaryReply, TransferRow, VersionsReply,
    REPLY_MAX,
};
use crate::rpc::codec;
use crate::shared::Kv;

mod serve;

pub(crate) use serve::serve;

/// Longest wait, beyond the settle time, for the live peers to agree on
/// the view before a ring change moves data anyway.
const AGREEMENT_WAIT_MAX: Duration = Duration::from_secs(10);
/// Progress entry holding the last ring this peer held fully.
const READY_RING: &str = "ready-ring";
/// Prefix of the per-range transfer checkpoints.
const PULL_PREFIX: &str = "pull/";
/// Longest wait for one range request (pages, summaries, listings): a
/// 4 MiB page takes well under a second, but a loaded peer may be slow; a
/// holder that does not answer in this time is given up for the next.
const RANGE_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest one anti-entropy comparison (summaries and the diff) may take.
const ANTI_ENTROPY_STEP_MAX: Duration = Duration::from_secs(30);
/// Keys fetched per `ReadMany`.
const FETCH_BATCH: usize = 512;
/// Keys and versions per listing page.
const VERSIONS_PAGE: u32 = 8192;
/// Largest page a peer serves.
pub(crate) const PAGE_MAX: usize = 8 * 1024 * 1024;
/// Most keys one `ReadMany` may ask for.
pub(crate) const READ_MANY_MAX: usize = 4096;

/// Handoff settings (flags of `ringkv node`).
#[derive(Debug, Clone)]
pub(crate) struct HandoffConfig {
    /// The ring must be unchanged this long before data moves.
    pub(crate) settle: Duration,
    /// Transfers this peer runs at once.
    pub(crate) max_transfers: usize,
    /// Bytes per second pulled, all transfers together; 0: no limit.
    pub(crate) rate: u64,
    /// Ranges no longer replicated are deleted this long after every
    /// member announced the ring.
    pub(crate) cleanup_grace: Duration,
    /// Pause between two anti-entropy comparisons; zero turns it off.
    pub(crate) anti_entropy: Duration,
    /// Bytes per page asked for.
    pub(crate) page_bytes: usize,
    /// Longest a leaving peer waits for its ranges to be taken over.
    pub(crate) leave_timeout: Duration,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            settle: Duration::from_secs(2),
            max_transfers: 4,
            // Cassandra's default stream cap: fast enough to move 1 GB in
            // under a minute, slow enough that foreground p99 holds.
            rate: 24 * 1024 * 1024,
            cleanup_grace: Duration::from_secs(10),
            anti_entropy: Duration::from_millis(500),
            page_bytes: 4 * 1024 * 1024,
            leave_timeout: Duration::from_secs(120),
        }
    }
}

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
}

/// A transfer in progress, for `ringkv handoff`.
#[derive(Debug, Clone)]
struct Transfer {
    source: String,
    total_records: u64,
    records: u64,
    bytes: u64,
    started: Instant,
}

#[derive(Debug, Default)]
struct Progress {
    ring: Option<String>,
    pending_ranges: usize,
    transfers: BTreeMap<TokenRange, Transfer>,
}

#[derive(Debug)]
pub(crate) struct Handoff {
    kv: Arc<Kv>,
    cfg: HandoffConfig,
    commands: mpsc::Sender<Command>,
    /// The metadata this peer announces; every change goes through here.
    meta: tokio::sync::Mutex<Meta>,
    progress: Mutex<Progress>,
    /// When the rate limit lets the next byte through.
    next_free: tokio::sync::Mutex<Instant>,
    /// Back from an absence longer than the dead grace, with old data.
    rejoined: bool,
    keys_moved: AtomicU64,
    bytes_moved: AtomicU64,
    ranges_completed: AtomicU64,
    repairs: AtomicU64,
    ranges_dropped: AtomicU64,
    records_dropped: AtomicU64,
}

fn pull_name(range: &TokenRange) -> String {
    format!("{PULL_PREFIX}{:016x}-{:016x}", range.start.0, range.end.0)
}

impl Handoff {
    /// The engine; `meta` is what the peer announced at start.
    /// `forget_ready`: the peer was away long enough for the others to
    /// have moved its ranges, so what it held proves nothing.
    pub(crate) fn new(
        kv: Arc<Kv>,
        cfg: HandoffConfig,
        commands: mpsc::Sender<Command>,
        meta: Meta,
        forget_ready: bool,
    ) -> Arc<Self> {
        if forget_ready {
            if let Err(e) = kv.store.clear_progress(READY_RING) {
                warn!(err = %e, "cannot forget the ready ring");
            }
        }
        kv.held.write().expect("held lock").ready = stored_ready_ring(&kv);
        let rejoined = forget_ready && !kv.store.is_empty();
        Arc::new(Self {
            kv,
            cfg,
            commands,
            meta: tokio::sync::Mutex::new(meta),
            progress: Mutex::new(Progress::default()),
            rejoined,
            next_free: tokio::sync::Mutex::new(Instant::now()),
            keys_moved: AtomicU64::new(0),
            bytes_moved: AtomicU64::new(0),
            ranges_completed: AtomicU64::new(0),
            repairs: AtomicU64::new(0),
            ranges_dropped: AtomicU64::new(0),
            records_dropped: AtomicU64::new(0),
        })
    }

    /// Changes the announced metadata.
    async fn update_meta(&self, f: impl FnOnce(&mut Meta)) {
        let mut meta = self.meta.lock().await;
        f(&mut meta);
        let _ = self.commands.send(Command::UpdateMeta(meta.clone())).await;
    }

    fn announced(&self, view: &View) -> Option<String> {
        view.me.meta.tags.get(READY_TAG).cloned()
    }

    /// Starts the background loop.
    pub(crate) fn spawn(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move { me.run().await });
        // Anti-entropy runs apart, so that a comparison waiting on a peer
        // that just died never holds up a handoff.
        if !self.cfg.anti_entropy.is_zero() {
            let me = self.clone();
            tokio::spawn(async move { me.anti_entropy_loop().await });
        }
    }

    /// One range comparison every `--anti-entropy-interval`, while this
    /// peer holds its current ring fully.
    async fn anti_entropy_loop(self: Arc<Self>) {
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

    async fn run(self: Arc<Self>) {
        let mut ring_rx = self.kv.ring.clone();
        let mut seen: Option<(String, Instant)> = None;
        let mut agreed_since: Option<Instant> = None;
        let mut cleaned: Option<String> = None;
        let mut all_ready_since: Option<(String, Instant)> = None;
        loop {
            tokio::select! {
                _ = ring_rx.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            let Some(ring) = ring_rx.borrow_and_update().ring.clone() else {
                continue;
            };
            let tag = ring_tag(&ring);
            let view = self.kv.view.borrow().clone();
            if self.meta.lock().await.status == NodeStatus::Leaving {
                continue;
            }
            if self.announced(&view).as_deref() != Some(tag.as_str()) {
                // Settle: the ring must stay put before data moves, and the
                // live peers must agree on the view for as long, so that
                // every coordinator routes writes here before this peer
                // merges what it pulls (a write through a coordinator still
                // on the old ring would miss this peer). Agreement is waited
                // for at most AGREEMENT_WAIT_MAX beyond the settle time: in
                // a large cluster some peers are heard from only rarely,
                // and anti-entropy repairs what a late write missed.
                let since = match &seen {
                    Some((t, since)) if *t == tag => *since,
                    _ => {
                        seen = Some((tag.clone(), Instant::now()));
                        agreed_since = None;
                        continue;
                    }
                };
                if views_agree(&view) {
                    agreed_since.get_or_insert_with(Instant::now);
                } else {
                    agreed_since = None;
                }
                let agreed = agreed_since.is_some_and(|at| at.elapsed() >= self.cfg.settle);
                if since.elapsed() < self.cfg.settle
                    || (!agreed && since.elapsed() < self.cfg.settle + AGREEMENT_WAIT_MAX)
                {
                    continue;
                }
                let sync = self.sync_ring(&ring, &tag);
                let changed = async {
                    loop {
                        if ring_rx.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                        let now = ring_rx.borrow().ring.as_ref().map(ring_tag);
                        if now.as_deref() != Some(tag.as_str()) {
                            return;
                        }
                    }
                };
                tokio::select! {
                    outcome = sync => match outcome {
                        Ok(()) => {
                            self.announce(&ring, &tag).await;
                        }
                        Err(e) => {
                            warn!(err = %format!("{e:#}"), "handoff incomplete; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    },
                    () = changed => info!("the ring changed during handoff; planning again"),
                }
                self.progress
                    .lock()
                    .expect("progress lock")
                    .transfers
                    .clear();
                continue;
            }
            // Ready for the current ring: clean up once everyone is.
            let everyone = ring.nodes().iter().all(|n| {
                is_ready(&view, &n.id, &tag)
                    || holder(&view, &n.id).is_some_and(|(_, s)| !s.is_live())
            });
            if everyone && cleaned.as_deref() != Some(tag.as_str()) {
                let since = match &all_ready_since {
                    Some((t, since)) if *t == tag => *since,
                    _ => {
                        let now = Instant::now();
                        all_ready_since = Some((tag.clone(), now));
                        now
                    }
                };
                if since.elapsed() >= self.cfg.cleanup_grace {
                    self.cleanup(&ring).await;
                    cleaned = Some(tag.clone());
                }
            }
        }
    }

    /// The ring this peer last held fully, or, for a new peer, the ring of
    /// the other members that hold their ranges (have announced a ring):
    /// those still pulling their first ranges have nothing to give.
    fn old_ring(&self, current: &Ring, view: &View) -> Option<Ring> {
        if let Some(ring) = stored_ready_ring(&self.kv) {
            return Some(ring);
        }
        let others: Vec<NodeSpec> = current
            .nodes()
            .iter()
            .filter(|n| n.id != self.kv.me)
            .filter(|n| {
                std::iter::once(&view.me)
                    .chain(view.members.iter())
                    .any(|m| m.id == n.id && m.meta.tags.contains_key(READY_TAG))
            })
            .cloned()
            .collect();
        Ring::build(&others, DEFAULT_VNODES).ok()
    }

    /// Pulls every range this peer replicates in `ring` and did not hold.
    async fn sync_ring(self: &Arc<Self>, ring: &Ring, tag: &str) -> Result<()> {
        let view = self.kv.view.borrow().clone();
        let old = self.old_ring(ring, &view);
        let live = |id: &NodeId| {
            holder(&view, id).is_some_and(|(_, s)| matches!(s, State::Alive | State::Suspect))
        };
        let plan = pulls(old.as_ref(), ring, &self.kv.me, REPLICAS, &live);
        let work: Vec<Pull> = plan.into_iter().filter(|p| !p.sources.is_empty()).collect();
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

    /// Records `ring` as held fully and announces it.
    async fn announce(&self, ring: &Ring, tag: &str) {
        let specs: Vec<NodeSpec> = ring.nodes().to_vec();
        if let Err(e) = self
            .kv
            .store
            .set_progress(READY_RING, &codec::encode(&specs))
        {
            warn!(err = %e, "cannot record the ready ring");
        }
        if let Ok(entries) = self.kv.store.progress_entries(PULL_PREFIX) {
            for (name, _) in entries {
                let _ = self.kv.store.clear_progress(&name);
            }
        }
        if let Err(e) = self.kv.store.sync().await {
            warn!(err = %e, "cannot flush the handoff state");
        }
        {
            let mut held = self.kv.held.write().expect("held lock");
            let before = held.ready.replace(ring.clone());
            if before.as_ref().map(Ring::digest) != Some(ring.digest()) {
                held.previous = before;
            }
        }
        self.update_meta(|m| {
            m.tags.insert(READY_TAG.to_owned(), tag.to_owned());
            if m.status == NodeStatus::Joining {
                m.status = NodeStatus::Normal;
            }
        })
        .await;
        info!(ring = tag, "holding every range of the ring: ready");
    }

    /// One range: copy it from a holder, then compare with enough others.
    async fn transfer(&self, pull: &Pull, view: &View) -> Result<()> {
        let name = pull_name(&pull.range);
        let mut cp: Checkpoint = self
            .kv
            .store
            .progress(&name)?
            .and_then(|b| codec::decode(&b, 1 << 20).ok())
            .unwrap_or_default();
        let sources: Vec<Holder> = pull
            .sources
            .iter()
            .filter_map(|id| holder(view, id).map(|(h, _)| h))
            .collect();
        let mut used = Vec::new();
        if !cp.copied {
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
                    self.diff_from(&pull.range, source).await.map(|_| ())
                } else {
                    self.stream(&pull.range, source, &name, &mut cp).await
                };
                match outcome {
                    Ok(()) => {
                        cp.copied = true;
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
        // merging a majority, this peer has them all.
        let majority = pull.sources.len() / 2 + 1;
        let mut merged = used.len().max(usize::from(cp.copied));
        for source in sources.iter().filter(|s| !used.contains(&s.id)) {
            if merged >= majority {
                break;
            }
            match self.verify_with(&pull.range, source).await {
                Ok(()) => merged += 1,
                Err(e) => {
                    debug!(range = %pull.range, source = %source.name, err = %format!("{e:#}"), "cannot compare with this holder")
                }
            }
        }
        if merged < majority {
            bail!("compared with {merged} of the {majority} holders needed");
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
            self.diff_from(range, source).await?;
        }
        Ok(())
    }

    async fn summary_at(&self, range: &TokenRange, source: &Holder) -> Result<SummaryReply> {
        self.ask(source, &Request::RangeSummary { range: *range })
            .await
    }

    async fn ask<T: serde::de::DeserializeOwned>(
        &self,
        source: &Holder,
        req: &Request,
    ) -> Result<T> {
        let bytes = self
            .kv
            .peers
            .request_within(source.addr, req, RANGE_TIMEOUT)
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
        let fetch = |after: Option<Vec<u8>>| {
            let (kv, addr) = (self.kv.clone(), source.addr);
            let req = Request::RangePage {
                range: *range,
                after,
                max_bytes: u32::try_from(self.cfg.page_bytes.min(PAGE_MAX)).unwrap_or(u32::MAX),
            };
            tokio::spawn(async move { kv.peers.request_within(addr, &req, RANGE_TIMEOUT).await })
        };
        let mut next = Some(fetch(cp.cursor.clone()));
        let mut flushing: Option<Flushing> = None;
        while let Some(pending) = next.take() {
            let bytes = pending
                .await?
                .map_err(|e| anyhow!("{}: {e}", source.name))?;
            let page = match codec::decode::<Reply<RangePageReply>>(&bytes, REPLY_MAX)? {
                Reply::Ok(p) => p,
                Reply::Err { message, .. } => bail!("{}: {message}", source.name),
            };
            if *blake3::hash(&page.batch).as_bytes() != page.check {
                bail!("a page from {} failed its blake3 check", source.name);
            }
            if let Some(after) = &page.next {
                next = Some(fetch(Some(after.clone())));
            }
            self.throttle(page.batch.len()).await;
            let records: Vec<(Vec<u8>, Record)> = codec::decode(&page.batch, REPLY_MAX)?;
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
    async fn diff_from(&self, range: &TokenRange, source: &Holder) -> Result<u64> {
        let mut after: Option<Vec<u8>> = None;
        let mut changed = 0;
        loop {
            let page: VersionsReply = self
                .ask(
                    source,
                    &Request::RangeVersions {
                        range: *range,
                        after: after.clone(),
                        max: VERSIONS_PAGE,
                        any: false,
                    },
                )
                .await?;
            let mut want = Vec::new();
            for (key, version) in page.versions {
                let here = self.kv.store.get(&key)?;
                if here.is_none_or(|r| r.version < version) {
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

    /// Deletes what this peer holds outside the ranges it replicates.
    async fn cleanup(&self, ring: &Ring) {
        let foreign = foreign_ranges(ring, &self.kv.me, REPLICAS);
        let store = self.kv.store.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let mut dropped = (0u64, 0u64);
            for range in foreign {
                let n = store.delete_range(&range)?;
                if n > 0 {
                    dropped.0 += 1;
                    dropped.1 += n as u64;
                }
            }
            Ok::<_, ringkv_storage::StoreError>(dropped)
        })
        .await;
        match outcome {
            Ok(Ok((0, _))) => {
                self.kv.held.write().expect("held lock").previous = None;
            }
            Ok(Ok((ranges, records))) => {
                self.kv.held.write().expect("held lock").previous = None;
                self.ranges_dropped.fetch_add(ranges, Relaxed);
                self.records_dropped.fetch_add(records, Relaxed);
                info!(
                    ranges,
                    records, "dropped ranges this peer no longer replicates"
                );
            }
            Ok(Err(e)) => warn!(err = %e, "cannot drop foreign ranges"),
            Err(e) => warn!(err = %e, "clean-up task failed"),
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
        match self.diff_from(range, other).await {
            Ok(0) => {}
            Ok(n) => {
                self.repairs.fetch_add(n, Relaxed);
                info!(range = %range, from = %other.name, records = n, "anti-entropy repaired records");
            }
            Err(e) => debug!(err = %format!("{e:#}"), "anti-entropy: diff failed"),
        }
    }

    /// Graceful leave, first half: announce `Leaving`, then wait until the
    /// other members' ring (without this peer) is held by all of them.
    pub(crate) async fn leave(&self) {
        self.update_meta(|m| m.status = NodeStatus::Leaving).await;
        let deadline = Instant::now() + self.cfg.leave_timeout;
        let mut ring_rx = self.kv.ring.clone();
        loop {
            let view = self.kv.view.borrow().clone();
            let live_others = view
                .members
                .iter()
                .any(|m| m.state == State::Alive && m.meta.status != NodeStatus::Leaving);
            if !live_others {
                return;
            }
            let ring = ring_rx.borrow_and_update().ring.clone();
            if let Some(ring) = ring.filter(|r| !r.contains(&self.kv.me)) {
                let tag = ring_tag(&ring);
                let done = ring.nodes().iter().all(|n| {
                    is_ready(&view, &n.id, &tag)
                        || holder(&view, &n.id).is_some_and(|(_, s)| !s.is_live())
                });
                if done {
                    info!("the other members hold this peer's ranges");
                    return;
                }
            }
            if Instant::now() >= deadline {
                warn!(
                    "leaving before the other members took over every range (after {:?})",
                    self.cfg.leave_timeout
                );
                return;
            }
            tokio::select! {
                _ = ring_rx.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// What `ringkv handoff` shows.
    pub(crate) fn report(&self) -> HandoffReply {
        let view = self.kv.view.borrow().clone();
        let p = self.progress.lock().expect("progress lock");
        HandoffReply {
            ring: self.kv.ring.borrow().ring.as_ref().map(ring_tag),
            ready: self.announced(&view),
            pending_ranges: p.pending_ranges,
            transfers: p
                .transfers
                .iter()
                .map(|(range, t)| TransferRow {
                    range: range.to_string(),
                    source: t.source.clone(),
                    total_records: t.total_records,
                    records: t.records,
                    bytes: t.bytes,
                    elapsed: t.started.elapsed().as_secs_f64(),
                })
                .collect(),
            keys_moved: self.keys_moved.load(Relaxed),
            bytes_moved: self.bytes_moved.load(Relaxed),
            ranges_completed: self.ranges_completed.load(Relaxed),
            repairs: self.repairs.load(Relaxed),
            ranges_dropped: self.ranges_dropped.load(Relaxed),
            records_dropped: self.records_dropped.load(Relaxed),
        }
    }
}

fn stored_ready_ring(kv: &Kv) -> Option<Ring> {
    let bytes = kv.store.progress(READY_RING).ok().flatten()?;
    let specs = codec::decode::<Vec<NodeSpec>>(&bytes, 1 << 24).ok()?;
    Ring::build(&specs, DEFAULT_VNODES).ok()
}
