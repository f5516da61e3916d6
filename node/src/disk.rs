//! A full disk: a peer whose data dir has less free space than
//! `--min-free-space` refuses writes (as coordinator and as replica) with a
//! clear error, never an acknowledgement, reports 503 on /health, keeps
//! serving reads, and takes writes again by itself once space is freed
//! (with some slack, so it does not flap at the threshold). The rule is
//! [`Space::handle_sample`] (pure); [`free_bytes`] reads the file system.

use std::path::Path;

/// The default free-space floor: 64 MiB, room for sled's segments and
/// the flushes in flight.
pub(crate) const MIN_FREE_DEFAULT: u64 = 64 << 20;

/// What the data dir's free space allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Space {
    /// Whether writes are refused.
    pub(crate) full: bool,
    /// The last sample: bytes available to this process.
    pub(crate) available: u64,
}

impl Space {
    /// Takes a sample of `available` bytes against `min_free`: full below
    /// it; once full, writable again only above one and a half times it.
    /// Returns whether `full` changed.
    pub(crate) fn handle_sample(&mut self, available: u64, min_free: u64) -> bool {
        let before = self.full;
        self.available = available;
        self.full = if self.full {
            available < min_free.saturating_add(min_free / 2)
        } else {
            available < min_free
        };
        before != self.full
    }

    /// The reason writes are refused, if they are.
    pub(crate) fn refusal(&self, min_free: u64) -> Option<String> {
        self.full.then(|| {
            format!(
                "this peer's disk is full: {} free in its data dir, below --min-free-space {}",
                human(self.available),
                human(min_free)
            )
        })
    }
}

/// Bytes available to unprivileged writers on the file system of `path`.
///
/// # Errors
/// The file system cannot be queried.
pub(crate) fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

fn human(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let mib = bytes as f64 / f64::from(1u32 << 20);
    format!("{mib:.1} MiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_below_the_floor_and_writable_again_only_with_slack() {
        let mut s = Space::default();
        assert!(!s.handle_sample(100, 64));
        assert!(s.refusal(64).is_none());
        assert!(s.handle_sample(63, 64), "full");
        assert!(s.refusal(64).is_some_and(|r| r.contains("disk is full")));
        assert!(!s.handle_sample(80, 64), "still full: 80 < 96");
        assert!(s.full);
        assert!(s.handle_sample(96, 64), "writable again");
        assert!(!s.full);
    }

    #[test]
    fn the_free_space_of_a_real_directory_is_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(free_bytes(dir.path()).expect("statvfs") > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }
}
