//! The testbed's fault-injection switch: partitions, random loss and delay
//! applied to every datagram of this peer's QUIC endpoint. Does IO: it wraps
//! the peer's UDP socket under quinn, so gossip, replica requests and client
//! requests all see the same faults.
//!
//! Only a peer started with the hidden `--testbed-faults` flag has a switch;
//! any other peer uses quinn's plain socket and has no wrapper at all.
//!
//! Invariants:
//! - the settings are replaced whole ([`FaultSwitch::set`]); an empty
//!   [`Faults`] makes the wrapper a pass-through (one atomic load per call);
//! - with a switch, every transmit is one datagram
//!   (`max_transmit_segments() == 1`), so a send verdict applies to exactly
//!   one datagram; received buffers may still hold several datagrams (GRO is
//!   set on the socket itself), and each is judged on its own;
//! - a receive that drops everything it read polls the socket again, at most
//!   [`RECV_ROUNDS_MAX`] times, then asks to be woken at once: the endpoint
//!   is never left without a wake-up;
//! - delayed datagrams wait in one bounded queue ([`DELAYED_MAX`]) served by
//!   one task; a failed delayed send is just a lost datagram.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime as _, UdpPoller};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, trace};

/// Longest delay accepted: 10 s, far beyond any timeout worth testing.
pub const DELAY_MS_MAX: u64 = 10_000;
/// Largest wall-clock offset accepted either way: 400 days, beyond the
/// "a year ahead" clocks worth testing.
pub const CLOCK_OFFSET_MS_MAX: i64 = 400 * 86_400_000;
/// Most addresses in a drop list: a partition of a large local cluster.
pub const DROP_MAX: usize = 4096;
/// Most datagrams waiting for their delay; beyond, new ones are dropped
/// (about 20 MB of full-size datagrams).
pub const DELAYED_MAX: usize = 16_384;
/// Reads in one `poll_recv` whose datagrams were all dropped before it
/// yields (and asks to be polled again), so a flood of dropped datagrams
/// cannot hold the endpoint's thread.
pub const RECV_ROUNDS_MAX: usize = 16;

/// The answer to any fault request on a peer without the switch.
pub const OFF_MESSAGE: &str = "fault injection is off: this peer was not started by the testbed";

/// The JSON shape of `PUT /v1/faults` and `GET /v1/faults`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsBody {
    /// Peer QUIC socket addresses; every datagram to or from them is dropped.
    #[serde(default)]
    pub drop: Vec<String>,
    /// Fraction (0 to 1) of all datagrams dropped, in both directions.
    #[serde(default)]
    pub loss: f64,
    /// Every outgoing datagram is sent this much later (0 to 10,000 ms).
    #[serde(default)]
    pub delay_ms: u64,
    /// Added to every wall-clock read of the peer (negative: behind), so
    /// clock skew can be set and cleared at run time.
    #[serde(default)]
    pub clock_offset_ms: i64,
    /// The peer's data dir reads as having no free space (the peer's
    /// reaction to a full disk, without filling one).
    #[serde(default)]
    pub full_disk: bool,
}

/// Validated fault settings. `Default` is no fault at all.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Addresses cut off in both directions (canonical form: IPv4-mapped
    /// IPv6 addresses are stored as IPv4).
    pub drop: BTreeSet<SocketAddr>,
    /// Probability that any one datagram is lost, in `0.0..=1.0`.
    pub loss: f64,
    /// Added to every outgoing datagram.
    pub delay: Duration,
    /// Added to the peer's wall clock (see [`FaultsBody::clock_offset_ms`]).
    pub clock_offset_ms: i64,
    /// The data dir reads as full (see [`FaultsBody::full_disk`]).
    pub full_disk: bool,
}

/// Why a fault request was refused; nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadFaults(pub String);

impl fmt::Display for BadFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Faults {
    /// Parses and validates a `PUT /v1/faults` body.
    ///
    /// # Errors
    /// A message naming the bad field: not JSON of the right shape, an
    /// unknown field, an unparsable address, too many addresses, `loss`
    /// outside 0 to 1, `delay_ms` above 10,000.
    pub fn from_json(body: &[u8]) -> Result<Self, BadFaults> {
        let body: FaultsBody = serde_json::from_slice(body).map_err(|e| {
            BadFaults(format!(
                r#"bad fault settings: {e} (expected {{"drop": ["127.0.0.1:4001"], "loss": 0.1, "delay_ms": 50, "clock_offset_ms": 2000, "full_disk": true}}, every field optional)"#
            ))
        })?;
        Self::try_from(body)
    }

    /// The settings in their JSON shape, addresses sorted.
    pub fn to_body(&self) -> FaultsBody {
        FaultsBody {
            drop: self.drop.iter().map(ToString::to_string).collect(),
            loss: self.loss,
            delay_ms: u64::try_from(self.delay.as_millis()).unwrap_or(u64::MAX),
            clock_offset_ms: self.clock_offset_ms,
            full_disk: self.full_disk,
        }
    }

    /// Whether any datagram fault is set (the clock offset touches no
    /// datagram).
    pub fn is_active(&self) -> bool {
        !self.drop.is_empty() || self.loss > 0.0 || !self.delay.is_zero()
    }

    fn drops(&self, addr: SocketAddr) -> bool {
        !self.drop.is_empty() && self.drop.contains(&canonical(addr))
    }
}

impl TryFrom<FaultsBody> for Faults {
    type Error = BadFaults;

    fn try_from(body: FaultsBody) -> Result<Self, BadFaults> {
        if !(0.0..=1.0).contains(&body.loss) {
            return Err(BadFaults(format!(
                "loss {} is out of range: a fraction from 0 to 1 (0.1 is 10%)",
                body.loss
            )));
        }
        if body.delay_ms > DELAY_MS_MAX {
            return Err(BadFaults(format!(
                "delay_ms {} is out of range: 0 to {DELAY_MS_MAX}",
                body.delay_ms
            )));
        }
        if body.clock_offset_ms.unsigned_abs() > CLOCK_OFFSET_MS_MAX.unsigned_abs() {
            return Err(BadFaults(format!(
                "clock_offset_ms {} is out of range: -{CLOCK_OFFSET_MS_MAX} to {CLOCK_OFFSET_MS_MAX}",
                body.clock_offset_ms
            )));
        }
        if body.drop.len() > DROP_MAX {
            return Err(BadFaults(format!(
                "drop lists {} addresses: at most {DROP_MAX}",
                body.drop.len()
            )));
        }
        let mut drop = BTreeSet::new();
        for text in &body.drop {
            let addr: SocketAddr = text.trim().parse().map_err(|_| {
                BadFaults(format!(
                    "drop: {text:?} is not a peer's QUIC socket address like 127.0.0.1:4001"
                ))
            })?;
            drop.insert(canonical(addr));
        }
        Ok(Self {
            drop,
            loss: body.loss,
            delay: Duration::from_millis(body.delay_ms),
            clock_offset_ms: body.clock_offset_ms,
            full_disk: body.full_disk,
        })
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so `[::ffff:127.0.0.1]:4001` and
/// `127.0.0.1:4001` are one peer.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// What the switch has done, for `/metrics`.
#[derive(Debug, Default)]
pub struct FaultStats {
    /// Outgoing datagrams dropped because the destination is in `drop`.
    pub partition_out: AtomicU64,
    /// Incoming datagrams dropped because the source is in `drop`.
    pub partition_in: AtomicU64,
    /// Outgoing datagrams lost at random.
    pub loss_out: AtomicU64,
    /// Incoming datagrams lost at random.
    pub loss_in: AtomicU64,
    /// Outgoing datagrams queued for a delayed send.
    pub delayed: AtomicU64,
    /// Delayed datagrams lost: the queue was full or the late send failed.
    pub delay_failed: AtomicU64,
}

/// The switch: current settings, the loss generator and the counters.
/// Shared by the socket wrapper (read per datagram) and the admin HTTP
/// (written per request).
#[derive(Debug)]
pub struct FaultSwitch {
    /// Cheap check first: false means every datagram passes untouched.
    active: AtomicBool,
    /// The wall-clock offset, read on every clock read of the peer.
    clock_offset_ms: AtomicI64,
    /// Whether the data dir reads as full.
    full_disk: AtomicBool,
    settings: RwLock<Faults>,
    /// Only drawn from when `loss` is set; a short critical section.
    rng: Mutex<ChaCha8Rng>,
    /// Datagrams waiting for their delay.
    queued: AtomicUsize,
    /// What the switch did, for the admin HTTP and the testbed.
    pub stats: FaultStats,
}

impl FaultSwitch {
    /// A switch with no fault set. The loss generator is seeded from
    /// `seed` (the peer's `--seed`) when given, else from the OS.
    pub fn new(seed: Option<u64>) -> Self {
        // A constant apart from the gossip generator's stream.
        const STREAM: u64 = 0x6661_756c_7473; // "faults"
        let rng = match seed {
            Some(seed) => ChaCha8Rng::seed_from_u64(seed ^ STREAM),
            None => ChaCha8Rng::from_os_rng(),
        };
        Self {
            active: AtomicBool::new(false),
            clock_offset_ms: AtomicI64::new(0),
            full_disk: AtomicBool::new(false),
            settings: RwLock::new(Faults::default()),
            rng: Mutex::new(rng),
            queued: AtomicUsize::new(0),
            stats: FaultStats::default(),
        }
    }

    /// Replaces the settings entirely.
    pub fn set(&self, faults: Faults) {
        let active = faults.is_active();
        self.clock_offset_ms.store(faults.clock_offset_ms, Relaxed);
        self.full_disk.store(faults.full_disk, Relaxed);
        *self
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = faults;
        self.active.store(active, Relaxed);
    }

    /// The current settings.
    pub fn get(&self) -> Faults {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn is_active(&self) -> bool {
        self.active.load(Relaxed)
    }

    /// The wall-clock offset in milliseconds (0 unless set).
    pub fn clock_offset_ms(&self) -> i64 {
        self.clock_offset_ms.load(Relaxed)
    }

    /// Whether the data dir must read as full.
    pub fn full_disk(&self) -> bool {
        self.full_disk.load(Relaxed)
    }

    fn lost(&self, loss: f64) -> bool {
        loss > 0.0
            && self
                .rng
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .random::<f64>()
                < loss
    }

    /// What to do with one outgoing datagram to `to`.
    fn judge_send(&self, to: SocketAddr) -> Verdict {
        let faults = self.settings.read().unwrap_or_else(PoisonError::into_inner);
        if faults.drops(to) {
            self.stats.partition_out.fetch_add(1, Relaxed);
            Verdict::Drop
        } else if self.lost(faults.loss) {
            self.stats.loss_out.fetch_add(1, Relaxed);
            Verdict::Drop
        } else if faults.delay.is_zero() {
            Verdict::Pass
        } else {
            Verdict::Delay(faults.delay)
        }
    }

    /// Drops received datagrams the settings say are lost: the first `n`
    /// entries of `bufs`/`meta` are judged, and the survivors are moved to
    /// the front, in order. Returns how many entries remain.
    fn filter_received(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
        n: usize,
    ) -> usize {
        let faults = self.settings.read().unwrap_or_else(PoisonError::into_inner);
        let mut kept = 0;
        for i in 0..n.min(bufs.len()).min(meta.len()) {
            let m = meta[i];
            let stride = if m.stride == 0 { m.len } else { m.stride };
            if faults.drops(m.addr) {
                let datagrams = m.len.div_ceil(stride.max(1)) as u64;
                self.stats.partition_in.fetch_add(datagrams, Relaxed);
                continue;
            }
            let len = if faults.loss > 0.0 {
                keep_datagrams(&mut bufs[i][..m.len], stride, || {
                    let lost = self.lost(faults.loss);
                    if lost {
                        self.stats.loss_in.fetch_add(1, Relaxed);
                    }
                    !lost
                })
            } else {
                m.len
            };
            if len == 0 {
                continue;
            }
            if kept != i {
                let (front, back) = bufs.split_at_mut(i);
                // quinn hands out equal buffers; a smaller one cannot take
                // this datagram, which is then lost.
                let Some(dest) = front[kept].get_mut(..len) else {
                    self.stats.loss_in.fetch_add(1, Relaxed);
                    continue;
                };
                dest.copy_from_slice(&back[0][..len]);
            }
            meta[kept] = RecvMeta { len, ..m };
            kept += 1;
        }
        kept
    }
}

/// Keeps the datagrams of a received buffer for which `keep` says so, in
/// order, at the front of `buf`; datagrams are `stride` bytes apart (the
/// last may be shorter). Returns the new length. Only the last datagram
/// kept can be short, so the stride still describes the result.
fn keep_datagrams(buf: &mut [u8], stride: usize, mut keep: impl FnMut() -> bool) -> usize {
    let stride = stride.max(1);
    let mut write = 0;
    let mut start = 0;
    while start < buf.len() {
        let end = (start + stride).min(buf.len());
        if keep() {
            if write != start {
                buf.copy_within(start..end, write);
            }
            write += end - start;
        }
        start = end;
    }
    write
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Drop,
    Delay(Duration),
}

/// The endpoint's socket: quinn's tokio socket, or, with a switch, the same
/// wrapped in a [`FaultySocket`]. Must be called inside the tokio runtime
/// that drives the endpoint (the delay task is spawned there).
///
/// # Errors
/// The socket cannot be registered with the runtime.
pub fn endpoint_socket(
    socket: std::net::UdpSocket,
    switch: Option<Arc<FaultSwitch>>,
) -> io::Result<Arc<dyn AsyncUdpSocket>> {
    let inner = quinn::TokioRuntime.wrap_udp_socket(socket)?;
    Ok(match switch {
        None => inner,
        Some(switch) => Arc::new(FaultySocket::new(inner, switch)),
    })
}

/// A UDP socket that applies a [`FaultSwitch`] to every datagram.
#[derive(Debug)]
pub struct FaultySocket {
    inner: Arc<dyn AsyncUdpSocket>,
    switch: Arc<FaultSwitch>,
    /// To the delay task; it ends when this socket is dropped.
    delayed: mpsc::UnboundedSender<Delayed>,
}

impl FaultySocket {
    /// Wraps `inner`; spawns the delay task on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, switch: Arc<FaultSwitch>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_delayed(inner.clone(), switch.clone(), rx));
        Self {
            inner,
            switch,
            delayed: tx,
        }
    }

    fn delay(&self, transmit: &Transmit<'_>, delay: Duration) {
        let stats = &self.switch.stats;
        // Bounded by the counter rather than the channel: the task moves
        // datagrams out of the channel into its heap at once.
        if self.switch.queued.fetch_add(1, Relaxed) >= DELAYED_MAX {
            self.switch.queued.fetch_sub(1, Relaxed);
            stats.delay_failed.fetch_add(1, Relaxed);
            return;
        }
        let datagram = Delayed {
            due: tokio::time::Instant::now() + delay,
            destination: transmit.destination,
            ecn: transmit.ecn,
            contents: transmit.contents.to_vec(),
            segment_size: transmit.segment_size,
            src_ip: transmit.src_ip,
        };
        if self.delayed.send(datagram).is_err() {
            self.switch.queued.fetch_sub(1, Relaxed);
            stats.delay_failed.fetch_add(1, Relaxed);
        } else {
            stats.delayed.fetch_add(1, Relaxed);
        }
    }
}

impl AsyncUdpSocket for FaultySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        if !self.switch.is_active() {
            return self.inner.try_send(transmit);
        }
        match self.switch.judge_send(transmit.destination) {
            Verdict::Pass => self.inner.try_send(transmit),
            Verdict::Drop => {
                trace!(to = %transmit.destination, "datagram dropped by a fault");
                Ok(())
            }
            Verdict::Delay(delay) => {
                self.delay(transmit, delay);
                Ok(())
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        for _ in 0..RECV_ROUNDS_MAX {
            let n = ready!(self.inner.poll_recv(cx, bufs, meta))?;
            if !self.switch.is_active() {
                return Poll::Ready(Ok(n));
            }
            let kept = self.switch.filter_received(bufs, meta, n);
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
        }
        // Everything read was dropped and more may be waiting: yield, and
        // be polled again at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// One datagram per transmit, so each send verdict is about one
    /// datagram.
    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// An outgoing datagram waiting for its delay, with everything a
/// [`Transmit`] needs.
#[derive(Debug)]
struct Delayed {
    due: tokio::time::Instant,
    destination: SocketAddr,
    ecn: Option<EcnCodepoint>,
    contents: Vec<u8>,
    segment_size: Option<usize>,
    src_ip: Option<IpAddr>,
}

/// Tries to send a delayed datagram this many times when the socket is
/// full, waiting for it to become writable in between.
const DELAYED_SEND_TRIES: usize = 3;

/// A delayed datagram in the queue, ordered by due time, then arrival.
#[derive(Debug)]
struct Queued {
    due: tokio::time::Instant,
    seq: u64,
    datagram: Delayed,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// Sends every delayed datagram when it is due, earliest first (ties in
/// arrival order: the delay can change between two datagrams). Ends when
/// the socket is dropped.
async fn send_delayed(
    socket: Arc<dyn AsyncUdpSocket>,
    switch: Arc<FaultSwitch>,
    mut rx: mpsc::UnboundedReceiver<Delayed>,
) {
    let mut heap: BinaryHeap<Reverse<Queued>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut poller = socket.clone().create_io_poller();
    loop {
        let next = heap.peek().map(|Reverse(q)| q.due);
        tokio::select! {
            received = rx.recv() => match received {
                Some(datagram) => {
                    heap.push(Reverse(Queued { due: datagram.due, seq, datagram }));
                    seq += 1;
                }
                None => break,
            },
            () = sleep_until(next), if next.is_some() => {
                let now = tokio::time::Instant::now();
                while heap.peek().is_some_and(|Reverse(q)| q.due <= now) {
                    let Some(Reverse(q)) = heap.pop() else { break };
                    switch.queued.fetch_sub(1, Relaxed);
                    if !send_one(&*socket, &mut poller, &q.datagram).await {
                        switch.stats.delay_failed.fetch_add(1, Relaxed);
                    }
                }
            }
        }
    }
    debug!(left = heap.len(), "delay task ends with its socket");
}

async fn sleep_until(due: Option<tokio::time::Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
}

/// Sends one delayed datagram; false if it could not be sent.
async fn send_one(
    socket: &dyn AsyncUdpSocket,
    poller: &mut Pin<Box<dyn UdpPoller>>,
    d: &Delayed,
) -> bool {
    let transmit = Transmit {
        destination: d.destination,
        ecn: d.ecn,
        contents: &d.contents,
        segment_size: d.segment_size,
        src_ip: d.src_ip,
    };
    for _ in 0..DELAYED_SEND_TRIES {
        match socket.try_send(&transmit) {
            Ok(()) => return true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx))
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            Err(e) => {
                trace!(to = %d.destination, err = %e, "delayed datagram not sent");
                return false;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests;
