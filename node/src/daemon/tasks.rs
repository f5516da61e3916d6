//! The peer's background tasks, each a loop over the view or a timer:
//! the ring builder, join watch, pool invalidation, store maintenance,
//! clock floor, clock offset probe, persistence of incarnation and peers;
//! and the absence check at start. All of them are spawned through [`Tasks`], which ends
//! them together at shutdown. IO: the store and the data dir.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use ringkv_gossip::runner::{Handle, View};
use ringkv_gossip::{NodeId, State};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::clock_offset::{absence_action, confirmation, AbsenceAction, Confirmation, Offsets};
use crate::datadir::DataDir;
use crate::ring_view::{self, DeadSince, RingMembers, RingState};
use crate::rpc::api::{Request, TimeReply};
use crate::rpc::client;
use crate::shared::Kv;
use crate::wall::WallClock;

/// Background tasks that end together: each runs until its own loop ends
/// or [`Tasks::stop`] is called.
#[derive(Debug)]
pub(super) struct Tasks {
    stop_tx: watch::Sender<bool>,
    handles: Vec<(&'static str, JoinHandle<()>)>,
}

impl Tasks {
    pub(super) fn new() -> Self {
        Self {
            stop_tx: watch::channel(false).0,
            handles: Vec::new(),
        }
    }

    /// Spawns `task` on the current runtime, to be ended by [`Self::stop`].
    pub(super) fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let mut stop = self.stop_tx.subscribe();
        let handle = tokio::spawn(async move {
            tokio::select! {
                () = task => {}
                _ = stop.wait_for(|stopped| *stopped) => {}
            }
        });
        self.handles.push((name, handle));
    }

    /// Ends every task and waits for them, at most `timeout` in all.
    /// Returns the names of those that had not ended by then.
    pub(super) async fn stop(self, timeout: Duration) -> Vec<&'static str> {
        let _ = self.stop_tx.send(true);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut unfinished = Vec::new();
        for (name, handle) in self.handles {
            if tokio::time::timeout_at(deadline, handle).await.is_err() {
                unfinished.push(name);
            }
        }
        unfinished
    }
}

/// Rebuilds the ring whenever the set of members it counts changes (see
/// [`ring_view::ring_members`]); looks again every half second so a dead
/// member leaves the ring once its grace is over.
pub(super) fn ring_builder(
    tasks: &mut Tasks,
    mut view: watch::Receiver<Arc<View>>,
    grace: Duration,
    removals: Arc<crate::removenode::Removals>,
) -> watch::Receiver<Arc<RingState>> {
    let (tx, rx) = watch::channel(Arc::new(RingState::default()));
    tasks.spawn("ring builder", async move {
        let mut dead_since = DeadSince::new();
        let mut last: Option<RingMembers> = None;
        let mut rebuilds = 0u64;
        loop {
            let current = view.borrow_and_update().clone();
            let now = tokio::time::Instant::now().into_std();
            let members = removals.with(|removed| {
                ring_view::ring_members(&current, &mut dead_since, removed, now, grace)
            });
            if last.as_ref() != Some(&members) {
                match ring_view::build(&members, rebuilds + 1) {
                    Ok(state) => {
                        let state = state.after(&tx.borrow());
                        let digest = state.ring.as_ref().map(|r| r.digest().short());
                        info!(nodes = members.members.len(), leaving = members.leaving.len(), digest = %digest.unwrap_or_default(), "ring rebuilt");
                        rebuilds += 1;
                        let _ = tx.send(Arc::new(state));
                    }
                    Err(e) => warn!(err = %e, "cannot build the ring from the view"),
                }
                last = Some(members);
            }
            tokio::select! {
                changed = view.changed() => if changed.is_err() { break },
                () = removals.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    });
    rx
}

/// Says, once in a while, why this peer has not joined yet: nobody
/// answering (seeds down or wrong addresses), seeds refusing connections
/// (overloaded), or seeds refusing our certificate (another cluster's key).
pub(super) fn join_watch(tasks: &mut Tasks, handle: Handle, seeds: Vec<SocketAddr>) {
    use std::sync::atomic::Ordering::Relaxed;
    tasks.spawn("join watch", async move {
        let mut wait = Duration::from_secs(5);
        loop {
            tokio::time::sleep(wait).await;
            if handle.view.borrow().joined {
                return;
            }
            let seeds: Vec<String> = seeds.iter().map(ToString::to_string).collect();
            let t = &handle.transport;
            if t.connects_refused.load(Relaxed) > 0 {
                warn!(seeds = %seeds.join(","), "not joined yet: the seeds are overloaded (they refused the connection: too many handshakes in progress there); still retrying");
            } else if t.handshake_failures.load(Relaxed) > 0 {
                warn!(seeds = %seeds.join(","), "not joined yet: the seeds refused the handshake; is --cluster-key the key of their cluster?");
            } else if t.connect_timeouts.load(Relaxed) > 0 {
                warn!(seeds = %seeds.join(","), "not joined yet: no seed answers; are they running, and are these their --listen addresses? still retrying");
            } else {
                warn!(seeds = %seeds.join(","), "not joined yet; still retrying");
            }
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    });
}

/// Drops the shared connection (gossip and replica requests, `links.rs`)
/// to a member that came back with a new incarnation or moved: it may be
/// a new process behind the address, and a connection to a dead process
/// looks open until its idle timeout, so requests on it would only time
/// out. A change of state alone (suspect, dead, left) keeps it: the
/// runner drops it on a death or a leave, and a suspect's next direct
/// probe should not wait for a handshake.
pub(super) fn pool_invalidation(
    tasks: &mut Tasks,
    mut view: watch::Receiver<Arc<View>>,
    kv: Arc<Kv>,
) {
    tasks.spawn("pool invalidation", async move {
        let mut seen: BTreeMap<NodeId, (u64, SocketAddr)> = BTreeMap::new();
        loop {
            let current = view.borrow_and_update().clone();
            for m in &current.members {
                let now = (m.incarnation, m.meta.addr);
                if let Some(before) = seen.insert(m.id, now) {
                    if before != now {
                        kv.peers.forget(before.1);
                    }
                }
            }
            if view.changed().await.is_err() {
                break;
            }
        }
    });
}

/// Background upkeep of the store: hint replay every second, tombstone
/// collection every minute.
pub(super) fn maintenance(tasks: &mut Tasks, kv: Arc<Kv>, tombstone_grace: Duration) {
    tasks.spawn("maintenance", async move {
        let mut round = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            kv.replay_hints().await;
            round += 1;
            if round % 10 == 0 {
                kv.hot.lock().expect("hot lock").decay();
            }
            if round % 60 == 0 {
                collect_tombstones(&kv, tombstone_grace);
            }
        }
    });
}

fn collect_tombstones(kv: &Kv, tombstone_grace: Duration) {
    let now = Duration::from_millis(kv.wall_ms());
    let before = now.saturating_sub(tombstone_grace).as_millis();
    match kv
        .store
        .collect_tombstones(u64::try_from(before).unwrap_or(0))
    {
        Ok(0) => {}
        Ok(n) => info!(collected = n, "tombstones past their grace collected"),
        Err(e) => warn!(err = %e, "cannot collect tombstones"),
    }
}

/// Progress entry: wall-clock milliseconds at which this peer was last up.
const ALIVE_AT: &str = "alive-at";

/// How long this peer was away by its own wall clock (`now_ms`), from the
/// last-up mark it keeps; `None` for a new store. A mark that cannot be
/// read counts as a long absence.
pub(super) fn away(store: &ringkv_storage::Store, now_ms: u64) -> Result<Option<Duration>> {
    let Some(bytes) = store.progress(ALIVE_AT)? else {
        return Ok(None);
    };
    let Ok(raw) = <[u8; 8]>::try_from(bytes.as_slice()) else {
        return Ok(Some(Duration::MAX));
    };
    Ok(Some(Duration::from_millis(
        now_ms.saturating_sub(u64::from_be_bytes(raw)),
    )))
}

/// What `away` means for this peer's data (see
/// [`crate::clock_offset::AbsenceAction`]): away longer than the dead grace,
/// the others moved its ranges and took writes without it, so it compares
/// them afresh (returns true). Away longer than the tombstone grace, the
/// deletes it missed are forgotten everywhere and its old records would
/// bring deleted keys back, so they go; but only when a peer's clock
/// confirms the absence (`confirm` asks them): a clock that jumped between
/// two runs must never make a peer drop its data.
pub(super) async fn settle_absence<F, Fut>(
    store: &ringkv_storage::Store,
    away: Option<Duration>,
    dead_grace: Duration,
    tombstone_grace: Duration,
    confirm: F,
) -> Result<bool>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Confirmation>,
{
    let Some(away) = away else {
        return Ok(false);
    };
    let confirmation = if away > tombstone_grace {
        confirm().await
    } else {
        Confirmation::Nobody
    };
    match absence_action(away, dead_grace, tombstone_grace, confirmation) {
        AbsenceAction::Keep => Ok(false),
        AbsenceAction::Compare if away > tombstone_grace => {
            error!(
                away = ?away,
                confirmation = ?confirmation,
                "this peer's clock says it was away longer than the tombstone grace, but no peer's clock confirms it: its records are kept (a clock that jumped must not drop data), and its ranges will be compared afresh"
            );
            Ok(true)
        }
        AbsenceAction::Compare => {
            info!(away = ?away, "this peer was away longer than the dead grace: its ranges will be compared afresh");
            Ok(true)
        }
        AbsenceAction::Clear => {
            let n = store.clear_records()?;
            warn!(
                away = ?away,
                records = n,
                "this peer was away longer than the tombstone grace (its clock agrees with the cluster's): its old records are dropped and its ranges will be pulled afresh"
            );
            Ok(true)
        }
    }
}

/// Asks the peers at `addrs` for their wall clock (at most a few, at
/// once, 2 s each) and says whether any agrees with `wall` within
/// `max_offset`.
pub(super) async fn confirm_clock(
    addrs: Vec<SocketAddr>,
    key: ringkv_gossip::ClusterKey,
    wall: WallClock,
    max_offset: Duration,
) -> Confirmation {
    let mut asks = tokio::task::JoinSet::new();
    for addr in addrs.into_iter().take(CONFIRM_PEERS_MAX) {
        let (key, wall) = (key.clone(), wall.clone());
        asks.spawn(async move {
            let (sent, started) = (wall.now_ms(), Instant::now());
            let reply: TimeReply =
                client::request(addr, &key, &Request::Time, Duration::from_secs(2))
                    .await
                    .ok()?;
            let rtt = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let midpoint = sent.saturating_add(rtt / 2);
            let offset = i128::from(reply.wall_ms) - i128::from(midpoint);
            Some((i64::try_from(offset).ok()?, rtt.div_ceil(2)))
        });
    }
    let mut offsets = Vec::new();
    while let Some(answer) = asks.join_next().await {
        if let Ok(Some(o)) = answer {
            offsets.push(o);
        }
    }
    confirmation(&offsets, max_offset)
}

/// How often the data dir's free space is sampled.
const DISK_WATCH_EVERY: Duration = Duration::from_secs(1);

/// Samples the free space of the data dir `dir` every second and keeps
/// [`Kv::space`] (and the `ringkv_disk_free_bytes` gauge) up to date; logs
/// at ERROR when writes stop for want of space and when they resume.
pub(super) fn disk_watch(
    tasks: &mut Tasks,
    kv: Arc<Kv>,
    dir: std::path::PathBuf,
    faults: Option<Arc<ringkv_gossip::transport::faults::FaultSwitch>>,
) {
    tasks.spawn("disk watch", async move {
        loop {
            // The testbed's full-disk fault: the data dir reads as full.
            let sample = if faults.as_ref().is_some_and(|f| f.full_disk()) {
                Ok(0)
            } else {
                crate::disk::free_bytes(&dir)
            };
            match sample {
                Ok(available) => {
                    let changed = kv
                        .space
                        .write()
                        .expect("space lock")
                        .handle_sample(available, kv.min_free_space);
                    #[allow(clippy::cast_precision_loss)]
                    metrics::gauge!("ringkv_disk_free_bytes").set(available as f64);
                    if changed {
                        match kv.disk_refusal() {
                            Some(why) => error!("{why}: writes are refused, reads go on"),
                            None => error!(
                                available,
                                "this peer's data dir has room again: writes resume"
                            ),
                        }
                    }
                }
                Err(e) => {
                    warn!(err = %e, dir = %dir.display(), "cannot read the data dir's free space")
                }
            }
            tokio::time::sleep(DISK_WATCH_EVERY).await;
        }
    });
}

/// Peers asked for their clock at start-up.
const CONFIRM_PEERS_MAX: usize = 5;
/// How often this peer probes one other peer's clock.
const CLOCK_PROBE_EVERY: Duration = Duration::from_secs(1);

/// Probes one live member's wall clock per second, in turn, and keeps
/// [`Kv::clock_verdict`] (and the `ringkv_clock_offset_ms` gauge) up to
/// date; logs at ERROR when this peer's clock goes beyond the maximum
/// offset and when it comes back.
pub(super) fn clock_probe(tasks: &mut Tasks, kv: Arc<Kv>) {
    tasks.spawn("clock probe", async move {
        let mut offsets = Offsets::default();
        let mut turn = 0usize;
        loop {
            tokio::time::sleep(CLOCK_PROBE_EVERY).await;
            let view = kv.view.borrow().clone();
            offsets.retain(|id| view.members.iter().any(|m| m.id == *id));
            let live: Vec<_> = view
                .members
                .iter()
                .filter(|m| m.state == State::Alive)
                .collect();
            if let Some(m) = live.get(turn % live.len().max(1)) {
                turn = turn.wrapping_add(1);
                // Over the replica pool's connection: no handshake in the
                // round trip, so the estimate stays tight under load.
                let (sent, started) = (kv.wall_ms(), Instant::now());
                let answer = kv
                    .peers
                    .request_within(m.meta.addr, &Request::Time, Duration::from_secs(2))
                    .await
                    .ok()
                    .and_then(|bytes| {
                        crate::rpc::codec::decode::<crate::rpc::api::Reply<TimeReply>>(&bytes, 1024)
                            .ok()
                    });
                if let Some(crate::rpc::api::Reply::Ok(reply)) = answer {
                    offsets.record(m.id, sent, reply.wall_ms, started.elapsed(), Instant::now());
                }
            }
            let verdict = offsets.verdict(kv.max_clock_offset, live.len(), Instant::now());
            let before = std::mem::replace(
                &mut *kv.clock_verdict.write().expect("clock verdict lock"),
                verdict,
            );
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!("ringkv_clock_offset_ms").set(verdict.offset_ms().unwrap_or(0) as f64);
            match (before.is_beyond(), verdict.is_beyond()) {
                (false, true) => error!(
                    max_offset = ?kv.max_clock_offset,
                    "{verdict}: this peer coordinates no writes until its clock is fixed"
                ),
                (true, false) => {
                    error!("{verdict}: this peer's clock is back within the maximum offset")
                }
                _ => {}
            }
        }
    });
}

/// Keeps the clock's high-water mark on disk, two seconds ahead, so a
/// restarted peer's versions are above anything it issued before a crash.
pub(super) fn clock_floor(tasks: &mut Tasks, kv: Arc<Kv>) {
    tasks.spawn("clock floor", async move {
        loop {
            let mut floor = kv.clock.lock().expect("clock lock").last();
            floor.physical_ms += 2000;
            if let Err(e) = kv.store.store_hlc_floor(floor) {
                warn!(err = %e, "cannot store the clock's high-water mark");
            }
            if let Err(e) = kv.store.set_progress(ALIVE_AT, &kv.wall_ms().to_be_bytes()) {
                warn!(err = %e, "cannot store the time this peer was last up");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// Keeps the incarnation and the known peers on disk.
pub(super) fn persistence(tasks: &mut Tasks, mut view: watch::Receiver<Arc<View>>, dir: DataDir) {
    tasks.spawn("persistence", async move {
        let mut stored = view.borrow().me.incarnation;
        let mut peers_saved = Instant::now() - Duration::from_secs(3600);
        loop {
            let current = view.borrow_and_update().clone();
            if current.me.incarnation > stored {
                match dir.store_incarnation(current.me.incarnation) {
                    Ok(()) => stored = current.me.incarnation,
                    Err(e) => warn!(err = %e, "cannot store the incarnation"),
                }
            }
            if peers_saved.elapsed() > Duration::from_secs(10) {
                let peers: Vec<SocketAddr> = current
                    .members
                    .iter()
                    .filter(|m| m.state.is_live())
                    .map(|m| m.meta.addr)
                    .collect();
                if !peers.is_empty() {
                    if let Err(e) = dir.store_peers(&peers) {
                        warn!(err = %e, "cannot store known peers");
                    }
                    peers_saved = Instant::now();
                }
            }
            if view.changed().await.is_err() {
                break;
            }
        }
    });
}
