//! Dissemination: piggybacked updates (retransmit budget, datagram size)
//! and metadata changes.

use super::*;

#[test]
fn update_is_piggybacked_at_most_retransmit_limit_times() {
    for_seeds(|seed| {
        let mut net = Net::joined(4, seed);
        let limit = Config::for_test().retransmit_limit(4);
        let start = net.log.len();
        let mut new_meta = meta(0);
        new_meta.tags.insert("rack".into(), "r1".into());
        let now = net.now;
        net.p_mut(0).handle_update_meta(now, new_meta);
        net.run_for(ms(3_000));

        let is_it =
            |u: &Update| matches!(u, Update::Alive { id: i, incarnation: 2, .. } if *i == id(0));
        for i in 0..4 {
            let sends = net.log[start..]
                .iter()
                .filter(|s| s.from == i && carries(&s.env, is_it))
                .count();
            let sends = u32::try_from(sends).expect("few");
            if i == 0 {
                assert_eq!(
                    sends, limit,
                    "the origin sends its update exactly {limit} times"
                );
            } else {
                assert!(
                    sends <= limit,
                    "n{i} relayed the update {sends} times, limit {limit}"
                );
            }
            assert_eq!(net.p(i).pending_broadcasts(), 0, "n{i} retired it");
        }
        for i in 1..4 {
            expect_member(&net, i, 0, State::Alive, 2);
        }
    });
}

#[test]
fn datagrams_stay_within_max_datagram_size_with_many_queued_updates() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        let config = Config::for_test();
        // 150 members with bulky metadata land on n0 at once.
        let fakes: Vec<Entry> = (0..150u16)
            .map(|k| {
                let mut m = Meta::new(
                    SocketAddr::from(([127, 0, 0, 2], 8000 + k)),
                    format!("fake-{k}"),
                );
                m.tags.insert("padding".into(), "x".repeat(200));
                m.build = "ringkv 0.1.0 (test build with a long version string)".into();
                Entry::new(
                    alive_of(NodeId::from_name(&format!("fake-{k}")), 1, m),
                    None,
                )
            })
            .collect();
        let fake_ids: BTreeSet<NodeId> = fakes.iter().map(|e| e.alive.id()).collect();
        let start = net.log.len();
        let body = Body::PushPull {
            join: false,
            reply: true,
            members: fakes,
        };
        net.inject(0, Channel::Stream, &envelope(1, body, Vec::new()));
        assert!(net.p(0).pending_broadcasts() >= 150);
        net.run_for(ms(2_000));

        let datagrams: Vec<&Sent> = net.log[start..]
            .iter()
            .filter(|s| s.channel == Channel::Datagram)
            .collect();
        let largest = datagrams.iter().map(|s| s.len).max().unwrap_or(0);
        for s in &datagrams {
            assert!(
                s.len <= config.max_datagram_size,
                "n{} sent a {}-byte datagram",
                s.from,
                s.len
            );
        }
        assert!(
            largest > config.max_datagram_size - 300,
            "datagrams are packed (largest {largest} bytes)"
        );
        let spread: BTreeSet<NodeId> = datagrams
            .iter()
            .filter(|s| s.from == 0)
            .flat_map(|s| s.env.updates.iter().map(Update::id))
            .filter(|i| fake_ids.contains(i))
            .collect();
        assert_eq!(
            spread.len(),
            fake_ids.len(),
            "every queued update was sent at least once"
        );
    });
}

#[test]
fn metadata_update_reaches_others_as_meta_changed() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        let mut new_meta = meta(0);
        new_meta.weight = 3;
        new_meta.zone = Some("z1".into());
        let now = net.now;
        net.p_mut(0).handle_update_meta(now, new_meta.clone());
        net.flush();
        expect_event(&net, 0, &Event::IncarnationChanged(2));
        assert_eq!(*net.p(0).me().meta, new_meta);

        net.run_until(ms(1_000), "n1 and n2 have n0's new metadata", |net| {
            (1..3).all(|i| net.p(i).member(&id(0)).is_some_and(|m| *m.meta == new_meta))
        });
        for i in 1..3 {
            expect_event(&net, i, &Event::MetaChanged(id(0)));
            expect_member(&net, i, 0, State::Alive, 2);
            assert!(
                !net.has_event_since(i, &Event::MemberJoined(id(0)), now),
                "n{i}: a metadata change is no join"
            );
        }
        // The same metadata again changes nothing.
        let events = net.events.len();
        net.p_mut(0).handle_update_meta(now, new_meta);
        net.flush();
        assert_eq!(net.p(0).me().incarnation, 2);
        assert_eq!(net.events.len(), events);
    });
}

/// A peer that missed every gossip of an update (each is sent a bounded
/// number of times, to random peers) learns it by a push-pull with a peer
/// whose reported view differs, as soon as the update's gossip is over:
/// not at the periodic push-pull, 10 minutes away here. Seen in a loaded
/// five-peer cluster: a missed ready announcement kept a coordinator
/// routing around a ready replica for 8 s.
#[test]
fn a_peer_that_missed_an_update_repairs_its_view_by_push_pull() {
    for_seeds(|seed| {
        let config = Config {
            push_pull_interval: Duration::from_secs(600),
            seed_contact_interval: Duration::from_secs(600),
            ..Config::for_test()
        };
        let mut net = Net::joined_with(5, seed, &config);
        let is_it =
            |u: &Update| matches!(u, Update::Alive { id: i, incarnation: 2, .. } if *i == id(0));
        // n3 gets none of n0's update by gossip; push-pulls get through.
        net.drop_rule = Some(Box::new(move |_, to, env| {
            to == 3 && !matches!(env.body, Body::PushPull { .. }) && carries(env, is_it)
        }));
        let mut new_meta = meta(0);
        new_meta.tags.insert("ready".into(), "ring-1".into());
        let now = net.now;
        net.p_mut(0).handle_update_meta(now, new_meta);
        let started = net.now;
        let limit = config.disagreement_max(5) + config.repair_interval + ms(1_000);
        let at = net.run_until(limit, "n3 learned n0's update", |net| {
            net.p(3).member(&id(0)).is_some_and(|m| m.incarnation == 2)
        });
        assert!(
            at.duration_since(started) >= config.disagreement_max(5),
            "repaired only once the update's gossip was over"
        );
        let repairs = |net: &Net| (0..5).map(|i| net.p(i).stats().view_repairs).sum::<u64>();
        assert!(repairs(&net) >= 1, "a push-pull repaired it");
        // Once the views agree again, nobody repairs any more.
        net.drop_rule = None;
        net.run_for(ms(1_000));
        let before = repairs(&net);
        net.run_for(ms(5_000));
        assert_eq!(repairs(&net), before, "no repair while the views agree");
    });
}

/// A peer that finds a member dead gossips it in a round of its own at
/// once, not at its next periodic round (200 ms away at worst, at every
/// hop of the spread; here the periodic rounds are a minute apart).
#[test]
fn a_death_is_gossiped_at_once_not_at_the_next_round() {
    for_seeds(|seed| {
        let mut net = Net::joined(4, seed);
        for i in 0..4 {
            net.p_mut(i).config.gossip_interval = Duration::from_secs(60);
        }
        // The rounds already due run once more, then not for a minute.
        net.run_for(ms(100));
        net.crash(3);
        let dead_at = net.run_until(ms(5_000), "n0 holds n3 dead", |net| {
            net.event_at(0, &Event::MemberDead(id(3))).is_some()
        });
        // Learned from a message, it is gossiped at the next step.
        net.run_for(STEP);
        let is_death = |u: &Update| matches!(u, Update::Dead { id: i, .. } if *i == id(3));
        let gossiped = net.log.iter().any(|s| {
            s.from == 0
                && s.at >= dead_at
                && s.at <= dead_at + STEP
                && matches!(s.env.body, Body::Gossip)
                && carries(&s.env, is_death)
        });
        assert!(gossiped, "n0 gossiped n3's death the moment it held it");
    });
}

/// A member this peer reaped does not come back in the full state of a
/// peer that has not reaped it yet (each reaps on its own timer, and a
/// repair push-pull would otherwise restore it and restart its clock, so
/// that dead members were never forgotten).
#[test]
fn a_reaped_member_does_not_come_back_in_an_older_full_state() {
    for_seeds(|seed| {
        let config = Config {
            dead_reap_after: ms(3_000),
            ..Config::for_test()
        };
        let mut net = Net::with_n2_dead(seed, &config);
        net.run_until(ms(20_000), "n2 forgotten at n0", |net| {
            net.p(0).member(&id(2)).is_none()
        });
        let n1 = net.p(0).member(&id(1)).expect("n1 known").incarnation;
        let body = full_state(vec![member(1, n1, State::Alive), member(2, 1, State::Dead)]);
        net.inject(0, Channel::Stream, &envelope(1, body, Vec::new()));
        assert!(net.p(0).member(&id(2)).is_none(), "n2 came back");
        // Nor alive, at the incarnation it died at.
        let body = full_state(vec![
            member(1, n1, State::Alive),
            member(2, 1, State::Alive),
        ]);
        net.inject(0, Channel::Stream, &envelope(1, body, Vec::new()));
        assert!(net.p(0).member(&id(2)).is_none(), "n2 came back alive");
    });
}

/// A peer whose reported view never matches (here one that always
/// reports digest 0) costs a repair at doubling intervals, not one every
/// `repair_interval`.
#[test]
fn repairs_with_a_peer_whose_view_never_matches_back_off() {
    for_seeds(|seed| {
        let config = Config {
            push_pull_interval: Duration::from_secs(600),
            seed_contact_interval: Duration::from_secs(600),
            ..Config::for_test()
        };
        let mut net = Net::with_config(1, seed, &config);
        net.puppets.insert(addr(1), id(1));
        let body = full_state(vec![member(1, 1, State::Alive)]);
        net.inject(0, Channel::Stream, &envelope(1, body, Vec::new()));
        assert_eq!(net.p(0).live_count(), 1);
        // The puppet acks every probe, always with view digest 0.
        net.run_for(ms(30_000));
        let repairs = net.p(0).stats().view_repairs;
        let every_interval = (30_000 / config.repair_interval.as_millis()) as u64;
        assert!(repairs >= 2, "it did repair: {repairs}");
        assert!(
            repairs <= every_interval / 2,
            "{repairs} repairs in 30 s; one per repair_interval would be {every_interval}"
        );
    });
}
