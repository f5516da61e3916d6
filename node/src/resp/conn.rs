//! One RESP connection: a reader decodes requests in order and a writer
//! sends replies in the same order (see the [module](super) docs), with
//! the per-connection defences of [`guard`](super::guard): before AUTH
//! only small requests and [`ClientLimits::auth_timeout`] to authenticate;
//! the idle timeout; the output buffer limit ([`Outbox`]). Does IO (TCP).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, instrument};

use crate::rpc::api::Consistency;

use super::commands::{dispatch, Step};
use super::guard::{ClientLimits, Outbox, Reason};
use super::parse::{Decoder, Limits, Proto, Reply};
use super::store::StoreOp;
use super::{Server, Session, KEYS_TRACKED_MAX, PIPELINE_MAX, REQUEST_TIMEOUT, WRITE_CHUNK};

/// A reply in the making, in request order, encoded.
enum Slot {
    /// Counted in the [`Outbox`].
    Ready(Vec<u8>),
    /// Counted in the [`Outbox`] once the task finishes.
    Pending(Proto, JoinHandle<Vec<u8>>),
    /// Send everything before, then close.
    Close,
}

/// What a connection's reader, writer and store tasks share.
struct Conn {
    peer: SocketAddr,
    server: Arc<Server>,
    outbox: Outbox,
}

impl Conn {
    /// Encodes `reply` and counts it as unread; on going over the output
    /// buffer limit, counts the rejection (the outbox closes the
    /// connection).
    fn encode(&self, proto: Proto, reply: &Reply) -> Vec<u8> {
        let mut out = Vec::new();
        if self.outbox.is_closed() {
            // Nobody will send it.
            return out;
        }
        reply.encode(proto, &mut out);
        if self.outbox.overflowed_by(out.len()) {
            self.server.reject(
                Reason::OutputBuffer,
                format_args!(
                    "{} does not read its replies: {} bytes unread, over the output buffer limit of {}",
                    self.peer,
                    self.outbox.pending(),
                    self.server.limits.output_max
                ),
            );
        }
        out
    }
}

#[instrument(skip(stream, server), fields(peer = %peer))]
pub(super) async fn connection(stream: TcpStream, peer: SocketAddr, server: &Arc<Server>) {
    let (reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::channel(PIPELINE_MAX);
    let conn = Arc::new(Conn {
        peer,
        server: server.clone(),
        outbox: Outbox::new(server.limits.output_max),
    });
    let mut writing = tokio::spawn(write_replies(writer, rx, conn.clone()));
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
    read_requests(reader, tx, session, &conn).await;
    // The replies still due are sent, but a client that stopped sending
    // and does not read them either is not waited for beyond the idle
    // timeout (or twice the longest command).
    let linger = server
        .limits
        .idle_timeout
        .unwrap_or(2 * REQUEST_TIMEOUT)
        .max(REQUEST_TIMEOUT);
    if tokio::time::timeout(linger, &mut writing).await.is_err() {
        conn.outbox.close();
        let _ = writing.await;
    }
    debug!("RESP connection closed");
}

/// The deadline of the next read, and the reason to give when it passes:
/// the authentication deadline while the client must still AUTH, else
/// the idle timeout from now.
fn read_deadline(
    limits: &ClientLimits,
    needs_auth: bool,
    accepted: tokio::time::Instant,
) -> Option<(tokio::time::Instant, Reason)> {
    if needs_auth {
        Some((accepted + limits.auth_timeout(), Reason::AuthTimeout))
    } else {
        limits
            .idle_timeout
            .map(|idle| (tokio::time::Instant::now() + idle, Reason::IdleTimeout))
    }
}

async fn read_requests(
    mut reader: OwnedReadHalf,
    tx: mpsc::Sender<Slot>,
    mut session: Session,
    conn: &Arc<Conn>,
) {
    let server = &conn.server;
    let accepted = tokio::time::Instant::now();
    let mut decoder = Decoder::new(if server.needs_auth(&session) {
        Limits::unauthenticated()
    } else {
        Limits::for_values(server.kv.value_max)
    });
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut in_flight = InFlight::new();
    loop {
        if !decode_and_start(
            &mut decoder,
            &mut buf,
            &mut session,
            &mut in_flight,
            &tx,
            conn,
        )
        .await
        {
            return;
        }
        buf.reserve(16 * 1024);
        let deadline = read_deadline(&server.limits, server.needs_auth(&session), accepted);
        let read = async {
            match deadline {
                Some((at, _)) => tokio::time::timeout_at(at, reader.read_buf(&mut buf)).await,
                None => Ok(reader.read_buf(&mut buf).await),
            }
        };
        let read = tokio::select! {
            read = read => read,
            () = conn.outbox.closed() => return,
        };
        match read {
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_elapsed) => {
                let reason = deadline.map_or(Reason::IdleTimeout, |(_, r)| r);
                server.reject(
                    reason,
                    format_args!(
                        "{} {}",
                        conn.peer,
                        if reason == Reason::AuthTimeout {
                            "did not authenticate in time"
                        } else {
                            "was idle for the idle timeout"
                        }
                    ),
                );
                // Like Redis: closed without a reply; what was still
                // unsent is dropped.
                conn.outbox.close();
                return;
            }
        }
    }
}

/// Decodes and starts every complete request in `buf`. False once the
/// connection is to close (the reply saying why is queued).
async fn decode_and_start(
    decoder: &mut Decoder,
    buf: &mut BytesMut,
    session: &mut Session,
    in_flight: &mut InFlight,
    tx: &mpsc::Sender<Slot>,
    conn: &Arc<Conn>,
) -> bool {
    let server = &conn.server;
    // Counted per read, not per command: the metrics registry is a map
    // lookup.
    let mut commands = 0u64;
    let open = loop {
        let args = match decoder.decode(buf) {
            Ok(Some(args)) => args,
            Ok(None) => break true,
            Err(e) => {
                if e.is_unauthenticated() {
                    server.reject(
                        Reason::Unauthenticated,
                        format_args!("{} before AUTH: {e}", conn.peer),
                    );
                } else {
                    metrics::counter!("ringkv_resp_protocol_errors_total").increment(1);
                    server.reject(
                        Reason::ProtocolError,
                        format_args!("{} broke the protocol: {e}", conn.peer),
                    );
                }
                let _ = tx
                    .send(Slot::Ready(conn.encode(session.proto, &Reply::err(&e))))
                    .await;
                let _ = tx.send(Slot::Close).await;
                break false;
            }
        };
        server.commands_total.fetch_add(1, Ordering::Relaxed);
        commands += 1;
        let slot = match dispatch(args, session, server) {
            Step::Now(reply) => Slot::Ready(conn.encode(session.proto, &reply)),
            Step::Quit => {
                let _ = tx
                    .send(Slot::Ready(conn.encode(session.proto, &Reply::ok())))
                    .await;
                let _ = tx.send(Slot::Close).await;
                break false;
            }
            Step::Store(op) => {
                if in_flight.conflicts(&op) {
                    in_flight.drain().await;
                }
                let done = in_flight.start(&op);
                let task = run_store(op, conn.clone(), session.proto, session.consistency, done);
                Slot::Pending(session.proto, tokio::spawn(task))
            }
        };
        if tx.send(slot).await.is_err() || conn.outbox.is_closed() {
            break false;
        }
        // Requests after AUTH get the full limits, those before it (in
        // the same read) the small ones.
        if decoder.limits().unauthenticated && !server.needs_auth(session) {
            decoder.set_limits(Limits::for_values(server.kv.value_max));
        }
    };
    if commands > 0 {
        metrics::counter!("ringkv_resp_commands_total").increment(commands);
    }
    open
}

/// Runs one store command within the timeout (the command takes one of
/// the server's key slots per key as it goes), and encodes its reply.
async fn run_store(
    op: StoreOp,
    conn: Arc<Conn>,
    proto: Proto,
    consistency: Consistency,
    _done: mpsc::Sender<()>,
) -> Vec<u8> {
    let server = &conn.server;
    if conn.outbox.is_closed() {
        // The connection was closed (a client that does not read its
        // replies): the commands it left queued are not run.
        return Vec::new();
    }
    // A read of a closed connection is dropped where it is (waiting for
    // slots or in the coordinator: nothing to undo); a write runs to its
    // end, so it is not left half-applied.
    let read_only = op.writes().is_empty();
    let run = op.run(server.kv.clone(), consistency, &server.store_slots);
    let run = async {
        if read_only {
            tokio::select! {
                reply = run => Some(reply),
                () = conn.outbox.closed() => None,
            }
        } else {
            Some(run.await)
        }
    };
    let reply = match tokio::time::timeout(REQUEST_TIMEOUT, run).await {
        Ok(None) => return Vec::new(),
        Ok(Some(reply)) => reply,
        Err(_) => Reply::err(format!(
            "the request timed out after {}s on the coordinator; it may or may not have been applied",
            REQUEST_TIMEOUT.as_secs()
        )),
    };
    conn.encode(proto, &reply)
}

async fn write_replies(writer: OwnedWriteHalf, rx: mpsc::Receiver<Slot>, conn: Arc<Conn>) {
    // Closing the outbox (the output buffer limit, a timeout) stops the
    // writer even in the middle of a write a client does not read.
    tokio::select! {
        () = write_loop(writer, rx, &conn.outbox) => {}
        () = conn.outbox.closed() => {}
    }
}

async fn write_loop(mut writer: OwnedWriteHalf, mut rx: mpsc::Receiver<Slot>, outbox: &Outbox) {
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
            Slot::Ready(bytes) => {
                outbox.taken(bytes.len());
                out.extend_from_slice(&bytes);
            }
            Slot::Pending(proto, task) => {
                if !task.is_finished() && !out.is_empty() {
                    if writer.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
                match task.await {
                    Ok(bytes) => {
                        outbox.taken(bytes.len());
                        out.extend_from_slice(&bytes);
                    }
                    Err(e) => {
                        Reply::err(format!("the request failed: {e}")).encode(proto, &mut out)
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::super::store;
    use super::*;

    fn op(name: &str, args: &[&str]) -> StoreOp {
        let mut all = vec![name.as_bytes().to_vec()];
        all.extend(args.iter().map(|a| a.as_bytes().to_vec()));
        store::store_op(&name.to_ascii_lowercase(), all, 1_000).expect("a store command")
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
}
