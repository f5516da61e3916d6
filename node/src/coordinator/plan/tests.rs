//! The quorum plans, decision by decision.

use super::*;
use ringkv_ring::NodeId;
use ringkv_storage::{Hlc, Version};

fn rec(ms: u64, v: &str) -> Record {
    let version = Version {
        hlc: Hlc {
            physical_ms: ms,
            logical: 0,
        },
        generation: 1,
        node: NodeId::from_name("w"),
    };
    Record::put(v.as_bytes().to_vec(), version)
}

#[test]
fn required_answers_per_consistency() {
    assert_eq!(required(Consistency::One, 3), 1);
    assert_eq!(required(Consistency::Quorum, 3), 2);
    assert_eq!(required(Consistency::Quorum, 4), 3);
    assert_eq!(required(Consistency::Quorum, 1), 1);
    assert_eq!(required(Consistency::All, 3), 3);
    assert_eq!(required(Consistency::One, 0), 0);
}

#[test]
fn newest_wins_and_stale_replicas_are_repaired() {
    let answers = vec![Some(rec(5, "old")), None, Some(rec(9, "new"))];
    let n = newest(&answers).unwrap().clone();
    assert_eq!(n.value.as_deref(), Some(&b"new"[..]));
    assert!(needs_repair(&answers[0], &n));
    assert!(needs_repair(&answers[1], &n));
    assert!(!needs_repair(&answers[2], &n));
    assert!(newest(&[None, None]).is_none());
}

#[test]
fn a_route_without_pending_replicas_is_the_natural_one() {
    let r = Route::plan(&[1, 2, 3], &[1, 2, 3, 4, 5], |_| true, 2);
    assert_eq!(r.read, vec![1, 2, 3]);
    assert_eq!(r.write, vec![1, 2, 3]);
    assert!(r.write_done(&[1, 3], 2));
    assert!(!r.write_done(&[3], 2));
}

#[test]
fn a_pending_replica_is_read_around_and_written_to() {
    // 4 joined: natural [1, 4, 2], 4 still pulling; 3 held the key.
    let r = Route::plan(&[1, 4, 2], &[1, 4, 2, 3, 5], |n| *n != 4, 2);
    assert_eq!(r.read, vec![1, 2, 3]);
    assert_eq!(r.write, vec![1, 4, 2, 3]);
    assert_eq!(r.pending, vec![4]);
    assert!(!r.degraded);
    // Two acknowledgements among readers and among natural replicas.
    assert!(r.write_done(&[1, 2], 2));
    assert!(!r.write_done(&[1, 4], 2), "only one node that serves reads");
    assert!(!r.write_done(&[2, 3], 2), "only one natural replica");
    assert!(r.write_done(&[4, 2, 3], 2));
}

#[test]
fn a_leaving_node_substitutes_for_the_replica_taking_over() {
    // 9 is leaving: not in the current ring, first in the old list.
    let r = Route::plan(&[1, 2, 5], &[9, 1, 2, 5], |n| *n != 5, 2);
    assert_eq!(r.read, vec![1, 2, 9]);
    assert_eq!(r.write, vec![1, 2, 5, 9]);
}

#[test]
fn too_few_ready_nodes_fall_back_to_reading_pending_ones() {
    // Two peers, the second still pulling its first ranges.
    let r = Route::plan(&[1, 2], &[1, 2], |n| *n == 1, 2);
    assert_eq!(r.read, vec![1, 2]);
    assert!(r.degraded);
    assert!(r.write_done(&[1, 2], 2));
}

fn rng() -> rand_chacha::ChaCha8Rng {
    rand::SeedableRng::seed_from_u64(7)
}

fn ver(ms: u64) -> Version {
    rec(ms, "x").version
}

fn names(n: &[&'static str]) -> Vec<&'static str> {
    n.to_vec()
}

#[test]
fn a_read_asks_this_peer_first_and_only_as_many_as_needed() {
    let route = Route::plan(&["p1", "p2", "p3"], &[], |_| true, 2);
    for seed in 0..20 {
        let mut r: rand_chacha::ChaCha8Rng = rand::SeedableRng::seed_from_u64(seed);
        let (_, first) = ReadPlan::new(&route, 2, |n| *n == "p3", &mut r).unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[0], "p3", "the local read first");
    }
    let err = ReadPlan::new(&route, 4, |_| false, &mut rng()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Definite);
}

#[test]
fn a_failed_replica_is_replaced_by_a_spare_then_by_a_pending_one() {
    // p4 is still receiving: p3 substitutes; p4 is the last resort.
    let route = Route::plan(
        &["p1", "p4", "p2"],
        &["p1", "p4", "p2", "p3"],
        |n| *n != "p4",
        2,
    );
    let (mut plan, first) = ReadPlan::new(&route, 2, |n| *n == "p1", &mut rng()).unwrap();
    let spare = ["p2", "p3"]
        .into_iter()
        .find(|n| !first.contains(n))
        .unwrap();
    assert_eq!(plan.handle_answer("p1", ReadResult::Held(None)), None);
    let other = first[1];
    assert_eq!(
        plan.handle_answer(other, ReadResult::Unreachable),
        Some(spare)
    );
    assert!(!plan.is_done());
    assert_eq!(plan.handle_answer(spare, ReadResult::Unknown), Some("p4"));
    assert_eq!(
        plan.handle_answer("p4", ReadResult::NotHeld(Some(rec(1, "a")))),
        None
    );
    let err = plan.finish().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Definite, "a read changes nothing");
    assert!(
        err.message.starts_with("needed 2 answers, got 1 (from p1)"),
        "{err}"
    );
    assert!(
        err.message.contains("p4 (still receiving its ranges)"),
        "{err}"
    );
}

#[test]
fn a_degraded_read_counts_replicas_still_receiving() {
    let route = Route::plan(&["p1", "p2"], &["p1", "p2"], |n| *n == "p1", 2);
    assert!(route.degraded);
    let (mut plan, _) = ReadPlan::new(&route, 2, |n| *n == "p1", &mut rng()).unwrap();
    plan.handle_answer("p1", ReadResult::Held(Some(rec(1, "a"))));
    plan.handle_answer("p2", ReadResult::NotHeld(None));
    let done = plan.finish().unwrap();
    assert_eq!(done.answered, vec!["p1", "p2"]);
    assert_eq!(done.stale, vec!["p2"]);
}

#[test]
fn a_quorum_read_that_disagrees_writes_back_before_answering() {
    let route = Route::plan(&["p1", "p2", "p3"], &[], |_| true, 2);
    let (mut plan, _) = ReadPlan::new(&route, 2, |_| false, &mut rng()).unwrap();
    plan.handle_answer("p2", ReadResult::Held(Some(rec(9, "new"))));
    plan.handle_answer("p1", ReadResult::Held(Some(rec(5, "old"))));
    assert!(plan.is_done());
    let done = plan.finish().unwrap();
    assert_eq!(done.best.as_ref().unwrap().version, ver(9));
    assert_eq!(done.stale, vec!["p1"]);
    assert!(done.must_write_back(Consistency::Quorum, &route, 2));
    assert!(
        !done.must_write_back(Consistency::One, &route, 1),
        "one: in the background"
    );
    let best = done.best.clone().unwrap();
    let (mut back, targets) = done.write_back(&route);
    assert_eq!(targets, vec!["p1", "p3"]);
    back.handle_answer("p1", WriteResult::Unknown);
    assert!(!back.is_done(&route, 2));
    back.handle_answer("p3", WriteResult::Newer(ver(10)));
    assert!(back.is_done(&route, 2), "p3 holds something newer still");
    assert_eq!(back.finish(&route, 2, &best), Ok(()));
    let (mut back, _) = done.write_back(&route);
    back.handle_answer("p1", WriteResult::Unreachable);
    back.handle_answer("p3", WriteResult::Unknown);
    let e = back.finish(&route, 2, &best).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unknown);
    assert!(
        e.message.contains("held by p2; no answer from p1, p3"),
        "{e}"
    );
}

#[test]
fn an_answer_from_a_substitute_does_not_make_a_quorum() {
    // p4 still receiving: p3 substitutes for it. p1 and p3 held the new
    // value: a quorum of the readers, but one natural replica only.
    let route = Route::plan(
        &["p1", "p4", "p2"],
        &["p1", "p4", "p2", "p3"],
        |n| *n != "p4",
        2,
    );
    let (mut plan, _) = ReadPlan::new(&route, 2, |_| false, &mut rng()).unwrap();
    plan.handle_answer("p1", ReadResult::Held(Some(rec(9, "new"))));
    plan.handle_answer("p3", ReadResult::Held(Some(rec(9, "new"))));
    let done = plan.finish().unwrap();
    assert!(done.stale.is_empty());
    assert!(done.must_write_back(Consistency::Quorum, &route, 2));
    let (_, targets) = done.write_back(&route);
    assert_eq!(targets, vec!["p4", "p2"]);
}

#[test]
fn a_read_that_agrees_or_finds_nothing_writes_nothing_back() {
    let route = Route::plan(&["p1", "p2", "p3"], &[], |_| true, 2);
    let (mut plan, _) = ReadPlan::new(&route, 2, |_| false, &mut rng()).unwrap();
    plan.handle_answer("p2", ReadResult::Held(Some(rec(9, "v"))));
    plan.handle_answer("p3", ReadResult::Held(Some(rec(9, "v"))));
    assert!(!plan
        .finish()
        .unwrap()
        .must_write_back(Consistency::Quorum, &route, 2));
    let (mut plan, _) = ReadPlan::new(&route, 2, |_| false, &mut rng()).unwrap();
    plan.handle_answer("p2", ReadResult::Held(None));
    plan.handle_answer("p3", ReadResult::Held(None));
    let done = plan.finish().unwrap();
    assert!(done.best.is_none());
    assert!(!done.must_write_back(Consistency::All, &route, 3));
}

#[test]
fn a_refusal_with_a_newer_version_is_not_an_acknowledgement() {
    let route = Route::plan(&["p1", "p2", "p3"], &[], |_| true, 2);
    let mut plan = WritePlan::new(&route, 2).unwrap();
    let mut round = WriteRound::default();
    assert!(!round.handle_answer("p1", WriteResult::Applied));
    assert!(!round.handle_answer("p2", WriteResult::Newer(ver(7))));
    assert!(!round.handle_answer("p3", WriteResult::Newer(ver(9))));
    assert!(!round.is_done(&route, 2));
    assert_eq!(plan.handle_round(&route, round), WriteStep::Retry(ver(9)));
    let mut round = WriteRound::default();
    round.handle_answer("p2", WriteResult::Applied);
    round.handle_answer("p3", WriteResult::Applied);
    assert_eq!(
        plan.handle_round(&route, round),
        WriteStep::Done(vec!["p2", "p3"])
    );
}

#[test]
fn a_write_always_superseded_fails_after_its_attempts() {
    let route = Route::plan(&["p1", "p2", "p3"], &[], |_| true, 2);
    let superseded = || {
        let mut round = WriteRound::default();
        for p in ["p1", "p2", "p3"] {
            round.handle_answer(p, WriteResult::Newer(ver(9)));
        }
        round
    };
    let mut plan = WritePlan::new(&route, 2).unwrap();
    for _ in 1..WRITE_ATTEMPTS_MAX {
        assert_eq!(
            plan.handle_round(&route, superseded()),
            WriteStep::Retry(ver(9))
        );
    }
    let WriteStep::Fail(e) = plan.handle_round(&route, superseded()) else {
        panic!("no more attempts");
    };
    assert_eq!(e.kind, ErrorKind::Definite, "nobody holds an attempt: {e}");
    // One acknowledgement in an earlier round: the outcome is unknown.
    let mut plan = WritePlan::new(&route, 2).unwrap();
    let mut round = superseded();
    round.handle_answer("p4", WriteResult::Applied);
    assert!(matches!(
        plan.handle_round(&route, round),
        WriteStep::Retry(_)
    ));
    plan.handle_round(&route, superseded());
    let WriteStep::Fail(e) = plan.handle_round(&route, superseded()) else {
        panic!("no more attempts");
    };
    assert_eq!(e.kind, ErrorKind::Unknown, "{e}");
}

#[test]
fn hints_only_where_the_write_may_exist() {
    let route = Route::plan(&["p1", "p2", "p3"], &[], |_| true, 2);
    let mut round = WriteRound::default();
    assert!(round.handle_answer("p1", WriteResult::Unreachable));
    assert!(!round.may_exist(&route, 2), "nothing sent anywhere");
    assert!(round.handle_answer("p2", WriteResult::Unknown));
    assert!(round.may_exist(&route, 2), "p2 may hold it");
    let err = WritePlan::new(&route, 4).unwrap_err();
    assert!(err.message.ends_with("nothing was written"), "{err}");
}

#[test]
fn write_error_is_definite_only_when_nothing_may_have_been_written() {
    let e = write_error(2, &[], &names(&["p2", "p3"]), &[], &[]);
    assert_eq!(e.kind, ErrorKind::Definite, "{e}");
    assert!(e.message.ends_with("nothing was written"), "{e}");
    assert_eq!(
        e.message,
        "needed 2 acknowledgements, got 0; no answer from p2, p3; nothing was written"
    );
}

#[test]
fn write_error_is_unknown_after_an_acknowledgement_or_a_silent_replica() {
    let acked = write_error(2, &names(&["p1"]), &names(&["p2", "p3"]), &[], &[]);
    assert_eq!(acked.kind, ErrorKind::Unknown, "{acked}");
    assert!(acked.message.contains("(from p1)"), "{acked}");
    let silent = write_error(2, &[], &names(&["p2"]), &names(&["p3"]), &[]);
    assert_eq!(silent.kind, ErrorKind::Unknown, "{silent}");
    assert!(silent.message.contains("outcome unknown"), "{silent}");
}

#[test]
fn a_refusal_is_no_acknowledgement_and_nothing_written() {
    let route = Route::plan(&["p1", "p2", "p3"], &[], |_| true, 2);
    let mut plan = WritePlan::new(&route, 2).unwrap();
    let mut round = WriteRound::default();
    for p in ["p1", "p2", "p3"] {
        let why = "the version is stamped 3600000 ms ahead".to_owned();
        assert!(!round.handle_answer(p, WriteResult::Refused(why)));
    }
    let WriteStep::Fail(e) = plan.handle_round(&route, round) else {
        panic!("three refusals are no write");
    };
    assert_eq!(e.kind, ErrorKind::Definite, "{e}");
    assert!(
        e.message.contains("refused by p1 (the version is stamped"),
        "{e}"
    );
    assert!(e.message.ends_with("nothing was written"), "{e}");
}

#[test]
fn a_member_of_the_previous_ring_holds_what_it_replicated_there() {
    assert!(Announced::Current.holds(true));
    assert!(
        !Announced::Current.holds(false),
        "a key of neither the ring it announced nor the one before"
    );
    assert!(Announced::Earlier(0).holds(true));
    assert!(
        !Announced::Earlier(3).holds(false),
        "a range the new ring gave it"
    );
    assert!(!Announced::Nothing.holds(true));
}

#[test]
fn only_nodes_that_hold_the_range_stand_in() {
    // 4 is pending; 3 is next in the preference list but still receiving
    // too; 5 holds the key: 5 stands in, not 3.
    let r = Route::plan(&[1, 4, 2], &[1, 4, 2, 3, 5], |n| ![3, 4].contains(n), 2);
    assert_eq!(r.read, vec![1, 2, 5]);
    assert!(!r.degraded);
    // A brand-new cluster: nobody holds anything yet, so the route is
    // degraded (pending answers count) instead of asking non-holders as
    // if they held the key.
    let r = Route::plan(&[1, 2, 3], &[1, 2, 3, 4, 5], |_| false, 2);
    assert!(r.degraded);
    assert_eq!(r.read, vec![1, 2, 3]);
}

#[test]
fn a_write_acknowledged_in_an_earlier_round_is_never_definite() {
    let route = Route::plan(&["p1", "p2", "p3"], &[], |_| true, 2);
    let mut plan = WritePlan::new(&route, 2).unwrap();
    let mut round = WriteRound::default();
    round.handle_answer("p1", WriteResult::Applied);
    round.handle_answer("p2", WriteResult::Newer(ver(9)));
    round.handle_answer("p3", WriteResult::Newer(ver(9)));
    assert_eq!(plan.handle_round(&route, round), WriteStep::Retry(ver(9)));
    let mut round = WriteRound::default();
    for p in ["p1", "p2", "p3"] {
        round.handle_answer(p, WriteResult::Refused("a clock is off".into()));
    }
    let WriteStep::Fail(e) = plan.handle_round(&route, round) else {
        panic!("refused everywhere");
    };
    assert_eq!(
        e.kind,
        ErrorKind::Unknown,
        "p1 holds the first attempt: {e}"
    );
    let e = plan.too_far_ahead(&ver(9), std::time::Duration::from_millis(500));
    assert_eq!(e.kind, ErrorKind::Unknown, "{e}");
    let fresh = WritePlan::new(&route, 2).unwrap();
    let e = fresh.too_far_ahead(&ver(9), std::time::Duration::from_millis(500));
    assert_eq!(e.kind, ErrorKind::Definite, "{e}");
}

#[test]
fn while_a_natural_replica_receives_the_ready_natural_ones_are_asked_first() {
    // 4 is pending: 1 and 2 (natural, ready) before 3 (a substitute), even
    // when 3 is this peer.
    let route = Route::plan(&[1, 4, 2], &[1, 4, 2, 3], |n| *n != 4, 2);
    for seed in 0..20 {
        let mut r: rand_chacha::ChaCha8Rng = rand::SeedableRng::seed_from_u64(seed);
        let (_, mut first) = ReadPlan::new(&route, 2, |n| *n == 3, &mut r).unwrap();
        first.sort_unstable();
        assert_eq!(first, vec![1, 2]);
    }
}

#[test]
fn a_degraded_write_needs_the_holders_not_only_receiving_replicas() {
    // Joiners j1 and j2 are still receiving; only a holds the key's range,
    // and nobody stands in: too few holders, so the route degrades.
    let route = Route::plan(&["j1", "j2", "a"], &["j1", "j2", "a"], |n| *n == "a", 2);
    assert!(route.degraded);
    assert!(
        !route.write_done(&["j1", "j2"], 2),
        "acknowledged by the receiving replicas alone: lost if they die"
    );
    assert!(route.write_done(&["j1", "a"], 2));
    // A brand-new cluster: nobody holds anything yet, so nothing is asked
    // of holders.
    let new = Route::plan(&["x", "y"], &["x", "y"], |_| false, 2);
    assert!(new.degraded && new.write_done(&["x", "y"], 2));
}

/// A put acknowledged under a ring that changed is sent again to the new
/// ring's replicas; when that round reaches nobody, the write still
/// stands on the old ring's quorum, so the failure is "outcome unknown",
/// never "nothing was written".
#[test]
fn a_resend_after_a_ring_change_never_fails_definite() {
    let old = Route::plan(&["p1", "p2", "p3"], &[], |_| true, 2);
    let mut plan = WritePlan::new(&old, 2).unwrap();
    let mut round = WriteRound::default();
    round.handle_answer("p1", WriteResult::Applied);
    round.handle_answer("p2", WriteResult::Applied);
    assert!(matches!(plan.handle_round(&old, round), WriteStep::Done(_)));
    plan.mark_written();
    let new = Route::plan(&["p4", "p5", "p3"], &[], |_| true, 2);
    let mut round = WriteRound::default();
    for p in ["p4", "p5", "p3"] {
        round.handle_answer(p, WriteResult::Unreachable);
    }
    let WriteStep::Fail(e) = plan.handle_round(&new, round) else {
        panic!("nobody answered");
    };
    assert_eq!(e.kind, ErrorKind::Unknown, "{e}");
}
