//! Convergence, observed rather than assumed: every peer's view of every
//! other peer, read from each running peer's admin HTTP (`/v1/members`),
//! and whether all of them agree with what the testbed knows to be true.
//!
//! **Converged** means: every running (not stopped, not exited) peer
//! answers; each lists every running peer `alive` and every other testbed
//! peer `dead` or `left` (or not at all); and all of them report the same,
//! non-empty ring digest. IO: HTTP to the peers, `/proc`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::procs::{self, ProcState};
use crate::state::State;

/// One peer's view of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerView {
    /// Each member's state by name (`alive`, `suspect`, `dead`, `left`).
    pub states: BTreeMap<String, String>,
    /// Its ring digest, if it has built a ring.
    pub ring_digest: Option<String>,
    /// Its view's change index.
    pub index: u64,
}

impl PeerView {
    /// Reads a view from the `/v1/members` JSON.
    pub fn from_json(v: &Value) -> Option<Self> {
        let mut states = BTreeMap::new();
        for m in v["members"].as_array()? {
            states.insert(
                m["name"].as_str()?.to_owned(),
                m["state"].as_str()?.to_owned(),
            );
        }
        Some(Self {
            states,
            ring_digest: v["ring_digest"].as_str().map(str::to_owned),
            index: v["index"].as_u64().unwrap_or(0),
        })
    }
}

/// One peer, observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Its name.
    pub name: String,
    /// Its process.
    pub process: ProcState,
    /// Its view, when it answered.
    pub view: Option<PeerView>,
}

/// Every peer, observed at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The peers in start order.
    pub peers: Vec<Observed>,
}

/// A peer's address book entry for observation.
#[derive(Clone, Debug)]
pub struct Target {
    /// Name.
    pub name: String,
    /// Pid of its latest start.
    pub pid: u32,
    /// Data dir (identifies the process).
    pub data: PathBuf,
    /// Admin HTTP address.
    pub admin: SocketAddr,
}

/// The peers of a state file, as observation targets.
pub fn targets(state: &State) -> Vec<Target> {
    state
        .peers
        .iter()
        .map(|p| Target {
            name: p.name.clone(),
            pid: p.pid,
            data: p.data.clone(),
            admin: p.admin,
        })
        .collect()
}

/// Reads every peer's process state and view, in parallel.
pub fn observe(targets: &[Target]) -> Snapshot {
    let peers = std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .map(|t| {
                s.spawn(move || {
                    let process = procs::state(t.pid, &t.data);
                    let view = (process == ProcState::Running)
                        .then(|| crate::http::get(t.admin, "/v1/members").ok())
                        .flatten()
                        .and_then(|body| serde_json::from_str::<Value>(&body).ok())
                        .and_then(|v| PeerView::from_json(&v));
                    Observed {
                        name: t.name.clone(),
                        process,
                        view,
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("an observer thread does not panic"))
            .collect()
    });
    Snapshot { peers }
}

/// A one-letter state: A(live), S(uspect), D(ead), L(eft); `-` not listed.
pub fn letter(state: Option<&str>) -> char {
    match state {
        Some("alive") => 'A',
        Some("suspect") => 'S',
        Some("dead") => 'D',
        Some("left") => 'L',
        Some(_) => '?',
        None => '-',
    }
}

impl Snapshot {
    /// Names of the peers whose process runs.
    pub fn running(&self) -> Vec<&str> {
        self.peers
            .iter()
            .filter(|p| p.process == ProcState::Running)
            .map(|p| p.name.as_str())
            .collect()
    }

    /// Whether every running peer agrees with the truth (see the module
    /// doc).
    pub fn converged(&self) -> bool {
        self.disagreement().is_none()
    }

    /// Why the cluster has not converged, or `None` when it has.
    pub fn disagreement(&self) -> Option<String> {
        let running = self.running();
        if running.is_empty() {
            return Some("no peer is running".into());
        }
        let mut digest: Option<&str> = None;
        for p in self
            .peers
            .iter()
            .filter(|p| p.process == ProcState::Running)
        {
            let Some(view) = &p.view else {
                return Some(format!("{} does not answer", p.name));
            };
            for q in &self.peers {
                let seen = view.states.get(&q.name).map(String::as_str);
                let live = q.process == ProcState::Running;
                if live && seen != Some("alive") {
                    return Some(format!(
                        "{} sees {} as {}",
                        p.name,
                        q.name,
                        seen.unwrap_or("unknown")
                    ));
                }
                if !live && matches!(seen, Some("alive" | "suspect")) {
                    return Some(format!(
                        "{} still sees {} ({}) as {}",
                        p.name,
                        q.name,
                        q.process.word(),
                        seen.unwrap_or("")
                    ));
                }
            }
            let Some(d) = view.ring_digest.as_deref() else {
                return Some(format!("{} has no ring yet", p.name));
            };
            match digest {
                None => digest = Some(d),
                Some(first) if first != d => {
                    return Some(format!("{} has another ring ({})", p.name, short(d)));
                }
                Some(_) => {}
            }
        }
        None
    }

    /// What `observer` thinks of `subject`, as a letter; `?` when the
    /// observer does not answer, blank when it is not running.
    pub fn cell(&self, observer: &Observed, subject: &str) -> char {
        match (&observer.view, observer.process) {
            (Some(v), _) => letter(v.states.get(subject).map(String::as_str)),
            (None, ProcState::Running) => '?',
            (None, _) => ' ',
        }
    }

    /// The matrix: a row per observer, a column per subject, then each
    /// row's ring digest.
    pub fn matrix(&self) -> String {
        let width = self
            .peers
            .iter()
            .map(|p| p.name.len())
            .max()
            .unwrap_or(2)
            .max(2);
        let mut out = format!("{:width$}  {:8}", "view", "process");
        for p in &self.peers {
            let _ = write!(out, " {:>width$}", p.name);
        }
        out.push_str("  ring\n");
        for o in &self.peers {
            let _ = write!(out, "{:width$}  {:8}", o.name, o.process.word());
            for s in &self.peers {
                let _ = write!(out, " {:>width$}", self.cell(o, &s.name));
            }
            let ring = o
                .view
                .as_ref()
                .and_then(|v| v.ring_digest.as_deref())
                .map_or("-", short);
            let _ = writeln!(out, "  {ring}");
        }
        out
    }

    /// Every observer/subject cell, for change detection.
    pub fn cells(&self) -> BTreeMap<(String, String), char> {
        let mut m = BTreeMap::new();
        for o in &self.peers {
            for s in &self.peers {
                m.insert((o.name.clone(), s.name.clone()), self.cell(o, &s.name));
            }
        }
        m
    }

    /// The state most running observers give `subject` (ties: the worse
    /// one), or `None` when no running peer answers.
    pub fn consensus(&self, subject: &str) -> Option<char> {
        let mut counts: BTreeMap<char, usize> = BTreeMap::new();
        for o in self.peers.iter().filter(|o| o.view.is_some()) {
            *counts.entry(self.cell(o, subject)).or_default() += 1;
        }
        let rank = |c: char| match c {
            'A' => 0,
            'S' => 1,
            'D' => 2,
            'L' => 3,
            _ => 4,
        };
        counts
            .into_iter()
            .max_by_key(|(c, n)| (*n, rank(*c)))
            .map(|(c, _)| c)
    }
}

/// The first 8 characters of a digest.
pub fn short(d: &str) -> &str {
    &d[..d.len().min(8)]
}

/// Polls until the cluster converges, at most `limit`; the time it took.
pub fn wait_converged(targets: &[Target], limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut why = String::new();
    while start.elapsed() < limit {
        let snap = observe(targets);
        match snap.disagreement() {
            None => return Ok(start.elapsed()),
            Some(w) => why = w,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "not converged within {:.0} s: {why}",
        limit.as_secs_f64()
    ))
}

/// What `ringkv testbed watch` stops on.
#[derive(Clone, Copy, Debug)]
pub struct WatchLimits {
    /// Stop after this long.
    pub duration: Duration,
    /// Stop as soon as the cluster has converged.
    pub until_converged: bool,
}

/// Runs the live view on stdout until a limit is reached: refreshed in
/// place on a terminal, one line per change otherwise. Returns the closing
/// summary, and whether the cluster was converged at the end.
pub fn watch(state_of: impl Fn() -> Vec<Target>, limits: WatchLimits) -> (String, bool) {
    let tty = std::io::stdout().is_terminal();
    let start = Instant::now();
    let mut unsettled_since: Option<Instant> = None;
    let mut last_cells = BTreeMap::new();
    let mut last_converged: Option<bool> = None;
    let mut converged_note = String::new();
    loop {
        let snap = observe(&state_of());
        let why = snap.disagreement();
        let converged = why.is_none();
        let now = Instant::now();
        if !converged && unsettled_since.is_none() {
            unsettled_since = Some(now);
        }
        if converged && last_converged != Some(true) {
            converged_note = match unsettled_since.take() {
                Some(t) => format!("converged in {:.2} s", (now - t).as_secs_f64()),
                None => "converged".into(),
            };
        }
        let t = start.elapsed().as_secs_f64();
        let status = if converged {
            converged_note.clone()
        } else {
            format!("not converged: {}", why.clone().unwrap_or_default())
        };
        let mut out = std::io::stdout().lock();
        if tty {
            let _ = write!(out, "\x1b[H\x1b[2J{}\n{t:6.1} s  {status}\n", snap.matrix());
        } else {
            let cells = snap.cells();
            for ((o, s), c) in &cells {
                if last_cells.get(&(o.clone(), s.clone())) != Some(c) && *c != ' ' {
                    let _ = writeln!(out, "{t:7.2} s  {o} sees {s}: {c}");
                }
            }
            if last_converged != Some(converged) {
                let _ = writeln!(out, "{t:7.2} s  {status}");
            }
            last_cells = cells;
        }
        let _ = out.flush();
        last_converged = Some(converged);
        if (limits.until_converged && converged) || start.elapsed() >= limits.duration {
            let summary = if converged {
                format!("{converged_note} (watched {t:.1} s)\n")
            } else {
                format!(
                    "not converged after {t:.1} s: {}\n",
                    why.unwrap_or_default()
                )
            };
            return (summary, converged);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(states: &[(&str, &str)], ring: &str) -> Option<PeerView> {
        Some(PeerView {
            states: states
                .iter()
                .map(|(a, b)| ((*a).into(), (*b).into()))
                .collect(),
            ring_digest: Some(ring.into()),
            index: 1,
        })
    }

    fn peer(name: &str, process: ProcState, v: Option<PeerView>) -> Observed {
        Observed {
            name: name.into(),
            process,
            view: v,
        }
    }

    #[test]
    fn agreeing_views_of_the_running_peers_are_converged() {
        let all = [("p1", "alive"), ("p2", "alive"), ("p3", "dead")];
        let snap = Snapshot {
            peers: vec![
                peer("p1", ProcState::Running, view(&all, "r1")),
                peer("p2", ProcState::Running, view(&all, "r1")),
                peer("p3", ProcState::Gone, None),
            ],
        };
        assert_eq!(snap.disagreement(), None);
        assert_eq!(snap.consensus("p3"), Some('D'));
        assert!(snap.matrix().contains("p3"));
    }

    #[test]
    fn a_killed_peer_still_seen_alive_is_not_converged() {
        let all = [("p1", "alive"), ("p2", "alive")];
        let snap = Snapshot {
            peers: vec![
                peer("p1", ProcState::Running, view(&all, "r1")),
                peer("p2", ProcState::Gone, None),
            ],
        };
        assert!(snap.disagreement().unwrap().contains("p1 still sees p2"));
    }

    #[test]
    fn different_rings_or_a_silent_peer_are_not_converged() {
        let all = [("p1", "alive"), ("p2", "alive")];
        let snap = Snapshot {
            peers: vec![
                peer("p1", ProcState::Running, view(&all, "r1")),
                peer("p2", ProcState::Running, view(&all, "r2")),
            ],
        };
        assert!(snap.disagreement().unwrap().contains("another ring"));
        let snap = Snapshot {
            peers: vec![
                peer("p1", ProcState::Running, view(&all, "r1")),
                peer("p2", ProcState::Running, None),
            ],
        };
        assert!(snap.disagreement().unwrap().contains("does not answer"));
        assert_eq!(snap.cell(&snap.peers[1], "p1"), '?');
    }

    #[test]
    fn views_parse_from_the_members_json() {
        let v = serde_json::json!({"index": 4, "ring_digest": "abcdef0123", "members": [
            {"name": "p1", "state": "alive"}, {"name": "p2", "state": "suspect"}]});
        let pv = PeerView::from_json(&v).unwrap();
        assert_eq!(pv.states["p2"], "suspect");
        assert_eq!(pv.index, 4);
        assert_eq!(short(pv.ring_digest.as_deref().unwrap()), "abcdef01");
    }
}
