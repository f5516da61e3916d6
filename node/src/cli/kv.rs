//! `ringkv put`, `ringkv get`, `ringkv del`: keys and values are bytes;
//! limits are checked before anything is sent, so a refused request writes
//! nothing.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use super::cluster::PeerArgs;
use crate::rpc::api::{Consistency, GetReply, PutReply, Request, KEY_MAX, VALUE_MAX};
use crate::rpc::client;

/// A coordinated request may wait on replicas for up to 2 s.
const TIMEOUT: Duration = Duration::from_secs(8);

/// Arguments of `ringkv put`.
#[derive(Debug, Args)]
pub(crate) struct PutArgs {
    /// The key.
    pub(crate) key: String,
    /// The value; without it, --file or standard input.
    pub(crate) value: Option<String>,
    /// Read the value from this file.
    #[arg(long, conflicts_with = "value")]
    pub(crate) file: Option<PathBuf>,
    /// How many replicas must acknowledge.
    #[arg(long, value_enum, default_value_t = Consistency::Quorum)]
    pub(crate) consistency: Consistency,
    #[command(flatten)]
    pub(crate) peer: PeerArgs,
}

/// Arguments of `ringkv get`.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// The key.
    pub(crate) key: String,
    /// How many replicas must answer.
    #[arg(long, value_enum, default_value_t = Consistency::Quorum)]
    pub(crate) consistency: Consistency,
    #[command(flatten)]
    pub(crate) peer: PeerArgs,
}

/// Arguments of `ringkv del`.
#[derive(Debug, Args)]
pub(crate) struct DelArgs {
    /// The key.
    pub(crate) key: String,
    /// How many replicas must acknowledge.
    #[arg(long, value_enum, default_value_t = Consistency::Quorum)]
    pub(crate) consistency: Consistency,
    #[command(flatten)]
    pub(crate) peer: PeerArgs,
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        bail!("the key is empty");
    }
    if key.len() > KEY_MAX {
        bail!(
            "the key is {} bytes; the limit is {KEY_MAX} (nothing was sent)",
            key.len()
        );
    }
    Ok(())
}

fn read_value(args: &PutArgs) -> Result<Vec<u8>> {
    let value = match (&args.value, &args.file) {
        (Some(v), _) => v.clone().into_bytes(),
        (None, Some(path)) => {
            let meta = std::fs::metadata(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if meta.len() > VALUE_MAX as u64 {
                bail!(
                    "{} is {} bytes; the value limit is {VALUE_MAX} (nothing was sent)",
                    path.display(),
                    meta.len()
                );
            }
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        (None, None) => {
            let mut buf = Vec::new();
            std::io::stdin()
                .take(VALUE_MAX as u64 + 1)
                .read_to_end(&mut buf)
                .context("cannot read standard input")?;
            buf
        }
    };
    if value.len() > VALUE_MAX {
        bail!("the value is over {VALUE_MAX} bytes, the limit (nothing was sent)");
    }
    Ok(value)
}

pub(crate) async fn put(args: &PutArgs) -> Result<String> {
    check_key(&args.key)?;
    let value = read_value(args)?;
    let key = args.peer.key.require()?;
    let req = Request::Put {
        key: args.key.as_bytes().to_vec(),
        value: Some(value),
        consistency: args.consistency,
    };
    let reply: PutReply = client::request(args.peer.peer, &key, &req, TIMEOUT).await?;
    if args.peer.json {
        return Ok(serde_json::to_string_pretty(&reply)? + "\n");
    }
    Ok(format!(
        "stored {:?} at version {} (acknowledged by {})\n",
        args.key,
        reply.version,
        reply.acknowledged.join(", ")
    ))
}

pub(crate) async fn get(args: &GetArgs) -> Result<String> {
    check_key(&args.key)?;
    let key = args.peer.key.require()?;
    let req = Request::Get {
        key: args.key.as_bytes().to_vec(),
        consistency: args.consistency,
    };
    let reply: GetReply = client::request(args.peer.peer, &key, &req, TIMEOUT).await?;
    if args.peer.json {
        // Text values as a string; anything else exactly, as hex, so JSON
        // never loses a byte.
        let (text, hex) = match reply.value.as_deref().map(std::str::from_utf8) {
            Some(Ok(t)) => (Some(t.to_owned()), None),
            Some(Err(_)) => (None, reply.value.as_deref().map(hex_of)),
            None => (None, None),
        };
        let mut json = serde_json::json!({
            "key": args.key,
            "value": text,
            "found": reply.value.is_some(),
            "version": reply.version,
            "answered": reply.answered,
        });
        if let Some(hex) = hex {
            json["value_hex"] = serde_json::Value::String(hex);
        }
        if reply.value.is_none() {
            println!("{}", serde_json::to_string_pretty(&json)?);
            bail!("{:?} not found", args.key);
        }
        return Ok(serde_json::to_string_pretty(&json)? + "\n");
    }
    match reply.value {
        Some(v) => {
            std::io::stdout().write_all(&v)?;
            Ok(String::new())
        }
        None => bail!("{:?} not found", args.key),
    }
}

/// Lowercase hex of `bytes`.
fn hex_of(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

pub(crate) async fn del(args: &DelArgs) -> Result<String> {
    check_key(&args.key)?;
    let key = args.peer.key.require()?;
    let req = Request::Put {
        key: args.key.as_bytes().to_vec(),
        value: None,
        consistency: args.consistency,
    };
    let reply: PutReply = client::request(args.peer.peer, &key, &req, TIMEOUT).await?;
    if args.peer.json {
        return Ok(serde_json::to_string_pretty(&reply)? + "\n");
    }
    Ok(format!(
        "deleted {:?} at version {} (acknowledged by {})\n",
        args.key,
        reply.version,
        reply.acknowledged.join(", ")
    ))
}
