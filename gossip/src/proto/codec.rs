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
/// Wire version this build speaks by default, and the highest a
/// production build ever sends. 2: statements carry signatures and Alive
/// statements their author's public key; push-pull sends signed entries
/// (`auth.rs`). 3: the envelope carries the sender's ring-shape digest
/// after its view digest (`message.rs`).
///
/// The wire-version invariant (docs/upgrades.md): a frame of version `v`
/// is only sent to a peer known to accept `v`; every version in
/// `MIN_VERSION..=VERSION` decodes on every build that lists it; a change
/// to what a message carries takes a new version number.
pub const VERSION: u8 = 3;
/// Oldest wire version this build decodes and sends. Version 2 frames
/// lack the ring-shape digest; no supported build sends them.
pub const MIN_VERSION: u8 = 3;
/// Test-only wire version: a version-3 envelope followed by one extra
/// field ([`TestExtension`]). Spoken only by a peer whose configured
/// protocol maximum was raised to it (`RINGKV_TEST_PROTOCOL_MAX`, see
/// docs/upgrades.md), so a rolling upgrade can be rehearsed between two
/// "builds" that differ in nothing else.
pub const TEST_VERSION: u8 = 4;
/// Highest version this code can decode at all (if its peer-facing
/// maximum allows).
pub const MAX_KNOWN_VERSION: u8 = TEST_VERSION;

/// The field a [`TEST_VERSION`] frame adds after the envelope. Its value
/// is fixed; a frame carrying another value is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TestExtension {
    /// Always [`TestExtension::MARK`].
    pub mark: u32,
}

impl TestExtension {
    /// The one valid value.
    pub const MARK: u32 = 0x7e57_0004;
}

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

/// Encodes an envelope with its header at wire `version`.
///
/// # Errors
/// [`CodecError::UnsupportedVersion`] for a version outside
/// `MIN_VERSION..=MAX_KNOWN_VERSION`, [`CodecError::Encode`] if bincode
/// refuses the value.
pub fn encode_at(env: &Envelope, version: u8) -> Result<Vec<u8>, CodecError> {
    if !(MIN_VERSION..=MAX_KNOWN_VERSION).contains(&version) {
        return Err(CodecError::UnsupportedVersion {
            got: version,
            min: MIN_VERSION,
            max: MAX_KNOWN_VERSION,
        });
    }
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&MAGIC);
    out.push(version);
    bincode::serde::encode_into_std_write(env, &mut out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    if version >= TEST_VERSION {
        let ext = TestExtension {
            mark: TestExtension::MARK,
        };
        bincode::serde::encode_into_std_write(ext, &mut out, config())
            .map_err(|e| CodecError::Encode(e.to_string()))?;
    }
    Ok(out)
}

/// Encodes an envelope at [`VERSION`], which every supported peer
/// decodes.
///
/// # Errors
/// [`CodecError::Encode`] if bincode refuses the value.
pub fn encode(env: &Envelope) -> Result<Vec<u8>, CodecError> {
    encode_at(env, VERSION)
}

/// Decodes an envelope of at most `limit` bytes whose version is in
/// `MIN_VERSION..=max` (a peer's configured protocol maximum, itself at
/// most [`MAX_KNOWN_VERSION`]), returning it with its version.
///
/// # Errors
/// [`CodecError::TooLarge`], [`CodecError::BadMagic`],
/// [`CodecError::UnsupportedVersion`] or [`CodecError::Malformed`].
pub fn decode_versioned(bytes: &[u8], limit: usize, max: u8) -> Result<(Envelope, u8), CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    if bytes.len() < HEADER || bytes[..2] != MAGIC {
        return Err(CodecError::BadMagic);
    }
    let version = bytes[2];
    let max = max.min(MAX_KNOWN_VERSION);
    if version < MIN_VERSION || version > max {
        return Err(CodecError::UnsupportedVersion {
            got: version,
            min: MIN_VERSION,
            max,
        });
    }
    let body = &bytes[HEADER..];
    if version < TEST_VERSION {
        return Ok((decode_body(body)?, version));
    }
    let (env, used) = decode_capped::<Envelope>(body)?;
    let ext: TestExtension = decode_body(&body[used..])?;
    if ext.mark != TestExtension::MARK {
        return Err(CodecError::Malformed(format!(
            "version {version} extension carries {:#x}",
            ext.mark
        )));
    }
    Ok((env, version))
}

/// Decodes an envelope of at most `limit` bytes at any version this build
/// speaks by default (`MIN_VERSION..=VERSION`).
///
/// # Errors
/// As [`decode_versioned`].
pub fn decode(bytes: &[u8], limit: usize) -> Result<Envelope, CodecError> {
    decode_versioned(bytes, limit, VERSION).map(|(env, _)| env)
}

/// `bytes` (a frame this build encoded) at a version of at most `max`:
/// the same bytes when already there, else decoded and encoded again at
/// `max`. For a connection that negotiated less than the gate (docs/upgrades.md).
///
/// # Errors
/// As [`decode_versioned`] and [`encode_at`].
pub fn clamp(bytes: Vec<u8>, max: u8) -> Result<Vec<u8>, CodecError> {
    match bytes.get(2) {
        Some(&v) if v > max => {
            let (env, _) = decode_versioned(&bytes, usize::MAX, MAX_KNOWN_VERSION)?;
            encode_at(&env, max)
        }
        _ => Ok(bytes),
    }
}

/// The highest wire version two peers both speak, given each one's
/// `(min, max)` range; `None` if the ranges do not overlap.
#[must_use]
pub fn negotiate(ours: (u8, u8), theirs: (u8, u8)) -> Option<u8> {
    let low = ours.0.max(theirs.0);
    let high = ours.1.min(theirs.1);
    (low <= high).then_some(high)
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
    use crate::proto::message::{Body, ClusterId};
    use ringkv_ring::NodeId;

    fn sample() -> Envelope {
        Envelope {
            cluster: ClusterId([7; 16]),
            from: NodeId::from_name("n1"),
            from_addr: "127.0.0.1:7001".parse().expect("addr"),
            view: 11,
            shape: 12,
            body: Body::Gossip,
            updates: Vec::new(),
        }
    }

    #[test]
    fn every_supported_version_round_trips_and_reports_itself() {
        for version in MIN_VERSION..=MAX_KNOWN_VERSION {
            let bytes = encode_at(&sample(), version).expect("encodes");
            assert_eq!(bytes[2], version);
            let (env, got) =
                decode_versioned(&bytes, usize::MAX, MAX_KNOWN_VERSION).expect("decodes");
            assert_eq!((env, got), (sample(), version));
        }
        // The default pair speaks VERSION.
        let bytes = encode(&sample()).expect("encodes");
        assert_eq!(bytes[2], VERSION);
        assert_eq!(decode(&bytes, usize::MAX), Ok(sample()));
    }

    #[test]
    fn the_test_version_adds_exactly_its_extension_field() {
        let v3 = encode_at(&sample(), VERSION).expect("encodes");
        let v4 = encode_at(&sample(), TEST_VERSION).expect("encodes");
        assert!(v4.len() > v3.len(), "version 4 carries one field more");
        // A version-4 header on a version-3 body is missing the field.
        let mut short = v3.clone();
        short[2] = TEST_VERSION;
        assert!(matches!(
            decode_versioned(&short, usize::MAX, TEST_VERSION),
            Err(CodecError::Malformed(_))
        ));
        // A version-3 header on a version-4 body has trailing bytes.
        let mut long = v4;
        long[2] = VERSION;
        assert!(matches!(
            decode_versioned(&long, usize::MAX, TEST_VERSION),
            Err(CodecError::Malformed(m)) if m.contains("trailing")
        ));
    }

    #[test]
    fn a_peer_rejects_a_version_above_its_maximum_with_a_clear_error() {
        // A default (version 3) peer and a test-version frame.
        let v4 = encode_at(&sample(), TEST_VERSION).expect("encodes");
        let err = decode_versioned(&v4, usize::MAX, VERSION).expect_err("rejected");
        assert_eq!(
            err,
            CodecError::UnsupportedVersion {
                got: TEST_VERSION,
                min: MIN_VERSION,
                max: VERSION
            }
        );
        assert_eq!(
            err.to_string(),
            "unsupported wire version 4: this peer accepts versions 3..=3"
        );
        // Two above (vN+2): also refused, even by a peer that speaks vN+1.
        let mut v5 = encode_at(&sample(), VERSION).expect("encodes");
        v5[2] = VERSION + 2;
        assert!(matches!(
            decode_versioned(&v5, usize::MAX, TEST_VERSION),
            Err(CodecError::UnsupportedVersion {
                got: 5,
                min: 3,
                max: 4
            })
        ));
        // And nothing sends a version it cannot itself decode.
        assert!(encode_at(&sample(), VERSION + 2).is_err());
        assert!(encode_at(&sample(), MIN_VERSION - 1).is_err());
    }

    #[test]
    fn a_frame_is_clamped_to_its_connection_version() {
        let v4 = encode_at(&sample(), TEST_VERSION).expect("encodes");
        let v3 = clamp(v4.clone(), VERSION).expect("re-encodes");
        assert_eq!(v3, encode_at(&sample(), VERSION).expect("encodes"));
        assert_eq!(clamp(v4.clone(), TEST_VERSION).expect("as is"), v4);
        assert_eq!(clamp(v3.clone(), TEST_VERSION).expect("as is"), v3);
    }

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        assert_eq!(negotiate((3, 4), (3, 4)), Some(4));
        assert_eq!(negotiate((3, 4), (3, 3)), Some(3));
        assert_eq!(negotiate((3, 3), (3, 4)), Some(3));
        assert_eq!(negotiate((3, 5), (4, 6)), Some(5));
        assert_eq!(negotiate((3, 3), (4, 4)), None);
        assert_eq!(negotiate((5, 6), (3, 4)), None);
    }

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
