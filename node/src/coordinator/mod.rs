//! Any peer coordinates a request: it finds the N replicas of the key in
//! its ring, sends to all of them at once, and answers after W
//! acknowledgements (put, delete) or R answers (get), returning the newest
//! version and repairing stale replicas in the background. The decisions
//! are in [`plan`]; this is the IO.

#[cfg(test)]
mod availability_tests;
#[cfg(test)]
mod disk_tests;
mod hints;
#[cfg(test)]
mod links_tests;
#[cfg(test)]
mod mutation_tests;
pub(crate) mod plan;
#[cfg(test)]
mod real_time_tests;
#[cfg(test)]
mod removenode_tests;
#[cfg(test)]
mod repair_tests;
mod replica;
#[cfg(test)]
mod ring_change_tests;
#[cfg(test)]
mod roles_tests;
#[cfg(test)]
mod rotation_tests;
#[cfg(test)]
mod test_peers;
#[cfg(test)]
mod transfer_control_tests;

use std::sync::Arc;

use anyhow::{anyhow, Result};
use ringkv_gossip::NodeId;
use ringkv_gossip::State;
use ringkv_storage::{Hint, Record, Version};
use std::sync::atomic::Ordering;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::coordinator::plan::{
    needs_repair, required, Announced, ReadDone, ReadPlan, ReadResult, Route, WritePlan,
    WriteResult, WriteRound, WriteStep,
};
use crate::mutation::{self, Mutation};
use crate::rpc::api::{
    ApplyReply, Consistency, ErrorKind, GetReply, PutReply, ReadAnswer, Reply, Request,
    RequestError, KEY_MAX,
};
use crate::rpc::codec;
use crate::rpc::pool::PeerError;
use crate::shared::Kv;

pub(crate) use crate::routing::REPLICAS;
use crate::routing::{Replica, Routing};

/// How many times a put is sent again because the ring changed while it
/// was out, before it gives up (outcome unknown).
const RING_CHANGES_MAX: usize = 3;

/// Outcome of one replica request.
enum Answer<T> {
    Ok(T),
    /// A write the replica refused because it holds this newer version.
    Newer(Version),
    /// The replica refused the request (e.g. a version too far ahead of
    /// its clock): nothing was applied there.
    Refused(String),
    Unreachable,
    Unknown,
}

/// This peer's own copy of a write is written once another replica took
/// it (or not every other one refused it): were every other replica to
/// refuse the write (stamped too far ahead by a clock that just stepped),
/// a lone local copy would stand above every later write.
struct LocalGate {
    /// Dropped to tell the local write to stand down.
    go: Option<tokio::sync::watch::Sender<bool>>,
    remotes: usize,
    answered: usize,
    refused: usize,
}

impl LocalGate {
    /// The gate for a write with `remotes` other targets, and what the
    /// local write waits on (open at once when there are none).
    fn new(remotes: usize) -> (Self, tokio::sync::watch::Receiver<bool>) {
        let (go, wait) = tokio::sync::watch::channel(remotes == 0);
        let gate = Self {
            go: Some(go),
            remotes,
            answered: 0,
            refused: 0,
        };
        (gate, wait)
    }

    /// Takes another replica's answer.
    fn handle_answer(&mut self, answer: &Answer<()>) {
        self.answered += 1;
        self.refused += usize::from(matches!(answer, Answer::Refused(_)));
        let taken = matches!(answer, Answer::Ok(()) | Answer::Newer(_));
        let all = self.answered == self.remotes;
        if taken || (all && self.refused < self.remotes) {
            self.release();
        } else if all {
            self.go = None;
        }
    }

    /// Lets the local write go.
    fn release(&self) {
        if let Some(go) = &self.go {
            let _ = go.send(true);
        }
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
        let current = ring.replicas(key, REPLICAS);
        let natural: Vec<Replica> = current
            .iter()
            .filter_map(|id| routing.replica(id))
            .collect();
        // A member that announced an earlier ring holds the ranges it
        // replicated there: after ring changes (joins, a dead member
        // dropped after the grace) only the ranges that moved are being
        // received, not every range of every member.
        // (Looked up only when some natural replica has not announced the
        // current ring: the common case costs nothing.)
        let all_current = natural.iter().all(|r| {
            routing
                .members
                .get(&r.id)
                .is_some_and(|(_, a)| *a == Announced::Current)
        });
        let earlier: Vec<Vec<NodeId>> = if all_current {
            Vec::new()
        } else {
            routing
                .earlier_rings()
                .map(|r| r.replicas(key, REPLICAS))
                .collect()
        };
        let ready = |r: &Replica| routing.holds(&r.id, &current, &earlier);
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
        let route = Route::plan(&natural, &preference, ready, needed);
        // Degraded mode is for a cluster too small or too new to have
        // holders. A member that announced a ring this peer cannot place
        // holds something it cannot see: reading or writing on the
        // receiving replicas alone would miss it, or be lost with them.
        if route.degraded && routing.unplaced {
            return Err(RequestError::new(
                ErrorKind::Definite,
                "this peer cannot tell yet which members hold the key (some announced a ring it never had); nothing was read or written, try another peer",
            )
            .into());
        }
        Ok(route)
    }

    /// The current ring's digest (`None` before there is one).
    fn ring_digest(&self) -> Option<ringkv_ring::RingDigest> {
        self.ring
            .borrow()
            .ring
            .as_ref()
            .map(ringkv_ring::Ring::digest)
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
        self.check_clock()?;
        if let Some(why) = self.disk_refusal() {
            return Err(RequestError::new(
                ErrorKind::Definite,
                format!("{why}; nothing was written"),
            )
            .into());
        }
        let needed = required(consistency, self.replication());
        let mut route_ring = self.ring_digest();
        let mut route = self.route(&key, needed)?;
        let mut plan = WritePlan::new(&route, needed)?;
        // The ABD write's first phase: the newest version a read quorum
        // holds, so this write is stamped past every write acknowledged
        // before it began, whatever the clocks say.
        // The mutation (tests only, see crate::mutation) skips it.
        let mut newer: Option<Version> =
            if mutation::on_peer(&self.me, Mutation::WriteWithoutFirstPhase) {
                None
            } else {
                self.newest_version(&key, &route, needed, consistency)
                    .await?
            };
        if let Some(v) = newer.filter(|v| self.too_far_ahead(v)) {
            return Err(plan.too_far_ahead(&v, self.max_clock_offset).into());
        }
        // A write sent again because the ring changed while it was out.
        let mut again: Option<Record> = None;
        let mut ring_changes = 0;
        loop {
            let record = if let Some(record) = again.take() {
                record
            } else {
                let version = {
                    let mut clock = self.clock.lock().expect("clock lock");
                    if let Some(newer) = &newer {
                        clock.observe(newer);
                    }
                    clock.tick(self.wall_ms())
                };
                match (&value, expires_ms) {
                    (Some(v), Some(at)) => Record::put_expiring(v.clone(), version, at),
                    (Some(v), None) => Record::put(v.clone(), version),
                    (None, _) => Record::tombstone(version),
                }
            };
            // The first phase, or an earlier round, may have waited out a
            // dead replica for seconds: route by the ring as it is now.
            if self.ring_digest() != route_ring {
                route_ring = self.ring_digest();
                route = match self.route(&key, needed) {
                    Ok(route) => route,
                    // A quorum of an earlier ring holds it already.
                    Err(e) if ring_changes > 0 => {
                        return Err(RequestError::new(
                            ErrorKind::Unknown,
                            format!("the ring changed while this write was out, and the new ring gives no route ({e:#}); outcome unknown: replicas of the earlier ring hold it"),
                        )
                        .into())
                    }
                    Err(e) => return Err(e),
                };
            }
            let round = self.write_round(&route, &key, &record, needed).await?;
            match plan.handle_round(&route, round) {
                // Acknowledged by the replicas of a ring that changed while
                // the write was out: a new replica may have merged its
                // range before the write landed, and miss it. The handoff
                // settle covers routes as old as the settle time; a put
                // that waited out a dead replica is older. So it is sent
                // again to the new ring's replicas (same version), and
                // acknowledged only under the ring that is current then.
                WriteStep::Done(_) if self.ring_digest() != route_ring => {
                    ring_changes += 1;
                    if ring_changes > RING_CHANGES_MAX {
                        return Err(RequestError::new(
                            ErrorKind::Unknown,
                            format!("the ring changed {ring_changes} times while this write was out; outcome unknown: replicas of an earlier ring hold it"),
                        )
                        .into());
                    }
                    // Whatever happens to the re-sent write, this one may
                    // be read: no error after this says "nothing written".
                    plan.mark_written();
                    again = Some(record);
                }
                WriteStep::Done(acked) => {
                    return Ok(PutReply {
                        acknowledged: acked.iter().map(|r| r.name.to_string()).collect(),
                        version: format_version(&record),
                    })
                }
                WriteStep::Retry(v) if self.too_far_ahead(&v) => {
                    // Stamping past it would make this write too far ahead
                    // for the replicas: a clock that ran fast stamped it.
                    return Err(plan.too_far_ahead(&v, self.max_clock_offset).into());
                }
                WriteStep::Retry(v) => {
                    debug!(newer = ?v, "a replica holds a newer version: stamping the write past it");
                    newer = Some(v);
                }
                WriteStep::Fail(e) => return Err(e.into()),
            }
        }
    }

    /// The newest version of `key` that enough replicas hold that any write
    /// acknowledged by `needed` of them is among the answers (N - W + 1 of
    /// them); none is asked at `one`, which promises no order.
    ///
    /// # Errors
    /// Too few answers: definite, nothing was sent yet.
    async fn newest_version(
        self: &Arc<Self>,
        key: &[u8],
        route: &Route<Replica>,
        needed: usize,
        consistency: Consistency,
    ) -> Result<Option<Version>> {
        if consistency == Consistency::One {
            return Ok(None);
        }
        let ask = self.replication().saturating_sub(needed) + 1;
        let (done, _late) = self.read_quorum(key, route, ask).await.map_err(|e| {
            let text = format!("{e:#}");
            anyhow::Error::new(RequestError::new(
                ErrorKind::Definite,
                format!("cannot learn the key's newest version before writing ({text}); nothing was written"),
            ))
        })?;
        Ok(done.best.map(|b| b.version))
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
    ) -> Result<WriteRound<Replica>> {
        let mut tasks = JoinSet::new();
        let remotes = route.write.iter().filter(|r| r.id != self.me).count();
        let (mut gate, local_go) = LocalGate::new(remotes);
        for r in route.write.clone() {
            let (kv, key, record) = (self.clone(), key.to_vec(), record.clone());
            let mut local_go = local_go.clone();
            tasks.spawn(async move {
                if r.id == kv.me && local_go.wait_for(|go| *go).await.is_err() {
                    let why = "every other replica refused this write".to_owned();
                    return (r, Answer::Refused(why));
                }
                (r.clone(), kv.apply_at(&r, key, record).await)
            });
        }
        drop(local_go);
        let mut round = WriteRound::default();
        let mut missed: Vec<Replica> = Vec::new();
        while !round.is_done(route, needed) {
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (r, answer) = joined.map_err(|e| anyhow!("replica task failed: {e}"))?;
            if r.id != self.me {
                gate.handle_answer(&answer);
            }
            // After the first phase this write is stamped past everything
            // acknowledged before it began: a replica holding a newer
            // version holds a concurrent write, which this one is ordered
            // before (MW-ABD), so that is an acknowledgement. Only a
            // version too far ahead (a clock that ran fast) is not.
            let answer = match answer {
                Answer::Newer(v) if !self.too_far_ahead(&v) => Answer::Ok(()),
                other => other,
            };
            if round.handle_answer(r.clone(), answer.into()) {
                missed.push(r);
            }
        }
        // Done: the write stands elsewhere, so this peer's copy may follow.
        if round.is_done(route, needed) {
            gate.release();
        }
        // Late answers still count for hints, where the write may exist.
        let may_exist = round.may_exist(route, needed);
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

    /// Coordinates a get: the newest of R answers. At quorum and all,
    /// stale answerers get the newest written back before the answer (a
    /// quorum read returns only what a quorum holds); late answers and
    /// reads at one are repaired in the background.
    pub(crate) async fn get(
        self: &Arc<Self>,
        key: Vec<u8>,
        consistency: Consistency,
    ) -> Result<GetReply> {
        self.check(&key, None)?;
        self.hot.lock().expect("hot lock").record(&key);
        let needed = required(consistency, self.replication());
        let route = self.route(&key, needed)?;
        let (done, tasks) = self.read_quorum(&key, &route, needed).await?;
        // A version far ahead (stamped by a clock that ran fast before the
        // bound was in place) is returned, but this clock does not follow
        // it: its writes would be refused for being as far ahead.
        if let Some(best) = done
            .best
            .as_ref()
            .filter(|b| !self.too_far_ahead(&b.version))
        {
            self.clock
                .lock()
                .expect("clock lock")
                .observe(&best.version);
        }
        // The mutation (tests only, see crate::mutation) skips the write-back
        // and the repair of the stale answerers.
        let unrepaired = mutation::on_peer(&self.me, Mutation::ReadWithoutWriteBack);
        let blocking = !unrepaired && done.must_write_back(consistency, &route, needed);
        if blocking {
            if let Some(best) = &done.best {
                self.write_back(&key, best, &done, &route, needed).await?;
            }
        }
        self.repair_late(key, &done, blocking || unrepaired, tasks);
        let version = done.best.as_ref().map(format_version);
        // An expired value reads as absent; its record still won (newest
        // version wins) and was repaired like any other.
        let now = self.wall_ms();
        Ok(GetReply {
            value: done
                .best
                .filter(|r| !r.is_expired(now))
                .and_then(|r| r.value),
            version,
            answered: done.answered.iter().map(|r| r.name.to_string()).collect(),
        })
    }

    /// `needed` answers for `key` over `route`, as [`ReadPlan`] says, and
    /// the reads still in flight.
    async fn read_quorum(
        self: &Arc<Self>,
        key: &[u8],
        route: &Route<Replica>,
        needed: usize,
    ) -> Result<(ReadDone<Replica>, JoinSet<(Replica, Answer<ReadAnswer>)>)> {
        let (mut plan, first) =
            ReadPlan::new(route, needed, |r| r.id == self.me, &mut rand::rng())?;
        let mut tasks = JoinSet::new();
        let spawn_read = |tasks: &mut JoinSet<_>, r: Replica| {
            let (kv, key) = (self.clone(), key.to_vec());
            tasks.spawn(async move { (r.clone(), kv.read_at(&r, key).await) });
        };
        // The local read needs no task: it is answered first, at once.
        let mut at_once = None;
        for r in first {
            if r.id == self.me {
                at_once = Some((r, self.read_local(key)));
            } else {
                spawn_read(&mut tasks, r);
            }
        }
        while !plan.is_done() {
            let (r, answer) = match at_once.take() {
                Some(local) => local,
                None => {
                    let Some(joined) = tasks.join_next().await else {
                        break;
                    };
                    joined.map_err(|e| anyhow!("replica task failed: {e}"))?
                }
            };
            if let Some(next) = plan.handle_answer(r, answer.into()) {
                spawn_read(&mut tasks, next);
            }
        }
        Ok((plan.finish()?, tasks))
    }

    /// This peer's own answer to a read of `key`.
    fn read_local(&self, key: &[u8]) -> Answer<ReadAnswer> {
        match self.replica_read(key) {
            Ok(answer) => Answer::Ok(answer),
            Err(_) => Answer::Unknown,
        }
    }

    /// Blocking read repair: `best` to the write targets that did not
    /// answer with it, until a quorum holds it (see
    /// [`ReadDone::must_write_back`]). The rest still get it.
    async fn write_back(
        self: &Arc<Self>,
        key: &[u8],
        best: &Record,
        done: &ReadDone<Replica>,
        route: &Route<Replica>,
        needed: usize,
    ) -> Result<()> {
        let (mut back, targets) = done.write_back(route);
        let mut tasks = JoinSet::new();
        for r in targets {
            let (kv, key, best) = (self.clone(), key.to_vec(), best.clone());
            tasks.spawn(async move { (r.clone(), kv.apply_at(&r, key, best).await) });
        }
        while !back.is_done(route, needed) {
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (r, answer) = joined.map_err(|e| anyhow!("replica task failed: {e}"))?;
            debug!(replica = %r.name, "read repair (blocking)");
            back.handle_answer(r, answer.into());
        }
        tasks.detach_all();
        Ok(back.finish(route, needed, best)?)
    }

    /// Background read repair: stale answers of a read at one, and the
    /// answers that came after the read was done.
    fn repair_late(
        self: &Arc<Self>,
        key: Vec<u8>,
        done: &ReadDone<Replica>,
        written_back: bool,
        mut tasks: JoinSet<(Replica, Answer<ReadAnswer>)>,
    ) {
        let Some(best) = done.best.clone() else {
            return;
        };
        let stale = if written_back {
            Vec::new()
        } else {
            done.stale.clone()
        };
        let kv = self.clone();
        tokio::spawn(async move {
            for r in stale {
                debug!(replica = %r.name, "read repair");
                let _ = kv.apply_at(&r, key.clone(), best.clone()).await;
            }
            while let Some(Ok((r, Answer::Ok(ReadAnswer::Held(held))))) = tasks.join_next().await {
                if needs_repair(&held, &best) {
                    let _ = kv.apply_at(&r, key.clone(), best.clone()).await;
                }
            }
        });
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
                Ok(Reply::Err {
                    kind: ErrorKind::Refused,
                    message,
                }) => Answer::Refused(message),
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
                    other => {
                        debug!(replica = %r.name, bytes = bytes.len(), reply = ?other.err(), "replica read not answered");
                        Answer::Unknown
                    }
                }
            }
            Err(e) => e.into_answer(&r.name),
        }
    }
}

impl From<Answer<()>> for WriteResult {
    fn from(a: Answer<()>) -> Self {
        match a {
            Answer::Ok(()) => Self::Applied,
            Answer::Newer(v) => Self::Newer(v),
            Answer::Refused(why) => Self::Refused(why),
            Answer::Unreachable => Self::Unreachable,
            Answer::Unknown => Self::Unknown,
        }
    }
}

impl From<Answer<ReadAnswer>> for ReadResult {
    fn from(a: Answer<ReadAnswer>) -> Self {
        match a {
            Answer::Ok(ReadAnswer::Held(held)) => Self::Held(held),
            Answer::Ok(ReadAnswer::NotHeld(held)) => Self::NotHeld(held),
            Answer::Unreachable => Self::Unreachable,
            Answer::Unknown | Answer::Newer(_) | Answer::Refused(_) => Self::Unknown,
        }
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
