use std::sync::Arc;

use ringkv_gossip::{Member, NodeStatus, State};

use super::*;
use crate::test_support::{id, member, ring};

const SETTLE: Duration = Duration::from_secs(2);
const GRACE: Duration = Duration::from_secs(10);

/// The view of `me` with `others`; the views agree when `agree`.
fn view(me: Member, others: Vec<Member>, agree: bool) -> View {
    let live = others.iter().filter(|m| m.state.is_live()).count();
    let counts = if agree { (live, live) } else { (0, live) };
    View {
        agreement: counts,
        ring_agreement: counts,
        ..crate::test_support::view(me, others)
    }
}

/// `me` and the others alive, none announced anything.
fn fresh(agree: bool) -> View {
    view(
        member("me", State::Alive, None),
        vec![
            member("a", State::Alive, None),
            member("b", State::Alive, None),
        ],
        agree,
    )
}

fn phase() -> Phase {
    Phase::new(PhaseConfig {
        settle: SETTLE,
        cleanup_grace: GRACE,
    })
}

fn is_sync(a: &Action) -> bool {
    matches!(a, Action::Sync { .. })
}

#[test]
fn a_new_ring_settles_before_data_moves() {
    let (r, v, t0) = (ring(&["me", "a", "b"]), fresh(true), Instant::now());
    let mut p = phase();
    assert_eq!(p.handle_tick(t0, &v, &r, None, false), Action::Wait);
    let ms = Duration::from_millis(1);
    assert_eq!(
        p.handle_tick(t0 + ms, &v, &r, None, false),
        Action::Wait,
        "agreement starts counting"
    );
    assert_eq!(
        p.handle_tick(t0 + SETTLE, &v, &r, None, false),
        Action::Wait,
        "agreed for less than the settle time"
    );
    let a = p.handle_tick(t0 + SETTLE + ms, &v, &r, None, false);
    assert_eq!(
        a,
        Action::Sync {
            ring: r.clone(),
            tag: ring_tag(&r)
        }
    );
}

#[test]
fn views_that_disagree_hold_the_sync_up_to_the_agreement_wait_max() {
    let (r, v, t0) = (ring(&["me", "a", "b"]), fresh(false), Instant::now());
    let mut p = phase();
    assert_eq!(p.handle_tick(t0, &v, &r, None, false), Action::Wait);
    for dt in [SETTLE, SETTLE * 3, SETTLE + AGREEMENT_WAIT_MAX / 2] {
        assert_eq!(p.handle_tick(t0 + dt, &v, &r, None, false), Action::Wait);
    }
    let just_before = SETTLE + AGREEMENT_WAIT_MAX - Duration::from_millis(1);
    assert_eq!(
        p.handle_tick(t0 + just_before, &v, &r, None, false),
        Action::Wait
    );
    let a = p.handle_tick(t0 + SETTLE + AGREEMENT_WAIT_MAX, &v, &r, None, false);
    assert!(is_sync(&a), "{a:?}");
}

#[test]
fn agreement_must_last_the_settle_time_and_a_break_restarts_it() {
    let r = ring(&["me", "a", "b"]);
    let (yes, no, t0) = (fresh(true), fresh(false), Instant::now());
    let mut p = phase();
    let s = |n: u32| t0 + Duration::from_millis(100) * n;
    assert_eq!(p.handle_tick(s(0), &yes, &r, None, false), Action::Wait);
    assert_eq!(p.handle_tick(s(1), &yes, &r, None, false), Action::Wait);
    // Agreement broken at 3 s, back at 4 s: it counts from 4 s.
    assert_eq!(p.handle_tick(s(30), &no, &r, None, false), Action::Wait);
    assert_eq!(p.handle_tick(s(40), &yes, &r, None, false), Action::Wait);
    assert_eq!(p.handle_tick(s(59), &yes, &r, None, false), Action::Wait);
    assert!(is_sync(&p.handle_tick(s(60), &yes, &r, None, false)));
}

#[test]
fn metadata_only_churn_does_not_restart_the_settle_time() {
    // Others announcing their ready tags bump their incarnations: the full
    // view digests keep disagreeing, the ring shapes agree throughout.
    let (r, t0) = (ring(&["me", "a", "b"]), Instant::now());
    let mut churning = fresh(true);
    churning.agreement = (0, 2);
    let mut p = phase();
    let ms = Duration::from_millis(1);
    assert_eq!(p.handle_tick(t0, &churning, &r, None, false), Action::Wait);
    assert_eq!(
        p.handle_tick(t0 + ms, &churning, &r, None, false),
        Action::Wait
    );
    churning.agreement = (1, 2);
    assert_eq!(
        p.handle_tick(t0 + SETTLE / 2, &churning, &r, None, false),
        Action::Wait
    );
    let a = p.handle_tick(t0 + SETTLE + ms, &churning, &r, None, false);
    assert!(
        is_sync(&a),
        "synced after the settle time, not the wait max: {a:?}"
    );
}

#[test]
fn a_ring_shape_disagreement_holds_the_sync_even_when_the_views_agree() {
    let (r, t0) = (ring(&["me", "a", "b"]), Instant::now());
    let mut v = fresh(true);
    v.ring_agreement = (1, 2);
    let mut p = phase();
    assert_eq!(p.handle_tick(t0, &v, &r, None, false), Action::Wait);
    let just_before = SETTLE + AGREEMENT_WAIT_MAX - Duration::from_millis(1);
    assert_eq!(
        p.handle_tick(t0 + just_before, &v, &r, None, false),
        Action::Wait
    );
}

#[test]
fn a_ring_change_restarts_the_settle_time() {
    let (first, second) = (ring(&["me", "a"]), ring(&["me", "a", "b"]));
    let (v, t0) = (fresh(true), Instant::now());
    let mut p = phase();
    let ms = Duration::from_millis(1);
    assert_eq!(p.handle_tick(t0, &v, &first, None, false), Action::Wait);
    assert_eq!(
        p.handle_tick(t0 + ms, &v, &first, None, false),
        Action::Wait
    );
    // The ring changes just before the first one would have synced.
    let t1 = t0 + SETTLE;
    assert_eq!(p.handle_tick(t1, &v, &second, None, false), Action::Wait);
    assert_eq!(
        p.handle_tick(t1 + ms, &v, &second, None, false),
        Action::Wait
    );
    assert_eq!(
        p.handle_tick(t1 + SETTLE, &v, &second, None, false),
        Action::Wait
    );
    let a = p.handle_tick(t1 + SETTLE + ms, &v, &second, None, false);
    assert_eq!(
        a,
        Action::Sync {
            ring: second.clone(),
            tag: ring_tag(&second)
        }
    );
}

#[test]
fn a_failed_sync_is_tried_again_after_a_pause_and_a_done_one_is_not() {
    let (r, v, t0) = (ring(&["me", "a", "b"]), fresh(true), Instant::now());
    let mut p = phase();
    let ms = Duration::from_millis(1);
    p.handle_tick(t0, &v, &r, None, false);
    p.handle_tick(t0 + ms, &v, &r, None, false);
    let t1 = t0 + SETTLE + ms;
    assert!(is_sync(&p.handle_tick(t1, &v, &r, None, false)));
    p.handle_sync_failed(t1);
    assert_eq!(p.handle_tick(t1 + ms, &v, &r, None, false), Action::Wait);
    let t2 = t1 + RETRY_AFTER;
    assert!(is_sync(&p.handle_tick(t2, &v, &r, None, false)));
    p.handle_sync_done(&ring_tag(&r));
    // Before the view shows the announcement, the ring is not synced again.
    for dt in [ms, SETTLE, RETRY_AFTER * 5] {
        assert!(!is_sync(&p.handle_tick(t2 + dt, &v, &r, None, false)));
    }
}

#[test]
fn a_leaving_peer_waits_whatever_the_ring() {
    let (r, v, t0) = (ring(&["me", "a", "b"]), fresh(true), Instant::now());
    let mut p = phase();
    for s in 0..100 {
        let now = t0 + Duration::from_secs(s);
        assert_eq!(p.handle_tick(now, &v, &r, None, true), Action::Wait);
    }
}

/// Everyone announced `r`'s tag (and agrees); `others` are alive.
fn all_ready(r: &Ring, others: &[&str]) -> View {
    let tag = ring_tag(r);
    view(
        member("me", State::Alive, Some(&tag)),
        others
            .iter()
            .map(|n| member(n, State::Alive, Some(&tag)))
            .collect(),
        true,
    )
}

/// What a clean-up drops, or nothing when the action is not one.
fn dropped(a: &Action) -> Vec<TokenRange> {
    match a {
        Action::CleanUp { ranges, .. } => ranges.clone(),
        _ => Vec::new(),
    }
}

/// Whether `pos` is in one of `ranges`.
fn covers(ranges: &[TokenRange], pos: ringkv_ring::Token) -> bool {
    ranges.iter().any(|r| r.contains(pos))
}

const FIVE: [&str; 5] = ["me", "a", "b", "c", "d"];

#[test]
fn clean_up_waits_the_grace_after_everyone_announced() {
    let r = ring(&FIVE);
    let (tag, t0) = (ring_tag(&r), Instant::now());
    let mut p = phase();
    // d has not announced yet: every range d replicates waits.
    let some = view(
        member("me", State::Alive, Some(&tag)),
        vec![
            member("a", State::Alive, Some(&tag)),
            member("b", State::Alive, Some(&tag)),
            member("c", State::Alive, Some(&tag)),
            member("d", State::Alive, None),
        ],
        true,
    );
    let mine = Some(tag.as_str());
    assert_eq!(p.handle_tick(t0, &some, &r, mine, false), Action::Wait);
    let partial = p.handle_tick(t0 + GRACE, &some, &r, mine, false);
    let first = dropped(&partial);
    assert!(
        !first.is_empty(),
        "ranges without d are dropped: {partial:?}"
    );
    assert!(matches!(
        partial,
        Action::CleanUp {
            complete: false,
            ..
        }
    ));
    for (range, replicas) in r.ranges().map(|(g, _)| (g, r.replicas_of(g.end, 3))) {
        if covers(&first, range.end) {
            assert!(!replicas.contains(&id("d")) && !replicas.contains(&id("me")));
        }
    }
    // d announces at t1: the rest waits the grace from then.
    let all = all_ready(&r, &FIVE[1..]);
    let t1 = t0 + Duration::from_secs(50);
    assert_eq!(p.handle_tick(t1, &all, &r, mine, false), Action::Wait);
    let just_before = t1 + GRACE - Duration::from_millis(1);
    assert_eq!(
        p.handle_tick(just_before, &all, &r, mine, false),
        Action::Wait
    );
    let rest = p.handle_tick(t1 + GRACE, &all, &r, mine, false);
    assert!(
        matches!(rest, Action::CleanUp { complete: true, .. }),
        "{rest:?}"
    );
    // Together, every range this peer does not replicate.
    let both: Vec<TokenRange> = first.into_iter().chain(dropped(&rest)).collect();
    for (range, replicas) in r.ranges().map(|(g, _)| (g, r.replicas_of(g.end, 3))) {
        assert_eq!(covers(&both, range.end), !replicas.contains(&id("me")));
    }
}

#[test]
fn clean_up_happens_once_per_ring() {
    let r = ring(&FIVE);
    let (tag, t0) = (ring_tag(&r), Instant::now());
    let (mut p, all) = (phase(), all_ready(&r, &FIVE[1..]));
    let mine = Some(tag.as_str());
    p.handle_tick(t0, &all, &r, mine, false);
    let a = p.handle_tick(t0 + GRACE, &all, &r, mine, false);
    assert!(matches!(a, Action::CleanUp { complete: true, .. }), "{a:?}");
    for s in 1..50 {
        let now = t0 + GRACE + Duration::from_secs(s);
        assert_eq!(p.handle_tick(now, &all, &r, mine, false), Action::Wait);
    }
    // Another ring, once held by everyone, is cleaned up for again.
    let r2 = ring(&FIVE[..4]);
    let tag2 = ring_tag(&r2);
    let all2 = all_ready(&r2, &FIVE[1..4]);
    let t1 = t0 + Duration::from_secs(100);
    let mine2 = Some(tag2.as_str());
    assert_eq!(p.handle_tick(t1, &all2, &r2, mine2, false), Action::Wait);
    let a = p.handle_tick(t1 + GRACE, &all2, &r2, mine2, false);
    assert!(
        matches!(a, Action::CleanUp { ref ring, .. } if *ring == r2),
        "{a:?}"
    );
}

#[test]
fn a_peer_that_replicates_everything_drops_nothing() {
    let r = ring(&["me", "a", "b"]);
    let (tag, t0) = (ring_tag(&r), Instant::now());
    let (mut p, all) = (phase(), all_ready(&r, &["a", "b"]));
    let mine = Some(tag.as_str());
    for s in [0, 20, 40] {
        let now = t0 + Duration::from_secs(s);
        assert_eq!(p.handle_tick(now, &all, &r, mine, false), Action::Wait);
    }
}

/// Three holders, three joiners killed before they announced: the ring
/// of six still holds them (dead grace), and every range this peer would
/// drop has a dead joiner among its replicas.
#[test]
fn dead_or_suspect_joiners_block_every_range_they_replicate() {
    let r = ring(&["me", "a", "b", "x", "y", "z"]);
    let (tag, t0) = (ring_tag(&r), Instant::now());
    let mine = Some(tag.as_str());
    for state in [State::Dead, State::Suspect] {
        let v = view(
            member("me", State::Alive, Some(&tag)),
            vec![
                member("a", State::Alive, Some(&tag)),
                member("b", State::Alive, Some(&tag)),
                member("x", state, None),
                member("y", state, None),
                member("z", state, None),
            ],
            true,
        );
        let mut p = phase();
        for s in [0, 20, 40, 400] {
            let now = t0 + Duration::from_secs(s);
            assert_eq!(p.handle_tick(now, &v, &r, mine, false), Action::Wait);
        }
    }
}

/// A member that announced the ring and then died no longer counts: its
/// copy is not live.
#[test]
fn a_replica_that_announced_and_died_blocks_its_ranges_again() {
    let r = ring(&FIVE);
    let (tag, t0) = (ring_tag(&r), Instant::now());
    let mine = Some(tag.as_str());
    let with_d = |state| {
        view(
            member("me", State::Alive, Some(&tag)),
            vec![
                member("a", State::Alive, Some(&tag)),
                member("b", State::Alive, Some(&tag)),
                member("c", State::Alive, Some(&tag)),
                member("d", state, Some(&tag)),
            ],
            true,
        )
    };
    let mut p = phase();
    assert_eq!(
        p.handle_tick(t0, &with_d(State::Alive), &r, mine, false),
        Action::Wait
    );
    // d is suspected just before the grace ends: its ranges wait again.
    let t1 = t0 + GRACE - Duration::from_secs(1);
    let partial = p.handle_tick(t1, &with_d(State::Suspect), &r, mine, false);
    assert_eq!(partial, Action::Wait);
    let partial = p.handle_tick(t0 + GRACE, &with_d(State::Dead), &r, mine, false);
    let some = dropped(&partial);
    let of_d = |range: &TokenRange| r.replicas_of(range.end, 3).contains(&id("d"));
    assert!(!some.is_empty());
    for (range, _) in r.ranges() {
        if of_d(&range) {
            assert!(
                !covers(&some, range.end),
                "dropped {range} that d replicates"
            );
        }
    }
    // Back alive at t2: the grace counts from then.
    let t2 = t0 + GRACE * 2;
    let alive = with_d(State::Alive);
    assert_eq!(p.handle_tick(t2, &alive, &r, mine, false), Action::Wait);
    let rest = p.handle_tick(t2 + GRACE, &alive, &r, mine, false);
    assert!(
        matches!(rest, Action::CleanUp { complete: true, .. }),
        "{rest:?}"
    );
}

#[test]
fn a_leave_is_handed_over_only_when_live_replicas_announced_its_ranges() {
    let before = ring(&FIVE);
    let after = ring(&FIVE[1..]);
    let tag = ring_tag(&after);
    let mine: Vec<TokenRange> = before
        .ranges_replicated_by(&id("me"), 3)
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    let holds = |r: &TokenRange| mine.iter().any(|m| overlap(m, r));
    let v = |d: State, d_tag: Option<&str>| {
        view(
            member("me", State::Alive, None),
            vec![
                member("a", State::Alive, Some(&tag)),
                member("b", State::Alive, Some(&tag)),
                member("c", State::Alive, Some(&tag)),
                member("d", d, d_tag),
            ],
            true,
        )
    };
    for (state, d_tag) in [
        (State::Alive, None),
        (State::Dead, None),
        (State::Dead, Some(tag.as_str())),
        (State::Suspect, Some(tag.as_str())),
    ] {
        let view = v(state, d_tag);
        let blocked = not_handed_over(&after, &holds, &|n| announced(&view, n, &tag));
        assert!(!blocked.is_empty(), "{state:?} {d_tag:?}");
        assert!(blocked.iter().all(|b| b.waiting == vec![id("d")]));
    }
    let view = v(State::Alive, Some(&tag));
    assert!(not_handed_over(&after, &holds, &|n| announced(&view, n, &tag)).is_empty());
}

fn leaving(name: &str, tag: &str) -> Member {
    let mut m = member(name, State::Alive, Some(tag));
    let mut meta = (*m.meta).clone();
    meta.status = NodeStatus::Leaving;
    m.meta = Arc::new(meta);
    m
}

/// Every position `me` replicates in `ring` and did not hold in `held`
/// is in a pull with sources, all among `allowed`.
fn covered(plan: &[PlannedPull], ring: &Ring, held: Option<&Ring>, allowed: &[&str]) {
    let me = id("me");
    let allowed: Vec<NodeId> = allowed.iter().map(|n| id(n)).collect();
    for pos in my_positions(ring) {
        if held.is_some_and(|h| h.replicas_of(pos, 3).contains(&me)) {
            continue;
        }
        let pull = plan
            .iter()
            .find(|p| p.range.contains(pos) && !p.sources.is_empty());
        let pull = pull.unwrap_or_else(|| panic!("{pos} is not pulled"));
        assert!(
            pull.sources.iter().all(|s| allowed.contains(s)),
            "{pos}: {:?}",
            pull.sources
        );
    }
}

/// A new peer joins while the old holders leave: their copies are the only
/// live ones, so they are its sources (the ring without them is not).
/// Another joiner that announced nothing is no source.
#[test]
fn a_new_peer_pulls_from_leaving_holders() {
    let old = ring(&["a", "b", "c"]);
    let tag = ring_tag(&old);
    let v = view(
        member("me", State::Alive, None),
        vec![
            leaving("a", &tag),
            leaving("b", &tag),
            member("c", State::Dead, Some(&tag)),
            member("x", State::Alive, None),
        ],
        true,
    );
    let current = ring(&["me", "c", "x"]);
    let full = ring(&["me", "a", "b", "c", "x"]);
    let plan = plan_pulls(None, &current, Some(&full), &v);
    covered(&plan, &current, None, &["a", "b"]);
}

/// The ring drops three joiners that died before they pulled: the ranges
/// they alone replicated in the ring this peer held have no live holder
/// there, and are planned again against the peers that announced.
#[test]
fn ranges_whose_holders_all_died_are_planned_against_the_announced_peers() {
    let six = ring(&["me", "a", "b", "x", "y", "z"]);
    let tag = ring_tag(&six);
    let v = view(
        member("me", State::Alive, Some(&tag)),
        vec![
            member("a", State::Alive, Some(&tag)),
            member("b", State::Alive, Some(&tag)),
            member("x", State::Dead, None),
            member("y", State::Dead, None),
            member("z", State::Dead, None),
        ],
        true,
    );
    let three = ring(&["me", "a", "b"]);
    let plan = plan_pulls(Some(&six), &three, None, &v);
    covered(&plan, &three, Some(&six), &["a", "b"]);
}

/// A young cluster whose first pulls a kill interrupted: of the four
/// members only `d` announced a ring, and `a`, `b`, `c` (one of them
/// restarted) announced nothing, so every write was acknowledged by the
/// replicas alone, announced or not (the route's degraded mode). A new
/// peer must merge a majority of each range's real holders. Planning
/// against the ring of the members that announced (`d` alone, which that
/// ring makes the holder of everything) copied `d`'s nothing: 4 of 732
/// writes lost in the readdress scenario.
#[test]
fn a_new_peer_merges_a_majority_of_the_real_holders_when_few_announced() {
    let four = ring(&["a", "b", "c", "d"]);
    let tag = ring_tag(&four);
    let v = view(
        member("me", State::Alive, None),
        vec![
            member("a", State::Alive, None),
            member("b", State::Alive, None),
            member("c", State::Alive, None),
            member("d", State::Alive, Some(&tag)),
        ],
        true,
    );
    let current = ring(&["me", "a", "b", "c", "d"]);
    let plan = plan_pulls(None, &current, None, &v);
    merges_a_majority_of(&plan, &current, &four, false);
}

/// Three peers join a stable, announced cluster at the same moment. In
/// the ring of the others, the other two joiners push old holders out of
/// many ranges' replicas: a majority there can be one old holder and an
/// empty joiner, which misses a write two other old holders acknowledged.
/// So a peer that held no ring merges a majority of the announced ring's
/// holders too, for every range.
#[test]
fn joiners_at_once_merge_a_majority_of_the_old_holders() {
    let old = ring(&["x", "y", "z"]);
    let tag = ring_tag(&old);
    let v = view(
        member("me", State::Alive, None),
        vec![
            member("q", State::Alive, None),
            member("r", State::Alive, None),
            member("x", State::Alive, Some(&tag)),
            member("y", State::Alive, Some(&tag)),
            member("z", State::Alive, Some(&tag)),
        ],
        true,
    );
    let current = ring(&["me", "q", "r", "x", "y", "z"]);
    let plan = plan_pulls(None, &current, None, &v);
    merges_a_majority_of(&plan, &current, &old, true);
}

/// Every position `me` replicates in `current` is covered by a pull
/// whose holders (its announced sources, and unless `announced_only` the
/// unannounced ones) include every replica `old` gives the position, and
/// whose merge needs at least two of them.
fn merges_a_majority_of(plan: &[PlannedPull], current: &Ring, old: &Ring, announced_only: bool) {
    let positions = my_positions(current);
    assert!(!positions.is_empty());
    for pos in positions {
        let holders = old.replicas_of(pos, 3);
        let merged_enough = plan.iter().any(|p| {
            let mut all = p.sources.clone();
            if !announced_only {
                all.extend(&p.unannounced);
            }
            let needed = if announced_only {
                p.needed().0
            } else {
                p.needed().1
            };
            p.range.contains(pos) && holders.iter().all(|h| all.contains(h)) && needed >= 2
        });
        assert!(
            merged_enough,
            "{pos}: no pull merges a majority of the holders {holders:?}: {:?}",
            plan.iter()
                .filter(|p| p.range.contains(pos))
                .collect::<Vec<_>>()
        );
    }
}

/// Two positions of each range `me` replicates in `ring`: its first and
/// its last.
fn my_positions(ring: &Ring) -> Vec<ringkv_ring::Token> {
    ring.ranges_replicated_by(&id("me"), 3)
        .into_iter()
        .flat_map(|(range, _)| [range.end, ringkv_ring::Token(range.start.0.wrapping_add(1))])
        .collect()
}
