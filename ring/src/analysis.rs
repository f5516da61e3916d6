//! Exact balance analysis from arc lengths, and the sampled figures that
//! check it. Pure arithmetic over a [`Ring`]; nothing here samples unless
//! its name says so.

use serde::Serialize;

use crate::moves::moved_fraction;
use crate::node::NodeId;
use crate::ring::Ring;
use crate::token::{key_position, RING_SIZE};

/// One node's share of the key space.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeShare {
    /// The node.
    pub id: NodeId,
    /// Its weight.
    pub weight: u32,
    /// Its zone, if any.
    pub zone: Option<String>,
    /// Tokens it holds (`vnodes * weight`).
    pub tokens: u32,
    /// Fraction of the key space it owns as primary, exact from arcs.
    pub share: f64,
    /// Its share of all the copies stored at the analysed replication
    /// factor, exact from arcs; shares sum to 1 (multiply by the factor for
    /// the fraction of keys it holds a copy of, `nodetool status`'s
    /// "effective ownership").
    pub replica_share: f64,
    /// Its fair share: weight over total weight.
    pub expected: f64,
}

impl NodeShare {
    /// `share / expected`: 1.0 is exactly fair, 1.2 is 20% over.
    pub fn load(&self) -> f64 {
        self.share / self.expected
    }
}

/// Exact shares of every node, in the ring's node order (by id), with
/// replica shares for replication factor `rf`.
pub fn shares(ring: &Ring, rf: usize) -> Vec<NodeShare> {
    let nodes = ring.nodes();
    let mut primary = vec![0u128; nodes.len()];
    let mut replica = vec![0u128; nodes.len()];
    let mut picked = Vec::new();
    for (range, t) in ring.arcs() {
        let len = range.len();
        primary[ring.owner_index(t) as usize] += len;
        picked.clear();
        ring.replica_indices(t, rf, &mut picked);
        for &i in &picked {
            replica[i as usize] += len;
        }
    }
    let total_weight: f64 = nodes.iter().map(|n| f64::from(n.weight)).sum();
    let copies = rf.clamp(1, nodes.len()) as f64;
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| NodeShare {
            id: n.id,
            weight: n.weight,
            zone: n.zone.clone(),
            tokens: ring.vnodes() * n.weight,
            share: primary[i] as f64 / RING_SIZE,
            replica_share: replica[i] as f64 / RING_SIZE / copies,
            expected: f64::from(n.weight) / total_weight,
        })
        .collect()
}

/// How evenly the key space is spread, judged against each node's fair
/// share so that weighted nodes are not called unbalanced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Balance {
    /// Number of nodes.
    pub nodes: usize,
    /// The most loaded node's load over the mean load (1.0 is perfect).
    pub max_over_avg: f64,
    /// The least loaded node's load over the mean load.
    pub min_over_avg: f64,
    /// Standard deviation of node shares, as a fraction of the key space.
    pub stddev: f64,
    /// Coefficient of variation of load (standard deviation over mean):
    /// the relative spread, comparable across cluster sizes.
    pub cv: f64,
}

/// Balance figures over a set of shares (population statistics).
pub fn balance(shares: &[NodeShare]) -> Balance {
    let n = shares.len().max(1) as f64;
    let loads: Vec<f64> = shares.iter().map(NodeShare::load).collect();
    let mean_load = loads.iter().sum::<f64>() / n;
    let var_load = loads.iter().map(|l| (l - mean_load).powi(2)).sum::<f64>() / n;
    let mean_share = shares.iter().map(|s| s.share).sum::<f64>() / n;
    let var_share = shares
        .iter()
        .map(|s| (s.share - mean_share).powi(2))
        .sum::<f64>()
        / n;
    let max = loads.iter().copied().fold(f64::MIN, f64::max);
    let min = loads.iter().copied().fold(f64::MAX, f64::min);
    Balance {
        nodes: shares.len(),
        max_over_avg: max / mean_load,
        min_over_avg: min / mean_load,
        stddev: var_share.sqrt(),
        cv: var_load.sqrt() / mean_load,
    }
}

/// What a topology change costs, exactly, next to the alternatives.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MoveCost {
    /// Fraction of the key space whose owner (first replica) changes.
    pub owner_moved: f64,
    /// Fraction of the key space whose replica set (of `rf`) changes.
    pub replicas_moved: f64,
    /// Number of range moves at `rf` (what handoff would plan).
    pub range_moves: usize,
    /// Fraction that `hash % N` placement over the same node lists would
    /// move.
    pub modulo_moved: f64,
    /// The least any placement could move: the weight that changes hands.
    pub ideal_moved: f64,
}

/// The exact cost of going from `old` to `new` at replication factor `rf`.
/// `old_list` and `new_list` are the node lists a `hash % N` placement
/// would index, in an operator's order (joins appended, leaves removed).
pub fn move_cost(
    old: &Ring,
    new: &Ring,
    rf: usize,
    old_list: &[NodeId],
    new_list: &[NodeId],
) -> MoveCost {
    MoveCost {
        owner_moved: moved_fraction(old, new, 1),
        replicas_moved: moved_fraction(old, new, rf),
        range_moves: crate::moves::moves(old, new, rf).len(),
        modulo_moved: modulo_moved_fraction(old_list, new_list),
        ideal_moved: ideal_moved_fraction(old, new),
    }
}

/// Fraction of uniformly hashed keys whose node changes when placement is
/// `list[hash % len]` and the list goes from `old` to `new`. Over one cycle
/// of `lcm(a, b)` hashes a key stays exactly when `old[h % a] == new[h % b]`;
/// for a node at index i in `old` and j in `new` that happens once per cycle
/// when `i ≡ j (mod gcd(a, b))`, and never otherwise.
pub fn modulo_moved_fraction(old: &[NodeId], new: &[NodeId]) -> f64 {
    let (a, b) = (old.len(), new.len());
    if a == 0 || b == 0 {
        return 1.0;
    }
    let g = gcd(a, b);
    let lcm = (a / g) as f64 * b as f64;
    let stays = old
        .iter()
        .enumerate()
        .filter(|(i, id)| {
            new.iter()
                .position(|n| n == *id)
                .is_some_and(|j| i % g == j % g)
        })
        .count();
    1.0 - stays as f64 / lcm
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The least fraction of keys any placement must move: the total variation
/// distance between the fair shares (weight over total weight) before and
/// after. Adding one node to N equal ones gives 1/(N+1).
pub fn ideal_moved_fraction(old: &Ring, new: &Ring) -> f64 {
    let fair = |ring: &Ring| -> Vec<(NodeId, f64)> {
        let total: f64 = ring.nodes().iter().map(|n| f64::from(n.weight)).sum();
        ring.nodes()
            .iter()
            .map(|n| (n.id, f64::from(n.weight) / total))
            .collect()
    };
    let (before, after) = (fair(old), fair(new));
    let share_in = |list: &[(NodeId, f64)], id: NodeId| {
        list.iter().find(|(i, _)| *i == id).map_or(0.0, |(_, s)| *s)
    };
    after
        .iter()
        .map(|&(id, s)| (s - share_in(&before, id)).max(0.0))
        .sum()
}

/// Key counts from sampling: how many of `keys` each node owns, in the
/// ring's node order.
pub fn sample_owners<K: AsRef<[u8]>>(ring: &Ring, keys: impl IntoIterator<Item = K>) -> Vec<u64> {
    let mut counts = vec![0u64; ring.nodes().len()];
    for key in keys {
        let owner = ring.owner_of(key_position(key.as_ref()));
        let i = ring.node_index(&owner).expect("owner is in the ring");
        counts[i] += 1;
    }
    counts
}

/// Sampled move counts for `keys` going from `old` to `new`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SampledMoves {
    /// Keys sampled.
    pub keys: u64,
    /// Keys whose owner changed.
    pub owner_moved: u64,
    /// Keys whose `list[position % len]` changed (modulo placement).
    pub modulo_moved: u64,
}

/// Samples `keys` through both rings, and through modulo placement over
/// `old_list` and `new_list`.
pub fn sample_moves<K: AsRef<[u8]>>(
    old: &Ring,
    new: &Ring,
    old_list: &[NodeId],
    new_list: &[NodeId],
    keys: impl IntoIterator<Item = K>,
) -> SampledMoves {
    let (a, b) = (old_list.len().max(1) as u64, new_list.len().max(1) as u64);
    let mut out = SampledMoves::default();
    for key in keys {
        let pos = key_position(key.as_ref());
        out.keys += 1;
        out.owner_moved += u64::from(old.owner_of(pos) != new.owner_of(pos));
        let (i, j) = ((pos.0 % a) as usize, (pos.0 % b) as usize);
        out.modulo_moved += u64::from(old_list.get(i) != new_list.get(j));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeSpec;

    fn ring_of(n: usize, vnodes: u32) -> Ring {
        let view: Vec<_> = (0..n)
            .map(|i| NodeSpec::new(NodeId::from_name(&format!("node-{i}"))))
            .collect();
        Ring::build(&view, vnodes).unwrap()
    }

    #[test]
    fn shares_sum_to_one() {
        let ring = ring_of(7, 30);
        let s = shares(&ring, 3);
        let total: f64 = s.iter().map(|s| s.share).sum();
        let replicas: f64 = s.iter().map(|s| s.replica_share).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        assert!((replicas - 1.0).abs() < 1e-9, "{replicas}");
    }

    fn ids(n: usize) -> Vec<NodeId> {
        (0..n)
            .map(|i| NodeId::from_name(&format!("node-{i}")))
            .collect()
    }

    #[test]
    fn modulo_fraction_matches_known_values() {
        let all = ids(12);
        let f = |a: usize, b: usize| modulo_moved_fraction(&all[..a], &all[..b]);
        assert!((f(10, 11) - 10.0 / 11.0).abs() < 1e-12);
        assert!((f(4, 2) - 0.5).abs() < 1e-12);
        assert_eq!(f(5, 5), 0.0);
        assert!((f(2, 3) - (1.0 - 2.0 / 6.0)).abs() < 1e-12);
    }

    #[test]
    fn modulo_fraction_counts_a_swap_at_the_same_size() {
        // Remove node-1 of 5 and append a new node: still 5 nodes, but every
        // index from 1 on now names another node; only index 0 stays.
        let old = ids(5);
        let mut new: Vec<NodeId> = old.iter().filter(|id| **id != old[1]).copied().collect();
        new.push(NodeId::from_name("new"));
        assert!((modulo_moved_fraction(&old, &new) - 0.8).abs() < 1e-12);
        // Brute force over one lcm cycle agrees, also for unequal sizes.
        for (c, d) in [
            (&old[..], &new[..]),
            (&old[..4], &new[..3]),
            (&old[1..], &new[..]),
        ] {
            let (a, b) = (c.len(), d.len());
            let lcm = a * b / gcd(a, b);
            let moved = (0..lcm).filter(|h| c[h % a] != d[h % b]).count();
            let want = moved as f64 / lcm as f64;
            assert!(
                (want - modulo_moved_fraction(c, d)).abs() < 1e-12,
                "{a} -> {b}"
            );
        }
    }

    #[test]
    fn ideal_for_one_join_is_one_over_n_plus_one() {
        let (a, b) = (ring_of(9, 4), ring_of(10, 4));
        assert!((ideal_moved_fraction(&a, &b) - 0.1).abs() < 1e-12);
        assert!((ideal_moved_fraction(&b, &a) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn sampled_shares_agree_with_exact_shares() {
        let ring = ring_of(5, 50);
        let counts = sample_owners(&ring, (0..200_000u32).map(u32::to_le_bytes));
        for (s, c) in shares(&ring, 1).iter().zip(counts) {
            let sampled = c as f64 / 200_000.0;
            // 200k samples: standard error about 0.1 percentage points.
            assert!(
                (sampled - s.share).abs() < 0.006,
                "{sampled} vs {}",
                s.share
            );
        }
    }

    #[test]
    fn balance_of_perfect_shares_is_flat() {
        let s: Vec<NodeShare> = (0..4)
            .map(|i| NodeShare {
                id: NodeId::from_name(&i.to_string()),
                weight: 1,
                zone: None,
                tokens: 1,
                share: 0.25,
                replica_share: 0.25,
                expected: 0.25,
            })
            .collect();
        let b = balance(&s);
        assert!((b.max_over_avg - 1.0).abs() < 1e-12);
        assert!(b.cv.abs() < 1e-12 && b.stddev.abs() < 1e-12);
    }
}
