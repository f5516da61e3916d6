//! The client side of the peer protocol, for CLI commands: a throwaway
//! identity signed with the cluster key, one connection, one request.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use ringkv_gossip::transport::tls::{client_config, transport_config, SERVER_NAME};
use ringkv_gossip::{ClusterKey, NodeIdentity};
use serde::de::DeserializeOwned;

use crate::rpc::api::{Reply, Request, RequestError, REPLY_MAX};
use crate::rpc::codec;

/// Sends one request to `peer` and returns its answer.
pub(crate) async fn request<T: DeserializeOwned>(
    peer: SocketAddr,
    key: &ClusterKey,
    req: &Request,
    timeout: Duration,
) -> Result<T> {
    let identity = NodeIdentity::generate().context("cannot make a client identity")?;
    let mut config = client_config(key, &identity).context("cannot build the TLS client config")?;
    config.transport_config(std::sync::Arc::new(transport_config()));
    let bind: SocketAddr = if peer.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let endpoint = quinn::Endpoint::client(bind).context("cannot open a client socket")?;
    let outcome = tokio::time::timeout(timeout, exchange(&endpoint, config, peer, req)).await;
    endpoint.close(0u32.into(), b"done");
    let bytes = match outcome {
        Ok(result) => result?,
        Err(_) => bail!("peer {peer} did not answer within {:.0} s (is it running, and is that its --listen address?)", timeout.as_secs_f64()),
    };
    match codec::decode::<Reply<T>>(&bytes, REPLY_MAX)
        .with_context(|| format!("peer {peer} sent an answer this client cannot read"))?
    {
        Reply::Ok(value) => Ok(value),
        Reply::Err { kind, message } => {
            Err(RequestError::new(kind, format!("peer {peer}: {message}")).into())
        }
    }
}

async fn exchange(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    peer: SocketAddr,
    req: &Request,
) -> Result<Vec<u8>> {
    let conn = endpoint
        .connect_with(config, peer, SERVER_NAME)
        .with_context(|| format!("cannot connect to {peer}"))?
        .await
        .map_err(|e| connection_failed(peer, &e))?;
    // A connection can open before the peer has checked our certificate:
    // only a completed exchange proves we are in.
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| connection_failed(peer, &e))?;
    let body = codec::encode(req);
    send.write_all(&body).await.map_err(|e| match e {
        quinn::WriteError::ConnectionLost(c) => connection_failed(peer, &c),
        other => lost(peer, &other.to_string()),
    })?;
    send.finish().map_err(|e| lost(peer, &e.to_string()))?;
    let bytes = recv.read_to_end(REPLY_MAX).await.map_err(|e| match e {
        quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(c)) => {
            connection_failed(peer, &c)
        }
        other => lost(peer, &other.to_string()),
    })?;
    conn.close(0u32.into(), b"done");
    Ok(bytes)
}

/// A connection that failed: a TLS alert (a closing code 0x100 to 0x1ff)
/// means the peer refused our certificate, that is, another cluster's
/// key; anything else means the peer went away.
fn connection_failed(peer: SocketAddr, e: &quinn::ConnectionError) -> anyhow::Error {
    let tls_alert = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        quinn::ConnectionError::ConnectionClosed(c) if tls_alert(c.error_code) => {
            refused(peer, &e.to_string())
        }
        quinn::ConnectionError::TransportError(t) if tls_alert(t.code) => {
            refused(peer, &e.to_string())
        }
        _ => lost(peer, &e.to_string()),
    }
}

fn refused(peer: SocketAddr, detail: &str) -> anyhow::Error {
    anyhow!("peer {peer} refused the connection ({detail}); check --cluster-key: it must be the key of the cluster that peer belongs to")
}

fn lost(peer: SocketAddr, detail: &str) -> anyhow::Error {
    anyhow!("lost the connection to peer {peer} before it answered ({detail}): it may have crashed or restarted; a write may or may not have been applied")
}
