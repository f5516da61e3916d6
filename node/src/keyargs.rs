//! The cluster key as every command that talks to peers takes it, and small
//! argument parsers.

use std::path::PathBuf;

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

/// Durations as people type them (one parser for every command).
pub(crate) use ringkv_testbed::cli::parse_duration;
