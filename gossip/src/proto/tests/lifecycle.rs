//! A member's life after joining: leaving, restarting (with a higher or
//! its old incarnation), and being reaped once dead.

use super::*;

#[test]
fn leave_is_seen_as_left_not_dead_and_is_final_for_its_incarnation() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        let limit = Config::for_test().retransmit_limit(3);
        let now = net.now;
        net.p_mut(2).handle_leave(now);
        net.flush();
        assert!(net.p(2).has_left());
        net.run_until(ms(2_000), "n2's leave spread", |net| {
            net.p(2).leave_spread(limit)
        });
        net.crash(2);
        net.run_for(ms(3_000));

        for i in 0..2 {
            expect_event(&net, i, &Event::MemberLeft(id(2)));
            expect_no_event(&net, i, &Event::MemberSuspected(id(2)));
            expect_no_event(&net, i, &Event::MemberDead(id(2)));
            expect_member(&net, i, 2, State::Left, 1);
            assert_eq!(net.p(i).live_count(), 1);
        }
        assert_eq!(net.p(0).view_digest(), net.p(1).view_digest());

        // A stale Alive of the same incarnation does not bring it back...
        let digest = net.p(0).view_digest();
        let t_stale = net.now;
        net.inject(
            0,
            Channel::Datagram,
            &envelope(1, Body::Gossip, vec![alive(2, 1)]),
        );
        net.inject(
            0,
            Channel::Stream,
            &envelope(
                1,
                Body::PushPull {
                    join: false,
                    reply: true,
                    members: vec![member(2, 1, State::Alive)],
                },
                Vec::new(),
            ),
        );
        expect_member(&net, 0, 2, State::Left, 1);
        assert!(
            !net.has_event_since(0, &Event::MemberJoined(id(2)), t_stale),
            "a stale Alive revived n2"
        );
        assert_eq!(net.p(0).view_digest(), digest);

        // ...a restart with a higher incarnation does.
        let now = net.now;
        net.restart(2, peer(2, 2, seed, now));
        net.join(2, 0);
        assert!(net.has_event_since(0, &Event::MemberJoined(id(2)), t_stale));
        net.run_until(ms(1_000), "n1 holds n2 alive again", |net| {
            net.state_of(1, 2) == Some(State::Alive)
        });
        assert!(net.has_event_since(1, &Event::MemberJoined(id(2)), t_stale));
        expect_member(&net, 1, 2, State::Alive, 2);
        assert_eq!(
            net.p(2).me().incarnation,
            2,
            "a Left of an older life needs no refutation"
        );
    });
}

#[test]
fn peer_restarted_with_higher_incarnation_after_death_rejoins() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        net.crash(2);
        net.run_until(ms(3_000), "n2 dead at both", |net| {
            net.state_of(0, 2) == Some(State::Dead) && net.state_of(1, 2) == Some(State::Dead)
        });
        // Dead is final for its incarnation: a stale Alive changes nothing.
        let digest = net.p(0).view_digest();
        net.inject(
            0,
            Channel::Datagram,
            &envelope(1, Body::Gossip, vec![alive(2, 1)]),
        );
        expect_member(&net, 0, 2, State::Dead, 1);
        assert_eq!(net.p(0).view_digest(), digest);

        let t_restart = net.now;
        net.restart(2, peer(2, 2, seed, t_restart));
        net.join(2, 0);
        assert!(net.p(2).is_joined());
        net.run_until(ms(1_000), "n2 Alive at both", |net| {
            net.all_alive(&[0, 1, 2])
        });
        for i in 0..2 {
            assert!(net.has_event_since(i, &Event::MemberJoined(id(2)), t_restart));
            expect_member(&net, i, 2, State::Alive, 2);
        }
        assert_eq!(net.p(2).me().incarnation, 2, "no refutation needed");
        net.settle(&[0, 1, 2]);
    });
}

#[test]
fn peer_restarted_with_its_old_incarnation_refutes_its_own_death() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        net.crash(2);
        net.run_until(ms(3_000), "n2 dead at both", |net| {
            net.state_of(0, 2) == Some(State::Dead) && net.state_of(1, 2) == Some(State::Dead)
        });
        let t_restart = net.now;
        // It lost its persisted incarnation: the seed's reply tells it it is dead.
        net.restart(2, peer(2, 1, seed, t_restart));
        net.join(2, 0);
        expect_event(&net, 2, &Event::IncarnationChanged(2));
        net.run_until(ms(1_000), "n2 Alive at both", |net| {
            net.all_alive(&[0, 1, 2])
        });
        for i in 0..2 {
            assert!(net.has_event_since(i, &Event::MemberJoined(id(2)), t_restart));
            expect_member(&net, i, 2, State::Alive, 2);
        }
    });
}

/// A leave whose datagrams are all lost still arrives: the Left also goes
/// on streams to a few live members, which the shell waits to see
/// acknowledged before the peer stops. Without them the others suspect
/// the stopped peer and end with it Dead.
#[test]
fn a_leave_whose_datagrams_are_all_lost_still_ends_left_everywhere() {
    for_seeds(|seed| {
        let mut net = Net::joined(4, seed);
        net.datagrams_lost_from.insert(3);
        let now = net.now;
        net.p_mut(3).handle_leave(now);
        net.p_mut(3)
            .queue_leave_notices(crate::proto::swim::LEAVE_NOTICES);
        net.flush();
        let notices = net
            .log
            .iter()
            .filter(|s| {
                s.from == 3
                    && s.channel == Channel::Stream
                    && carries(&s.env, |u| matches!(u, Update::Left { .. }))
            })
            .count();
        assert_eq!(
            notices, 3,
            "the Left goes on a stream to every live member (at most three)"
        );
        net.crash(3);
        net.run_for(ms(5_000));
        for i in 0..3 {
            expect_no_event(&net, i, &Event::MemberDead(id(3)));
            expect_member(&net, i, 3, State::Left, 1);
        }
    });
}

#[test]
fn metadata_update_after_leave_does_not_revive_the_leaver() {
    let mut net = Net::joined(3, 17);
    let now = net.now;
    net.p_mut(2).handle_leave(now);
    let mut new_meta = meta(2);
    new_meta.status = crate::proto::member::NodeStatus::Leaving;
    net.p_mut(2).handle_update_meta(now, new_meta);
    net.flush();
    net.run_for(ms(1_000));
    for i in 0..2 {
        assert_eq!(
            net.state_of(i, 2),
            Some(State::Left),
            "n{i} must hold n2 Left\n{}",
            net.matrix()
        );
    }
}

#[test]
fn dead_members_are_reaped_after_dead_reap_after() {
    for_seeds(|seed| {
        let config = Config {
            dead_reap_after: ms(3_000),
            ..Config::for_test()
        };
        let mut net = Net::with_n2_dead(seed, &config);
        net.run_until(ms(20_000), "n2 forgotten at both", |net| {
            net.p(0).member(&id(2)).is_none() && net.p(1).member(&id(2)).is_none()
        });
        for i in 0..2 {
            let dead = expect_event(&net, i, &Event::MemberDead(id(2)));
            let reaped = expect_event(&net, i, &Event::MemberReaped(id(2)));
            assert!(
                reaped - dead >= config.dead_reap_after,
                "n{i} reaped n2 too early"
            );
        }
        net.settle(&[0, 1]);
        assert_eq!(net.p(0).members().count(), 1);
    });
}
