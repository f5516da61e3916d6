//! The testbed's store client ([`ringkv_testbed::load::KvClient`]) over the
//! peer protocol: one QUIC endpoint for the whole workload, one connection
//! per peer reused by every request (a stream each), and each answer
//! classified as ok, a definite failure, or an unknown outcome.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use ringkv_gossip::transport::tls::{client_config, transport_config, SERVER_NAME};
use ringkv_gossip::{ClusterKey, NodeIdentity};
use ringkv_testbed::history::Outcome;
use ringkv_testbed::load::{KvClient, KvReply};
use serde::de::DeserializeOwned;
use tokio::time::{timeout_at, Instant};

use crate::rpc::api::{Consistency, ErrorKind, GetReply, PutReply, Reply, Request, REPLY_MAX};
use crate::rpc::codec;

/// A reusable client: cheap to clone, shared by every workload task.
#[derive(Clone, Debug)]
pub(crate) struct QuicKv {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    /// Open connections by peer; a broken one is removed and redialled.
    conns: Mutex<HashMap<SocketAddr, quinn::Connection>>,
}

/// Why a request did not succeed, and whether it may have been applied.
type Failure = (Outcome, String);

impl QuicKv {
    async fn connection(&self, peer: SocketAddr) -> Result<quinn::Connection, String> {
        let cached = self
            .inner
            .conns
            .lock()
            .expect("not poisoned")
            .get(&peer)
            .cloned();
        if let Some(c) = cached.filter(|c| c.close_reason().is_none()) {
            return Ok(c);
        }
        let conn = self
            .inner
            .endpoint
            .connect_with(self.inner.config.clone(), peer, SERVER_NAME)
            .map_err(|e| format!("cannot connect to {peer}: {e}"))?
            .await
            .map_err(|e| format!("cannot connect to {peer}: {e}"))?;
        self.inner
            .conns
            .lock()
            .expect("not poisoned")
            .insert(peer, conn.clone());
        Ok(conn)
    }

    fn forget(&self, peer: SocketAddr) {
        self.inner.conns.lock().expect("not poisoned").remove(&peer);
    }

    /// One request on its own stream. Failures before anything was sent
    /// are definite; after that the outcome is unknown, unless the peer
    /// itself says nothing was written.
    async fn call<T: DeserializeOwned>(
        &self,
        peer: SocketAddr,
        req: &Request,
        timeout: Duration,
    ) -> Result<T, Failure> {
        let deadline = Instant::now() + timeout;
        let conn = match timeout_at(deadline, self.connection(peer)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err((Outcome::Fail, e)),
            Err(_) => return Err((Outcome::Fail, format!("no connection to {peer} in time"))),
        };
        let (mut send, mut recv) = match timeout_at(deadline, conn.open_bi()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.forget(peer);
                return Err((
                    Outcome::Fail,
                    format!("cannot open a stream to {peer}: {e}"),
                ));
            }
            Err(_) => {
                self.forget(peer);
                return Err((Outcome::Fail, format!("no stream to {peer} in time")));
            }
        };
        let exchange = async {
            send.write_all(&codec::encode(req))
                .await
                .map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            recv.read_to_end(REPLY_MAX).await.map_err(|e| e.to_string())
        };
        let bytes = match timeout_at(deadline, exchange).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                self.forget(peer);
                return Err((Outcome::Unknown, format!("{peer}: {e}")));
            }
            Err(_) => {
                // A peer killed with -9 leaves its connection looking open
                // until the idle timeout: dial afresh next time.
                self.forget(peer);
                return Err((
                    Outcome::Unknown,
                    format!(
                        "{peer} did not answer within {:.1} s",
                        timeout.as_secs_f64()
                    ),
                ));
            }
        };
        match codec::decode::<Reply<T>>(&bytes, REPLY_MAX) {
            Ok(Reply::Ok(v)) => Ok(v),
            Ok(Reply::Err { kind, message }) => {
                Err((outcome_of(kind), format!("{peer}: {message}")))
            }
            Err(e) => Err((
                Outcome::Unknown,
                format!("{peer} sent an unreadable answer: {e}"),
            )),
        }
    }
}

/// The testbed's outcome of a peer's error answer: `Fail` (the checker
/// may assume nothing was written) only when the peer says `Definite`;
/// every other kind is `Unknown` (conservative).
fn outcome_of(kind: ErrorKind) -> Outcome {
    match kind {
        ErrorKind::Definite => Outcome::Fail,
        ErrorKind::Unknown | ErrorKind::Refused | ErrorKind::NotHeld | ErrorKind::Overloaded => {
            Outcome::Unknown
        }
    }
}

fn failed((outcome, error): Failure) -> KvReply {
    match outcome {
        Outcome::Fail => KvReply::fail(error),
        _ => KvReply::unknown(error),
    }
}

impl KvClient for QuicKv {
    fn connect(cluster_key: &str) -> Result<Self> {
        let key = ClusterKey::parse(cluster_key).context("the testbed's cluster key")?;
        let identity = NodeIdentity::generate().context("cannot make a client identity")?;
        let mut config =
            client_config(&key, &identity).context("cannot build the TLS client config")?;
        config.transport_config(Arc::new(transport_config()));
        let endpoint = quinn::Endpoint::client("0.0.0.0:0".parse().expect("an address"))
            .context("cannot open a client socket")?;
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint,
                config,
                conns: Mutex::new(HashMap::new()),
            }),
        })
    }

    async fn put(
        &self,
        peer: SocketAddr,
        key: Vec<u8>,
        value: Vec<u8>,
        timeout: Duration,
    ) -> KvReply {
        let req = Request::Put {
            key,
            value: Some(value),
            consistency: Consistency::Quorum,
        };
        match self.call::<PutReply>(peer, &req, timeout).await {
            Ok(r) => KvReply {
                outcome: Outcome::Ok,
                value: None,
                version: Some(r.version),
                replicas: r.acknowledged,
                error: None,
            },
            Err(f) => failed(f),
        }
    }

    fn reset(&self, peer: SocketAddr) {
        self.forget(peer);
    }

    async fn get(&self, peer: SocketAddr, key: Vec<u8>, timeout: Duration) -> KvReply {
        let req = Request::Get {
            key,
            consistency: Consistency::Quorum,
        };
        match self.call::<GetReply>(peer, &req, timeout).await {
            Ok(r) => KvReply {
                outcome: Outcome::Ok,
                value: r.value,
                version: r.version,
                replicas: r.answered,
                error: None,
            },
            Err(f) => failed(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_definite_error_is_a_failure() {
        assert_eq!(outcome_of(ErrorKind::Definite), Outcome::Fail);
        for kind in [
            ErrorKind::Unknown,
            ErrorKind::Refused,
            ErrorKind::NotHeld,
            ErrorKind::Overloaded,
        ] {
            assert_eq!(outcome_of(kind), Outcome::Unknown, "{kind:?}");
        }
    }

    /// The classification is by kind, not by text: a message that says
    /// "nothing was written" with kind `Unknown` stays unknown, and a
    /// `Definite` one without those words is a failure.
    #[test]
    fn classification_ignores_the_message() {
        let decode = |kind, message: &str| {
            let bytes = codec::encode(&Reply::<PutReply>::Err {
                kind,
                message: message.into(),
            });
            match codec::decode::<Reply<PutReply>>(&bytes, REPLY_MAX).expect("decodes") {
                Reply::Err { kind, .. } => outcome_of(kind),
                Reply::Ok(_) => unreachable!(),
            }
        };
        assert_eq!(
            decode(ErrorKind::Unknown, "needed 2; nothing was written"),
            Outcome::Unknown
        );
        assert_eq!(decode(ErrorKind::Definite, "no ring yet"), Outcome::Fail);
    }
}
