//! Listing versions reads no values: a counting allocator measures what
//! `Store::versions` allocates over records of 1 MiB values, against the
//! old path (a page of whole records, then their versions) in the same
//! run. Bytes allocated, not time: deterministic on any machine. One test
//! in this binary, so no other thread allocates while it measures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use ringkv_ring::{NodeId, Token, TokenRange};
use ringkv_storage::{Hlc, Record, Store, Version};

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated while `f` runs, and its result.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATED.load(Relaxed);
    let out = f();
    (ALLOCATED.load(Relaxed) - before, out)
}

const VALUE: usize = 1 << 20;
const RECORDS: usize = 16;

#[test]
fn listing_versions_of_large_values_allocates_less_than_one_value() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("a store");
    let node = NodeId::from_name("alloc");
    let mut want = Vec::new();
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
        want.push((key, version));
    }
    let all = TokenRange::new(Token(0), Token(0));
    // Warm sled's cache the same way for both paths.
    let _ = store.versions(&all, None, RECORDS).expect("listed");

    let (old, (old_versions, _)) = allocated_by(|| {
        let page = store.page(&all, None, RECORDS, usize::MAX).expect("a page");
        let versions: Vec<(Vec<u8>, Version)> = page
            .records
            .into_iter()
            .map(|(k, r)| (k, r.version))
            .collect();
        (versions, page.next)
    });
    let (new, (mut versions, next)) =
        allocated_by(|| store.versions(&all, None, RECORDS).expect("listed"));
    eprintln!(
        "versions of {RECORDS} records of {VALUE} bytes: old path allocated {old} bytes, versions() {new} bytes ({:.0}x less)",
        old as f64 / new.max(1) as f64
    );
    assert_eq!(next, None);
    let mut old_versions = old_versions;
    old_versions.sort();
    versions.sort();
    want.sort();
    assert_eq!(versions, want, "the listing is complete and right");
    assert_eq!(old_versions, want);
    assert!(
        new < VALUE,
        "listing versions allocated {new} bytes, more than one value ({VALUE})"
    );
    assert!(old >= RECORDS * VALUE, "the old path allocated only {old}");
}
