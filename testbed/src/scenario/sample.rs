//! The membership timeline of a run: a thread that observes every peer
//! every 250 ms, keeps the live addresses current for the workload, and
//! (with progress on) prints each change of a peer's state. IO: HTTP to
//! the peers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::control::Testbed;
use crate::load::LivePeers;
use crate::watch::{self, Snapshot};

/// One membership sample for the timeline.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Since the cluster came up.
    pub at: Duration,
    /// Every peer's observation.
    pub snapshot: Snapshot,
}

/// What the sampler shares with the runner.
pub(super) struct Sampling {
    pub(super) tb: Arc<Mutex<Testbed>>,
    pub(super) live: LivePeers,
    pub(super) timeline: Arc<Mutex<Vec<Sample>>>,
    pub(super) on: Arc<AtomicBool>,
    pub(super) started: Instant,
    /// Print each change of a peer's state (as most running peers see it).
    pub(super) progress: bool,
}

/// Lines for peers whose state, as most running peers see it, changed
/// between two samples: `p3 is suspect (2 of 4 running peers)`.
pub fn changes(before: Option<&Snapshot>, now: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for p in &now.peers {
        let Some(c) = now.consensus(&p.name) else {
            continue;
        };
        if before.and_then(|b| b.consensus(&p.name)) == Some(c) {
            continue;
        }
        let seeing = now
            .peers
            .iter()
            .filter(|o| o.view.is_some() && now.cell(o, &p.name) == c)
            .count();
        let asked = now.peers.iter().filter(|o| o.view.is_some()).count();
        let state = match c {
            'A' => "alive",
            'S' => "suspect",
            'D' => "dead",
            'L' => "left",
            _ => "unknown",
        };
        out.push(format!(
            "{} is {state} ({seeing} of {asked} running peers)",
            p.name
        ));
    }
    out
}

pub(super) fn spawn_sampler(s: Sampling) -> JoinHandle<()> {
    let Sampling {
        tb,
        live,
        timeline,
        on,
        started,
        progress,
    } = s;
    std::thread::spawn(move || {
        let mut last: Option<Snapshot> = None;
        while on.load(Ordering::Relaxed) {
            let (targets, addrs) = {
                let tb = tb.lock().expect("not poisoned");
                (
                    watch::targets(&tb.state),
                    tb.state
                        .peers
                        .iter()
                        .map(|p| (p.name.clone(), p.addr))
                        .collect::<Vec<_>>(),
                )
            };
            let at = started.elapsed();
            let snapshot = watch::observe(&targets);
            let running: Vec<_> = snapshot.running().into_iter().map(str::to_owned).collect();
            *live.lock().expect("not poisoned") = addrs
                .iter()
                .filter(|(n, _)| running.contains(n))
                .map(|(_, a)| *a)
                .collect();
            if progress {
                // Skip the first sample: the cluster is known to be up.
                if last.is_some() {
                    for line in changes(last.as_ref(), &snapshot) {
                        println!("{:7.2} s    · {line}", at.as_secs_f64());
                    }
                }
                last = Some(snapshot.clone());
            }
            timeline
                .lock()
                .expect("not poisoned")
                .push(Sample { at, snapshot });
            std::thread::sleep(Duration::from_millis(250));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procs::ProcState;

    #[test]
    fn state_changes_are_reported_once_per_change() {
        use crate::watch::{Observed, PeerView};
        let snap = |p2: &str| Snapshot {
            peers: vec![
                Observed {
                    name: "p1".into(),
                    process: ProcState::Running,
                    view: Some(PeerView {
                        states: [("p1", "alive"), ("p2", p2)]
                            .iter()
                            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                            .collect(),
                        ring_digest: None,
                        index: 1,
                    }),
                },
                Observed {
                    name: "p2".into(),
                    process: ProcState::Gone,
                    view: None,
                },
            ],
        };
        let (a, s) = (snap("alive"), snap("suspect"));
        assert!(changes(Some(&a), &a).is_empty());
        assert_eq!(
            changes(Some(&a), &s),
            ["p2 is suspect (1 of 1 running peers)"]
        );
        assert_eq!(changes(None, &a).len(), 2, "everything is news at first");
    }
}
