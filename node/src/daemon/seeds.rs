//! The seed names' resolver and the task that re-resolves them: on each
//! join attempt and again after a partition, as [`SeedPlan`] decides,
//! handing every address found to gossip ([`Command::Seeds`]). IO: DNS
//! lookups (through [`Resolve`]; the system's on blocking threads),
//! each bounded.

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use ringkv_gossip::runner::{Command, View};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::seeds::{merge, SeedName, SeedPlan, SeedRetry, Sighting};

/// Longest one lookup may take before its name counts as unresolved for
/// this attempt (glibc's default is 5s per server and try).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a lookup returns: every address, or why there is none.
pub(crate) type Lookup<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>,
>;

/// Turns a seed name into addresses. A test feeds changing answers
/// through its own.
pub(crate) trait Resolve: Send + Sync + std::fmt::Debug + 'static {
    /// Every address `name` has now (all A and AAAA records, with its
    /// port).
    ///
    /// # Errors
    /// A name that does not resolve (now).
    fn resolve(&self, name: &SeedName) -> Lookup<'_>;
}

/// The system resolver (getaddrinfo: /etc/hosts, then DNS) on a blocking
/// thread, asked afresh each time: glibc caches nothing without nscd, so
/// a seed that moved is found at its new address.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemResolver;

impl SystemResolver {
    /// The lookup itself (blocking).
    pub(crate) fn resolve_now(name: &SeedName) -> std::io::Result<Vec<SocketAddr>> {
        Ok((name.host.as_str(), name.port).to_socket_addrs()?.collect())
    }
}

impl Resolve for SystemResolver {
    fn resolve(&self, name: &SeedName) -> Lookup<'_> {
        let name = name.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || Self::resolve_now(&name))
                .await
                .map_err(std::io::Error::other)?
        })
    }
}

/// Resolves every name, each bounded by [`LOOKUP_TIMEOUT`]; a name that
/// fails is logged and left out.
pub(crate) async fn resolve_all(
    resolver: &Arc<dyn Resolve>,
    names: &[SeedName],
) -> Vec<Vec<SocketAddr>> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match tokio::time::timeout(LOOKUP_TIMEOUT, resolver.resolve(name)).await {
            Ok(Ok(addrs)) => {
                debug!(seed = %name, addrs = ?addrs, "seed resolved");
                out.push(addrs);
            }
            Ok(Err(e)) => warn!(seed = %name, err = %e, "cannot resolve seed; retrying later"),
            Err(_) => warn!(seed = %name, timeout = ?LOOKUP_TIMEOUT, "seed lookup timed out"),
        }
    }
    out
}

/// Everything the re-resolving task needs.
#[derive(Debug)]
pub(crate) struct SeedWatch<R> {
    /// The `--join` names.
    pub(crate) names: Vec<SeedName>,
    /// Addresses this peer knew at start (its data dir's peers): always
    /// handed over with the resolved ones.
    pub(crate) known: Vec<SocketAddr>,
    /// This peer's advertised address (never its own seed).
    pub(crate) me: SocketAddr,
    /// What the names resolved to at start.
    pub(crate) first: Vec<SocketAddr>,
    /// The backoff.
    pub(crate) retry: SeedRetry,
    /// The jitter's source.
    pub(crate) rng: R,
}

impl<R: RngCore + Send + 'static> SeedWatch<R> {
    /// Runs until `seeds` closes (the runner stopped) or the view's
    /// sender is dropped: on each attempt the plan calls for, resolves
    /// every name and sends what it found (with the known peers) to
    /// `seeds`. `sight` reads the view against the last addresses.
    pub(crate) async fn run<T: Send + Sync + 'static>(
        mut self,
        resolver: Arc<dyn Resolve>,
        mut view: watch::Receiver<T>,
        sight: impl Fn(&T, &[SocketAddr]) -> Sighting + Send,
        seeds: mpsc::Sender<Vec<SocketAddr>>,
    ) {
        let now = || tokio::time::Instant::now().into_std();
        let mut plan = SeedPlan::new(self.retry, now(), &mut self.rng);
        let mut last = self.first.clone();
        loop {
            let sighting = sight(&view.borrow_and_update(), &last);
            plan.handle_view(now(), sighting);
            if plan.handle_timeout(now(), &mut self.rng) {
                let resolved = resolve_all(&resolver, &self.names).await;
                let found = merge(&resolved, self.me);
                if found != last {
                    info!(seeds = ?found, attempt = plan.attempts(), "seed names resolve to new addresses");
                }
                last = found;
                let mut all = last.clone();
                all.extend(self.known.iter().filter(|a| !last.contains(a)));
                if !all.is_empty() && seeds.send(all).await.is_err() {
                    return;
                }
                continue;
            }
            let wake = plan.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                changed = view.changed() => if changed.is_err() { return },
                () = sleep_until(wake) => {}
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The plan's reading of a gossip view, given the seeds' last addresses.
pub(crate) fn sighting(view: &Arc<View>, seeds: &[SocketAddr]) -> Sighting {
    let others: Vec<SocketAddr> = view.live().skip(1).map(|m| m.meta.addr).collect();
    Sighting {
        joined: view.joined,
        live_others: others.len(),
        seeds_known: !seeds.is_empty(),
        seed_live: seeds.iter().any(|s| others.contains(s)),
    }
}

/// Forwards the task's seed lists to the gossip runner as commands.
pub(crate) async fn forward(
    mut rx: mpsc::Receiver<Vec<SocketAddr>>,
    commands: mpsc::Sender<Command>,
) {
    while let Some(seeds) = rx.recv().await {
        if commands.send(Command::Seeds(seeds)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
