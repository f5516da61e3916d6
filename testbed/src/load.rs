//! The workload: puts and gets at a fixed rate through random live peers,
//! every operation recorded in a history ([`crate::history`]), then a final
//! read of every key written. Each put writes a value unique in the history
//! (`KEY#ID`), so the checker can tell which write a read saw.
//!
//! The store client is a trait, [`KvClient`], implemented by the `ringkv`
//! binary over its QUIC client (the testbed never imports the node crate).
//! IO: the network through the client, the history file.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use crate::history::{Op, OpKind, Outcome, Writer};

/// What a peer answered to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvReply {
    /// What the client learnt.
    pub outcome: Outcome,
    /// A get's value (`None`: absent, or the request did not succeed).
    pub value: Option<Vec<u8>>,
    /// The version written or read, as the peer prints it.
    pub version: Option<String>,
    /// Replicas that acknowledged (put) or answered (get).
    pub replicas: Vec<String>,
    /// The error, when not ok.
    pub error: Option<String>,
}

impl KvReply {
    /// A definite failure: nothing was applied.
    pub fn fail(error: impl Into<String>) -> Self {
        Self::not_ok(Outcome::Fail, error)
    }

    /// An unknown outcome: the request may have been applied.
    pub fn unknown(error: impl Into<String>) -> Self {
        Self::not_ok(Outcome::Unknown, error)
    }

    fn not_ok(outcome: Outcome, error: impl Into<String>) -> Self {
        Self {
            outcome,
            value: None,
            version: None,
            replicas: Vec::new(),
            error: Some(error.into()),
        }
    }
}

/// A client of the store, as the workload needs it. Implementations should
/// reuse connections: the workload runs at up to thousands of requests per
/// second.
pub trait KvClient: Clone + Send + Sync + 'static {
    /// A client for the cluster with this key. Called inside a tokio
    /// runtime.
    ///
    /// # Errors
    /// The key is malformed, or no client endpoint can be opened.
    fn connect(cluster_key: &str) -> Result<Self>;

    /// Stores `value` under `key` through `peer` (quorum).
    fn put(
        &self,
        peer: SocketAddr,
        key: Vec<u8>,
        value: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = KvReply> + Send;

    /// Reads `key` through `peer` (quorum).
    fn get(
        &self,
        peer: SocketAddr,
        key: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = KvReply> + Send;

    /// Forgets any connection to `peer`: the workload calls it when the
    /// peer leaves or rejoins the live set, so requests to a restarted peer
    /// do not go down the dead process's connection. The default does
    /// nothing.
    fn reset(&self, peer: SocketAddr) {
        let _ = peer;
    }
}

/// The workload's shape.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Operations started per second.
    pub rate: u32,
    /// How long to run (`None`: until stopped).
    pub duration: Option<Duration>,
    /// Keys `tb:0` .. `tb:{keys-1}`, chosen uniformly.
    pub keys: u64,
    /// Share of gets, 0 to 1.
    pub read_ratio: f64,
    /// Requests in flight at most; an operation due while at the limit is
    /// skipped (and counted), so a stalled cluster cannot pile up work.
    pub in_flight_max: usize,
    /// Per-request timeout; after it a put's outcome is unknown.
    pub timeout: Duration,
    /// Seed of the key, operation and peer choices.
    pub seed: u64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            rate: 1000,
            duration: Some(Duration::from_secs(30)),
            keys: 10_000,
            read_ratio: 0.5,
            in_flight_max: 512,
            timeout: Duration::from_secs(5),
            seed: 1,
        }
    }
}

/// The peers requests may go to; whoever runs the workload keeps it
/// current (killed peers out, restarted peers in).
pub type LivePeers = Arc<Mutex<Vec<SocketAddr>>>;

/// Counts of one workload run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadSummary {
    /// Operations started during the timed phase.
    pub started: u64,
    /// By outcome: ok, fail, unknown (timed phase).
    pub outcomes: [u64; 3],
    /// Operations skipped because too many were in flight.
    pub skipped: u64,
    /// Distinct keys with at least one put.
    pub keys_written: usize,
    /// Final reads that succeeded / keys read in the final pass.
    pub final_ok: usize,
    /// Keys whose final read never succeeded (after retries).
    pub final_unread: usize,
    /// Wall time of the timed phase.
    pub elapsed: Duration,
}

impl LoadSummary {
    /// One line for people.
    pub fn render(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        format!(
            "{} ops in {:.1} s ({:.0} ops/s): {} ok, {} failed, {} unknown, {} skipped (too many in flight); {} keys written, final read of {} ({} unreadable)\n",
            self.started,
            secs,
            self.started as f64 / secs,
            self.outcomes[0],
            self.outcomes[1],
            self.outcomes[2],
            self.skipped,
            self.keys_written,
            self.final_ok,
            self.final_unread
        )
    }
}

/// What every operation task shares.
struct Shared<C> {
    client: C,
    history: Mutex<Writer>,
    clock: Instant,
    next_id: AtomicU64,
    outcomes: [AtomicU64; 3],
    written: Mutex<BTreeSet<u64>>,
    timeout: Duration,
}

impl<C: KvClient> Shared<C> {
    fn micros(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    async fn op(&self, kind: OpKind, k: u64, peer: SocketAddr, final_read: bool) -> Outcome {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let key = format!("tb:{k}");
        let value = (kind == OpKind::Put).then(|| format!("{key}#{id}"));
        let start_us = self.micros();
        let reply = match &value {
            Some(v) => {
                self.written.lock().expect("not poisoned").insert(k);
                let r = self
                    .client
                    .put(
                        peer,
                        key.clone().into_bytes(),
                        v.clone().into_bytes(),
                        self.timeout,
                    )
                    .await;
                KvReply {
                    value: value.clone().map(String::into_bytes),
                    ..r
                }
            }
            None => {
                self.client
                    .get(peer, key.clone().into_bytes(), self.timeout)
                    .await
            }
        };
        let end_us = self.micros();
        let outcome = reply.outcome;
        let op = Op {
            id,
            op: kind,
            key,
            value: reply
                .value
                .map(|v| String::from_utf8_lossy(&v).into_owned()),
            version: reply.version,
            outcome,
            start_us,
            end_us,
            peer: Some(peer.to_string()),
            replicas: reply.replicas,
            final_read,
            error: reply.error,
        };
        if let Err(e) = self.history.lock().expect("not poisoned").op(op) {
            eprintln!("cannot record an operation: {e:#}");
        }
        outcome
    }
}

fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::Ok => 0,
        Outcome::Fail => 1,
        Outcome::Unknown => 2,
    }
}

fn pick(rng: &mut ChaCha8Rng, peers: &LivePeers) -> Option<SocketAddr> {
    let peers = peers.lock().expect("not poisoned");
    (!peers.is_empty()).then(|| peers[rng.random_range(0..peers.len())])
}

/// Runs the workload: the timed phase until `cfg.duration` passes or
/// `stop` is set, then the final read of every key written. `clock` is the
/// zero of the history's times. Progress goes to stderr when `progress`.
///
/// # Errors
/// The history cannot be written.
pub async fn run<C: KvClient>(
    client: C,
    peers: LivePeers,
    cfg: &LoadConfig,
    stop: Arc<AtomicBool>,
    history: Writer,
    clock: Instant,
    progress: bool,
) -> Result<LoadSummary> {
    let shared = Arc::new(Shared {
        client,
        history: Mutex::new(history),
        clock,
        next_id: AtomicU64::new(1),
        outcomes: Default::default(),
        written: Mutex::new(BTreeSet::new()),
        timeout: cfg.timeout,
    });
    let started = Instant::now();
    let (issued, skipped) = timed_phase(&shared, &peers, cfg, &stop, progress).await;
    let elapsed = started.elapsed();
    let outcomes = [0, 1, 2].map(|i| shared.outcomes[i].load(Ordering::Relaxed));
    let keys: Vec<u64> = shared
        .written
        .lock()
        .expect("not poisoned")
        .iter()
        .copied()
        .collect();
    if progress {
        eprintln!("final read of {} keys", keys.len());
    }
    let (final_ok, final_unread) = final_pass(&shared, &peers, &keys, cfg.seed).await;
    shared.history.lock().expect("not poisoned").flush()?;
    Ok(LoadSummary {
        started: issued - skipped,
        outcomes,
        skipped,
        keys_written: keys.len(),
        final_ok,
        final_unread,
        elapsed,
    })
}

fn peer_set(peers: &LivePeers) -> BTreeSet<SocketAddr> {
    peers
        .lock()
        .expect("not poisoned")
        .iter()
        .copied()
        .collect()
}

/// Starts operations at the configured rate until the duration passes or
/// `stop` is set, then waits for those in flight; (due, skipped).
async fn timed_phase<C: KvClient>(
    shared: &Arc<Shared<C>>,
    peers: &LivePeers,
    cfg: &LoadConfig,
    stop: &AtomicBool,
    progress: bool,
) -> (u64, u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(cfg.in_flight_max));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    let (mut issued, mut skipped, mut last_report) = (0u64, 0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut known = peer_set(peers);
    loop {
        tick.tick().await;
        let now = peer_set(peers);
        for changed in known.symmetric_difference(&now) {
            shared.client.reset(*changed);
        }
        known = now;
        let elapsed = started.elapsed();
        if stop.load(Ordering::Relaxed) || cfg.duration.is_some_and(|d| elapsed >= d) {
            break;
        }
        let due = (elapsed.as_secs_f64() * f64::from(cfg.rate)) as u64;
        while issued < due {
            issued += 1;
            let (Ok(permit), Some(peer)) =
                (in_flight.clone().try_acquire_owned(), pick(&mut rng, peers))
            else {
                skipped += 1;
                continue;
            };
            let k = rng.random_range(0..cfg.keys.max(1));
            let kind = if rng.random_bool(cfg.read_ratio.clamp(0.0, 1.0)) {
                OpKind::Get
            } else {
                OpKind::Put
            };
            let shared = shared.clone();
            tasks.spawn(async move {
                let o = shared.op(kind, k, peer, false).await;
                shared.outcomes[outcome_index(o)].fetch_add(1, Ordering::Relaxed);
                drop(permit);
            });
        }
        while tasks.try_join_next().is_some() {}
        if progress && elapsed.as_secs() > last_report {
            last_report = elapsed.as_secs();
            let o = [0, 1, 2].map(|i| shared.outcomes[i].load(Ordering::Relaxed));
            eprintln!(
                "{:4} s  {} ops: {} ok, {} failed, {} unknown, {} skipped",
                last_report, issued, o[0], o[1], o[2], skipped
            );
        }
    }
    while tasks.join_next().await.is_some() {}
    (issued, skipped)
}

/// Reads every key once (retrying through other peers, at most 5 tries);
/// (keys read, keys never read).
async fn final_pass<C: KvClient>(
    shared: &Arc<Shared<C>>,
    peers: &LivePeers,
    keys: &[u64],
    seed: u64,
) -> (usize, usize) {
    const TRIES: usize = 5;
    const PARALLEL: usize = 64;
    let queue = Arc::new(Mutex::new(keys.to_vec()));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..PARALLEL {
        let (shared, peers, queue) = (shared.clone(), peers.clone(), queue.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_0000 ^ w as u64);
        workers.spawn(async move {
            let (mut ok, mut unread) = (0, 0);
            loop {
                let Some(k) = queue.lock().expect("not poisoned").pop() else {
                    break;
                };
                let mut done = false;
                for _ in 0..TRIES {
                    let Some(peer) = pick(&mut rng, &peers) else {
                        break;
                    };
                    if shared.op(OpKind::Get, k, peer, true).await == Outcome::Ok {
                        done = true;
                        break;
                    }
                }
                if done {
                    ok += 1
                } else {
                    unread += 1
                }
            }
            (ok, unread)
        });
    }
    let (mut ok, mut unread) = (0, 0);
    while let Some(r) = workers.join_next().await {
        let (a, b) = r.expect("a final-read worker does not panic");
        ok += a;
        unread += b;
    }
    (ok, unread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check;
    use crate::history::History;
    use std::collections::HashMap;

    /// A single in-memory register per key with versions from a counter:
    /// linearizable, so a history against it must check clean.
    /// The version counter, and each key's value and version.
    type Registers = (u64, HashMap<Vec<u8>, (Vec<u8>, String)>);

    #[derive(Clone, Default)]
    struct MemKv {
        data: Arc<Mutex<Registers>>,
        lose_writes: bool,
    }

    impl KvClient for MemKv {
        fn connect(_: &str) -> Result<Self> {
            Ok(Self::default())
        }

        async fn put(&self, _: SocketAddr, key: Vec<u8>, value: Vec<u8>, _: Duration) -> KvReply {
            let mut d = self.data.lock().unwrap();
            d.0 += 1;
            let version = format!("{}.0@aa/1", d.0);
            if !self.lose_writes {
                d.1.insert(key, (value, version.clone()));
            }
            KvReply {
                outcome: Outcome::Ok,
                value: None,
                version: Some(version),
                replicas: vec!["p1".into(), "p2".into()],
                error: None,
            }
        }

        async fn get(&self, _: SocketAddr, key: Vec<u8>, _: Duration) -> KvReply {
            let d = self.data.lock().unwrap();
            let found = d.1.get(&key).cloned();
            KvReply {
                outcome: Outcome::Ok,
                version: found.as_ref().map(|f| f.1.clone()),
                value: found.map(|f| f.0),
                replicas: vec!["p1".into(), "p2".into()],
                error: None,
            }
        }
    }

    fn run_against(kv: MemKv) -> (LoadSummary, History) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cfg = LoadConfig {
            rate: 2000,
            duration: Some(Duration::from_millis(400)),
            keys: 50,
            ..LoadConfig::default()
        };
        let peers: LivePeers = Arc::new(Mutex::new(vec!["127.0.0.1:1".parse().unwrap()]));
        let summary = rt
            .block_on(run(
                kv,
                peers,
                &cfg,
                Arc::new(AtomicBool::new(false)),
                Writer::create(&path, 0).unwrap(),
                Instant::now(),
                false,
            ))
            .unwrap();
        (summary, History::read(&path).unwrap())
    }

    #[test]
    fn a_workload_against_a_correct_store_checks_clean() {
        let (summary, history) = run_against(MemKv::default());
        assert!(summary.started > 100, "{summary:?}");
        assert!(summary.keys_written > 10, "{summary:?}");
        assert_eq!(summary.final_ok, summary.keys_written);
        let values: BTreeSet<&str> = history
            .ops
            .iter()
            .filter(|o| o.op == OpKind::Put)
            .filter_map(|o| o.value.as_deref())
            .collect();
        let puts = history.ops.iter().filter(|o| o.op == OpKind::Put).count();
        assert_eq!(values.len(), puts, "every written value is unique");
        let report = check(&history);
        assert!(report.is_clean(), "{}", report.render(5));
        assert_eq!(report.keys_verified, summary.keys_written);
    }

    #[test]
    fn a_workload_against_a_store_that_drops_writes_fails_the_check() {
        let kv = MemKv {
            lose_writes: true,
            ..MemKv::default()
        };
        let (_, history) = run_against(kv);
        let report = check(&history);
        assert!(report.lost_writes() > 0, "{}", report.render(5));
    }
}
