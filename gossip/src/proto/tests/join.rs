//! Joining: through a seed, retrying until it answers, and a later
//! peer reaching the others by gossip.

use super::*;

#[test]
fn join_through_a_seed_lists_both_alive_and_views_agree() {
    for_seeds(|seed| {
        let mut net = Net::new(2, seed);
        assert!(
            net.p(0).is_joined(),
            "a peer without seeds is a cluster of one"
        );
        net.join(1, 0);

        // One push-pull and its reply: done at once, no timer needed.
        assert!(net.p(1).is_joined());
        expect_event(&net, 1, &Event::JoinedCluster);
        expect_event(&net, 0, &Event::MemberJoined(id(1)));
        expect_event(&net, 1, &Event::MemberJoined(id(0)));
        expect_no_event(&net, 0, &Event::JoinedCluster);
        expect_member(&net, 0, 1, State::Alive, 1);
        expect_member(&net, 1, 0, State::Alive, 1);
        assert_eq!(net.p(0).live_count(), 1);
        assert_eq!(net.p(1).live_count(), 1);
        assert_eq!(net.p(0).view_digest(), net.p(1).view_digest());

        // Every message carries the sender's digest: after a few pings each
        // side knows the other agrees.
        net.run_for(ms(1_000));
        assert_eq!(net.p(0).agreement(), (1, 1));
        assert_eq!(net.p(1).agreement(), (1, 1));
        assert!(net.p(0).stats().probes > 0 && net.p(1).stats().probes > 0);
        assert_eq!(
            net.p(0).stats().probes_failed + net.p(1).stats().probes_failed,
            0
        );
    });
}

#[test]
fn join_retries_with_backoff_until_the_seed_answers() {
    for_seeds(|seed| {
        let mut net = Net::new(2, seed);
        net.crash(0);
        net.join(1, 0);
        net.run_for(ms(1_500));
        assert!(!net.p(1).is_joined());

        let joins: Vec<Instant> = net
            .log
            .iter()
            .filter(|s| s.from == 1 && matches!(s.env.body, Body::PushPull { join: true, .. }))
            .map(|s| s.at)
            .collect();
        assert!(
            joins.len() >= 4,
            "expected several join attempts, got {}",
            joins.len()
        );
        let gaps: Vec<Duration> = joins.windows(2).map(|w| w[1] - w[0]).collect();
        let config = Config::for_test();
        for pair in gaps.windows(2) {
            assert!(pair[1] >= pair[0], "backoff must not shrink: {gaps:?}");
        }
        assert!(
            gaps.iter().all(|g| *g <= config.join_retry_max + STEP),
            "backoff capped: {gaps:?}"
        );
        assert!(gaps[0] < gaps[gaps.len() - 1], "backoff grows: {gaps:?}");

        // The seed comes up: the next retry gets an answer.
        let now = net.now;
        net.restart(0, peer(0, 1, seed, now));
        net.run_until(
            config.join_retry_max * 2,
            "n1 joined once the seed is up",
            |net| net.p(1).is_joined(),
        );
        expect_event(&net, 1, &Event::JoinedCluster);
        expect_member(&net, 0, 1, State::Alive, 1);
        expect_member(&net, 1, 0, State::Alive, 1);
    });
}

#[test]
fn third_peer_joining_through_the_seed_reaches_the_other_peer_by_gossip() {
    for_seeds(|seed| {
        let mut net = Net::joined(2, seed);
        assert!(net.elapsed() < ms(1_000), "the first two settled quickly");
        let before = net.log.len();
        let t_join = net.now;
        let now = net.now;
        net.peers.push(Some(peer(2, 1, seed, now)));
        net.join(2, 0);
        expect_member(&net, 0, 2, State::Alive, 1);
        expect_member(&net, 2, 1, State::Alive, 1);

        // Well before any periodic push-pull (push_pull_interval is 2 s).
        net.run_until(ms(800), "n1 learned n2", |net| {
            net.state_of(1, 2) == Some(State::Alive)
        });
        let learned = expect_event(&net, 1, &Event::MemberJoined(id(2)));
        assert!(learned >= t_join);
        let streams_to_n1 = net.log[before..]
            .iter()
            .filter(|s| s.to == addr(1) && s.channel == Channel::Stream)
            .count();
        assert_eq!(
            streams_to_n1, 0,
            "n1 must learn n2 from gossip, not push-pull"
        );
        expect_member(&net, 1, 2, State::Alive, 1);
        net.settle(&[0, 1, 2]);
    });
}

#[test]
fn fresh_seed_addresses_redirect_a_join_that_has_not_succeeded() {
    for_seeds(|seed| {
        // n1 was told a seed address nobody listens on (n2 is down, as a
        // seed whose DNS name still points at its old address would be).
        let mut net = Net::new(3, seed);
        net.crash(2);
        net.join(1, 2);
        net.run_for(ms(500));
        assert!(!net.p(1).is_joined());

        // The name resolves again, now to n0: the join follows at once.
        let now = net.now;
        net.p_mut(1).handle_seeds(now, vec![addr(0)]);
        net.flush();
        assert!(net.p(1).is_joined(), "joined through the new address");
        expect_member(&net, 0, 1, State::Alive, 1);
    });
}

#[test]
fn fresh_seed_addresses_reconnect_a_joined_peer_that_is_alone() {
    for_seeds(|seed| {
        // n1 is joined but alone (it never met n0: a cluster of one).
        let mut net = Net::new(2, seed);
        assert!(net.p(1).is_joined() && net.p(1).live_count() == 0);
        let now = net.now;
        // Its own address is ignored; n0's gets a push-pull.
        net.p_mut(1).handle_seeds(now, vec![addr(1), addr(0)]);
        net.flush();
        expect_member(&net, 0, 1, State::Alive, 1);
        expect_member(&net, 1, 0, State::Alive, 1);
    });
}
