//! The Redis front door: a RESP2/RESP3 server on each peer (`ringkv node
//! --resp ADDR`). Any peer takes any key and coordinates it through the
//! same quorum path as the native client ([`Kv`]), so there are no MOVED
//! redirects. Does IO (TCP).
//!
//! One connection: a reader decodes requests in order and a writer sends
//! replies in the same order. Connection commands (AUTH, HELLO, SELECT,
//! CLIENT ...) are answered by the reader at once, so they take effect for
//! the requests after them. Store commands run as tasks of their own, so
//! a pipeline's independent commands overlap; a command that touches a key
//! an earlier command of the same pipeline writes (or writes a key an
//! earlier one reads) first waits for those earlier commands to finish,
//! so a pipelined `SET k v; GET k` reads `v`. The writer awaits each
//! reply in turn, so replies come back in request order.
//!
//! Bounds: [`CLIENTS_MAX`] connections, [`PIPELINE_MAX`] replies pending
//! per connection (the reader stops reading beyond), requests bounded by
//! [`parse::Limits`], each store command at most [`REQUEST_TIMEOUT`].

mod commands;
mod info;
mod parse;
mod session;
mod store;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, instrument, warn};

use crate::rpc::api::Consistency;
use crate::shared::Kv;
use commands::{dispatch, Step};
use parse::{Decoder, Limits, Proto, Reply};
use store::StoreOp;

/// Most connections served at once (Redis's default `maxclients`).
pub(crate) const CLIENTS_MAX: usize = 10_000;
/// Most replies a connection may have pending (sent but not answered)
/// before its reader waits: bounds the tasks and memory one pipelining
/// client can hold.
const PIPELINE_MAX: usize = 1024;
/// Most keys this peer's RESP connections have in the coordinator at
/// once (a command holds one slot per key). Beyond, commands wait here
/// rather than pile up as replica requests: a peer connection carries at
/// most 256 concurrent streams, and requests queued behind them for longer
/// than the replica timeout (2 s) fail as "no answer" and re-dial.
const STORE_KEYS_MAX: usize = 128;
/// Longest a store command may take (as for the native protocol).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most keys a connection tracks for its commands in flight; beyond, the
/// next store command waits for them all instead.
const KEYS_TRACKED_MAX: usize = 65_536;
/// Replies are written once this much is buffered, or when no more are
/// ready.
const WRITE_CHUNK: usize = 64 * 1024;

/// How the RESP server is set up (`--resp`, `--resp-password`,
/// `--resp-consistency`).
#[derive(Debug, Clone)]
pub(crate) struct RespConfig {
    /// Where to listen.
    pub(crate) listen: SocketAddr,
    /// Required by AUTH when set. A non-loopback `listen` needs one.
    pub(crate) password: Option<String>,
    /// Each connection's consistency until it sends CLIENT CONSISTENCY.
    pub(crate) consistency: Consistency,
}

impl RespConfig {
    /// Refuses a server anyone on the network could use without a
    /// password.
    ///
    /// # Errors
    /// A non-loopback address without a password, or an empty password.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.password.as_deref() == Some("") {
            bail!("--resp-password is empty: give a real password, or none for a loopback --resp");
        }
        if !self.listen.ip().is_loopback() && self.password.is_none() {
            bail!(
                "--resp {} is reachable from other machines but has no password: pass --resp-password (or resp_password in the config file), or bind --resp to 127.0.0.1",
                self.listen
            );
        }
        Ok(())
    }
}

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Server {
    kv: Arc<Kv>,
    config: RespConfig,
    /// The bound address.
    addr: SocketAddr,
    started: Instant,
    next_id: AtomicU64,
    clients: AtomicUsize,
    connections_total: AtomicU64,
    commands_total: AtomicU64,
    rejected_total: AtomicU64,
    /// [`STORE_KEYS_MAX`] slots.
    store_slots: Arc<Semaphore>,
}

impl Server {
    /// Whether `session` must authenticate before anything else.
    fn needs_auth(&self, session: &Session) -> bool {
        self.config.password.is_some() && !session.authenticated
    }
}

/// One connection's state.
#[derive(Debug)]
pub(crate) struct Session {
    id: u64,
    peer: SocketAddr,
    name: Option<String>,
    lib_name: Option<String>,
    lib_ver: Option<String>,
    proto: Proto,
    authenticated: bool,
    consistency: Consistency,
    started: Instant,
}

impl Session {
    /// CLIENT SETNAME's rule: no spaces, newlines or special characters.
    fn set_name(&mut self, name: &[u8]) -> Result<(), Reply> {
        if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
            return Err(Reply::err(
                "Client names cannot contain spaces, newlines or special characters.",
            ));
        }
        let name = String::from_utf8_lossy(name).into_owned();
        self.name = (!name.is_empty()).then_some(name);
        Ok(())
    }

    /// One line in the format of CLIENT INFO.
    fn describe(&self) -> String {
        format!(
            "id={} addr={} name={} age={} db=0 resp={} lib-name={} lib-ver={} consistency={}",
            self.id,
            self.peer,
            self.name.as_deref().unwrap_or(""),
            self.started.elapsed().as_secs(),
            if self.proto == Proto::Resp3 { 3 } else { 2 },
            self.lib_name.as_deref().unwrap_or(""),
            self.lib_ver.as_deref().unwrap_or(""),
            session::consistency_name(self.consistency),
        )
    }
}

/// `--resp`'s value: `HOST:PORT`, or a bare port meaning 127.0.0.1.
///
/// # Errors
/// Neither a port nor an address, as text for clap.
pub(crate) fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().map_err(|_| {
        format!("{text:?} is neither a port (6379, on 127.0.0.1) nor an address (127.0.0.1:6379)")
    })
}

/// Binds the RESP listener.
///
/// # Errors
/// An invalid configuration (see [`RespConfig::validate`]) or an address
/// that cannot be bound, with a message naming it.
pub(crate) async fn bind(config: &RespConfig) -> Result<TcpListener> {
    config.validate()?;
    TcpListener::bind(config.listen)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
                "cannot serve RESP on {}: the address is in use (a Redis server?)",
                config.listen
            ),
            _ => anyhow::anyhow!("cannot serve RESP on {}: {e}", config.listen),
        })
}

/// Serves RESP on `listener` until the process ends.
pub(crate) fn spawn(listener: TcpListener, kv: Arc<Kv>, config: RespConfig) -> Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let server = Arc::new(Server {
        kv,
        config,
        addr,
        started: Instant::now(),
        next_id: AtomicU64::new(1),
        clients: AtomicUsize::new(0),
        connections_total: AtomicU64::new(0),
        commands_total: AtomicU64::new(0),
        rejected_total: AtomicU64::new(0),
        store_slots: Arc::new(Semaphore::new(STORE_KEYS_MAX)),
    });
    tokio::spawn(accept(listener, server));
    Ok(addr)
}

async fn accept(listener: TcpListener, server: Arc<Server>) {
    let slots = Arc::new(Semaphore::new(CLIENTS_MAX));
    info!(addr = %server.addr, "serving RESP");
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait, go on.
                warn!(err = %e, "cannot accept a RESP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        server.connections_total.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ringkv_resp_connections_total").increment(1);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            server.rejected_total.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("ringkv_resp_rejected_connections_total").increment(1);
            tokio::spawn(async move {
                let _ = stream
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        tokio::spawn(async move {
            let _permit = permit;
            server.clients.fetch_add(1, Ordering::Relaxed);
            connection(stream, peer, &server).await;
            server.clients.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// A reply in the making, in request order.
enum Slot {
    Ready(Proto, Reply),
    Pending(Proto, JoinHandle<Reply>),
    /// Send everything before, then close.
    Close,
}

#[instrument(skip(stream, server), fields(peer = %peer))]
async fn connection(stream: TcpStream, peer: SocketAddr, server: &Arc<Server>) {
    let (reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::channel(PIPELINE_MAX);
    let writing = tokio::spawn(write_replies(writer, rx));
    let session = Session {
        id: server.next_id.fetch_add(1, Ordering::Relaxed),
        peer,
        name: None,
        lib_name: None,
        lib_ver: None,
        proto: Proto::Resp2,
        authenticated: false,
        consistency: server.config.consistency,
        started: Instant::now(),
    };
    read_requests(reader, tx, session, server).await;
    let _ = writing.await;
    debug!("RESP connection closed");
}

/// Store commands started and not known to be finished, with the keys
/// they read and write; a command that conflicts with one of them waits
/// for all of them first.
struct InFlight {
    reads: HashSet<Vec<u8>>,
    writes: HashSet<Vec<u8>>,
    /// Each running command holds a clone; all dropped means all done.
    done_tx: mpsc::Sender<()>,
    done_rx: mpsc::Receiver<()>,
}

impl InFlight {
    fn new() -> Self {
        let (done_tx, done_rx) = mpsc::channel(1);
        Self {
            reads: HashSet::new(),
            writes: HashSet::new(),
            done_tx,
            done_rx,
        }
    }

    /// Whether `op` must wait for the commands in flight. Forgets their
    /// keys first if they have all finished, so a long pipeline of
    /// distinct keys neither grows these sets nor waits for nothing.
    fn conflicts(&mut self, op: &StoreOp) -> bool {
        if self.done_tx.strong_count() == 1 {
            self.reads.clear();
            self.writes.clear();
        }
        if self.reads.len() + self.writes.len() > KEYS_TRACKED_MAX {
            return true;
        }
        op.writes()
            .iter()
            .any(|k| self.writes.contains(*k) || self.reads.contains(*k))
            || op.reads().iter().any(|k| self.writes.contains(*k))
    }

    /// Waits until every command started so far has finished.
    async fn drain(&mut self) {
        let fresh = Self::new();
        let mut old = std::mem::replace(self, fresh);
        drop(old.done_tx);
        while old.done_rx.recv().await.is_some() {}
    }

    fn start(&mut self, op: &StoreOp) -> mpsc::Sender<()> {
        self.reads
            .extend(op.reads().into_iter().map(<[u8]>::to_vec));
        self.writes
            .extend(op.writes().into_iter().map(<[u8]>::to_vec));
        self.done_tx.clone()
    }
}

async fn read_requests(
    mut reader: OwnedReadHalf,
    tx: mpsc::Sender<Slot>,
    mut session: Session,
    server: &Arc<Server>,
) {
    let mut decoder = Decoder::new(Limits::for_values(server.kv.value_max));
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut in_flight = InFlight::new();
    loop {
        // Counted per read, not per command: the metrics registry is a
        // map lookup.
        let mut commands = 0u64;
        loop {
            let args = match decoder.decode(&mut buf) {
                Ok(Some(args)) => args,
                Ok(None) => break,
                Err(e) => {
                    metrics::counter!("ringkv_resp_protocol_errors_total").increment(1);
                    count_commands(commands);
                    warn!(err = %e, "closing a RESP connection");
                    let _ = tx.send(Slot::Ready(session.proto, Reply::err(&e))).await;
                    let _ = tx.send(Slot::Close).await;
                    return;
                }
            };
            server.commands_total.fetch_add(1, Ordering::Relaxed);
            commands += 1;
            let slot = match dispatch(args, &mut session, server) {
                Step::Now(reply) => Slot::Ready(session.proto, reply),
                Step::Quit => {
                    count_commands(commands);
                    let _ = tx.send(Slot::Ready(session.proto, Reply::ok())).await;
                    let _ = tx.send(Slot::Close).await;
                    return;
                }
                Step::Store(op) => {
                    if in_flight.conflicts(&op) {
                        in_flight.drain().await;
                    }
                    let done = in_flight.start(&op);
                    Slot::Pending(
                        session.proto,
                        tokio::spawn(run_store(op, server.clone(), session.consistency, done)),
                    )
                }
            };
            if tx.send(slot).await.is_err() {
                count_commands(commands);
                return;
            }
        }
        count_commands(commands);
        buf.reserve(16 * 1024);
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn count_commands(n: u64) {
    if n > 0 {
        metrics::counter!("ringkv_resp_commands_total").increment(n);
    }
}

/// Runs one store command once it has its slots, within the timeout.
async fn run_store(
    op: StoreOp,
    server: Arc<Server>,
    consistency: Consistency,
    _done: mpsc::Sender<()>,
) -> Reply {
    let slots = u32::try_from(op.keys().min(STORE_KEYS_MAX)).expect("at most STORE_KEYS_MAX");
    let run = async {
        let Ok(_slots) = server.store_slots.acquire_many(slots).await else {
            return Reply::err("the RESP server is shutting down");
        };
        op.run(server.kv.clone(), consistency).await
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, run).await {
        Ok(reply) => reply,
        Err(_) => Reply::err(format!(
            "the request timed out after {}s on the coordinator; it may or may not have been applied",
            REQUEST_TIMEOUT.as_secs()
        )),
    }
}

async fn write_replies(mut writer: OwnedWriteHalf, mut rx: mpsc::Receiver<Slot>) {
    let mut out = Vec::with_capacity(WRITE_CHUNK);
    loop {
        // Take what is ready without waiting; flush before waiting.
        let slot = match rx.try_recv() {
            Ok(slot) => slot,
            Err(_) => {
                if !out.is_empty() && writer.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
                match rx.recv().await {
                    Some(slot) => slot,
                    None => return,
                }
            }
        };
        match slot {
            Slot::Ready(proto, reply) => reply.encode(proto, &mut out),
            Slot::Pending(proto, task) => {
                if !task.is_finished() && !out.is_empty() {
                    if writer.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
                let reply = task
                    .await
                    .unwrap_or_else(|e| Reply::err(format!("the request failed: {e}")));
                reply.encode(proto, &mut out);
            }
            Slot::Close => {
                let _ = writer.write_all(&out).await;
                let _ = writer.shutdown().await;
                return;
            }
        }
        if out.len() >= WRITE_CHUNK {
            if writer.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listen: &str, password: Option<&str>) -> RespConfig {
        RespConfig {
            listen: parse_listen(listen).unwrap(),
            password: password.map(str::to_owned),
            consistency: Consistency::Quorum,
        }
    }

    fn op(name: &str, args: &[&str]) -> StoreOp {
        let mut all = vec![name.as_bytes().to_vec()];
        all.extend(args.iter().map(|a| a.as_bytes().to_vec()));
        store::store_op(&name.to_ascii_lowercase(), all).expect("a store command")
    }

    #[tokio::test]
    async fn a_pipelined_command_waits_only_for_conflicting_keys() {
        let mut in_flight = InFlight::new();
        let set_a = op("SET", &["a", "1"]);
        assert!(!in_flight.conflicts(&set_a));
        let running = in_flight.start(&set_a);
        // Reading or writing what a running command writes must wait;
        // other keys need not.
        assert!(in_flight.conflicts(&op("GET", &["a"])));
        assert!(in_flight.conflicts(&op("MSET", &["b", "1", "a", "2"])));
        assert!(!in_flight.conflicts(&op("GET", &["b"])));
        let reading_b = in_flight.start(&op("GET", &["b"]));
        assert!(in_flight.conflicts(&op("DEL", &["b"])));
        assert!(!in_flight.conflicts(&op("MGET", &["b", "c"])));
        // Once both finished, their keys are forgotten.
        drop((running, reading_b));
        assert!(!in_flight.conflicts(&op("GET", &["a"])));
        assert!(in_flight.reads.is_empty() && in_flight.writes.is_empty());
        // drain returns at once when nothing runs, and after the running
        // command when one does.
        let still = in_flight.start(&op("SET", &["a", "3"]));
        let waiter = tokio::spawn(async move {
            in_flight.drain().await;
            in_flight
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "drain waits for the running command");
        drop(still);
        let mut in_flight = waiter.await.unwrap();
        assert!(!in_flight.conflicts(&op("GET", &["a"])));
    }

    #[test]
    fn a_bare_port_means_loopback() {
        assert_eq!(
            parse_listen("6379").unwrap(),
            "127.0.0.1:6379".parse().unwrap()
        );
        assert_eq!(parse_listen("[::1]:7").unwrap(), "[::1]:7".parse().unwrap());
        assert!(parse_listen("localhost").is_err());
    }

    #[test]
    fn only_loopback_goes_without_a_password() {
        assert!(config("127.0.0.1:0", None).validate().is_ok());
        assert!(config("[::1]:0", None).validate().is_ok());
        let refused = config("0.0.0.0:6379", None).validate().unwrap_err();
        assert!(refused.to_string().contains("has no password"), "{refused}");
        assert!(config("0.0.0.0:6379", Some("pw")).validate().is_ok());
        assert!(config("127.0.0.1:0", Some("")).validate().is_err());
    }
}
