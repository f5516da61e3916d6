//! `ringkv bench`: a load generator against a live cluster. Workers share
//! one [`Client`] (one QUIC connection per peer, a stream per request,
//! redialled if it breaks), spread requests over
//! the peers, and record every latency; the report gives ops/s and
//! p50/p99/p999 per operation.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::table::{Align, Table};
use crate::keyargs::KeyArgs;
use crate::rpc::api::{Consistency, GetReply, PutReply, Request, VALUE_MAX};
use crate::rpc::client::{CallError, Client};

/// Longest the first connection to each peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one request may take (a peer works on one for at most 30 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Arguments of `ringkv bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// A peer to send requests to.
    #[arg(long)]
    peer: SocketAddr,
    /// More peers to spread requests over, comma separated.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<SocketAddr>,
    /// Operations in total.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    ops: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Bytes per value written.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Share of gets among operations, 0 to 1.
    #[arg(long, default_value_t = 0.5)]
    read_ratio: f64,
    /// Distinct keys used.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// Consistency of every request.
    #[arg(long, value_enum, default_value_t = Consistency::Quorum)]
    consistency: Consistency,
    /// Use keys 0, 1, 2, ... in order instead of random ones (to load a
    /// cluster with exactly --keys keys).
    #[arg(long)]
    sequential: bool,
    /// Seed of the key and operation choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Deterministic values (derived from the key with blake3), and every
    /// get checked against them: a key not found or holding another value
    /// is counted, and the run fails if any is. Load with it first, then
    /// read with it (e.g. while peers join, leave or die).
    #[arg(long)]
    verify: bool,
    /// Run for this long instead of --ops operations (e.g. 30s).
    #[arg(long, value_parser = crate::keyargs::parse_duration)]
    duration: Option<Duration>,
    #[command(flatten)]
    key: KeyArgs,
}

#[derive(Default)]
struct Samples {
    puts: Vec<u32>,
    gets: Vec<u32>,
    errors: u64,
    last_error: Option<String>,
    /// Gets (with --verify) that found nothing.
    missing: u64,
    /// Gets (with --verify) that found another value.
    wrong: u64,
    first_bad: Option<String>,
}

/// The value --verify writes for `key`.
fn expected_value(key: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size];
    blake3::Hasher::new()
        .update(b"ringkv bench value")
        .update(key)
        .finalize_xof()
        .fill(&mut out);
    out
}

/// What a get returned, for --verify.
enum Outcome {
    Done,
    Read(Option<Vec<u8>>),
}

async fn one(client: &Client, peer: SocketAddr, req: &Request) -> Result<Outcome, CallError> {
    match req {
        Request::Get { .. } => client
            .call::<GetReply>(peer, req, CALL_TIMEOUT)
            .await
            .map(|r| Outcome::Read(r.value)),
        _ => client
            .call::<PutReply>(peer, req, CALL_TIMEOUT)
            .await
            .map(|_| Outcome::Done),
    }
}

/// Runs the benchmark: checks the arguments, dials every peer, runs the
/// workers, and reports.
pub(crate) async fn bench(args: &BenchArgs) -> Result<String> {
    if !(0.0..=1.0).contains(&args.read_ratio) {
        bail!("--read-ratio must be between 0 and 1");
    }
    if args.value_size > VALUE_MAX {
        bail!("--value-size is over the {VALUE_MAX}-byte limit");
    }
    let (client, targets) = connect(args).await?;
    let shared = Arc::new(Shared {
        client,
        targets,
        next: AtomicU64::new(0),
        bar: progress_bar(args),
    });
    let started = Instant::now();
    let plan = Plan::new(args, started);
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.concurrency {
        let seed = args.seed.wrapping_mul(1_000_003).wrapping_add(w);
        workers.spawn(worker(shared.clone(), plan, seed));
    }
    let mut all = Samples::default();
    while let Some(joined) = workers.join_next().await {
        all.merge(joined.context("a worker failed")?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    shared.bar.finish_and_clear();
    shared.client.close();
    let text = report(args, &shared.targets, elapsed, &mut all);
    if args.verify && all.missing + all.wrong > 0 {
        bail!(
            "{text}verify failed: {} get(s) found nothing, {} found another value (first: {})",
            all.missing,
            all.wrong,
            all.first_bad.unwrap_or_default()
        );
    }
    Ok(text)
}

/// The client, and the peers to spread requests over (--peer first), each
/// dialled once to fail early.
async fn connect(args: &BenchArgs) -> Result<(Client, Vec<SocketAddr>)> {
    let key = args.key.require()?;
    let client = Client::for_cluster(&key, args.peer)?;
    let mut targets = vec![args.peer];
    targets.extend(args.peers.iter().copied().filter(|p| *p != args.peer));
    for t in &targets {
        client
            .connect(*t, CONNECT_TIMEOUT)
            .await
            .map_err(|e| anyhow::anyhow!("peer {t}: {e}"))?;
    }
    Ok((client, targets))
}

fn progress_bar(args: &BenchArgs) -> indicatif::ProgressBar {
    if args.quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(args.ops);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} ops  {per_sec}  eta {eta}")
            .expect("a valid template"),
    );
    bar
}

/// What the workers share.
struct Shared {
    client: Client,
    targets: Vec<SocketAddr>,
    /// The number of the next operation.
    next: AtomicU64,
    bar: indicatif::ProgressBar,
}

/// What every worker does, from the arguments.
#[derive(Clone, Copy)]
struct Plan {
    ops: u64,
    keys: u64,
    read_ratio: f64,
    value_size: usize,
    consistency: Consistency,
    sequential: bool,
    verify: bool,
    /// With --duration, when to stop.
    until: Option<Instant>,
}

impl Plan {
    fn new(args: &BenchArgs, started: Instant) -> Self {
        Self {
            ops: args.ops,
            keys: args.keys,
            read_ratio: args.read_ratio,
            value_size: args.value_size,
            consistency: args.consistency,
            sequential: args.sequential,
            verify: args.verify,
            until: args.duration.map(|d| started + d),
        }
    }

    /// Whether operation `i` is past the end of the run.
    fn over(&self, i: u64) -> bool {
        match self.until {
            Some(end) => Instant::now() >= end,
            None => i >= self.ops,
        }
    }

    /// Operation `i`'s key number: in order, or drawn from `rng`.
    fn key(&self, i: u64, rng: &mut ChaCha8Rng) -> u64 {
        if self.sequential {
            i % self.keys
        } else {
            rng.random_range(0..self.keys)
        }
    }

    /// A get or a put of key `k` (drawn from `rng`); a put's value is
    /// `value`, refilled.
    fn request(&self, k: Vec<u8>, rng: &mut ChaCha8Rng, value: &mut Vec<u8>) -> Request {
        let consistency = self.consistency;
        if rng.random_bool(self.read_ratio) {
            return Request::Get {
                key: k,
                consistency,
            };
        }
        if self.verify {
            *value = expected_value(&k, self.value_size);
        } else {
            rng.fill_bytes(value);
        }
        Request::Put {
            key: k,
            value: Some(value.clone()),
            consistency,
        }
    }
}

/// One worker: takes operation numbers until the run is over, and records
/// each latency and outcome.
async fn worker(shared: Arc<Shared>, plan: Plan, seed: u64) -> Samples {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut s = Samples::default();
    let mut value = vec![0u8; plan.value_size];
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if plan.over(i) {
            break;
        }
        let n = plan.key(i, &mut rng);
        let peer = shared.targets[usize::try_from(i).unwrap_or(0) % shared.targets.len()];
        let req = plan.request(format!("bench:{n}").into_bytes(), &mut rng, &mut value);
        let t = Instant::now();
        let outcome = one(&shared.client, peer, &req).await;
        let micros = u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX);
        let check = plan.verify.then_some((n, plan.value_size));
        s.record(outcome, micros, check);
        shared.bar.inc(1);
    }
    s
}

impl Samples {
    /// One operation's latency and outcome; with `check` (--verify: key
    /// number and value size), a get's value is compared with the one
    /// written.
    fn record(
        &mut self,
        outcome: Result<Outcome, CallError>,
        micros: u32,
        check: Option<(u64, usize)>,
    ) {
        match outcome {
            Ok(Outcome::Read(found)) => {
                self.gets.push(micros);
                if let Some((n, size)) = check {
                    self.verify(&format!("bench:{n}"), size, found);
                }
            }
            Ok(Outcome::Done) => self.puts.push(micros),
            Err(e) => {
                self.errors += 1;
                self.last_error = Some(format!("{e:#}"));
            }
        }
    }

    fn verify(&mut self, key: &str, size: usize, found: Option<Vec<u8>>) {
        match found {
            None => {
                self.missing += 1;
                self.first_bad.get_or_insert(format!("{key}: not found"));
            }
            Some(v) if v != expected_value(key.as_bytes(), size) => {
                self.wrong += 1;
                self.first_bad
                    .get_or_insert(format!("{key}: another value"));
            }
            Some(_) => {}
        }
    }

    /// Adds a worker's samples (the first bad get of the first worker to
    /// have one, the last error of the last).
    fn merge(&mut self, s: Self) {
        self.puts.extend(s.puts);
        self.gets.extend(s.gets);
        self.errors += s.errors;
        self.missing += s.missing;
        self.wrong += s.wrong;
        self.first_bad = self.first_bad.take().or(s.first_bad);
        self.last_error = s.last_error.or(self.last_error.take());
    }
}

fn report(args: &BenchArgs, targets: &[SocketAddr], elapsed: f64, s: &mut Samples) -> String {
    let pct = |v: &mut Vec<u32>, q: f64| -> String {
        if v.is_empty() {
            return "-".into();
        }
        v.sort_unstable();
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        format!("{:.2} ms", f64::from(v[i]) / 1000.0)
    };
    let mut out = format!(
        "{} ops against {} peer(s), {} in flight, {}-byte values, {:.0}% gets, consistency {:?}, {:.2} s\n\n",
        args.ops,
        targets.len(),
        args.concurrency,
        args.value_size,
        args.read_ratio * 100.0,
        args.consistency,
        elapsed
    );
    let mut t = Table::new(&[
        ("op", Align::Left),
        ("count", Align::Right),
        ("ops/s", Align::Right),
        ("p50", Align::Right),
        ("p99", Align::Right),
        ("p999", Align::Right),
    ]);
    for (name, v) in [("put", &mut s.puts), ("get", &mut s.gets)] {
        let count = v.len();
        t.row(vec![
            name.into(),
            count.to_string(),
            format!("{:.0}", count as f64 / elapsed),
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 0.999),
        ]);
    }
    out.push_str(&t.render());
    let total = s.puts.len() + s.gets.len();
    let _ = writeln!(
        out,
        "total {:.0} ops/s; errors {}",
        total as f64 / elapsed,
        s.errors
    );
    if args.verify {
        let _ = writeln!(
            out,
            "verified gets: {} found nothing, {} found another value",
            s.missing, s.wrong
        );
    }
    if let Some(e) = &s.last_error {
        let _ = writeln!(out, "last error: {e}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_counts_missing_and_wrong_gets_and_keeps_the_first() {
        let mut s = Samples::default();
        let good = expected_value(b"bench:1", 8);
        s.record(Ok(Outcome::Read(Some(good))), 10, Some((1, 8)));
        s.record(Ok(Outcome::Read(None)), 20, Some((2, 8)));
        s.record(Ok(Outcome::Read(Some(vec![0; 8]))), 30, Some((3, 8)));
        s.record(Ok(Outcome::Done), 40, Some((4, 8)));
        assert_eq!(s.gets, [10, 20, 30]);
        assert_eq!(s.puts, [40]);
        assert_eq!((s.missing, s.wrong, s.errors), (1, 1, 0));
        assert_eq!(s.first_bad.as_deref(), Some("bench:2: not found"));
        // Without --verify, a missing key is just a get.
        s.record(Ok(Outcome::Read(None)), 50, None);
        assert_eq!(s.missing, 1);
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_first_bad_and_the_last_error() {
        let mut all = Samples::default();
        for (bad, error) in [(Some("a"), Some("x")), (Some("b"), None), (None, Some("y"))] {
            let s = Samples {
                puts: vec![1],
                errors: 1,
                first_bad: bad.map(String::from),
                last_error: error.map(String::from),
                ..Samples::default()
            };
            all.merge(s);
        }
        assert_eq!((all.puts.len(), all.errors), (3, 3));
        assert_eq!(all.first_bad.as_deref(), Some("a"));
        assert_eq!(all.last_error.as_deref(), Some("y"));
    }
}
