//! Mutation switches: each re-introduces one known bug at its exact place,
//! so a test can show that the testbed's checkers catch it (docs/testbed.md,
//! "Does the checker catch real bugs?"). Only a test build can turn one on:
//! in every other build each switch is the constant `false`, and nothing
//! (no flag, no request) reaches it.
//!
//! One exception, for a bug only a real process can show: a peer process
//! of a **debug** build reads `RINGKV_TEST_MUTATIONS` (a comma-separated
//! list: `ack-before-flush`) once, at its first check, and logs an error
//! when one is on. A release build never reads it ([`on_process`] is the
//! constant `false` there), so no deployed peer can be mutated.

use ringkv_gossip::NodeId;

/// A bug a test can re-introduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mutation {
    /// A quorum read returns the newest answer without writing it back
    /// (neither the blocking repair nor the background repair of its stale
    /// answerers): a value one replica holds is returned, and a later read
    /// of the others misses it.
    ReadWithoutWriteBack,
    /// A put skips the ABD write's first phase (learning the newest
    /// version a read quorum holds) yet still counts a replica's "I hold a
    /// newer version" as an acknowledgement: a write acknowledged after
    /// another can be ordered before it.
    WriteWithoutFirstPhase,
    /// The clean-up drops a range it no longer replicates without waiting
    /// for the range's replicas to confirm (announce) they hold it.
    CleanupUnconfirmed,
    /// A replica acknowledges a write before the flush that makes it
    /// durable: a kill -9 of its replicas right after loses it. Only a real
    /// process can show this (sled flushes its buffers when dropped), so it
    /// is switched per process ([`on_process`]).
    AckBeforeFlush,
}

/// The environment variable a debug build's peer reads its process-wide
/// mutations from (a release build reads none).
#[cfg(debug_assertions)]
pub(crate) const PROCESS_MUTATIONS_ENV: &str = "RINGKV_TEST_MUTATIONS";

/// Whether this process runs with `m`: named in [`PROCESS_MUTATIONS_ENV`],
/// in a debug build.
#[cfg(debug_assertions)]
pub(crate) fn on_process(m: Mutation) -> bool {
    static ON: std::sync::OnceLock<Vec<Mutation>> = std::sync::OnceLock::new();
    ON.get_or_init(|| {
        let on: Vec<Mutation> = std::env::var(PROCESS_MUTATIONS_ENV)
            .unwrap_or_default()
            .split(',')
            .filter_map(|name| match name.trim() {
                "ack-before-flush" => Some(Mutation::AckBeforeFlush),
                _ => None,
            })
            .collect();
        if !on.is_empty() {
            tracing::error!(
                mutations = ?on,
                "this peer runs with test mutations ({PROCESS_MUTATIONS_ENV}): it is deliberately unsafe"
            );
        }
        on
    })
    .contains(&m)
}

/// Whether this process runs with `m`: never, in a release build.
#[cfg(not(debug_assertions))]
pub(crate) const fn on_process(_m: Mutation) -> bool {
    false
}

/// Whether the peer `me` runs with `m` (a test sets it: `test::set_peer`).
#[cfg(not(test))]
pub(crate) const fn on_peer(_me: &NodeId, _m: Mutation) -> bool {
    false
}

/// Whether the current thread runs with `m` (a test sets it:
/// `test::set_thread`).
#[cfg(not(test))]
pub(crate) const fn on_thread(_m: Mutation) -> bool {
    false
}

#[cfg(test)]
pub(crate) use test::{on_peer, on_thread};

#[cfg(test)]
pub(crate) mod test {
    use std::cell::RefCell;
    use std::sync::Mutex;

    use super::{Mutation, NodeId};

    /// Peers (by node id: tests in parallel never share one) and their
    /// mutations.
    static PEERS: Mutex<Vec<(NodeId, Mutation)>> = Mutex::new(Vec::new());

    thread_local! {
        static THREAD: RefCell<Vec<Mutation>> = const { RefCell::new(Vec::new()) };
    }

    /// Turns `m` on for the peer `me`, or off.
    pub(crate) fn set_peer(me: NodeId, m: Mutation, on: bool) {
        let mut peers = PEERS.lock().expect("mutation lock");
        peers.retain(|(id, x)| !(*id == me && *x == m));
        if on {
            peers.push((me, m));
        }
    }

    /// Whether the peer `me` runs with `m`.
    pub(crate) fn on_peer(me: &NodeId, m: Mutation) -> bool {
        PEERS
            .lock()
            .expect("mutation lock")
            .iter()
            .any(|(id, x)| id == me && *x == m)
    }

    /// Turns `m` on for the current thread (pure code run by a test), or
    /// off.
    pub(crate) fn set_thread(m: Mutation, on: bool) {
        THREAD.with(|t| {
            let mut t = t.borrow_mut();
            t.retain(|x| *x != m);
            if on {
                t.push(m);
            }
        });
    }

    /// Whether the current thread runs with `m`.
    pub(crate) fn on_thread(m: Mutation) -> bool {
        THREAD.with(|t| t.borrow().contains(&m))
    }
}
