//! The only place messages become bytes and back: a 2-byte magic, a version
//! byte, then the bincode body. Every decode has a size limit and rejects
//! trailing bytes; nothing here panics on peer input.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::CodecError;
use crate::proto::message::Envelope;

/// First bytes of every gossip message.
pub const MAGIC: [u8; 2] = *b"RG";
/// Wire version this build speaks. 2: statements carry signatures and
/// Alive statements their author's public key; push-pull sends signed
/// entries (`auth.rs`).
pub const VERSION: u8 = 2;
const HEADER: usize = 3;
/// Allocation cap inside bincode, whatever the channel limit: a length
/// prefix claiming more than this fails before anything is allocated.
const ALLOC_LIMIT: usize = 64 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<ALLOC_LIMIT>()
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
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(body, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
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
