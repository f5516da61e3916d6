//! Ring agreement: peers compare the ring-shape digest (members, states,
//! weights, zones, statuses) as well as the view digest. A metadata-only
//! change, such as a ready tag, moves the view digest (it bumps the
//! incarnation) but must leave the ring agreement whole; a change of state
//! or weight must break it.

use super::*;

/// The shape digest recomputed from the member table.
fn recomputed_shape(p: &Peer) -> u64 {
    p.members()
        .fold(p.me().shape_part(), |acc, m| acc ^ m.shape_part())
}

fn full(net: &Net, n: usize, of: impl Fn(&Peer) -> (usize, usize)) -> bool {
    (0..n).all(|i| of(net.p(i)) == (n - 1, n - 1))
}

/// Three joined peers that have heard each other report both digests.
fn agreed(seed: u64) -> Net {
    let mut net = Net::joined(3, seed);
    net.run_until(ms(2_000), "every peer agrees on both digests", |net| {
        full(net, 3, Peer::agreement) && full(net, 3, Peer::ring_agreement)
    });
    net
}

#[test]
fn a_tag_change_keeps_the_ring_agreement_while_the_view_digest_moves() {
    for_seeds(|seed| {
        let mut net = agreed(seed);
        let (view, shape) = (net.p(0).view_digest(), net.p(0).shape_digest());
        let mut tagged = meta(0);
        tagged
            .tags
            .insert("ready".into(), "0123456789abcdef".into());
        let now = net.now;
        net.p_mut(0).handle_update_meta(now, tagged.clone());
        // Before anyone hears of it: n0's view digest moved, its shape not.
        assert_ne!(net.p(0).view_digest(), view);
        assert_eq!(net.p(0).shape_digest(), shape);
        assert_eq!(
            net.p(0).agreement(),
            (0, 2),
            "the others reported the old view"
        );
        assert_eq!(net.p(0).ring_agreement(), (2, 2));

        // While the change spreads, the views disagree now and then, the
        // ring agreement never.
        let mut views_disagreed = false;
        net.flush();
        let until = net.now + ms(2_000);
        while !(1..3).all(|i| net.p(i).member(&id(0)).is_some_and(|m| *m.meta == tagged)) {
            assert!(net.now < until, "the tag never spread");
            views_disagreed |= !full(&net, 3, Peer::agreement);
            assert!(full(&net, 3, Peer::ring_agreement), "{}", net.matrix());
            net.step();
        }
        assert!(views_disagreed || net.p(0).agreement() != (2, 2));
        for i in 0..3 {
            assert_eq!(net.p(i).shape_digest(), shape);
            assert_eq!(net.p(i).shape_digest(), recomputed_shape(net.p(i)));
        }
    });
}

#[test]
fn a_weight_change_breaks_the_ring_agreement_until_it_spreads() {
    for_seeds(|seed| {
        let mut net = agreed(seed);
        let shape = net.p(0).shape_digest();
        let mut heavier = meta(0);
        heavier.weight = 2;
        let now = net.now;
        net.p_mut(0).handle_update_meta(now, heavier);
        assert_ne!(net.p(0).shape_digest(), shape);
        assert_eq!(net.p(0).shape_digest(), recomputed_shape(net.p(0)));
        assert_eq!(net.p(0).ring_agreement(), (0, 2));

        net.flush();
        net.run_until(ms(2_000), "the new weight spread and was reported", |net| {
            full(net, 3, Peer::ring_agreement)
        });
        for i in 0..3 {
            assert_eq!(net.p(i).shape_digest(), net.p(0).shape_digest());
            assert_eq!(net.p(i).shape_digest(), recomputed_shape(net.p(i)));
        }
    });
}

#[test]
fn a_state_change_breaks_the_ring_agreement() {
    for_seeds(|seed| {
        let mut net = agreed(seed);
        let shape = net.p(0).shape_digest();
        // n1 tells n0 it suspects n2, reporting its own (unchanged) digests.
        let suspect = signed(Update::Suspect {
            id: id(2),
            incarnation: net.p(2).me().incarnation,
            by: id(1),
            sig: Sig::NONE,
        });
        let mut env = envelope(1, Body::Gossip, vec![suspect]);
        env.view = net.p(1).view_digest();
        env.shape = net.p(1).shape_digest();
        // n2 must not hear of it and refute: only n0's table is under test.
        net.partition(&[0, 1], &[2]);
        net.inject(0, Channel::Datagram, &env);
        assert_eq!(net.state_of(0, 2), Some(State::Suspect));
        assert_ne!(net.p(0).shape_digest(), shape);
        assert_eq!(net.p(0).shape_digest(), recomputed_shape(net.p(0)));
        assert_eq!(net.p(0).ring_agreement(), (0, 2));
    });
}
