//! The peer's keyring at run time (`ringkv keyring`, issue 14 item 3):
//! the rules are gossip's [`Keyring`]; this module applies an operation
//! to this peer (data dir first, then the live TLS material, so the file
//! and the handshakes never disagree for long and a failed write changes
//! nothing), and fans an operation out to every live member, as Serf's
//! `keys` command does. IO: the data dir, the network.
//!
//! Only peers may ask (the request server refuses client credentials);
//! an operator asks with the cluster key.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Result;
use ringkv_gossip::runner::View;
use ringkv_gossip::transport::keyring::{Change, Fingerprint, Keyring};
use ringkv_gossip::transport::live::TlsKeys;
use ringkv_gossip::{ClusterKey, State};
use tracing::info;

use crate::datadir::DataDir;
use crate::rpc::api::{ErrorKind, KeyringOp, KeyringReply, KeyringRow, Request, RequestError};
use crate::shared::Kv;

/// How long a member asked by the fan-out has to answer.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(10);

/// This peer's keyring, its file and its TLS material.
#[derive(Debug)]
pub(crate) struct PeerKeyring {
    dir: DataDir,
    tls: Arc<TlsKeys>,
    keyring: Mutex<Keyring>,
}

/// A checked operation.
#[derive(Debug, Clone)]
enum Op {
    List,
    Install(ClusterKey),
    Use(Fingerprint),
    Remove(Fingerprint),
}

impl Op {
    /// # Errors
    /// A malformed key or fingerprint (`Refused`): nothing is done.
    fn parse(op: &KeyringOp) -> Result<Self, RequestError> {
        let refused =
            |e: &dyn std::fmt::Display| RequestError::new(ErrorKind::Refused, e.to_string());
        Ok(match op {
            KeyringOp::List => Self::List,
            KeyringOp::Install(key) => {
                let key = ClusterKey::parse(&key.0).map_err(|e| refused(&e))?;
                if key.looks_weak() {
                    return Err(RequestError::new(
                        ErrorKind::Refused,
                        format!(
                            "refusing a key that is not random (fewer than {} distinct bytes \
                             of 32): generate one with `ringkv keygen`",
                            ClusterKey::DISTINCT_BYTES_MIN
                        ),
                    ));
                }
                Self::Install(key)
            }
            KeyringOp::Use(fp) => Self::Use(Fingerprint::parse(fp).map_err(|e| refused(&e))?),
            KeyringOp::Remove(fp) => Self::Remove(Fingerprint::parse(fp).map_err(|e| refused(&e))?),
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Self::List => "list",
            Self::Install(_) => "install",
            Self::Use(_) => "use",
            Self::Remove(_) => "remove",
        }
    }
}

impl PeerKeyring {
    pub(crate) fn new(dir: DataDir, tls: Arc<TlsKeys>, keyring: Keyring) -> Self {
        Self {
            dir,
            tls,
            keyring: Mutex::new(keyring),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keyring> {
        self.keyring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The keyring now.
    pub(crate) fn current(&self) -> Keyring {
        self.lock().clone()
    }

    /// Applies `op` here: the new keyring is stored, then handshakes
    /// follow it.
    ///
    /// # Errors
    /// The rules refuse it (`Refused`), or it cannot be stored; either
    /// way nothing changed.
    fn apply(&self, op: &Op) -> Result<(Change, Keyring)> {
        let mut keyring = self.lock();
        let mut next = keyring.clone();
        let refused = |e: ringkv_gossip::transport::keyring::KeyringError| {
            RequestError::new(ErrorKind::Refused, e.to_string())
        };
        let change = match op {
            Op::List => Change::Unchanged,
            Op::Install(key) => next.install(key.clone()).map_err(refused)?,
            Op::Use(fp) => next.use_key(fp).map_err(refused)?,
            Op::Remove(fp) => next.remove(fp).map_err(refused)?,
        };
        if change == Change::Changed {
            // Build the new TLS material first (the step that can fail),
            // then store the file, then switch (which cannot fail): the
            // data dir and the handshakes never disagree, whatever fails.
            let prepared = self.tls.prepare(&next)?;
            self.dir.store_keyring(&next)?;
            self.tls.commit(prepared);
            *keyring = next.clone();
            info!(
                op = op.name(),
                primary = %Fingerprint::of(next.primary()),
                keys = next.keys().len(),
                "keyring changed"
            );
        }
        Ok((change, next))
    }

    /// [`apply`](Self::apply) as this member's row.
    fn apply_row(&self, op: &Op, name: &str, addr: SocketAddr) -> KeyringRow {
        match self.apply(op) {
            Ok((change, keyring)) => {
                row(name, addr, Some(change == Change::Changed), None, &keyring)
            }
            Err(e) => KeyringRow {
                name: name.to_owned(),
                addr: addr.to_string(),
                changed: None,
                error: Some(format!("{e:#}")),
                primary: Some(
                    Fingerprint::of(self.current().primary())
                        .as_str()
                        .to_owned(),
                ),
                keys: full_fingerprints(&self.current()),
            },
        }
    }
}

/// [`PeerKeyring::apply_row`] on a blocking thread: storing the keyring
/// writes and fsyncs a file, which must not stall an async worker.
async fn apply_here(kv: &Arc<Kv>, op: &Op, name: &str, addr: SocketAddr) -> KeyringRow {
    let (kv, op, name) = (kv.clone(), op.clone(), name.to_owned());
    let failed_name = name.clone();
    tokio::task::spawn_blocking(move || kv.keyring.as_ref().map(|k| k.apply_row(&op, &name, addr)))
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| KeyringRow {
            name: failed_name,
            addr: addr.to_string(),
            changed: None,
            error: Some("the keyring change did not run (the peer is stopping)".to_owned()),
            primary: None,
            keys: Vec::new(),
        })
}

fn full_fingerprints(keyring: &Keyring) -> Vec<String> {
    keyring
        .fingerprints()
        .iter()
        .map(|f| f.as_str().to_owned())
        .collect()
}

fn row(
    name: &str,
    addr: SocketAddr,
    changed: Option<bool>,
    error: Option<String>,
    keyring: &Keyring,
) -> KeyringRow {
    KeyringRow {
        name: name.to_owned(),
        addr: addr.to_string(),
        changed,
        error,
        primary: Some(Fingerprint::of(keyring.primary()).as_str().to_owned()),
        keys: full_fingerprints(keyring),
    }
}

/// Answers [`Request::Keyring`]: `op` on this peer, or with `cluster` on
/// every live (alive or suspect) member, this one first. A `use` is first
/// checked on every live member: if any lacks the key or does not answer,
/// nothing is changed anywhere and the error names them. So is a
/// `remove`: if any still has the key as its primary or does not answer.
/// Members are sent the full fingerprint of the key this peer resolved.
///
/// # Errors
/// A malformed key or fingerprint, or a `use` some member cannot follow
/// (`Refused`); nothing changed.
pub(crate) async fn handle(
    kv: &Arc<Kv>,
    view: &View,
    op: KeyringOp,
    cluster: bool,
) -> Result<KeyringReply> {
    let Some(keyring) = &kv.keyring else {
        anyhow::bail!("this peer has no keyring");
    };
    let parsed = Op::parse(&op)?;
    let me = (&view.me.meta.name, view.me.meta.addr);
    if !cluster {
        return Ok(KeyringReply {
            members: vec![apply_here(kv, &parsed, me.0, me.1).await],
        });
    }
    let others: Vec<(String, SocketAddr)> = view
        .members
        .iter()
        .filter(|m| m.id != view.me.id && matches!(m.state, State::Alive | State::Suspect))
        .map(|m| (m.meta.name.clone(), m.meta.addr))
        .collect();
    // The members are sent the full fingerprint of the key this peer
    // holds, not the operator's prefix: each would resolve a short prefix
    // on its own, and a member holding another key with the same prefix
    // would switch to or remove the wrong one.
    let op = match (&parsed, &op) {
        (Op::Use(fp), _) | (Op::Remove(fp), _) => match keyring.current().key(fp) {
            Ok(key) => {
                let full = Fingerprint::of(key).as_str().to_owned();
                if matches!(parsed, Op::Use(_)) {
                    KeyringOp::Use(full)
                } else {
                    KeyringOp::Remove(full)
                }
            }
            Err(_) => op,
        },
        _ => op,
    };
    if let Op::Remove(fp) = &parsed {
        // Removing a key some live member still presents would cut that
        // member off (its `use` failed, or it was down): refuse, naming it.
        let mut presenting = Vec::new();
        for r in fan_out(kv, &others, KeyringOp::List).await {
            match (&r.error, &r.primary) {
                (Some(e), _) => presenting.push(format!("{} (did not answer: {e})", r.name)),
                (None, Some(p)) if p.starts_with(fp.as_str()) => {
                    presenting.push(format!("{} (it is its primary)", r.name));
                }
                _ => {}
            }
        }
        if !presenting.is_empty() {
            return Err(RequestError::new(
                ErrorKind::Refused,
                format!(
                    "key {fp} may still be in use, so no member removed it: {}; make every member use another key first (ringkv keyring use)",
                    presenting.join(", ")
                ),
            )
            .into());
        }
    }
    if let Op::Use(fp) = &parsed {
        let mut lacking = Vec::new();
        if keyring.current().key(fp).is_err() {
            lacking.push(format!("{} (not installed)", me.0));
        }
        for r in fan_out(kv, &others, KeyringOp::List).await {
            match (&r.error, r.keys.iter().any(|k| k.starts_with(fp.as_str()))) {
                (Some(e), _) => lacking.push(format!("{} (did not answer: {e})", r.name)),
                (None, false) => lacking.push(format!("{} (not installed)", r.name)),
                (None, true) => {}
            }
        }
        if !lacking.is_empty() {
            return Err(RequestError::new(
                ErrorKind::Refused,
                format!(
                    "key {fp} is not installed on every live member, so no member switched to it: {}; install it on them first (ringkv keyring install)",
                    lacking.join(", ")
                ),
            )
            .into());
        }
    }
    let mut members = vec![apply_here(kv, &parsed, me.0, me.1).await];
    members.extend(fan_out(kv, &others, op).await);
    Ok(KeyringReply { members })
}

/// `op` on each of `members` (this peer only, each), side by side; a
/// member that fails or does not answer gets a row with the error.
async fn fan_out(kv: &Arc<Kv>, members: &[(String, SocketAddr)], op: KeyringOp) -> Vec<KeyringRow> {
    let req = Request::Keyring { op, cluster: false };
    crate::fanout::ask_all::<KeyringReply>(kv, members, &req, MEMBER_TIMEOUT)
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
                Err(error) => KeyringRow {
                    name,
                    addr: addr.to_string(),
                    changed: None,
                    error: Some(error),
                    primary: None,
                    keys: Vec::new(),
                },
            }
        })
        .collect()
}
