//! The peer's background tasks, each a loop over the view or a timer:
//! the ring builder, join watch, pool invalidation, store maintenance,
//! clock floor, persistence of incarnation and peers; and the absence
//! check at start. All of them are spawned through [`Tasks`], which ends
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
use tracing::{info, warn};

use crate::datadir::DataDir;
use crate::ring_view::{self, DeadSince, RingMembers, RingState};
use crate::shared::{wall_ms, Kv};

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
) -> watch::Receiver<Arc<RingState>> {
    let (tx, rx) = watch::channel(Arc::new(RingState::default()));
    tasks.spawn("ring builder", async move {
        let mut dead_since = DeadSince::new();
        let mut last: Option<RingMembers> = None;
        let mut rebuilds = 0u64;
        loop {
            let current = view.borrow_and_update().clone();
            let now = tokio::time::Instant::now().into_std();
            let members = ring_view::ring_members(&current, &mut dead_since, now, grace);
            if last.as_ref() != Some(&members) {
                match ring_view::build(&members, rebuilds + 1) {
                    Ok(state) => {
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
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    });
    rx
}

/// Says, once in a while, why this peer has not joined yet: nobody
/// answering (seeds down or wrong addresses) or seeds refusing our
/// certificate (another cluster's key).
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
            if t.handshake_failures.load(Relaxed) > 0 {
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

/// Drops pooled replica connections to members that died, left or came
/// back with a new incarnation: a connection to a dead process looks open
/// until its idle timeout, and requests on it would only time out.
pub(super) fn pool_invalidation(
    tasks: &mut Tasks,
    mut view: watch::Receiver<Arc<View>>,
    kv: Arc<Kv>,
) {
    tasks.spawn("pool invalidation", async move {
        let mut seen: BTreeMap<NodeId, (u64, State, SocketAddr)> = BTreeMap::new();
        loop {
            let current = view.borrow_and_update().clone();
            for m in &current.members {
                let now = (m.incarnation, m.state, m.meta.addr);
                if let Some(before) = seen.insert(m.id, now) {
                    if before != now {
                        kv.peers.forget(before.2);
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
    let now = Duration::from_millis(wall_ms());
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

/// How long this peer was away decides what its data is worth. Away
/// longer than the dead grace, the others moved its ranges and took writes
/// without it: it must pull everything again (returns true). Away longer
/// than the tombstone grace, the deletes it missed are forgotten
/// everywhere: its old records would bring deleted keys back, so they go.
pub(super) fn check_absence(
    store: &ringkv_storage::Store,
    dead_grace: Duration,
    tombstone_grace: Duration,
) -> Result<bool> {
    let Some(bytes) = store.progress(ALIVE_AT)? else {
        return Ok(false);
    };
    let Ok(raw) = <[u8; 8]>::try_from(bytes.as_slice()) else {
        return Ok(true);
    };
    let away = Duration::from_millis(wall_ms().saturating_sub(u64::from_be_bytes(raw)));
    if away > tombstone_grace {
        let n = store.clear_records()?;
        warn!(
            away = ?away,
            records = n,
            "this peer was away longer than the tombstone grace: its old records are dropped and its ranges will be pulled afresh"
        );
        return Ok(true);
    }
    if away > dead_grace {
        info!(away = ?away, "this peer was away longer than the dead grace: its ranges will be compared afresh");
        return Ok(true);
    }
    Ok(false)
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
            if let Err(e) = kv.store.set_progress(ALIVE_AT, &wall_ms().to_be_bytes()) {
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
