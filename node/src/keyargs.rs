//! The cluster key as every command that talks to peers takes it, and small
//! argument parsers.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use ringkv_gossip::ClusterKey;

/// `--cluster-key KEY`, `--cluster-key-file PATH`, or `RINGKV_CLUSTER_KEY`.
#[derive(Debug, Clone, Args)]
pub(crate) struct KeyArgs {
    /// The cluster's secret key (rkv1-...), as printed by its first peer.
    #[arg(
        long,
        env = "RINGKV_CLUSTER_KEY",
        hide_env_values = true,
        conflicts_with = "cluster_key_file"
    )]
    pub(crate) cluster_key: Option<String>,
    /// A file holding the cluster key (a peer's data dir has one: cluster.key).
    #[arg(long)]
    pub(crate) cluster_key_file: Option<PathBuf>,
}

impl KeyArgs {
    /// The key, if one was given.
    pub(crate) fn resolve(&self) -> Result<Option<ClusterKey>> {
        if let Some(text) = &self.cluster_key {
            return ClusterKey::parse(text).map(Some).context("--cluster-key");
        }
        if let Some(path) = &self.cluster_key_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            return ClusterKey::parse(&text)
                .map(Some)
                .with_context(|| format!("{} holds no cluster key", path.display()));
        }
        Ok(None)
    }

    /// The key, which the command cannot do without.
    pub(crate) fn require(&self) -> Result<ClusterKey> {
        self.resolve()?.context("this command needs the cluster key: --cluster-key, --cluster-key-file or RINGKV_CLUSTER_KEY")
    }
}

/// `30s`, `500ms`, `2m`, `10h`, `1d`, or plain seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else if let Some(n) = s.strip_suffix('d') {
        (n, 86_400.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s or 500ms"))?;
    let secs = v * unit;
    if !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return Err(format!("{s}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}
