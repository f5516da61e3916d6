//! The only place the peer protocol (client requests, replica requests and
//! their answers) becomes bytes: bincode with a size limit, behind a format
//! byte, so a change of encoding is one small edit.
//!
//! Two limits, both checked before anything is allocated: the message's
//! length against the caller's limit for its channel (a request, a reply,
//! a checkpoint), and, inside bincode, what length prefixes may claim,
//! scaled to the bytes actually received (the gossip codec's
//! `decode_capped`): a 100-byte reply
//! claiming a 30 MiB value fails at the prefix instead of allocating it.

use anyhow::{bail, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Format byte in front of every message.
const FORMAT: u8 = 1;
/// Allocation cap inside bincode for the largest messages.
const ALLOC_LIMIT: usize = 64 * 1024 * 1024;
/// Decodes a bincode `body` with the claim cap its length allows: the
/// gossip codec's rule (`ringkv_gossip::proto::codec::decode_capped`), the
/// same bincode underneath.
fn decode_capped<T: DeserializeOwned>(body: &[u8]) -> Result<(T, usize)> {
    ringkv_gossip::proto::codec::decode_capped(body).map_err(|e| anyhow::anyhow!("{e}"))
}

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
    let (value, used) = decode_capped::<T>(&bytes[1..])?;
    if used != bytes.len() - 1 {
        bail!("{} trailing bytes", bytes.len() - 1 - used);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::api::{Request, REQUEST_MAX};

    #[test]
    fn a_small_message_claiming_a_large_value_fails_at_the_prefix() {
        // A put whose value claims 1 MiB in a message of a few dozen
        // bytes: under the old fixed 64 MiB cap bincode allocated the 1 MiB
        // and then found the bytes missing.
        let put = encode(&Request::Members);
        let mut bytes = vec![FORMAT];
        // A `Vec<u8>` (serde_bytes) claiming 1 MiB, then 40 bytes.
        bytes.push(253);
        bytes.extend_from_slice(&(1u64 << 20).to_le_bytes());
        bytes.extend_from_slice(&[7; 40]);
        let err = decode::<serde_bytes::ByteBuf>(&bytes, REQUEST_MAX).expect_err("rejected");
        assert!(
            format!("{err:#}").contains("claims more than 32768 bytes"),
            "{err:#}"
        );
        // A length prefix of 2^40 fails the same way.
        let mut huge = vec![FORMAT, 253];
        huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let err = decode::<serde_bytes::ByteBuf>(&huge, REQUEST_MAX).expect_err("rejected");
        assert!(format!("{err:#}").contains("claims more than"), "{err:#}");
        // Valid messages still decode.
        assert!(matches!(
            decode::<Request>(&put, REQUEST_MAX),
            Ok(Request::Members)
        ));
    }

    #[test]
    fn large_values_in_large_messages_still_decode() {
        let value = serde_bytes::ByteBuf::from(vec![3u8; 3 * 1024 * 1024]);
        let bytes = encode(&value);
        let back: serde_bytes::ByteBuf = decode(&bytes, REQUEST_MAX).expect("decodes");
        assert_eq!(back, value);
    }
}
