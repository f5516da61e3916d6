//! Property tests for placement: the ring is a pure function of the view,
//! replicas are distinct, joins and leaves move only what they must, and
//! `moves` agrees with looking keys up in both rings.

use proptest::prelude::*;
use ringkv_ring::analysis::{ideal_moved_fraction, shares};
use ringkv_ring::{key_position, moved_fraction, moves, NodeId, NodeSpec, Ring, Token};

fn node(n: u32, weight: u32, zone: Option<u8>) -> NodeSpec {
    let mut spec = NodeSpec::new(NodeId::from_name(&format!("n{n}"))).with_weight(weight);
    spec.zone = zone.map(|z| format!("zone-{z}"));
    spec
}

/// A view of 1..max distinct nodes with weights 1..=3 and, when `zoned`,
/// zones from a small set.
fn view(max: usize, zoned: bool) -> impl Strategy<Value = Vec<NodeSpec>> {
    prop::collection::btree_map(0u32..10_000, (1u32..=3, 0u8..4), 1..max).prop_map(move |m| {
        m.into_iter()
            .map(|(n, (w, z))| node(n, w, zoned.then_some(z)))
            .collect()
    })
}

fn sample_keys(count: u32, salt: u32) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| format!("k{salt}:{i}").into_bytes())
        .collect()
}

fn same_set(a: &[NodeId], b: &[NodeId]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn same_view_in_any_order_gives_the_same_ring(
        (v, shuffled) in view(24, true).prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        vnodes in 1u32..40,
    ) {
        let a = Ring::build(&v, vnodes).unwrap();
        let b = Ring::build(&shuffled, vnodes).unwrap();
        prop_assert_eq!(a.digest(), b.digest());
        for key in sample_keys(200, 0) {
            prop_assert_eq!(a.replicas(&key, 3), b.replicas(&key, 3));
        }
    }

    #[test]
    fn replicas_are_distinct_zone_spread_and_start_at_the_owner(
        v in view(16, true), vnodes in 1u32..30, n in 1usize..6, zoned in any::<bool>(),
    ) {
        let v: Vec<NodeSpec> = if zoned { v } else {
            v.into_iter().map(|mut s| { s.zone = None; s }).collect()
        };
        let ring = Ring::build(&v, vnodes).unwrap();
        let mut zones: Vec<Option<String>> = v.iter().map(|s| s.zone.clone()).collect();
        zones.sort();
        zones.dedup();
        for key in sample_keys(100, 1) {
            let reps = ring.replicas(&key, n);
            prop_assert_eq!(reps.len(), n.min(v.len()));
            prop_assert_eq!(reps[0], ring.owner(&key));
            for (i, r) in reps.iter().enumerate() {
                prop_assert!(!reps[..i].contains(r), "duplicate replica {:?}", r);
            }
            if zoned {
                let mut seen: Vec<Option<String>> =
                    reps.iter().map(|id| ring.node(id).unwrap().zone.clone()).collect();
                seen.sort();
                seen.dedup();
                prop_assert_eq!(seen.len(), n.min(v.len()).min(zones.len()));
            }
        }
    }

    #[test]
    fn adding_a_node_moves_keys_only_to_it(v in view(20, false), vnodes in 1u32..40, rf in 1usize..4) {
        let new_node = node(20_000, 1, None);
        let mut grown = v.clone();
        grown.push(new_node.clone());
        let (old, new) = (Ring::build(&v, vnodes).unwrap(), Ring::build(&grown, vnodes).unwrap());
        for key in sample_keys(300, 2) {
            let (before, after) = (old.replicas(&key, rf), new.replicas(&key, rf));
            for id in &after {
                prop_assert!(before.contains(id) || *id == new_node.id, "{:?} gained a key", id);
            }
        }
        for m in moves(&old, &new, rf) {
            prop_assert_eq!(&m.gained, &vec![new_node.id]);
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_keys(
        v in view(20, false), vnodes in 1u32..40, rf in 1usize..4, pick in any::<prop::sample::Index>(),
    ) {
        prop_assume!(v.len() >= 2);
        let gone = v[pick.index(v.len())].id;
        let shrunk: Vec<NodeSpec> = v.iter().filter(|s| s.id != gone).cloned().collect();
        let (old, new) = (Ring::build(&v, vnodes).unwrap(), Ring::build(&shrunk, vnodes).unwrap());
        for key in sample_keys(300, 3) {
            let (before, after) = (old.replicas(&key, rf), new.replicas(&key, rf));
            if !same_set(&before, &after) {
                prop_assert!(before.contains(&gone), "a key {:?} did not hold moved", before);
            }
        }
        for m in moves(&old, &new, rf) {
            prop_assert_eq!(&m.lost, &vec![gone]);
        }
    }

    /// Any change (joins, leaves, weight changes, several at once): a key's
    /// replica set changes exactly when its position is in a move, and the
    /// move names the replica lists of both rings.
    #[test]
    fn moves_agree_with_looking_up_every_key(
        v in view(14, true),
        vnodes in 1u32..24,
        rf in 1usize..4,
        removed in prop::collection::vec(any::<bool>(), 14),
        reweighted in prop::collection::vec(0u32..4, 14),
        added in prop::collection::vec((1u32..=3, 0u8..4), 0..3),
    ) {
        let mut next: Vec<NodeSpec> = Vec::new();
        for (i, s) in v.iter().enumerate() {
            if removed[i] { continue; }
            let mut s = s.clone();
            if reweighted[i] > 0 { s.weight = reweighted[i]; }
            next.push(s);
        }
        next.extend(added.iter().enumerate().map(|(i, &(w, z))| node(30_000 + i as u32, w, Some(z))));
        prop_assume!(!next.is_empty());
        let (old, new) = (Ring::build(&v, vnodes).unwrap(), Ring::build(&next, vnodes).unwrap());
        let ms = moves(&old, &new, rf);
        let total: f64 = ms.iter().map(|m| m.range.fraction()).sum();
        prop_assert!(total <= 1.0 + 1e-9);
        for key in sample_keys(400, 4) {
            let pos = key_position(&key);
            let (before, after) = (old.replicas_of(pos, rf), new.replicas_of(pos, rf));
            let hits: Vec<_> = ms.iter().filter(|m| m.range.contains(pos)).collect();
            prop_assert!(hits.len() <= 1, "moves overlap at {pos}");
            match hits.first() {
                Some(m) => {
                    prop_assert_eq!(&m.old, &before);
                    prop_assert_eq!(&m.new, &after);
                    prop_assert!(!same_set(&before, &after));
                }
                None => prop_assert!(same_set(&before, &after), "unlisted change at {}", pos),
            }
        }
        // The exact range edges too: each move's end is inside it, its start
        // is not (unless it is the whole ring).
        for m in &ms {
            let at_end = (old.replicas_of(m.range.end, rf), new.replicas_of(m.range.end, rf));
            prop_assert_eq!((&m.old, &m.new), (&at_end.0, &at_end.1));
            if !m.range.is_full() {
                let inside = Token(m.range.start.0.wrapping_add(1));
                prop_assert_eq!(&old.replicas_of(inside, rf), &m.old);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Adding one node to N moves exactly the new node's share; averaged over
    /// 16 different joining nodes that is within 10% of the ideal 1/(N+1).
    ///
    /// A single join is not held to 10%: the new node's share is a sum of
    /// `vnodes` random arcs, with a coefficient of variation of
    /// 1/sqrt(150) = 8.2%, so one join in five lands more than 10% off. Each
    /// single join is held to 5 standard deviations (41%) instead.
    #[test]
    fn join_moves_about_one_over_n_plus_one(n in 2usize..=200, salt in 0u32..1_000_000) {
        const JOINS: u32 = 16;
        let base: Vec<NodeSpec> = (0..n as u32).map(|i| node(salt * 1000 + i, 1, None)).collect();
        let old = Ring::build(&base, 150).unwrap();
        let ideal = 1.0 / (n as f64 + 1.0);
        let mut sum = 0.0;
        for j in 0..JOINS {
            let joiner = NodeSpec::new(NodeId::from_name(&format!("joiner-{salt}-{j}")));
            let mut grown = base.clone();
            grown.push(joiner.clone());
            let new = Ring::build(&grown, 150).unwrap();
            let moved = moved_fraction(&old, &new, 1);
            let share = shares(&new, 1).into_iter().find(|s| s.id == joiner.id).unwrap().share;
            prop_assert!((moved - share).abs() < 1e-12, "moved {} but the joiner owns {}", moved, share);
            prop_assert!((ideal_moved_fraction(&old, &new) - ideal).abs() < 1e-12);
            prop_assert!((moved / ideal - 1.0).abs() < 0.41, "one join moved {} vs ideal {}", moved, ideal);
            sum += moved;
        }
        let mean = sum / f64::from(JOINS);
        prop_assert!((mean / ideal - 1.0).abs() < 0.10, "mean moved {} vs ideal {} at N={}", mean, ideal, n);
    }
}
