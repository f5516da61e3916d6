//! The only place stored values become bytes and back (the only bincode
//! calls in this crate). A record is a format byte, then its bincode body;
//! a hint's value is its own format byte, its creation time (8 bytes,
//! big-endian), then the record's bincode body. Every decode has a size
//! limit and rejects trailing bytes. Meta entries are fixed-width
//! big-endian integers. Pure: no IO.
//!
//! Formats: 2 (written) carries the record's expiry; 1 (read only, written
//! before expiry existed) is a record without one.

use serde::Deserialize;

use crate::error::StoreError;
use crate::record::{Hlc, Record, Version};

/// Format byte in front of every encoded record.
pub(crate) const RECORD_FORMAT: u8 = 2;
/// Format byte in front of every encoded hint value.
pub(crate) const HINT_FORMAT: u8 = 2;
/// The format written before records had an expiry; still read.
const LEGACY_FORMAT: u8 = 1;

/// A record as format 1 stored it: no expiry.
#[derive(Deserialize)]
struct LegacyRecord {
    value: Option<Vec<u8>>,
    version: Version,
}
/// Largest encoded record body: a length prefix claiming more fails before
/// anything is allocated.
pub(crate) const RECORD_LIMIT: usize = 32 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<RECORD_LIMIT>()
}

/// Encodes a record behind its format byte.
pub(crate) fn encode_record(record: &Record) -> Result<Vec<u8>, StoreError> {
    let len = record.value.as_ref().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(len + 48);
    out.push(RECORD_FORMAT);
    bincode::serde::encode_into_std_write(record, &mut out, config())
        .map_err(|e| StoreError::Encode(e.to_string()))?;
    if out.len() - 1 > RECORD_LIMIT {
        return Err(StoreError::Encode(format!(
            "record of {} bytes exceeds the limit of {RECORD_LIMIT}",
            out.len() - 1
        )));
    }
    Ok(out)
}

/// Decodes a record; `what` names it in the error.
pub(crate) fn decode_record(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<Record, StoreError> {
    decode_record_body(bytes).map_err(|reason| StoreError::Corrupt {
        what: what(),
        reason,
    })
}

fn decode_record_body(bytes: &[u8]) -> Result<Record, String> {
    let Some((&format, body)) = bytes.split_first() else {
        return Err("empty value".to_owned());
    };
    match format {
        RECORD_FORMAT => decode_body(body),
        LEGACY_FORMAT => decode_legacy_body(body),
        _ => Err(format!("unknown record format {format}")),
    }
}

/// The version of an encoded record, read without decoding or copying its
/// value: the value's length prefix is read and the value skipped, then
/// only the version (and, in format 2, the expiry, for the trailing-byte
/// check) is decoded. Agrees with [`decode_record`] on every input it
/// accepts. `what` names the record in the error.
pub(crate) fn decode_record_version(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<Version, StoreError> {
    record_version(bytes).map_err(|reason| StoreError::Corrupt {
        what: what(),
        reason,
    })
}

fn record_version(bytes: &[u8]) -> Result<Version, String> {
    let Some((&format, body)) = bytes.split_first() else {
        return Err("empty value".to_owned());
    };
    if format != RECORD_FORMAT && format != LEGACY_FORMAT {
        return Err(format!("unknown record format {format}"));
    }
    if body.len() > RECORD_LIMIT {
        return Err(format!(
            "{} bytes exceed the limit of {RECORD_LIMIT}",
            body.len()
        ));
    }
    // The value: an Option tag, then (Some) a varint length and the bytes.
    let rest = match body.split_first() {
        Some((0, rest)) => rest,
        Some((1, rest)) => {
            let (len, used) = bincode::serde::decode_from_slice::<u64, _>(rest, config())
                .map_err(|e| e.to_string())?;
            let skip = usize::try_from(len)
                .ok()
                .and_then(|len| used.checked_add(len))
                .filter(|&end| end <= rest.len())
                .ok_or_else(|| format!("a value of {len} bytes in a record of {}", body.len()))?;
            &rest[skip..]
        }
        Some((tag, _)) => return Err(format!("invalid option tag {tag}")),
        None => return Err("empty record body".to_owned()),
    };
    if format == RECORD_FORMAT {
        decode_limited::<(Version, Option<u64>)>(rest).map(|(version, _)| version)
    } else {
        decode_limited::<Version>(rest)
    }
}

/// Encodes a hint's value: format byte, `created_ms`, then the record.
pub(crate) fn encode_hint_value(record: &Record, created_ms: u64) -> Result<Vec<u8>, StoreError> {
    let len = record.value.as_ref().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(len + 56);
    out.push(HINT_FORMAT);
    out.extend_from_slice(&created_ms.to_be_bytes());
    bincode::serde::encode_into_std_write(record, &mut out, config())
        .map_err(|e| StoreError::Encode(e.to_string()))?;
    let body = out.len() - 9;
    if body > RECORD_LIMIT {
        return Err(StoreError::Encode(format!(
            "record of {body} bytes exceeds the limit of {RECORD_LIMIT}"
        )));
    }
    Ok(out)
}

/// Decodes a hint's value into `(record, created_ms)`; `what` names it in
/// the error.
pub(crate) fn decode_hint_value(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<(Record, u64), StoreError> {
    decode_hint_body(bytes).map_err(|reason| StoreError::Corrupt {
        what: what(),
        reason,
    })
}

fn decode_hint_body(bytes: &[u8]) -> Result<(Record, u64), String> {
    let Some((&format, rest)) = bytes.split_first() else {
        return Err("empty value".to_owned());
    };
    if format != HINT_FORMAT && format != LEGACY_FORMAT {
        return Err(format!("unknown hint format {format}"));
    }
    let Some((created, body)) = rest.split_first_chunk::<8>() else {
        return Err(format!("{} bytes, too short for a hint", bytes.len()));
    };
    let record = if format == HINT_FORMAT {
        decode_body(body)?
    } else {
        decode_legacy_body(body)?
    };
    Ok((record, u64::from_be_bytes(*created)))
}

/// A record's bincode body, size-limited, with no trailing bytes.
fn decode_body(body: &[u8]) -> Result<Record, String> {
    decode_limited::<Record>(body)
}

/// A format-1 body: a record without an expiry.
fn decode_legacy_body(body: &[u8]) -> Result<Record, String> {
    let old = decode_limited::<LegacyRecord>(body)?;
    Ok(Record {
        value: old.value,
        version: old.version,
        expires_ms: None,
    })
}

fn decode_limited<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if body.len() > RECORD_LIMIT {
        return Err(format!(
            "{} bytes exceed the limit of {RECORD_LIMIT}",
            body.len()
        ));
    }
    let (decoded, used) =
        bincode::serde::decode_from_slice::<T, _>(body, config()).map_err(|e| e.to_string())?;
    if used != body.len() {
        return Err(format!("{} trailing bytes", body.len() - used));
    }
    Ok(decoded)
}

/// A generation as stored in meta.
pub(crate) fn encode_generation(generation: u32) -> [u8; 4] {
    generation.to_be_bytes()
}

/// A generation from meta.
pub(crate) fn decode_generation(bytes: &[u8]) -> Result<u32, StoreError> {
    let raw = <[u8; 4]>::try_from(bytes).map_err(|_| StoreError::Corrupt {
        what: "meta generation".to_owned(),
        reason: format!("{} bytes, expected 4", bytes.len()),
    })?;
    Ok(u32::from_be_bytes(raw))
}

/// An HLC reading as stored in meta: physical then logical, big-endian.
pub(crate) fn encode_hlc(hlc: Hlc) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&hlc.physical_ms.to_be_bytes());
    out[8..].copy_from_slice(&hlc.logical.to_be_bytes());
    out
}

/// An HLC reading from meta.
pub(crate) fn decode_hlc(bytes: &[u8]) -> Result<Hlc, StoreError> {
    let raw = <[u8; 12]>::try_from(bytes).map_err(|_| StoreError::Corrupt {
        what: "meta hlc floor".to_owned(),
        reason: format!("{} bytes, expected 12", bytes.len()),
    })?;
    let (physical, logical) = raw.split_at(8);
    Ok(Hlc::new(
        u64::from_be_bytes(physical.try_into().expect("split at 8 of 12")),
        u32::from_be_bytes(logical.try_into().expect("split at 8 of 12")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Version;
    use proptest::prelude::*;
    use ringkv_ring::NodeId;

    fn record(value: Option<Vec<u8>>, ms: u64, logical: u32, generation: u32) -> Record {
        let version = Version {
            hlc: Hlc::new(ms, logical),
            generation,
            node: NodeId::from_name("codec"),
        };
        Record {
            value,
            version,
            expires_ms: None,
        }
    }

    fn what() -> String {
        "test".to_owned()
    }

    proptest! {
        #[test]
        fn records_round_trip(value: Option<Vec<u8>>, ms: u64, logical: u32, generation: u32) {
            let r = record(value, ms, logical, generation);
            let bytes = encode_record(&r).unwrap();
            prop_assert_eq!(bytes[0], RECORD_FORMAT);
            prop_assert_eq!(decode_record(&bytes, what).unwrap(), r);
        }

        #[test]
        fn versions_read_without_the_value_agree_with_full_decodes(
            value: Option<Vec<u8>>, ms: u64, logical: u32, generation: u32, expires: Option<u64>,
        ) {
            let mut r = record(value, ms, logical, generation);
            r.expires_ms = expires;
            let bytes = encode_record(&r).unwrap();
            prop_assert_eq!(decode_record_version(&bytes, what).unwrap(), r.version);
            // Format 1: the record without its expiry, as written then.
            let mut legacy = vec![LEGACY_FORMAT];
            bincode::serde::encode_into_std_write((&r.value, &r.version), &mut legacy, config()).unwrap();
            prop_assert_eq!(decode_record_version(&legacy, what).unwrap(), r.version);
        }

        #[test]
        fn version_reads_of_junk_agree_with_full_decodes(bytes: Vec<u8>) {
            // Whatever the bytes: never a panic, and an Ok agrees with the
            // full decoder's.
            if let Ok(version) = decode_record_version(&bytes, what) {
                prop_assert_eq!(decode_record(&bytes, what).unwrap().version, version);
            }
        }

        #[test]
        fn expiring_records_round_trip(value: Vec<u8>, ms: u64, expires: u64) {
            let mut r = record(Some(value), ms, 0, 1);
            r.expires_ms = Some(expires);
            let bytes = encode_record(&r).unwrap();
            prop_assert_eq!(decode_record(&bytes, what).unwrap(), r.clone());
            let hint = encode_hint_value(&r, 9).unwrap();
            prop_assert_eq!(decode_hint_value(&hint, what).unwrap(), (r, 9));
        }

        #[test]
        fn format_1_records_and_hints_still_decode(value: Option<Vec<u8>>, ms: u64, created: u64) {
            // Format 1 is the record without its expiry field, as written
            // before expiry existed.
            let r = record(value, ms, 3, 4);
            let mut old = vec![LEGACY_FORMAT];
            bincode::serde::encode_into_std_write((&r.value, &r.version), &mut old, config()).unwrap();
            prop_assert_eq!(decode_record(&old, what).unwrap(), r.clone());
            let mut old_hint = vec![LEGACY_FORMAT];
            old_hint.extend_from_slice(&created.to_be_bytes());
            old_hint.extend_from_slice(&old[1..]);
            prop_assert_eq!(decode_hint_value(&old_hint, what).unwrap(), (r, created));
        }

        #[test]
        fn junk_is_rejected_without_panicking(bytes: Vec<u8>) {
            // Whatever the bytes, decoding returns (never panics); an Ok
            // is a record that round-trips.
            if let Ok(r) = decode_record(&bytes, what) {
                let again = encode_record(&r).unwrap();
                prop_assert_eq!(decode_record(&again, what).unwrap(), r);
            }
        }

        #[test]
        fn hint_values_round_trip(value: Option<Vec<u8>>, ms: u64, logical: u32, created: u64) {
            let r = record(value, ms, logical, 7);
            let bytes = encode_hint_value(&r, created).unwrap();
            prop_assert_eq!(bytes[0], HINT_FORMAT);
            prop_assert_eq!(decode_hint_value(&bytes, what).unwrap(), (r, created));
        }

        #[test]
        fn junk_hints_are_rejected_without_panicking(bytes: Vec<u8>) {
            if let Ok((r, created)) = decode_hint_value(&bytes, what) {
                let again = encode_hint_value(&r, created).unwrap();
                prop_assert_eq!(decode_hint_value(&again, what).unwrap(), (r, created));
            }
        }

        #[test]
        fn meta_entries_round_trip(generation: u32, ms: u64, logical: u32) {
            prop_assert_eq!(decode_generation(&encode_generation(generation)).unwrap(), generation);
            let hlc = Hlc::new(ms, logical);
            prop_assert_eq!(decode_hlc(&encode_hlc(hlc)).unwrap(), hlc);
        }
    }

    #[test]
    fn bad_format_trailing_bytes_and_huge_lengths_are_corrupt() {
        let r = record(Some(b"v".to_vec()), 1, 2, 3);
        let mut bytes = encode_record(&r).unwrap();
        assert!(decode_record(&[], what).is_err());
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(matches!(
            decode_record(&other, what),
            Err(StoreError::Corrupt { .. })
        ));
        bytes.push(0);
        assert!(matches!(
            decode_record(&bytes, what),
            Err(StoreError::Corrupt { .. })
        ));
        // Some(len) with a length prefix of u64::MAX: refused, no allocation.
        let mut huge = vec![RECORD_FORMAT, 1, 0xFF];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode_record(&huge, what),
            Err(StoreError::Corrupt { .. })
        ));
        let mut hint = encode_hint_value(&r, 5).unwrap();
        assert!(decode_hint_value(&hint[..8], what).is_err());
        hint.push(0);
        assert!(matches!(
            decode_hint_value(&hint, what),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(decode_hint_value(&[], what).is_err());
        assert!(decode_generation(&[1, 2, 3]).is_err());
        assert!(decode_hlc(&[0; 11]).is_err());
    }
}
