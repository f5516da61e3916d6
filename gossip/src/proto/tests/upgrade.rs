//! Rolling upgrades: peers restarted one by one on a build that speaks
//! one wire version more. No frame reaches a peer that cannot decode it
//! (`deliver` fails the test on any rejection), and the newer version is
//! sent only once every live member advertises it.

use super::*;
use crate::proto::version::ProtocolRange;

/// Peer `i` restarted (incarnation `incarnation`) on the "new build":
/// protocol maximum raised to the test version, and advertised.
fn upgraded(i: usize, incarnation: Incarnation, seed: u64, now: Instant) -> Peer {
    let config = Config {
        protocol_max: codec::TEST_VERSION,
        ..Config::for_test()
    };
    let mut meta = meta(i);
    ProtocolRange {
        min: codec::MIN_VERSION,
        max: codec::TEST_VERSION,
    }
    .advertise(&mut meta);
    let rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let auth = Box::new(InsecureAuth::for_id(id(i)));
    Swim::new(config, id(i), incarnation, meta, rng, auth, now)
}

#[test]
fn a_rolled_cluster_switches_to_the_new_version_only_once_every_member_speaks_it() {
    for_seeds(|seed| {
        let n = 3;
        let all: Vec<usize> = (0..n).collect();
        let mut net = Net::joined(n, seed);
        // Roll the peers one by one, newest last.
        for (round, i) in (0..n).rev().enumerate() {
            net.crash(i);
            let now = net.now;
            net.restart(i, upgraded(i, 2, seed, now));
            let seed_peer = if i == 0 { 1 } else { 0 };
            net.join(i, seed_peer);
            net.run_until(ms(5_000), "the restarted peer is Alive everywhere", |net| {
                net.all_alive(&all)
            });
            net.settle(&all);
            let from = net.log.len();
            net.run_for(ms(1_000));
            let sent = &net.log[from..];
            assert!(!sent.is_empty());
            let still_old = round + 1 < n;
            for s in sent {
                if still_old {
                    assert_eq!(
                        s.version,
                        codec::VERSION,
                        "round {round}: n{} sent version {} while an old build is live",
                        s.from,
                        s.version
                    );
                }
            }
            if !still_old {
                assert!(
                    sent.iter().all(|s| s.version == codec::TEST_VERSION),
                    "every frame speaks the new version once all are upgraded"
                );
            }
            for &j in &all {
                let want = if still_old {
                    codec::VERSION
                } else {
                    codec::TEST_VERSION
                };
                if net.p(j).config.protocol_max == codec::TEST_VERSION {
                    assert_eq!(net.p(j).cluster_version(), want, "round {round}, n{j}");
                }
            }
        }
    });
}

#[test]
fn an_old_build_rejoining_drops_the_gate_back() {
    for_seeds(|seed| {
        let now = Instant::now();
        let mut net = Net::new(0, seed);
        net.t0 = now;
        net.now = now;
        for i in 0..3 {
            net.peers.push(Some(upgraded(i, 1, seed, now)));
        }
        let all: Vec<usize> = (0..3).collect();
        net.join(1, 0);
        net.join(2, 0);
        net.run_until(ms(5_000), "all alive", |net| net.all_alive(&all));
        net.settle(&all);
        assert_eq!(net.p(0).cluster_version(), codec::TEST_VERSION);
        // n2 is rolled back to the old build. Until its new Alive reaches
        // n1, n1 still holds n2's old range and may send it the newer
        // version, which n2 refuses like a lost datagram: the restart
        // instant. (The runner's per-connection negotiation closes that
        // window on a real network, where the restart drops the
        // connection.)
        net.rejected = Some(Vec::new());
        net.crash(2);
        let now = net.now;
        net.restart(2, peer(2, 2, seed, now));
        net.join(2, 0);
        net.run_until(ms(5_000), "the old build is Alive everywhere", |net| {
            net.all_alive(&all) && net.p(1).cluster_version() == codec::VERSION
        });
        assert_eq!(net.p(0).cluster_version(), codec::VERSION);
        let from = net.log.len();
        let refused = net.rejected.as_ref().map_or(0, Vec::len);
        net.run_for(ms(1_000));
        assert!(net.log[from..].iter().all(|s| s.version == codec::VERSION));
        assert_eq!(
            net.rejected.as_ref().map_or(0, Vec::len),
            refused,
            "nothing is refused once the old build is known"
        );
        assert!(
            net.rejected.iter().flatten().all(|&(_, to)| to == 2),
            "only the rolled-back peer refuses anything"
        );
    });
}
