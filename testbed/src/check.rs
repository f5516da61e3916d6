//! The history checker. Pure: a [`History`] in, a [`Report`] out.
//!
//! The model (also in docs/testbed.md). Every put writes a value unique in
//! the history, so a value read names the write that produced it. For each
//! key, let the *acknowledged* writes be the puts with outcome `ok`, each
//! with the version the coordinator returned. For every get with outcome
//! `ok`, invoked at `s`:
//! - **required**: let `M` be the highest version among the acknowledged
//!   writes of its key that *completed before `s`*. If `M` exists, the get
//!   must return a version `>= M`. Returning nothing, or an older version,
//!   is a **lost write** when the get is in the final read pass (after every
//!   write ended) and a **stale read** (gone back in time) otherwise.
//! - **phantom read**: the get returned a value no put of that key wrote,
//!   or one whose put was invoked only after the get completed.
//! - **failed write read**: the get returned the value of a put whose
//!   outcome was `fail` (the cluster said nothing was written).
//!
//! Not flagged, by design: writes concurrent with the get (completed at or
//! after `s`) may or may not be visible, whatever their versions; puts with
//! an `unknown` outcome may be visible or not (but if visible, their
//! version still has to be `>= M`); two overlapping acknowledged writes are
//! ordered by version, not by completion time (last writer wins by version,
//! as the store does). Gets that failed or timed out constrain nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};

use crate::history::{History, Op, OpKind, Outcome, Version};

pub mod linear;
pub mod synthetic;

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A final read missed an acknowledged write (or saw an older one).
    LostWrite,
    /// A read during the workload returned something older than a write
    /// acknowledged before it began.
    StaleRead,
    /// A read returned a value never written (or not yet invoked).
    PhantomRead,
    /// A read returned the value of a write reported failed.
    FailedWriteRead,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LostWrite => "lost write",
            Self::StaleRead => "stale read",
            Self::PhantomRead => "phantom read",
            Self::FailedWriteRead => "failed write read",
        })
    }
}

/// One violation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Its kind.
    pub kind: Kind,
    /// The key.
    pub key: String,
    /// The offending read's id.
    pub read: u64,
    /// What happened, for people.
    pub detail: String,
}

/// The checker's findings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Puts by outcome: ok, fail, unknown.
    pub puts: [usize; 3],
    /// Gets by outcome: ok, fail, unknown.
    pub gets: [usize; 3],
    /// Distinct keys written.
    pub keys_written: usize,
    /// Final-pass reads that succeeded.
    pub final_reads: usize,
    /// Keys with an acknowledged write, checked by a successful final read.
    pub keys_verified: usize,
    /// Ops whose versions could not be parsed (they constrain nothing).
    pub unparsable_versions: usize,
    /// Every violation found.
    pub violations: Vec<Violation>,
    /// The linearizability verdict, when it was checked
    /// ([`check_linearizable`]).
    pub linear: Option<linear::Summary>,
}

impl Report {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty() && self.linear.as_ref().is_none_or(linear::Summary::is_clean)
    }

    /// Violations found, non-linearizable keys included.
    pub fn violation_count(&self) -> usize {
        self.violations.len() + self.linear.as_ref().map_or(0, |l| l.violations.len())
    }

    /// Violations of one kind.
    pub fn count(&self, kind: Kind) -> usize {
        self.violations.iter().filter(|v| v.kind == kind).count()
    }

    /// Lost writes (the demo's headline number).
    pub fn lost_writes(&self) -> usize {
        self.count(Kind::LostWrite)
    }

    /// The report for people; at most `shown` violations are listed.
    pub fn render(&self, shown: usize) -> String {
        let mut out = String::new();
        let [po, pf, pu] = self.puts;
        let [go, gf, gu] = self.gets;
        let _ = writeln!(
            out,
            "puts: {po} ok, {pf} failed, {pu} unknown; gets: {go} ok, {gf} failed, {gu} unknown"
        );
        let _ = writeln!(
            out,
            "keys written: {}; final reads: {}; keys with an acknowledged write verified by a final read: {}",
            self.keys_written, self.final_reads, self.keys_verified
        );
        if self.unparsable_versions > 0 {
            let _ = writeln!(
                out,
                "ops with an unreadable version: {}",
                self.unparsable_versions
            );
        }
        for kind in [
            Kind::LostWrite,
            Kind::StaleRead,
            Kind::PhantomRead,
            Kind::FailedWriteRead,
        ] {
            let _ = writeln!(out, "{kind}s: {}", self.count(kind));
        }
        for v in self.violations.iter().take(shown) {
            let _ = writeln!(
                out,
                "  {} on {:?} (read #{}): {}",
                v.kind, v.key, v.read, v.detail
            );
        }
        if self.violations.len() > shown {
            let _ = writeln!(out, "  ... and {} more", self.violations.len() - shown);
        }
        if let Some(l) = &self.linear {
            render_linear(&mut out, l, shown);
        }
        let _ = writeln!(
            out,
            "{}",
            if self.is_clean() {
                "OK: no violations"
            } else {
                "FAILED"
            }
        );
        out
    }
}

/// The linearizability lines of [`Report::render`].
fn render_linear(out: &mut String, l: &linear::Summary, shown: usize) {
    let _ = writeln!(
        out,
        "linearizability: {} keys checked, {} linearizable, {} not, {} unknown (search limit of {} states reached)",
        l.keys_checked,
        l.keys_linearizable,
        l.violations.len(),
        l.keys_unknown.len(),
        l.max_states_per_key,
    );
    for v in l.violations.iter().take(shown) {
        let _ = writeln!(
            out,
            "  not linearizable on {:?}: {} cannot be placed",
            v.key, v.op
        );
        if let Some(w) = &v.writer {
            let _ = writeln!(out, "    its value is from {w}");
        } else if v.op.kind == OpKind::Get && v.op.value.is_some() {
            let _ = writeln!(out, "    no put of this key wrote its value");
        }
        for p in &v.preceding {
            let _ = writeln!(out, "    completed before it began: {p}");
        }
        let value = v
            .value_then
            .as_deref()
            .map_or("absent".to_owned(), |s| format!("{s:?}"));
        let _ = writeln!(
            out,
            "    longest linearization ({} ops) ends with the value {value}:",
            v.linearized_len
        );
        for o in &v.linearized {
            let _ = writeln!(out, "      {o}");
        }
    }
    if l.violations.len() > shown {
        let _ = writeln!(out, "  ... and {} more keys", l.violations.len() - shown);
    }
    for key in l.keys_unknown.iter().take(shown) {
        let _ = writeln!(out, "  unknown on {key:?}: search limit reached");
    }
    if l.keys_unknown.len() > shown {
        let _ = writeln!(out, "  ... and {} more keys", l.keys_unknown.len() - shown);
    }
}

fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::Ok => 0,
        Outcome::Fail => 1,
        Outcome::Unknown => 2,
    }
}

/// A key's acknowledged writes by completion time, with the running
/// maximum version.
struct Acked {
    /// (end_us, highest version among writes ending at or before, its id)
    by_end: Vec<(u64, Version, u64)>,
}

impl Acked {
    fn build(mut writes: Vec<(u64, Version, u64)>) -> Self {
        writes.sort_by_key(|w| w.0);
        let mut by_end: Vec<(u64, Version, u64)> = Vec::with_capacity(writes.len());
        for (end, v, id) in writes {
            let best = match by_end.last() {
                Some((_, m, mid)) if *m >= v => (m.clone(), *mid),
                _ => (v, id),
            };
            by_end.push((end, best.0, best.1));
        }
        Self { by_end }
    }

    /// The highest version acknowledged strictly before `t`.
    fn required_at(&self, t: u64) -> Option<&(u64, Version, u64)> {
        let n = self.by_end.partition_point(|w| w.0 < t);
        n.checked_sub(1).map(|i| &self.by_end[i])
    }
}

/// The puts of a history: every value written by key, and each key's
/// acknowledged writes.
struct Writes<'h> {
    by_value: HashMap<(&'h str, &'h str), &'h Op>,
    acked: BTreeMap<&'h str, Acked>,
}

impl<'h> Writes<'h> {
    /// Indexes the puts, counting outcomes into `report`.
    fn index(history: &'h History, report: &mut Report) -> Self {
        let mut by_value = HashMap::new();
        let mut acked: BTreeMap<&str, Vec<(u64, Version, u64)>> = BTreeMap::new();
        for op in &history.ops {
            match op.op {
                OpKind::Put => report.puts[outcome_index(op.outcome)] += 1,
                OpKind::Get => report.gets[outcome_index(op.outcome)] += 1,
            }
            let (OpKind::Put, Some(value)) = (op.op, op.value.as_deref()) else {
                continue;
            };
            by_value.insert((op.key.as_str(), value), op);
            let list = acked.entry(&op.key).or_default();
            if op.outcome == Outcome::Ok {
                match op.version.as_deref().map(Version::parse) {
                    Some(Ok(v)) => list.push((op.end_us, v, op.id)),
                    _ => report.unparsable_versions += 1,
                }
            }
        }
        report.keys_written = acked.len();
        Self {
            by_value,
            acked: acked
                .into_iter()
                .map(|(k, w)| (k, Acked::build(w)))
                .collect(),
        }
    }

    /// What is wrong with the value a successful read returned, if anything.
    fn value_violation(&self, r: &Op) -> Option<(Kind, String)> {
        let value = r.value.as_deref()?;
        match self.by_value.get(&(r.key.as_str(), value)) {
            None => Some((
                Kind::PhantomRead,
                format!("returned {value:?}, which no put of this key wrote"),
            )),
            Some(w) if w.start_us > r.end_us => Some((
                Kind::PhantomRead,
                format!(
                    "returned {value:?}, written by put #{} invoked only after this read completed",
                    w.id
                ),
            )),
            Some(w) if w.outcome == Outcome::Fail => Some((
                Kind::FailedWriteRead,
                format!(
                    "returned {value:?}, from put #{} reported failed: {}",
                    w.id,
                    w.error.as_deref().unwrap_or("")
                ),
            )),
            Some(_) => None,
        }
    }

    /// Whether a successful read returned at least what was acknowledged
    /// before it began: `None` when nothing was required, `Ok` when met,
    /// `Err` with the violation otherwise.
    fn recency(&self, r: &Op, read: Option<&Version>) -> Option<Result<(), (Kind, String)>> {
        let (_, need, wid) = self.acked.get(r.key.as_str())?.required_at(r.start_us)?;
        if read.is_some_and(|v| v >= need) {
            return Some(Ok(()));
        }
        let kind = if r.final_read {
            Kind::LostWrite
        } else {
            Kind::StaleRead
        };
        let got = match (&r.value, read) {
            (None, _) => "nothing".to_owned(),
            (Some(v), Some(ver)) => format!("{v:?} at {ver}"),
            (Some(v), None) => format!("{v:?} without a version"),
        };
        Some(Err((
            kind,
            format!("put #{wid} was acknowledged at {need} before this read began, but the read returned {got}"),
        )))
    }
}

/// Checks a history against the model in the module doc.
pub fn check(history: &History) -> Report {
    let mut report = Report::default();
    let writes = Writes::index(history, &mut report);
    let mut verified = std::collections::BTreeSet::new();
    let reads = history
        .ops
        .iter()
        .filter(|o| o.op == OpKind::Get && o.outcome == Outcome::Ok);
    for r in reads {
        report.final_reads += usize::from(r.final_read);
        let Ok(read) = r.version.as_deref().map(Version::parse).transpose() else {
            report.unparsable_versions += 1;
            continue;
        };
        let mut found = Vec::new();
        found.extend(writes.value_violation(r));
        match writes.recency(r, read.as_ref()) {
            Some(Ok(())) if r.final_read => {
                verified.insert(r.key.as_str());
            }
            Some(Err(v)) => found.push(v),
            _ => {}
        }
        report
            .violations
            .extend(found.into_iter().map(|(kind, detail)| Violation {
                kind,
                key: r.key.clone(),
                read: r.id,
                detail,
            }));
    }
    report.keys_verified = verified.len();
    report
}

/// [`check`], plus the linearizability of every key ([`linear`]).
pub fn check_linearizable(history: &History, config: &linear::Config) -> Report {
    let mut report = check(history);
    report.linear = Some(linear::check(history, config));
    report
}

#[cfg(test)]
mod tests;
