//! Input a peer must survive unchanged: another cluster's messages,
//! garbage bytes, claims at the highest incarnation.

use super::*;

#[test]
fn message_from_another_cluster_is_dropped() {
    for_seeds(|seed| {
        let mut net = Net::joined(2, seed);
        let digest = net.p(0).view_digest();
        let events = net.events.len();

        // A whole peer configured for another cluster tries to join through n0.
        let other = Config {
            cluster: ClusterId([7; 16]),
            ..Config::for_test()
        };
        let now = net.now;
        net.peers
            .push(Some(peer_with(other.clone(), 2, 1, seed, now)));
        net.join(2, 0);
        assert_eq!(net.p(0).stats().foreign_dropped, 1);
        net.run_for(ms(500));
        assert!(
            net.p(0).stats().foreign_dropped >= 2,
            "its retries are dropped too"
        );
        assert!(!net.p(2).is_joined());
        assert!(net.p(0).member(&id(2)).is_none());

        // A datagram with statements that would matter if it were ours.
        let before = net.p(1).stats().foreign_dropped;
        let mut env = envelope(
            2,
            Body::Gossip,
            vec![
                alive(2, 1),
                signed(Update::Suspect {
                    id: id(0),
                    incarnation: 1,
                    by: id(2),
                    sig: Sig::NONE,
                }),
            ],
        );
        env.cluster = other.cluster;
        net.inject(1, Channel::Datagram, &env);
        assert_eq!(net.p(1).stats().foreign_dropped, before + 1);

        for i in 0..2 {
            assert!(net.p(i).member(&id(2)).is_none());
            assert_eq!(net.p(i).me().incarnation, 1);
            assert_eq!(net.p(i).view_digest(), digest);
        }
        assert!(
            net.events[events..].iter().all(|(_, p, _)| *p == 2),
            "no events at n0 or n1"
        );
    });
}

#[test]
fn garbage_bytes_are_rejected_and_change_nothing() {
    for_seeds(|seed| {
        let mut net = Net::joined(2, seed);
        let valid = codec::encode(&envelope(1, Body::Gossip, vec![alive(3, 1)])).expect("encodes");
        let mut trailing = valid.clone();
        trailing.push(0);
        let mut bad_version = valid.clone();
        bad_version[2] = 99;
        let garbage: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("two bytes", b"RG".to_vec()),
            ("bad magic", b"XX\x01\x00\x00".to_vec()),
            ("bad version", bad_version),
            ("header only", b"RG\x03".to_vec()),
            ("truncated", valid[..valid.len() - 5].to_vec()),
            ("trailing byte", trailing),
            (
                "random",
                (0..200u32)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect(),
            ),
            ("too large", [b"RG\x03".as_slice(), &[0u8; 3_000]].concat()),
        ];
        let now = net.now;
        let p = net.p_mut(0);
        let digest = p.view_digest();
        let members: Vec<Member> = p.members().cloned().collect();
        let timers = p.pending_timers();
        let stats = p.stats().clone();
        for (what, bytes) in &garbage {
            assert!(
                p.handle_datagram(now, bytes).is_err(),
                "{what}: datagram accepted"
            );
            assert!(
                p.handle_stream(now, bytes).is_err(),
                "{what}: stream accepted"
            );
        }
        assert_eq!(
            p.stats().decode_errors,
            stats.decode_errors + 2 * garbage.len() as u64
        );
        assert_eq!(p.view_digest(), digest);
        assert_eq!(p.members().cloned().collect::<Vec<_>>(), members);
        assert_eq!(p.pending_timers(), timers);
        assert!(p.poll_transmit().is_none());
        assert!(p.poll_event().is_none());
        let after = p.stats();
        assert_eq!(
            (after.foreign_dropped, after.refutations, after.probes),
            (stats.foreign_dropped, stats.refutations, stats.probes)
        );
        // The valid message is still accepted afterwards.
        p.handle_datagram(now, &valid).expect("valid bytes decode");
        assert!(p.member(&id(3)).is_some());
    });
}

#[test]
fn claims_at_the_highest_incarnation_do_not_panic() {
    let t0 = Instant::now();
    for update in [
        signed(Update::Suspect {
            id: id(0),
            incarnation: u64::MAX,
            by: id(1),
            sig: Sig::NONE,
        }),
        alive(0, u64::MAX),
    ] {
        let mut p = peer(0, 1, 20, t0);
        let bytes = codec::encode(&envelope(1, Body::Gossip, vec![update])).expect("encodes");
        p.handle_datagram(t0, &bytes).expect("decodes");
        assert!(p.me().incarnation >= 1, "incarnation never decreases");
    }
}
