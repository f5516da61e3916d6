//! Hand-made histories: each kind of violation flagged, and the concurrent
//! cases the model allows left alone.

use super::*;

struct H {
    ops: Vec<Op>,
}

impl H {
    fn new() -> Self {
        Self { ops: Vec::new() }
    }

    #[allow(clippy::too_many_arguments)] // A test helper: one call per history line.
    fn push(
        &mut self,
        op: OpKind,
        key: &str,
        value: Option<&str>,
        version: Option<&str>,
        outcome: Outcome,
        start: u64,
        end: u64,
        final_read: bool,
    ) -> &mut Self {
        self.ops.push(Op {
            id: self.ops.len() as u64 + 1,
            op,
            key: key.into(),
            value: value.map(str::to_owned),
            version: version.map(str::to_owned),
            outcome,
            start_us: start,
            end_us: end,
            peer: None,
            replicas: Vec::new(),
            final_read,
            error: None,
        });
        self
    }

    fn put(
        &mut self,
        key: &str,
        value: &str,
        version: &str,
        outcome: Outcome,
        start: u64,
        end: u64,
    ) -> &mut Self {
        let version = (outcome == Outcome::Ok).then_some(version);
        self.push(
            OpKind::Put,
            key,
            Some(value),
            version,
            outcome,
            start,
            end,
            false,
        )
    }

    fn get(
        &mut self,
        key: &str,
        value: Option<&str>,
        version: Option<&str>,
        start: u64,
        end: u64,
    ) -> &mut Self {
        self.push(
            OpKind::Get,
            key,
            value,
            version,
            Outcome::Ok,
            start,
            end,
            false,
        )
    }

    fn final_get(
        &mut self,
        key: &str,
        value: Option<&str>,
        version: Option<&str>,
        start: u64,
        end: u64,
    ) -> &mut Self {
        self.push(
            OpKind::Get,
            key,
            value,
            version,
            Outcome::Ok,
            start,
            end,
            true,
        )
    }

    fn check(&self) -> Report {
        check(&History {
            started_unix_ms: None,
            ops: self.ops.clone(),
        })
    }
}

use Outcome::{Fail, Ok as Acked, Unknown};

#[test]
fn a_clean_history_passes() {
    let r = H::new()
        .put("a", "a#1", "10.0@aa/1", Acked, 0, 10)
        .get("a", Some("a#1"), Some("10.0@aa/1"), 20, 30)
        .put("a", "a#3", "40.0@bb/1", Acked, 35, 45)
        .put("b", "b#4", "41.0@aa/1", Acked, 36, 46)
        .get("a", Some("a#3"), Some("40.0@bb/1"), 50, 60)
        .final_get("a", Some("a#3"), Some("40.0@bb/1"), 100, 110)
        .final_get("b", Some("b#4"), Some("41.0@aa/1"), 100, 110)
        .check();
    assert!(r.is_clean(), "{}", r.render(10));
    assert_eq!(r.keys_written, 2);
    assert_eq!(r.keys_verified, 2);
    assert_eq!(r.puts, [3, 0, 0]);
}

#[test]
fn a_lost_write_is_flagged() {
    let r = H::new()
        .put("a", "a#1", "10.0@aa/1", Acked, 0, 10)
        .put("a", "a#2", "20.0@aa/1", Acked, 15, 25)
        .final_get("a", Some("a#1"), Some("10.0@aa/1"), 100, 110)
        .check();
    assert_eq!(r.lost_writes(), 1, "{}", r.render(10));
    assert!(
        r.violations[0].detail.contains("put #2"),
        "{:?}",
        r.violations
    );
    assert!(r.render(10).contains("FAILED"));
}

#[test]
fn a_write_missing_entirely_at_the_end_is_a_lost_write() {
    let r = H::new()
        .put("a", "a#1", "10.0@aa/1", Acked, 0, 10)
        .final_get("a", None, None, 100, 110)
        .check();
    assert_eq!(r.lost_writes(), 1);
    assert!(r.violations[0].detail.contains("returned nothing"));
}

#[test]
fn a_stale_read_is_flagged() {
    let r = H::new()
        .put("a", "a#1", "10.0@aa/1", Acked, 0, 10)
        .put("a", "a#2", "20.0@bb/1", Acked, 15, 25)
        .get("a", Some("a#1"), Some("10.0@aa/1"), 30, 40)
        .final_get("a", Some("a#2"), Some("20.0@bb/1"), 100, 110)
        .check();
    assert_eq!(r.count(Kind::StaleRead), 1, "{}", r.render(10));
    assert_eq!(r.violations.len(), 1);
}

#[test]
fn a_phantom_read_is_flagged() {
    let r = H::new()
        .put("a", "a#1", "10.0@aa/1", Acked, 0, 10)
        .get("a", Some("never-written"), Some("30.0@aa/1"), 20, 30)
        .check();
    assert_eq!(r.count(Kind::PhantomRead), 1, "{}", r.render(10));
}

#[test]
fn a_read_of_a_value_from_another_key_is_a_phantom() {
    let r = H::new()
        .put("b", "b#1", "10.0@aa/1", Acked, 0, 10)
        .get("a", Some("b#1"), Some("10.0@aa/1"), 20, 30)
        .check();
    assert_eq!(r.count(Kind::PhantomRead), 1);
}

#[test]
fn reading_a_write_invoked_after_the_read_completed_is_a_phantom() {
    let r = H::new()
        .get("a", Some("a#2"), Some("10.0@aa/1"), 0, 10)
        .put("a", "a#2", "10.0@aa/1", Acked, 20, 30)
        .check();
    assert_eq!(r.count(Kind::PhantomRead), 1);
}

#[test]
fn reading_a_failed_write_is_flagged() {
    let r = H::new()
        .put("a", "a#1", "", Fail, 0, 10)
        .get("a", Some("a#1"), Some("5.0@aa/1"), 20, 30)
        .check();
    assert_eq!(r.count(Kind::FailedWriteRead), 1);
}

#[test]
fn a_read_concurrent_with_a_write_may_see_either_value() {
    // The second put overlaps both reads: old and new are both allowed.
    let r = H::new()
        .put("a", "a#1", "10.0@aa/1", Acked, 0, 10)
        .put("a", "a#2", "20.0@aa/1", Acked, 15, 50)
        .get("a", Some("a#1"), Some("10.0@aa/1"), 20, 30)
        .get("a", Some("a#2"), Some("20.0@aa/1"), 21, 31)
        // Begins exactly when the put completes: not "after".
        .get("a", Some("a#1"), Some("10.0@aa/1"), 50, 60)
        .check();
    assert!(r.is_clean(), "{}", r.render(10));
}

#[test]
fn overlapping_writes_are_ordered_by_version_not_completion() {
    // a#2 completes last but carries the lower version: a#1 wins, so a
    // later read returning a#1 is right and one returning a#2 is stale.
    let r = H::new()
        .put("a", "a#1", "30.0@bb/1", Acked, 0, 10)
        .put("a", "a#2", "29.0@aa/1", Acked, 1, 20)
        .get("a", Some("a#1"), Some("30.0@bb/1"), 30, 40)
        .final_get("a", Some("a#1"), Some("30.0@bb/1"), 100, 110)
        .check();
    assert!(r.is_clean(), "{}", r.render(10));
    let r = H::new()
        .put("a", "a#1", "30.0@bb/1", Acked, 0, 10)
        .put("a", "a#2", "29.0@aa/1", Acked, 1, 20)
        .get("a", Some("a#2"), Some("29.0@aa/1"), 30, 40)
        .check();
    assert_eq!(r.count(Kind::StaleRead), 1);
}

#[test]
fn equal_clocks_are_broken_by_generation_then_node() {
    let r = H::new()
        .put("a", "a#1", "30.0@ff/1", Acked, 0, 10)
        .put("a", "a#2", "30.0@aa/2", Acked, 0, 10)
        .final_get("a", Some("a#2"), Some("30.0@aa/2"), 100, 110)
        .check();
    assert!(r.is_clean(), "{}", r.render(10));
}

#[test]
fn unknown_writes_may_or_may_not_be_visible() {
    let seen = H::new()
        .put("a", "a#1", "10.0@aa/1", Acked, 0, 10)
        .put("a", "a#2", "", Unknown, 15, 25)
        .get("a", Some("a#2"), Some("20.0@aa/1"), 30, 40)
        .final_get("a", Some("a#2"), Some("20.0@aa/1"), 100, 110)
        .check();
    assert!(seen.is_clean(), "{}", seen.render(10));
    let unseen = H::new()
        .put("a", "a#1", "10.0@aa/1", Acked, 0, 10)
        .put("a", "a#2", "", Unknown, 15, 25)
        .final_get("a", Some("a#1"), Some("10.0@aa/1"), 100, 110)
        .check();
    assert!(unseen.is_clean(), "{}", unseen.render(10));
    // Visible, but older than an acknowledged write that came before.
    let behind = H::new()
        .put("a", "a#2", "", Unknown, 0, 5)
        .put("a", "a#3", "30.0@aa/1", Acked, 10, 20)
        .final_get("a", Some("a#2"), Some("5.0@aa/1"), 100, 110)
        .check();
    assert_eq!(behind.lost_writes(), 1);
}

#[test]
fn failed_and_timed_out_reads_constrain_nothing() {
    let r = H::new()
        .put("a", "a#1", "10.0@aa/1", Acked, 0, 10)
        .push(OpKind::Get, "a", None, None, Fail, 20, 30, false)
        .push(OpKind::Get, "a", None, None, Unknown, 20, 30, true)
        .check();
    assert!(r.is_clean(), "{}", r.render(10));
    assert_eq!(r.gets, [0, 1, 1]);
}

#[test]
fn a_read_of_a_key_never_written_may_be_empty() {
    let r = H::new().get("z", None, None, 0, 10).check();
    assert!(r.is_clean());
}

#[test]
fn the_linearizability_check_adds_lines_and_fails_the_report() {
    // New then old: each read alone passes the version checks (the second
    // put is concurrent with both), but no order of the ops explains both.
    let mut h = H::new();
    h.put("a", "a#1", "10.0@aa/1", Acked, 0, 10)
        .put("a", "a#2", "20.0@aa/1", Acked, 15, 100)
        .get("a", Some("a#2"), Some("20.0@aa/1"), 20, 30)
        .get("a", Some("a#1"), Some("10.0@aa/1"), 40, 50)
        .put("b", "b#5", "30.0@aa/1", Acked, 0, 10);
    let history = History {
        started_unix_ms: None,
        ops: h.ops.clone(),
    };
    let plain = check(&history);
    assert!(plain.is_clean(), "{}", plain.render(10));
    assert!(!plain.render(10).contains("linearizab"));
    let r = check_linearizable(&history, &linear::Config::default());
    assert!(!r.is_clean());
    assert_eq!(r.violation_count(), 1);
    let text = r.render(10);
    assert!(text.starts_with(&plain.render(10).replace("OK: no violations\n", "")));
    for line in [
        "linearizability: 2 keys checked, 1 linearizable, 1 not, 0 unknown",
        "  not linearizable on \"a\": get #4 [40..50 µs] ok read \"a#1\" cannot be placed",
        "    its value is from put #1 [0..10 µs] ok wrote \"a#1\"",
        "    completed before it began: get #3 [20..30 µs] ok read \"a#2\"",
        "    longest linearization (3 ops) ends with the value \"a#2\":",
        "      put #2 [15..100 µs] ok wrote \"a#2\"",
        "FAILED",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
}

#[test]
fn a_linearizable_history_reports_every_key_ok() {
    let mut h = H::new();
    h.put("a", "a#1", "10.0@aa/1", Acked, 0, 10)
        .get("a", Some("a#1"), Some("10.0@aa/1"), 20, 30);
    let r = check_linearizable(
        &History {
            started_unix_ms: None,
            ops: h.ops.clone(),
        },
        &linear::Config::default(),
    );
    let text = r.render(10);
    assert!(r.is_clean(), "{text}");
    assert!(text.contains("linearizability: 1 keys checked, 1 linearizable, 0 not, 0 unknown"));
    assert!(text.ends_with("OK: no violations\n"), "{text}");
}
