//! Handoff planning: when the ring changes, which ranges a node must pull
//! and from whom, and which ranges it holds that it no longer replicates.
//! Pure: the caller says which nodes are live.
//!
//! A node plans against the last ring it held completely (its *ready*
//! ring), not against whatever ring came before the current one: if the
//! ring changes twice while it is still pulling, the second plan still
//! covers everything the first one did not finish, and the transfers it
//! did finish are simply repeated as no-ops (writes are idempotent).

use crate::moves::moves;
use crate::node::NodeId;
use crate::ring::Ring;
use crate::token::{Token, TokenRange};

/// A range `me` must pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pull {
    /// The positions concerned, `(start, end]`.
    pub range: TokenRange,
    /// The nodes that held the range in the old ring and are live, in the
    /// order to try them. The order is rotated per range, so the ranges a
    /// node gains are spread over their holders instead of all pulled
    /// from the first one. Empty when no live node held it (a new cluster,
    /// or every holder is gone): there is nothing to pull.
    pub sources: Vec<NodeId>,
}

/// The ranges `me` replicates (at replication factor `n`) in `new` but did
/// not in `old`, with their live holders in `old`. `old` of `None` means
/// `me` held nothing (a new node, or one that dropped its data).
pub fn pulls(
    old: Option<&Ring>,
    new: &Ring,
    me: &NodeId,
    n: usize,
    live: &dyn Fn(&NodeId) -> bool,
) -> Vec<Pull> {
    let Some(old) = old else {
        return new
            .ranges_replicated_by(me, n)
            .into_iter()
            .map(|(range, _)| Pull {
                range,
                sources: Vec::new(),
            })
            .collect();
    };
    moves(old, new, n)
        .into_iter()
        .filter(|m| m.gained.contains(me))
        .map(|m| {
            let mut sources: Vec<NodeId> = m
                .old
                .iter()
                .filter(|id| *id != me && live(id))
                .copied()
                .collect();
            if !sources.is_empty() {
                let turn = spread(&m.range, sources.len());
                sources.rotate_left(turn);
            }
            Pull {
                range: m.range,
                sources,
            }
        })
        .collect()
}

/// The ranges of the ring `me` does not replicate in `ring`: the
/// complement of [`Ring::ranges_replicated_by`], in ring order. What a node
/// holds there is someone else's and may be dropped once they hold it.
pub fn foreign_ranges(ring: &Ring, me: &NodeId, n: usize) -> Vec<TokenRange> {
    let mut mine: Vec<TokenRange> = ring
        .ranges_replicated_by(me, n)
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    if mine.is_empty() {
        // The full ring, as a range.
        return vec![TokenRange::new(Token(0), Token(0))];
    }
    if mine.iter().any(TokenRange::is_full) {
        return Vec::new();
    }
    mine.sort_by_key(|r| r.start);
    let mut out = Vec::new();
    for (i, r) in mine.iter().enumerate() {
        let next = mine[(i + 1) % mine.len()];
        if r.end != next.start {
            out.push(TokenRange::new(r.end, next.start));
        }
    }
    out.sort_by_key(|r| r.start);
    out
}

/// Which of `k` sources a range starts with: a fixed function of the range
/// so that every plan for it agrees, spread evenly over ranges.
fn spread(range: &TokenRange, k: usize) -> usize {
    // Fibonacci hashing of the start position.
    let h = range.start.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    usize::try_from(h).unwrap_or(0) % k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeSpec;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn ring(names: &[&str]) -> Ring {
        let specs: Vec<NodeSpec> = names
            .iter()
            .map(|n| NodeSpec::new(NodeId::from_name(n)))
            .collect();
        Ring::build(&specs, 16).unwrap()
    }

    fn id(name: &str) -> NodeId {
        NodeId::from_name(name)
    }

    #[test]
    fn a_new_node_pulls_exactly_what_it_replicates_from_old_holders() {
        let old = ring(&["a", "b", "c"]);
        let new = ring(&["a", "b", "c", "d"]);
        let all_live = |_: &NodeId| true;
        let plan = pulls(Some(&old), &new, &id("d"), 3, &all_live);
        assert!(!plan.is_empty());
        // Every position d replicates now is in exactly one pull.
        for (range, _) in new.ranges_replicated_by(&id("d"), 3) {
            for pos in [range.end, Token(range.start.0.wrapping_add(1))] {
                let covering = plan.iter().filter(|p| p.range.contains(pos)).count();
                assert_eq!(covering, 1, "position {pos} covered {covering} times");
            }
        }
        for p in &plan {
            // With 3 old nodes and N=3, every old node held everything.
            assert_eq!(p.sources.len(), 3);
            assert!(!p.sources.contains(&id("d")));
            // The sources held the range in the old ring.
            let held = old.replicas_of(p.range.end, 3);
            assert!(p.sources.iter().all(|s| held.contains(s)));
        }
        // Load is spread: not every range starts at the same source.
        let firsts: std::collections::BTreeSet<NodeId> =
            plan.iter().map(|p| p.sources[0]).collect();
        assert!(firsts.len() > 1, "every pull starts at the same source");
    }

    #[test]
    fn dead_holders_are_not_sources_and_old_members_pull_nothing_new() {
        let old = ring(&["a", "b", "c", "d"]);
        let new = ring(&["a", "b", "c"]);
        let live = |n: &NodeId| *n != id("d");
        for me in ["a", "b", "c"] {
            for p in pulls(Some(&old), &new, &id(me), 3, &live) {
                assert!(!p.sources.contains(&id("d")));
                assert!(!p.sources.contains(&id(me)));
                assert!(!p.sources.is_empty(), "two live holders remain");
            }
        }
        // With N=3 and 3 nodes left, each node replicates everything.
        let gained = pulls(Some(&old), &new, &id("a"), 3, &live);
        let total: u128 = gained.iter().map(|p| p.range.len()).sum();
        let had: u128 = old
            .ranges_replicated_by(&id("a"), 3)
            .iter()
            .map(|(r, _)| r.len())
            .sum();
        assert_eq!(total + had, 1u128 << 64);
    }

    #[test]
    fn with_no_old_ring_everything_replicated_is_pulled_from_nobody() {
        let new = ring(&["a", "b"]);
        let plan = pulls(None, &new, &id("a"), 3, &|_| true);
        let total: u128 = plan.iter().map(|p| p.range.len()).sum();
        assert_eq!(total, 1u128 << 64);
        assert!(plan.iter().all(|p| p.sources.is_empty()));
    }

    #[test]
    fn foreign_ranges_of_a_node_that_replicates_everything_are_none() {
        let r = ring(&["a", "b", "c"]);
        assert!(foreign_ranges(&r, &id("a"), 3).is_empty());
        let outsider = foreign_ranges(&r, &id("zz"), 3);
        assert_eq!(outsider.len(), 1);
        assert!(outsider[0].is_full());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Every position is either replicated by the node or in exactly
        /// one of its foreign ranges, never both.
        #[test]
        fn foreign_ranges_are_the_exact_complement(
            nodes in 2usize..9,
            n in 1usize..4,
            probes in proptest::collection::vec(any::<u64>(), 64),
        ) {
            let names: Vec<String> = (0..nodes).map(|i| format!("n{i}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let r = ring(&refs);
            let me = id("n0");
            let mine = r.ranges_replicated_by(&me, n);
            let foreign = foreign_ranges(&r, &me, n);
            let mut probes = probes;
            probes.extend(mine.iter().flat_map(|(r, _)| [r.start.0, r.end.0, r.end.0.wrapping_add(1)]));
            for p in probes {
                let pos = Token(p);
                let in_mine = mine.iter().filter(|(r, _)| r.contains(pos)).count();
                let in_foreign = foreign.iter().filter(|r| r.contains(pos)).count();
                prop_assert_eq!(in_mine + in_foreign, 1, "position {} mine {} foreign {}", p, in_mine, in_foreign);
                prop_assert_eq!(in_mine == 1, r.replicas_of(pos, n).contains(&me));
            }
        }

        /// After pulling its plan, a node holds everything it replicates in
        /// the new ring, and pulls nothing it already had or does not need,
        /// whatever joins and leaves happened at once.
        #[test]
        fn held_plus_pulled_is_what_the_new_ring_asks(
            before in proptest::collection::btree_set(0u8..12, 2..7),
            after in proptest::collection::btree_set(0u8..12, 2..7),
            probes in proptest::collection::vec(any::<u64>(), 64),
        ) {
            let name = |i: &u8| format!("n{i}");
            let b: Vec<String> = before.iter().map(name).collect();
            let a: Vec<String> = after.iter().map(name).collect();
            let old = ring(&b.iter().map(String::as_str).collect::<Vec<_>>());
            let new = ring(&a.iter().map(String::as_str).collect::<Vec<_>>());
            let mut sources_used: BTreeMap<NodeId, usize> = BTreeMap::new();
            for me in after.iter().map(name) {
                let me = id(&me);
                let plan = pulls(Some(&old), &new, &me, 3, &|_| true);
                for p in &plan {
                    for s in &p.sources { *sources_used.entry(*s).or_default() += 1; }
                }
                for &pos in &probes {
                    let pos = Token(pos);
                    let held = old.replicas_of(pos, 3).contains(&me);
                    let pulled = plan.iter().any(|p| p.range.contains(pos));
                    let wanted = new.replicas_of(pos, 3).contains(&me);
                    // Whatever it replicates now it held or pulls; it
                    // pulls only what it replicates now and did not hold.
                    prop_assert!(!wanted || held || pulled, "position {} missing", pos);
                    prop_assert!(!pulled || (wanted && !held), "position {} pulled needlessly", pos);
                }
            }
            // Sources are always nodes of the old ring.
            for s in sources_used.keys() {
                prop_assert!(old.contains(s));
            }
        }
    }
}
