//! The one request dispatch of a peer: every request that arrives on a
//! QUIC stream (from a client or from another peer) is read with a size
//! limit, decoded, and answered here, status requests from the view and
//! ring at hand, store requests by the coordinator and replica side
//! ([`Kv`]), range requests by handoff. Does IO (streams).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use ringkv_gossip::runner::{Handle, Request as StreamRequest};
use tokio::sync::{mpsc, watch};

use crate::handoff::Handoff;
use crate::rpc::api::{self, ErrorKind, Reply, RequestError};
use crate::rpc::codec;
use crate::shared::Kv;
use crate::status::{self, RingState};

/// Most client and replica requests a peer works on at once.
const REQUESTS_MAX: usize = 1024;
/// Longest a peer works on one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn serve_requests(
    mut requests: mpsc::Receiver<StreamRequest>,
    handle: Handle,
    ring: watch::Receiver<Arc<RingState>>,
    kv: Arc<Kv>,
    handoff: Arc<Handoff>,
) {
    // At most this many requests in progress; beyond, the loop waits and
    // the runner's bounded hand-off drops new streams (backpressure).
    let slots = Arc::new(tokio::sync::Semaphore::new(REQUESTS_MAX));
    while let Some(req) = requests.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let view = handle.view.borrow().clone();
        let ring = ring.borrow().clone();
        let kv = kv.clone();
        let handoff = handoff.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let StreamRequest {
                mut send, mut recv, ..
            } = req;
            let read = recv.read_to_end(api::REQUEST_MAX);
            let Ok(Ok(body)) = tokio::time::timeout(Duration::from_secs(10), read).await else {
                return;
            };
            let reply = match codec::decode::<api::Request>(&body, api::REQUEST_MAX) {
                Ok(request) => match status::answer(&request, &view, &ring) {
                    Some(reply) => reply,
                    None => {
                        match tokio::time::timeout(
                            REQUEST_TIMEOUT,
                            serve_kv(&kv, &handoff, request),
                        )
                        .await
                        {
                            Ok(reply) => reply,
                            Err(_) => codec::encode(&Reply::<()>::error(RequestError::new(
                                ErrorKind::Unknown,
                                "the request timed out on the coordinator",
                            ))),
                        }
                    }
                },
                Err(e) => codec::encode(&Reply::<()>::error(RequestError::new(
                    ErrorKind::Refused,
                    format!("bad request: {e:#}"),
                ))),
            };
            if send.write_all(&reply).await.is_ok() {
                let _ = send.finish();
            }
        });
    }
}

/// Store requests: coordinated (put, get) or replica-side.
async fn serve_kv(kv: &Arc<Kv>, handoff: &Handoff, request: api::Request) -> Vec<u8> {
    fn reply<T: serde::Serialize>(r: Result<T>) -> Vec<u8> {
        codec::encode(&match r {
            Ok(v) => Reply::Ok(v),
            // Unclassified errors are `Unknown`: they may have had an effect.
            Err(e) => Reply::Err {
                kind: RequestError::kind_of(&e),
                message: format!("{e:#}"),
            },
        })
    }
    match request {
        api::Request::Put {
            key,
            value,
            consistency,
        } => reply(kv.put(key, value, consistency).await),
        api::Request::Get { key, consistency } => reply(kv.get(key, consistency).await),
        api::Request::ReplicaApply { key, record } => reply(kv.replica_apply(&key, record).await),
        api::Request::ReplicaRead { key } => reply(kv.replica_read(&key)),
        api::Request::Hot => reply(Ok(kv.hot_keys(20))),
        api::Request::Handoff => reply(Ok(handoff.report())),
        request @ (api::Request::RangePage { .. }
        | api::Request::RangeSummary { .. }
        | api::Request::RangeVersions { .. }
        | api::Request::ReadMany { .. }) => match crate::handoff::serve(kv, request).await {
            Ok(bytes) => bytes,
            Err(e) => reply::<()>(Err(e)),
        },
        api::Request::Members | api::Request::Ring | api::Request::Owners { .. } => {
            reply::<()>(Err(anyhow::anyhow!("unexpected status request")))
        }
    }
}
