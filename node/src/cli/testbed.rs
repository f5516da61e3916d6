//! The testbed's store client ([`ringkv_testbed::load::KvClient`]) over the
//! peer protocol: one [`Client`] for the whole workload (one connection per
//! peer reused by every request, a stream each), and each answer
//! classified as ok, a definite failure, or an unknown outcome.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use ringkv_gossip::ClusterKey;
use ringkv_testbed::history::Outcome;
use ringkv_testbed::load::{KvClient, KvReply};

use crate::rpc::api::{Consistency, ErrorKind, GetReply, PutReply, Request};
use crate::rpc::client::{CallError, Client, PeerError};

/// A reusable client: cheap to clone, shared by every workload task.
#[derive(Clone, Debug)]
pub(crate) struct QuicKv {
    client: Arc<Client>,
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

/// A failed call as the testbed records it: nothing sent is a definite
/// failure; sent and unanswered is unknown; an error answer by its kind.
fn failed(e: CallError) -> KvReply {
    let outcome = match &e {
        CallError::Peer(PeerError::Unreachable(_)) => Outcome::Fail,
        CallError::Peer(PeerError::Unknown(_)) => Outcome::Unknown,
        CallError::Answered(r) => outcome_of(r.kind),
    };
    let error = format!("{e:#}");
    match outcome {
        Outcome::Fail => KvReply::fail(error),
        _ => KvReply::unknown(error),
    }
}

impl KvClient for QuicKv {
    fn connect(cluster_key: &str) -> Result<Self> {
        let key = ClusterKey::parse(cluster_key).context("the testbed's cluster key")?;
        let client = Client::for_cluster(&key, SocketAddr::from(([127, 0, 0, 1], 0)))?;
        Ok(Self {
            client: Arc::new(client),
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
        match self.client.call::<PutReply>(peer, &req, timeout).await {
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
        self.client.forget(peer);
    }

    async fn get(&self, peer: SocketAddr, key: Vec<u8>, timeout: Duration) -> KvReply {
        let req = Request::Get {
            key,
            consistency: Consistency::Quorum,
        };
        match self.client.call::<GetReply>(peer, &req, timeout).await {
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
    use crate::rpc::api::{Reply, REPLY_MAX};
    use crate::rpc::codec;

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
