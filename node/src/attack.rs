//! Entry points for the hostile-client suite (`node/tests/hostile.rs`):
//! peer-only requests sent as a client would send them, with client
//! credentials, through the CLI's own RPC client. Not an API: hidden from
//! the docs; each function builds one real request and reports how the
//! peer answered, nothing of its own.

use std::net::SocketAddr;
use std::time::Duration;

use ringkv_gossip::transport::credentials::ClientCredentials;
use ringkv_ring::{Token, TokenRange};
use ringkv_storage::{Clock, Hlc, Record};

use crate::rpc::api::{
    ApplyReply, HandoffReply, KeyringOp, KeyringReply, RangePageReply, ReadAnswer, RemoveNodeReply,
    RepairRow, Request, RequestError, TimeReply, TransferOp,
};
use crate::rpc::client::{self, Access};

/// The peer-only requests a client credential must be refused, by name.
pub const PEER_ONLY: [&str; 8] = [
    "replica-write",
    "replica-read",
    "range-page",
    "clock-probe",
    "keyring-list",
    "removenode",
    "repair",
    "pause-transfers",
];

fn request(kind: &str) -> Request {
    let whole = TokenRange {
        start: Token(0),
        end: Token(0),
    };
    match kind {
        "replica-write" => {
            let mut clock = Clock::new(ringkv_gossip::NodeId::from_name("x"), 1, Hlc::default());
            Request::ReplicaApply {
                key: b"forged".to_vec(),
                record: Record::put(
                    b"forged".to_vec(),
                    clock.tick(crate::wall::WallClock::system().now_ms()),
                ),
            }
        }
        "replica-read" => Request::ReplicaRead {
            key: b"canary".to_vec(),
        },
        "range-page" => Request::RangePage {
            range: whole,
            after: None,
            max_bytes: 1 << 20,
        },
        "clock-probe" => Request::Time,
        "keyring-list" => Request::Keyring {
            op: KeyringOp::List,
            cluster: false,
        },
        "removenode" => Request::RemoveNode {
            node: "p3".to_owned(),
            cluster: true,
        },
        "repair" => Request::Repair {
            range: None,
            key: None,
        },
        "pause-transfers" => Request::Transfers(TransferOp::Pause),
        other => panic!("no such request: {other}"),
    }
}

/// Sends the peer-only request `kind` (one of [`PEER_ONLY`]) to `peer`
/// with `credentials`: `Ok(())` if the peer carried it out (a hole),
/// `Err` with the peer's answer (or the connection's error) otherwise.
///
/// # Errors
/// The peer refused it, or did not answer.
pub async fn peer_request_as_client(
    peer: SocketAddr,
    credentials: &ClientCredentials,
    kind: &str,
) -> Result<(), String> {
    let access = Access::Client(credentials.clone());
    let req = request(kind);
    let t = Duration::from_secs(10);
    // Each answer decoded as its own type (bincode is not self-describing):
    // a request carried out must read as carried out.
    let outcome: anyhow::Result<()> = match &req {
        Request::ReplicaApply { .. } => client::request::<ApplyReply>(peer, &access, &req, t)
            .await
            .map(drop),
        Request::ReplicaRead { .. } => client::request::<ReadAnswer>(peer, &access, &req, t)
            .await
            .map(drop),
        Request::RangePage { .. } => client::request::<RangePageReply>(peer, &access, &req, t)
            .await
            .map(drop),
        Request::Time => client::request::<TimeReply>(peer, &access, &req, t)
            .await
            .map(drop),
        Request::Keyring { .. } => client::request::<KeyringReply>(peer, &access, &req, t)
            .await
            .map(drop),
        Request::RemoveNode { .. } => client::request::<RemoveNodeReply>(peer, &access, &req, t)
            .await
            .map(drop),
        Request::Repair { .. } => client::request::<RepairRow>(peer, &access, &req, t)
            .await
            .map(drop),
        Request::Transfers(_) => client::request::<HandoffReply>(peer, &access, &req, t)
            .await
            .map(drop),
        other => panic!("not a peer-only request: {other:?}"),
    };
    match outcome {
        Ok(()) => Ok(()),
        Err(e) => Err(
            match e.chain().find_map(|c| c.downcast_ref::<RequestError>()) {
                Some(r) => format!("{:?}: {}", r.kind, r),
                None => format!("{e:#}"),
            },
        ),
    }
}
