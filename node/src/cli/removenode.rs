//! `ringkv removenode NODE --peer ADDR`: drop a dead member from every
//! live member's ring now, instead of after `--dead-grace` (like
//! `nodetool removenode`). Each member does it only if it sees NODE dead;
//! the table says what each did. Needs the cluster key (an operator).

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use super::keyring::TargetArgs;
use super::table::{Align, Table};
use crate::rpc::api::{RemoveNodeReply, Request};
use crate::rpc::client;

/// Longest the request takes: the peer asks every member, 10 s each, side
/// by side.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Arguments of `ringkv removenode`.
#[derive(Debug, Args)]
pub(crate) struct RemoveNodeArgs {
    /// The dead member: its name, or 8 to 32 hex digits of its id (as
    /// `ringkv members` shows them).
    pub(crate) node: String,
    #[command(flatten)]
    pub(crate) target: TargetArgs,
}

/// Runs `ringkv removenode`.
///
/// # Errors
/// The peer refused (NODE unknown, ambiguous, alive or suspect there, or
/// the peer itself: nothing changed anywhere; exit 4), or some member
/// refused or did not answer (its row says why; exit 1).
pub(crate) async fn run(args: &RemoveNodeArgs) -> Result<String> {
    let key = args.target.key.require()?;
    let req = Request::RemoveNode {
        node: args.node.clone(),
        cluster: !args.target.only_this_peer,
    };
    let reply: RemoveNodeReply = client::request(args.target.peer, &key, &req, TIMEOUT).await?;
    let out = if args.target.json {
        format!("{}\n", serde_json::to_string_pretty(&reply.members)?)
    } else {
        render(&reply)
    };
    let failed: Vec<&str> = reply
        .members
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| r.name.as_str())
        .collect();
    if failed.is_empty() {
        Ok(out)
    } else {
        bail!(
            "{out}not removed on {}: their rings still hold {} until its dead grace ends there",
            failed.join(", "),
            reply.name
        )
    }
}

/// One row per member: name, address, what it did.
fn render(reply: &RemoveNodeReply) -> String {
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("ADDR", Align::Left),
        ("RESULT", Align::Left),
    ]);
    for r in &reply.members {
        let result = match (&r.error, r.changed) {
            (Some(e), _) => format!("error: {e}"),
            (None, Some(true)) => "removed".to_owned(),
            (None, _) => "ok (out of its ring already)".to_owned(),
        };
        t.row(vec![r.name.clone(), r.addr.clone(), result]);
    }
    format!(
        "removing {} ({}) from the ring:\n{}",
        reply.name,
        reply.id.get(..8).unwrap_or(&reply.id),
        t.render()
    )
}
