//! Errors of the storage layer.

use thiserror::Error;

/// A storage operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// sled reported an error (IO, a locked or unreadable directory, or
    /// corruption it detected). For a write, it may or may not have been
    /// applied; for a flush, the writes before it may not be durable.
    #[error("sled: {0}")]
    Sled(String),
    /// A stored value did not decode. Nothing was changed.
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        /// What was being read (a record key in hex, or a meta entry).
        what: String,
        /// Why it did not decode.
        reason: String,
    },
    /// A record could not be encoded (larger than the size limit). Nothing
    /// was changed.
    #[error("cannot encode record: {0}")]
    Encode(String),
    /// A compare-and-swap on one key kept losing to concurrent writers; the
    /// record was not applied.
    #[error("too much contention on one key ({attempts} attempts)")]
    Contention {
        /// Attempts made.
        attempts: usize,
    },
    /// The background flush task panicked or was cancelled; the writes
    /// before it may not be durable.
    #[error("flush task failed: {0}")]
    FlushTask(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        Self::Sled(e.to_string())
    }
}
