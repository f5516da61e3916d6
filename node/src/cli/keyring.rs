//! `ringkv keyring list|install|use|remove`: the cluster keys every peer
//! holds, rotated without downtime as with Serf's `keys` command. Each
//! asks one peer (`--peer`), which does it on every live member and
//! reports each, or on itself only with `--only-this-peer`. Needs the
//! cluster key (an operator); client credentials are refused. Shows
//! fingerprints, never a key. IO: the network, the key file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use ringkv_gossip::transport::keyring::{Fingerprint, FINGERPRINT_MIN_DIGITS};

use super::table::{Align, Table};
use crate::keyargs::{read_keyring, KeyArgs};
use crate::rpc::api::{KeyringOp, KeyringReply, Request, SecretKey};
use crate::rpc::client;

/// Longest a keyring request takes: the peer asks every member (10 s each,
/// side by side) and, for `use`, asks them twice.
const KEYRING_TIMEOUT: Duration = Duration::from_secs(30);

/// `ringkv keyring ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum KeyringCommand {
    /// The fingerprints of the keys every member holds (primary first).
    List(TargetArgs),
    /// Install a key on every member: trusted from now on, not yet used.
    Install(InstallArgs),
    /// Make an installed key the primary on every member: new connections
    /// present certificates under it. Refused unless every live member
    /// holds it.
    Use(PickArgs),
    /// Remove a key from every member (never the primary): whoever holds
    /// only that key is refused from then on.
    Remove(PickArgs),
}

/// Which peer to ask, with which key, and whether only that one.
#[derive(Debug, Args)]
pub(crate) struct TargetArgs {
    /// Any peer's --listen (or --advertise) address.
    #[arg(long, env = "RINGKV_PEER")]
    pub(crate) peer: SocketAddr,
    /// Only the peer at --peer, not every live member.
    #[arg(long)]
    pub(crate) only_this_peer: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) key: KeyArgs,
}

/// Arguments of `ringkv keyring install`.
#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    /// A file holding the new key (from `ringkv keygen > FILE`, mode 0600).
    #[arg(long)]
    pub(crate) key_file: PathBuf,
    #[command(flatten)]
    pub(crate) target: TargetArgs,
}

/// Arguments of `ringkv keyring use` and `remove`: the key, by
/// fingerprint or by its file (read here; only its fingerprint is sent).
#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "which")]
pub(crate) struct PickArgs {
    /// The key's fingerprint, as `ringkv keyring list` shows it (8 to 32
    /// hex digits).
    #[arg(long, group = "which")]
    pub(crate) key_fingerprint: Option<String>,
    /// A file holding the key.
    #[arg(long, group = "which")]
    pub(crate) key_file: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) target: TargetArgs,
}

impl PickArgs {
    fn fingerprint(&self) -> Result<String> {
        match (&self.key_fingerprint, &self.key_file) {
            (Some(text), _) => Ok(Fingerprint::parse(text)?.as_str().to_owned()),
            (None, Some(path)) => {
                let keyring = read_keyring(path)?;
                if keyring.keys().len() != 1 {
                    bail!(
                        "{} holds {} keys: give a file with the one key, or --key-fingerprint",
                        path.display(),
                        keyring.keys().len()
                    );
                }
                Ok(Fingerprint::of(keyring.primary()).as_str().to_owned())
            }
            (None, None) => bail!("give --key-fingerprint or --key-file"),
        }
    }
}

/// Runs `ringkv keyring ...`.
///
/// # Errors
/// Bad input (nothing is sent), the peer refused, or a member failed
/// (the error still shows every member's row; exit status 4 for a
/// refusal, 1 when some member failed).
pub(crate) async fn run(cmd: &KeyringCommand) -> Result<String> {
    let (op, target) = match cmd {
        KeyringCommand::List(t) => (KeyringOp::List, t),
        KeyringCommand::Install(a) => {
            let keyring = read_keyring(&a.key_file)?;
            if keyring.keys().len() != 1 {
                bail!(
                    "{} holds {} keys: install takes a file with one key (ringkv keygen > FILE)",
                    a.key_file.display(),
                    keyring.keys().len()
                );
            }
            (
                KeyringOp::Install(SecretKey(keyring.primary().to_string())),
                &a.target,
            )
        }
        KeyringCommand::Use(p) => (KeyringOp::Use(p.fingerprint()?), &p.target),
        KeyringCommand::Remove(p) => (KeyringOp::Remove(p.fingerprint()?), &p.target),
    };
    let key = target.key.require()?;
    let req = Request::Keyring {
        op,
        cluster: !target.only_this_peer,
    };
    let reply: KeyringReply = client::request(target.peer, &key, &req, KEYRING_TIMEOUT).await?;
    let out = if target.json {
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
            "{out}failed on {}: nothing changed there (the others applied it); fix the cause and run it again",
            failed.join(", ")
        )
    }
}

/// The first digits of a fingerprint a peer sent (whatever it sent: a
/// multi-byte character where the cut falls shows the whole string rather
/// than panic).
fn short(fp: &str) -> &str {
    fp.get(..FINGERPRINT_MIN_DIGITS).unwrap_or(fp)
}

/// The members as a table: name, address, result, primary, keys.
fn render(reply: &KeyringReply) -> String {
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("ADDR", Align::Left),
        ("RESULT", Align::Left),
        ("PRIMARY", Align::Left),
        ("KEYS", Align::Left),
    ]);
    for r in &reply.members {
        let result = match (&r.error, r.changed) {
            (Some(e), _) => format!("error: {e}"),
            (None, Some(true)) => "changed".to_owned(),
            (None, _) => "ok".to_owned(),
        };
        t.row(vec![
            r.name.clone(),
            r.addr.clone(),
            result,
            r.primary.as_deref().map_or("-", short).to_owned(),
            r.keys
                .iter()
                .map(|k| short(k))
                .collect::<Vec<_>>()
                .join(","),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn a_fingerprint_a_peer_sent_is_cut_without_panicking() {
        assert_eq!(short("0123456789abcdef"), "01234567");
        assert_eq!(short("0123"), "0123");
        // A multi-byte character across the cut.
        assert_eq!(short("0123456é89"), "0123456é89");
    }
}
