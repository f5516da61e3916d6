use std::sync::Arc;

use ringkv_gossip::{Meta, Stats};

use super::*;

fn member(name: &str, state: State, status: NodeStatus) -> Member {
    let mut meta = Meta::new("127.0.0.1:1".parse().expect("addr"), name);
    meta.status = status;
    Member {
        id: NodeId::from_name(name),
        incarnation: 1,
        state,
        meta: Arc::new(meta),
    }
}

fn view(me: Member, members: Vec<Member>) -> View {
    View {
        me,
        members,
        digest: 0,
        agreement: (0, 0),
        shape: 0,
        ring_agreement: (0, 0),
        joined: true,
        stats: Stats::default(),
        health: 0,
        index: 0,
    }
}

fn ids(specs: &[NodeSpec]) -> Vec<NodeId> {
    specs.iter().map(|s| s.id).collect()
}

fn sorted(names: &[&str]) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = names.iter().map(|n| NodeId::from_name(n)).collect();
    v.sort();
    v
}

const GRACE: Duration = Duration::from_secs(30);

#[test]
fn live_and_suspect_members_are_in_the_ring_with_this_peer() {
    let v = view(
        member("me", State::Alive, NodeStatus::Normal),
        vec![
            member("a", State::Alive, NodeStatus::Normal),
            member("s", State::Suspect, NodeStatus::Normal),
        ],
    );
    let out = ring_members(
        &v,
        &mut DeadSince::new(),
        &mut Removed::new(),
        Instant::now(),
        GRACE,
    );
    assert_eq!(ids(&out.members), sorted(&["me", "a", "s"]));
    assert!(out.leaving.is_empty());
}

#[test]
fn dead_member_is_kept_within_the_grace_and_dropped_past_it() {
    let v = view(
        member("me", State::Alive, NodeStatus::Normal),
        vec![member("d", State::Dead, NodeStatus::Normal)],
    );
    let mut dead = DeadSince::new();
    let t0 = Instant::now();
    let first = ring_members(&v, &mut dead, &mut Removed::new(), t0, GRACE);
    assert_eq!(ids(&first.members), sorted(&["me", "d"]), "first seen dead");
    let within = ring_members(
        &v,
        &mut dead,
        &mut Removed::new(),
        t0 + GRACE - Duration::from_millis(1),
        GRACE,
    );
    assert_eq!(
        ids(&within.members),
        sorted(&["me", "d"]),
        "within the grace"
    );
    let past = ring_members(&v, &mut dead, &mut Removed::new(), t0 + GRACE, GRACE);
    assert_eq!(ids(&past.members), sorted(&["me"]), "grace over");
}

#[test]
fn grace_counts_from_when_this_peer_first_saw_the_death() {
    let v = view(
        member("me", State::Alive, NodeStatus::Normal),
        vec![member("d", State::Dead, NodeStatus::Normal)],
    );
    let mut dead = DeadSince::new();
    let t0 = Instant::now();
    let _ = ring_members(&v, &mut dead, &mut Removed::new(), t0, GRACE);
    // Seen again later: still stamped t0, so gone at t0 + grace.
    let _ = ring_members(&v, &mut dead, &mut Removed::new(), t0 + GRACE / 2, GRACE);
    let past = ring_members(
        &v,
        &mut dead,
        &mut Removed::new(),
        t0 + GRACE + Duration::from_secs(1),
        GRACE,
    );
    assert_eq!(ids(&past.members), sorted(&["me"]));
}

#[test]
fn member_back_alive_loses_its_dead_stamp() {
    let dead_view = view(
        member("me", State::Alive, NodeStatus::Normal),
        vec![member("d", State::Dead, NodeStatus::Normal)],
    );
    let alive_view = view(
        member("me", State::Alive, NodeStatus::Normal),
        vec![member("d", State::Alive, NodeStatus::Normal)],
    );
    let mut dead = DeadSince::new();
    let t0 = Instant::now();
    let _ = ring_members(&dead_view, &mut dead, &mut Removed::new(), t0, GRACE);
    let _ = ring_members(
        &alive_view,
        &mut dead,
        &mut Removed::new(),
        t0 + GRACE,
        GRACE,
    );
    assert!(dead.is_empty(), "alive again: no stamp");
    // Dead again: a fresh grace from now.
    let again = ring_members(
        &dead_view,
        &mut dead,
        &mut Removed::new(),
        t0 + GRACE * 2,
        GRACE,
    );
    assert_eq!(ids(&again.members), sorted(&["me", "d"]));
}

#[test]
fn left_member_is_dropped_at_once() {
    let v = view(
        member("me", State::Alive, NodeStatus::Normal),
        vec![member("l", State::Left, NodeStatus::Normal)],
    );
    let out = ring_members(
        &v,
        &mut DeadSince::new(),
        &mut Removed::new(),
        Instant::now(),
        GRACE,
    );
    assert_eq!(ids(&out.members), sorted(&["me"]));
    assert!(out.leaving.is_empty());
}

#[test]
fn leaving_members_are_apart_this_peer_included() {
    let v = view(
        member("me", State::Alive, NodeStatus::Leaving),
        vec![
            member("a", State::Alive, NodeStatus::Normal),
            member("b", State::Suspect, NodeStatus::Leaving),
        ],
    );
    let out = ring_members(
        &v,
        &mut DeadSince::new(),
        &mut Removed::new(),
        Instant::now(),
        GRACE,
    );
    assert_eq!(ids(&out.members), sorted(&["a"]));
    assert_eq!(ids(&out.leaving), sorted(&["me", "b"]));
}

#[test]
fn build_counts_leaving_members_only_in_the_full_ring() {
    let v = view(
        member("me", State::Alive, NodeStatus::Normal),
        vec![member("b", State::Alive, NodeStatus::Leaving)],
    );
    let out = ring_members(
        &v,
        &mut DeadSince::new(),
        &mut Removed::new(),
        Instant::now(),
        GRACE,
    );
    let state = build(&out, 3).expect("ring");
    assert_eq!(state.rebuilds, 3);
    let ring = state.ring.expect("ring");
    let full = state.full.expect("full ring while some leave");
    assert!(ring.replicas(b"k", 3).len() == 1);
    assert_eq!(full.replicas(b"k", 3).len(), 2);
    let none_leaving = RingMembers {
        members: out.members,
        leaving: Vec::new(),
    };
    assert!(build(&none_leaving, 1).expect("ring").full.is_none());
}

#[test]
fn the_previous_ring_is_the_last_different_one() {
    let one = view(member("me", State::Alive, NodeStatus::Normal), vec![]);
    let two = view(
        member("me", State::Alive, NodeStatus::Normal),
        vec![member("b", State::Alive, NodeStatus::Normal)],
    );
    let at = |v: &View| {
        let m = ring_members(
            v,
            &mut DeadSince::new(),
            &mut Removed::new(),
            Instant::now(),
            GRACE,
        );
        build(&m, 1).expect("ring")
    };
    let first = at(&one).after(&RingState::default());
    assert!(first.earlier.is_empty());
    let second = at(&two).after(&first);
    let digests = |s: &RingState| s.earlier.iter().map(Ring::digest).collect::<Vec<_>>();
    let d = |r: &Option<Ring>| r.as_ref().map(Ring::digest).expect("ring");
    assert_eq!(digests(&second), vec![d(&first.ring)]);
    // Rebuilt the same (say a leaving member's status changed): the
    // earlier rings stay as they were.
    let again = at(&two).after(&second);
    assert_eq!(digests(&again), vec![d(&first.ring)]);
    // Back to the first ring: it is current, and the second is earlier.
    let back = at(&one).after(&again);
    assert_eq!(digests(&back), vec![d(&second.ring)]);
}

#[test]
fn a_removed_dead_member_leaves_the_ring_at_once_and_returns_if_seen_alive() {
    let dead_view = view(
        member("me", State::Alive, NodeStatus::Normal),
        vec![member("d", State::Dead, NodeStatus::Normal)],
    );
    let alive_view = view(
        member("me", State::Alive, NodeStatus::Normal),
        vec![member("d", State::Alive, NodeStatus::Normal)],
    );
    let (mut dead, mut removed) = (DeadSince::new(), Removed::new());
    let t0 = Instant::now();
    let kept = ring_members(&dead_view, &mut dead, &mut removed, t0, GRACE);
    assert_eq!(ids(&kept.members), sorted(&["me", "d"]), "within the grace");
    removed.insert(NodeId::from_name("d"));
    let gone = ring_members(&dead_view, &mut dead, &mut removed, t0, GRACE);
    assert_eq!(ids(&gone.members), sorted(&["me"]), "removed: out at once");
    let back = ring_members(&alive_view, &mut dead, &mut removed, t0, GRACE);
    assert_eq!(ids(&back.members), sorted(&["me", "d"]), "alive again");
    assert!(removed.is_empty(), "a live member is no longer removed");
    let dead_again = ring_members(&dead_view, &mut dead, &mut removed, t0, GRACE);
    assert_eq!(
        ids(&dead_again.members),
        sorted(&["me", "d"]),
        "dead again: a fresh grace"
    );
}
