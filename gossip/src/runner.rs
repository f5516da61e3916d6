//! The thin shell: one tokio task owns the [`Swim`] state machine and one
//! QUIC endpoint. It feeds the machine received datagrams and stream
//! messages, wakes it at its deadlines, sends what it asks to send over
//! pooled connections, and publishes the membership view on a `watch`
//! channel. Bidirectional streams (client requests) are handed to the
//! owner of the runner.
//!
//! Bounds: the inbox, each address's queue of messages waiting for a
//! connection, and the work done per wake-up are limited, so a flood from
//! any address cannot grow memory without bound; what does not fit is
//! dropped and counted, as a lossy network would drop it.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use ringkv_ring::NodeId;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::links::Links;
use crate::proto::codec;
use crate::proto::member::{Member, Meta};
use crate::proto::swim::{Channel, Event, Stats, Swim};
use crate::transport::admission::{Admit, HandshakeLimits, Handshakes};
use crate::transport::credentials::{Role, Roles};
use crate::transport::tls::{connection_version, peer_node_id, SERVER_NAME};

/// Most received messages waiting for the state machine.
const INBOX_MAX: usize = 4096;
/// Most messages queued for one address while connecting to it.
const PENDING_PER_ADDR: usize = 64;
/// Most addresses with a connection attempt or queue at once.
const PENDING_ADDRS_MAX: usize = 1024;
/// Inputs handled per wake-up before timers and commands get a turn.
const IO_LOOP_BOUND: usize = 256;
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a gossip message too large for a datagram may wait for a
/// stream slot and be written before it is given up (gossip sends again).
const STREAM_SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the published view's counters and agreement are rebuilt
/// when membership has not changed (see `Runner::flush`).
const REFRESH_EVERY: Duration = Duration::from_millis(100);

/// The membership as the runner last published it.
#[derive(Clone, Debug)]
pub struct View {
    /// This peer.
    pub me: Member,
    /// Every other member known, by id.
    pub members: Vec<Member>,
    /// View digest.
    pub digest: u64,
    /// `(agreeing, reporting)` live peers.
    pub agreement: (usize, usize),
    /// Ring-shape digest ([`Swim::shape_digest`]).
    pub shape: u64,
    /// `(agreeing, reporting)` live peers on the ring shape
    /// ([`Swim::ring_agreement`]): blind to metadata-only changes.
    pub ring_agreement: (usize, usize),
    /// Whether a seed answered (or none was needed).
    pub joined: bool,
    /// Protocol counters.
    pub stats: Stats,
    /// Lifeguard local health score.
    pub health: u32,
    /// Increases with every published change of membership.
    pub index: u64,
}

impl View {
    /// Live members (Alive or Suspect), this peer included.
    pub fn live(&self) -> impl Iterator<Item = &Member> {
        std::iter::once(&self.me).chain(self.members.iter().filter(|m| m.state.is_live()))
    }
}

/// Requests to the runner.
#[derive(Debug)]
pub enum Command {
    /// Leave gracefully; answered once the leave has been sent out enough
    /// (or the timeout passed).
    Leave {
        /// Gives up waiting for the spread after this long.
        timeout: Duration,
        /// Answered when done.
        done: oneshot::Sender<()>,
    },
    /// Replace this peer's metadata.
    UpdateMeta(Meta),
    /// Fresh seed addresses (seed names resolved again): see
    /// [`Swim::handle_seeds`].
    Seeds(Vec<SocketAddr>),
    /// Read datagrams, stream messages and requests from a connection
    /// dialed by someone else on this endpoint (the replica pool): it is
    /// the shared link to that peer ([`Links`]), which the other side may
    /// use for its gossip and its requests.
    Adopt(quinn::Connection),
}

/// A client request stream, handed to the runner's owner.
#[derive(Debug)]
pub struct Request {
    /// The authenticated peer (or CLI) that opened it.
    pub from: NodeId,
    /// What its certificate lets it ask: peers anything, clients client
    /// requests only (checked on the connection's certificate, now).
    pub role: Role,
    /// Its address.
    pub addr: SocketAddr,
    /// Write the answer here.
    pub send: quinn::SendStream,
    /// Read the request here.
    pub recv: quinn::RecvStream,
}

/// Counters the runner keeps beside the state machine's.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Messages dropped because the inbox was full.
    pub inbox_dropped: AtomicU64,
    /// Messages dropped because no connection could be made in time.
    pub unsent: AtomicU64,
    /// Connections refused or failed during the handshake (a peer with
    /// another cluster key, or not a ringkv peer).
    pub handshake_failures: AtomicU64,
    /// Connections this peer dialled that the other side refused with
    /// `CONNECTION_REFUSED`: its handshake slots were all busy (overload,
    /// not a key mismatch).
    pub connects_refused: AtomicU64,
    /// Incoming handshakes that did not complete within the handshake
    /// timeout (a stalled or very slow client); their slot was freed.
    pub handshake_timeouts: AtomicU64,
    /// Connection attempts that got no answer in time (peer down or
    /// unreachable).
    pub connect_timeouts: AtomicU64,
    /// Bytes received in datagrams and stream messages.
    pub bytes_in: AtomicU64,
    /// Incoming handshakes refused because every handshake slot was busy.
    pub handshakes_refused_full: AtomicU64,
    /// Incoming handshakes ignored because their source address held its
    /// share of handshake slots already.
    pub handshakes_ignored_per_source: AtomicU64,
    /// Incoming handshakes answered with a Retry (address validation)
    /// because more than half the slots were busy.
    pub handshake_retries: AtomicU64,
    /// Connections dropped because the certificate's node id was not the
    /// member at the address dialled (or, accepted, the member at the
    /// address they came from).
    pub peer_mismatch: AtomicU64,
    /// Gossip datagrams and stream messages dropped unread because they
    /// came on a connection whose certificate is not a peer's (a client
    /// credential).
    pub gossip_refused_role: AtomicU64,
    /// Connections (accepted or dialled) closed because, once the keyring
    /// changed, their certificate no longer verified (a removed key's).
    pub connections_closed_rekeyed: AtomicU64,
    /// Requests refused because the connection's certificate does not
    /// allow them (a client sending peer requests); counted by the
    /// runner's owner, which dispatches requests.
    pub rpc_refused_role: AtomicU64,
    /// Requests refused unread because the owner's queue of requests was
    /// full (every slot of requests in progress busy): reset with
    /// [`REQUEST_BUSY`].
    pub rpc_refused_busy: AtomicU64,
    /// Requests being worked on now (each holds one of `--requests-max`
    /// slots); kept by the runner's owner.
    pub requests_in_progress: AtomicU64,
    /// QUIC connections open on this peer's endpoint now (gossip, replica
    /// requests and clients, either direction), as of the last refresh.
    pub open_connections: AtomicU64,
}

/// What the runner's owner holds.
#[derive(Debug, Clone)]
pub struct Handle {
    /// Commands in.
    pub commands: mpsc::Sender<Command>,
    /// The latest view.
    pub view: watch::Receiver<Arc<View>>,
    /// Transport counters.
    pub transport: Arc<TransportStats>,
    /// The connection to each peer, for the replica pool to share.
    pub links: Links,
}

enum Input {
    Datagram(Vec<u8>),
    Stream(Vec<u8>),
    Connected(SocketAddr, quinn::Connection),
    /// A peer connected to us: the newest connection from an address
    /// replaces a pooled one, which may belong to a process that died.
    Accepted(SocketAddr, quinn::Connection),
    ConnectFailed(SocketAddr),
}

/// Everything the runner needs, ready-made: tests inject their own.
#[derive(Debug)]
pub struct RunnerParts {
    /// The state machine, joined or not.
    pub swim: Swim<ChaCha8Rng>,
    /// The endpoint, already bound, with its server config.
    pub endpoint: quinn::Endpoint,
    /// How to connect to peers.
    pub client_config: quinn::ClientConfig,
    /// Where client request streams go.
    pub requests: mpsc::Sender<Request>,
    /// Largest stream message accepted.
    pub max_stream_message: usize,
    /// Limits on incoming handshakes in progress.
    pub handshakes: HandshakeLimits,
    /// Tells peers' connections from clients'.
    pub roles: Arc<Roles>,
}

/// Starts the runner task; it stops when `shutdown` resolves or after a
/// completed `Leave`.
pub fn spawn(
    parts: RunnerParts,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (Handle, tokio::task::JoinHandle<()>) {
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let view = Arc::new(snapshot(&parts.swim, 0));
    let (view_tx, view_rx) = watch::channel(view);
    let transport = Arc::new(TransportStats::default());
    let runner = Runner::new(parts, cmd_rx, view_tx, transport.clone());
    let links = runner.conns.clone();
    let task = tokio::spawn(runner.run(shutdown));
    (
        Handle {
            commands: cmd_tx,
            view: view_rx,
            transport,
            links,
        },
        task,
    )
}

fn snapshot(swim: &Swim<ChaCha8Rng>, index: u64) -> View {
    View {
        me: swim.me().clone(),
        members: swim.members().cloned().collect(),
        digest: swim.view_digest(),
        agreement: swim.agreement(),
        shape: swim.shape_digest(),
        ring_agreement: swim.ring_agreement(),
        joined: swim.is_joined(),
        stats: swim.stats().clone(),
        health: swim.health_score(),
        index,
    }
}

struct Runner {
    swim: Swim<ChaCha8Rng>,
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    requests: mpsc::Sender<Request>,
    max_stream: usize,
    handshakes: HandshakeLimits,
    roles: Arc<Roles>,
    /// The connection to each peer, shared with the replica pool.
    conns: Links,
    pending: BTreeMap<SocketAddr, VecDeque<(Channel, Vec<u8>)>>,
    inbox_tx: mpsc::Sender<Input>,
    inbox_rx: mpsc::Receiver<Input>,
    commands: mpsc::Receiver<Command>,
    view_tx: watch::Sender<Arc<View>>,
    index: u64,
    leaving: Option<(tokio::time::Instant, oneshot::Sender<()>)>,
    /// While leaving: the stream messages in flight, each ending true once
    /// the receiver acknowledged all of it.
    notices: tokio::task::JoinSet<bool>,
    /// Of those, how many were acknowledged.
    notices_acked: usize,
    stats: Arc<TransportStats>,
    /// When the published view was last rebuilt.
    refreshed: Option<tokio::time::Instant>,
    /// Whether a rebuild was skipped since (too soon after the last).
    refresh_due: bool,
}

impl Runner {
    fn new(
        parts: RunnerParts,
        commands: mpsc::Receiver<Command>,
        view_tx: watch::Sender<Arc<View>>,
        stats: Arc<TransportStats>,
    ) -> Self {
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_MAX);
        let me = parts.swim.me().id;
        Self {
            swim: parts.swim,
            endpoint: parts.endpoint,
            client_config: parts.client_config,
            requests: parts.requests,
            max_stream: parts.max_stream_message,
            handshakes: parts.handshakes,
            roles: parts.roles,
            conns: Links::new(me),
            pending: BTreeMap::new(),
            inbox_tx,
            inbox_rx,
            commands,
            view_tx,
            index: 0,
            leaving: None,
            notices: tokio::task::JoinSet::new(),
            notices_acked: 0,
            refreshed: None,
            refresh_due: false,
            stats,
        }
    }

    fn now() -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }

    async fn run(mut self, shutdown: impl std::future::Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        self.spawn_accept_loop();
        self.flush();
        loop {
            let mut deadline = self.swim.poll_timeout().map_or_else(
                || tokio::time::Instant::now() + Duration::from_secs(1),
                tokio::time::Instant::from_std,
            );
            let refresh_at = self
                .refreshed
                .filter(|_| self.refresh_due)
                .map(|at| at + REFRESH_EVERY);
            if let Some(at) = refresh_at {
                deadline = deadline.min(at);
            }
            tokio::select! {
                () = &mut shutdown => break,
                input = self.inbox_rx.recv() => {
                    let Some(input) = input else { break };
                    self.on_input(input);
                    // Drain what else is waiting, bounded.
                    for _ in 0..IO_LOOP_BOUND {
                        match self.inbox_rx.try_recv() {
                            Ok(input) => self.on_input(input),
                            Err(_) => break,
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    if refresh_at != Some(deadline) {
                        self.swim.handle_timeout(Self::now());
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                Some(acked) = self.notices.join_next(), if !self.notices.is_empty() => {
                    if matches!(acked, Ok(true)) {
                        self.notices_acked += 1;
                    }
                }
            }
            self.flush();
            if self.leave_finished() {
                break;
            }
        }
        // Closing drops what is still queued; the leave's own notices were
        // acknowledged (or gave up) before the loop ended.
        self.endpoint.close(0u32.into(), b"bye");
    }

    fn on_input(&mut self, input: Input) {
        let now = Self::now();
        match input {
            Input::Datagram(bytes) => {
                self.stats
                    .bytes_in
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                if let Err(e) = self.swim.handle_datagram(now, &bytes) {
                    debug!(err = %e, "dropped a datagram that did not decode");
                }
            }
            Input::Stream(bytes) => {
                self.stats
                    .bytes_in
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                if let Err(e) = self.swim.handle_stream(now, &bytes) {
                    debug!(err = %e, "dropped a stream message that did not decode");
                }
            }
            Input::Connected(addr, conn) => {
                if !self.is_member_at(addr, &conn) {
                    self.stats.peer_mismatch.fetch_add(1, Ordering::Relaxed);
                    warn!(peer = %addr, "dropped a connection: not the member at that address");
                    conn.close(0u32.into(), b"not the member expected at this address");
                    if let Some(queue) = self.pending.remove(&addr) {
                        self.stats
                            .unsent
                            .fetch_add(queue.len() as u64, Ordering::Relaxed);
                    }
                    return;
                }
                self.spawn_reader(conn.clone());
                self.conns.insert(addr, conn);
                if let Some(queue) = self.pending.remove(&addr) {
                    for (channel, bytes) in queue {
                        self.send(addr, channel, bytes);
                    }
                }
            }
            Input::Accepted(addr, conn) => {
                // Only members' connections are worth pooling; a CLI's
                // throwaway address would stay in the map for ever.
                // And only if it is the member at that address: another
                // node must not receive what we send to that member.
                if self.swim.members().any(|m| m.meta.addr == addr) {
                    if self.is_member_at(addr, &conn) {
                        self.conns.insert(addr, conn);
                    } else {
                        self.stats.peer_mismatch.fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.conns.retain(|_, c| c.close_reason().is_none());
            }
            Input::ConnectFailed(addr) => {
                if let Some(queue) = self.pending.remove(&addr) {
                    self.stats
                        .unsent
                        .fetch_add(queue.len() as u64, Ordering::Relaxed);
                }
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let now = Self::now();
        match cmd {
            Command::Leave { timeout, done } => {
                info!("leaving the cluster");
                self.swim.handle_leave(now);
                self.swim
                    .queue_leave_notices(crate::proto::swim::LEAVE_NOTICES);
                self.leaving = Some((tokio::time::Instant::now() + timeout, done));
            }
            Command::UpdateMeta(meta) => self.swim.handle_update_meta(now, meta),
            Command::Seeds(seeds) => self.swim.handle_seeds(now, seeds),
            Command::Adopt(conn) => self.spawn_reader(conn),
        }
    }

    fn leave_finished(&mut self) -> bool {
        let Some((deadline, _)) = &self.leaving else {
            return false;
        };
        // A live member acknowledged the Left on a stream (it gossips it on),
        // or every notice failed and the datagrams went out three times, or
        // nobody is left to tell.
        let spread = self.notices.is_empty()
            && (self.notices_acked > 0 || self.swim.leave_spread(3))
            || self.swim.live_count() == 0;
        if spread || tokio::time::Instant::now() >= *deadline {
            if let Some((_, done)) = self.leaving.take() {
                let _ = done.send(());
            }
            return true;
        }
        false
    }

    /// Sends what the state machine wants sent and publishes changes.
    fn flush(&mut self) {
        while let Some(tx) = self.swim.poll_transmit() {
            if self.leaving.is_some() && tx.channel == Channel::Stream {
                self.send_notice(tx.to, tx.bytes);
            } else {
                self.send(tx.to, tx.channel, tx.bytes);
            }
        }
        let mut changed = false;
        while let Some(event) = self.swim.poll_event() {
            changed = true;
            log_event(&event, &self.swim);
            self.forget_connection(&event);
        }
        let view = self.view_tx.borrow();
        let stale = view.digest != self.swim.view_digest() || view.joined != self.swim.is_joined();
        drop(view);
        let now = tokio::time::Instant::now();
        if changed || stale {
            self.index += 1;
            self.refreshed = Some(now);
            self.conns.set_two_way(
                self.swim
                    .members()
                    .filter(|m| crate::links::serves_both_ways(&m.meta))
                    .map(|m| m.id)
                    .collect(),
            );
            let _ = self
                .view_tx
                .send(Arc::new(snapshot(&self.swim, self.index)));
        } else if self
            .refreshed
            .is_none_or(|at| now.duration_since(at) >= REFRESH_EVERY)
        {
            // Counters and agreement change with every message: refresh
            // them at most every REFRESH_EVERY, and without waking the
            // watchers (they read them when they look; they wait on
            // membership changes). Waking every watcher and copying the
            // whole member list on every datagram was most of an idle
            // peer's work, and it grew with the cluster.
            self.refreshed = Some(now);
            self.refresh_due = false;
            self.stats
                .open_connections
                .store(self.endpoint.open_connections() as u64, Ordering::Relaxed);
            let snap = Arc::new(snapshot(&self.swim, self.index));
            self.view_tx.send_if_modified(|v| {
                *v = snap;
                false
            });
        } else {
            // Refreshed less than REFRESH_EVERY ago: the run loop wakes
            // for it, so the published counters are never older than
            // that, even if nothing else happens.
            self.refresh_due = true;
        }
    }

    /// Whether `conn` (to or from `addr`) presents the certificate of a
    /// member we hold at `addr`, in any state (a ping to a dead member must
    /// reach that member, not whoever took its address). An address with
    /// no member (a seed not joined yet) accepts any cluster peer: what it
    /// says is checked statement by statement (`proto/verify.rs`).
    fn is_member_at(&self, addr: SocketAddr, conn: &quinn::Connection) -> bool {
        let got = peer_node_id(conn);
        let mut wanted = self
            .swim
            .members()
            .filter(|m| m.meta.addr == addr)
            .peekable();
        wanted.peek().is_none() || wanted.any(|m| Some(m.id) == got)
    }

    /// A member that died, left or came back may be a new process behind
    /// the same address: its pooled connection is stale, so dial afresh.
    fn forget_connection(&mut self, event: &Event) {
        let (Event::MemberDead(id) | Event::MemberLeft(id) | Event::MemberJoined(id)) = event
        else {
            return;
        };
        // Dropped from the pool, not closed: the connection may carry other
        // traffic (client and replica requests), and an unused one ends by
        // itself at its idle timeout.
        if let Some(addr) = self.swim.member(id).map(|m| m.meta.addr) {
            self.conns.remove(addr);
        }
    }

    fn send(&mut self, to: SocketAddr, channel: Channel, bytes: Vec<u8>) {
        if let Some(conn) = self.conns.get(to) {
            send_on(&conn, channel, bytes);
            return;
        }
        if !self.pending.contains_key(&to) {
            if self.pending.len() >= PENDING_ADDRS_MAX {
                self.stats.unsent.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.spawn_connect(to);
        }
        let queue = self.pending.entry(to).or_default();
        if queue.len() < PENDING_PER_ADDR {
            queue.push_back((channel, bytes));
        } else {
            self.stats.unsent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends a stream message while leaving and tracks it until the
    /// receiver acknowledged every byte: the peer may stop only after that,
    /// or the message dies with the endpoint.
    fn send_notice(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        let pooled = self.conns.get(to);
        let endpoint = self.endpoint.clone();
        let config = self.client_config.clone();
        self.notices.spawn(async move {
            let delivered = async {
                let conn = match pooled {
                    Some(conn) => conn,
                    None => endpoint
                        .connect_with(config, to, SERVER_NAME)
                        .ok()?
                        .await
                        .ok()?,
                };
                let bytes = codec::clamp(bytes, connection_version(&conn)).ok()?;
                let mut stream = conn.open_uni().await.ok()?;
                stream.write_all(&bytes).await.ok()?;
                stream.finish().ok()?;
                // None: finished, and the receiver acknowledged all of it.
                stream.stopped().await.ok()?.is_none().then_some(())
            };
            let acked = tokio::time::timeout(CONNECT_TIMEOUT, delivered).await;
            matches!(acked, Ok(Some(())))
        });
    }

    fn spawn_connect(&self, to: SocketAddr) {
        let endpoint = self.endpoint.clone();
        let config = self.client_config.clone();
        let inbox = self.inbox_tx.clone();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let input = match endpoint.connect_with(config, to, SERVER_NAME) {
                Err(e) => {
                    debug!(peer = %to, err = %e, "cannot connect");
                    Input::ConnectFailed(to)
                }
                Ok(connecting) => match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
                    Ok(Ok(conn)) => Input::Connected(to, conn),
                    Ok(Err(e)) => {
                        if is_refused(&e) {
                            stats.connects_refused.fetch_add(1, Ordering::Relaxed);
                        } else {
                            stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                        }
                        debug!(peer = %to, err = %e, "handshake failed");
                        Input::ConnectFailed(to)
                    }
                    Err(_) => {
                        stats.connect_timeouts.fetch_add(1, Ordering::Relaxed);
                        debug!(peer = %to, "no answer");
                        Input::ConnectFailed(to)
                    }
                },
            };
            let _ = inbox.send(input).await;
        });
    }

    fn spawn_accept_loop(&self) {
        let endpoint = self.endpoint.clone();
        let inbox = self.inbox_tx.clone();
        let requests = self.requests.clone();
        let stats = self.stats.clone();
        let max = self.max_stream;
        let limits = self.handshakes.clone();
        let roles = self.roles.clone();
        let links = self.conns.clone();
        tokio::spawn(async move {
            let warned = Arc::new(AtomicBool::new(false));
            let timeout = limits.handshake_timeout;
            let handshakes = Arc::new(std::sync::Mutex::new(Handshakes::new(limits)));
            while let Some(incoming) = endpoint.accept().await {
                // Handshakes run side by side, each bounded in time and in
                // number per source, so a sender that starts many and goes
                // silent blocks nobody else.
                let Some(slot) = admit(incoming, &handshakes, &stats) else {
                    continue;
                };
                let inbox = inbox.clone();
                let requests = requests.clone();
                let stats = stats.clone();
                let warned = warned.clone();
                let roles = roles.clone();
                let links = links.clone();
                tokio::spawn(async move {
                    let (connecting, slot) = slot;
                    let outcome = tokio::time::timeout(timeout, connecting).await;
                    drop(slot);
                    match outcome {
                        Ok(Ok(conn)) => {
                            let reader = Reader {
                                inbox: inbox.clone(),
                                links,
                                requests,
                                stats,
                                max,
                                roles: roles.clone(),
                            };
                            // Only a peer's connection may carry gossip
                            // back: a client's is never pooled.
                            if roles.role_of(&conn).is_peer() {
                                let _ = inbox
                                    .send(Input::Accepted(conn.remote_address(), conn.clone()))
                                    .await;
                            }
                            reader.read(conn).await;
                        }
                        Ok(Err(e)) => {
                            stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                            // Once, not per packet: a peer without the key retries.
                            if !warned.swap(true, Ordering::Relaxed) {
                                warn!(err = %e, "refused a connection that failed the handshake (wrong cluster key?)");
                            }
                        }
                        Err(_) => {
                            stats.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
    }

    /// Reads a connection this endpoint dialled (the runner or the
    /// replica pool): the other side presented a certificate of the
    /// cluster CA (the only one the client config trusts). Its requests
    /// are served as an accepted connection's are, since the other side
    /// may use this connection for its own (one connection per pair,
    /// [`Links`]), with the same role checks, again whenever the keys
    /// change.
    fn spawn_reader(&self, conn: quinn::Connection) {
        let reader = Reader {
            inbox: self.inbox_tx.clone(),
            links: self.conns.clone(),
            requests: self.requests.clone(),
            stats: self.stats.clone(),
            max: self.max_stream,
            roles: self.roles.clone(),
        };
        tokio::spawn(reader.read(conn));
    }
}

/// Whether the other side refused the connection for want of handshake
/// slots (`CONNECTION_REFUSED`), as opposed to a failed TLS handshake.
fn is_refused(e: &quinn::ConnectionError) -> bool {
    matches!(e, quinn::ConnectionError::ConnectionClosed(c)
        if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED)
}

/// A handshake slot, given back when dropped.
struct Slot {
    handshakes: Arc<std::sync::Mutex<Handshakes>>,
    source: std::net::IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.handshakes).finish(self.source);
    }
}

fn lock(handshakes: &std::sync::Mutex<Handshakes>) -> std::sync::MutexGuard<'_, Handshakes> {
    // The account stays consistent whatever panicked while holding it.
    handshakes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Applies the admission decision to an incoming handshake: the handshake
/// and its slot when accepted, else `None` (refused, retried or ignored,
/// and counted).
fn admit(
    incoming: quinn::Incoming,
    handshakes: &Arc<std::sync::Mutex<Handshakes>>,
    stats: &TransportStats,
) -> Option<(quinn::Incoming, Slot)> {
    let source = incoming.remote_address().ip();
    let decision = lock(handshakes).admit(
        source,
        incoming.remote_address_validated(),
        incoming.may_retry(),
    );
    match decision {
        Admit::Accept => Some((
            incoming,
            Slot {
                handshakes: handshakes.clone(),
                source,
            },
        )),
        Admit::Retry => {
            stats.handshake_retries.fetch_add(1, Ordering::Relaxed);
            // may_retry was true, so this cannot fail; if it did, the
            // Incoming is dropped, which refuses it.
            let _ = incoming.retry();
            None
        }
        Admit::RefuseFull => {
            stats
                .handshakes_refused_full
                .fetch_add(1, Ordering::Relaxed);
            debug!(source = %source, "refused a handshake: every slot is busy");
            incoming.refuse();
            None
        }
        Admit::IgnoreSource => {
            stats
                .handshakes_ignored_per_source
                .fetch_add(1, Ordering::Relaxed);
            debug!(source = %source, "ignored a handshake: its source holds its share of slots");
            incoming.ignore();
            None
        }
    }
}

/// Sends one message on a connection: datagrams unreliably (falling back to
/// a stream when too large for the path), stream messages on a new
/// unidirectional stream.
///
/// A frame above the version the connection negotiated (its ALPN token) is
/// encoded again at that version first: the gate follows gossip, the
/// connection knows the process at the other end (one restarted on an
/// older build, before its new Alive arrived).
fn send_on(conn: &quinn::Connection, channel: Channel, bytes: Vec<u8>) {
    let bytes = match codec::clamp(bytes, connection_version(conn)) {
        Ok(bytes) => bytes,
        Err(e) => {
            debug!(err = %e, "frame not sent");
            return;
        }
    };
    if channel == Channel::Datagram {
        match conn.send_datagram(bytes.clone().into()) {
            Ok(()) => return,
            Err(quinn::SendDatagramError::TooLarge) => {}
            Err(e) => {
                debug!(err = %e, "datagram not sent");
                return;
            }
        }
    }
    let conn = conn.clone();
    tokio::spawn(async move {
        // Bounded: a peer that never frees a stream slot or reads (one
        // slow or hostile) would otherwise keep every full state sent to
        // it in a task until the connection's idle timeout.
        let _ = tokio::time::timeout(STREAM_SEND_TIMEOUT, async move {
            let Ok(mut stream) = conn.open_uni().await else {
                return;
            };
            if stream.write_all(&bytes).await.is_ok() {
                let _ = stream.finish();
            }
        })
        .await;
    });
}

/// How long a connection whose key was removed stays open before it is
/// closed (its requests refused with [`REQUEST_KEY_REMOVED`], nothing else
/// read): for this peer's own requests on it to finish (a replica
/// call takes milliseconds), well inside the other side's call timeouts
/// (2 s for replica calls), which its retry must fit in.
const REKEY_CLOSE_GRACE: Duration = Duration::from_millis(500);

/// The reason a peer gives when it closes a connection whose certificate
/// no longer verifies because the keyring changed, [`REKEY_CLOSE_GRACE`]
/// after it stopped serving it. A request cut off by that close may have
/// been handled: only [`REQUEST_KEY_REMOVED`] says it was not.
pub const KEY_REMOVED_REASON: &[u8] =
    b"the key this connection was authenticated under is no longer installed";

/// The stream error code of a request refused unread because the key its
/// connection was authenticated under was removed (every request that
/// arrives on such a connection until it closes): nothing of it was
/// handled, so the caller may send it again on a fresh connection under
/// its current key (`node`'s RPC client does, once).
pub const REQUEST_KEY_REMOVED: u32 = 0x4b52;

/// The stream error code of a request refused unread because the peer is
/// shutting down (its request server is gone), or because the request did
/// not arrive whole in time: nothing of it was handled.
pub const REQUEST_NOT_SERVED: u32 = 0x4e53;

/// The stream error code of a request refused unread because the peer
/// was at its limit of requests in progress and queued: nothing of it was
/// handled, so the caller may send it again (`node`'s RPC client reports
/// it as overloaded).
pub const REQUEST_BUSY: u32 = 0x4255;

/// Refuses a request unread with the stream error `code`, so the caller
/// knows nothing of it was handled. (Dropped instead, its stream would end
/// cleanly with no bytes, which reads as an empty, malformed answer of
/// unknown outcome.)
pub fn refuse(mut send: quinn::SendStream, mut recv: quinn::RecvStream, code: u32) {
    let _ = send.reset(code.into());
    let _ = recv.stop(code.into());
}

/// The connection one reader reads.
struct Link {
    conn: quinn::Connection,
    /// Its remote address when the reader started (the table's key).
    addr: SocketAddr,
    /// Set once its key was removed: one-way messages still being read
    /// are dropped.
    revoked: Arc<AtomicBool>,
}

/// What reading one connection needs.
struct Reader {
    inbox: mpsc::Sender<Input>,
    /// The connection table: a spare the other side is heard on may
    /// become the link ([`Links::heard`]).
    links: Links,
    /// Where request streams go.
    requests: mpsc::Sender<Request>,
    stats: Arc<TransportStats>,
    max: usize,
    /// Tells a peer's connection from a client's (a dialled one is always
    /// a peer's while its key is installed).
    roles: Arc<Roles>,
}

impl Reader {
    /// The role of the other side of `conn`, now.
    fn role(&self, conn: &quinn::Connection) -> Role {
        self.roles.role_of(conn)
    }

    /// The keys' generation now (0 for fixed keys).
    fn generation(&self) -> u64 {
        self.roles.generation()
    }

    /// Checks `role` again if the keys changed since `seen`: a
    /// connection authenticated under a key that was removed since must
    /// not keep the rights it had (review of the rotation, finding 2).
    /// `false` once its certificate verifies under no installed key: the
    /// caller [revokes](Reader::revoke) the connection.
    fn recheck(&self, link: &Link, role: &mut Role, seen: &mut u64) -> bool {
        let now = self.generation();
        if now == *seen {
            return true;
        }
        *seen = now;
        *role = self.role(&link.conn);
        *role != Role::Nobody
    }

    /// Ends a connection whose certificate verifies under no installed key
    /// (counted). Nothing more that comes on it is read or served (the
    /// reader stops, and one-way messages still being read are dropped),
    /// and nothing more is sent on it (it leaves the table). This peer's
    /// own calls on it may be in flight, now that one connection per pair
    /// carries both sides' requests: they get [`REKEY_CLOSE_GRACE`] to
    /// finish before the close.
    ///
    /// `held` is the request that arrived on it, not served; it and every
    /// request that arrives until the close are refused with
    /// [`REQUEST_KEY_REMOVED`], which the other side's client sends again
    /// on a fresh connection. (Dropped, `held` used to end cleanly with no
    /// bytes, which the caller read as an empty answer and did not retry:
    /// issue 15, the cause of the five-peer rotation test's "no answer"
    /// failures.)
    fn revoke(&self, link: &Link, held: Option<(quinn::SendStream, quinn::RecvStream)>) {
        self.stats
            .connections_closed_rekeyed
            .fetch_add(1, Ordering::Relaxed);
        debug!(peer = %link.addr, "closing a connection whose key was removed");
        link.revoked.store(true, Ordering::Relaxed);
        self.links.remove_if(link.addr, &link.conn);
        let conn = link.conn.clone();
        if let Some((send, recv)) = held {
            refuse(send, recv, REQUEST_KEY_REMOVED);
        }
        tokio::spawn(async move {
            let refusing = async {
                while let Ok((send, recv)) = conn.accept_bi().await {
                    refuse(send, recv, REQUEST_KEY_REMOVED);
                }
            };
            let _ = tokio::time::timeout(REKEY_CLOSE_GRACE, refusing).await;
            conn.close(0u32.into(), KEY_REMOVED_REASON);
        });
    }

    /// A peer was heard on `conn`: see [`Links::heard`].
    fn heard(&self, addr: SocketAddr, from: Option<NodeId>, conn: &quinn::Connection) {
        if let Some(from) = from {
            self.links.heard(addr, from, conn);
        }
    }

    /// Gossip from a connection that is not a peer's is dropped unread
    /// and counted.
    fn gossip_allowed(&self, role: &Role, conn: &quinn::Connection) -> bool {
        let ok = role.is_peer();
        if !ok {
            self.stats
                .gossip_refused_role
                .fetch_add(1, Ordering::Relaxed);
            debug!(peer = %conn.remote_address(), "dropped gossip from a client credential");
        }
        ok
    }

    /// Reads one connection until it closes: datagrams and unidirectional
    /// streams into the inbox (from peers only), bidirectional streams
    /// (requests) to their owner, with the role of the sender.
    async fn read(self, conn: quinn::Connection) {
        let from = peer_node_id(&conn);
        let addr = conn.remote_address();
        let link = Link {
            conn: conn.clone(),
            addr,
            revoked: Arc::new(AtomicBool::new(false)),
        };
        // Verified once per connection (a peer's certificate never
        // expires) and again whenever the keyring changes; a client's
        // also on every request, which sees expiry.
        let mut seen = self.generation();
        let mut role = self.role(&conn);
        if role == Role::Nobody {
            // The key it was made under went between its handshake and
            // now (a dialled link is adopted a moment after).
            self.revoke(&link, None);
            return;
        }
        loop {
            tokio::select! {
                d = conn.read_datagram() => match d {
                    Ok(bytes) => {
                        if !self.recheck(&link, &mut role, &mut seen) {
                            self.revoke(&link, None);
                            break;
                        }
                        if !self.gossip_allowed(&role, &conn) {
                            continue;
                        }
                        self.heard(addr, from, &conn);
                        if self.inbox.try_send(Input::Datagram(bytes.to_vec())).is_err() {
                            self.stats.inbox_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => break,
                },
                s = conn.accept_uni() => match s {
                    Ok(mut recv) => {
                        if !self.recheck(&link, &mut role, &mut seen) {
                            self.revoke(&link, None);
                            break;
                        }
                        if !self.gossip_allowed(&role, &conn) {
                            let _ = recv.stop(0u32.into());
                            continue;
                        }
                        self.heard(addr, from, &conn);
                        let inbox = self.inbox.clone();
                        let stats = self.stats.clone();
                        let max = self.max;
                        let revoked = link.revoked.clone();
                        tokio::spawn(async move {
                            match recv.read_to_end(max).await {
                                Ok(_) if revoked.load(Ordering::Relaxed) => {
                                    debug!("dropped a stream message from a connection whose key was removed");
                                }
                                Ok(bytes) => {
                                    if inbox.try_send(Input::Stream(bytes)).is_err() {
                                        stats.inbox_dropped.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                Err(e) => debug!(err = %e, "dropped a stream message"),
                            }
                        });
                    }
                    Err(_) => break,
                },
                b = conn.accept_bi() => match b {
                    Ok((send, recv)) => {
                        if !self.recheck(&link, &mut role, &mut seen) {
                            self.revoke(&link, Some((send, recv)));
                            break;
                        }
                        let Some(from) = from else {
                            refuse(send, recv, REQUEST_NOT_SERVED);
                            continue;
                        };
                        let role = if role.is_peer() {
                            self.heard(addr, Some(from), &conn);
                            Role::Peer
                        } else {
                            self.role(&conn)
                        };
                        match self.requests.try_send(Request { from, role, addr, send, recv }) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(r)) => {
                                self.stats.rpc_refused_busy.fetch_add(1, Ordering::Relaxed);
                                refuse(r.send, r.recv, REQUEST_BUSY);
                            }
                            Err(mpsc::error::TrySendError::Closed(r)) => {
                                refuse(r.send, r.recv, REQUEST_NOT_SERVED);
                            }
                        }
                    }
                    Err(_) => break,
                },
            }
        }
    }
}

fn log_event(event: &Event, swim: &Swim<ChaCha8Rng>) {
    let name = |id: &NodeId| {
        swim.member(id)
            .map_or_else(|| id.short(), |m| m.meta.name.clone())
    };
    match event {
        Event::MemberJoined(id) => info!(peer = %name(id), "member joined"),
        Event::MemberSuspected(id) => info!(peer = %name(id), "member suspected"),
        Event::MemberRecovered(id) => info!(peer = %name(id), "member refuted its suspicion"),
        Event::MemberDead(id) => warn!(peer = %name(id), "member declared dead"),
        Event::MemberLeft(id) => info!(peer = %name(id), "member left"),
        Event::MetaChanged(id) => info!(peer = %name(id), "member metadata changed"),
        Event::MemberReaped(id) => debug!(peer = %id.short(), "member forgotten"),
        Event::JoinedCluster => info!("joined the cluster"),
        Event::IncarnationChanged(inc) => debug!(incarnation = inc, "incarnation raised"),
    }
}
