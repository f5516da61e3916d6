//! A peer's own health: Lifeguard's awareness score (missing nacks) and
//! the stall guard (a peer whose loop stalled blames itself, not others).

use super::*;

#[test]
fn missing_nacks_raise_health_score_and_acks_lower_it() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        assert_eq!(net.p(0).health_score(), 0);
        // Nothing reaches n0: no acks, no nacks. The fault is on its side.
        net.cut.insert((1, 0));
        net.cut.insert((2, 0));
        net.run_until(ms(2_000), "n0's health score rose", |net| {
            net.p(0).health_score() >= 2
        });
        net.cut.clear();
        net.run_until(ms(15_000), "n0 healthy again with everyone Alive", |net| {
            net.p(0).health_score() == 0 && net.all_alive(&[0, 1, 2])
        });
    });
}

#[test]
fn stalled_peer_suspects_nobody_while_catching_up() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        let config = Config::for_test();
        let before = net.p(0).stats().clone();
        assert_eq!(before.stalls, 0);
        // n0's loop stalls for far longer than stall_threshold.
        net.paused.insert(0);
        net.run_for(config.stall_threshold * 3);
        net.paused.clear();
        // From now on nothing reaches n0: no acks, no refutations.
        net.cut.insert((1, 0));
        net.cut.insert((2, 0));
        let resumed = net.now + STEP;
        net.step();

        assert_eq!(net.p(0).stats().stalls, 1);
        assert!(net.p(0).is_catching_up(net.now));
        // Every step that runs entirely inside the catch-up window.
        while net.p(0).is_catching_up(net.now + STEP) {
            net.step();
            for j in 1..3 {
                assert!(
                    !net.has_event_since(0, &Event::MemberSuspected(id(j)), resumed),
                    "n0 suspected n{j} while catching up"
                );
            }
            assert!(net.elapsed() < ms(20_000), "catch-up window never ends");
        }
        let after = net.p(0).stats().clone();
        assert!(
            after.probes_failed > before.probes_failed,
            "probes failed inside the window"
        );
        assert_eq!(
            after.suspicions_raised, before.suspicions_raised,
            "yet nobody was suspected"
        );
        assert_eq!(after.stalls, 1, "one stall, counted once");

        // The guard is bounded: after the window, silence counts again.
        net.run_until(ms(5_000), "n0 suspects someone after catching up", |net| {
            net.p(0).stats().suspicions_raised > before.suspicions_raised
        });
    });
}

#[test]
fn stalled_peer_reads_its_inbox_before_declaring_anyone_dead() {
    for_seeds(|seed| {
        let mut net = Net::joined(2, seed);
        let config = Config::for_test();
        // n1's messages to n0 are lost until n0 suspects n1 (all of them:
        // n1 answers n0's probes of a suspect it refuted, correction.rs).
        net.drop_rule = Some(Box::new(|from, to, _env| from == 1 && to == 0));
        net.run_until(ms(2_000), "n0 suspects n1", |net| {
            net.state_of(0, 1) == Some(State::Suspect)
        });
        net.drop_rule = None;
        // Then n0's loop stalls past the suspicion's deadline, while n1's
        // refutation waits in n0's inbox.
        net.hold = true;
        net.paused.insert(0);
        net.run_for(config.suspicion_min(2) * config.suspicion_max_mult + ms(500));
        assert!(
            net.held.iter().any(|(from, _, _)| *from == 1),
            "n1's refutation is waiting"
        );
        net.paused.clear();
        let resumed = net.now + STEP;
        net.step();

        assert_eq!(net.p(0).stats().stalls, 1);
        expect_no_event(&net, 0, &Event::MemberDead(id(1)));
        assert!(net.has_event_since(0, &Event::MemberRecovered(id(1)), resumed));
        expect_member(&net, 0, 1, State::Alive, net.p(1).me().incarnation);
        net.run_until(ms(5_000), "everyone Alive again", |net| {
            net.all_alive(&[0, 1])
        });
        expect_no_event(&net, 0, &Event::MemberDead(id(1)));
    });
}
