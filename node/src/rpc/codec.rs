//! The only place the peer protocol (client requests, replica requests and
//! their answers) becomes bytes: bincode with a size limit, behind a format
//! byte, so a change of encoding is one small edit.
//!
//! Two limits, both checked before anything is allocated: the message's
//! length against the caller's limit for its channel (a request, a reply,
//! a checkpoint), and, inside bincode, what length prefixes may claim,
//! scaled to the bytes actually received ([`claim_cap`]): a 100-byte reply
//! claiming a 30 MiB value fails at the prefix instead of allocating it.

use anyhow::{bail, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Format byte in front of every message.
const FORMAT: u8 = 1;
/// Allocation cap inside bincode for the largest messages.
const ALLOC_LIMIT: usize = 64 * 1024 * 1024;
/// bincode counts decoded sizes, not encoded ones (a one-byte varint
/// `u64` counts 8, a `u128` 16): no valid body of `n` bytes claims more
/// than `16 * n`.
const CLAIM_PER_BYTE: usize = 16;
/// The fixed caps below [`ALLOC_LIMIT`] (bincode's limit is a type
/// parameter).
const CAPS: [usize; 3] = [32 * 1024, 1024 * 1024, 16 * 1024 * 1024];

/// What bincode may claim (and so allocate) while decoding a body of `len`
/// bytes: the smallest cap at or above `CLAIM_PER_BYTE * len`, at most
/// [`ALLOC_LIMIT`].
const fn claim_cap(len: usize) -> usize {
    let want = len.saturating_mul(CLAIM_PER_BYTE);
    let mut i = 0;
    while i < CAPS.len() {
        if want <= CAPS[i] {
            return CAPS[i];
        }
        i += 1;
    }
    ALLOC_LIMIT
}

fn decode_with<T: DeserializeOwned, const N: usize>(
    body: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    bincode::serde::decode_from_slice::<T, _>(body, bincode::config::standard().with_limit::<N>())
}

/// Decodes `body` with the claim cap its length allows.
fn decode_capped<T: DeserializeOwned>(body: &[u8]) -> Result<(T, usize)> {
    let cap = claim_cap(body.len());
    let decoded = match cap {
        c if c == CAPS[0] => decode_with::<T, { CAPS[0] }>(body),
        c if c == CAPS[1] => decode_with::<T, { CAPS[1] }>(body),
        c if c == CAPS[2] => decode_with::<T, { CAPS[2] }>(body),
        _ => decode_with::<T, ALLOC_LIMIT>(body),
    };
    decoded.map_err(|e| match e {
        bincode::error::DecodeError::LimitExceeded => anyhow::anyhow!(
            "malformed message: a length prefix claims more than {cap} bytes, beyond what {} received bytes can hold",
            body.len()
        ),
        other => anyhow::anyhow!("malformed message: {other}"),
    })
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
