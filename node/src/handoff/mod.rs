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
//! - Once every replica of a range it no longer replicates is alive and
//!   has announced the current ring, and a grace has passed, the peer
//!   deletes the range (dead and suspect members block; `phase.rs`).
//! - A leaving peer announces `Leaving`, so the others' rings drop it and
//!   they pull from it; it waits until live replicas announced every range
//!   it holds data in, then leaves (or reports the handoff incomplete).
//! - Anti-entropy: one range at a time, at a bounded rate, the peer
//!   compares its summary with another replica's and pulls what is newer.
//!
//! Planning and routing are pure (ring crate, `coordinator::plan`); this is
//! the IO: this file holds the engine and its loop, `transfer.rs` the
//! pulls, `check.rs` the (pure) checks every received page passes before
//! it is applied, `anti_entropy.rs` the comparisons, `serve.rs` the
//! serving side.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ringkv_gossip::runner::{Command, View};
use ringkv_gossip::{Meta, NodeId, NodeStatus, State};
use ringkv_ring::{NodeSpec, Ring, TokenRange, DEFAULT_VNODES};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::readiness::{holder, ring_tag, PREVIOUS_TAG, READY_TAG};
use crate::ring_view::RingState;
use crate::rpc::api::{ErrorKind, HandoffReply, RequestError, TransferOp, TransferRow};
use crate::rpc::codec;
use crate::shared::Kv;

mod anti_entropy;
pub(crate) mod check;
mod phase;
mod repair;
mod serve;
mod transfer;

use phase::{announced, not_handed_over, Action, Blocked, Phase, PhaseConfig};

pub(crate) use serve::serve;

/// One of the handoff's background loops.
pub(crate) type HandoffLoop = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// How often the loop looks at the ring and view when nothing changes.
const TICK: Duration = Duration::from_millis(200);
/// Progress entry holding the last ring this peer held fully.
const READY_RING: &str = "ready-ring";
/// Prefix of the per-range transfer checkpoints.
const PULL_PREFIX: &str = "pull/";
/// Longest wait for one range request (pages, summaries, listings): a
/// 4 MiB page takes well under a second, but a loaded peer may be slow; a
/// holder that does not answer in this time is given up for the next.
const RANGE_TIMEOUT: Duration = Duration::from_secs(20);
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
    /// A range no longer replicated is deleted this long after every
    /// replica of it announced the ring.
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

/// How one sync ended.
enum Synced {
    Done,
    Failed,
    RingChanged,
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
    /// This peer's revocation list as stored and announced (the view
    /// carries it a moment later): refusals use it at once, from start.
    revoked: Mutex<Vec<ringkv_gossip::transport::credentials::Revocation>>,
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
    /// `ringkv repair`'s run.
    repair: Mutex<repair::RepairState>,
    /// Whether an operator paused the transfers.
    paused: watch::Sender<bool>,
    /// Ranges whose transfer an operator cancelled, until it sees it.
    cancels: Mutex<std::collections::BTreeSet<TokenRange>>,
    cancelled: AtomicU64,
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
        let revoked = Mutex::new(stored_revocations(&kv).unwrap_or_default());
        Arc::new(Self {
            revoked,
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
            repair: Mutex::default(),
            paused: watch::Sender::new(false),
            cancels: Mutex::default(),
            cancelled: AtomicU64::new(0),
        })
    }

    /// An operator's pause, resume or cancel (`ringkv handoff`); the
    /// report after it.
    ///
    /// # Errors
    /// Cancel of a range with no transfer in progress (`Refused`).
    pub(crate) fn transfers(&self, op: &TransferOp) -> Result<HandoffReply, RequestError> {
        match op {
            TransferOp::Pause => {
                if !self.paused.send_replace(true) {
                    info!("handoff: transfers paused by an operator");
                }
            }
            TransferOp::Resume => {
                if self.paused.send_replace(false) {
                    info!("handoff: transfers resumed by an operator");
                }
            }
            TransferOp::Cancel(range) => {
                let running = self
                    .progress
                    .lock()
                    .expect("progress lock")
                    .transfers
                    .contains_key(range);
                if !running {
                    return Err(RequestError::new(
                        ErrorKind::Refused,
                        format!(
                            "no transfer of {range} is in progress here (see `ringkv handoff`)"
                        ),
                    ));
                }
                self.cancels.lock().expect("cancels lock").insert(*range);
                info!(range = %range, "handoff: transfer cancelled by an operator");
            }
        }
        Ok(self.report())
    }

    /// Before each page: waits while the transfers are paused, and fails
    /// (so the transfer moves to its next holder) once an operator
    /// cancelled `range`.
    ///
    /// # Errors
    /// The range's transfer was cancelled.
    pub(super) async fn gate(&self, range: &TokenRange) -> anyhow::Result<()> {
        let mut paused = self.paused.subscribe();
        let _ = paused.wait_for(|p| !*p).await;
        if self.cancels.lock().expect("cancels lock").remove(range) {
            self.cancelled.fetch_add(1, Relaxed);
            anyhow::bail!("cancelled by an operator");
        }
        Ok(())
    }

    /// Changes the announced metadata.
    async fn update_meta(&self, f: impl FnOnce(&mut Meta)) {
        let mut meta = self.meta.lock().await;
        f(&mut meta);
        let _ = self.commands.send(Command::UpdateMeta(meta.clone())).await;
    }

    /// Adds a revocation of `name` up to `now` (Unix seconds) to this
    /// peer's announced list ([`crate::revocation`]).
    ///
    /// # Errors
    /// A bad name, or the list is full; nothing changed.
    pub(crate) async fn revoke(
        &self,
        name: &str,
        now: u64,
    ) -> anyhow::Result<crate::rpc::api::RevokeReply> {
        use ringkv_gossip::transport::credentials::{check_name, name_hash, Revocation};
        check_name(name).map_err(|e| RequestError::new(ErrorKind::Refused, e.to_string()))?;
        let add = Revocation {
            name_hash: name_hash(name),
            before: now,
        };
        let revoked = self.adopt_revocations(&[add], now).await?;
        self.kv
            .store
            .sync()
            .await
            .context("cannot flush the revocation list")?;
        info!(client = name, before = now, "revoked client credentials");
        Ok(crate::rpc::api::RevokeReply {
            before: now,
            revoked,
        })
    }

    /// Merges `add` into this peer's announced revocations (dropping
    /// those expired at `now`); announces the result if it changed.
    /// Returns how many names the list holds.
    ///
    /// # Errors
    /// The list would be full; nothing changed.
    pub(crate) async fn adopt_revocations(
        &self,
        add: &[ringkv_gossip::transport::credentials::Revocation],
        now: u64,
    ) -> anyhow::Result<usize> {
        use crate::revocation::{format, merge, parse, REVOKED_TAG};
        let mut meta = self.meta.lock().await;
        let own = meta
            .tags
            .get(REVOKED_TAG)
            .and_then(|v| parse(v))
            .unwrap_or_default();
        let merged = merge(&own, add, now).map_err(|e| RequestError::new(ErrorKind::Refused, e))?;
        let n = merged.len();
        if merged != own {
            if merged.is_empty() {
                meta.tags.remove(REVOKED_TAG);
            } else {
                meta.tags.insert(REVOKED_TAG.to_owned(), format(&merged));
            }
            self.kv
                .store
                .set_progress(REVOCATIONS, format(&merged).as_bytes())
                .context("cannot store the revocation list")?;
            self.revoked
                .lock()
                .expect("revoked lock")
                .clone_from(&merged);
            let _ = self.commands.send(Command::UpdateMeta(meta.clone())).await;
        }
        Ok(n)
    }

    /// Announces the revocations stored by an earlier run, then adopts,
    /// whenever the view changes (and at least every second, which also
    /// forgets expired entries), every revocation a live member announces:
    /// so a revocation outlives the peer it was sent to, and every peer
    /// refuses the credential within a few gossip rounds.
    pub(crate) async fn revocation_loop(self: Arc<Self>, mut view: watch::Receiver<Arc<View>>) {
        let now = || self.kv.wall_ms() / 1000;
        if let Some(stored) = stored_revocations(&self.kv) {
            if let Err(e) = self.adopt_revocations(&stored, now()).await {
                warn!(err = %e, "cannot announce the stored revocation list");
            }
        }
        let mut warned = false;
        loop {
            let all = crate::revocation::announced(&view.borrow_and_update());
            if let Err(e) = self.adopt_revocations(&all, now()).await {
                if !std::mem::replace(&mut warned, true) {
                    warn!(err = %e, "cannot adopt the revocations other peers announce");
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), view.changed()).await;
        }
    }

    /// Whether this peer's own revocation list covers `tag` (what it
    /// stored, even before its view carries it).
    pub(crate) fn revoked(&self, tag: &ringkv_gossip::transport::credentials::ClientTag) -> bool {
        self.revoked
            .lock()
            .expect("revoked lock")
            .iter()
            .any(|r| r.covers(tag))
    }

    fn announced(&self, view: &View) -> Option<String> {
        view.me.meta.tags.get(READY_TAG).cloned()
    }

    /// The background loops (handoff, and anti-entropy unless off), for
    /// the daemon to run among its tasks, so that stopping the peer ends
    /// them (and drops the store they hold).
    pub(crate) fn loops(self: &Arc<Self>) -> Vec<(&'static str, HandoffLoop)> {
        let me = self.clone();
        let mut loops: Vec<(&'static str, HandoffLoop)> =
            vec![("handoff", Box::pin(async move { me.run().await }))];
        // Anti-entropy runs apart, so that a comparison waiting on a peer
        // that just died never holds up a handoff.
        if !self.cfg.anti_entropy.is_zero() {
            let me = self.clone();
            loops.push((
                "anti-entropy",
                Box::pin(async move { me.anti_entropy_loop().await }),
            ));
        }
        loops
    }

    /// The loop: each tick asks the phase machine what to do, and does it.
    async fn run(self: Arc<Self>) {
        let mut ring_rx = self.kv.ring.clone();
        let mut phase = Phase::new(PhaseConfig {
            settle: self.cfg.settle,
            cleanup_grace: self.cfg.cleanup_grace,
        });
        loop {
            tokio::select! {
                _ = ring_rx.changed() => {}
                () = tokio::time::sleep(TICK) => {}
            }
            let Some(ring) = ring_rx.borrow_and_update().ring.clone() else {
                continue;
            };
            let view = self.kv.view.borrow().clone();
            let leaving = self.meta.lock().await.status == NodeStatus::Leaving;
            let announced = self.announced(&view);
            match phase.handle_tick(Instant::now(), &view, &ring, announced.as_deref(), leaving) {
                Action::Wait => {}
                Action::Sync { ring, tag } => {
                    match self.sync_until_changed(&mut ring_rx, &ring, &tag).await {
                        Synced::Done => phase.handle_sync_done(&tag),
                        Synced::Failed => phase.handle_sync_failed(Instant::now()),
                        Synced::RingChanged => {}
                    }
                }
                Action::CleanUp {
                    ranges, complete, ..
                } => self.cleanup(ranges, complete).await,
            }
        }
    }

    /// Pulls `ring`'s ranges and announces it, unless the ring changes
    /// first.
    async fn sync_until_changed(
        self: &Arc<Self>,
        ring_rx: &mut watch::Receiver<Arc<RingState>>,
        ring: &Ring,
        tag: &str,
    ) -> Synced {
        let sync = self.sync_ring(ring, tag);
        let changed = async {
            loop {
                if ring_rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                let now = ring_rx.borrow().ring.as_ref().map(ring_tag);
                if now.as_deref() != Some(tag) {
                    return;
                }
            }
        };
        let outcome = tokio::select! {
            outcome = sync => match outcome {
                Ok(()) => {
                    self.announce(ring, tag).await;
                    Synced::Done
                }
                Err(e) => {
                    warn!(err = %format!("{e:#}"), "handoff incomplete; retrying");
                    Synced::Failed
                }
            },
            () = changed => {
                info!("the ring changed during handoff; planning again");
                Synced::RingChanged
            }
        };
        self.progress
            .lock()
            .expect("progress lock")
            .transfers
            .clear();
        outcome
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
        let previous = {
            let mut held = self.kv.held.write().expect("held lock");
            let before = held.ready.replace(ring.clone());
            if before.as_ref().map(Ring::digest) != Some(ring.digest()) {
                held.previous = before;
            }
            held.previous.as_ref().map(ring_tag)
        };
        self.update_meta(|m| {
            m.tags.insert(READY_TAG.to_owned(), tag.to_owned());
            match &previous {
                Some(p) => m.tags.insert(PREVIOUS_TAG.to_owned(), p.clone()),
                None => m.tags.remove(PREVIOUS_TAG),
            };
            if m.status == NodeStatus::Joining {
                m.status = NodeStatus::Normal;
            }
        })
        .await;
        info!(ring = tag, "holding every range of the ring: ready");
    }

    /// Deletes what this peer holds in `ranges` (foreign ranges whose new
    /// replicas all announced the ring); once `complete`, nothing of the
    /// previous ring is held any more.
    async fn cleanup(&self, ranges: Vec<TokenRange>, complete: bool) {
        let store = self.kv.store.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let mut dropped = (0u64, 0u64);
            for range in ranges {
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
            Ok(Ok((ranges, records))) => {
                if complete {
                    self.kv.held.write().expect("held lock").previous = None;
                    self.update_meta(|m| {
                        m.tags.remove(PREVIOUS_TAG);
                    })
                    .await;
                }
                if ranges > 0 {
                    self.ranges_dropped.fetch_add(ranges, Relaxed);
                    self.records_dropped.fetch_add(records, Relaxed);
                    info!(
                        ranges,
                        records, "dropped ranges this peer no longer replicates"
                    );
                }
            }
            Ok(Err(e)) => warn!(err = %e, "cannot drop foreign ranges"),
            Err(e) => warn!(err = %e, "clean-up task failed"),
        }
    }

    /// Whether this peer has a record in `range` (when the store cannot
    /// tell: yes).
    fn holds_some(&self, range: &TokenRange) -> bool {
        self.kv
            .store
            .page(range, None, 1, 1)
            .map_or(true, |p| !p.records.is_empty())
    }

    /// Graceful leave, first half: announce `Leaving`, then wait until live
    /// replicas of the other members' ring (without this peer) announced
    /// every range this peer holds data in. Returns whether they did; after
    /// `--leave-timeout` logs at ERROR which ranges they do not hold.
    pub(crate) async fn leave(&self) -> bool {
        self.update_meta(|m| m.status = NodeStatus::Leaving).await;
        let deadline = Instant::now() + self.cfg.leave_timeout;
        let mut ring_rx = self.kv.ring.clone();
        let mut blocked = Vec::new();
        loop {
            let view = self.kv.view.borrow().clone();
            let live_others = view
                .members
                .iter()
                .any(|m| m.state == State::Alive && m.meta.status != NodeStatus::Leaving);
            if !live_others {
                warn!("no live member to hand this peer's ranges to");
                return self.kv.store.is_empty();
            }
            let ring = ring_rx.borrow_and_update().ring.clone();
            if let Some(ring) = ring.filter(|r| !r.contains(&self.kv.me)) {
                let tag = ring_tag(&ring);
                blocked = not_handed_over(&ring, &|r| self.holds_some(r), &|id| {
                    announced(&view, id, &tag)
                });
                if blocked.is_empty() {
                    info!("live members hold this peer's ranges");
                    return true;
                }
            }
            if Instant::now() >= deadline {
                warn!(
                    "leaving before the other members took over every range (after {:?})",
                    self.cfg.leave_timeout
                );
                log_not_handed_over(&view, &blocked);
                return false;
            }
            tokio::select! {
                _ = ring_rx.changed() => {}
                () = tokio::time::sleep(TICK) => {}
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
            removed: {
                let removed = self.kv.removals.current();
                view.members
                    .iter()
                    .filter(|m| removed.contains(&m.id))
                    .map(|m| m.meta.name.clone())
                    .collect()
            },
            repair: self.repair_report(),
            paused: *self.paused.borrow(),
            cancelled: self.cancelled.load(Relaxed),
        }
    }
}

/// The ERROR a leave that timed out leaves behind: which ranges no live
/// replica announced, and who they wait for.
fn log_not_handed_over(view: &View, blocked: &[Blocked]) {
    if blocked.is_empty() {
        error!(
            "handoff incomplete: the ring of the other members does not leave this peer out yet"
        );
        return;
    }
    let name = |id: &NodeId| holder(view, id).map_or_else(|| id.short(), |(h, _)| h.name);
    let shown: Vec<String> = blocked
        .iter()
        .take(8)
        .map(|b| {
            let waiting: Vec<String> = b.waiting.iter().map(name).collect();
            format!("{} (waiting for {})", b.range, waiting.join(", "))
        })
        .collect();
    error!(
        ranges = blocked.len(),
        first = %shown.join("; "),
        "handoff incomplete: these ranges of this peer are not held by live replicas"
    );
}

/// Progress entry holding this peer's revocation list (the tag's text).
const REVOCATIONS: &str = "revocations";

fn stored_revocations(kv: &Kv) -> Option<Vec<ringkv_gossip::transport::credentials::Revocation>> {
    let bytes = kv.store.progress(REVOCATIONS).ok().flatten()?;
    crate::revocation::parse(std::str::from_utf8(&bytes).ok()?)
}

fn stored_ready_ring(kv: &Kv) -> Option<Ring> {
    let bytes = kv.store.progress(READY_RING).ok().flatten()?;
    let specs = codec::decode::<Vec<NodeSpec>>(&bytes, 1 << 24).ok()?;
    Ring::build(&specs, DEFAULT_VNODES).ok()
}
