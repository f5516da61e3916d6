//! Connections to other peers for replica requests, pooled per address on
//! this peer's own QUIC endpoint. A request that fails on a pooled
//! connection is retried once on a fresh one (the peer may have restarted).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use ringkv_gossip::transport::tls::SERVER_NAME;

use crate::rpc::api::{Request, REPLY_MAX};
use crate::rpc::codec;

/// Why a request to a replica failed.
#[derive(Debug)]
pub(crate) enum PeerError {
    /// No connection could be made: the request was never sent.
    Unreachable(anyhow::Error),
    /// Sent, but no answer came: it may or may not have been applied.
    Unknown(anyhow::Error),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "unreachable: {e:#}"),
            Self::Unknown(e) => write!(f, "no answer: {e:#}"),
        }
    }
}

/// The pool.
#[derive(Debug)]
pub(crate) struct Peers {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    conns: Mutex<HashMap<SocketAddr, quinn::Connection>>,
    timeout: Duration,
    /// The gossip runner, which reads every connection on the endpoint.
    runner: tokio::sync::mpsc::Sender<ringkv_gossip::runner::Command>,
}

impl Peers {
    pub(crate) fn new(
        endpoint: quinn::Endpoint,
        config: quinn::ClientConfig,
        timeout: Duration,
        runner: tokio::sync::mpsc::Sender<ringkv_gossip::runner::Command>,
    ) -> Self {
        Self {
            endpoint,
            config,
            conns: Mutex::new(HashMap::new()),
            timeout,
            runner,
        }
    }

    async fn connection(&self, addr: SocketAddr, fresh: bool) -> Result<quinn::Connection> {
        if !fresh {
            let pooled = self.conns.lock().expect("pool lock").get(&addr).cloned();
            if let Some(conn) = pooled.filter(|c| c.close_reason().is_none()) {
                return Ok(conn);
            }
        }
        let connecting = self
            .endpoint
            .connect_with(self.config.clone(), addr, SERVER_NAME)?;
        let conn = tokio::time::timeout(self.timeout, connecting)
            .await
            .context("connect timed out")??;
        self.conns
            .lock()
            .expect("pool lock")
            .insert(addr, conn.clone());
        // The peer may send gossip back on this connection: have it read.
        let _ = self
            .runner
            .try_send(ringkv_gossip::runner::Command::Adopt(conn.clone()));
        Ok(conn)
    }

    /// Drops the pooled connection to `addr`, if any. It is not closed:
    /// the gossip runner may carry its traffic on the same connection, and
    /// an unused connection ends by itself at its idle timeout.
    pub(crate) fn forget(&self, addr: SocketAddr) {
        self.conns.lock().expect("pool lock").remove(&addr);
    }

    /// Sends `req` to the peer at `addr` and returns its raw answer.
    pub(crate) async fn request(
        &self,
        addr: SocketAddr,
        req: &Request,
    ) -> Result<Vec<u8>, PeerError> {
        self.request_within(addr, req, self.timeout).await
    }

    /// [`request`](Self::request) with its own timeout (range scans take
    /// longer than single-key requests).
    pub(crate) async fn request_within(
        &self,
        addr: SocketAddr,
        req: &Request,
        timeout: Duration,
    ) -> Result<Vec<u8>, PeerError> {
        let body = codec::encode(req);
        let mut last = None;
        for fresh in [false, true] {
            let conn = match self.connection(addr, fresh).await {
                Ok(conn) => conn,
                Err(e) => return Err(PeerError::Unreachable(e)),
            };
            let mut sent = false;
            let exchange = async {
                let (mut send, mut recv) = conn.open_bi().await?;
                sent = true;
                send.write_all(&body).await?;
                send.finish()?;
                Ok::<_, anyhow::Error>(recv.read_to_end(REPLY_MAX).await?)
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(Ok(bytes)) => return Ok(bytes),
                Ok(Err(e)) => {
                    self.conns.lock().expect("pool lock").remove(&addr);
                    if sent {
                        // The request may have been applied: do not resend
                        // and do not call it unreachable.
                        return Err(PeerError::Unknown(e));
                    }
                    // A dead pooled connection: retry once on a fresh one.
                    last = Some(e);
                }
                Err(_) => {
                    // The connection may lead to a process that died: the
                    // next request dials afresh.
                    self.forget(addr);
                    return Err(PeerError::Unknown(anyhow!("no answer within {timeout:?}")));
                }
            }
        }
        Err(PeerError::Unknown(
            last.unwrap_or_else(|| anyhow!("failed")),
        ))
    }
}
