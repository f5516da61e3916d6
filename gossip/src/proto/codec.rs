//! The only place messages become bytes and back: a 2-byte magic, a version
//! byte, then the bincode body. Every decode has a size limit and rejects
//! trailing bytes; nothing here panics on peer input.
//!
//! Two limits, both checked before anything is allocated: the message's
//! length against its channel's limit (a datagram's is its MTU, a stream
//! message's `max_stream_message`), and, inside bincode, what length
//! prefixes may claim, scaled to the bytes actually received (see
//! [`claim_cap`]): a 2 KiB datagram claiming a 60 MiB string fails at the
//! prefix instead of allocating 60 MiB and then finding the bytes missing.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::CodecError;
use crate::proto::message::Envelope;

/// First bytes of every gossip message.
pub const MAGIC: [u8; 2] = *b"RG";
/// Wire version this build speaks. 2: statements carry signatures and
/// Alive statements their author's public key; push-pull sends signed
/// entries (`auth.rs`). 3: the envelope carries the sender's ring-shape
/// digest after its view digest (`message.rs`).
pub const VERSION: u8 = 3;
const HEADER: usize = 3;
/// Allocation cap inside bincode for the largest messages, whatever the
/// channel limit: a length prefix claiming more than this fails before
/// anything is allocated.
const ALLOC_LIMIT: usize = 64 * 1024 * 1024;
/// bincode counts decoded sizes, not encoded ones: a `u64` that took one
/// varint byte counts 8, a `u128` 16. So no valid body of `n` bytes claims
/// more than `16 * n`.
const CLAIM_PER_BYTE: usize = 16;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<ALLOC_LIMIT>()
}

/// What bincode may claim (and so allocate) while decoding a body of
/// `len` bytes: the smallest of a few fixed caps (bincode's limit is a
/// type parameter) at or above `CLAIM_PER_BYTE * len`, and never more
/// than [`ALLOC_LIMIT`]. A datagram (at most 2 KiB) may claim 32 KiB.
pub(crate) const fn claim_cap(len: usize) -> usize {
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

const CAPS: [usize; 3] = [32 * 1024, 1024 * 1024, 16 * 1024 * 1024];

/// Decodes a bincode `body` with the claim cap its length allows: no
/// length prefix may claim more than the received bytes can hold. Shared
/// with node's request codec, whose bodies are bincode too.
///
/// # Errors
/// `Malformed` for a body that does not decode or claims too much.
pub fn decode_capped<T: DeserializeOwned>(body: &[u8]) -> Result<(T, usize), CodecError> {
    fn with<T: DeserializeOwned, const N: usize>(
        body: &[u8],
    ) -> Result<(T, usize), bincode::error::DecodeError> {
        bincode::serde::decode_from_slice::<T, _>(
            body,
            bincode::config::standard().with_limit::<N>(),
        )
    }
    let cap = claim_cap(body.len());
    let decoded = match cap {
        c if c == CAPS[0] => with::<T, { CAPS[0] }>(body),
        c if c == CAPS[1] => with::<T, { CAPS[1] }>(body),
        c if c == CAPS[2] => with::<T, { CAPS[2] }>(body),
        _ => with::<T, ALLOC_LIMIT>(body),
    };
    decoded.map_err(|e| match e {
        bincode::error::DecodeError::LimitExceeded => CodecError::Malformed(format!(
            "a length prefix claims more than {cap} bytes, beyond what {} received bytes can hold",
            body.len()
        )),
        other => CodecError::Malformed(other.to_string()),
    })
}

/// Encodes an envelope with its header.
///
/// # Errors
/// [`CodecError::Encode`] if bincode refuses the value.
pub fn encode(env: &Envelope) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    bincode::serde::encode_into_std_write(env, &mut out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes an envelope of at most `limit` bytes.
///
/// # Errors
/// [`CodecError::TooLarge`], [`CodecError::BadMagic`],
/// [`CodecError::UnsupportedVersion`] or [`CodecError::Malformed`].
pub fn decode(bytes: &[u8], limit: usize) -> Result<Envelope, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    if bytes.len() < HEADER || bytes[..2] != MAGIC {
        return Err(CodecError::BadMagic);
    }
    if bytes[2] != VERSION {
        return Err(CodecError::UnsupportedVersion(bytes[2]));
    }
    decode_body(&bytes[HEADER..])
}

fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let (value, used) = decode_capped::<T>(body)?;
    if used != body.len() {
        return Err(CodecError::Malformed(format!(
            "{} trailing bytes",
            body.len() - used
        )));
    }
    Ok(value)
}

/// Appends the encoding of one part (the metadata inside a signed
/// statement, `auth.rs`). Deterministic: the same value gives the same
/// bytes on every peer, so a relayed signature still checks.
pub(crate) fn encode_part_into<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    // Our metadata types always encode (no maps with non-string keys, no
    // sequences of unknown length); a failure would leave the bytes short,
    // and the signature would then simply not verify anywhere.
    let _ = bincode::serde::encode_into_std_write(value, out, config());
}

/// Encoded size of any serializable part, for fitting updates into a
/// datagram.
pub(crate) fn encoded_len<T: Serialize>(value: &T) -> usize {
    let mut counter = SizeCounter(0);
    // Writing to a counter cannot fail for our types; a failure would only
    // make the estimate 0, and the final encode is checked again.
    let _ = bincode::serde::encode_into_std_write(value, &mut counter, config());
    counter.0
}

struct SizeCounter(usize);

impl std::io::Write for SizeCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes a length prefix of `n` takes at most (bincode varint).
pub(crate) const fn varint_max() -> usize {
    9
}

/// Header bytes in front of every body.
pub(crate) const fn header_len() -> usize {
    HEADER
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body holding one string whose length prefix claims `claim` bytes
    /// (bincode varint: 253, then a u64), followed by `present` bytes.
    fn string_claiming(claim: u64, present: usize) -> Vec<u8> {
        let mut body = vec![253];
        body.extend_from_slice(&claim.to_le_bytes());
        body.resize(body.len() + present, b'x');
        body
    }

    #[test]
    fn a_datagram_claiming_more_than_it_can_hold_fails_at_the_prefix() {
        // 2 KiB received, 1 MiB claimed: under the old fixed 64 MiB cap
        // bincode allocated the 1 MiB, then found the bytes missing.
        let body = string_claiming(1 << 20, 2000);
        let err = decode_body::<String>(&body).expect_err("rejected");
        assert!(
            matches!(&err, CodecError::Malformed(m) if m.contains("claims more than 32768 bytes")),
            "{err}"
        );
        // 2^40: the same, fast.
        let err = decode_body::<String>(&string_claiming(1 << 40, 8)).expect_err("rejected");
        assert!(
            matches!(&err, CodecError::Malformed(m) if m.contains("claims more than")),
            "{err}"
        );
    }

    #[test]
    fn claim_caps_scale_with_the_bytes_received_up_to_the_fixed_limit() {
        assert_eq!(claim_cap(0), 32 * 1024);
        assert_eq!(claim_cap(1200), 32 * 1024);
        assert_eq!(claim_cap(2048), 32 * 1024);
        assert_eq!(claim_cap(2049), 1024 * 1024);
        assert_eq!(claim_cap(64 * 1024), 1024 * 1024);
        assert_eq!(claim_cap(1024 * 1024), 16 * 1024 * 1024);
        assert_eq!(claim_cap(8 * 1024 * 1024), ALLOC_LIMIT);
        assert_eq!(claim_cap(usize::MAX), ALLOC_LIMIT);
    }

    #[test]
    fn a_body_of_small_varints_stays_within_its_cap() {
        // The worst case for the claim: u64s of one byte each count 8.
        let values: Vec<u64> = vec![1; 2000];
        let mut body = Vec::new();
        bincode::serde::encode_into_std_write(&values, &mut body, config()).expect("encodes");
        let decoded: Vec<u64> = decode_body(&body).expect("decodes");
        assert_eq!(decoded, values);
    }
}
