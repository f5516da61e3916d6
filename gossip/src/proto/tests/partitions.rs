//! Partitions: halves that declared each other dead, or forgot each other,
//! meet again without rejoining.

use super::*;

#[test]
fn partition_heals_without_rejoining() {
    for_seeds(|seed| {
        let mut net = Net::joined(4, seed);
        let (left, right) = ([0, 1], [2, 3]);
        net.partition(&left, &right);
        net.run_until(ms(5_000), "each half holds the other Dead", |net| {
            left.iter().all(|&a| {
                right.iter().all(|&b| {
                    net.state_of(a, b) == Some(State::Dead)
                        && net.state_of(b, a) == Some(State::Dead)
                })
            })
        });
        for i in 0..4 {
            assert_eq!(net.p(i).live_count(), 1, "n{i} sees only its half");
        }
        let healed = net.now;
        net.cut.clear();

        let all = [0, 1, 2, 3];
        net.run_until(ms(20_000), "everyone Alive at everyone", |net| {
            net.all_alive(&all)
        });
        net.settle(&all);
        for i in all {
            assert_eq!(net.p(i).live_count(), 3);
            assert!(net.p(i).is_joined());
        }
        // The halves found each other by pinging the dead, then swapped state.
        expect_sent(&net, "a ping to a member held dead, after the heal", |s| {
            s.at >= healed
                && matches!(&s.env.body, Body::Ping { target, .. }
                if matches!(s.env.updates.first(), Some(Update::Dead { id: d, .. }) if d == target))
        });
        expect_sent(&net, "a push-pull across the former partition", |s| {
            s.at >= healed
                && s.delivered
                && s.channel == Channel::Stream
                && left.contains(&s.from) != net.index_of(s.to).is_some_and(|t| left.contains(&t))
        });
    });
}

#[test]
fn halves_that_forgot_each_other_meet_again_through_seed_contact() {
    let config = Config {
        dead_reap_after: ms(3_000),
        ..Config::for_test()
    };
    for_seeds(|seed| {
        let mut net = Net::with_config(4, seed, &config);
        for i in 1..4 {
            net.join(i, 0);
        }
        let all = [0, 1, 2, 3];
        net.run_until(ms(3_000), "all Alive", |net| net.all_alive(&all));
        let (left, right) = ([0, 1], [2, 3]);
        net.partition(&left, &right);
        net.run_until(ms(30_000), "each half forgot the other", |net| {
            all.iter().all(|&i| net.p(i).members().count() == 1)
        });
        net.cut.clear();
        net.run_until(ms(20_000), "everyone Alive at everyone", |net| {
            net.all_alive(&all)
        });
        net.settle(&all);
    });
}
