//! The state one peer shares between its tasks: its store and clock, the
//! membership view and ring it follows, the replica connection pool, and
//! the counters and sketches its requests update. Built once by the daemon
//! ([`Kv::new`]); the coordinator ([`crate::coordinator`]), handoff
//! ([`crate::handoff`]), the request server and the RESP server all hold
//! an `Arc` of it. No IO of its own, but it owns handles that do.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ringkv_gossip::runner::View;
use ringkv_gossip::NodeId;
use ringkv_storage::{Clock, HintLimits, Store};
use tokio::sync::watch;

use crate::clock_offset::Verdict;
use crate::ring_view::RingState;
use crate::routing::{Routing, REPLICAS};
use crate::rpc::pool::Peers;
use crate::wall::WallClock;

/// Counters of the hot-key sketch: any key with more than 1/256 of the
/// requests is listed.
const HOT_KEYS_TRACKED: usize = 256;

/// The coordinator and replica side of the store.
#[derive(Debug)]
pub(crate) struct Kv {
    pub(crate) me: NodeId,
    pub(crate) store: Store,
    pub(crate) clock: Mutex<Clock>,
    /// The one wall-clock source (see [`crate::wall`]).
    pub(crate) wall: WallClock,
    /// `--max-clock-offset`: the clock offset bound.
    pub(crate) max_clock_offset: Duration,
    /// This peer's clock against the others' (kept by the clock probe).
    pub(crate) clock_verdict: RwLock<Verdict>,
    /// `--min-free-space`: below it the data dir counts as full.
    pub(crate) min_free_space: u64,
    /// The data dir's free space (kept by the disk watch).
    pub(crate) space: RwLock<crate::disk::Space>,
    pub(crate) view: watch::Receiver<Arc<View>>,
    pub(crate) ring: watch::Receiver<Arc<RingState>>,
    pub(crate) peers: Peers,
    pub(crate) value_max: usize,
    pub(crate) hint_limits: HintLimits,
    /// Hints refused for lack of room.
    pub(crate) hints_dropped: AtomicU64,
    /// Hints delivered to their replica.
    pub(crate) hints_replayed: AtomicU64,
    /// The keys this peer coordinates most requests for.
    pub(crate) hot: Mutex<crate::hot::HotKeys>,
    /// The ranges this peer holds fully (kept by handoff).
    pub(crate) held: RwLock<Held>,
    /// What routing needs from the current view and ring, built once per
    /// change of either rather than once per request.
    pub(crate) routing: Mutex<Option<Arc<Routing>>>,
    /// This peer's keyring (`None` only in tests that build a bare `Kv`).
    pub(crate) keyring: Option<crate::keyring::PeerKeyring>,
    /// Dead members removed from the ring by an operator
    /// (`ringkv removenode`), read by the ring builder.
    pub(crate) removals: Arc<crate::removenode::Removals>,
}

impl Kv {
    /// The shared state of a peer that starts with an empty routing cache,
    /// no ranges held yet and zeroed counters.
    pub(crate) fn new(
        me: NodeId,
        store: Store,
        clock: Clock,
        wall: WallClock,
        view: watch::Receiver<Arc<View>>,
        ring: watch::Receiver<Arc<RingState>>,
        peers: Peers,
    ) -> Self {
        Self {
            me,
            store,
            clock: Mutex::new(clock),
            wall,
            max_clock_offset: crate::clock_offset::MAX_CLOCK_OFFSET_DEFAULT,
            clock_verdict: RwLock::default(),
            min_free_space: crate::disk::MIN_FREE_DEFAULT,
            space: RwLock::default(),
            view,
            ring,
            peers,
            value_max: crate::rpc::api::VALUE_MAX,
            hint_limits: HintLimits::default(),
            hints_dropped: AtomicU64::new(0),
            hints_replayed: AtomicU64::new(0),
            hot: Mutex::new(crate::hot::HotKeys::new(HOT_KEYS_TRACKED)),
            held: RwLock::default(),
            routing: Mutex::new(None),
            keyring: None,
            removals: Arc::default(),
        }
    }
}

/// The rings whose ranges this peer holds fully: the last one it announced
/// ready, and the one before until its leftovers are dropped. A replica
/// answers reads only for keys in these ranges; elsewhere its "absent"
/// would mean nothing.
#[derive(Debug, Default)]
pub(crate) struct Held {
    pub(crate) ready: Option<ringkv_ring::Ring>,
    pub(crate) previous: Option<ringkv_ring::Ring>,
}

impl Held {
    pub(crate) fn holds(&self, me: &NodeId, key: &[u8]) -> bool {
        [&self.ready, &self.previous]
            .into_iter()
            .flatten()
            .any(|ring| ring.replicas(key, REPLICAS).contains(me))
    }
}

impl Kv {
    /// Wall-clock milliseconds since the Unix epoch, from this peer's one
    /// clock source.
    pub(crate) fn wall_ms(&self) -> u64 {
        self.wall.now_ms()
    }

    /// This peer's clock against the others'.
    pub(crate) fn clock_verdict(&self) -> Verdict {
        *self.clock_verdict.read().expect("clock verdict lock")
    }

    /// Why this peer refuses writes for want of disk space, if it does.
    pub(crate) fn disk_refusal(&self) -> Option<String> {
        self.space
            .read()
            .expect("space lock")
            .refusal(self.min_free_space)
    }
}
