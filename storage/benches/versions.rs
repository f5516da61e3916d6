//! Listing the keys and versions of a range (`ringkv keys`, handoff
//! diffs) over large values: `Store::versions`, which reads only each
//! record's version, against the old path (a page of whole records, then
//! their versions), in the same run. 64 records of 1 MiB, all in sled's
//! cache. `cargo bench -p ringkv-storage --bench versions`.

use std::sync::OnceLock;

use divan::Bencher;
use ringkv_ring::{NodeId, Token, TokenRange};
use ringkv_storage::{Hlc, Record, Store, Version};

const RECORDS: usize = 64;
const VALUE: usize = 1 << 20;

fn main() {
    divan::main();
}

/// One store for every bench, filled once (the temp dir lives as long as
/// the process).
fn store() -> &'static Store {
    static STORE: OnceLock<(tempfile::TempDir, Store)> = OnceLock::new();
    &STORE
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = Store::open(dir.path()).expect("a store");
            let node = NodeId::from_name("bench");
            for i in 0..RECORDS {
                let version = Version {
                    hlc: Hlc::new(1_000 + i as u64, 0),
                    generation: 1,
                    node,
                };
                let key = format!("key-{i}").into_bytes();
                store
                    .apply_nosync(&key, Record::put(vec![i as u8; VALUE], version))
                    .expect("applied");
            }
            (dir, store)
        })
        .1
}

fn all() -> TokenRange {
    TokenRange::new(Token(0), Token(0))
}

#[divan::bench]
fn versions_only(bencher: Bencher<'_, '_>) {
    let store = store();
    bencher.bench(|| {
        let (versions, _) = store.versions(&all(), None, RECORDS).expect("listed");
        assert_eq!(versions.len(), RECORDS);
        versions
    });
}

#[divan::bench]
fn old_path_whole_records(bencher: Bencher<'_, '_>) {
    let store = store();
    bencher.bench(|| {
        let page = store
            .page(&all(), None, RECORDS, usize::MAX)
            .expect("a page");
        let versions: Vec<(Vec<u8>, Version)> = page
            .records
            .into_iter()
            .map(|(k, r)| (k, r.version))
            .collect();
        assert_eq!(versions.len(), RECORDS);
        versions
    });
}
