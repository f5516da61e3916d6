//! Probing: a direct ping, then helpers (`PingReq`) before any
//! suspicion; acks only for pings meant for us; bounded forwarded probes.

use super::*;

#[test]
fn unanswered_probe_asks_helpers_then_suspects_then_declares_dead() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        let config = Config::for_test();
        let t_crash = net.now;
        net.crash(2);
        net.run_until(ms(3_000), "n0 and n1 hold n2 dead", |net| {
            net.state_of(0, 2) == Some(State::Dead) && net.state_of(1, 2) == Some(State::Dead)
        });

        // The first peer to suspect n2 through its own failed probe (the other
        // may have heard it from it, or suspected it too).
        let (t_suspect, p) = (0..2)
            .filter(|&p| net.p(p).stats().suspicions_raised > 0)
            .map(|p| (expect_event(&net, p, &Event::MemberSuspected(id(2))), p))
            .min()
            .expect("someone raised a suspicion itself");
        let helper = 1 - p;
        let ping_req = expect_sent(&net, "a PingReq about n2 before the first suspicion", |s| {
            s.from == p
                && s.at >= t_crash
                && s.at <= t_suspect
                && matches!(s.env.body, Body::PingReq { target, .. } if target == id(2))
        });
        let (
            Body::PingReq {
                seq, target_addr, ..
            },
            to,
            t_req,
        ) = (&ping_req.env.body, ping_req.to, ping_req.at)
        else {
            unreachable!()
        };
        assert_eq!(*target_addr, addr(2));
        assert_eq!(to, addr(helper), "the only possible helper");
        let ping = expect_sent(&net, "the direct ping of that probe", |s| {
            s.from == p
                && s.to == addr(2)
                && matches!(s.env.body, Body::Ping { seq: q, .. } if q == *seq)
        });
        assert!(
            t_req - ping.at >= config.probe_timeout,
            "indirect only after the probe timeout"
        );
        assert!(
            t_suspect - ping.at >= config.probe_timeout + config.indirect_timeout,
            "suspect only when the indirect probe's time is up too"
        );
        // The helper tried n2 itself and, getting nothing, nacked (Lifeguard).
        expect_sent(&net, "the helper's own ping of n2", |s| {
            s.from == helper
                && s.to == addr(2)
                && s.at >= t_req
                && matches!(s.env.body, Body::Ping { .. })
        });
        expect_sent(&net, "the helper's nack to the prober", |s| {
            s.from == helper
                && s.to == addr(p)
                && matches!(s.env.body, Body::Nack { seq: q } if q == *seq)
        });
        assert!(net.p(p).stats().suspicions_raised >= 1);
        assert!(net.p(p).stats().probes_failed >= 1);

        // Then the suspicion ran out: Dead, no sooner than the minimum.
        for q in 0..2 {
            let suspected = expect_event(&net, q, &Event::MemberSuspected(id(2)));
            let dead = expect_event(&net, q, &Event::MemberDead(id(2)));
            let min = config.suspicion_min(3);
            let max = min * config.suspicion_max_mult;
            let took = dead - suspected;
            assert!(
                took >= min || q != p,
                "n{p} declared dead after {took:?}, before the minimum {min:?}"
            );
            assert!(
                took <= max + STEP,
                "n{q} declared dead after {took:?}, past the maximum {max:?}"
            );
            expect_member(&net, q, 2, State::Dead, 1);
            assert_eq!(net.p(q).live_count(), 1);
        }
        assert_eq!(net.p(0).view_digest(), net.p(1).view_digest());
    });
}

#[test]
fn indirect_ack_through_a_helper_prevents_suspicion() {
    for_seeds(|seed| {
        let mut net = Net::joined(3, seed);
        // n0 and n2 cannot hear each other; n1 reaches both.
        net.partition(&[0], &[2]);
        let t_cut = net.now;
        net.run_for(ms(2_000));

        let forwarded = net
            .log
            .iter()
            .filter(|s| {
                s.at >= t_cut
                    && s.from == 1
                    && s.to == addr(0)
                    && matches!(s.env.body, Body::Ack { .. })
            })
            .count();
        assert!(forwarded > 0, "n1 forwarded acks from n2 to n0");
        expect_sent(&net, "a PingReq from n0 about n2", |s| {
            s.from == 0 && matches!(s.env.body, Body::PingReq { target, .. } if target == id(2))
        });
        for (i, j) in [(0, 2), (2, 0)] {
            expect_no_event(&net, i, &Event::MemberSuspected(id(j)));
            expect_member(&net, i, j, State::Alive, 1);
        }
    });
}

#[test]
fn ping_meant_for_another_peer_is_not_acked() {
    for_seeds(|seed| {
        let mut net = Net::joined(2, seed);
        let acks = |net: &Net, seq: u64| {
            net.log
                .iter()
                .filter(|s| s.from == 0 && s.env.body == Body::Ack { seq })
                .count()
        };
        // A peer that used to live at n0's address.
        let ping = Body::Ping {
            seq: 1_000_001,
            target: id(9),
        };
        net.inject(0, Channel::Datagram, &envelope(1, ping, Vec::new()));
        assert_eq!(acks(&net, 1_000_001), 0, "n0 acked a ping meant for n9");
        let ping = Body::Ping {
            seq: 1_000_002,
            target: id(0),
        };
        net.inject(0, Channel::Datagram, &envelope(1, ping, Vec::new()));
        assert_eq!(acks(&net, 1_000_002), 1);
    });
}

#[test]
fn indirect_probes_run_for_others_are_bounded_and_nacked() {
    for_seeds(|seed| {
        let mut net = Net::joined(2, seed);
        let config = Config::for_test();
        let start = net.log.len();
        // A flood of requests to probe n9, which does not exist.
        let flood = config.forward_probes_max + 50;
        for k in 0..flood {
            let seq = 2_000_000 + k as u64;
            let body = Body::PingReq {
                seq,
                target: id(9),
                target_addr: addr(9),
            };
            net.inject(0, Channel::Datagram, &envelope(1, body, Vec::new()));
        }
        let pings = net.log[start..]
            .iter()
            .filter(|s| s.from == 0 && s.to == addr(9) && matches!(s.env.body, Body::Ping { .. }))
            .count();
        assert_eq!(
            pings, config.forward_probes_max,
            "one ping per request, up to the bound"
        );
        net.run_for(config.probe_timeout + STEP);
        let nacks = net.log[start..]
            .iter()
            .filter(|s| {
                s.from == 0
                    && s.to == addr(1)
                    && matches!(s.env.body, Body::Nack { seq } if seq >= 2_000_000)
            })
            .count();
        assert_eq!(
            nacks, pings,
            "every forwarded probe that timed out is nacked"
        );
        // The slots are free again.
        let body = Body::PingReq {
            seq: 3_000_000,
            target: id(9),
            target_addr: addr(9),
        };
        let before = net.log.len();
        net.inject(0, Channel::Datagram, &envelope(1, body, Vec::new()));
        assert!(net.log[before..]
            .iter()
            .any(|s| s.from == 0 && s.to == addr(9)));
        assert!(net.all_alive(&[0, 1]));
    });
}
