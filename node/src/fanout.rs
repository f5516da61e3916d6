//! One request to several members side by side, each answer decoded: the
//! cluster-wide operator commands (`ringkv keyring`, `ringkv removenode`)
//! ask every live member to do it on itself and report each. Does IO.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::rpc::api::{Reply, Request, REPLY_MAX};
use crate::rpc::codec;
use crate::shared::Kv;

/// Sends `req` to each of `members` (name, address) at once, each within
/// `timeout`; the answers in `members`' order, each the decoded reply or
/// why there is none (no answer, a bad answer, the member's error).
pub(crate) async fn ask_all<T: DeserializeOwned + Send + 'static>(
    kv: &Arc<Kv>,
    members: &[(String, SocketAddr)],
    req: &Request,
    timeout: Duration,
) -> Vec<(String, SocketAddr, Result<T, String>)> {
    let mut asks = tokio::task::JoinSet::new();
    for (i, (name, addr)) in members.iter().enumerate() {
        let (kv, name, addr, req) = (kv.clone(), name.clone(), *addr, req.clone());
        asks.spawn(async move {
            let answer = match kv.peers.request_within(addr, &req, timeout).await {
                Err(e) => Err(format!("{e:#}")),
                Ok(bytes) => match codec::decode::<Reply<T>>(&bytes, REPLY_MAX) {
                    Err(e) => Err(format!("bad answer: {e:#}")),
                    Ok(Reply::Err { message, .. }) => Err(message),
                    Ok(Reply::Ok(v)) => Ok(v),
                },
            };
            (i, name, addr, answer)
        });
    }
    let mut out = Vec::new();
    while let Some(done) = asks.join_next().await {
        if let Ok(r) = done {
            out.push(r);
        }
    }
    out.sort_by_key(|(i, ..)| *i);
    out.into_iter().map(|(_, n, a, r)| (n, a, r)).collect()
}
