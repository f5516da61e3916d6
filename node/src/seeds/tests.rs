use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;

fn rng() -> ChaCha8Rng {
    let seed = std::env::var("RINGKV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    eprintln!("seed {seed}");
    ChaCha8Rng::seed_from_u64(seed)
}

const RETRY: SeedRetry = SeedRetry {
    base: Duration::from_secs(1),
    max: Duration::from_secs(30),
};

fn alone() -> Sighting {
    Sighting {
        joined: true,
        live_others: 0,
        seeds_known: true,
        seed_live: false,
    }
}

fn settled() -> Sighting {
    Sighting {
        joined: true,
        live_others: 2,
        seeds_known: true,
        seed_live: true,
    }
}

#[test]
fn seed_names_are_host_and_port() {
    let ok = |t: &str| SeedName::parse(t).unwrap_or_else(|e| panic!("{t}: {e}"));
    assert_eq!(
        ok("ringkv-0.ringkv.default.svc.cluster.local:7000"),
        SeedName {
            host: "ringkv-0.ringkv.default.svc.cluster.local".into(),
            port: 7000
        }
    );
    assert_eq!(ok("localhost:7001").to_string(), "localhost:7001");
    assert_eq!(ok("127.0.0.1:7001").port, 7001);
    assert_eq!(ok("[::1]:7001").host, "::1");
    assert_eq!(ok("[::1]:7001").to_string(), "[::1]:7001");
    for bad in [
        "localhost",
        ":7000",
        "host:0",
        "host:70000",
        "host:port",
        "::1:7000",
        "[::1]7000",
        "a b:7000",
        "",
    ] {
        let err = SeedName::parse(bad).expect_err(bad);
        assert!(err.contains("host:port"), "{bad}: {err}");
    }
}

#[test]
fn backoff_doubles_up_to_the_cap_and_jitters_in_its_upper_half() {
    let mut rng = rng();
    for attempt in 0..40 {
        let full = (RETRY.base * 2u32.pow(attempt.min(10))).min(RETRY.max);
        for _ in 0..50 {
            let d = RETRY.delay(attempt, &mut rng);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
    }
    // Jittered: not all the same.
    let waits: Vec<Duration> = (0..20).map(|_| RETRY.delay(3, &mut rng)).collect();
    assert!(waits.iter().any(|w| *w != waits[0]), "{waits:?}");
    // The same seed gives the same waits.
    let (mut a, mut b) = (ChaCha8Rng::seed_from_u64(1), ChaCha8Rng::seed_from_u64(1));
    assert_eq!(RETRY.delay(4, &mut a), RETRY.delay(4, &mut b));
}

#[test]
fn attempts_follow_the_backoff_until_the_peer_is_settled() {
    let mut rng = rng();
    let t0 = Instant::now();
    let mut plan = SeedPlan::new(RETRY, t0, &mut rng);
    let first = plan.poll_timeout().expect("an attempt is due");
    assert!(first >= t0 + RETRY.base / 2 && first <= t0 + RETRY.base);
    assert!(!plan.handle_timeout(t0, &mut rng), "not before its time");

    // Not joined yet: attempts keep coming, further and further apart
    // (never beyond the cap).
    let mut now = first;
    let mut gaps = Vec::new();
    for _ in 0..12 {
        plan.handle_view(
            now,
            Sighting {
                joined: false,
                live_others: 0,
                seeds_known: false,
                seed_live: false,
            },
        );
        assert!(plan.handle_timeout(now, &mut rng));
        let next = plan.poll_timeout().expect("next attempt");
        gaps.push(next - now);
        now = next;
    }
    assert!(gaps.iter().all(|g| *g <= RETRY.max), "{gaps:?}");
    assert!(gaps[0] < gaps[5], "{gaps:?}");
    assert!(gaps[11] >= RETRY.max / 2, "{gaps:?}");

    // Joined, with others and a seed alive: no more attempts.
    plan.handle_view(now, settled());
    assert_eq!(plan.poll_timeout(), None);
    assert!(!plan.handle_timeout(now + Duration::from_secs(3600), &mut rng));
    assert_eq!(plan.attempts(), 0);
}

#[test]
fn a_settled_peer_that_finds_itself_alone_resolves_again_at_once() {
    let mut rng = rng();
    let t0 = Instant::now();
    let mut plan = SeedPlan::new(RETRY, t0, &mut rng);
    plan.handle_view(t0, settled());
    assert_eq!(plan.poll_timeout(), None);

    let later = t0 + Duration::from_secs(600);
    plan.handle_view(later, alone());
    assert_eq!(
        plan.poll_timeout(),
        Some(later),
        "at once, not after a wait"
    );
    assert!(plan.handle_timeout(later, &mut rng));
    let next = plan.poll_timeout().expect("retries while alone");
    assert!(next - later <= RETRY.base, "backoff started over");
    // More views while alone do not pull the next attempt forward.
    plan.handle_view(later, alone());
    assert_eq!(plan.poll_timeout(), Some(next));
}

#[test]
fn a_peer_whose_seeds_are_all_gone_resolves_again_even_with_others_alive() {
    let mut rng = rng();
    let t0 = Instant::now();
    let mut plan = SeedPlan::new(RETRY, t0, &mut rng);
    plan.handle_view(t0, settled());
    let cut_off = Sighting {
        seed_live: false,
        ..settled()
    };
    assert!(!cut_off.settled());
    plan.handle_view(t0, cut_off);
    assert_eq!(plan.poll_timeout(), Some(t0));

    // Names that point only at this peer (it is the seed): not a reason.
    let own_seed = Sighting {
        seeds_known: false,
        seed_live: false,
        ..settled()
    };
    assert!(own_seed.settled());
}

#[test]
fn merged_addresses_keep_order_and_drop_repeats_and_this_peer() {
    let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let me = a(1);
    assert_eq!(
        merge(&[vec![a(1), a(2)], vec![a(3), a(2)], vec![]], me),
        vec![a(2), a(3)]
    );
}
