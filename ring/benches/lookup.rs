//! Ring lookup and build benchmarks: `cargo bench -p ringkv-ring`.
//!
//! Lookups are measured with the hash included (a 16-byte key in, a node
//! out). Each iteration looks up a batch of 4096 pre-generated keys, so the
//! timer's precision does not matter and caches see a realistic spread;
//! divan reports the batch time and items/s, and time per lookup is the
//! batch time / 4096.

use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use ringkv_ring::{NodeId, NodeSpec, Ring};

fn main() {
    divan::main();
}

const KEYS: usize = 4096;
const NODES: [usize; 3] = [10, 100, 1000];

fn view(nodes: usize) -> Vec<NodeSpec> {
    (0..nodes)
        .map(|i| NodeSpec::new(NodeId::from_name(&format!("node-{i}"))))
        .collect()
}

/// 16-byte keys from a fixed xorshift sequence (no rand dependency needed).
fn keys() -> Vec<[u8; 16]> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..KEYS)
        .map(|_| {
            let mut k = [0u8; 16];
            for chunk in k.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            k
        })
        .collect()
}

/// Runs `f` over every key once per iteration.
fn batch<T>(bencher: Bencher<'_, '_>, mut f: impl FnMut(&[u8; 16]) -> T) {
    let keys = keys();
    bencher.counter(ItemsCount::new(KEYS)).bench_local(|| {
        for key in &keys {
            black_box(f(black_box(key)));
        }
    });
}

#[divan::bench(args = NODES)]
fn ringkv_owner(bencher: Bencher<'_, '_>, nodes: usize) {
    let ring = Ring::build(&view(nodes), 150).expect("valid view");
    batch(bencher, |k| ring.owner(k));
}

/// consistent_hash_ring 0.8 (FNV-1a, sorted Vec + binary search): the
/// fastest published vnode ring we found, with the same 150 vnodes.
#[divan::bench(args = NODES)]
fn competitor_consistent_hash_ring(bencher: Bencher<'_, '_>, nodes: usize) {
    let names: Vec<String> = (0..nodes).map(|i| format!("node-{i}")).collect();
    let ring = consistent_hash_ring::RingBuilder::default()
        .vnodes(150)
        .nodes_iter(names.iter().cloned())
        .build();
    batch(bencher, |k| ring.get(k).len());
}

#[divan::bench(args = [100])]
fn ringkv_replicas3(bencher: Bencher<'_, '_>, nodes: usize) {
    let ring = Ring::build(&view(nodes), 150).expect("valid view");
    batch(bencher, |k| ring.replicas(k, 3));
}

/// The key hash alone (XXH3-64, with the hash-tag scan).
#[divan::bench]
fn key_position_only(bencher: Bencher<'_, '_>) {
    batch(bencher, |k| ringkv_ring::key_position(k));
}

/// The blake3 alternative for key positions, for the record (see
/// ring/src/token.rs for why positions use XXH3).
#[divan::bench]
fn blake3_hash_only(bencher: Bencher<'_, '_>) {
    batch(bencher, |k| {
        let h = blake3::hash(k);
        u64::from_be_bytes(h.as_bytes()[..8].try_into().expect("32 bytes"))
    });
}

#[divan::bench(args = NODES, sample_count = 20)]
fn ringkv_build(bencher: Bencher<'_, '_>, nodes: usize) {
    let v = view(nodes);
    bencher.bench_local(|| black_box(Ring::build(black_box(&v), 150).expect("valid view")));
}
