use std::sync::Arc;

use super::*;
use crate::readiness::ring_tag;
use crate::test_support::{id, member, ring};

fn view(me: Member, members: Vec<Member>) -> Arc<View> {
    Arc::new(crate::test_support::view(me, members))
}

/// A peer that joined after the old holders announced their ring: it
/// never built that ring, and this peer's ring has it and another joiner.
fn joiner_view(old_tag: &str) -> (Arc<View>, Arc<RingState>) {
    let v = view(
        member("j1", State::Alive, None),
        vec![
            member("a", State::Alive, Some(old_tag)),
            member("b", State::Alive, Some(old_tag)),
            member("c", State::Alive, Some(old_tag)),
            member("j2", State::Alive, None),
        ],
    );
    let state = RingState {
        ring: Some(ring(&["a", "b", "c", "j1", "j2"])),
        full: None,
        earlier: Vec::new(),
        rebuilds: 1,
    };
    (v, Arc::new(state))
}

#[test]
fn a_joiner_places_the_ring_the_old_holders_announced() {
    let old = ring(&["a", "b", "c"]);
    let (v, state) = joiner_view(&ring_tag(&old));
    let routing = Routing::new(v, state);
    assert!(!routing.unplaced);
    let earlier: Vec<Vec<NodeId>> = routing
        .earlier_rings()
        .map(|r| r.replicas(b"some key", 3))
        .collect();
    // Every key had all three old holders as replicas.
    for name in ["a", "b", "c"] {
        assert!(
            routing.holds(&id(name), &[], &earlier),
            "{name} announced the old ring and holds every key of it"
        );
    }
    assert!(!routing.holds(&id("j2"), &[], &earlier));
}

#[test]
fn a_ring_nobody_can_rebuild_is_unplaced() {
    let (v, state) = joiner_view("0123456789abcdef");
    let routing = Routing::new(v, state);
    assert!(routing.unplaced);
    assert_eq!(routing.earlier_rings().count(), 0);
}

#[test]
fn a_stand_in_holds_its_own_ranges_and_those_of_the_ring_before_it_announces() {
    // a, b, c held the old ring; d joined and all four announced the new
    // one. a still announces the old ring as the one before (its clean-up
    // is not complete); b does not (complete); d never had one.
    let old = ring(&["a", "b", "c"]);
    let new = ring(&["a", "b", "c", "d"]);
    let (old_tag, new_tag) = (ring_tag(&old), ring_tag(&new));
    let mut a = member("a", State::Alive, Some(&new_tag));
    Arc::make_mut(&mut a.meta)
        .tags
        .insert(crate::readiness::PREVIOUS_TAG.to_owned(), old_tag.clone());
    let v = view(
        a,
        vec![
            member("b", State::Alive, Some(&new_tag)),
            member("c", State::Alive, Some(&new_tag)),
            member("d", State::Alive, Some(&new_tag)),
        ],
    );
    let state = RingState {
        ring: Some(new.clone()),
        full: None,
        earlier: vec![old.clone()],
        rebuilds: 2,
    };
    let routing = Routing::new(v, Arc::new(state));
    for k in 0..200u32 {
        let key = format!("k{k}");
        let current = new.replicas(key.as_bytes(), 3);
        let earlier = vec![old.replicas(key.as_bytes(), 3)];
        let holds = |n: &str| routing.holds(&id(n), &current, &earlier);
        // a: every key (all of the old ring's); b and d: only their own.
        assert!(holds("a"), "{key}: a still holds the ring before");
        assert_eq!(holds("b"), current.contains(&id("b")), "{key}: b");
        assert_eq!(holds("d"), current.contains(&id("d")), "{key}: d");
    }
}
