//! `ringkv handoff --peer ADDR`: the transfers a peer is running, with
//! progress bars; `ringkv keys --peer ADDR`: the keys a peer holds itself.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use ringkv_ring::{Token, TokenRange};

use super::cluster::PeerArgs;
use super::table::{Align, Table};
use crate::rpc::api::{HandoffReply, Request, TransferOp, VersionsReply};
use crate::rpc::client;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `ringkv handoff`.
#[derive(Debug, Args)]
pub(crate) struct HandoffArgs {
    #[command(flatten)]
    pub(crate) peer: PeerArgs,
    /// Keep showing progress bars until the peer holds its ring fully.
    #[arg(long, conflicts_with_all = ["pause", "resume", "cancel"])]
    pub(crate) watch: bool,
    /// Pause the peer's transfers: no new page is asked for until
    /// --resume (what was pulled stays; an operator's pause survives no
    /// restart). Needs the cluster key.
    #[arg(long, conflicts_with_all = ["resume", "cancel"])]
    pub(crate) pause: bool,
    /// Resume paused transfers from their checkpoints.
    #[arg(long, conflicts_with = "cancel")]
    pub(crate) resume: bool,
    /// Stop the transfer of RANGE (as listed, `(START, END]`) from its
    /// source now; it goes on from its checkpoint with the next holder.
    #[arg(long, value_name = "RANGE")]
    pub(crate) cancel: Option<String>,
}

/// Arguments of `ringkv keys`.
#[derive(Debug, Args)]
pub(crate) struct KeysArgs {
    #[command(flatten)]
    pub(crate) peer: PeerArgs,
    /// Print only how many keys (and tombstones) the peer holds.
    #[arg(long)]
    pub(crate) count: bool,
}

fn summary(r: &HandoffReply) -> String {
    let state = match (&r.ring, &r.ready) {
        (Some(ring), Some(ready)) if ring == ready => format!("ready (holds ring {ring})"),
        (Some(ring), _) => format!(
            "receiving: {} range(s) to go for ring {ring}",
            r.pending_ranges
        ),
        (None, _) => "no ring yet".to_owned(),
    };
    let removed = if r.removed.is_empty() {
        String::new()
    } else {
        format!(
            "removed from the ring by an operator (removenode), still dead: {}\n",
            r.removed.join(", ")
        )
    };
    let paused = if r.paused {
        "transfers paused by an operator (ringkv handoff --resume)\n"
    } else {
        ""
    };
    let repair = r
        .repair
        .as_ref()
        .map(|row| super::repair::describe(row) + "\n")
        .unwrap_or_default();
    format!(
        "{state}\nmoved: {} keys, {} in {} range(s); anti-entropy repairs: {}; dropped: {} record(s) in {} range(s)\n{paused}{removed}{repair}",
        r.keys_moved,
        human_bytes(r.bytes_moved),
        r.ranges_completed,
        r.repairs,
        r.records_dropped,
        r.ranges_dropped,
    )
}

fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b} B")
    }
}

pub(crate) async fn handoff(args: &HandoffArgs) -> Result<String> {
    let op = match (&args.cancel, args.pause, args.resume) {
        (Some(range), _, _) => Some(TransferOp::Cancel(super::repair::parse_range(range)?)),
        (None, true, _) => Some(TransferOp::Pause),
        (None, false, true) => Some(TransferOp::Resume),
        (None, false, false) => None,
    };
    let key = args.peer.key.require()?;
    let request = op.map_or(Request::Handoff, Request::Transfers);
    let reply: HandoffReply = client::request(args.peer.peer, &key, &request, TIMEOUT).await?;
    if args.peer.json {
        return Ok(serde_json::to_string_pretty(&reply)? + "\n");
    }
    if !args.watch {
        let mut out = summary(&reply);
        if !reply.transfers.is_empty() {
            let mut t = Table::new(&[
                ("range", Align::Left),
                ("from", Align::Left),
                ("keys", Align::Right),
                ("bytes", Align::Right),
                ("rate", Align::Right),
            ]);
            for tr in &reply.transfers {
                t.row(vec![
                    tr.range.clone(),
                    tr.source.clone(),
                    format!("{}/{}", tr.records, tr.total_records),
                    human_bytes(tr.bytes),
                    format!(
                        "{}/s",
                        human_bytes((tr.bytes as f64 / tr.elapsed.max(0.001)) as u64)
                    ),
                ]);
            }
            out.push('\n');
            out.push_str(&t.render());
        }
        return Ok(out);
    }
    let multi = MultiProgress::new();
    let head = multi.add(ProgressBar::new_spinner());
    let style = ProgressStyle::with_template("{prefix:>24} {bar:30} {pos:>8}/{len:8} keys {msg}")?;
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let mut reply = reply;
    loop {
        head.set_message(summary(&reply).replace('\n', "  "));
        let live: Vec<String> = reply.transfers.iter().map(|t| t.range.clone()).collect();
        for t in &reply.transfers {
            let bar = bars.entry(t.range.clone()).or_insert_with(|| {
                let b = multi.add(ProgressBar::new(t.total_records.max(1)));
                b.set_style(style.clone());
                b.set_prefix(format!("{} <- {}", short_range(&t.range), t.source));
                b
            });
            bar.set_length(t.total_records.max(t.records).max(1));
            bar.set_position(t.records);
            let rate = t.bytes as f64 / t.elapsed.max(0.001);
            let left = t.total_records.saturating_sub(t.records) as f64;
            let keys_per_s = t.records as f64 / t.elapsed.max(0.001);
            let eta = if keys_per_s > 0.0 {
                format!("ETA {:.0} s", left / keys_per_s)
            } else {
                "ETA ?".to_owned()
            };
            bar.set_message(format!(
                "{} {}/s {eta}",
                human_bytes(t.bytes),
                human_bytes(rate as u64)
            ));
        }
        bars.retain(|range, bar| {
            let keep = live.contains(range);
            if !keep {
                bar.finish_and_clear();
            }
            keep
        });
        let done = reply.ring.is_some() && reply.ring == reply.ready && reply.transfers.is_empty();
        if done {
            head.finish_with_message(summary(&reply).replace('\n', "  "));
            return Ok(String::new());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        reply = client::request(args.peer.peer, &key, &Request::Handoff, TIMEOUT).await?;
    }
}

fn short_range(range: &str) -> String {
    range.chars().take(24).collect()
}

/// Every key the peer holds itself (not coordinated: its own store), one
/// per line, in ring order; tombstones included.
pub(crate) async fn keys(args: &KeysArgs) -> Result<String> {
    let key = args.peer.key.require()?;
    let full = TokenRange::new(Token(0), Token(0));
    let mut after: Option<Vec<u8>> = None;
    let mut out = String::new();
    let mut n = 0u64;
    loop {
        let page: VersionsReply = client::request(
            args.peer.peer,
            &key,
            &Request::RangeVersions {
                range: full,
                after: after.clone(),
                max: 65_536,
                any: true,
            },
            TIMEOUT,
        )
        .await?;
        n += page.versions.len() as u64;
        if !args.count {
            for (k, _) in &page.versions {
                out.push_str(&String::from_utf8_lossy(k));
                out.push('\n');
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if args.count {
        return Ok(format!("{n}\n"));
    }
    Ok(out)
}
