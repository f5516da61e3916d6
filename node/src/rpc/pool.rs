//! Connections to other peers for replica requests: the one
//! [`Client`](crate::rpc::client::Client) on this peer's own QUIC endpoint,
//! with a default timeout. It shares the gossip runner's connection to
//! each peer ([`Links`]): one connection per pair of peers, whichever side
//! dialled it. One it dials goes into that table and to the runner, which
//! reads what the other side sends on it (gossip, and requests). A request
//! that fails on a cached connection before it was sent is retried once on
//! a fresh one (the peer may have restarted).

use std::net::SocketAddr;
use std::time::Duration;

use ringkv_gossip::links::Links;

use crate::rpc::api::Request;
use crate::rpc::client::Client;
pub(crate) use crate::rpc::client::PeerError;

/// The pool.
#[derive(Debug)]
pub(crate) struct Peers {
    client: Client,
    timeout: Duration,
}

impl Peers {
    /// `view` says which member lives at which address: a connection must
    /// present the certificate of a member there (issue 14, item 3).
    pub(crate) fn new(
        endpoint: quinn::Endpoint,
        config: quinn::ClientConfig,
        timeout: Duration,
        runner: tokio::sync::mpsc::Sender<ringkv_gossip::runner::Command>,
        view: tokio::sync::watch::Receiver<std::sync::Arc<ringkv_gossip::runner::View>>,
        links: Links,
    ) -> Self {
        let members = view.clone();
        let client = Client::new(endpoint, config)
            .share(links, move |addr, conn| {
                // The member this connection's certificate names, at
                // that address (not any member ever seen there: an
                // older build may have taken a dead member's address).
                let id = ringkv_gossip::transport::tls::peer_node_id(conn);
                members.borrow().members.iter().any(|m| {
                    Some(m.id) == id
                        && m.meta.addr == addr
                        && ringkv_gossip::links::serves_both_ways(&m.meta)
                })
            })
            .on_connect(move |conn| {
                // The peer may send gossip and requests on this shared
                // connection: have it read. Never dropped: a link
                // nobody reads would leave its requests unanswered.
                let adopt = ringkv_gossip::runner::Command::Adopt(conn.clone());
                if let Err(tokio::sync::mpsc::error::TrySendError::Full(adopt)) =
                    runner.try_send(adopt)
                {
                    let runner = runner.clone();
                    tokio::spawn(async move {
                        let _ = runner.send(adopt).await;
                    });
                }
            })
            .expect_peer(move |addr| {
                view.borrow()
                    .members
                    .iter()
                    .filter(|m| m.meta.addr == addr)
                    .map(|m| m.id)
                    .collect()
            });
        Self { client, timeout }
    }

    /// Drops the pooled connection to `addr`, if any (see
    /// [`Client::forget`]).
    pub(crate) fn forget(&self, addr: SocketAddr) {
        self.client.forget(addr);
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
        // Dialling has the default timeout of its own, as the exchange
        // has `timeout`: a slow handshake does not eat a request's time.
        self.client.connect(addr, self.timeout).await?;
        self.client.call_raw(addr, req, timeout).await
    }
}
