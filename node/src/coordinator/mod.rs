//! Any peer coordinates a request: it finds the N replicas of the key in
//! its ring, sends to all of them at once, and answers after W
//! acknowledgements (put, delete) or R answers (get), returning the newest
//! version and repairing stale replicas in the background. The decisions
//! are in [`plan`]; this is the IO.

pub(crate) mod plan;
#[cfg(test)]
mod real_time_tests;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use rand::seq::SliceRandom as _;
use ringkv_gossip::runner::View;
use ringkv_gossip::NodeId;
use ringkv_gossip::State;
use ringkv_storage::{Hint, Record, Version};
use std::sync::atomic::Ordering;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::coordinator::plan::{needs_repair, newest, required, Route};
use crate::rpc::api::{
    ApplyReply, Consistency, ErrorKind, GetReply, PutReply, ReadAnswer, Reply, Request,
    RequestError, KEY_MAX,
};
use crate::rpc::codec;
use crate::rpc::pool::PeerError;
use crate::shared::{wall_ms, Kv};
use crate::status::RingState;

/// Replication factor (N).
pub(crate) const REPLICAS: usize = 3;

/// A replica of the key: who and where.
#[derive(Debug, Clone)]
struct Replica {
    id: NodeId,
    /// Shared, so that routing a request clones no string.
    name: Arc<str>,
    addr: SocketAddr,
}

impl PartialEq for Replica {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

/// Outcome of one replica request.
enum Answer<T> {
    Ok(T),
    /// A write the replica refused because it holds this newer version.
    Newer(Version),
    Unreachable,
    Unknown,
}

/// Attempts of one put, each stamped past every newer version the replicas
/// reported: a clock behind by a lot is caught up in one step (the HLC jumps
/// to the version seen), so more attempts only help against concurrent
/// writers stamping ahead at the same moment.
const WRITE_ATTEMPTS_MAX: usize = 3;

/// What one round of a put gathered.
#[derive(Default)]
struct WriteRound {
    acked: Vec<String>,
    acked_by: Vec<Replica>,
    unreachable: Vec<String>,
    unknown: Vec<String>,
    /// Replicas that hold a newer version, and the newest of those.
    superseded: Vec<String>,
    newer: Option<Version>,
}

/// The members as replicas, and whether each announced the current ring
/// ready, for one view and one ring.
#[derive(Debug)]
pub(crate) struct Routing {
    view: Arc<View>,
    ring: Arc<RingState>,
    members: std::collections::HashMap<NodeId, (Replica, bool)>,
}

impl Routing {
    fn new(view: Arc<View>, ring: Arc<RingState>) -> Self {
        let tag = ring.ring.as_ref().map(crate::readiness::ring_tag);
        let members = std::iter::once(&view.me)
            .chain(view.members.iter())
            .map(|m| {
                let ready = tag
                    .as_ref()
                    .is_some_and(|tag| m.meta.tags.get(crate::readiness::READY_TAG) == Some(tag));
                let replica = Replica {
                    id: m.id,
                    name: Arc::from(m.meta.name.as_str()),
                    addr: m.meta.addr,
                };
                (m.id, (replica, ready))
            })
            .collect();
        Self {
            view,
            ring,
            members,
        }
    }

    fn replica(&self, id: &NodeId) -> Option<Replica> {
        self.members.get(id).map(|(r, _)| r.clone())
    }

    fn is_ready(&self, id: &NodeId) -> bool {
        self.members.get(id).is_some_and(|(_, ready)| *ready)
    }
}

impl Kv {
    /// The replication factor the cluster should have: N, or fewer only
    /// while fewer peers are members at all. Dead peers still count (their
    /// data is not elsewhere yet); peers that left gracefully do not. A
    /// coordinator whose ring shrank (a partition, or peers dead past the
    /// grace) must not settle for fewer acknowledgements than this.
    fn replication(&self) -> usize {
        let view = self.view.borrow();
        let members = 1 + view
            .members
            .iter()
            .filter(|m| m.state != State::Left)
            .count();
        REPLICAS.min(members)
    }

    /// Where requests for `key` go: its replicas in the current ring,
    /// and while some of them are still receiving their ranges, the nodes
    /// that stand in for them (see [`Route`]).
    fn route(&self, key: &[u8], needed: usize) -> Result<Route<Replica>> {
        let routing = self.routing();
        // A peer that was given seeds has a view of itself alone until one
        // answers: its ring would make it the only replica of every key,
        // and a write acknowledged there is lost once it learns the real
        // members (seen in the add-under-load scenario).
        if !routing.view.joined {
            return Err(RequestError::new(
                ErrorKind::Definite,
                "this peer has not joined its cluster yet (no seed has answered); nothing was written",
            )
            .into());
        }
        let Some(ring) = routing.ring.ring.as_ref() else {
            return Err(RequestError::new(ErrorKind::Definite, "this peer has no ring yet").into());
        };
        let natural: Vec<Replica> = ring
            .replicas(key, REPLICAS)
            .iter()
            .filter_map(|id| routing.replica(id))
            .collect();
        let ready = |r: &Replica| routing.is_ready(&r.id);
        // Substitutes are looked for only when a replica is not ready.
        let preference: Vec<Replica> = if natural.iter().all(ready) {
            Vec::new()
        } else {
            routing
                .ring
                .full
                .as_ref()
                .unwrap_or(ring)
                .replicas(key, 2 * REPLICAS)
                .iter()
                .filter_map(|id| routing.replica(id))
                .collect()
        };
        Ok(Route::plan(&natural, &preference, ready, needed))
    }

    /// The routing table of the current view and ring.
    fn routing(&self) -> Arc<Routing> {
        let view = self.view.borrow().clone();
        let ring = self.ring.borrow().clone();
        let mut cached = self.routing.lock().expect("routing lock");
        match &*cached {
            Some(r) if Arc::ptr_eq(&r.view, &view) && Arc::ptr_eq(&r.ring, &ring) => r.clone(),
            _ => {
                let fresh = Arc::new(Routing::new(view, ring));
                *cached = Some(fresh.clone());
                fresh
            }
        }
    }

    /// Coordinates a put (or, with `None`, a delete).
    pub(crate) async fn put(
        self: &Arc<Self>,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        consistency: Consistency,
    ) -> Result<PutReply> {
        self.put_expiring(key, value, None, consistency).await
    }

    /// Coordinates a put whose value expires at `expires_ms` (wall-clock
    /// milliseconds since the Unix epoch; `None` never), or a delete.
    pub(crate) async fn put_expiring(
        self: &Arc<Self>,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        expires_ms: Option<u64>,
        consistency: Consistency,
    ) -> Result<PutReply> {
        self.check(&key, value.as_deref())?;
        self.hot.lock().expect("hot lock").record(&key);
        let needed = required(consistency, self.replication());
        let route = self.route(&key, needed)?;
        if route.read.len() < needed {
            return Err(RequestError::new(
                ErrorKind::Definite,
                format!(
                    "needed {needed} acknowledgements, but this peer's ring has only {} replica(s) for the key ({}); nothing was written",
                    route.read.len(),
                    route.read.iter().map(|r| &*r.name).collect::<Vec<_>>().join(", ")
                ),
            )
            .into());
        }
        let mut acked_any = false;
        let mut last = WriteRound::default();
        for attempt in 1..=WRITE_ATTEMPTS_MAX {
            let version = {
                let mut clock = self.clock.lock().expect("clock lock");
                if let Some(newer) = &last.newer {
                    clock.observe(newer);
                }
                clock.tick(wall_ms())
            };
            let record = match (&value, expires_ms) {
                (Some(v), Some(at)) => Record::put_expiring(v.clone(), version, at),
                (Some(v), None) => Record::put(v.clone(), version),
                (None, _) => Record::tombstone(version),
            };
            let round = self.write_round(&route, &key, &record, needed).await?;
            if route.write_done(&round.acked_by, needed) {
                return Ok(PutReply {
                    acknowledged: round.acked,
                    version: format_version(&record),
                });
            }
            acked_any |= !round.acked.is_empty() || !round.unknown.is_empty();
            if round.newer.is_none() {
                return Err(
                    write_error(needed, &round.acked, &round.unreachable, &round.unknown).into(),
                );
            }
            debug!(attempt, superseded = ?round.superseded, "a replica holds a newer version: stamping the write past it");
            last = round;
        }
        let newer = last
            .newer
            .map(|v| format!("{}.{}@{}", v.hlc.physical_ms, v.hlc.logical, v.node.short()))
            .unwrap_or_default();
        let msg = format!(
            "replicas {} hold a newer version ({newer}) than this write after {WRITE_ATTEMPTS_MAX} attempts stamped past it; another writer keeps stamping ahead",
            last.superseded.join(", ")
        );
        let kind = if acked_any {
            ErrorKind::Unknown
        } else {
            ErrorKind::Definite
        };
        let msg = if acked_any {
            format!("{msg}; outcome unknown: some replicas may hold an attempt")
        } else {
            format!("{msg}; nothing was written")
        };
        Err(RequestError::new(kind, msg).into())
    }

    /// One round of a put: `record` to every write target, until the
    /// write is done or every replica answered. The rest still get it in
    /// the background, and replicas that miss it get a hint (never those
    /// that hold a newer version: the hint would be refused too).
    async fn write_round(
        self: &Arc<Self>,
        route: &Route<Replica>,
        key: &[u8],
        record: &Record,
        needed: usize,
    ) -> Result<WriteRound> {
        let mut tasks = JoinSet::new();
        for r in route.write.clone() {
            let (kv, key, record) = (self.clone(), key.to_vec(), record.clone());
            tasks.spawn(async move { (r.clone(), kv.apply_at(&r, key, record).await) });
        }
        let mut round = WriteRound::default();
        let mut missed: Vec<Replica> = Vec::new();
        while !route.write_done(&round.acked_by, needed) {
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (r, answer) = joined.map_err(|e| anyhow!("replica task failed: {e}"))?;
            match answer {
                Answer::Ok(()) => {
                    round.acked.push(r.name.to_string());
                    round.acked_by.push(r);
                }
                Answer::Newer(v) => {
                    round.superseded.push(r.name.to_string());
                    round.newer = round.newer.max(Some(v));
                }
                Answer::Unreachable => {
                    round.unreachable.push(r.name.to_string());
                    missed.push(r);
                }
                Answer::Unknown => {
                    round.unknown.push(r.name.to_string());
                    missed.push(r);
                }
            }
        }
        // Hints only where the write may exist: a definite failure (nothing
        // written anywhere) must not come back later from a hint.
        let done = route.write_done(&round.acked_by, needed);
        let may_exist = done || !round.acked.is_empty() || !round.unknown.is_empty();
        let kv = self.clone();
        let (hint_key, hint_record) = (key.to_vec(), record.clone());
        tokio::spawn(async move {
            if may_exist {
                for r in missed {
                    kv.hint(&r, hint_key.clone(), hint_record.clone()).await;
                }
            }
            while let Some(joined) = tasks.join_next().await {
                if let Ok((r, answer)) = joined {
                    if may_exist && matches!(answer, Answer::Unreachable | Answer::Unknown) {
                        kv.hint(&r, hint_key.clone(), hint_record.clone()).await;
                    }
                }
            }
        });
        Ok(round)
    }

    /// Coordinates a get: the newest of R answers, with read repair.
    pub(crate) async fn get(
        self: &Arc<Self>,
        key: Vec<u8>,
        consistency: Consistency,
    ) -> Result<GetReply> {
        self.check(&key, None)?;
        self.hot.lock().expect("hot lock").record(&key);
        let needed = required(consistency, self.replication());
        let route = self.route(&key, needed)?;
        let mut replicas = route.read.clone();
        if replicas.len() < needed {
            return Err(RequestError::new(
                ErrorKind::Definite,
                format!(
                    "needed {needed} answers, but this peer's ring has only {} replica(s) for the key",
                    replicas.len()
                ),
            )
            .into());
        }
        // Ask only as many replicas as needed: this peer first (a local
        // read), the others in random order, so reads of one key spread
        // over its replicas. A replica that fails is replaced by the next.
        let local = match replicas.iter().position(|r| r.id == self.me) {
            Some(i) => {
                replicas.swap(0, i);
                1
            }
            None => 0,
        };
        replicas[local..].shuffle(&mut rand::rng());
        let mut spare: std::collections::VecDeque<Replica> =
            replicas.split_off(needed.min(replicas.len())).into();
        // Last resort: replicas still receiving (by this peer's news) may
        // be done by now; if not, they say so.
        if !route.degraded {
            spare.extend(route.pending.iter().cloned());
        }
        let mut tasks = JoinSet::new();
        let spawn_read = |tasks: &mut JoinSet<_>, r: Replica| {
            let (kv, key) = (self.clone(), key.clone());
            tasks.spawn(async move { (r.clone(), kv.read_at(&r, key).await) });
        };
        // The local read needs no task: it is answered first, at once.
        let mut at_once = None;
        for r in replicas {
            if r.id == self.me {
                let answer = match self.replica_read(&key) {
                    Ok(answer) => Answer::Ok(answer),
                    Err(_) => Answer::Unknown,
                };
                at_once = Some((r, answer));
            } else {
                spawn_read(&mut tasks, r);
            }
        }
        let mut answers: Vec<(Replica, Option<Record>)> = Vec::new();
        let (mut unreachable, mut unknown, mut not_held) = (Vec::new(), Vec::new(), Vec::new());
        // Answers of replicas that do not hold the key's range fully: used
        // only in degraded mode, and only when every candidate was asked
        // and too few that hold it answered.
        let mut weak: Vec<(Replica, Option<Record>)> = Vec::new();
        while answers.len() < needed {
            let (r, answer) = match at_once.take() {
                Some(local) => local,
                None => {
                    let Some(joined) = tasks.join_next().await else {
                        break;
                    };
                    joined.map_err(|e| anyhow!("replica task failed: {e}"))?
                }
            };
            let answer = match answer {
                Answer::Ok(ReadAnswer::NotHeld(held)) => {
                    not_held.push(r.name.to_string());
                    weak.push((r, held));
                    if let Some(next) = spare.pop_front() {
                        spawn_read(&mut tasks, next);
                    }
                    continue;
                }
                Answer::Ok(ReadAnswer::Held(held)) => Answer::Ok(held),
                Answer::Unreachable => Answer::Unreachable,
                Answer::Unknown | Answer::Newer(_) => Answer::Unknown,
            };
            if !matches!(answer, Answer::Ok(_)) {
                if let Some(next) = spare.pop_front() {
                    spawn_read(&mut tasks, next);
                }
            }
            match answer {
                Answer::Ok(held) => answers.push((r, held)),
                Answer::Unreachable => unreachable.push(r.name.to_string()),
                Answer::Unknown | Answer::Newer(_) => unknown.push(r.name.to_string()),
            }
        }
        if answers.len() < needed && route.degraded {
            let missing = needed - answers.len();
            answers.extend(weak.into_iter().take(missing));
        }
        if answers.len() < needed {
            let names: Vec<String> = answers.iter().map(|(r, _)| r.name.to_string()).collect();
            let mut failed: Vec<String> = unreachable.into_iter().chain(unknown).collect();
            failed.extend(
                not_held
                    .into_iter()
                    .map(|n| format!("{n} (still receiving its ranges)")),
            );
            // A read that missed its quorum changed nothing.
            return Err(RequestError::new(
                ErrorKind::Definite,
                format!(
                    "needed {needed} answers, got {}{}; no answer from {}",
                    names.len(),
                    if names.is_empty() {
                        String::new()
                    } else {
                        format!(" (from {})", names.join(", "))
                    },
                    failed.join(", ")
                ),
            )
            .into());
        }
        let best = newest(answers.iter().map(|(_, held)| held)).cloned();
        if let Some(best) = &best {
            self.clock
                .lock()
                .expect("clock lock")
                .observe(&best.version);
        }
        let answered: Vec<String> = answers.iter().map(|(r, _)| r.name.to_string()).collect();
        // Read repair: stale answers now, late answers when they come.
        if let Some(best) = best.clone() {
            let kv = self.clone();
            let key2 = key.clone();
            tokio::spawn(async move {
                for (r, held) in answers {
                    if needs_repair(&held, &best) {
                        debug!(replica = %r.name, "read repair");
                        let _ = kv.apply_at(&r, key2.clone(), best.clone()).await;
                    }
                }
                while let Some(Ok((r, Answer::Ok(ReadAnswer::Held(held))))) =
                    tasks.join_next().await
                {
                    if needs_repair(&held, &best) {
                        let _ = kv.apply_at(&r, key2.clone(), best.clone()).await;
                    }
                }
            });
        }
        let version = best.as_ref().map(format_version);
        // An expired value reads as absent; its record still won (newest
        // version wins) and was repaired like any other.
        let now = wall_ms();
        Ok(GetReply {
            value: best.filter(|r| !r.is_expired(now)).and_then(|r| r.value),
            version,
            answered,
        })
    }

    /// The hottest keys, most requested first.
    pub(crate) fn hot_keys(&self, n: usize) -> Vec<crate::rpc::api::HotRow> {
        self.hot
            .lock()
            .expect("hot lock")
            .top(n)
            .into_iter()
            .map(|h| crate::rpc::api::HotRow {
                key: String::from_utf8_lossy(&h.key).into_owned(),
                requests: h.count,
                error: h.error,
            })
            .collect()
    }

    /// Keeps a hint for a replica that missed a write.
    async fn hint(&self, r: &Replica, key: Vec<u8>, record: Record) {
        let hint = Hint {
            target: r.id,
            key,
            record,
            created_ms: wall_ms(),
        };
        match self.store.add_hint(hint, self.hint_limits).await {
            Ok(true) => debug!(replica = %r.name, "hint stored"),
            Ok(false) => {
                self.hints_dropped.fetch_add(1, Ordering::Relaxed);
                warn!(replica = %r.name, "hint dropped: the hint store is full");
            }
            Err(e) => {
                self.hints_dropped.fetch_add(1, Ordering::Relaxed);
                warn!(replica = %r.name, err = %e, "cannot store a hint");
            }
        }
    }

    /// Delivers the hints of every member that is alive again, and expires
    /// those past the age limit. Called periodically.
    pub(crate) async fn replay_hints(&self) {
        if let Err(e) = self.store.expire_hints(wall_ms(), self.hint_limits) {
            warn!(err = %e, "cannot expire hints");
        }
        let Ok(targets) = self.store.hint_targets() else {
            return;
        };
        let view = self.view.borrow().clone();
        for target in targets {
            let Some(m) = view
                .members
                .iter()
                .find(|m| m.id == target && m.state == State::Alive)
            else {
                continue;
            };
            let r = Replica {
                id: m.id,
                name: Arc::from(m.meta.name.as_str()),
                addr: m.meta.addr,
            };
            let Ok(hints) = self.store.hints_for(&target, 256) else {
                continue;
            };
            for hint in hints {
                match self
                    .apply_at(&r, hint.key.clone(), hint.record.clone())
                    .await
                {
                    // Held, or superseded there by a newer version: either
                    // way the hint has nothing left to deliver.
                    Answer::Ok(()) | Answer::Newer(_) => {
                        let _ = self.store.remove_hint(&hint);
                        self.hints_replayed.fetch_add(1, Ordering::Relaxed);
                    }
                    Answer::Unreachable => break,
                    // Refused or lost: try the others, this one next round.
                    Answer::Unknown => {}
                }
            }
        }
    }

    fn check(&self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        if key.is_empty() {
            return Err(RequestError::new(ErrorKind::Refused, "the key is empty").into());
        }
        if key.len() > KEY_MAX {
            return Err(RequestError::new(
                ErrorKind::Refused,
                format!("the key is {} bytes; the limit is {KEY_MAX}", key.len()),
            )
            .into());
        }
        if let Some(v) = value {
            if v.len() > self.value_max {
                return Err(RequestError::new(
                    ErrorKind::Refused,
                    format!(
                        "the value is {} bytes; the limit is {}",
                        v.len(),
                        self.value_max
                    ),
                )
                .into());
            }
        }
        Ok(())
    }

    async fn apply_at(&self, r: &Replica, key: Vec<u8>, record: Record) -> Answer<()> {
        if r.id == self.me {
            return match self.apply_local(&key, record).await {
                Ok(ApplyReply::Applied) => Answer::Ok(()),
                Ok(ApplyReply::Newer(v)) => Answer::Newer(v),
                Err(_) => Answer::Unknown,
            };
        }
        match self
            .peers
            .request(r.addr, &Request::ReplicaApply { key, record })
            .await
        {
            Ok(bytes) => match codec::decode::<Reply<ApplyReply>>(&bytes, 1 << 20) {
                Ok(Reply::Ok(ApplyReply::Applied)) => Answer::Ok(()),
                Ok(Reply::Ok(ApplyReply::Newer(v))) => Answer::Newer(v),
                _ => Answer::Unknown,
            },
            Err(e) => e.into_answer(&r.name),
        }
    }

    async fn read_at(&self, r: &Replica, key: Vec<u8>) -> Answer<ReadAnswer> {
        if r.id == self.me {
            return match self.replica_read(&key) {
                Ok(answer) => Answer::Ok(answer),
                Err(_) => Answer::Unknown,
            };
        }
        match self
            .peers
            .request(r.addr, &Request::ReplicaRead { key })
            .await
        {
            Ok(bytes) => {
                match codec::decode::<Reply<ReadAnswer>>(&bytes, crate::rpc::api::REPLY_MAX) {
                    Ok(Reply::Ok(answer)) => Answer::Ok(answer),
                    _ => Answer::Unknown,
                }
            }
            Err(e) => e.into_answer(&r.name),
        }
    }

    /// Replica side of `ReplicaRead`: the record, if this peer holds the
    /// key's range fully.
    pub(crate) fn replica_read(&self, key: &[u8]) -> Result<ReadAnswer> {
        let record = self.store.get(key)?;
        if !self.held.read().expect("held lock").holds(&self.me, key) {
            return Ok(ReadAnswer::NotHeld(record));
        }
        Ok(ReadAnswer::Held(record))
    }

    /// Whether this peer holds any ring's ranges fully (a new peer still
    /// pulling its first ranges does not, and serves no range requests).
    pub(crate) fn holds_any(&self) -> bool {
        self.held.read().expect("held lock").ready.is_some()
    }

    /// Replica side of `ReplicaApply`.
    pub(crate) async fn replica_apply(&self, key: &[u8], record: Record) -> Result<ApplyReply> {
        self.check(key, record.value.as_deref())?;
        self.clock
            .lock()
            .expect("clock lock")
            .observe(&record.version);
        self.apply_local(key, record).await
    }

    /// Applies `record` to this peer's store if it is newer; otherwise says
    /// which newer version is held (an equal one is the same write, held).
    async fn apply_local(&self, key: &[u8], record: Record) -> Result<ApplyReply> {
        let version = record.version;
        if self.store.apply(key, record).await? {
            return Ok(ApplyReply::Applied);
        }
        Ok(match self.store.get(key)? {
            Some(held) if held.version > version => ApplyReply::Newer(held.version),
            _ => ApplyReply::Applied,
        })
    }
}

impl PeerError {
    fn into_answer<T>(self, replica: &str) -> Answer<T> {
        match self {
            Self::Unreachable(e) => {
                debug!(replica, err = %e, "replica unreachable");
                Answer::Unreachable
            }
            Self::Unknown(e) => {
                debug!(replica, err = %e, "replica did not answer");
                Answer::Unknown
            }
        }
    }
}

/// Why a write missed its quorum: `Definite` only when no replica
/// acknowledged and none was left without an answer after being sent the
/// write (every one refused or was unreachable), `Unknown` otherwise.
fn write_error(
    needed: usize,
    acked: &[String],
    unreachable: &[String],
    unknown: &[String],
) -> RequestError {
    let mut msg = format!("needed {needed} acknowledgements, got {}", acked.len());
    if !acked.is_empty() {
        msg.push_str(&format!(" (from {})", acked.join(", ")));
    }
    let failed: Vec<&String> = unreachable.iter().chain(unknown).collect();
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|s| s.as_str()).collect();
        msg.push_str(&format!("; no answer from {}", names.join(", ")));
    }
    if acked.is_empty() && unknown.is_empty() {
        msg.push_str("; nothing was written");
        RequestError::new(ErrorKind::Definite, msg)
    } else {
        msg.push_str("; outcome unknown: replicas that acknowledged, or did not answer in time, may hold the write");
        RequestError::new(ErrorKind::Unknown, msg)
    }
}

fn format_version(r: &Record) -> String {
    let v = &r.version;
    format!(
        "{}.{}@{}/{}",
        v.hlc.physical_ms,
        v.hlc.logical,
        v.node.short(),
        v.generation
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn write_error_is_definite_only_when_nothing_may_have_been_written() {
        let e = write_error(2, &[], &names(&["p2", "p3"]), &[]);
        assert_eq!(e.kind, ErrorKind::Definite, "{e}");
        assert!(e.message.ends_with("nothing was written"), "{e}");
        assert_eq!(
            e.message,
            "needed 2 acknowledgements, got 0; no answer from p2, p3; nothing was written"
        );
    }

    #[test]
    fn write_error_is_unknown_after_an_acknowledgement_or_a_silent_replica() {
        let acked = write_error(2, &names(&["p1"]), &names(&["p2", "p3"]), &[]);
        assert_eq!(acked.kind, ErrorKind::Unknown, "{acked}");
        assert!(acked.message.contains("(from p1)"), "{acked}");
        let silent = write_error(2, &[], &names(&["p2"]), &names(&["p3"]));
        assert_eq!(silent.kind, ErrorKind::Unknown, "{silent}");
        assert!(silent.message.contains("outcome unknown"), "{silent}");
    }
}
