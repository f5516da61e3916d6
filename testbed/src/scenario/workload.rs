//! The workload steps: `load start` runs the scenario's load in a thread
//! (its history goes to the cluster directory), `load stop` ends it, and
//! `check` checks the history. IO: the history file, the store's peers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, Context as _, Result};

use crate::check;
use crate::commands::run_load;
use crate::history::History;
use crate::load::{KvClient, LoadConfig, LoadSummary};

use super::run::Ctx;

/// A running workload.
pub(super) struct RunningLoad {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) handle: JoinHandle<Result<LoadSummary>>,
}

impl<C: KvClient> Ctx<C> {
    pub(super) fn load_start(&mut self) -> Result<String> {
        if self.load.is_some() {
            bail!("the workload is already running");
        }
        let path = self.dir.join("history.jsonl");
        // A run's choices replay from its seed; RINGKV_SEED picks another.
        let seed = std::env::var("RINGKV_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(self.spec.seed);
        let cfg = LoadConfig {
            rate: self.spec.rate,
            duration: None,
            keys: self.spec.keys,
            read_ratio: self.spec.read_ratio,
            seed,
            ..LoadConfig::default()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (key, live, out, stop2) = (
            self.key.clone(),
            self.live.clone(),
            path.clone(),
            stop.clone(),
        );
        let handle =
            std::thread::spawn(move || run_load::<C>(&key, live, &cfg, stop2, &out, false));
        self.load = Some(RunningLoad { stop, handle });
        self.history = Some(path);
        Ok(format!(
            "{} ops/s over {} keys, seed {seed}",
            self.spec.rate, self.spec.keys
        ))
    }

    pub(super) fn load_stop(&mut self) -> Result<String> {
        let running = self.load.take().context("no workload is running")?;
        running.stop.store(true, Ordering::Relaxed);
        let summary = running
            .handle
            .join()
            .map_err(|_| anyhow::anyhow!("the workload panicked"))??;
        let note = summary.render().trim_end().to_owned();
        self.load_summary = Some(summary);
        Ok(note)
    }

    pub(super) fn check(&mut self) -> Result<String> {
        let mut note = String::new();
        if self.load.is_some() {
            note = self.load_stop()? + "; ";
        }
        let path = self
            .history
            .clone()
            .context("no workload ran: nothing to check")?;
        let report = check::check(&History::read(&path)?);
        let [po, pf, pu] = report.puts;
        note.push_str(&format!(
            "{po} acknowledged writes ({pf} failed, {pu} unknown), {} keys verified; lost writes {}, stale reads {}, phantom reads {}, failed write reads {}",
            report.keys_verified,
            report.lost_writes(),
            report.count(check::Kind::StaleRead),
            report.count(check::Kind::PhantomRead),
            report.count(check::Kind::FailedWriteRead)
        ));
        let clean = report.is_clean();
        self.check = Some(report);
        if !clean {
            bail!("{note}");
        }
        Ok(note)
    }
}
