//! The only place the peer protocol (client requests, replica requests and
//! their answers) becomes bytes: bincode with a size limit, behind a format
//! byte, so a change of encoding is one small edit.

use anyhow::{bail, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Format byte in front of every message.
const FORMAT: u8 = 1;
/// Allocation cap inside bincode.
const ALLOC_LIMIT: usize = 64 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<ALLOC_LIMIT>()
}

/// Encodes a message.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .expect("protocol messages encode");
    out
}

/// Decodes a message of at most `limit` bytes.
///
/// # Errors
/// Too long, wrong format byte, malformed, or trailing bytes.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T> {
    if bytes.len() > limit {
        bail!(
            "message of {} bytes exceeds the limit of {limit}",
            bytes.len()
        );
    }
    match bytes.first() {
        Some(&FORMAT) => {}
        Some(other) => bail!("unknown message format {other}"),
        None => bail!("empty message"),
    }
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(&bytes[1..], config())?;
    if used != bytes.len() - 1 {
        bail!("{} trailing bytes", bytes.len() - 1 - used);
    }
    Ok(value)
}
