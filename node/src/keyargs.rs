//! The cluster key as every command that talks to peers takes it, client
//! credentials as the client commands take them, and small argument
//! parsers.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use ringkv_gossip::transport::credentials::{ClientCredentials, CREDENTIALS_FILE_MAX};
use ringkv_gossip::transport::keyring::{Keyring, KEYRING_TEXT_MAX};
use ringkv_gossip::ClusterKey;

use crate::rpc::api::{ErrorKind, RequestError};
pub(crate) use crate::rpc::client::Access;

/// The environment variable a cluster key may come from.
pub(crate) const KEY_ENV: &str = "RINGKV_CLUSTER_KEY";

/// `--cluster-key-file PATH`, `RINGKV_CLUSTER_KEY`, or `--cluster-key KEY`
/// (which works, but puts the secret in argv, where `ps` shows it to every
/// user of the host: it logs a warning).
#[derive(Debug, Clone, Args)]
pub(crate) struct KeyArgs {
    /// The cluster's secret key (rkv1-...). Visible in `ps` and shell
    /// history: prefer --cluster-key-file or RINGKV_CLUSTER_KEY.
    #[arg(long, conflicts_with = "cluster_key_file")]
    pub(crate) cluster_key: Option<String>,
    /// A file holding the cluster key (a peer's data dir has one:
    /// cluster.key, mode 0600; copy it to the new peer's host).
    #[arg(long)]
    pub(crate) cluster_key_file: Option<PathBuf>,
}

impl KeyArgs {
    /// Whether a key was given on the command line or in the environment
    /// (both win over a `--config` file's `cluster_key_file`).
    pub(crate) fn given(&self) -> bool {
        self.cluster_key.is_some()
            || self.cluster_key_file.is_some()
            || std::env::var_os(KEY_ENV).is_some()
    }

    /// The key, if one was given: `--cluster-key` (with a warning), else
    /// `--cluster-key-file`, else `RINGKV_CLUSTER_KEY`. A key file may be
    /// a peer's keyring (`<DATA>/cluster.key` after `ringkv keyring
    /// install`): its primary key is the key.
    pub(crate) fn resolve(&self) -> Result<Option<ClusterKey>> {
        Ok(self.resolve_keyring()?.map(|k| k.primary().clone()))
    }

    /// As [`resolve`](Self::resolve), the whole keyring a key file holds
    /// (a peer starting on a new data dir takes all of it, with the
    /// cluster id); a key on its own is a keyring of one.
    pub(crate) fn resolve_keyring(&self) -> Result<Option<Keyring>> {
        if let Some(text) = &self.cluster_key {
            tracing::warn!("{ARGV_WARNING}");
            return ClusterKey::parse(text)
                .map(|k| Some(Keyring::new(k)))
                .context("--cluster-key");
        }
        if let Some(path) = &self.cluster_key_file {
            return read_keyring(path).map(Some);
        }
        match std::env::var(KEY_ENV) {
            Ok(text) => ClusterKey::parse(&text)
                .map(|k| Some(Keyring::new(k)))
                .context(KEY_ENV),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => bail!("{KEY_ENV} is not text"),
        }
    }

    /// The key, which the command cannot do without.
    pub(crate) fn require(&self) -> Result<ClusterKey> {
        self.resolve()?.context("this command needs the cluster key: --cluster-key-file (a copy of a peer's <DATA>/cluster.key) or RINGKV_CLUSTER_KEY")
    }
}

/// Reads a key file or a keyring file (its size is checked first).
///
/// # Errors
/// Unreadable, too large, or no keyring (naming the file, never a key).
pub(crate) fn read_keyring(path: &std::path::Path) -> Result<Keyring> {
    use std::io::Read as _;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut text = String::new();
    file.take(KEYRING_TEXT_MAX as u64 + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("{} holds no cluster key (not text)", path.display()))?;
    Keyring::parse(&text).with_context(|| format!("{} holds no cluster key", path.display()))
}

/// The environment variable a client credentials file may come from.
pub(crate) const CREDENTIALS_ENV: &str = "RINGKV_CREDENTIALS";

/// How a client command authenticates: `--credentials FILE` (or
/// `RINGKV_CREDENTIALS`), a client credential that may send client
/// requests only; else the cluster key, which makes the command a peer
/// (for operators). Credentials win when both are given.
#[derive(Debug, Clone, Args)]
pub(crate) struct AccessArgs {
    /// A client credentials file from `ringkv credentials issue`: client
    /// requests only (put, get, del, members, ring, owners, hot, handoff,
    /// keys). Used instead of the cluster key when both are given.
    #[arg(long, env = CREDENTIALS_ENV)]
    pub(crate) credentials: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) key: KeyArgs,
}

impl AccessArgs {
    /// The credentials if given, else the cluster key, which the command
    /// cannot do without.
    ///
    /// # Errors
    /// Neither is given, or the file cannot be read, is malformed, or has
    /// expired (a [`RequestError`] of kind `Refused`: exit status 4).
    pub(crate) fn require(&self) -> Result<Access> {
        match &self.credentials {
            Some(path) => Ok(Access::Client(read_credentials(path, wall_secs())?)),
            None => Ok(Access::Peer(self.key.resolve()?.context(
                "this command needs client credentials (--credentials FILE or RINGKV_CREDENTIALS, from `ringkv credentials issue`) or, for operators, the cluster key (--cluster-key-file or RINGKV_CLUSTER_KEY)",
            )?)),
        }
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn wall_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads a credentials file: its size is checked before it is read, then
/// its fields, then its expiry against `now` (Unix seconds).
///
/// # Errors
/// Unreadable, too large or malformed (naming the file and the problem),
/// or expired: "credentials expired", of kind `Refused`.
pub(crate) fn read_credentials(path: &std::path::Path, now: u64) -> Result<ClientCredentials> {
    use std::io::Read as _;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if len > CREDENTIALS_FILE_MAX as u64 {
        bail!(
            "{} is {len} bytes: not a credentials file (those are at most {CREDENTIALS_FILE_MAX})",
            path.display()
        );
    }
    let mut text = String::new();
    file.take(CREDENTIALS_FILE_MAX as u64 + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("{} is not a credentials file (not text)", path.display()))?;
    let creds = ClientCredentials::parse(&text).with_context(|| path.display().to_string())?;
    if creds.expires() <= now {
        return Err(RequestError::new(
            ErrorKind::Refused,
            format!(
                "credentials expired: {} (issued to {:?}) expired at {}; ask an operator for new ones (ringkv credentials issue)",
                path.display(),
                creds.name(),
                format_secs(creds.expires())
            ),
        )
        .into());
    }
    Ok(creds)
}

/// Unix seconds as an RFC 3339 UTC time.
pub(crate) fn format_secs(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// What `--cluster-key` on the command line logs.
pub(crate) const ARGV_WARNING: &str = "--cluster-key puts the cluster's secret key on the command line, where ps and shell history show it: pass --cluster-key-file FILE (a copy of a peer's <DATA>/cluster.key) or RINGKV_CLUSTER_KEY instead";

/// The longest duration a flag, a config file key or a query takes.
const DURATION_MAX: Duration = Duration::from_secs(365 * 86_400);

/// A duration as people type it, for every flag, config file key and admin
/// query of node: `10s`, `500ms`, `2m`, `10h`, `1d`, fractions like `0.5s`,
/// or plain seconds (`30`, `0.5`); at most a year. Units, fractions and
/// sums (`1h 30m`) are humantime's; plain seconds and the limit are ours.
///
/// # Errors
/// A message naming the text: not a duration, or more than a year.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let d = match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() => {
            Duration::try_from_secs_f64(secs).map_err(|_| out_of_range(s))?
        }
        _ => humantime::parse_duration(s)
            .map_err(|e| format!("{s:?} is not a duration like 30s, 500ms, 2m, 10h or 1d ({e})"))?,
    };
    if d > DURATION_MAX {
        return Err(out_of_range(s));
    }
    Ok(d)
}

fn out_of_range(s: &str) -> String {
    format!("{s:?} is out of range: from 0 to a year (365d)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn durations_parse_in_every_format_in_use() {
        for (text, want) in [
            ("10s", ms(10_000)),
            ("0s", Duration::ZERO),
            ("500ms", ms(500)),
            ("200ms", ms(200)),
            ("2m", ms(120_000)),
            ("10h", ms(36_000_000)),
            ("1d", ms(86_400_000)),
            ("30", ms(30_000)),
            ("0", Duration::ZERO),
            ("0.5", ms(500)),
            ("0.5s", ms(500)),
            ("0.2s", ms(200)),
            ("1.5m", ms(90_000)),
            (" 30s ", ms(30_000)),
            ("10 s", ms(10_000)),
            ("1h 30m", ms(5_400_000)),
            ("365d", DURATION_MAX),
            ("31536000", DURATION_MAX),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn garbage_is_not_a_duration_and_the_error_names_it() {
        for text in [
            "", "forever", "soon", "30x", "s", "ms", "1..s", ".5s", "-5s", "nan", "inf", "1e3s",
        ] {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains("not a duration"), "{text:?}: {err}");
            assert!(
                err.contains(&format!("{:?}", text.trim())),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn durations_past_a_year_or_below_zero_are_out_of_range() {
        for text in [
            "366d", "400d", "1y", "53w", "31536001", "-1", "-0.5", "1e300",
        ] {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains("out of range"), "{text:?}: {err}");
            assert!(err.contains(&format!("{text:?}")), "{text:?}: {err}");
        }
    }
}
