//! The clock offset estimate and the absence rule.

use super::*;

const MAX: Duration = Duration::from_millis(500);

fn id(n: &str) -> NodeId {
    NodeId::from_name(n)
}

#[test]
fn nothing_measured_is_unmeasured() {
    assert_eq!(
        Offsets::default().verdict(MAX, 3, Instant::now()),
        Verdict::Unmeasured
    );
}

#[test]
fn the_offset_is_estimated_from_the_round_trip_midpoint() {
    let now = Instant::now();
    let mut o = Offsets::default();
    // Sent at 1000 by our clock, 100 ms round trip, the remote read 1250:
    // it is 200 ms ahead of us, so we are 200 ms behind.
    o.record(id("a"), 1000, 1250, Duration::from_millis(100), now);
    assert_eq!(
        o.verdict(MAX, 3, now),
        Verdict::Within {
            offset_ms: -200,
            measured: 1
        }
    );
}

#[test]
fn the_shortest_round_trip_wins() {
    let now = Instant::now();
    let mut o = Offsets::default();
    // A slow probe suggests 2 s; a fast one says 10 ms.
    o.record(id("a"), 1000, 5000, Duration::from_millis(4000), now);
    o.record(id("a"), 9000, 9030, Duration::from_millis(40), now);
    assert_eq!(o.verdict(MAX, 3, now).offset_ms(), Some(-10));
}

#[test]
fn a_peer_far_from_most_others_is_beyond() {
    let now = Instant::now();
    let mut o = Offsets::default();
    // Our clock is 2 s ahead of three peers.
    for p in ["a", "b", "c"] {
        o.record(id(p), 10_000, 8_000, Duration::from_millis(2), now);
    }
    let v = o.verdict(MAX, 3, now);
    assert_eq!(
        v,
        Verdict::Beyond {
            offset_ms: 2001,
            far: 3,
            measured: 3
        }
    );
    assert!(v.is_beyond());
    assert!(v.to_string().contains("+2001 ms"), "{v}");
}

#[test]
fn one_wrong_peer_does_not_make_the_others_beyond() {
    let now = Instant::now();
    let mut o = Offsets::default();
    // Measured from a correct peer: one other is 2 s ahead, two agree.
    o.record(id("fast"), 10_000, 12_001, Duration::from_millis(2), now);
    o.record(id("b"), 10_000, 10_001, Duration::from_millis(2), now);
    o.record(id("c"), 10_000, 10_001, Duration::from_millis(2), now);
    assert!(matches!(o.verdict(MAX, 3, now), Verdict::Within { .. }));
}

#[test]
fn an_offset_within_its_uncertainty_is_not_beyond() {
    let now = Instant::now();
    let mut o = Offsets::default();
    // 800 ms apparent offset, but a 800 ms round trip: it may be 400.
    o.record(id("a"), 10_000, 11_200, Duration::from_millis(800), now);
    assert!(matches!(o.verdict(MAX, 3, now), Verdict::Within { .. }));
}

#[test]
fn old_samples_and_departed_peers_are_forgotten() {
    let start = Instant::now();
    let mut o = Offsets::default();
    o.record(id("a"), 10_000, 5_000, Duration::from_millis(2), start);
    assert!(o.verdict(MAX, 1, start).is_beyond());
    let later = start + SAMPLE_AGE_MAX + Duration::from_secs(1);
    assert_eq!(o.verdict(MAX, 3, later), Verdict::Unmeasured);
    o.record(id("b"), 10_000, 5_000, Duration::from_millis(2), later);
    o.retain(|p| *p != id("b"));
    assert_eq!(o.verdict(MAX, 3, later), Verdict::Unmeasured);
}

#[test]
fn a_clock_jump_alone_never_clears_data() {
    let (dead, tomb) = (Duration::from_secs(60), Duration::from_secs(86_400));
    let year = Duration::from_secs(365 * 86_400);
    assert_eq!(
        absence_action(Duration::from_secs(1), dead, tomb, Confirmation::Nobody),
        AbsenceAction::Keep
    );
    assert_eq!(
        absence_action(Duration::from_secs(120), dead, tomb, Confirmation::Nobody),
        AbsenceAction::Compare
    );
    // Away a year by our clock: only a peer whose clock agrees confirms it.
    assert_eq!(
        absence_action(year, dead, tomb, Confirmation::Agrees),
        AbsenceAction::Clear
    );
    assert_eq!(
        absence_action(year, dead, tomb, Confirmation::Nobody),
        AbsenceAction::Compare
    );
    assert_eq!(
        absence_action(
            year,
            dead,
            tomb,
            Confirmation::Disagrees {
                offset_ms: 31_536_000_000
            }
        ),
        AbsenceAction::Compare
    );
}

#[test]
fn start_up_answers_confirm_or_contradict_our_clock() {
    assert_eq!(confirmation(&[], MAX), Confirmation::Nobody);
    assert_eq!(
        confirmation(&[(-20, 1), (9_000_000, 1)], MAX),
        Confirmation::Agrees
    );
    assert_eq!(
        confirmation(&[(-9_000_000, 1), (-9_000_100, 1)], MAX),
        Confirmation::Disagrees {
            offset_ms: 9_000_000
        }
    );
}

#[test]
fn the_first_peer_measured_being_wrong_does_not_make_this_one_beyond() {
    let now = Instant::now();
    let mut o = Offsets::default();
    o.record(id("fast"), 10_000, 12_001, Duration::from_millis(2), now);
    assert!(matches!(o.verdict(MAX, 3, now), Verdict::Within { .. }));
    // With one other member, there is no telling: both are beyond.
    assert!(o.verdict(MAX, 1, now).is_beyond());
}

#[test]
fn a_clock_step_shows_at_the_next_sample_despite_shorter_older_round_trips() {
    let now = Instant::now();
    let mut o = Offsets::default();
    // Three quiet probes (1 ms round trips) say the clocks agree; then
    // this peer's clock steps 2 s ahead and, under load, the next probe
    // takes 300 ms.
    for t in [1_000, 2_000, 3_000] {
        o.record(id("a"), t, t, Duration::from_millis(1), now);
    }
    o.record(id("a"), 6_000, 4_150, Duration::from_millis(300), now);
    assert_eq!(o.verdict(MAX, 1, now).offset_ms(), Some(2000));
    assert!(o.verdict(MAX, 1, now).is_beyond());
}
