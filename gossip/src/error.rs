//! Errors of the membership layer.

use thiserror::Error;

/// A message could not be encoded or decoded. Decoding errors come from
/// peer input: the message is dropped and counted, nothing else changes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    /// The bytes did not start with the ringkv gossip magic.
    #[error("not a ringkv gossip message (bad magic)")]
    BadMagic,
    /// The sender speaks a wire version this build does not.
    #[error("unsupported wire version {got}: this peer accepts versions {min}..={max}")]
    UnsupportedVersion {
        /// Version byte of the frame.
        got: u8,
        /// Oldest version this peer accepts.
        min: u8,
        /// Newest version this peer accepts.
        max: u8,
    },
    /// The input was longer than the limit for its channel.
    #[error("message of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Bytes offered.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The body did not decode (truncated, malformed, or trailing bytes).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Encoding failed; only possible for values that cannot fit a limit.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// A configuration value is out of its valid range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid gossip config: {field}: {reason}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}
