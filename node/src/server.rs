//! The one request dispatch of a peer: every request that arrives on a
//! QUIC stream (from a client or from another peer) is read with a size
//! limit, decoded, and answered here, status requests from the view and
//! ring at hand, store requests by the coordinator and replica side
//! ([`Kv`]), range requests by handoff. Does IO (streams).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use ringkv_gossip::runner::{Handle, Request as StreamRequest, View};
use ringkv_gossip::transport::credentials::Role;
use tokio::sync::{mpsc, watch};

use crate::handoff::Handoff;
use crate::rpc::api::{self, ErrorKind, Reply, RequestError};
use crate::rpc::codec;
use crate::shared::Kv;
use crate::status::{self, RingState};

/// Longest a peer works on one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One of the `--requests-max` slots, held by one request: counted in
/// `TransportStats::requests_in_progress` while it lives.
struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    stats: Arc<ringkv_gossip::runner::TransportStats>,
}

impl Slot {
    fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        stats: Arc<ringkv_gossip::runner::TransportStats>,
    ) -> Self {
        stats
            .requests_in_progress
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            _permit: permit,
            stats,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats
            .requests_in_progress
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

pub(crate) async fn serve_requests(
    mut requests: mpsc::Receiver<StreamRequest>,
    handle: Handle,
    ring: watch::Receiver<Arc<RingState>>,
    kv: Arc<Kv>,
    handoff: Arc<Handoff>,
    requests_max: usize,
) {
    // At most this many requests in progress (`--requests-max`); beyond,
    // the loop waits and the runner's bounded hand-off refuses new
    // streams unread, as busy (backpressure the caller can retry).
    let slots = Arc::new(tokio::sync::Semaphore::new(requests_max));
    while let Some(req) = requests.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let view = handle.view.borrow().clone();
        let ring = ring.borrow().clone();
        let kv = kv.clone();
        let handoff = handoff.clone();
        let transport = handle.transport.clone();
        let slot = Slot::new(permit, transport.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let StreamRequest {
                mut send,
                mut recv,
                role,
                addr,
                ..
            } = req;
            let read = recv.read_to_end(api::REQUEST_MAX);
            let Ok(Ok(body)) = tokio::time::timeout(Duration::from_secs(10), read).await else {
                // Not whole within 10 s, or too long: refused unread.
                ringkv_gossip::runner::refuse(
                    send,
                    recv,
                    ringkv_gossip::runner::REQUEST_NOT_SERVED,
                );
                return;
            };
            let reply = match codec::decode::<api::Request>(&body, api::REQUEST_MAX) {
                Ok(request) => match refusal(&request, &role, &view, &handoff) {
                    None => dispatch(request, &view, &ring, &kv, &handoff).await,
                    Some(why) => {
                        transport
                            .rpc_refused_role
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(client = %addr, request = kind(&request), "refused a request: {why}");
                        codec::encode(&Reply::<()>::error(RequestError::new(
                            ErrorKind::Refused,
                            why,
                        )))
                    }
                },
                Err(e) => codec::encode(&Reply::<()>::error(RequestError::new(
                    ErrorKind::Refused,
                    format!("{}: {e:#}", api::BAD_REQUEST),
                ))),
            };
            if send.write_all(&reply).await.is_ok() {
                let _ = send.finish();
            }
        });
    }
}

/// Why `role` may not send `request`, or `None` if it may. Peers may send
/// anything; client credentials only what the CLI sends: put, get and
/// delete, members, ring, owners, hot keys, handoff status and the keys
/// listing (`RangeVersions` with `any`). Never gossip (the runner drops
/// that), replica reads and writes, range pages, summaries and versions
/// (handoff, anti-entropy), batch reads (hint replay and repair) or clock
/// probes.
fn refusal(request: &api::Request, role: &Role, view: &View, handoff: &Handoff) -> Option<String> {
    use api::Request as R;
    match role {
        Role::Peer => None,
        Role::Nobody => Some(
            "credentials expired or not valid: this connection's certificate no longer verifies (issue new credentials with `ringkv credentials issue`)"
                .to_owned(),
        ),
        Role::Client(tag) if handoff.revoked(tag) || crate::revocation::is_revoked(view, tag) => Some(
            "credentials revoked: an operator revoked the credentials issued to this name (ask for new ones)"
                .to_owned(),
        ),
        Role::Client(_) => match request {
            R::Members
            | R::MembersLegacy
            | R::Ring
            | R::Owners { .. }
            | R::Put { .. }
            | R::Get { .. }
            | R::Hot
            | R::Handoff
            | R::RangeVersions { any: true, .. } => None,
            other => Some(format!(
                "client credentials may not send {} requests: they are for peers only",
                kind(other)
            )),
        },
    }
}

/// A request's kind, for logs and refusals (never its contents).
fn kind(request: &api::Request) -> &'static str {
    use api::Request as R;
    match request {
        R::Members | R::MembersLegacy => "members",
        R::Ring => "ring",
        R::Owners { .. } => "owners",
        R::Put { .. } => "put",
        R::Get { .. } => "get",
        R::ReplicaApply { .. } => "replica write",
        R::ReplicaRead { .. } => "replica read",
        R::Hot => "hot",
        R::RangePage { .. } => "range page",
        R::RangeSummary { .. } => "range summary",
        R::RangeVersions { .. } => "range versions",
        R::ReadMany { .. } => "batch read",
        R::Handoff => "handoff",
        R::Time => "clock probe",
        R::Revoke { .. } => "revoke",
        R::Keyring { .. } => "keyring",
        R::RemoveNode { .. } => "removenode",
        R::Repair { .. } => "repair",
        R::Transfers(_) => "transfers",
    }
}

/// Answers one request, encoded. Status requests (members, ring, owners)
/// from the view and ring at hand; store requests (coordinated put and
/// get, replica-side) and range requests (handoff) within
/// [`REQUEST_TIMEOUT`].
async fn dispatch(
    request: api::Request,
    view: &View,
    ring: &RingState,
    kv: &Arc<Kv>,
    handoff: &Arc<Handoff>,
) -> Vec<u8> {
    use api::Request as R;
    match request {
        R::Members => reply(Ok(status::members_reply(view, ring))),
        R::MembersLegacy => reply(Ok(api::LegacyMembersReply::from(status::members_reply(
            view, ring,
        )))),
        R::Ring => status_reply(status::ring_reply(view, ring)),
        R::Owners { key } => status_reply(status::owners_reply(view, ring, &key)),
        R::Put {
            key,
            value,
            consistency,
        } => within(async { reply(kv.put(key, value, consistency).await) }).await,
        R::Get { key, consistency } => {
            within(async { reply(kv.get(key, consistency).await) }).await
        }
        R::ReplicaApply { key, record } => {
            within(async { reply(kv.replica_apply(&key, record).await) }).await
        }
        R::ReplicaRead { key } => reply(kv.replica_read(&key)),
        R::Hot => reply(Ok(kv.hot_keys(20))),
        R::Handoff => reply(Ok(handoff.report())),
        R::Time => reply(Ok(api::TimeReply {
            wall_ms: kv.wall_ms(),
        })),
        R::Revoke { name } => reply(handoff.revoke(&name, kv.wall_ms() / 1000).await),
        R::Keyring { op, cluster } => {
            within(async { reply(crate::keyring::handle(kv, view, op, cluster).await) }).await
        }
        R::Repair { range, key } => reply(
            handoff
                .start_repair(range, key)
                .map_err(anyhow::Error::from),
        ),
        R::Transfers(op) => reply(handoff.transfers(&op).map_err(anyhow::Error::from)),
        R::RemoveNode { node, cluster } => {
            within(async { reply(crate::removenode::handle(kv, view, &node, cluster).await) }).await
        }
        request @ (R::RangePage { .. }
        | R::RangeSummary { .. }
        | R::RangeVersions { .. }
        | R::ReadMany { .. }) => {
            within(async {
                match crate::handoff::serve(kv, request).await {
                    Ok(bytes) => bytes,
                    Err(e) => reply::<()>(Err(e)),
                }
            })
            .await
        }
    }
}

/// The answer to a store or range request, or a timeout error (`Unknown`:
/// the work may have had an effect) after [`REQUEST_TIMEOUT`].
async fn within(work: impl std::future::Future<Output = Vec<u8>>) -> Vec<u8> {
    match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(reply) => reply,
        Err(_) => codec::encode(&Reply::<()>::error(RequestError::new(
            ErrorKind::Unknown,
            "the request timed out on the coordinator",
        ))),
    }
}

/// A store answer, encoded: the value, or the error with its kind
/// (unclassified errors are `Unknown`: they may have had an effect).
fn reply<T: serde::Serialize>(r: Result<T>) -> Vec<u8> {
    codec::encode(&match r {
        Ok(v) => Reply::Ok(v),
        Err(e) => Reply::Err {
            kind: RequestError::kind_of(&e),
            message: format!("{e:#}"),
        },
    })
}

/// A status answer, encoded; a status error (no ring yet) is `Definite`:
/// nothing was changed.
fn status_reply<T: serde::Serialize>(r: Result<T, String>) -> Vec<u8> {
    codec::encode(&match r {
        Ok(v) => Reply::Ok(v),
        Err(message) => Reply::Err {
            kind: ErrorKind::Definite,
            message,
        },
    })
}
