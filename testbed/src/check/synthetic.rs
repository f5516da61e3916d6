//! Synthetic histories of a correct register store, for the checker's
//! property tests and benchmark. Pure: a seed in, a [`History`] out.
//!
//! Each client runs its operations one after another; each operation gets a
//! random duration and a linearization point inside it. Applying the
//! operations in the order of their points to one register per key gives
//! every get its value, so the history is linearizable by construction.
//! Some puts are `unknown`: half of them take effect (at a point that may
//! lie after the client gave up), half never do. Some puts `fail` and never
//! take effect; some gets fail and return nothing.

use std::collections::HashMap;

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use crate::history::{History, Op, OpKind, Outcome};

/// The shape of a synthetic history.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spec {
    /// Operations in all.
    pub ops: usize,
    /// Distinct keys (at least 1).
    pub keys: u32,
    /// Concurrent clients (at least 1).
    pub clients: u32,
    /// Share of puts, 0 to 1.
    pub put_ratio: f64,
    /// Share of puts with outcome `unknown`.
    pub unknown_ratio: f64,
    /// Share of puts and of gets with outcome `fail`.
    pub fail_ratio: f64,
    /// Longest operation, µs (at least 1).
    pub latency_max_us: u64,
}

impl Default for Spec {
    /// The benchmark's history: 10,000 ops on 100 keys from 8 clients,
    /// half puts, 10% of them unknown, 1% failures.
    fn default() -> Self {
        Self {
            ops: 10_000,
            keys: 100,
            clients: 8,
            put_ratio: 0.5,
            unknown_ratio: 0.1,
            fail_ratio: 0.01,
            latency_max_us: 2_000,
        }
    }
}

/// A linearizable history of `spec`'s shape, the same for the same seed.
pub fn history(spec: &Spec, seed: u64) -> History {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let clients = spec.clients.max(1) as usize;
    let latency_max = spec.latency_max_us.max(1);
    let mut clocks = vec![0_u64; clients];
    // (linearization point, op); the point is None for ops without effect.
    let mut ops: Vec<(Option<u64>, Op)> = Vec::with_capacity(spec.ops);
    for n in 0..spec.ops {
        let client = n % clients;
        let start = clocks[client] + rng.random_range(0..=latency_max / 4);
        let end = start + rng.random_range(1..=latency_max);
        clocks[client] = end;
        let key = format!("k{}", rng.random_range(0..spec.keys.max(1)));
        let is_put = rng.random_bool(spec.put_ratio.clamp(0.0, 1.0));
        let outcome = if rng.random_bool(spec.fail_ratio.clamp(0.0, 1.0)) {
            Outcome::Fail
        } else if is_put && rng.random_bool(spec.unknown_ratio.clamp(0.0, 1.0)) {
            Outcome::Unknown
        } else {
            Outcome::Ok
        };
        let point = match outcome {
            Outcome::Ok => Some(rng.random_range(start..=end)),
            Outcome::Unknown if rng.random_bool(0.5) => {
                Some(rng.random_range(start..=end + latency_max))
            }
            _ => None,
        };
        let (kind, value) = if is_put {
            (OpKind::Put, Some(format!("{key}#{n}")))
        } else {
            (OpKind::Get, None)
        };
        ops.push((
            point,
            Op {
                id: 0,
                op: kind,
                key,
                value,
                version: None,
                outcome,
                start_us: start,
                end_us: end,
                peer: None,
                replicas: Vec::new(),
                final_read: false,
                error: None,
            },
        ));
    }
    apply_in_point_order(&mut ops);
    let mut ops: Vec<Op> = ops.into_iter().map(|(_, op)| op).collect();
    ops.sort_by_key(|o| (o.start_us, o.end_us));
    for (i, op) in ops.iter_mut().enumerate() {
        op.id = i as u64 + 1;
    }
    History {
        started_unix_ms: None,
        ops,
    }
}

/// Gives each successful get the value its key holds at its point.
fn apply_in_point_order(ops: &mut [(Option<u64>, Op)]) {
    let mut order: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].0.is_some()).collect();
    order.sort_by_key(|&i| (ops[i].0, i));
    let mut registers: HashMap<String, Option<String>> = HashMap::new();
    for i in order {
        let op = &mut ops[i].1;
        match op.op {
            OpKind::Put => {
                registers.insert(op.key.clone(), op.value.clone());
            }
            OpKind::Get => op.value = registers.get(&op.key).cloned().flatten(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_history() {
        let spec = Spec {
            ops: 200,
            ..Spec::default()
        };
        assert_eq!(history(&spec, 7), history(&spec, 7));
        assert_ne!(history(&spec, 7), history(&spec, 8));
        let h = history(&spec, 7);
        assert_eq!(h.ops.len(), 200);
        assert!(h.ops.iter().all(|o| o.start_us < o.end_us));
    }
}
