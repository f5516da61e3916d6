//! How a peer stops: the signals that ask it to (SIGTERM, Ctrl-C), and the
//! graceful leave: hand this peer's ranges over, tell the cluster it
//! leaves, stop the gossip runner and the background tasks, keep the last
//! incarnation on disk.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context as _, Result};
use ringkv_gossip::runner::Command;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::Peer;

/// How long a graceful leave waits for the news to spread.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the gossip runner and the background tasks get to end.
const TASKS_TIMEOUT: Duration = Duration::from_secs(2);

/// SIGTERM or Ctrl-C, listened for from the start of `ringkv node`, so a
/// signal during start-up still ends in a graceful leave rather than exit
/// 143.
#[derive(Debug)]
pub struct ShutdownSignal {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    /// Starts listening for the signals.
    ///
    /// # Errors
    /// When the signal handler cannot be installed.
    pub fn listen() -> Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot listen for SIGTERM")?,
        })
    }

    /// Until the next SIGTERM or Ctrl-C.
    pub async fn wait(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// What a stopped peer leaves behind.
#[derive(Debug)]
pub struct Stopped {
    /// Tasks that had not ended within their time (the gossip runner is
    /// `"gossip runner"`); empty when all did.
    pub unfinished: Vec<&'static str>,
    /// Whether live members announced every range this peer held before
    /// it left; false after `--leave-timeout` or a second signal.
    pub handed_over: bool,
}

impl Peer {
    /// Leaves the cluster gracefully: waits for the others to take over
    /// this peer's ranges (unless `hurry` completes first), announces the
    /// leave, stops the gossip runner and every background task, and keeps
    /// the incarnation on disk.
    pub async fn shutdown(self, hurry: impl Future<Output = ()>) -> Stopped {
        info!("shutting down: handing this peer's ranges over (a second signal skips this)");
        let handed_over = tokio::select! {
            done = self.handoff.leave() => done,
            () = hurry => {
                warn!("second signal: leaving without waiting for the handoff");
                false
            }
        };
        info!("shutting down: leaving the cluster");
        let (done_tx, done_rx) = oneshot::channel();
        let leave = Command::Leave {
            timeout: LEAVE_TIMEOUT,
            done: done_tx,
        };
        if self.handle.commands.send(leave).await.is_ok() {
            let _ = tokio::time::timeout(LEAVE_TIMEOUT + Duration::from_secs(1), done_rx).await;
        }
        let _ = self.runner_stop.send(());
        let mut unfinished = Vec::new();
        if tokio::time::timeout(TASKS_TIMEOUT, self.runner_task)
            .await
            .is_err()
        {
            unfinished.push("gossip runner");
        }
        unfinished.extend(self.tasks.stop(TASKS_TIMEOUT).await);
        // The incarnation the protocol last moved to, on disk before exit.
        let last = self.handle.view.borrow().me.incarnation;
        if let Err(e) = self.dir.store_incarnation(last) {
            warn!(err = %e, "cannot store the incarnation");
        }
        if handed_over {
            println!("ringkv: node {} left the cluster", self.addrs.name);
        } else {
            println!(
                "ringkv: node {} left the cluster with its handoff incomplete: live members do not hold all of its ranges",
                self.addrs.name
            );
        }
        Stopped {
            unfinished,
            handed_over,
        }
    }
}
