//! What a scenario run found: one `Event` per step and the `RunReport`,
//! rendered as text for people (the HTML page is `crate::report`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::check;
use crate::load::LoadSummary;

use super::sample::Sample;

/// What one step did.
#[derive(Clone, Debug)]
pub struct Event {
    /// When it started, since the cluster came up.
    pub at: Duration,
    /// The step.
    pub step: String,
    /// How long it took.
    pub took: Duration,
    /// What it found, for people.
    pub note: String,
    /// Whether it succeeded.
    pub ok: bool,
}

/// The result of a scenario run.
#[derive(Debug)]
pub struct RunReport {
    /// The scenario's name.
    pub name: String,
    /// The cluster directory.
    pub dir: PathBuf,
    /// How long `up` took (start and converge).
    pub up_took: Duration,
    /// Every step run.
    pub events: Vec<Event>,
    /// The first failure, if any.
    pub failure: Option<String>,
    /// The workload's counts, if one ran.
    pub load: Option<LoadSummary>,
    /// The checker's report, if `check` ran.
    pub check: Option<check::Report>,
    /// Membership samples, every 250 ms.
    pub timeline: Vec<Sample>,
    /// The history file, if a workload ran.
    pub history: Option<PathBuf>,
    /// Wall-clock ms when the cluster came up (the zero of every time).
    pub started_unix_ms: u64,
}

impl RunReport {
    /// Whether every step passed.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    /// The report for people.
    pub fn render(&self) -> String {
        use fmt::Write as _;
        let mut out = format!(
            "scenario {}: cluster up in {:.1} s\n",
            self.name,
            self.up_took.as_secs_f64()
        );
        for e in &self.events {
            let _ = writeln!(
                out,
                "{:7.2} s  {:<36} {:6.2} s  {}{}",
                e.at.as_secs_f64(),
                e.step,
                e.took.as_secs_f64(),
                if e.ok { "" } else { "FAILED: " },
                e.note
            );
        }
        if let Some(l) = &self.load {
            out.push_str(&l.render());
        }
        if let Some(c) = &self.check {
            out.push_str(&c.render(10));
        }
        let _ = writeln!(
            out,
            "{}",
            match &self.failure {
                None => format!("scenario {} passed", self.name),
                Some(f) => format!("scenario {} FAILED: {f}", self.name),
            }
        );
        out
    }
}
