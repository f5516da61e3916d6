//! Hinted handoff storage through the public API: round trip, newest hint
//! per (target, key), compare-and-swap removal, the byte limit, expiry,
//! reopen.

mod common;

use common::open_retrying;
use ringkv_ring::NodeId;
use ringkv_storage::{Hint, HintLimits, Hlc, Record, Store, Version};

fn node(name: &str) -> NodeId {
    NodeId::from_name(name)
}

fn hint(target: &str, key: &str, value: &str, ms: u64, created_ms: u64) -> Hint {
    let version = Version {
        hlc: Hlc::new(ms, 0),
        generation: 1,
        node: node("coordinator"),
    };
    Hint {
        target: node(target),
        key: key.as_bytes().to_vec(),
        record: Record::put(value.as_bytes().to_vec(), version),
        created_ms,
    }
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store opens");
    (dir, store)
}

async fn add(store: &Store, h: &Hint) -> bool {
    store
        .add_hint(h.clone(), HintLimits::default())
        .await
        .expect("hint stored")
}

#[tokio::test]
async fn hints_round_trip_oldest_first_and_are_removed() {
    let (_dir, store) = open();
    let newer = hint("b", "k1", "v1", 10, 2_000);
    let older = hint("b", "k2", "v2", 11, 1_000);
    let other = hint("c", "k1", "v3", 12, 500);
    for h in [&newer, &older, &other] {
        assert!(add(&store, h).await);
    }
    assert_eq!(store.hint_stats().0, 3);
    assert_eq!(
        store.hints_for(&node("b"), 10).unwrap(),
        vec![older.clone(), newer.clone()]
    );
    assert_eq!(store.hints_for(&node("b"), 1).unwrap(), vec![older.clone()]);
    assert_eq!(
        store.hints_for(&node("c"), 10).unwrap(),
        vec![other.clone()]
    );
    assert!(store.hints_for(&node("nobody"), 10).unwrap().is_empty());

    store.remove_hint(&older).unwrap();
    assert_eq!(
        store.hints_for(&node("b"), 10).unwrap(),
        vec![newer.clone()]
    );
    // Removing twice is harmless.
    store.remove_hint(&older).unwrap();
    store.remove_hint(&newer).unwrap();
    store.remove_hint(&other).unwrap();
    assert_eq!(store.hint_stats(), (0, 0));
    assert!(store.hint_targets().unwrap().is_empty());
}

#[tokio::test]
async fn the_newest_hint_per_target_and_key_wins() {
    let (_dir, store) = open();
    let first = hint("b", "k", "old", 10, 1_000);
    let second = hint("b", "k", "new", 20, 2_000);
    assert!(add(&store, &first).await);
    let (_, bytes_one) = store.hint_stats();
    assert!(add(&store, &second).await);
    assert_eq!(
        store.hints_for(&node("b"), 10).unwrap(),
        vec![second.clone()]
    );
    // An older version arriving late changes nothing but is not a drop.
    assert!(add(&store, &hint("b", "k", "late", 15, 3_000)).await);
    assert_eq!(
        store.hints_for(&node("b"), 10).unwrap(),
        vec![second.clone()]
    );
    // One hint, sized as the one kept (same value length as the first).
    assert_eq!(store.hint_stats(), (1, bytes_one));
}

#[tokio::test]
async fn remove_hint_keeps_a_newer_replacement() {
    let (_dir, store) = open();
    let delivered = hint("b", "k", "old", 10, 1_000);
    assert!(add(&store, &delivered).await);
    // While `delivered` was in flight, a newer write missed the replica.
    let replacement = hint("b", "k", "new", 20, 1_500);
    assert!(add(&store, &replacement).await);
    store.remove_hint(&delivered).unwrap();
    assert_eq!(
        store.hints_for(&node("b"), 10).unwrap(),
        vec![replacement.clone()]
    );
    assert_eq!(store.hint_stats().0, 1);
    // Same version, other creation time: not the same hint either.
    let mut twin = replacement.clone();
    twin.created_ms += 1;
    store.remove_hint(&twin).unwrap();
    assert_eq!(store.hint_stats().0, 1);
}

#[tokio::test]
async fn a_hint_over_max_bytes_is_refused_and_nothing_is_stored() {
    let (_dir, store) = open();
    let first = hint("b", "k1", "v", 10, 1_000);
    assert!(add(&store, &first).await);
    let (count, bytes) = store.hint_stats();
    let limits = HintLimits {
        max_bytes: bytes + 10,
        ..HintLimits::default()
    };
    let big = hint("b", "k2", "a value too large to fit", 11, 1_000);
    assert!(!store.add_hint(big, limits).await.unwrap());
    assert_eq!(store.hint_stats(), (count, bytes));
    assert_eq!(
        store.hints_for(&node("b"), 10).unwrap(),
        vec![first.clone()]
    );
    // A replacement that does not grow the total still fits.
    let replacement = hint("b", "k1", "w", 20, 2_000);
    assert!(store.add_hint(replacement.clone(), limits).await.unwrap());
    assert_eq!(store.hints_for(&node("b"), 10).unwrap(), vec![replacement]);
    // A replacement that grows past the limit is refused, the old one kept.
    let grown = hint("b", "k1", "a value too large to fit", 30, 3_000);
    assert!(!store.add_hint(grown, limits).await.unwrap());
    assert_eq!(store.hint_stats(), (count, bytes));
}

#[tokio::test]
async fn hints_expire_by_age() {
    let (_dir, store) = open();
    let limits = HintLimits {
        max_age_ms: 1_000,
        ..HintLimits::default()
    };
    let old_b = hint("b", "k1", "v", 10, 100);
    let old_c = hint("c", "k1", "v", 10, 999);
    let fresh_b = hint("b", "k2", "v", 10, 1_000);
    let fresh_c = hint("c", "k2", "v", 10, 5_000);
    for h in [&old_b, &old_c, &fresh_b, &fresh_c] {
        assert!(add(&store, h).await);
    }
    // Cutoff 1_000: strictly older goes.
    assert_eq!(store.expire_hints(2_000, limits).unwrap(), 2);
    assert_eq!(store.hints_for(&node("b"), 10).unwrap(), vec![fresh_b]);
    assert_eq!(store.hints_for(&node("c"), 10).unwrap(), vec![fresh_c]);
    assert_eq!(store.hint_stats().0, 2);
    assert_eq!(store.expire_hints(2_000, limits).unwrap(), 0);
    // A clock before the epoch plus max age expires nothing.
    assert_eq!(store.expire_hints(0, limits).unwrap(), 0);
    assert_eq!(store.expire_hints(u64::MAX, limits).unwrap(), 2);
    assert_eq!(store.hint_stats(), (0, 0));
    assert!(store.hint_targets().unwrap().is_empty());
}

#[tokio::test]
async fn hints_survive_a_reopen_and_stats_are_recounted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hints = [
        hint("b", "k1", "v1", 10, 1_000),
        hint("b", "k2", "v22", 11, 2_000),
        hint("c", "k1", "v333", 12, 3_000),
    ];
    let stats = {
        let store = Store::open(dir.path()).unwrap();
        for h in &hints {
            assert!(add(&store, h).await);
        }
        // Replaced and removed hints leave nothing behind.
        assert!(add(&store, &hint("d", "k", "gone", 1, 1)).await);
        store.remove_hint(&hint("d", "k", "gone", 1, 1)).unwrap();
        store.hint_stats()
    };
    assert_eq!(stats.0, 3);
    // Reopened right after the drop above.
    let store = open_retrying(dir.path());
    assert_eq!(store.hint_stats(), stats);
    assert_eq!(
        store.hints_for(&node("b"), 10).unwrap(),
        hints[..2].to_vec()
    );
    assert_eq!(
        store.hints_for(&node("c"), 10).unwrap(),
        hints[2..].to_vec()
    );
}

#[tokio::test]
async fn hint_targets_lists_exactly_the_targets_with_hints() {
    let (_dir, store) = open();
    let names = ["b", "c", "d", "e"];
    let mut stored = Vec::new();
    for (i, name) in names.iter().enumerate() {
        for k in 0..3 {
            let h = hint(name, &format!("k{k}"), "v", 10, i as u64);
            assert!(add(&store, &h).await);
            stored.push(h);
        }
    }
    let mut expected: Vec<NodeId> = names.iter().map(|n| node(n)).collect();
    expected.sort();
    assert_eq!(store.hint_targets().unwrap(), expected);
    // Emptying one target drops it from the list.
    for h in stored.iter().filter(|h| h.target == node("c")) {
        store.remove_hint(h).unwrap();
    }
    expected.retain(|n| *n != node("c"));
    assert_eq!(store.hint_targets().unwrap(), expected);
    // Extreme ids: the first and last possible.
    let mut low = hint("x", "k", "v", 10, 0);
    low.target = NodeId([0; 16]);
    let mut high = hint("x", "k", "v", 10, 0);
    high.target = NodeId([0xFF; 16]);
    assert!(add(&store, &low).await);
    assert!(add(&store, &high).await);
    let targets = store.hint_targets().unwrap();
    assert_eq!(targets.first(), Some(&NodeId([0; 16])));
    assert_eq!(targets.last(), Some(&NodeId([0xFF; 16])));
    assert_eq!(targets.len(), expected.len() + 2);
}
