//! `ringkv removenode NODE`: drop a dead member from the ring now, as
//! Cassandra's `nodetool removenode` and Consul's `force-leave` do,
//! instead of waiting out its `--dead-grace`. The ring then no longer
//! counts it, so its ranges are pulled by their new replicas at once.
//!
//! Who decides: every member itself. A membership statement about the dead
//! member can only come from it (its own signature) or from a member that
//! suspected it, so an operator's request cannot declare anyone dead;
//! it only shortens a grace that each member's own view already started.
//! A member refuses when it sees the target alive or suspect (a partition,
//! a restart): then nothing changes there. A removed member that comes
//! back alive is a member again; one that is seen dead again after that
//! gets a new grace. The removal lasts until the peer restarts (a peer
//! that restarts counts the grace of a member it finds dead from then).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use ringkv_gossip::runner::View;
use ringkv_gossip::{Member, NodeId, State};
use tracing::info;

use crate::rpc::api::{ErrorKind, RemoveNodeReply, RemoveNodeRow, Request, RequestError};
use crate::shared::Kv;

/// The removals, shared by the request that makes them and the task that
/// builds the ring, which it wakes.
#[derive(Debug, Default)]
pub(crate) struct Removals {
    set: std::sync::Mutex<crate::ring_view::Removed>,
    changed: tokio::sync::Notify,
}

impl Removals {
    /// Removes `id` from the ring now; `false` if it was removed already.
    pub(crate) fn remove(&self, id: NodeId) -> bool {
        let added = self.lock().insert(id);
        self.changed.notify_one();
        added
    }

    /// The members removed and still dead, as far as the ring builder saw.
    pub(crate) fn current(&self) -> crate::ring_view::Removed {
        self.lock().clone()
    }

    /// Runs `f` on the set (the ring builder's update).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut crate::ring_view::Removed) -> T) -> T {
        f(&mut self.lock())
    }

    /// Resolves once [`Removals::remove`] was called after the last wait.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, crate::ring_view::Removed> {
        self.set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How long a member is given to answer.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(10);

/// Fewest hex digits of a node id an operator may give.
pub(crate) const ID_PREFIX_MIN: usize = 8;

/// The member of `view` that `node` names: its name, or its id (8 to 32
/// hex digits, as `ringkv members` shows it).
///
/// # Errors
/// No member, or more than one, answers to it (`Refused`).
fn find<'a>(view: &'a View, node: &str) -> Result<&'a Member, RequestError> {
    let refused = |m: String| RequestError::new(ErrorKind::Refused, m);
    let text = node.trim();
    let by_name: Vec<&Member> = view
        .members
        .iter()
        .chain(std::iter::once(&view.me))
        .filter(|m| m.meta.name == text)
        .collect();
    let by_id: Vec<&Member> = if (ID_PREFIX_MIN..=32).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_hexdigit())
    {
        let prefix = text.to_ascii_lowercase();
        view.members
            .iter()
            .chain(std::iter::once(&view.me))
            .filter(|m| m.id.to_string().starts_with(&prefix))
            .collect()
    } else {
        Vec::new()
    };
    let mut found = by_name;
    for m in by_id {
        if !found.iter().any(|f| f.id == m.id) {
            found.push(m);
        }
    }
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(refused(format!(
            "no member named {text:?} or with an id starting so (give its name or at least {ID_PREFIX_MIN} hex digits of its id, as `ringkv members` shows them)"
        ))),
        many => Err(refused(format!(
            "{text:?} names {} members ({}): give more digits of the id",
            many.len(),
            many.iter()
                .map(|m| format!("{} {}", m.meta.name, m.id.short()))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Whether this peer may drop `target` from its ring: only a member it
/// sees dead. `Ok(false)`: nothing to do (it left, so it is out already).
///
/// # Errors
/// It is this peer, or alive or suspect here (`Refused`).
fn check(view: &View, target: &Member) -> Result<bool, RequestError> {
    let refused = |m: String| RequestError::new(ErrorKind::Refused, m);
    if target.id == view.me.id {
        return Err(refused(format!(
            "{} is the peer asked: a peer cannot remove itself (stop it and ask another peer, or let it leave with SIGTERM)",
            target.meta.name
        )));
    }
    match target.state {
        State::Dead => Ok(true),
        State::Left => Ok(false),
        State::Alive | State::Suspect => Err(refused(format!(
            "{} is {} here: removenode is for dead members (stop it first, or let it leave with SIGTERM)",
            target.meta.name,
            if target.state == State::Alive { "alive" } else { "suspect" },
        ))),
    }
}

/// Removes `node` from this peer's ring, as its row.
fn apply_here(kv: &Kv, view: &View, node: &str) -> RemoveNodeRow {
    let me = &view.me.meta;
    let mut row = RemoveNodeRow {
        name: me.name.clone(),
        addr: me.addr.to_string(),
        changed: None,
        error: None,
    };
    match find(view, node).and_then(|t| check(view, t).map(|dead| (t, dead))) {
        Err(e) => row.error = Some(e.to_string()),
        Ok((_, false)) => row.changed = Some(false),
        Ok((target, true)) => {
            let changed = kv.removals.remove(target.id);
            if changed {
                info!(member = %target.meta.name, id = %target.id.short(), "removed from the ring by an operator (removenode)");
            }
            row.changed = Some(changed);
        }
    }
    row
}

/// Answers [`Request::RemoveNode`]. Without `cluster`, this peer alone.
/// With it, this peer first (refused here: nothing is asked of anyone),
/// then every other live member, sent the full id this peer resolved.
///
/// # Errors
/// `node` names no member or several, or a member this peer does not see
/// dead (`Refused`); nothing changed anywhere.
pub(crate) async fn handle(
    kv: &Arc<Kv>,
    view: &View,
    node: &str,
    cluster: bool,
) -> Result<RemoveNodeReply> {
    let target = find(view, node)?;
    check(view, target)?;
    let id: NodeId = target.id;
    let mut members = vec![apply_here(kv, view, &id.to_string())];
    if cluster {
        let others: Vec<(String, SocketAddr)> = view
            .members
            .iter()
            .filter(|m| m.id != id && matches!(m.state, State::Alive | State::Suspect))
            .map(|m| (m.meta.name.clone(), m.meta.addr))
            .collect();
        members.extend(fan_out(kv, &others, &id).await);
    }
    Ok(RemoveNodeReply {
        name: target.meta.name.clone(),
        id: id.to_string(),
        members,
    })
}

/// Asks each of `members` to remove `id` on itself, side by side; one that
/// fails or does not answer gets a row with the error.
async fn fan_out(
    kv: &Arc<Kv>,
    members: &[(String, SocketAddr)],
    id: &NodeId,
) -> Vec<RemoveNodeRow> {
    let req = Request::RemoveNode {
        node: id.to_string(),
        cluster: false,
    };
    crate::fanout::ask_all::<RemoveNodeReply>(kv, members, &req, MEMBER_TIMEOUT)
        .await
        .into_iter()
        .map(|(name, addr, answer)| {
            match answer
                .and_then(|mut r| r.members.pop().ok_or_else(|| "an empty answer".to_owned()))
            {
                Ok(mut row) => {
                    row.name = name;
                    row
                }
                Err(error) => RemoveNodeRow {
                    name,
                    addr: addr.to_string(),
                    changed: None,
                    error: Some(error),
                },
            }
        })
        .collect()
}
