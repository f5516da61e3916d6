//! What the storage integration tests share: reopening a store whose
//! previous handle was just dropped.

use std::path::Path;
use std::time::{Duration, Instant};

use ringkv_storage::Store;

/// How long [`open_retrying`] waits for the lock: a loaded 2-core machine
/// may not run a dropped store's flusher thread for a while.
const LOCK_PATIENCE: Duration = Duration::from_secs(30);

/// Opens the store in `dir`, retrying while sled's lock on it is still
/// held: a dropped `Store`'s flusher thread keeps the lock until it has
/// finished its last flush, which on a loaded machine may be a while after
/// the drop (or, for a child process, after the parent's drop). Any other
/// error, or the lock still held after [`LOCK_PATIENCE`], panics.
pub(crate) fn open_retrying(dir: &Path) -> Store {
    let start = Instant::now();
    loop {
        match Store::open(dir) {
            Ok(store) => return store,
            Err(e)
                if start.elapsed() < LOCK_PATIENCE
                    && e.to_string().contains("could not acquire lock") =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!(
                "cannot open the store in {} (after {:?}): {e}",
                dir.display(),
                start.elapsed()
            ),
        }
    }
}
