//! Authorship (issue 14, item 1): statements about a member count only if
//! their author signed them, incarnations jump a bounded amount, weights
//! and the member table are capped, and a peer never adopts a claim about
//! itself it could not outbid.

use super::*;
use crate::proto::auth::{Reject, Rejections};
use crate::proto::swim::Source;

/// Peer 0 at incarnation 1, holding peers 1 and 2 Alive at incarnation 1.
fn holder_with(config: Config) -> (Peer, Instant) {
    let now = Instant::now();
    let mut p = peer_with(config, 0, 1, 7, now);
    p.handle_restore(
        now,
        vec![member(1, 1, State::Alive), member(2, 1, State::Alive)],
    );
    (p, now)
}

fn holder() -> (Peer, Instant) {
    holder_with(Config::for_test())
}

/// What a statement could have changed: the view, the queue, events.
fn snapshot(p: &mut Peer) -> (u64, Vec<Member>, usize, Member) {
    (
        p.view_digest(),
        p.members().cloned().collect(),
        p.pending_broadcasts(),
        p.me().clone(),
    )
}

/// Peer 1 tells peer 0 `updates` by gossip.
fn tell(p: &mut Peer, now: Instant, updates: Vec<Update>) {
    p.handle_envelope(now, envelope(1, Body::Gossip, updates));
}

fn rejected(p: &Peer, reason: Reject) -> u64 {
    p.stats().rejected.get(reason)
}

/// `update` signed by peer `i`, whoever its author should be.
fn signed_by(i: usize, update: Update) -> Update {
    auth::sign(
        &InsecureAuth::for_id(id(i)),
        &Config::for_test().cluster,
        update,
    )
}

fn left(i: usize, incarnation: Incarnation) -> Update {
    Update::Left {
        id: id(i),
        incarnation,
        sig: Sig::NONE,
    }
}

fn suspect_by(i: usize, incarnation: Incarnation, by: usize) -> Update {
    Update::Suspect {
        id: id(i),
        incarnation,
        by: id(by),
        sig: Sig::NONE,
    }
}

fn dead_by(i: usize, incarnation: Incarnation, by: usize) -> Update {
    Update::Dead {
        id: id(i),
        incarnation,
        by: id(by),
        sig: Sig::NONE,
    }
}

fn with_weight(i: usize, incarnation: Incarnation, weight: u32) -> Update {
    let mut m = meta(i);
    m.weight = weight;
    alive_with(i, incarnation, m)
}

#[test]
fn forged_left_alive_or_metadata_about_another_member_changes_nothing() {
    let (mut p, now) = holder();
    let before = snapshot(&mut p);
    let mut renamed = meta(2);
    renamed.name = "evil".into();
    renamed.weight = 1000;
    let forged_meta = Update::Alive {
        id: id(2),
        incarnation: 9,
        meta: renamed.clone().into(),
        key: key(2),
        sig: Sig::NONE,
    };
    // Peer 1's key claimed as peer 2's.
    let wrong_key = Update::Alive {
        id: id(2),
        incarnation: 9,
        meta: renamed.into(),
        key: key(1),
        sig: Sig::NONE,
    };
    tell(
        &mut p,
        now,
        vec![
            signed_by(1, left(2, 5)),
            left(2, u64::MAX),
            signed_by(1, forged_meta.clone()),
            forged_meta,
            signed_by(1, wrong_key),
        ],
    );
    assert_eq!(
        snapshot(&mut p),
        before,
        "a forged statement changed the view"
    );
    assert!(p.poll_event().is_none());
    assert_eq!(rejected(&p, Reject::BadSignature), 2);
    assert_eq!(rejected(&p, Reject::Unsigned), 1);
    assert_eq!(rejected(&p, Reject::KeyMismatch), 1);
    assert_eq!(rejected(&p, Reject::IncarnationJump), 1);

    // The real thing, relayed by peer 1, is accepted.
    tell(&mut p, now, vec![signed(left(2, 5))]);
    let m = p.member(&id(2)).expect("known");
    assert_eq!((m.state, m.incarnation), (State::Left, 5));
}

#[test]
fn suspect_or_dead_not_signed_by_their_by_is_dropped() {
    let (mut p, now) = holder();
    let before = snapshot(&mut p);
    tell(
        &mut p,
        now,
        vec![
            // By 2, signed by 1.
            signed_by(1, suspect_by(2, 1, 2)),
            signed_by(1, dead_by(2, 1, 2)),
            // Unsigned.
            suspect_by(2, 1, 1),
            // By a member nobody knows.
            signed_by(7, suspect_by(2, 1, 7)),
        ],
    );
    assert_eq!(snapshot(&mut p), before);
    assert_eq!(rejected(&p, Reject::BadSignature), 2);
    assert_eq!(rejected(&p, Reject::Unsigned), 1);
    assert_eq!(rejected(&p, Reject::UnknownSigner), 1);

    tell(&mut p, now, vec![signed(suspect_by(2, 1, 1))]);
    assert_eq!(p.member(&id(2)).map(|m| m.state), Some(State::Suspect));
}

#[test]
fn weights_outside_1_to_1000_are_rejected() {
    let (mut p, now) = holder();
    let before = snapshot(&mut p);
    tell(
        &mut p,
        now,
        vec![with_weight(2, 2, 0), with_weight(2, 3, 1001)],
    );
    // A new member with a wild weight is not added either.
    tell(&mut p, now, vec![with_weight(5, 1, 1_000_000)]);
    assert_eq!(snapshot(&mut p), before);
    assert_eq!(rejected(&p, Reject::Weight), 3);

    tell(&mut p, now, vec![with_weight(2, 4, 1000)]);
    assert_eq!(p.member(&id(2)).map(|m| m.meta.weight), Some(1000));
}

#[test]
fn an_incarnation_jump_beyond_the_bound_is_rejected_even_if_signed() {
    let (mut p, now) = holder();
    let max = Config::for_test().incarnation_jump_max;
    let before = snapshot(&mut p);
    tell(
        &mut p,
        now,
        vec![alive(2, 1 + max + 1), signed(suspect_by(2, u64::MAX, 1))],
    );
    assert_eq!(snapshot(&mut p), before);
    assert_eq!(rejected(&p, Reject::IncarnationJump), 2);

    tell(&mut p, now, vec![alive(2, 1 + max)]);
    assert_eq!(p.member(&id(2)).map(|m| m.incarnation), Some(1 + max));
}

#[test]
fn a_claim_about_me_at_the_highest_incarnation_is_not_adopted() {
    let (mut p, now) = holder();
    tell(
        &mut p,
        now,
        vec![
            left(0, u64::MAX),
            signed(left(0, u64::MAX)),
            signed(suspect_by(0, u64::MAX, 1)),
            signed(dead_by(0, u64::MAX - 1, 1)),
            alive(0, u64::MAX),
        ],
    );
    assert_eq!((p.me().state, p.me().incarnation), (State::Alive, 1));
    assert!(!p.has_left());
    assert_eq!(p.stats().refutations, 0);
    assert_eq!(p.stats().rejected.total(), 5);

    // A claim it can outbid, it refutes.
    tell(&mut p, now, vec![signed(suspect_by(0, 1, 1))]);
    assert_eq!((p.me().state, p.me().incarnation), (State::Alive, 2));
    // A Left of ours that we never signed is refused, not refuted.
    tell(&mut p, now, vec![signed_by(1, left(0, 2))]);
    assert_eq!(p.me().incarnation, 2);
    assert_eq!(rejected(&p, Reject::BadSignature), 1);
}

#[test]
fn a_claim_about_me_that_i_never_signed_is_refused_not_refuted() {
    let (mut p, now) = holder();
    tell(
        &mut p,
        now,
        vec![
            left(0, 1),
            signed_by(1, left(0, 1)),
            signed_by(1, alive(0, 5)),
        ],
    );
    assert_eq!((p.me().state, p.me().incarnation), (State::Alive, 1));
    assert!(!p.has_left());
    assert_eq!(p.stats().refutations, 0);
    assert_eq!(p.stats().rejected.total(), 3);
    // A real suspicion of it, it refutes.
    tell(&mut p, now, vec![signed(suspect_by(0, 1, 1))]);
    assert_eq!((p.me().state, p.me().incarnation), (State::Alive, 2));
}

#[test]
fn a_forged_left_at_the_highest_incarnation_leaves_the_member_alive_everywhere() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        let forged = signed_by(0, left(2, u64::MAX));
        for i in 0..2 {
            net.inject(
                i,
                Channel::Datagram,
                &envelope(3, Body::Gossip, vec![forged.clone()]),
            );
            let body = Body::PushPull {
                join: false,
                reply: true,
                members: vec![Entry::new(alive(2, 1), Some(forged.clone()))],
            };
            net.inject(i, Channel::Stream, &envelope(3, body, Vec::new()));
        }
        net.run_for(ms(2_000));
        assert!(net.all_alive(&[0, 1, 2]), "n2 is not alive everywhere");
        assert!(
            net.p(2).me().incarnation < 1000,
            "n2 adopted a wild incarnation"
        );
        for i in 0..2 {
            expect_member(&net, i, 2, State::Alive, net.p(2).me().incarnation);
            assert!(net.p(i).stats().rejected.total() >= 2);
        }
    });
}

#[test]
fn push_pull_entries_are_checked_like_gossip() {
    let (mut p, now) = holder();
    let before = snapshot(&mut p);
    let unsigned_new = Entry::new(
        Update::Alive {
            id: id(5),
            incarnation: 1,
            meta: meta(5).into(),
            key: key(5),
            sig: Sig::NONE,
        },
        None,
    );
    let forged_dead_new = Entry::new(alive(6, 1), Some(signed_by(1, left(6, 1))));
    let malformed = Entry::new(signed(left(2, 3)), None);
    let forged_left = Entry::new(alive(2, 1), Some(signed_by(1, left(2, 3))));
    let body = Body::PushPull {
        join: false,
        reply: true,
        members: vec![unsigned_new, forged_dead_new, malformed, forged_left],
    };
    p.handle_envelope(now, envelope(1, body, Vec::new()));
    assert_eq!(snapshot(&mut p), before);
    assert_eq!(rejected(&p, Reject::Unsigned), 1);
    assert_eq!(rejected(&p, Reject::BadSignature), 2);
    assert_eq!(rejected(&p, Reject::Malformed), 1);
}

#[test]
fn new_members_beyond_members_max_are_rejected_and_counted() {
    let config = Config {
        members_max: 3,
        ..Config::for_test()
    };
    let (mut p, now) = holder_with(config);
    tell(&mut p, now, vec![alive(3, 1), alive(4, 1), alive(5, 1)]);
    assert!(p.member(&id(3)).is_some());
    assert!(p.member(&id(4)).is_none() && p.member(&id(5)).is_none());
    assert_eq!(rejected(&p, Reject::TableFull), 2);
    // Known members still update.
    tell(&mut p, now, vec![alive(1, 2)]);
    assert_eq!(p.member(&id(1)).map(|m| m.incarnation), Some(2));
}

#[test]
fn own_statements_pass_and_rejections_have_labels() {
    let (mut p, now) = holder();
    assert!(p.apply(now, signed(suspect_by(1, 1, 0)), Source::Local));
    let mut r = Rejections::default();
    r.count(Reject::Weight);
    let labels: Vec<_> = r.iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(labels, vec![("weight", 1)]);
}
