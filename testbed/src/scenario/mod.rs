//! Scenarios: a cluster, an optional workload, and a timed list of steps
//! (the testbed's commands plus waits and assertions), read from TOML.
//! The runner is also the engine of `ringkv testbed demo`.
//!
//! ```toml
//! name = "kill-restart"
//! nodes = 5
//! node_flags = ["--dead-grace", "0s"]
//! [load]
//! rate = 200
//! keys = 1000
//! [[step]]
//! run = "load start"
//! [[step]]
//! at = "3s"              # not before 3 s after the cluster is up
//! run = "kill p3"
//! [[step]]
//! run = "expect p3 dead within 20s"
//! ```
//!
//! Step language: `kill|stop|cont|leave|restart NODE`, `add`,
//! `partition A,B / C,D`, `heal`, `loss NODE 10%`, `delay NODE 50ms`,
//! `wait 2s`, `load start`, `load stop`, `expect converged within 30s`,
//! `expect NODE alive|suspect|dead|left [from A,B] within 15s` (as every
//! other running peer, or A and B, see it), and `check` (stops the workload, checks its history,
//! fails on any violation). The first failed step ends the run; the cluster
//! is always stopped at the end. IO: processes, HTTP, files.
//!
//! The parts: `spec` what a scenario is and how its text parses,
//! `run` bringing the cluster up and driving the steps, `workload` the
//! `load` and `check` steps, `expect` the `expect` steps (polling the
//! peers until they agree or the bound passes), `sample` the membership
//! timeline taken meanwhile, and `report` what a run found, for people.

mod expect;
mod report;
mod run;
mod sample;
mod spec;
mod workload;

pub use report::{Event, RunReport};
pub use run::{run, RunOptions};
pub use sample::{changes, Sample};
pub use spec::{LoadSpec, Scenario, Step, StepSpec};
