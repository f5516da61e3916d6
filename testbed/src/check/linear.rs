//! Linearizability of each key's history against a single register. Pure:
//! a [`History`] in, a [`Summary`] out; no clock, no IO.
//!
//! The model: a register that starts *absent*; a put of `v` sets it to `v`,
//! a get returns it. Keys are independent registers, so each key is checked
//! on its own (P-compositionality, Horn and Kroening). Per key:
//! - a put or get with outcome `ok` takes effect exactly once, at a point
//!   between its invocation and its completion;
//! - a put with outcome `fail` never takes effect;
//! - a put with outcome `unknown` takes effect at most once, at any point
//!   after its invocation (its completion counts as +infinity, as Knossos
//!   does for `:info` operations), or never;
//! - gets that failed or timed out constrain nothing and are dropped.
//!
//! Histories have no deletes yet; a delete would be a put of *absent*.
//!
//! Two operations are ordered in real time only when one completed strictly
//! before the other was invoked: equal times count as concurrent, as in the
//! version checker.
//!
//! The search is Wing and Gong's, with Lowe's memoization (as in Porcupine
//! and Knossos' `linear`): walk the invocation and completion events in time
//! order, place an invoked operation whenever the register allows it and the
//! (placed set, register value) pair is new, and backtrack on reaching the
//! completion of an operation not yet placed. Two reductions keep it small,
//! both exact because every put writes a value unique in the history:
//! - an `unknown` put that no successful get read is dropped: leaving it
//!   out of any linearization leaves every get's value unchanged;
//! - a put that some get read must take effect before each of those gets,
//!   so its completion is moved to the earliest completion among them (an
//!   `unknown` put read by a get thereby becomes required and finite).
//!
//! Two prunings, exact for the same reason: a get that reads the
//! register's current value when the scan reaches it is placed at once,
//! with no alternative tried (see `Frame::forced`; without it, k concurrent
//! reads of one value cost 2^k states); and a put is placed only once every
//! get reading the current value is (`Search::readers_left`).
//!
//! Every remaining operation then has a finite completion, and the placed
//! set is keyed by its first unplaced operation plus the window of bits up
//! to the last placed one, which stays as small as the history's
//! concurrency. The number of distinct states explored per key is bounded
//! by [`Config::max_states_per_key`]; past it the key's verdict is
//! [`Verdict::Unknown`] rather than a hang.
//!
//! On a violation, the report names the operation whose completion no
//! branch of the search got past (the history up to that completion is the
//! shortest prefix that cannot be linearized), the operations that had to
//! precede it in real time, the put whose value it read, and the end of the
//! longest linearization the search found.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::history::{History, Op, OpKind, Outcome};

/// Search bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Distinct (placed set, value) states explored per key before the key's
    /// verdict is [`Verdict::Unknown`]. Each state costs a few words of
    /// memory for a history of low concurrency. The default, a million,
    /// is far above what realistic histories need (about one state per
    /// operation) and keeps a pathological key to about a second.
    pub max_states_per_key: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_states_per_key: 1_000_000,
        }
    }
}

/// An operation as a violation names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpRef {
    /// The history's op id.
    pub id: u64,
    /// Put or get.
    pub kind: OpKind,
    /// What the client learnt.
    pub outcome: Outcome,
    /// Written (put) or read (get; `None`: absent).
    pub value: Option<String>,
    /// Invocation, µs.
    pub start_us: u64,
    /// Completion, µs.
    pub end_us: u64,
}

impl OpRef {
    fn of(op: &Op) -> Self {
        Self {
            id: op.id,
            kind: op.op,
            outcome: op.outcome,
            value: op.value.clone(),
            start_us: op.start_us,
            end_us: op.end_us,
        }
    }
}

impl fmt::Display for OpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verb, kind) = match self.kind {
            OpKind::Put => ("wrote", "put"),
            OpKind::Get => ("read", "get"),
        };
        let outcome = match self.outcome {
            Outcome::Ok => "ok",
            Outcome::Fail => "failed",
            Outcome::Unknown => "unknown",
        };
        write!(
            f,
            "{kind} #{} [{}..{} µs] {outcome} {verb} ",
            self.id, self.start_us, self.end_us
        )?;
        match &self.value {
            Some(v) => write!(f, "{v:?}"),
            None => f.write_str("absent"),
        }
    }
}

/// Why one key is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyViolation {
    /// The key.
    pub key: String,
    /// The operation no linearization could place before its completion.
    pub op: OpRef,
    /// For a get: the put that wrote the value it read, if any put did
    /// (it may be one that failed).
    pub writer: Option<OpRef>,
    /// The latest operations that completed before `op` was invoked (each
    /// must precede it; earlier ones precede these).
    pub preceding: Vec<OpRef>,
    /// The last operations of the longest linearization found, in order.
    pub linearized: Vec<OpRef>,
    /// How many operations that linearization placed in all.
    pub linearized_len: usize,
    /// The register's value after it (`None`: absent).
    pub value_then: Option<String>,
}

/// One key's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some linearization exists.
    Linearizable,
    /// None exists.
    Violation(Box<KeyViolation>),
    /// The search gave up after [`Config::max_states_per_key`] states.
    Unknown,
}

/// The verdict on a whole history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Keys with at least one operation the model keeps.
    pub keys_checked: usize,
    /// Keys found linearizable.
    pub keys_linearizable: usize,
    /// The keys found not linearizable, by key.
    pub violations: Vec<KeyViolation>,
    /// The keys whose search hit the state limit, by key.
    pub keys_unknown: Vec<String>,
    /// The state limit used.
    pub max_states_per_key: u64,
    /// States explored over all keys.
    pub states: u64,
}

impl Summary {
    /// Whether no key is known to be non-linearizable.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Checks every key of `history` (see the module doc).
pub fn check(history: &History, config: &Config) -> Summary {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in &history.ops {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut summary = Summary {
        max_states_per_key: config.max_states_per_key,
        ..Summary::default()
    };
    for (key, ops) in by_key {
        let Some((verdict, states)) = check_key(key, &ops, config) else {
            continue;
        };
        summary.keys_checked += 1;
        summary.states += states;
        match verdict {
            Verdict::Linearizable => summary.keys_linearizable += 1,
            Verdict::Violation(v) => summary.violations.push(*v),
            Verdict::Unknown => summary.keys_unknown.push(key.to_owned()),
        }
    }
    summary
}

/// Checks one key's operations (all of the same key), returning the verdict
/// and the states explored; `None` when the model keeps none of them.
pub fn check_key(key: &str, ops: &[&Op], config: &Config) -> Option<(Verdict, u64)> {
    let reg = Register::build(ops);
    if reg.ops.is_empty() {
        return None;
    }
    let mut search = Search::new(&reg, config.max_states_per_key, true);
    let verdict = match search.run() {
        Found::Linearizable => Verdict::Linearizable,
        Found::Unknown => Verdict::Unknown,
        Found::Violation => {
            // The readers pruning stops a branch before the completion it
            // is doomed to miss, so its deepest point is not the shortest
            // non-linearizable prefix. Search again without it to name
            // that prefix, if that fits in the limit.
            let mut plain = Search::new(&reg, config.max_states_per_key, false);
            let why = match plain.run() {
                Found::Violation => plain.explain(key, &reg),
                _ => search.explain(key, &reg),
            };
            search.states += plain.states;
            Verdict::Violation(Box::new(why))
        }
    };
    Some((verdict, search.states))
}

/// The register value "absent".
const ABSENT: u32 = 0;
/// A value no kept put wrote: no state ever equals it.
const NEVER: u32 = u32::MAX;

/// One kept operation of a key.
#[derive(Clone, Copy, Debug)]
struct RegOp<'h> {
    op: &'h Op,
    /// Put: the value id it writes; get: the value id it must read.
    value: u32,
    is_put: bool,
    start: u64,
    /// Completion, possibly moved earlier (see the module doc).
    end: u64,
}

/// A key's history reduced to the register model.
#[derive(Debug)]
struct Register<'h> {
    /// Kept operations, by invocation time.
    ops: Vec<RegOp<'h>>,
    /// Every put of the key by value, whatever its outcome.
    writers: HashMap<&'h str, &'h Op>,
}

impl<'h> Register<'h> {
    fn build(all: &[&'h Op]) -> Self {
        let mut writers: HashMap<&str, &Op> = HashMap::new();
        let mut first_read_end: HashMap<&str, u64> = HashMap::new();
        for op in all {
            match (op.op, op.outcome, op.value.as_deref()) {
                (OpKind::Put, _, Some(v)) => {
                    writers.insert(v, op);
                }
                (OpKind::Get, Outcome::Ok, Some(v)) => {
                    let e = first_read_end.entry(v).or_insert(op.end_us);
                    *e = (*e).min(op.end_us);
                }
                _ => {}
            }
        }
        // Value ids: 1.. for each kept put, in history order.
        let mut ids: HashMap<&str, u32> = HashMap::new();
        let mut ops = Vec::new();
        for op in all {
            let kept_put = match (op.op, op.outcome) {
                (OpKind::Put, Outcome::Ok) => true,
                (OpKind::Put, Outcome::Unknown) => op
                    .value
                    .as_deref()
                    .is_some_and(|v| first_read_end.contains_key(v)),
                _ => false,
            };
            if kept_put {
                let Some(v) = op.value.as_deref() else {
                    continue;
                };
                let id = u32::try_from(ids.len() + 1).unwrap_or(NEVER - 1);
                ids.insert(v, id);
                let bound = match op.outcome {
                    Outcome::Ok => op.end_us,
                    _ => u64::MAX,
                };
                let end = first_read_end.get(v).map_or(bound, |&r| r.min(bound));
                ops.push(RegOp {
                    op,
                    value: id,
                    is_put: true,
                    start: op.start_us,
                    end: end.max(op.start_us),
                });
            }
        }
        for op in all {
            if op.op == OpKind::Get && op.outcome == Outcome::Ok {
                let value = match op.value.as_deref() {
                    None => ABSENT,
                    Some(v) => ids.get(v).copied().unwrap_or(NEVER),
                };
                ops.push(RegOp {
                    op,
                    value,
                    is_put: false,
                    start: op.start_us,
                    end: op.end_us.max(op.start_us),
                });
            }
        }
        ops.sort_by_key(|o| (o.start, o.end, o.op.id));
        Self { ops, writers }
    }
}

/// No entry.
const NIL: usize = usize::MAX;

/// An invocation or completion in the doubly linked event list. Entry 0 is
/// the head sentinel; the others are in time order.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The op (index into `Register::ops`).
    op: usize,
    /// For an invocation, its completion's entry; `NIL` for a completion.
    ret: usize,
    prev: usize,
    next: usize,
}

/// The set of placed operations: bits by op index (ops sorted by
/// invocation), with the first unplaced index tracked exactly.
#[derive(Debug)]
struct Placed {
    words: Vec<u64>,
    first_clear: usize,
}

impl Placed {
    fn new(n: usize) -> Self {
        Self {
            words: vec![0; n.div_ceil(64) + 1],
            first_clear: 0,
        }
    }

    fn get(&self, i: usize) -> bool {
        self.words[i / 64] >> (i % 64) & 1 == 1
    }

    fn set(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
        while self.get(self.first_clear) {
            self.first_clear += 1;
        }
    }

    fn clear(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
        self.first_clear = self.first_clear.min(i);
    }

    /// A canonical key of the set whose highest placed index is `top`: the
    /// word holding the first unplaced op (all below are placed) and the
    /// words from there up to `top`'s.
    fn key(&self, top: usize, value: u32) -> StateKey {
        let lo = self.first_clear / 64;
        let hi = top / 64;
        let window = if lo <= hi {
            self.words[lo..=hi].into()
        } else {
            Box::default()
        };
        StateKey { lo, window, value }
    }
}

/// Lowe's memo key: the placed set and the register's value.
#[derive(Debug, PartialEq, Eq, Hash)]
struct StateKey {
    lo: usize,
    window: Box<[u64]>,
    value: u32,
}

/// What a search found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    Linearizable,
    Violation,
    Unknown,
}

/// Linearized ops kept for the report, from the deepest branch.
const TAIL: usize = 8;

/// The search over one key.
#[derive(Debug)]
struct Search {
    entries: Vec<Entry>,
    /// Per op: (value id written or read, is a put).
    model: Vec<(u32, bool)>,
    /// Per value id: the gets reading it not placed yet. A put may not
    /// overwrite a value some unplaced get still has to read: values are
    /// unique, so that get could never be placed.
    readers_left: Vec<u32>,
    /// Whether to apply the `readers_left` pruning.
    prune_readers: bool,
    limit: u64,
    states: u64,
    /// Deepest completion entry reached (the furthest point in time).
    deepest: usize,
    /// The end of the linearization at `deepest`, its length and value.
    deepest_tail: Vec<usize>,
    deepest_len: usize,
    deepest_value: u32,
}

/// A placed op on the search stack.
#[derive(Clone, Copy, Debug)]
struct Frame {
    /// Its invocation entry.
    entry: usize,
    /// The register's value before it.
    before: u32,
    /// The highest op index placed so far, this one included.
    top: usize,
    /// A get placed as soon as the scan reached it, because it read the
    /// register's current value: with no other choice tried instead. That
    /// loses nothing: the scan reaches a get only when no unplaced op had
    /// to precede it, so in any linearization from here the get can move
    /// to the front (it changes no value, and earlier only helps the ops it
    /// must precede). When the search comes back to it, no linearization
    /// exists from the state before it either, so it backtracks further.
    forced: bool,
}

impl Search {
    fn new(reg: &Register<'_>, limit: u64, prune_readers: bool) -> Self {
        let n = reg.ops.len();
        // Events: (time, completion after invocation at equal times, op).
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
        for (i, o) in reg.ops.iter().enumerate() {
            events.push((o.start, false, i));
            events.push((o.end, true, i));
        }
        events.sort_unstable();
        let mut entries = Vec::with_capacity(2 * n + 1);
        entries.push(Entry {
            op: NIL,
            ret: NIL,
            prev: NIL,
            next: 1,
        });
        let mut call_entry = vec![NIL; n];
        for (pos, &(_, is_ret, op)) in events.iter().enumerate() {
            let at = pos + 1;
            entries.push(Entry {
                op,
                ret: NIL,
                prev: at - 1,
                next: if pos + 1 == events.len() { NIL } else { at + 1 },
            });
            if is_ret {
                entries[call_entry[op]].ret = at;
            } else {
                call_entry[op] = at;
            }
        }
        let model: Vec<(u32, bool)> = reg.ops.iter().map(|o| (o.value, o.is_put)).collect();
        let puts = model.iter().filter(|m| m.1).count();
        let mut readers_left = vec![0_u32; puts + 1];
        for &(v, is_put) in &model {
            if let (false, Some(n)) = (is_put, readers_left.get_mut(v as usize)) {
                *n += 1;
            }
        }
        Self {
            entries,
            model,
            readers_left,
            prune_readers,
            limit,
            states: 0,
            deepest: 0,
            deepest_tail: Vec::new(),
            deepest_len: 0,
            deepest_value: ABSENT,
        }
    }

    fn unlink(&mut self, e: usize) {
        let Entry { prev, next, .. } = self.entries[e];
        self.entries[prev].next = next;
        if next != NIL {
            self.entries[next].prev = prev;
        }
    }

    fn relink(&mut self, e: usize) {
        let Entry { prev, next, .. } = self.entries[e];
        self.entries[prev].next = e;
        if next != NIL {
            self.entries[next].prev = e;
        }
    }

    /// Removes an invocation and its completion from the list.
    fn lift(&mut self, call: usize) {
        let ret = self.entries[call].ret;
        self.unlink(call);
        self.unlink(ret);
    }

    /// Undoes [`Self::lift`] (in reverse order).
    fn unlift(&mut self, call: usize) {
        let ret = self.entries[call].ret;
        self.relink(ret);
        self.relink(call);
    }

    fn run(&mut self) -> Found {
        let mut placed = Placed::new(self.model.len());
        let mut seen: HashSet<StateKey> = HashSet::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut value = ABSENT;
        let mut entry = self.entries[0].next;
        loop {
            if self.entries[0].next == NIL {
                return Found::Linearizable;
            }
            let dead_end = if entry == NIL || self.entries[entry].ret == NIL {
                // A completion (or, defensively, the end): the op it
                // completes was not placed in time.
                if entry != NIL && entry > self.deepest {
                    self.note_deepest(entry, &stack, value);
                }
                true
            } else {
                let op = self.entries[entry].op;
                let (v, is_put) = self.model[op];
                let allowed = if is_put {
                    !self.prune_readers || self.readers_left[value as usize] == 0
                } else {
                    v == value
                };
                if allowed {
                    let after = if is_put { v } else { value };
                    let top = stack.last().map_or(op, |f| f.top.max(op));
                    placed.set(op);
                    if seen.insert(placed.key(top, after)) {
                        self.states += 1;
                        if self.states > self.limit {
                            return Found::Unknown;
                        }
                        stack.push(Frame {
                            entry,
                            before: value,
                            top,
                            forced: !is_put,
                        });
                        if !is_put {
                            self.readers_left[value as usize] -= 1;
                        }
                        value = after;
                        self.lift(entry);
                        entry = self.entries[0].next;
                        continue;
                    }
                    placed.clear(op);
                    // A read of the current value that leads nowhere new:
                    // then nothing does from here (see `Frame::forced`).
                    !is_put
                } else {
                    false
                }
            };
            if !dead_end {
                entry = self.entries[entry].next;
                continue;
            }
            match self.backtrack(&mut stack, &mut placed, &mut value) {
                Some(next) => entry = next,
                None => return Found::Violation,
            }
        }
    }

    /// Undoes placements back to the last one that had alternatives and
    /// returns the entry to try next; `None` when there is none left.
    fn backtrack(
        &mut self,
        stack: &mut Vec<Frame>,
        placed: &mut Placed,
        value: &mut u32,
    ) -> Option<usize> {
        loop {
            let frame = stack.pop()?;
            *value = frame.before;
            let op = self.entries[frame.entry].op;
            if !self.model[op].1 {
                self.readers_left[*value as usize] += 1;
            }
            placed.clear(op);
            self.unlift(frame.entry);
            if !frame.forced {
                return Some(self.entries[frame.entry].next);
            }
        }
    }

    fn note_deepest(&mut self, entry: usize, stack: &[Frame], value: u32) {
        self.deepest = entry;
        self.deepest_len = stack.len();
        self.deepest_value = value;
        self.deepest_tail.clear();
        let from = stack.len().saturating_sub(TAIL);
        self.deepest_tail
            .extend(stack[from..].iter().map(|f| self.entries[f.entry].op));
    }

    /// The violation, after [`Self::run`] returned one.
    fn explain(&self, key: &str, reg: &Register<'_>) -> KeyViolation {
        let culprit = reg.ops[self.entries[self.deepest].op];
        let x = culprit.op;
        let writer = match (x.op, x.value.as_deref()) {
            (OpKind::Get, Some(v)) => reg.writers.get(v).map(|w| OpRef::of(w)),
            _ => None,
        };
        let value_then = match self.deepest_value {
            ABSENT => None,
            id => reg
                .ops
                .iter()
                .find(|o| o.is_put && o.value == id)
                .and_then(|o| o.op.value.clone()),
        };
        KeyViolation {
            key: key.to_owned(),
            op: OpRef::of(x),
            writer,
            preceding: preceding(reg, culprit.start),
            linearized: self
                .deepest_tail
                .iter()
                .map(|&i| OpRef::of(reg.ops[i].op))
                .collect(),
            linearized_len: self.deepest_len,
            value_then,
        }
    }
}

/// Shown at most in [`KeyViolation::preceding`].
const PRECEDING: usize = 8;

/// The latest acknowledged ops that completed strictly before `start`:
/// those no other such op followed in real time.
fn preceding(reg: &Register<'_>, start: u64) -> Vec<OpRef> {
    let before = || {
        reg.ops
            .iter()
            .filter(move |o| o.op.outcome == Outcome::Ok && o.op.end_us < start)
    };
    let Some(latest_start) = before().map(|o| o.start).max() else {
        return Vec::new();
    };
    let mut out: Vec<&Op> = before()
        .filter(|o| o.op.end_us >= latest_start)
        .map(|o| o.op)
        .collect();
    out.sort_by_key(|o| (o.end_us, o.id));
    let from = out.len().saturating_sub(PRECEDING);
    out[from..].iter().map(|o| OpRef::of(o)).collect()
}

#[cfg(test)]
mod tests;
