//! The `expect` steps that poll: every running peer holds its ranges
//! (`expect handoff`), or sees a peer in a state (`expect NODE dead`),
//! within a bound. IO: HTTP to the peers.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::load::KvClient;
use crate::procs::ProcState;
use crate::watch;

use super::run::Ctx;

impl<C: KvClient> Ctx<C> {
    /// Waits until every running peer reports `ringkv_handoff_ready 1`
    /// and no pending range on its metrics.
    pub(super) fn expect_handoff(&self, limit: Duration) -> Result<String> {
        let start = Instant::now();
        let mut last = String::from("no peer answered");
        while start.elapsed() < limit {
            let (peers, running): (Vec<_>, Vec<bool>) = {
                let tb = self.tb.lock().expect("not poisoned");
                let running = (0..tb.state.peers.len())
                    .map(|i| tb.process(i) == ProcState::Running)
                    .collect();
                (tb.state.peers.clone(), running)
            };
            let mut waiting = Vec::new();
            let mut keys = 0.0;
            for (p, _) in peers.iter().zip(&running).filter(|(_, r)| **r) {
                let metric = |text: &str, name: &str| {
                    text.lines().find_map(|l| {
                        l.strip_prefix(name)?
                            .strip_prefix(' ')?
                            .trim()
                            .parse::<f64>()
                            .ok()
                    })
                };
                match crate::http::get(p.admin, "/metrics") {
                    Ok(text) => {
                        let ready = metric(&text, "ringkv_handoff_ready") == Some(1.0);
                        let pending = metric(&text, "ringkv_handoff_pending_ranges").unwrap_or(1.0);
                        keys += metric(&text, "ringkv_handoff_keys_moved_total").unwrap_or(0.0);
                        if !ready || pending > 0.0 {
                            waiting.push(p.name.clone());
                        }
                    }
                    Err(_) => waiting.push(p.name.clone()),
                }
            }
            if waiting.is_empty() {
                return Ok(format!(
                    "every peer holds its ranges after {:.2} s ({keys:.0} keys moved so far)",
                    start.elapsed().as_secs_f64()
                ));
            }
            last = format!("still receiving: {}", waiting.join(", "));
            std::thread::sleep(Duration::from_millis(250));
        }
        bail!(
            "handoff not done within {:.0} s: {last}",
            limit.as_secs_f64()
        )
    }

    /// Gossip received per wire version, by every running peer: name →
    /// (version → count), from `/metrics`.
    fn received_by_version(&self) -> Vec<(String, Vec<(u8, f64)>)> {
        let peers: Vec<_> = {
            let tb = self.tb.lock().expect("not poisoned");
            (0..tb.state.peers.len())
                .filter(|&i| tb.process(i) == ProcState::Running)
                .map(|i| tb.state.peers[i].clone())
                .collect()
        };
        let prefix = "ringkv_gossip_received_by_version_total{version=\"";
        peers
            .into_iter()
            .map(|p| {
                let text = crate::http::get(p.admin, "/metrics").unwrap_or_default();
                let counts = text
                    .lines()
                    .filter_map(|l| {
                        let (v, n) = l.strip_prefix(prefix)?.split_once("\"}")?;
                        Some((v.parse().ok()?, n.trim().parse().ok()?))
                    })
                    .collect();
                (p.name, counts)
            })
            .collect()
    }

    /// Waits until, over one second, every running peer received gossip
    /// at version `v` and at no other.
    pub(super) fn expect_wire_version(&self, v: u8, limit: Duration) -> Result<String> {
        let start = Instant::now();
        let mut last = String::from("no sample yet");
        while start.elapsed() < limit {
            let before = self.received_by_version();
            std::thread::sleep(Duration::from_secs(1));
            let after = self.received_by_version();
            let mut off = Vec::new();
            for (name, counts) in &after {
                let old = before.iter().find(|(n, _)| n == name).map(|(_, c)| c);
                let delta = |version: u8| {
                    let now = counts
                        .iter()
                        .find(|(x, _)| *x == version)
                        .map_or(0.0, |c| c.1);
                    let then = old
                        .and_then(|c| c.iter().find(|(x, _)| *x == version))
                        .map_or(0.0, |c| c.1);
                    now - then
                };
                let others: f64 = counts
                    .iter()
                    .filter(|(x, _)| *x != v)
                    .map(|(x, _)| delta(*x))
                    .sum();
                if delta(v) <= 0.0 || others > 0.0 {
                    off.push(format!("{name} ({} at {v}, {others} at others)", delta(v)));
                }
            }
            if off.is_empty() && !after.is_empty() {
                return Ok(format!(
                    "every peer receives version {v} only, after {:.2} s",
                    start.elapsed().as_secs_f64()
                ));
            }
            last = off.join(", ");
        }
        bail!(
            "not all on wire version {v} within {:.0} s: {last}",
            limit.as_secs_f64()
        )
    }

    /// Waits until every other running peer lists `name` at the QUIC
    /// address it runs at now (after `readdress`: re-dialed there).
    pub(super) fn expect_address(&self, name: &str, limit: Duration) -> Result<String> {
        let start = Instant::now();
        let mut last = String::from("no peer answered");
        while start.elapsed() < limit {
            let (want, observers) = {
                let tb = self.tb.lock().expect("not poisoned");
                let i = tb.state.index_of(name)?;
                let observers: Vec<_> = (0..tb.state.peers.len())
                    .filter(|&j| j != i && tb.process(j) == ProcState::Running)
                    .map(|j| tb.state.peers[j].clone())
                    .collect();
                (tb.state.peers[i].addr, observers)
            };
            let mut off = Vec::new();
            for o in &observers {
                let listed = crate::http::get(o.admin, "/v1/members")
                    .ok()
                    .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
                    .and_then(|v| {
                        v["members"].as_array()?.iter().find_map(|m| {
                            (m["name"].as_str()? == name)
                                .then(|| m["addr"].as_str().map(str::to_owned))
                                .flatten()
                        })
                    });
                if listed.as_deref() != Some(want.to_string().as_str()) {
                    off.push(format!("{}: {}", o.name, listed.as_deref().unwrap_or("-")));
                }
            }
            if off.is_empty() && !observers.is_empty() {
                return Ok(format!(
                    "every running peer lists {name} at {want} after {:.2} s",
                    start.elapsed().as_secs_f64()
                ));
            }
            last = off.join(", ");
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "not every peer lists {name} at its address within {:.0} s ({last})",
            limit.as_secs_f64()
        )
    }

    /// Samples every peer's view every 250 ms for `span`: fails at the
    /// first running peer seen dead by another running peer (a false
    /// positive); counts the suspicions on the way (each refuted, or it
    /// would have become a death).
    pub(super) fn expect_nobody_dead(&self, span: Duration) -> Result<String> {
        let start = Instant::now();
        let (mut samples, mut suspicions) = (0u64, 0u64);
        let mut suspected: std::collections::BTreeSet<(String, String)> = Default::default();
        while start.elapsed() < span {
            let targets = watch::targets(&self.tb.lock().expect("not poisoned").state);
            let snap = watch::observe(&targets);
            let running: Vec<&str> = snap.running();
            for o in snap
                .peers
                .iter()
                .filter(|o| o.process == ProcState::Running)
            {
                for s in running.iter().filter(|s| **s != o.name) {
                    match snap.cell(o, s) {
                        'D' => bail!(
                            "{} saw {s} dead at {:.1} s, while {s} ran (a false positive; {suspicions} suspicions before)",
                            o.name,
                            start.elapsed().as_secs_f64()
                        ),
                        'S' => {
                            if suspected.insert((o.name.clone(), (*s).to_owned())) {
                                suspicions += 1;
                            }
                        }
                        _ => {
                            suspected.remove(&(o.name.clone(), (*s).to_owned()));
                        }
                    }
                }
            }
            samples += 1;
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(format!(
            "nobody seen dead over {:.0} s ({samples} samples of every view); {suspicions} suspicions, all refuted",
            span.as_secs_f64()
        ))
    }

    pub(super) fn expect_state(
        &self,
        name: &str,
        state: &str,
        from: &[String],
        limit: Duration,
    ) -> Result<String> {
        let start = Instant::now();
        let want = watch::letter(Some(state));
        let mut last = String::new();
        while start.elapsed() < limit {
            let targets = watch::targets(&self.tb.lock().expect("not poisoned").state);
            for who in from.iter().map(String::as_str).chain([name]) {
                if !targets.iter().any(|t| t.name == who) {
                    bail!("no peer called {who:?}");
                }
            }
            let snap = watch::observe(&targets);
            let observers: Vec<_> = snap
                .peers
                .iter()
                .filter(|o| o.name != name && o.process == ProcState::Running)
                .filter(|o| from.is_empty() || from.contains(&o.name))
                .collect();
            let seen: Vec<(String, char)> = observers
                .iter()
                .map(|o| (o.name.clone(), snap.cell(o, name)))
                .collect();
            if !observers.is_empty() && seen.iter().all(|(_, c)| *c == want) {
                let since = self
                    .last_fault
                    .get(name)
                    .map(|t| {
                        format!(
                            ", {:.2} s after the {name} step",
                            (self.started.elapsed() - *t).as_secs_f64()
                        )
                    })
                    .unwrap_or_default();
                return Ok(format!(
                    "{state} at {} after {:.2} s{since}",
                    if from.is_empty() {
                        "every running peer".to_owned()
                    } else {
                        from.join(", ")
                    },
                    start.elapsed().as_secs_f64()
                ));
            }
            last = seen
                .iter()
                .map(|(o, c)| format!("{o}:{c}"))
                .collect::<Vec<_>>()
                .join(" ");
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "not {state} everywhere within {:.0} s (views: {last})",
            limit.as_secs_f64()
        )
    }
}
