//! Ring A → ring B as range moves: for every range whose replica set
//! changes, the replicas before and after, the nodes that gain it and the
//! nodes that lose it. Handoff plans its transfers from this.
//!
//! Exactness: the union of both rings' tokens cuts the ring into arcs on
//! which both rings are constant (no token of either ring falls inside an
//! arc), so comparing each arc's replica sets is exact, not sampled.
//! Neighbouring arcs with the same before and after lists are merged, across
//! the wrap too. A change of order alone (same set, another primary) moves
//! no data and is not a move.

use serde::Serialize;

use crate::node::NodeId;
use crate::ring::Ring;
use crate::token::{Token, TokenRange};

/// One range whose replica set differs between two rings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RangeMove {
    /// The positions concerned, `(start, end]`.
    pub range: TokenRange,
    /// Replicas in the old ring, primary first.
    pub old: Vec<NodeId>,
    /// Replicas in the new ring, primary first.
    pub new: Vec<NodeId>,
    /// In `new` but not in `old`: these nodes must receive the range.
    pub gained: Vec<NodeId>,
    /// In `old` but not in `new`: these nodes may drop the range once the
    /// gainers hold it.
    pub lost: Vec<NodeId>,
}

/// Every range whose set of `n` replicas differs between `old` and `new`,
/// in ring order starting after position 0.
pub fn moves(old: &Ring, new: &Ring, n: usize) -> Vec<RangeMove> {
    let bounds = union_bounds(old, new);
    let mut out: Vec<RangeMove> = Vec::new();
    let mut cache_old = ReplicaCache::default();
    let mut cache_new = ReplicaCache::default();
    let last = *bounds.last().expect("rings have tokens");
    for (j, &here) in bounds.iter().enumerate() {
        let prev = if j == 0 { last } else { bounds[j - 1] };
        let range = TokenRange::new(Token(prev), Token(here));
        let before = cache_old.get(old, here, n);
        let after = cache_new.get(new, here, n);
        if same_set(before, after) {
            continue;
        }
        match out.last_mut() {
            Some(m) if m.range.end == range.start && m.old == before && m.new == after => {
                m.range.end = range.end;
            }
            _ => out.push(RangeMove {
                range,
                old: before.to_vec(),
                new: after.to_vec(),
                gained: after
                    .iter()
                    .filter(|id| !before.contains(id))
                    .copied()
                    .collect(),
                lost: before
                    .iter()
                    .filter(|id| !after.contains(id))
                    .copied()
                    .collect(),
            }),
        }
    }
    merge_wrap_moves(&mut out);
    out
}

/// The fraction of the key space whose replica set (of `n`) changes.
pub fn moved_fraction(old: &Ring, new: &Ring, n: usize) -> f64 {
    moves(old, new, n).iter().map(|m| m.range.fraction()).sum()
}

/// Sorted, deduplicated token values of both rings.
fn union_bounds(a: &Ring, b: &Ring) -> Vec<u64> {
    let mut all: Vec<u64> = Vec::with_capacity(a.token_count() + b.token_count());
    all.extend(a.arcs().map(|(r, _)| r.end.0));
    all.extend(b.arcs().map(|(r, _)| r.end.0));
    all.sort_unstable();
    all.dedup();
    all
}

fn same_set(a: &[NodeId], b: &[NodeId]) -> bool {
    a.len() == b.len() && a.iter().all(|id| b.contains(id))
}

/// Remembers the replica list of the last token index asked for: arcs are
/// visited in ring order, so consecutive arcs mostly share one.
#[derive(Default)]
struct ReplicaCache {
    token: Option<usize>,
    picked: Vec<u32>,
    ids: Vec<NodeId>,
}

impl ReplicaCache {
    fn get(&mut self, ring: &Ring, pos: u64, n: usize) -> &[NodeId] {
        let t = ring.token_index(pos);
        if self.token != Some(t) {
            self.picked.clear();
            ring.replica_indices(t, n, &mut self.picked);
            self.ids = ring.ids(&self.picked);
            self.token = Some(t);
        }
        &self.ids
    }
}

fn merge_wrap_moves(out: &mut Vec<RangeMove>) {
    if out.len() < 2 {
        return;
    }
    let last = out.len() - 1;
    let (first, tail) = (&out[0], &out[last]);
    if tail.range.end == first.range.start && tail.old == first.old && tail.new == first.new {
        let start = tail.range.start;
        out.pop();
        out[0].range.start = start;
    }
}

/// Merges the last range into the first when they meet across the wrap and
/// carry the same data.
pub(crate) fn merge_wrap<T: PartialEq>(out: &mut Vec<(TokenRange, T)>) {
    if out.len() < 2 {
        return;
    }
    let last = out.len() - 1;
    if out[last].0.end == out[0].0.start && out[last].1 == out[0].1 {
        let (range, _) = out.pop().expect("len >= 2");
        out[0].0.start = range.start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeSpec;

    fn ring(names: &[&str], vnodes: u32) -> Ring {
        let view: Vec<_> = names
            .iter()
            .map(|n| NodeSpec::new(NodeId::from_name(n)))
            .collect();
        Ring::build(&view, vnodes).unwrap()
    }

    #[test]
    fn identical_rings_have_no_moves() {
        let a = ring(&["a", "b", "c"], 10);
        assert!(moves(&a, &a.clone(), 3).is_empty());
        assert_eq!(moved_fraction(&a, &a, 1), 0.0);
    }

    #[test]
    fn joining_node_gains_and_nothing_else_changes_hands() {
        let a = ring(&["a", "b", "c", "d"], 16);
        let b = ring(&["a", "b", "c", "d", "e"], 16);
        let e = NodeId::from_name("e");
        let ms = moves(&a, &b, 2);
        assert!(!ms.is_empty());
        for m in &ms {
            assert_eq!(m.gained, vec![e], "{m:?}");
            assert_eq!(m.lost.len(), 1, "{m:?}");
        }
    }

    #[test]
    fn one_node_to_two_splits_the_full_range() {
        let a = ring(&["a"], 1);
        let b = ring(&["a", "b"], 1);
        let ms = moves(&a, &b, 1);
        let bid = NodeId::from_name("b");
        assert_eq!(ms.len(), 1);
        assert_eq!(ms[0].gained, vec![bid]);
        let frac: f64 = ms.iter().map(|m| m.range.fraction()).sum();
        let ranges: Vec<_> = b.ranges().filter(|(_, o)| *o == bid).collect();
        assert!((frac - ranges[0].0.fraction()).abs() < 1e-12);
        // Back again, the same range moves the other way.
        let back = moves(&b, &a, 1);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].lost, vec![bid]);
        assert_eq!(back[0].range, ms[0].range);
    }

    #[test]
    fn replacing_every_node_moves_the_whole_ring() {
        let a = ring(&["a", "b"], 4);
        let b = ring(&["c", "d"], 4);
        let total: f64 = moves(&a, &b, 1).iter().map(|m| m.range.fraction()).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }
}
