//! History checker benchmarks: `cargo bench -p ringkv-testbed`.
//!
//! Each iteration checks one synthetic linearizable history of 10,000
//! operations (`check::synthetic`, seed 1): by default 100 keys, 8
//! clients, half puts, 10% of the puts unknown, 1% failures. divan's
//! time per iteration is the time per 10,000 operations (one thread, so
//! CPU time on an idle core).

use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use ringkv_testbed::check::{self, linear, synthetic};

fn main() {
    divan::main();
}

const OPS: usize = 10_000;

fn bench_on(
    bencher: Bencher<'_, '_>,
    spec: synthetic::Spec,
    f: fn(&ringkv_testbed::history::History),
) {
    let history = synthetic::history(&spec, 1);
    bencher
        .counter(ItemsCount::new(OPS))
        .bench_local(|| f(black_box(&history)));
}

fn spec(keys: u32, clients: u32) -> synthetic::Spec {
    synthetic::Spec {
        ops: OPS,
        keys,
        clients,
        ..synthetic::Spec::default()
    }
}

/// The linearizability search alone.
#[divan::bench(args = [(100, 8), (10, 8), (1, 8), (100, 32), (1, 32)])]
fn linearizability(bencher: Bencher<'_, '_>, (keys, clients): (u32, u32)) {
    bench_on(bencher, spec(keys, clients), |h| {
        let s = linear::check(h, &linear::Config::default());
        assert!(s.is_clean() && s.keys_unknown.is_empty());
    });
}

/// The version checks alone (lost, stale, phantom, failed-write reads).
#[divan::bench]
fn versions(bencher: Bencher<'_, '_>) {
    bench_on(bencher, spec(100, 8), |h| {
        black_box(check::check(h));
    });
}

/// What `ringkv testbed check` runs: both.
#[divan::bench]
fn both(bencher: Bencher<'_, '_>) {
    bench_on(bencher, spec(100, 8), |h| {
        black_box(check::check_linearizable(h, &linear::Config::default()));
    });
}
