//! A model cluster driven by the pure decisions of handoff: `ring_view`
//! (which members the ring holds, the dead grace), the phase machine
//! (settle, sync, clean-up), the ring crate's pull planning, and the leave
//! rule. Peers join, leave gracefully, are killed (kill -9: Suspect, then
//! Dead, in the ring until the dead grace, then out) and restart, over
//! random sequences. Data is a set of probe positions; a peer holds the
//! probes it kept or pulled. The property: no clean-up and no graceful
//! leave ever removes the last live copy of a probe.
//!
//! A sync that completes gets every live copy in the ranges it pulls (a
//! peer that pulled a range holds it): this checks the clean-up and leave
//! rules, not the precision of pull sources. Taking only what the planned
//! sources hold (`strict_sources`) the model still finds losses under
//! heavy churn: a new peer plans against the ring of the members that
//! announced some ring, which during churn is a ring nobody held, so its
//! sources may lack the range (`strict_sources_under_churn`, ignored).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use ringkv_gossip::{Member, Meta, NodeStatus, Stats};
use ringkv_ring::{NodeSpec, Token};

use super::*;
use crate::readiness::READY_TAG;
use crate::ring_view::{self, DeadSince};

const SLOTS: usize = 7;
const TICK: Duration = Duration::from_millis(250);
const SUSPECT_FOR: Duration = Duration::from_secs(1);
const DEAD_GRACE: Duration = Duration::from_secs(6);
/// At most this many killed peers are still in the ring, or not yet
/// replaced by peers that announced the ring (N - 1 failures at a time).
const FAILURES: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proc {
    Absent,
    Running,
    Leaving,
    Killed(Instant),
    Left,
}

#[derive(Debug)]
struct Peer {
    id: NodeId,
    name: String,
    proc: Proc,
    holds: BTreeSet<usize>,
    ready: Option<Ring>,
    tag: Option<String>,
    phase: Phase,
    /// Its pulls never finish (throttled): each sync stalls.
    slow: bool,
    dead_since: DeadSince,
}

fn new_phase() -> Phase {
    Phase::new(PhaseConfig {
        settle: Duration::from_secs(1),
        cleanup_grace: Duration::from_secs(2),
    })
}

#[derive(Debug, Clone)]
enum Op {
    Join { slot: usize, slow: bool },
    Kill(usize),
    Restart(usize),
    Leave(usize),
    Wait(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..SLOTS, any::<bool>()).prop_map(|(slot, slow)| Op::Join { slot, slow }),
        2 => (0..SLOTS).prop_map(Op::Kill),
        1 => (0..SLOTS).prop_map(Op::Restart),
        1 => (0..SLOTS).prop_map(Op::Leave),
        4 => (1u32..40).prop_map(Op::Wait),
    ]
}

struct Cluster {
    peers: Vec<Peer>,
    probes: Vec<u64>,
    now: Instant,
    rings: BTreeMap<Vec<NodeId>, Ring>,
    /// What happened, for the failure message.
    log: Vec<String>,
    /// A pull gets only what its planned sources hold (otherwise: every
    /// live copy in its range).
    strict_sources: bool,
}

impl Cluster {
    fn new(probes: Vec<u64>) -> Self {
        let now = Instant::now();
        let mut peers: Vec<Peer> = (0..SLOTS)
            .map(|i| {
                let name = format!("p{i}");
                Peer {
                    id: NodeId::from_name(&name),
                    name,
                    proc: Proc::Absent,
                    holds: BTreeSet::new(),
                    ready: None,
                    tag: None,
                    phase: new_phase(),
                    slow: false,
                    dead_since: DeadSince::new(),
                }
            })
            .collect();
        // Three peers that hold everything of their ring.
        let mut specs: Vec<NodeSpec> = peers[..3].iter().map(|p| NodeSpec::new(p.id)).collect();
        specs.sort_by_key(|s| s.id);
        let first = Ring::build(&specs, DEFAULT_VNODES).expect("a ring");
        for p in &mut peers[..3] {
            p.proc = Proc::Running;
            p.holds = (0..probes.len()).collect();
            p.tag = Some(ring_tag(&first));
            p.ready = Some(first.clone());
        }
        Self {
            peers,
            probes,
            now,
            rings: BTreeMap::new(),
            log: Vec::new(),
            strict_sources: false,
        }
    }

    fn state(&self, i: usize) -> State {
        match self.peers[i].proc {
            Proc::Running | Proc::Leaving => State::Alive,
            Proc::Killed(at) if self.now.saturating_duration_since(at) < SUSPECT_FOR => {
                State::Suspect
            }
            Proc::Killed(_) => State::Dead,
            Proc::Absent | Proc::Left => State::Left,
        }
    }

    fn member(&self, i: usize) -> Member {
        let p = &self.peers[i];
        let mut meta = Meta::new("127.0.0.1:1".parse().expect("addr"), p.name.clone());
        meta.status = match p.proc {
            Proc::Leaving => NodeStatus::Leaving,
            _ if p.tag.is_none() => NodeStatus::Joining,
            _ => NodeStatus::Normal,
        };
        if let Some(tag) = &p.tag {
            meta.tags.insert(READY_TAG.to_owned(), tag.clone());
        }
        Member {
            id: p.id,
            incarnation: 1,
            state: self.state(i),
            meta: Arc::new(meta),
        }
    }

    /// Peer `i`'s view: every member that ever started; the views agree.
    fn view(&self, i: usize) -> View {
        let members: Vec<Member> = (0..SLOTS)
            .filter(|&j| j != i && self.peers[j].proc != Proc::Absent)
            .map(|j| self.member(j))
            .collect();
        let live = members.iter().filter(|m| m.state.is_live()).count();
        View {
            me: self.member(i),
            members,
            digest: 0,
            agreement: (live, live),
            shape: 0,
            ring_agreement: (live, live),
            joined: true,
            stats: Stats::default(),
            health: 0,
            index: 0,
        }
    }

    /// Peer `i`'s ring at `now` (the members that are not leaving).
    fn ring(&mut self, i: usize, view: &View) -> Option<Ring> {
        let now = self.now;
        let members = ring_view::ring_members(
            view,
            &mut self.peers[i].dead_since,
            &mut ring_view::Removed::new(),
            now,
            DEAD_GRACE,
        );
        let key: Vec<NodeId> = members.members.iter().map(|s| s.id).collect();
        if let Some(r) = self.rings.get(&key) {
            return Some(r.clone());
        }
        let ring = ring_view::build(&members, 0).ok()?.ring?;
        self.rings.insert(key, ring.clone());
        Some(ring)
    }

    /// Peer `i`'s ring that still counts leaving members, when any leave.
    fn full(&mut self, i: usize, view: &View) -> Option<Ring> {
        let mut dead_since = self.peers[i].dead_since.clone();
        let members = ring_view::ring_members(
            view,
            &mut dead_since,
            &mut ring_view::Removed::new(),
            self.now,
            DEAD_GRACE,
        );
        ring_view::build(&members, 0).ok()?.full
    }

    fn live_holder(&self, probe: usize, except: usize) -> bool {
        (0..SLOTS).any(|j| {
            j != except
                && matches!(self.peers[j].proc, Proc::Running | Proc::Leaving)
                && self.peers[j].holds.contains(&probe)
        })
    }

    fn probes_in(&self, range: &TokenRange) -> impl Iterator<Item = usize> + '_ {
        let range = *range;
        (0..self.probes.len()).filter(move |&q| range.contains(Token(self.probes[q])))
    }

    fn index(&self, id: &NodeId) -> Option<usize> {
        self.peers.iter().position(|p| p.id == *id)
    }

    /// Killed peers still counted as failures: in some running peer's
    /// ring, or out of it but not yet replaced (not every member of that
    /// ring announced it).
    fn failures(&mut self) -> usize {
        let Some(i) = (0..SLOTS).find(|&i| self.peers[i].proc == Proc::Running) else {
            return 0;
        };
        let view = self.view(i);
        let Some(ring) = self.ring(i, &view) else {
            return 0;
        };
        let tag = ring_tag(&ring);
        let replaced = ring.nodes().iter().all(|n| announced(&view, &n.id, &tag));
        (0..SLOTS)
            .filter(|&j| matches!(self.peers[j].proc, Proc::Killed(_)))
            .filter(|&j| ring.contains(&self.peers[j].id) || !replaced)
            .count()
    }

    fn apply(&mut self, op: &Op) -> Result<(), String> {
        self.log.push(format!("{op:?}"));
        match *op {
            Op::Join { slot, slow } if self.peers[slot].proc == Proc::Absent => {
                let p = &mut self.peers[slot];
                p.proc = Proc::Running;
                p.slow = slow;
            }
            Op::Kill(slot)
                if matches!(self.peers[slot].proc, Proc::Running | Proc::Leaving)
                    && self.failures() < FAILURES =>
            {
                self.peers[slot].proc = Proc::Killed(self.now);
            }
            Op::Restart(slot) => {
                if let Proc::Killed(at) = self.peers[slot].proc {
                    let away = self.now.saturating_duration_since(at);
                    let p = &mut self.peers[slot];
                    p.proc = Proc::Running;
                    p.slow = false;
                    p.phase = new_phase();
                    p.tag = None;
                    if away >= DEAD_GRACE {
                        // Away long enough for the others to have moved its
                        // ranges: it forgets the ring it held.
                        p.ready = None;
                    }
                }
            }
            Op::Leave(slot) if self.peers[slot].proc == Proc::Running => {
                self.peers[slot].proc = Proc::Leaving;
            }
            Op::Wait(ticks) => {
                for _ in 0..ticks {
                    self.now += TICK;
                    for i in 0..SLOTS {
                        self.tick(i)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn tick(&mut self, i: usize) -> Result<(), String> {
        let leaving = match self.peers[i].proc {
            Proc::Running => false,
            Proc::Leaving => true,
            _ => return Ok(()),
        };
        let view = self.view(i);
        let Some(ring) = self.ring(i, &view) else {
            return Ok(());
        };
        if leaving {
            return self.leave(i, &view, &ring);
        }
        let tag = self.peers[i].tag.clone();
        let now = self.now;
        match self.peers[i]
            .phase
            .handle_tick(now, &view, &ring, tag.as_deref(), false)
        {
            Action::Wait => Ok(()),
            Action::Sync { ring, tag } => {
                self.sync(i, &view, &ring, &tag);
                Ok(())
            }
            Action::CleanUp { ranges, .. } => {
                let line = format!("{} cleans up {} ranges", self.peers[i].name, ranges.len());
                self.log.push(line);
                for range in &ranges {
                    let gone: Vec<usize> = self
                        .probes_in(range)
                        .filter(|q| self.peers[i].holds.contains(q))
                        .collect();
                    for q in gone {
                        if !self.live_holder(q, i) {
                            return Err(format!(
                                "{} deleted the last live copy of probe {q} ({:x}) in {range}",
                                self.peers[i].name, self.probes[q]
                            ));
                        }
                        self.peers[i].holds.remove(&q);
                    }
                }
                Ok(())
            }
        }
    }

    /// A graceful leave: done when the rule says so, then its copies are
    /// gone with it.
    fn leave(&mut self, i: usize, view: &View, ring: &Ring) -> Result<(), String> {
        let tag = ring_tag(ring);
        let held = &self.peers[i].holds;
        let holds = |r: &TokenRange| self.probes_in(r).any(|q| held.contains(&q));
        let blocked = not_handed_over(ring, &holds, &|id| announced(view, id, &tag));
        if !blocked.is_empty() {
            return Ok(());
        }
        for &q in &self.peers[i].holds {
            if !self.live_holder(q, i) {
                return Err(format!(
                    "{} left with the last live copy of probe {q}",
                    self.peers[i].name
                ));
            }
        }
        self.peers[i].proc = Proc::Left;
        self.log.push(format!("{} left", self.peers[i].name));
        Ok(())
    }

    /// Pulls as `transfer` does: from the first answering sources, a
    /// majority of those the plan lists; then announces.
    fn sync(&mut self, i: usize, view: &View, ring: &Ring, tag: &str) {
        let now = self.now;
        if self.peers[i].slow {
            self.peers[i].phase.handle_sync_failed(now);
            return;
        }
        let full = self.full(i, view);
        let old = self.peers[i].ready.clone();
        let plan = plan_pulls(old.as_ref(), ring, full.as_ref(), view);
        let mut failed = false;
        for pull in plan.iter().filter(|p| !p.sources.is_empty()) {
            let (majority, _) = pull.needed();
            let answering: Vec<usize> = pull
                .sources
                .iter()
                .filter_map(|s| self.index(s))
                .filter(|&j| matches!(self.peers[j].proc, Proc::Running | Proc::Leaving))
                .take(majority)
                .collect();
            if answering.len() < majority {
                failed = true;
                continue;
            }
            let got: Vec<usize> = self
                .probes_in(&pull.range)
                .filter(|&q| {
                    if self.strict_sources {
                        answering.iter().any(|&j| self.peers[j].holds.contains(&q))
                    } else {
                        self.live_holder(q, i)
                    }
                })
                .collect();
            self.peers[i].holds.extend(got);
        }
        let names = |r: &Option<Ring>| {
            r.as_ref().map(|r| {
                r.nodes()
                    .iter()
                    .filter_map(|n| self.index(&n.id))
                    .map(|j| self.peers[j].name.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            })
        };
        let line = format!(
            "{} sync {:?} from {:?}: {} pulls, failed {failed}, holds {}",
            self.peers[i].name,
            names(&Some(ring.clone())),
            names(&old),
            plan.len(),
            self.peers[i].holds.len()
        );
        self.log.push(line);
        let p = &mut self.peers[i];
        if failed {
            p.phase.handle_sync_failed(now);
        } else {
            p.ready = Some(ring.clone());
            p.tag = Some(tag.to_owned());
            p.phase.handle_sync_done(tag);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever joins, leaves, kills and restarts happen, no clean-up and
    /// no graceful leave removes the last live copy of any data.
    #[test]
    fn no_plan_deletes_the_last_live_copy(
        probes in proptest::collection::vec(any::<u64>(), 24),
        ops in proptest::collection::vec(op(), 1..30),
    ) {
        let mut cluster = Cluster::new(probes);
        for op in &ops {
            if let Err(e) = cluster.apply(op) {
                prop_assert!(false, "{}\n{}", e, cluster.log.join("\n"));
            }
        }
    }
}

/// The known gap in pull planning (see the module comment): three peers,
/// one killed, one leaving, two joining at once; the joiner that syncs
/// second plans against a ring that counts the first joiner, which holds
/// nothing of the range, and the leaving peer's copy is not pulled.
#[test]
#[ignore = "known gap: pull sources planned from a ring nobody held"]
fn strict_sources_under_churn() {
    let mut probes = vec![0u64; 24];
    probes[21] = 11_442_738_252_074_018_614;
    let mut c = Cluster::new(probes);
    c.strict_sources = true;
    let ops = [
        Op::Join {
            slot: 6,
            slow: false,
        },
        Op::Wait(15),
        Op::Kill(6),
        Op::Join {
            slot: 5,
            slow: false,
        },
        Op::Kill(2),
        Op::Leave(1),
        Op::Join {
            slot: 4,
            slow: false,
        },
        Op::Wait(34),
    ];
    for op in &ops {
        if let Err(e) = c.apply(op) {
            panic!("{e}\n{}", c.log.join("\n"));
        }
    }
}

/// The user's report: three peers hold the data; three more join, are
/// killed before their pulls finish, and the ring drops them after the
/// dead grace. Nothing is deleted while they block, and nothing is lost.
#[test]
fn joiners_killed_before_their_pulls_finish_lose_nothing() {
    let probes: Vec<u64> = (0..64u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .collect();
    let n = probes.len();
    let mut c = Cluster::new(probes);
    let ops = [
        Op::Join {
            slot: 3,
            slow: true,
        },
        Op::Join {
            slot: 4,
            slow: true,
        },
        Op::Join {
            slot: 5,
            slow: true,
        },
        Op::Wait(20),
    ];
    for op in &ops {
        c.apply(op).expect("no copy lost");
    }
    // kill -9, all three, and past the dead grace.
    for slot in [3, 4, 5] {
        c.peers[slot].proc = Proc::Killed(c.now);
    }
    c.apply(&Op::Wait(80)).expect("no copy lost");
    for p in &c.peers[..3] {
        assert_eq!(p.holds.len(), n, "{} dropped data", p.name);
    }
}

/// The model catches the bug it guards against (docs/testbed.md, "Does
/// the checker catch real bugs?"): the scenario above with the clean-up
/// mutated to drop a range without its replicas' confirmation (the
/// joiners never finish their pulls) removes the last live copies, and the
/// model flags it; without the mutation the same steps lose nothing.
#[test]
fn a_cleanup_that_deletes_unconfirmed_ranges_is_flagged() {
    use crate::mutation::{test::set_thread, Mutation};
    let run = |mutated: bool| -> Result<(), String> {
        set_thread(Mutation::CleanupUnconfirmed, mutated);
        let probes: Vec<u64> = (0..64u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        let mut c = Cluster::new(probes);
        let joins = [3, 4, 5].map(|slot| Op::Join { slot, slow: true });
        let result = joins.iter().try_for_each(|op| c.apply(op));
        let result = result.and_then(|()| c.apply(&Op::Wait(20)));
        let result = result.and_then(|()| {
            for slot in [3, 4, 5] {
                c.peers[slot].proc = Proc::Killed(c.now);
            }
            c.apply(&Op::Wait(80))
        });
        set_thread(Mutation::CleanupUnconfirmed, false);
        result
    };
    let flagged = run(true).expect_err("the mutated clean-up must be flagged");
    assert!(flagged.contains("last live copy"), "{flagged}");
    run(false).expect("without the mutation nothing is lost");
}

/// The random property finds the same bug on its own: with the clean-up
/// mutated as above, random joins, leaves, kills and restarts (a fixed
/// seed, so the test is deterministic) lose a last copy.
#[test]
fn the_property_finds_a_cleanup_of_unconfirmed_ranges() {
    use crate::mutation::{test::set_thread, Mutation};
    use proptest::test_runner::{TestCaseError, TestRng, TestRunner};
    let config = ProptestConfig {
        cases: 256,
        // The first failure is the finding; shrinking it costs a minute.
        max_shrink_iters: 0,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let strategy = (
        proptest::collection::vec(any::<u64>(), 24),
        proptest::collection::vec(op(), 1..30),
    );
    set_thread(Mutation::CleanupUnconfirmed, true);
    let result = runner.run(&strategy, |(probes, ops)| {
        let mut cluster = Cluster::new(probes);
        for op in &ops {
            cluster.apply(op).map_err(TestCaseError::fail)?;
        }
        Ok(())
    });
    set_thread(Mutation::CleanupUnconfirmed, false);
    let err = result.expect_err("the mutated clean-up must be found");
    assert!(err.to_string().contains("last live copy"), "{err}");
}

/// The model is not vacuous: joiners that finish their pulls let the old
/// holders drop what they no longer replicate, and every probe keeps
/// three copies.
#[test]
fn joiners_that_finish_let_the_old_holders_drop_their_ranges() {
    let probes: Vec<u64> = (0..64u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .collect();
    let n = probes.len();
    let mut c = Cluster::new(probes);
    for slot in [3, 4, 5] {
        c.apply(&Op::Join { slot, slow: false }).expect("joins");
    }
    c.apply(&Op::Wait(60)).expect("no copy lost");
    for p in &c.peers[..3] {
        assert!(p.holds.len() < n, "{} dropped nothing", p.name);
    }
    for q in 0..n {
        let copies = c.peers.iter().filter(|p| p.holds.contains(&q)).count();
        assert_eq!(copies, 3, "probe {q}");
    }
    // And a graceful leave hands over, then ends.
    c.apply(&Op::Leave(0)).expect("leaves");
    c.apply(&Op::Wait(60)).expect("no copy lost");
    assert_eq!(c.peers[0].proc, Proc::Left);
    for q in 0..n {
        let copies = c.peers[1..].iter().filter(|p| p.holds.contains(&q)).count();
        assert_eq!(copies, 3, "probe {q} after the leave");
    }
}
