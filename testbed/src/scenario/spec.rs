//! What a scenario is: the file's shape (`Scenario`, `LoadSpec`,
//! `StepSpec`), the step language (`Step`, parsed from and printed back to
//! its text) and the validation done before anything starts. IO: only
//! [`Scenario::read`] reads the file.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use crate::cli::parse_duration;
use crate::faults;

/// A scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// What it shows, for people.
    #[serde(default)]
    pub description: String,
    /// Peers started at the beginning.
    pub nodes: usize,
    /// Extra `ringkv node` flags for every peer.
    #[serde(default)]
    pub node_flags: Vec<String>,
    /// Extra flags for the peers `add` steps start (after `node_flags`).
    #[serde(default)]
    pub add_flags: Vec<String>,
    /// The workload `load start` runs.
    #[serde(default)]
    pub load: LoadSpec,
    /// The steps, in order.
    #[serde(rename = "step")]
    pub steps: Vec<StepSpec>,
}

/// The workload of a scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    /// Operations per second.
    #[serde(default = "default_rate")]
    pub rate: u32,
    /// Distinct keys.
    #[serde(default = "default_keys")]
    pub keys: u64,
    /// Share of gets.
    #[serde(default = "default_read_ratio")]
    pub read_ratio: f64,
    /// Seed of the choices.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_rate() -> u32 {
    200
}
fn default_keys() -> u64 {
    1000
}
fn default_read_ratio() -> f64 {
    0.5
}
fn default_seed() -> u64 {
    1
}

impl Default for LoadSpec {
    fn default() -> Self {
        Self {
            rate: default_rate(),
            keys: default_keys(),
            read_ratio: default_read_ratio(),
            seed: default_seed(),
        }
    }
}

/// A step as written in the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Not before this long after the cluster came up.
    #[serde(default)]
    pub at: Option<String>,
    /// The step, in the step language.
    pub run: String,
}

/// `upgrade NODE bin=self`: the testbed's own binary.
pub(super) const SELF_BIN: &str = "self";

/// A parsed step.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// SIGKILL a peer.
    Kill(String),
    /// SIGSTOP a peer.
    Stop(String),
    /// SIGCONT a peer.
    Cont(String),
    /// SIGTERM a peer and wait until it exits.
    Leave(String),
    /// Start a peer again.
    Restart(String),
    /// Start a stopped peer again on another build: `upgrade NODE
    /// [bin=PATH] [KEY=VALUE ...]` (a binary, environment variables).
    /// `bin=self` is the testbed's own binary: with `testbed scenario
    /// --peer-bin OLD`, the peers start on an older build and `upgrade
    /// NODE bin=self` moves each to this one.
    Upgrade {
        /// The peer.
        node: String,
        /// Its new `ringkv` binary, if another.
        bin: Option<String>,
        /// Variables added to its environment.
        env: Vec<(String, String)>,
    },
    /// Start one more peer.
    Add,
    /// Cut two groups off from each other.
    Partition(Vec<String>, Vec<String>),
    /// Drop what the first group sends to the second, not the other way
    /// (multi-host mode): `partition p1 -> p2,p3`.
    OneWay(Vec<String>, Vec<String>),
    /// A peer's link down (false) or up again (multi-host mode).
    Link(String, bool),
    /// Start a stopped peer again at another address (multi-host mode).
    Readdress(String),
    /// Every other running peer lists a peer at the address it runs at
    /// now, within a bound.
    ExpectAddress(String, Duration),
    /// For this long, no running peer sees another running peer dead
    /// (false positives), sampled every 250 ms.
    ExpectNobodyDead(Duration),
    /// Clear all faults.
    Heal,
    /// Datagram loss on a peer.
    Loss(String, f64),
    /// Outgoing delay on a peer, in ms.
    Delay(String, u64),
    /// Wall-clock offset of a peer, in ms.
    Skew(String, i64),
    /// A peer's data dir reads as full (true) or not.
    Disk(String, bool),
    /// Do nothing for a while.
    Wait(Duration),
    /// Start the workload.
    LoadStart,
    /// Stop the workload (and run its final reads).
    LoadStop,
    /// Every running peer agrees, within a bound.
    ExpectConverged(Duration),
    /// Every running peer holds every range of its ring (handoff done),
    /// within a bound.
    ExpectHandoff(Duration),
    /// Every running peer receives gossip at this wire version only (its
    /// `ringkv_gossip_received_by_version_total` counters over one second),
    /// within a bound: a rolled cluster has switched.
    ExpectWireVersion(u8, Duration),
    /// Every other running peer (or those listed) sees a peer in a
    /// state, within a bound.
    ExpectState {
        /// The peer observed.
        node: String,
        /// `alive`, `suspect`, `dead` or `left`.
        state: String,
        /// Only these observers (`from A,B`); all other running peers if
        /// empty.
        from: Vec<String>,
        /// The bound.
        within: Duration,
    },
    /// Stop the workload and check its history: any violation fails.
    Check,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |d: &Duration| format!("{}s", d.as_secs_f64());
        match self {
            Self::Kill(n) => write!(f, "kill {n}"),
            Self::Stop(n) => write!(f, "stop {n}"),
            Self::Cont(n) => write!(f, "cont {n}"),
            Self::Leave(n) => write!(f, "leave {n}"),
            Self::Restart(n) => write!(f, "restart {n}"),
            Self::Upgrade { node, bin, env } => {
                write!(f, "upgrade {node}")?;
                if let Some(bin) = bin {
                    write!(f, " bin={bin}")?;
                }
                for (k, v) in env {
                    write!(f, " {k}={v}")?;
                }
                Ok(())
            }
            Self::Add => write!(f, "add"),
            Self::Partition(a, b) => write!(f, "partition {} / {}", a.join(","), b.join(",")),
            Self::OneWay(a, b) => write!(f, "partition {} -> {}", a.join(","), b.join(",")),
            Self::Link(n, up) => write!(f, "link {n} {}", if *up { "up" } else { "down" }),
            Self::Readdress(n) => write!(f, "readdress {n}"),
            Self::ExpectAddress(n, d) => write!(f, "expect {n} address within {}", secs(d)),
            Self::ExpectNobodyDead(d) => write!(f, "expect nobody dead for {}", secs(d)),
            Self::Heal => write!(f, "heal"),
            Self::Loss(n, l) => write!(f, "loss {n} {}%", l * 100.0),
            Self::Delay(n, ms) => write!(f, "delay {n} {ms}ms"),
            Self::Skew(n, ms) => write!(f, "skew {n} {ms:+}ms"),
            Self::Disk(n, full) => write!(f, "disk {n} {}", if *full { "full" } else { "free" }),
            Self::Wait(d) => write!(f, "wait {}", secs(d)),
            Self::LoadStart => write!(f, "load start"),
            Self::LoadStop => write!(f, "load stop"),
            Self::ExpectConverged(d) => write!(f, "expect converged within {}", secs(d)),
            Self::ExpectHandoff(d) => write!(f, "expect handoff within {}", secs(d)),
            Self::ExpectWireVersion(v, d) => {
                write!(f, "expect wire version {v} within {}", secs(d))
            }
            Self::ExpectState {
                node,
                state,
                from,
                within,
            } => {
                write!(f, "expect {node} {state} ")?;
                if !from.is_empty() {
                    write!(f, "from {} ", from.join(","))?;
                }
                write!(f, "within {}", secs(within))
            }
            Self::Check => write!(f, "check"),
        }
    }
}

fn duration(text: &str) -> Result<Duration> {
    parse_duration(text).map_err(anyhow::Error::msg)
}

impl FromStr for Step {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let one = |make: fn(String) -> Self| -> Result<Self> {
            match words.as_slice() {
                [_, node] => Ok(make((*node).to_owned())),
                _ => bail!("{s:?}: expected `{} NODE`", words[0]),
            }
        };
        let Some(first) = words.first() else {
            bail!("an empty step");
        };
        match *first {
            "kill" => one(Self::Kill),
            "stop" => one(Self::Stop),
            "cont" => one(Self::Cont),
            "leave" => one(Self::Leave),
            "restart" => one(Self::Restart),
            "readdress" => one(Self::Readdress),
            "upgrade" => {
                let [_, node, rest @ ..] = words.as_slice() else {
                    bail!("{s:?}: expected `upgrade NODE [bin=PATH] [KEY=VALUE ...]`");
                };
                let mut bin = None;
                let mut env = Vec::new();
                for w in rest {
                    match w.split_once('=') {
                        Some(("bin", path)) if !path.is_empty() => bin = Some(path.to_owned()),
                        Some((k, v)) if !k.is_empty() => env.push((k.to_owned(), v.to_owned())),
                        _ => bail!("{s:?}: {w:?} is neither bin=PATH nor KEY=VALUE"),
                    }
                }
                Ok(Self::Upgrade {
                    node: (*node).to_owned(),
                    bin,
                    env,
                })
            }
            "add" if words.len() == 1 => Ok(Self::Add),
            "heal" if words.len() == 1 => Ok(Self::Heal),
            "check" if words.len() == 1 => Ok(Self::Check),
            "partition" if s.contains("->") => {
                let (a, b) = faults::parse_one_way(&words[1..].join(" "))?;
                Ok(Self::OneWay(a, b))
            }
            "partition" => {
                let (a, b) = faults::parse_partition(&words[1..].join(" "))?;
                Ok(Self::Partition(a, b))
            }
            "link" => match words.as_slice() {
                [_, n, "down"] => Ok(Self::Link((*n).to_owned(), false)),
                [_, n, "up"] => Ok(Self::Link((*n).to_owned(), true)),
                _ => bail!("{s:?}: expected `link NODE down` or `link NODE up`"),
            },
            "loss" => match words.as_slice() {
                [_, n, l] => Ok(Self::Loss((*n).to_owned(), faults::parse_loss(l)?)),
                _ => bail!("{s:?}: expected `loss NODE 10%`"),
            },
            "delay" => match words.as_slice() {
                [_, n, d] => Ok(Self::Delay((*n).to_owned(), faults::parse_delay_ms(d)?)),
                _ => bail!("{s:?}: expected `delay NODE 50ms`"),
            },
            "skew" => match words.as_slice() {
                [_, n, o] => Ok(Self::Skew((*n).to_owned(), faults::parse_clock_offset_ms(o)?)),
                _ => bail!("{s:?}: expected `skew NODE +2s`"),
            },
            "disk" => match words.as_slice() {
                [_, n, st] => Ok(Self::Disk(
                    (*n).to_owned(),
                    crate::commands::parse_disk_state(st)?,
                )),
                _ => bail!("{s:?}: expected `disk NODE full` or `disk NODE free`"),
            },
            "wait" => match words.as_slice() {
                [_, d] => Ok(Self::Wait(duration(d)?)),
                _ => bail!("{s:?}: expected `wait 2s`"),
            },
            "load" => match words.as_slice() {
                [_, "start"] => Ok(Self::LoadStart),
                [_, "stop"] => Ok(Self::LoadStop),
                _ => bail!("{s:?}: expected `load start` or `load stop`"),
            },
            "expect" => match words.as_slice() {
                [_, "converged", "within", d] => Ok(Self::ExpectConverged(duration(d)?)),
                [_, "handoff", "within", d] => Ok(Self::ExpectHandoff(duration(d)?)),
                [_, "wire", "version", v, "within", d] => Ok(Self::ExpectWireVersion(
                    v.parse()
                        .map_err(|_| anyhow::anyhow!("{s:?}: {v:?} is not a wire version"))?,
                    duration(d)?,
                )),
                [_, "nobody", "dead", "for", d] => Ok(Self::ExpectNobodyDead(duration(d)?)),
                [_, n, "address", "within", d] => {
                    Ok(Self::ExpectAddress((*n).to_owned(), duration(d)?))
                }
                [_, n, st @ ("alive" | "suspect" | "dead" | "left"), rest @ ..] => {
                    let (from, d) = match rest {
                        ["within", d] => (Vec::new(), d),
                        ["from", who, "within", d] => {
                            (who.split(',').filter(|w| !w.is_empty()).map(str::to_owned).collect(), d)
                        }
                        _ => bail!("{s:?}: expected `expect NODE {st} [from A,B] within 15s`"),
                    };
                    Ok(Self::ExpectState {
                        node: (*n).to_owned(),
                        state: (*st).to_owned(),
                        from,
                        within: duration(d)?,
                    })
                }
                _ => bail!("{s:?}: expected `expect converged within 30s`, `expect handoff within 60s` or `expect NODE dead [from A,B] within 15s`"),
            },
            _ => bail!("{s:?}: unknown step (kill, stop, cont, leave, restart, add, partition, heal, loss, delay, skew, disk, wait, load start, load stop, expect, check)"),
        }
    }
}

impl Scenario {
    /// Reads and validates a scenario file.
    ///
    /// # Errors
    /// Unreadable, not TOML of this shape, or a step that does not parse
    /// (the message names the step).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses and validates scenario text.
    ///
    /// # Errors
    /// See [`Self::read`].
    pub fn parse(text: &str) -> Result<Self> {
        let s: Self = toml::from_str(text).context("not a scenario")?;
        if !(1..=64).contains(&s.nodes) {
            bail!("nodes = {}: between 1 and 64", s.nodes);
        }
        crate::control::check_node_flags(&s.node_flags)?;
        crate::control::check_node_flags(&s.add_flags)?;
        s.timed_steps()?;
        Ok(s)
    }

    /// The steps, parsed, with their earliest start.
    ///
    /// # Errors
    /// A step or an `at` does not parse.
    pub fn timed_steps(&self) -> Result<Vec<(Option<Duration>, Step)>> {
        self.steps
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let at = spec.at.as_deref().map(duration).transpose();
                let step = spec.run.parse::<Step>();
                match (at, step) {
                    (Ok(at), Ok(step)) => Ok((at, step)),
                    (Err(e), _) | (_, Err(e)) => Err(e.context(format!("step {}", i + 1))),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_parses_and_prints_back() {
        for text in [
            "kill p3",
            "stop p2",
            "cont p2",
            "leave p1",
            "restart p3",
            "upgrade p3",
            "upgrade p3 RINGKV_TEST_PROTOCOL_MAX=4",
            "upgrade p3 bin=/opt/ringkv-next/ringkv A=1 B=2",
            "add",
            "partition p1,p2 / p3,p4,p5",
            "partition p1 -> p2,p3",
            "link p2 down",
            "link p2 up",
            "readdress p3",
            "expect p3 address within 20s",
            "expect nobody dead for 600s",
            "heal",
            "loss p2 10%",
            "delay p2 50ms",
            "skew p2 +2s",
            "skew p2 -500ms",
            "skew p2 0",
            "disk p2 full",
            "disk p2 free",
            "wait 2s",
            "load start",
            "load stop",
            "expect converged within 30s",
            "expect wire version 4 within 10s",
            "expect p3 dead within 15s",
            "expect p1 dead from p3,p4 within 20s",
            "check",
        ] {
            let step: Step = text.parse().unwrap();
            let again: Step = step.to_string().parse().unwrap();
            assert_eq!(step, again, "{text}");
        }
    }

    #[test]
    fn bad_steps_say_what_is_expected() {
        for (text, hint) in [
            ("explode p1", "unknown step"),
            ("kill", "kill NODE"),
            ("expect p3 sleepy within 5s", "expect NODE dead"),
            ("wait forever", "not a duration"),
            ("partition p1 p2", "two sides"),
            ("partition p1 -> ", "both sides need a peer"),
            ("link p1 sideways", "link NODE down"),
            ("loss p1 200%", "between 0% and 100%"),
            ("skew p1 soon", "not a duration"),
            ("skew p1 500d", "out of range"),
            ("disk p1 half", "expected `full` or `free`"),
            ("upgrade", "upgrade NODE [bin=PATH]"),
            ("upgrade p1 newer", "neither bin=PATH nor KEY=VALUE"),
        ] {
            let err = format!("{:#}", text.parse::<Step>().unwrap_err());
            assert!(err.contains(hint), "{text}: {err}");
        }
    }

    #[test]
    fn scenarios_name_the_bad_step() {
        let text = "name = \"x\"\nnodes = 3\n[[step]]\nrun = \"add\"\n[[step]]\nrun = \"fly\"\n";
        let err = format!("{:#}", Scenario::parse(text).unwrap_err());
        assert!(err.contains("step 2"), "{err}");
        let err = format!(
            "{:#}",
            Scenario::parse("name = \"x\"\nnodes = 3\nstep = []\ncolour = 1\n").unwrap_err()
        );
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn the_shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let s = Scenario::read(&path).unwrap();
                assert!((3..=10).contains(&s.nodes), "{}", path.display());
                assert!(!s.steps.is_empty(), "{}", path.display());
                n += 1;
            }
        }
        assert!(n >= 8, "the seven scenarios and the demo ship");
    }
}
