//! Suspicion: refutation by a higher incarnation, Lifeguard's timeouts
//! shortened by distinct confirmations, and what may start a suspicion.

use super::*;

#[test]
fn suspected_peer_refutes_with_higher_incarnation() {
    for_seeds(|seed| {
        let mut net = Net::joined(2, seed);
        // n1's acks to n0 are lost: n0's probes of n1 fail; nothing else is.
        net.drop_rule = Some(Box::new(|from, to, env| {
            from == 1 && to == 0 && matches!(env.body, Body::Ack { .. })
        }));
        net.run_until(ms(2_000), "n0 suspects n1", |net| {
            net.event_at(0, &Event::MemberSuspected(id(1))).is_some()
        });
        let t_suspect = net.now;
        // The suspect heard it at once (sent to it directly) and refuted.
        expect_event(&net, 1, &Event::IncarnationChanged(2));
        assert!(net.p(1).stats().refutations >= 1);
        net.run_until(ms(1_000), "n0 saw n1 recover", |net| {
            net.event_at(0, &Event::MemberRecovered(id(1))).is_some()
        });
        net.drop_rule = None;

        let recovered = expect_event(&net, 0, &Event::MemberRecovered(id(1)));
        assert!(recovered >= t_suspect);
        assert!(net.p(1).me().incarnation >= 2);
        assert_eq!(
            net.p(0).member(&id(1)).map(|m| m.incarnation),
            Some(net.p(1).me().incarnation)
        );
        expect_no_event(&net, 0, &Event::MemberDead(id(1)));
        net.settle(&[0, 1]);
        expect_member(&net, 0, 1, State::Alive, net.p(1).me().incarnation);
        assert_eq!(net.p(0).view_digest(), net.p(1).view_digest());
    });
}

/// Time from the first suspicion of a puppet to its death at a lone
/// `Swim`, with `confirmers` other puppets confirming at once.
fn time_to_dead(seed: u64, confirmers: &[usize]) -> Duration {
    // n0 is real; n1..=n5 are puppets that answer its pings. n5 is the
    // suspect, n1 the first suspecter, n2..=n4 possible confirmers.
    let mut net = Net::new(1, seed);
    for i in 1..=5 {
        net.puppets.insert(addr(i), id(i));
    }
    let members = (1..=5).map(|i| member(i, 1, State::Alive)).collect();
    let body = Body::PushPull {
        join: false,
        reply: true,
        members,
    };
    net.inject(0, Channel::Stream, &envelope(1, body, Vec::new()));
    assert_eq!(net.p(0).live_count(), 5);
    net.run_for(ms(500));

    let start = net.now;
    let suspect = |by: usize| {
        signed(Update::Suspect {
            id: id(5),
            incarnation: 1,
            by: id(by),
            sig: Sig::NONE,
        })
    };
    net.inject(
        0,
        Channel::Datagram,
        &envelope(1, Body::Gossip, vec![suspect(1)]),
    );
    for &c in confirmers {
        net.inject(
            0,
            Channel::Datagram,
            &envelope(c, Body::Gossip, vec![suspect(c)]),
        );
    }
    expect_event(&net, 0, &Event::MemberSuspected(id(5)));
    net.run_until(ms(2_000), "n0 declared n5 dead", |net| {
        net.state_of(0, 5) == Some(State::Dead)
    });
    assert_eq!(
        net.p(0).stats().suspicions_raised,
        0,
        "the puppets answered every probe"
    );
    net.now - start
}

#[test]
fn confirmations_from_distinct_peers_shorten_the_suspicion_timeout() {
    let config = Config::for_test();
    // Six peers: min = base * max(1, log10 6), max = min * mult, K = 3.
    let min = config.suspicion_min(6);
    let max = min * config.suspicion_max_mult;
    let k = config.suspicion_confirmations;
    assert_eq!(k, 3);
    let lifeguard = |c: u32| {
        let frac = f64::from(c + 1).ln() / f64::from(k + 1).ln();
        max.saturating_sub((max - min).mul_f64(frac)).max(min)
    };
    let cases: [(&[usize], u32); 5] = [
        (&[], 0),
        (&[1], 0),
        (&[2], 1),
        (&[2, 3], 2),
        (&[2, 3, 4], 3),
    ];
    let mut last = None;
    for (confirmers, c) in cases {
        let took = time_to_dead(7, confirmers);
        let want = lifeguard(c);
        assert!(
            took >= want && took <= want + STEP,
            "with confirmers {confirmers:?} ({c} distinct): dead after {took:?}, want {want:?}"
        );
        if !confirmers.is_empty() && confirmers != [1] {
            assert!(
                last.is_some_and(|l| took < l),
                "more confirmations must shorten the timeout"
            );
        }
        last = Some(took);
    }
    assert!(lifeguard(0) == max && lifeguard(3) == min);
}

#[test]
fn crashed_peer_is_declared_dead_before_the_maximum_when_others_confirm() {
    for_seeds(|seed| {
        let mut net = Net::joined(4, seed);
        let config = Config::for_test();
        net.crash(3);
        net.run_until(ms(3_000), "all survivors hold n3 dead", |net| {
            (0..3).all(|i| net.state_of(i, 3) == Some(State::Dead))
        });
        let max = config.suspicion_min(4) * config.suspicion_max_mult;
        let first_suspect = (0..3)
            .map(|i| expect_event(&net, i, &Event::MemberSuspected(id(3))))
            .min()
            .expect("3");
        let first_dead = (0..3)
            .map(|i| expect_event(&net, i, &Event::MemberDead(id(3))))
            .min()
            .expect("3");
        assert!(
            first_dead - first_suspect < max,
            "confirmations should have shortened {max:?}; took {:?}",
            first_dead - first_suspect
        );
        let suspecters: BTreeSet<NodeId> = net
            .log
            .iter()
            .flat_map(|s| s.env.updates.iter())
            .filter_map(|u| match u {
                Update::Suspect { id: i, by, .. } if *i == id(3) => Some(*by),
                _ => None,
            })
            .collect();
        assert!(
            suspecters.len() >= 2,
            "several independent suspecters gossiped: {suspecters:?}"
        );
    });
}

#[test]
fn own_failed_probe_of_a_suspect_counts_as_a_confirmation() {
    // A long maximum so n0 surely probes the suspect before it runs out.
    let config = Config {
        suspicion_max_mult: 20,
        ..Config::for_test()
    };
    let max = config.suspicion_min(6) * config.suspicion_max_mult;
    for_seeds(|seed| {
        // n0 is real; n1..=n4 are puppets that answer; n5 answers nothing.
        let mut net = Net::with_config(1, seed, &config);
        for i in 1..=4 {
            net.puppets.insert(addr(i), id(i));
        }
        let members = (1..=5).map(|i| member(i, 1, State::Alive)).collect();
        let body = Body::PushPull {
            join: false,
            reply: true,
            members,
        };
        net.inject(0, Channel::Stream, &envelope(1, body, Vec::new()));
        // n1 suspects n5 before n0 ever probes it.
        let start = net.now;
        let suspect = signed(Update::Suspect {
            id: id(5),
            incarnation: 1,
            by: id(1),
            sig: Sig::NONE,
        });
        net.inject(
            0,
            Channel::Datagram,
            &envelope(1, Body::Gossip, vec![suspect]),
        );
        expect_event(&net, 0, &Event::MemberSuspected(id(5)));
        net.run_until(max + STEP, "n0 declared n5 dead", |net| {
            net.state_of(0, 5) == Some(State::Dead)
        });
        expect_sent(&net, "n0's own ping of the suspect", |s| {
            s.from == 0 && s.to == addr(5) && matches!(s.env.body, Body::Ping { .. })
        });
        expect_sent(&net, "n0's confirmation of the suspicion", |s| {
            s.from == 0
                && carries(
                    &s.env,
                    |u| matches!(u, Update::Suspect { id: i, by, .. } if *i == id(5) && *by == id(0)),
                )
        });
        let took = net.now - start;
        assert!(
            took < max,
            "no confirmation counted: dead after the maximum {took:?}"
        );
    });
}

#[test]
fn push_pull_report_of_death_only_suspects_a_live_member() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        // n1 claims, in a full-state exchange, that n2 is dead.
        let members = vec![
            member(1, 1, State::Alive),
            member(2, 1, State::Dead),
            member(0, 1, State::Alive),
        ];
        let body = Body::PushPull {
            join: false,
            reply: true,
            members,
        };
        net.inject(0, Channel::Stream, &envelope(1, body, Vec::new()));
        expect_event(&net, 0, &Event::MemberSuspected(id(2)));
        expect_no_event(&net, 0, &Event::MemberDead(id(2)));
        // n2 gets its chance and refutes.
        net.run_until(ms(2_000), "n0 holds n2 alive again", |net| {
            net.state_of(0, 2) == Some(State::Alive)
        });
        expect_event(&net, 0, &Event::MemberRecovered(id(2)));
        expect_no_event(&net, 0, &Event::MemberDead(id(2)));
        assert!(net.p(2).me().incarnation >= 2);
    });
}
