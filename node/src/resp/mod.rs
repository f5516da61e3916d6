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
//! Bounds: [`ClientLimits`] (connections, below the file-descriptor
//! limit; the idle timeout; the output buffer limit), [`PIPELINE_MAX`]
//! replies pending per connection (the reader stops reading beyond),
//! requests bounded by [`parse::Limits`] (much smaller before AUTH), each
//! store command at most [`REQUEST_TIMEOUT`], and [`STORE_KEYS_MAX`] keys
//! in the coordinator at once; see [`guard`].

mod args;
mod commands;
mod conn;
pub(crate) mod glob;
pub(crate) mod guard;
mod info;
pub(crate) mod parse;
mod session;
mod store;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::rpc::api::Consistency;
use crate::shared::Kv;
pub(crate) use guard::ClientLimits;
use guard::{Reason, Rejections};
use parse::{Proto, Reply};
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
    /// The client limits as configured (`--resp-max-clients`,
    /// `--resp-timeout`, `--resp-output-limit`); the client limit is
    /// lowered below the file-descriptor limit when served.
    pub(crate) limits: ClientLimits,
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
    /// The limits in force (the client limit below the descriptors).
    limits: ClientLimits,
    rejections: Rejections,
}

impl Server {
    /// This peer's wall clock, in milliseconds.
    pub(crate) fn wall_ms(&self) -> u64 {
        self.kv.wall_ms()
    }

    /// Whether `session` must authenticate before anything else.
    fn needs_auth(&self, session: &Session) -> bool {
        self.config.password.is_some() && !session.authenticated
    }

    /// Counts a refused client or request (and logs it, throttled).
    fn reject(&self, reason: Reason, detail: std::fmt::Arguments<'_>) {
        self.rejections.record(reason, detail);
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

/// The RESP server on `listener`: its address, and the accept loop for
/// the daemon to run among its tasks (stopping it ends the loop).
pub(crate) fn serve(
    listener: TcpListener,
    kv: Arc<Kv>,
    config: RespConfig,
) -> Result<(
    SocketAddr,
    impl std::future::Future<Output = ()> + Send + 'static,
)> {
    let addr = listener.local_addr()?;
    let fds = guard::fd_limit();
    let max_clients =
        guard::max_clients(config.limits.max_clients, fds).map_err(anyhow::Error::msg)?;
    if max_clients < config.limits.max_clients {
        warn!(
            configured = config.limits.max_clients,
            fd_limit = fds,
            reserved = guard::FD_RESERVE,
            max_clients,
            "RESP client limit lowered to fit the file-descriptor limit (raise ulimit -n for more)"
        );
    }
    let limits = ClientLimits {
        max_clients,
        ..config.limits
    };
    info!(
        max_clients,
        fd_limit = fds,
        idle_timeout_s = limits.idle_timeout.map_or(0, |d| d.as_secs()),
        output_limit = limits.output_max,
        "RESP client limits"
    );
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
        limits,
        rejections: Rejections::new(guard::LOG_INTERVAL),
    });
    Ok((addr, accept(listener, server)))
}

async fn accept(listener: TcpListener, server: Arc<Server>) {
    let slots = Arc::new(Semaphore::new(server.limits.max_clients));
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
            server.reject(
                Reason::MaxClients,
                format_args!(
                    "{peer}: max number of clients reached ({})",
                    server.limits.max_clients
                ),
            );
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
            conn::connection(stream, peer, &server).await;
            server.clients.fetch_sub(1, Ordering::Relaxed);
        });
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
            limits: ClientLimits::default(),
        }
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
