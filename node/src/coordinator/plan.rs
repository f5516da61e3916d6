//! Pure quorum decisions: how many answers a consistency level needs, where
//! a key's requests go ([`Route`]), a read in progress ([`ReadPlan`]: whom to
//! ask, when it is done, which answer wins, who must get it written back), a
//! put in progress ([`WriteRound`], [`WritePlan`]: when it is acknowledged,
//! when to stamp it again, which error), and the errors people see. No IO:
//! the coordinator (`super`) sends what these decide and feeds back the
//! answers; randomness is an argument.

use std::collections::VecDeque;
use std::fmt;

use rand::seq::SliceRandom as _;
use rand::Rng;
use ringkv_storage::{Record, Version};

pub(crate) use crate::routing::Announced;
use crate::rpc::api::{Consistency, ErrorKind, RequestError};

/// Answers needed from `replicas` replicas.
pub(crate) fn required(consistency: Consistency, replicas: usize) -> usize {
    match consistency {
        Consistency::One => 1.min(replicas),
        Consistency::Quorum => replicas / 2 + 1,
        Consistency::All => replicas,
    }
}

/// The newest record among the answers (a tombstone counts: it is newer
/// than the value it deleted).
pub(crate) fn newest<'a>(
    answers: impl IntoIterator<Item = &'a Option<Record>>,
) -> Option<&'a Record> {
    answers.into_iter().flatten().max_by_key(|r| r.version)
}

/// Whether a replica that answered `held` needs `newest` written to it.
pub(crate) fn needs_repair(held: &Option<Record>, newest: &Record) -> bool {
    held.as_ref().is_none_or(|h| h.version < newest.version)
}

/// Where one key's requests go. While some of its replicas are still
/// receiving their ranges (pending), reads go to the ready replicas plus as
/// many substitutes (the next nodes of the preference list: the holders
/// before the change, or a leaving node) as there are pending replicas, and
/// writes go to all of them: the pending replica gets every write it will
/// need once it is ready, and the nodes that serve reads meanwhile have
/// them too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route<T> {
    /// The replicas of the current ring, primary first.
    pub(crate) natural: Vec<T>,
    /// Where reads go.
    pub(crate) read: Vec<T>,
    /// Where writes go (natural replicas and substitutes).
    pub(crate) write: Vec<T>,
    /// Natural replicas still receiving their ranges.
    pub(crate) pending: Vec<T>,
    /// Too few replicas hold the key's range to answer otherwise: pending
    /// ones are read too, and their "not held" counts as "absent".
    pub(crate) degraded: bool,
    /// The nodes known to hold the key's range (ready natural replicas
    /// and substitutes): in degraded mode a write needs as many of them
    /// as there are, up to what it needs, so the replicas still receiving
    /// never acknowledge a write alone.
    pub(crate) holders: Vec<T>,
}

impl<T: Clone + PartialEq> Route<T> {
    /// The route of a key whose `natural` replicas are those of the current
    /// ring, `preference` the longer preference list of the ring that still
    /// counts leaving nodes, and `ready` whether a node announced that it
    /// holds every range it replicates in the current ring.
    ///
    /// When the ready replicas and substitutes are too few to answer
    /// `needed` (a cluster of one or two peers, a new peer still pulling
    /// its first ranges), pending replicas are read as well: answering from
    /// a replica that may miss old writes beats not answering at all.
    pub(crate) fn plan(
        natural: &[T],
        preference: &[T],
        ready: impl Fn(&T) -> bool,
        needed: usize,
    ) -> Self {
        let pending: Vec<T> = natural.iter().filter(|n| !ready(n)).cloned().collect();
        if pending.is_empty() {
            return Self {
                natural: natural.to_vec(),
                read: natural.to_vec(),
                write: natural.to_vec(),
                pending,
                degraded: false,
                holders: natural.to_vec(),
            };
        }
        // Only nodes that hold the key's range stand in: a substitute still
        // receiving it answers "not held", and counting it would keep the
        // route from degrading when too few hold the key.
        let substitutes: Vec<T> = preference
            .iter()
            .filter(|p| !natural.contains(p) && ready(p))
            .take(pending.len())
            .cloned()
            .collect();
        let mut read: Vec<T> = natural.iter().filter(|n| ready(n)).cloned().collect();
        read.extend(substitutes.iter().cloned());
        let degraded = read.len() < needed;
        let holders = read.clone();
        if degraded {
            read = natural.to_vec();
            read.extend(substitutes.iter().cloned());
        }
        let mut write = natural.to_vec();
        write.extend(substitutes);
        Self {
            natural: natural.to_vec(),
            read,
            write,
            pending,
            degraded,
            holders,
        }
    }

    /// Whether `acked` satisfies a write that needs `needed`
    /// acknowledgements: that many among the nodes that serve reads now,
    /// and that many among the natural replicas that will serve them once
    /// every replica is ready. In degraded mode, also every holder up to
    /// `needed`: a write acknowledged only by replicas still receiving
    /// their ranges would be read by nobody else, and lost with them.
    pub(crate) fn write_done(&self, acked: &[T], needed: usize) -> bool {
        let among = |set: &[T]| acked.iter().filter(|a| set.contains(a)).count();
        among(&self.read) >= needed
            && among(&self.natural) >= needed.min(self.natural.len())
            && among(&self.holders) >= needed.min(self.holders.len())
    }
}

/// What one replica answered a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadResult {
    /// It holds the key's range: its record (or none).
    Held(Option<Record>),
    /// It is still receiving the key's range: what it has so far.
    NotHeld(Option<Record>),
    /// Nothing was sent or no connection.
    Unreachable,
    /// No usable answer (a timeout, an error).
    Unknown,
}

/// A read in progress: R answers from replicas that hold the key's range,
/// asking a spare replica in place of each one that cannot answer.
#[derive(Debug)]
pub(crate) struct ReadPlan<T> {
    needed: usize,
    degraded: bool,
    spare: VecDeque<T>,
    answers: Vec<(T, Option<Record>)>,
    /// Answers of replicas still receiving the range: used only in degraded
    /// mode, and only when too few that hold it answered.
    weak: Vec<(T, Option<Record>)>,
    unreachable: Vec<T>,
    unknown: Vec<T>,
    not_held: Vec<T>,
}

/// A read that got its answers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ReadDone<T> {
    /// The newest record among the answers.
    pub(crate) best: Option<Record>,
    /// Who answered, in the order they did.
    pub(crate) answered: Vec<T>,
    /// Who answered with `best` itself.
    pub(crate) holders: Vec<T>,
    /// Who answered with something older than `best` (or nothing).
    pub(crate) stale: Vec<T>,
}

impl<T: Clone + PartialEq + fmt::Display> ReadPlan<T> {
    /// A read needing `needed` answers over `route`, and the replicas to
    /// ask first: only as many as needed, this peer first (`is_me`: a local
    /// read) and the others in random order, so reads of one key spread
    /// over its replicas. The rest are spares; replicas still receiving
    /// their ranges (by this peer's news) are the last resort: they may be
    /// done by now, and if not they say so.
    pub(crate) fn new(
        route: &Route<T>,
        needed: usize,
        is_me: impl Fn(&T) -> bool,
        rng: &mut impl Rng,
    ) -> Result<(Self, Vec<T>), RequestError> {
        let mut first = route.read.clone();
        if first.len() < needed {
            return Err(RequestError::new(
                ErrorKind::Definite,
                format!(
                    "needed {needed} answers, but this peer's ring has only {} replica(s) for the key",
                    first.len()
                ),
            ));
        }
        // While a natural replica is still receiving, the ready natural
        // replicas are asked before substitutes: a write needs W of the
        // natural replicas, and a coordinator whose news is older than
        // this one's may have counted the receiving one ready and written
        // no substitute, so only the natural replicas are sure to overlap.
        let naturals_first = !route.pending.is_empty();
        let ready_naturals = if naturals_first {
            first.iter().filter(|r| route.natural.contains(r)).count()
        } else {
            first.len()
        };
        if naturals_first {
            first.sort_by_key(|r| !route.natural.contains(r));
        }
        let local = match first[..ready_naturals].iter().position(&is_me) {
            Some(i) => {
                first.swap(0, i);
                1
            }
            None => 0,
        };
        first[local..ready_naturals].shuffle(rng);
        let mut spare: VecDeque<T> = first.split_off(needed).into();
        if !route.degraded {
            spare.extend(route.pending.iter().cloned());
        }
        let plan = Self {
            needed,
            degraded: route.degraded,
            spare,
            answers: Vec::new(),
            weak: Vec::new(),
            unreachable: Vec::new(),
            unknown: Vec::new(),
            not_held: Vec::new(),
        };
        Ok((plan, first))
    }

    /// Takes `from`'s answer; returns the spare to ask in its place when it
    /// could not answer as a holder.
    pub(crate) fn handle_answer(&mut self, from: T, answer: ReadResult) -> Option<T> {
        match answer {
            ReadResult::Held(held) => {
                self.answers.push((from, held));
                return None;
            }
            ReadResult::NotHeld(held) => {
                self.not_held.push(from.clone());
                self.weak.push((from, held));
            }
            ReadResult::Unreachable => self.unreachable.push(from),
            ReadResult::Unknown => self.unknown.push(from),
        }
        self.spare.pop_front()
    }

    /// Whether enough replicas answered.
    pub(crate) fn is_done(&self) -> bool {
        self.answers.len() >= self.needed
    }

    /// The outcome once the read is done or no answer is left to come.
    ///
    /// # Errors
    /// Too few answers: a definite error (a read that missed its quorum
    /// changed nothing) naming who answered and who did not.
    pub(crate) fn finish(mut self) -> Result<ReadDone<T>, RequestError> {
        if self.answers.len() < self.needed && self.degraded {
            let missing = self.needed - self.answers.len();
            self.answers
                .extend(std::mem::take(&mut self.weak).into_iter().take(missing));
        }
        if self.answers.len() < self.needed {
            return Err(self.too_few());
        }
        let best = newest(self.answers.iter().map(|(_, held)| held)).cloned();
        let (mut holders, mut stale) = (Vec::new(), Vec::new());
        if let Some(best) = &best {
            for (r, held) in &self.answers {
                if needs_repair(held, best) {
                    stale.push(r.clone());
                } else {
                    holders.push(r.clone());
                }
            }
        }
        Ok(ReadDone {
            best,
            answered: self.answers.into_iter().map(|(r, _)| r).collect(),
            holders,
            stale,
        })
    }

    fn too_few(&self) -> RequestError {
        let names = join(self.answers.iter().map(|(r, _)| r));
        let failed: Vec<String> = self
            .unreachable
            .iter()
            .chain(&self.unknown)
            .map(ToString::to_string)
            .chain(
                self.not_held
                    .iter()
                    .map(|n| format!("{n} (still receiving its ranges)")),
            )
            .collect();
        RequestError::new(
            ErrorKind::Definite,
            format!(
                "needed {} answers, got {}{}; no answer from {}",
                self.needed,
                self.answers.len(),
                if names.is_empty() {
                    String::new()
                } else {
                    format!(" (from {names})")
                },
                failed.join(", ")
            ),
        )
    }
}

impl<T: Clone + PartialEq + fmt::Display> ReadDone<T> {
    /// Whether the read must write `best` back before it answers (blocking
    /// read repair, as Cassandra does at QUORUM): a quorum read returns
    /// only what a quorum holds, or a later read could miss the value this
    /// one returned once the one replica that had it fails. "A quorum"
    /// is what a write needs ([`Route::write_done`]): enough of the nodes
    /// that serve reads now and of the natural replicas, so an answer
    /// from a substitute does not count for the replica it stands in for.
    /// At `one` nothing of the kind is promised; repair is in the
    /// background.
    pub(crate) fn must_write_back(
        &self,
        consistency: Consistency,
        route: &Route<T>,
        needed: usize,
    ) -> bool {
        consistency != Consistency::One
            && self.best.is_some()
            && !route.write_done(&self.holders, needed)
    }

    /// The write-back of `best`: to every write target that did not answer
    /// with it.
    pub(crate) fn write_back(&self, route: &Route<T>) -> (WriteBack<T>, Vec<T>) {
        let targets = route
            .write
            .iter()
            .filter(|r| !self.holders.contains(r))
            .cloned()
            .collect();
        let plan = WriteBack {
            holders: self.holders.clone(),
            failed: Vec::new(),
        };
        (plan, targets)
    }
}

/// A blocking write-back in progress: who holds the read's answer.
#[derive(Debug)]
pub(crate) struct WriteBack<T> {
    holders: Vec<T>,
    failed: Vec<T>,
}

impl<T: Clone + PartialEq + fmt::Display> WriteBack<T> {
    /// Takes `from`'s answer to the write-back: a refusal with a newer
    /// version holds something at least as new, which is as good.
    pub(crate) fn handle_answer(&mut self, from: T, answer: WriteResult) {
        match answer {
            WriteResult::Applied | WriteResult::Newer(_) => self.holders.push(from),
            WriteResult::Refused(_) | WriteResult::Unreachable | WriteResult::Unknown => {
                self.failed.push(from);
            }
        }
    }

    /// Whether a quorum holds the answer now.
    pub(crate) fn is_done(&self, route: &Route<T>, needed: usize) -> bool {
        route.write_done(&self.holders, needed)
    }

    /// The outcome once done or every target answered.
    ///
    /// # Errors
    /// No quorum holds `best`: returning it would promise what a later read
    /// may not see. The outcome is unknown: the value was someone's write,
    /// and some replicas may hold it now.
    pub(crate) fn finish(
        self,
        route: &Route<T>,
        needed: usize,
        best: &Record,
    ) -> Result<(), RequestError> {
        if self.is_done(route, needed) {
            return Ok(());
        }
        Err(RequestError::new(
            ErrorKind::Unknown,
            format!(
                "the newest version ({}) could not be written back to a quorum (held by {}; no answer from {}); the read returns nothing",
                short_version(&best.version),
                join(&self.holders),
                join(&self.failed)
            ),
        ))
    }
}

/// What one replica answered a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriteResult {
    /// It holds the write (or the same write already).
    Applied,
    /// It holds this newer version and refused: not an acknowledgement.
    Newer(Version),
    /// It refused the write, saying why (a version too far ahead of its
    /// clock): nothing was applied there.
    Refused(String),
    /// Nothing was sent or no connection.
    Unreachable,
    /// Sent, but no usable answer.
    Unknown,
}

/// What one round of a put gathered.
#[derive(Debug)]
pub(crate) struct WriteRound<T> {
    /// Who acknowledged, in order.
    pub(crate) acked: Vec<T>,
    unreachable: Vec<T>,
    unknown: Vec<T>,
    /// Replicas that refused, and why.
    refused: Vec<(T, String)>,
    /// Replicas that hold a newer version, and the newest of those.
    superseded: Vec<T>,
    newer: Option<Version>,
}

impl<T> Default for WriteRound<T> {
    fn default() -> Self {
        Self {
            acked: Vec::new(),
            unreachable: Vec::new(),
            unknown: Vec::new(),
            refused: Vec::new(),
            superseded: Vec::new(),
            newer: None,
        }
    }
}

impl<T: Clone + PartialEq + fmt::Display> WriteRound<T> {
    /// Takes `from`'s answer; returns whether it missed a write it should
    /// get later (a hint), if the write may exist at all.
    pub(crate) fn handle_answer(&mut self, from: T, answer: WriteResult) -> bool {
        match answer {
            WriteResult::Applied => self.acked.push(from),
            WriteResult::Newer(v) => {
                self.superseded.push(from);
                self.newer = self.newer.max(Some(v));
            }
            WriteResult::Refused(why) => self.refused.push((from, why)),
            WriteResult::Unreachable => {
                self.unreachable.push(from);
                return true;
            }
            WriteResult::Unknown => {
                self.unknown.push(from);
                return true;
            }
        }
        false
    }

    /// Whether the round has its acknowledgements (see [`Route::write_done`]).
    pub(crate) fn is_done(&self, route: &Route<T>, needed: usize) -> bool {
        route.write_done(&self.acked, needed)
    }

    /// Whether the write may exist somewhere: only then do replicas that
    /// missed it get hints (a definite failure must not come back later
    /// from a hint).
    pub(crate) fn may_exist(&self, route: &Route<T>, needed: usize) -> bool {
        self.is_done(route, needed) || !self.acked.is_empty() || !self.unknown.is_empty()
    }
}

/// Attempts of one put, each stamped past every newer version the replicas
/// reported: a clock behind by a lot is caught up in one step (the HLC jumps
/// to the version seen), so more attempts only help against concurrent
/// writers stamping ahead at the same moment.
pub(crate) const WRITE_ATTEMPTS_MAX: usize = 3;

/// A put over its rounds.
#[derive(Debug)]
pub(crate) struct WritePlan {
    needed: usize,
    attempts: usize,
    /// Whether any earlier round may have left the write somewhere.
    acked_any: bool,
}

/// What a put does after a round.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriteStep<T> {
    /// Acknowledged by these replicas.
    Done(Vec<T>),
    /// Stamp the write past this version and send it again.
    Retry(Version),
    /// Give up with this error.
    Fail(RequestError),
}

impl WritePlan {
    /// A put needing `needed` acknowledgements over `route`.
    ///
    /// # Errors
    /// The route has fewer replicas that serve reads than `needed`: a
    /// definite error, since nothing was sent.
    pub(crate) fn new<T: fmt::Display>(
        route: &Route<T>,
        needed: usize,
    ) -> Result<Self, RequestError> {
        if route.read.len() < needed {
            return Err(RequestError::new(
                ErrorKind::Definite,
                format!(
                    "needed {needed} acknowledgements, but this peer's ring has only {} replica(s) for the key ({}); nothing was written",
                    route.read.len(),
                    join(&route.read)
                ),
            ));
        }
        Ok(Self {
            needed,
            attempts: 0,
            acked_any: false,
        })
    }

    /// The next step after `round`: done, again past the newer version a
    /// replica holds (a refusal is never an acknowledgement), or an error.
    pub(crate) fn handle_round<T: Clone + PartialEq + fmt::Display>(
        &mut self,
        route: &Route<T>,
        round: WriteRound<T>,
    ) -> WriteStep<T> {
        self.attempts += 1;
        if round.is_done(route, self.needed) {
            return WriteStep::Done(round.acked);
        }
        self.acked_any |= !round.acked.is_empty() || !round.unknown.is_empty();
        let Some(newer) = round.newer else {
            if self.acked_any && round.acked.is_empty() && round.unknown.is_empty() {
                // This round wrote nothing, but an earlier one may have.
                return WriteStep::Fail(RequestError::new(
                    ErrorKind::Unknown,
                    format!(
                        "{}; outcome unknown: an earlier attempt of this write may be held",
                        write_error(
                            self.needed,
                            &round.acked,
                            &round.unreachable,
                            &round.unknown,
                            &[]
                        )
                        .message
                        .trim_end_matches("; nothing was written")
                    ),
                ));
            }
            let refused: Vec<String> = round
                .refused
                .iter()
                .map(|(r, why)| format!("{r} ({why})"))
                .collect();
            return WriteStep::Fail(write_error(
                self.needed,
                &round.acked,
                &round.unreachable,
                &round.unknown,
                &refused,
            ));
        };
        if self.attempts < WRITE_ATTEMPTS_MAX {
            return WriteStep::Retry(newer);
        }
        let msg = format!(
            "replicas {} hold a newer version ({}) than this write after {WRITE_ATTEMPTS_MAX} attempts stamped past it; another writer keeps stamping ahead",
            join(&round.superseded),
            short_version(&newer)
        );
        WriteStep::Fail(if self.acked_any {
            RequestError::new(
                ErrorKind::Unknown,
                format!("{msg}; outcome unknown: some replicas may hold an attempt"),
            )
        } else {
            RequestError::new(ErrorKind::Definite, format!("{msg}; nothing was written"))
        })
    }
}

impl WritePlan {
    /// An earlier round was acknowledged (by the replicas of a ring that
    /// changed since): every later failure is "outcome unknown".
    pub(crate) fn mark_written(&mut self) {
        self.acked_any = true;
    }

    /// The error of a write that a replica's newer version, stamped more
    /// than `max_offset` ahead of this peer's clock, keeps from winning.
    pub(crate) fn too_far_ahead(
        &self,
        newer: &Version,
        max_offset: std::time::Duration,
    ) -> RequestError {
        let msg = format!(
            "a replica holds a version ({}) stamped more than --max-clock-offset {max_offset:?} ahead of this peer's clock (a clock ran fast); this write cannot be stamped past it",
            short_version(newer)
        );
        if self.acked_any {
            RequestError::new(
                ErrorKind::Unknown,
                format!("{msg}; outcome unknown: an earlier attempt may be held"),
            )
        } else {
            RequestError::new(ErrorKind::Definite, format!("{msg}; nothing was written"))
        }
    }
}

/// Why a write missed its quorum: `Definite` only when no replica
/// acknowledged and none was left without an answer after being sent the
/// write (every one refused or was unreachable), `Unknown` otherwise.
/// `refused` says who refused and why.
pub(crate) fn write_error<T: fmt::Display>(
    needed: usize,
    acked: &[T],
    unreachable: &[T],
    unknown: &[T],
    refused: &[String],
) -> RequestError {
    let mut msg = format!("needed {needed} acknowledgements, got {}", acked.len());
    if !acked.is_empty() {
        msg.push_str(&format!(" (from {})", join(acked)));
    }
    if !unreachable.is_empty() || !unknown.is_empty() {
        msg.push_str(&format!(
            "; no answer from {}",
            join(unreachable.iter().chain(unknown))
        ));
    }
    if !refused.is_empty() {
        msg.push_str(&format!("; refused by {}", refused.join(", ")));
    }
    if acked.is_empty() && unknown.is_empty() {
        msg.push_str("; nothing was written");
        RequestError::new(ErrorKind::Definite, msg)
    } else {
        msg.push_str("; outcome unknown: replicas that acknowledged, or did not answer in time, may hold the write");
        RequestError::new(ErrorKind::Unknown, msg)
    }
}

/// `physical.logical@node`, as errors show a version.
fn short_version(v: &Version) -> String {
    format!("{}.{}@{}", v.hlc.physical_ms, v.hlc.logical, v.node.short())
}

fn join<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
