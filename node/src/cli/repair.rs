//! `ringkv repair --peer ADDR [--range R | --key K]`: anti-entropy now on
//! one peer (like `nodetool repair` on one node), with a progress bar
//! until it is done. Needs the cluster key (an operator).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ringkv_ring::{Token, TokenRange};

use crate::keyargs::KeyArgs;
use crate::rpc::api::{HandoffReply, RepairRow, Request};
use crate::rpc::client;

const TIMEOUT: Duration = Duration::from_secs(10);
/// How often the progress is asked for.
const POLL: Duration = Duration::from_millis(250);

/// Arguments of `ringkv repair`.
#[derive(Debug, Args)]
pub(crate) struct RepairArgs {
    /// The peer to repair: any peer's --listen (or --advertise) address.
    #[arg(long, env = "RINGKV_PEER")]
    pub(crate) peer: SocketAddr,
    /// Only this peer's ranges overlapping this one, written as `ringkv
    /// handoff` shows ranges: `(START, END]` with 16 hex digits each.
    #[arg(long, conflicts_with = "key")]
    pub(crate) range: Option<String>,
    /// Only the range holding this key.
    #[arg(long)]
    pub(crate) key: Option<String>,
    /// Start it and return at once (its progress is in `ringkv handoff`).
    #[arg(long)]
    pub(crate) no_wait: bool,
    /// Print the final progress as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) access: KeyArgs,
}

/// Parses `(START, END]` (16 hex digits each; spaces optional).
///
/// # Errors
/// Anything else.
pub(crate) fn parse_range(text: &str) -> Result<TokenRange> {
    let bad = || {
        format!("range {text:?}: expected (START, END] with 16 hex digits each, as `ringkv handoff` shows ranges")
    };
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(']'))
        .with_context(bad)?;
    let (s, e) = inner.split_once(',').with_context(bad)?;
    let token = |t: &str| -> Result<Token> {
        let t = t.trim();
        if t.len() != 16 {
            bail!(bad());
        }
        Ok(Token(u64::from_str_radix(t, 16).with_context(bad)?))
    };
    Ok(TokenRange {
        start: token(s)?,
        end: token(e)?,
    })
}

/// One line: ranges, comparisons, records, failures.
pub(crate) fn describe(r: &RepairRow) -> String {
    format!(
        "repair {}: {} of {} range(s), {} comparison(s), {} differed, {} record(s) pulled, {} failed, {:.1} s",
        if r.running { "running" } else { "done" },
        r.ranges_done,
        r.ranges_total,
        r.compared,
        r.differed,
        r.records,
        r.failed,
        r.elapsed
    )
}

/// Runs `ringkv repair`.
///
/// # Errors
/// Bad input (nothing is sent), the peer refused (a run in progress, still
/// receiving its ranges, nothing to repair: exit 4), or some comparison
/// failed (exit 1, with the reasons).
pub(crate) async fn run(args: &RepairArgs) -> Result<String> {
    let range = args.range.as_deref().map(parse_range).transpose()?;
    let key = args.access.require()?;
    let req = Request::Repair {
        range,
        key: args.key.as_ref().map(|k| k.as_bytes().to_vec()),
    };
    let started: RepairRow = client::request(args.peer, &key, &req, TIMEOUT).await?;
    if args.no_wait {
        return Ok(format!(
            "repair started on {}: {} range(s); follow it with `ringkv handoff --peer {}`\n",
            args.peer, started.ranges_total, args.peer
        ));
    }
    let bar = ProgressBar::new(started.ranges_total.max(1));
    bar.set_style(ProgressStyle::with_template(
        "repair {bar:30} {pos}/{len} ranges {msg}",
    )?);
    let last = loop {
        let h: HandoffReply = client::request(args.peer, &key, &Request::Handoff, TIMEOUT).await?;
        let Some(r) = h.repair else {
            bail!("the peer reports no repair (did it restart?)");
        };
        bar.set_position(r.ranges_done);
        bar.set_message(format!(
            "{} record(s) pulled, {} failed",
            r.records, r.failed
        ));
        if !r.running {
            break r;
        }
        tokio::time::sleep(POLL).await;
    };
    bar.finish_and_clear();
    let out = if args.json {
        serde_json::to_string_pretty(&last)? + "\n"
    } else {
        describe(&last) + "\n"
    };
    if last.failed > 0 {
        bail!("{out}{}", last.failures.join("\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_parses_as_handoff_shows_it_and_bad_ones_say_why() {
        let r = parse_range("(00000000000000ff, 0000000000000100]").expect("parses");
        assert_eq!((r.start, r.end), (Token(255), Token(256)));
        assert_eq!(parse_range(&r.to_string()).expect("round trip"), r);
        for bad in [
            "",
            "(1, 2]",
            "[0000000000000000, 0000000000000001]",
            "(00000000000000zz, 0000000000000001]",
        ] {
            let e = parse_range(bad).expect_err(bad).to_string();
            assert!(e.contains("expected (START, END]"), "{bad}: {e}");
        }
    }
}
