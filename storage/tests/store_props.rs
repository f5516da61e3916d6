//! Property and model tests of the sled store: newest version wins in any
//! arrival order, applying is idempotent, range scans select exactly the
//! range, and random puts, deletes, tombstone collections and restarts
//! match a `BTreeMap` model.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::open_retrying;
use proptest::prelude::*;
use ringkv_ring::{key_position, NodeId, Token, TokenRange};
use ringkv_storage::{keys, Clock, Hlc, Record, Store, Version};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds")
}

fn node(i: u8) -> NodeId {
    NodeId::from_name(&format!("node-{i}"))
}

/// A record for one of a few keys, with a version from a small space so
/// that keys get several competing versions.
#[derive(Clone, Debug)]
struct Write {
    key: usize,
    record: Record,
}

fn write_strategy(keys: usize) -> impl Strategy<Value = Write> {
    (
        0..keys,
        0u64..6,
        0u32..3,
        0u32..3,
        0u8..3,
        proptest::option::weighted(0.8, proptest::collection::vec(any::<u8>(), 0..8)),
        proptest::option::weighted(0.3, 0u64..10),
    )
        .prop_map(
            |(key, ms, logical, generation, n, value, expires_ms)| Write {
                key,
                record: Record {
                    expires_ms: expires_ms.filter(|_| value.is_some()),
                    value,
                    version: Version {
                        hlc: Hlc::new(ms, logical),
                        generation,
                        node: node(n),
                    },
                },
            },
        )
}

/// Writes with at most one record per (key, version), shuffled.
fn batch_strategy() -> impl Strategy<Value = (Vec<Vec<u8>>, Vec<Write>)> {
    (
        proptest::collection::btree_set(proptest::collection::vec(any::<u8>(), 0..6), 1..5),
        proptest::collection::vec(write_strategy(5), 1..40),
    )
        .prop_flat_map(|(keys, writes)| {
            let keys: Vec<Vec<u8>> = keys.into_iter().collect();
            let mut seen = BTreeSet::new();
            let writes: Vec<Write> = writes
                .into_iter()
                .map(|mut w| {
                    w.key %= keys.len();
                    w
                })
                .filter(|w| seen.insert((w.key, w.record.version)))
                .collect();
            (Just(keys), Just(writes).prop_shuffle())
        })
}

/// The newest record per key.
fn newest(writes: &[Write]) -> BTreeMap<usize, Record> {
    let mut out: BTreeMap<usize, Record> = BTreeMap::new();
    for w in writes {
        let slot = out.entry(w.key).or_insert_with(|| w.record.clone());
        if slot.is_superseded_by(&w.record) {
            *slot = w.record.clone();
        }
    }
    out
}

fn full_scan(store: &Store) -> Vec<(Vec<u8>, Record)> {
    store
        .scan(&TokenRange::new(Token(0), Token(0)))
        .collect::<Result<_, _>>()
        .expect("scan decodes")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn newest_version_wins_whatever_the_arrival_order((keys, writes) in batch_strategy()) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rt = runtime();
        let mut model: BTreeMap<usize, Record> = BTreeMap::new();
        for (i, w) in writes.iter().enumerate() {
            let expect_change = model.get(&w.key).is_none_or(|old| old.is_superseded_by(&w.record));
            // Alternate durable and batched applies; both follow one rule.
            let changed = if i % 2 == 0 {
                rt.block_on(store.apply(&keys[w.key], w.record.clone())).unwrap()
            } else {
                store.apply_nosync(&keys[w.key], w.record.clone()).unwrap()
            };
            prop_assert_eq!(changed, expect_change);
            if changed {
                model.insert(w.key, w.record.clone());
            }
        }
        rt.block_on(store.sync()).unwrap();
        let want = newest(&writes);
        prop_assert_eq!(&model, &want);
        for (i, key) in keys.iter().enumerate() {
            prop_assert_eq!(store.get(key).unwrap(), want.get(&i).cloned());
        }
        prop_assert_eq!(store.len(), want.len());
    }

    #[test]
    fn applying_the_same_batch_twice_changes_nothing((keys, writes) in batch_strategy()) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rt = runtime();
        for w in &writes {
            store.apply_nosync(&keys[w.key], w.record.clone()).unwrap();
        }
        rt.block_on(store.sync()).unwrap();
        let before = full_scan(&store);
        for w in &writes {
            let changed = rt.block_on(store.apply(&keys[w.key], w.record.clone())).unwrap();
            prop_assert!(!changed, "second apply of {:?} changed the store", w);
        }
        prop_assert_eq!(full_scan(&store), before);
    }

    #[test]
    fn scan_returns_exactly_the_keys_in_the_range(
        keys in proptest::collection::btree_set(proptest::collection::vec(any::<u8>(), 0..8), 0..40),
        start in prop_oneof![any::<u64>().prop_map(Err), any::<prop::sample::Index>().prop_map(Ok)],
        end in prop_oneof![any::<u64>().prop_map(Err), any::<prop::sample::Index>().prop_map(Ok)],
        full in proptest::bool::weighted(0.1),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let version = Version { hlc: Hlc::new(1, 0), generation: 1, node: node(0) };
        for key in &keys {
            store.apply_nosync(key, Record::put(key.clone(), version)).unwrap();
        }
        // Range edges: arbitrary positions, or exactly some key's position
        // (so the exclusive start and inclusive end are exercised).
        let positions: Vec<u64> = keys.iter().map(|k| key_position(k).0).collect();
        let pick = |edge: Result<prop::sample::Index, u64>| match edge {
            Ok(i) if !positions.is_empty() => positions[i.index(positions.len())],
            Ok(i) => i.index(usize::MAX) as u64,
            Err(p) => p,
        };
        let (start, end) = (pick(start), pick(end));
        let range = if full { TokenRange::new(Token(end), Token(end)) } else { TokenRange::new(Token(start), Token(end)) };

        let got: Vec<(Vec<u8>, Record)> = store.scan(&range).collect::<Result<_, _>>().unwrap();
        let mut want: Vec<&Vec<u8>> = keys.iter().filter(|k| range.contains(key_position(k))).collect();
        want.sort_by_key(|k| keys::encode(k));
        let got_keys: Vec<&Vec<u8>> = got.iter().map(|(k, _)| k).collect();
        prop_assert_eq!(got_keys, want);
        for (key, record) in &got {
            prop_assert_eq!(record.value.as_ref(), Some(key));
        }
    }
}

/// One step of the model test.
#[derive(Clone, Debug)]
enum Op {
    Put {
        key: usize,
        value: Vec<u8>,
    },
    Delete {
        key: usize,
    },
    /// A write from another node with an old version (loses unless the key
    /// is absent).
    Stale {
        key: usize,
    },
    /// A value that expires `ttl` ms from now.
    PutExpiring {
        key: usize,
        ttl: u64,
    },
    /// Advance the wall clock by this many ms.
    Sleep(u64),
    /// Collect tombstones older than `now - grace`.
    Collect {
        grace: u64,
    },
    /// Drop the store and reopen the same directory.
    Restart,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..6usize, proptest::collection::vec(any::<u8>(), 0..6)).prop_map(|(key, value)| Op::Put { key, value }),
        2 => (0..6usize, 0..80u64).prop_map(|(key, ttl)| Op::PutExpiring { key, ttl }),
        3 => (0..6usize).prop_map(|key| Op::Delete { key }),
        1 => (0..6usize).prop_map(|key| Op::Stale { key }),
        2 => (0..50u64).prop_map(Op::Sleep),
        1 => (0..60u64).prop_map(|grace| Op::Collect { grace }),
        2 => Just(Op::Restart),
    ]
}

struct Node {
    store: Store,
    clock: Clock,
}

impl Node {
    fn open(dir: &Path) -> Self {
        // The previous instance may have been dropped just now.
        let store = open_retrying(dir);
        let clock = Clock::new(node(1), store.generation(), store.hlc_floor());
        Self { store, clock }
    }
}

fn model_key(i: usize) -> Vec<u8> {
    format!("key-{i}").into_bytes()
}

fn check(store: &Store, model: &BTreeMap<Vec<u8>, Record>) -> Result<(), TestCaseError> {
    for i in 0..6 {
        let key = model_key(i);
        prop_assert_eq!(
            store.get(&key).unwrap(),
            model.get(&key).cloned(),
            "key {}",
            i
        );
    }
    prop_assert_eq!(store.len(), model.len());
    prop_assert_eq!(store.is_empty(), model.is_empty());
    let mut scanned: Vec<(Vec<u8>, Record)> = full_scan(store);
    scanned.sort_by(|a, b| a.0.cmp(&b.0));
    let want: Vec<(Vec<u8>, Record)> = model.iter().map(|(k, r)| (k.clone(), r.clone())).collect();
    prop_assert_eq!(scanned, want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn random_ops_with_restarts_match_a_btreemap(ops in proptest::collection::vec(op_strategy(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let mut model: BTreeMap<Vec<u8>, Record> = BTreeMap::new();
        let mut n = Node::open(dir.path());
        let first_generation = n.store.generation();
        let mut generation = first_generation;
        let mut wall = 1_000u64;
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    let record = Record::put(value, n.clock.tick(wall));
                    prop_assert!(rt.block_on(n.store.apply(&model_key(key), record.clone())).unwrap());
                    model.insert(model_key(key), record);
                }
                Op::PutExpiring { key, ttl } => {
                    let record = Record::put_expiring(b"ttl".to_vec(), n.clock.tick(wall), wall + ttl);
                    prop_assert!(rt.block_on(n.store.apply(&model_key(key), record.clone())).unwrap());
                    model.insert(model_key(key), record);
                }
                Op::Delete { key } => {
                    let record = Record::tombstone(n.clock.tick(wall));
                    prop_assert!(rt.block_on(n.store.apply(&model_key(key), record.clone())).unwrap());
                    model.insert(model_key(key), record);
                }
                Op::Stale { key } => {
                    let record = Record::put(b"stale".to_vec(), Version { hlc: Hlc::new(1, 0), generation: 0, node: node(2) });
                    let absent = !model.contains_key(&model_key(key));
                    prop_assert_eq!(rt.block_on(n.store.apply(&model_key(key), record.clone())).unwrap(), absent);
                    if absent {
                        model.insert(model_key(key), record);
                    }
                }
                Op::Sleep(ms) => wall += ms,
                Op::Collect { grace } => {
                    let before = wall.saturating_sub(grace);
                    let dead: Vec<Vec<u8>> = model
                        .iter()
                        .filter(|(_, r)| {
                            let tombstone = r.is_tombstone() && r.version.hlc.physical_ms < before;
                            let expired = r.expires_ms.is_some_and(|at| at < before);
                            tombstone || expired
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                    prop_assert_eq!(n.store.collect_tombstones(before).unwrap(), dead.len());
                    for k in dead {
                        model.remove(&k);
                    }
                }
                Op::Restart => {
                    n.store.store_hlc_floor(n.clock.last()).unwrap();
                    let floor = n.clock.last();
                    drop(n);
                    n = Node::open(dir.path());
                    if model.is_empty() {
                        // An empty store starts a new generation.
                        prop_assert!(n.store.generation() > generation);
                    } else {
                        prop_assert_eq!(n.store.generation(), generation, "a normal restart keeps the generation");
                    }
                    generation = n.store.generation();
                    prop_assert_eq!(n.store.hlc_floor(), floor);
                }
            }
            check(&n.store, &model)?;
        }
        prop_assert!(generation >= first_generation);
    }
}

#[test]
fn a_new_store_gets_a_generation_and_keeps_it_once_written() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let first = Store::open(dir.path()).unwrap();
    let g1 = first.generation();
    assert!(g1 > 0);
    assert_eq!(first.hlc_floor(), Hlc::default());
    let v = Version {
        hlc: Hlc::new(5, 0),
        generation: g1,
        node: node(1),
    };
    assert!(rt
        .block_on(first.apply(b"k", Record::put(b"v".to_vec(), v)))
        .unwrap());
    first.store_hlc_floor(Hlc::new(9, 1)).unwrap();
    // Lower marks are ignored.
    first.store_hlc_floor(Hlc::new(3, 0)).unwrap();
    rt.block_on(first.sync()).unwrap();
    drop(first);
    let again = open_retrying(dir.path());
    assert_eq!(again.generation(), g1);
    assert_eq!(again.hlc_floor(), Hlc::new(9, 1));
    assert_eq!(again.len(), 1);
    drop(again);

    // The same directory with its records gone (a lost disk, recreated):
    // a new store, whose generation comes from the wall clock in seconds
    // (the old one is gone with the disk), so never below the old one. It
    // is strictly above it unless the disk was lost within the second the
    // old store was created (as here, possibly).
    std::fs::remove_dir_all(dir.path()).unwrap();
    let fresh = Store::open(dir.path()).unwrap();
    assert!(fresh.is_empty());
    assert!(fresh.generation() >= g1);
    drop(fresh);
    // Reopened while still empty: the known generation is bumped.
    let empty_again = open_retrying(dir.path());
    assert!(empty_again.generation() > g1);
}

#[test]
fn tombstones_are_collected_only_past_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let at = |ms| Version {
        hlc: Hlc::new(ms, 0),
        generation: 1,
        node: node(1),
    };
    store
        .apply_nosync(b"old", Record::tombstone(at(10)))
        .unwrap();
    store
        .apply_nosync(b"young", Record::tombstone(at(100)))
        .unwrap();
    store
        .apply_nosync(b"live", Record::put(b"v".to_vec(), at(1)))
        .unwrap();
    assert_eq!(store.len(), 3);
    assert_eq!(store.collect_tombstones(10).unwrap(), 0);
    assert_eq!(store.collect_tombstones(11).unwrap(), 1);
    assert_eq!(store.get(b"old").unwrap(), None);
    assert!(store.get(b"young").unwrap().unwrap().is_tombstone());
    assert_eq!(store.len(), 2);
    assert_eq!(store.collect_tombstones(u64::MAX).unwrap(), 1);
    assert_eq!(store.len(), 1);
    assert_eq!(
        store.get(b"live").unwrap().unwrap().value.as_deref(),
        Some(&b"v"[..])
    );
}

#[test]
fn expired_values_read_as_absent_and_are_collected_only_past_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let at = |ms| Version {
        hlc: Hlc::new(ms, 0),
        generation: 1,
        node: node(1),
    };
    store
        .apply_nosync(b"ttl", Record::put_expiring(b"v".to_vec(), at(10), 50))
        .unwrap();
    // An older plain value arriving late does not replace the expiring
    // one, expired or not: newest version wins.
    assert!(!store
        .apply_nosync(b"ttl", Record::put(b"old".to_vec(), at(5)))
        .unwrap());
    let held = store.get(b"ttl").unwrap().unwrap();
    assert_eq!(held.live_value(49), Some(&b"v"[..]));
    assert_eq!(held.live_value(50), None);
    // Not yet expired at the cut-off, or expired exactly at it: kept.
    assert_eq!(store.collect_tombstones(40).unwrap(), 0);
    assert_eq!(store.collect_tombstones(50).unwrap(), 0);
    assert_eq!(store.len(), 1);
    assert_eq!(store.collect_tombstones(51).unwrap(), 1);
    assert_eq!(store.get(b"ttl").unwrap(), None);
    assert!(store.is_empty());
}

#[test]
fn concurrent_appliers_share_flushes_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..16u8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..20u64 {
                    let v = Version {
                        hlc: Hlc::new(i, 0),
                        generation: 1,
                        node: node(t),
                    };
                    // Every task writes the shared key and its own keys.
                    store
                        .apply(b"shared", Record::put(vec![t], v))
                        .await
                        .unwrap();
                    assert!(store
                        .apply(format!("{t}/{i}").as_bytes(), Record::put(vec![t], v))
                        .await
                        .unwrap());
                }
            }));
        }
        for task in tasks {
            tokio::time::timeout(std::time::Duration::from_secs(60), task)
                .await
                .expect("appliers finish in time")
                .unwrap();
        }
    });
    assert_eq!(store.len(), 16 * 20 + 1);
    let shared = store.get(b"shared").unwrap().unwrap();
    let top = (0..16u8).map(node).max().unwrap();
    assert_eq!(shared.version.node, top);
    assert_eq!(shared.version.hlc, Hlc::new(19, 0));
}
