//! `ringkv bench`: a load generator against a live cluster. Workers share
//! one QUIC connection per peer (a stream per request), spread requests over
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
use ringkv_gossip::transport::tls::{client_config, SERVER_NAME};
use ringkv_gossip::NodeIdentity;

use super::table::{Align, Table};
use crate::keyargs::KeyArgs;
use crate::rpc::api::{Consistency, GetReply, PutReply, Reply, Request, REPLY_MAX, VALUE_MAX};
use crate::rpc::codec;

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

async fn one(conn: &quinn::Connection, req: &Request) -> Result<Outcome> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&codec::encode(req)).await?;
    send.finish()?;
    let bytes = recv.read_to_end(REPLY_MAX).await?;
    match req {
        Request::Get { .. } => match codec::decode::<Reply<GetReply>>(&bytes, REPLY_MAX)? {
            Reply::Ok(r) => Ok(Outcome::Read(r.value)),
            Reply::Err { message, .. } => bail!("{message}"),
        },
        _ => match codec::decode::<Reply<PutReply>>(&bytes, REPLY_MAX)? {
            Reply::Ok(_) => Ok(Outcome::Done),
            Reply::Err { message, .. } => bail!("{message}"),
        },
    }
}

/// Runs the benchmark.
pub(crate) async fn bench(args: &BenchArgs) -> Result<String> {
    if !(0.0..=1.0).contains(&args.read_ratio) {
        bail!("--read-ratio must be between 0 and 1");
    }
    if args.value_size > VALUE_MAX {
        bail!("--value-size is over the {VALUE_MAX}-byte limit");
    }
    let key = args.key.require()?;
    let identity = NodeIdentity::generate()?;
    let config = client_config(&key, &identity)?;
    let endpoint = quinn::Endpoint::client("0.0.0.0:0".parse()?)?;
    let mut targets = vec![args.peer];
    targets.extend(args.peers.iter().copied().filter(|p| *p != args.peer));
    let mut conns = Vec::new();
    for t in &targets {
        let connecting = endpoint.connect_with(config.clone(), *t, SERVER_NAME)?;
        let conn = tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .with_context(|| format!("peer {t} did not answer"))??;
        conns.push(conn);
    }
    let conns = Arc::new(conns);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(args.ops);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} ops  {per_sec}  eta {eta}",
            )
            .expect("a valid template"),
        );
        bar
    };
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.concurrency {
        let (conns, next, done, bar) = (conns.clone(), next.clone(), done.clone(), bar.clone());
        let (ops, keys, ratio, size, consistency) = (
            args.ops,
            args.keys,
            args.read_ratio,
            args.value_size,
            args.consistency,
        );
        let sequential = args.sequential;
        let verify = args.verify;
        let until = args.duration.map(|d| started + d);
        let seed = args.seed.wrapping_mul(1_000_003).wrapping_add(w);
        workers.spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut s = Samples::default();
            let mut value = vec![0u8; size];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let over = match until {
                    Some(end) => Instant::now() >= end,
                    None => i >= ops,
                };
                if over {
                    break;
                }
                let n = if sequential {
                    i % keys
                } else {
                    rng.random_range(0..keys)
                };
                let k = format!("bench:{n}").into_bytes();
                let conn = &conns[usize::try_from(i).unwrap_or(0) % conns.len()];
                let read = rng.random_bool(ratio);
                let req = if read {
                    Request::Get {
                        key: k,
                        consistency,
                    }
                } else {
                    if verify {
                        value = expected_value(&k, size);
                    } else {
                        rng.fill_bytes(&mut value);
                    }
                    Request::Put {
                        key: k,
                        value: Some(value.clone()),
                        consistency,
                    }
                };
                let t = Instant::now();
                let outcome = one(conn, &req).await;
                let micros = u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX);
                match outcome {
                    Ok(Outcome::Read(found)) => {
                        s.gets.push(micros);
                        if verify {
                            let key = format!("bench:{n}");
                            match found {
                                None => {
                                    s.missing += 1;
                                    s.first_bad.get_or_insert(format!("{key}: not found"));
                                }
                                Some(v) if v != expected_value(key.as_bytes(), size) => {
                                    s.wrong += 1;
                                    s.first_bad.get_or_insert(format!("{key}: another value"));
                                }
                                Some(_) => {}
                            }
                        }
                    }
                    Ok(Outcome::Done) => s.puts.push(micros),
                    Err(e) => {
                        s.errors += 1;
                        s.last_error = Some(format!("{e:#}"));
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
                bar.inc(1);
            }
            s
        });
    }
    let mut all = Samples::default();
    while let Some(joined) = workers.join_next().await {
        let s = joined.context("a worker failed")?;
        all.puts.extend(s.puts);
        all.gets.extend(s.gets);
        all.errors += s.errors;
        all.missing += s.missing;
        all.wrong += s.wrong;
        all.first_bad = all.first_bad.or(s.first_bad);
        all.last_error = s.last_error.or(all.last_error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    endpoint.close(0u32.into(), b"done");
    let text = report(args, &targets, elapsed, &mut all);
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
