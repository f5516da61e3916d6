//! `ringkv node`'s settings: the clap flags (each also read from a
//! `RINGKV_...` environment variable by clap), the `--config` TOML file,
//! and [`Settings`], what they add up to. Flags win, then the environment,
//! then the file, then the default, through one helper ([`layer`]); values
//! are checked here so a bad setting stops the peer before it binds
//! anything. Reads the config file, no other IO.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde::Deserialize;

use crate::handoff::HandoffConfig;
use crate::keyargs::KeyArgs;
use crate::rpc::api;

/// Dead members stay in the ring this long by default.
const DEAD_GRACE_DEFAULT: Duration = Duration::from_secs(30);
/// Tombstones are kept a day by default (Cassandra keeps them ten days;
/// ringkv's hints give up after three hours, and handoff re-sends whole
/// ranges to a peer away longer).
const TOMBSTONE_GRACE_DEFAULT: Duration = Duration::from_secs(24 * 3600);

/// Arguments of `ringkv node`. Each can also come from the environment
/// (`RINGKV_...`) or the `--config` TOML file; flags win, then the
/// environment, then the file.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// Data directory (identity, incarnation, cluster key, known peers).
    #[arg(long, env = "RINGKV_DATA")]
    data: Option<PathBuf>,
    /// Address to bind (UDP, QUIC), e.g. 127.0.0.1:7001; port 0 picks one.
    #[arg(long, env = "RINGKV_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address peers should use to reach this one (default: --listen).
    #[arg(long, env = "RINGKV_ADVERTISE")]
    advertise: Option<SocketAddr>,
    /// A peer of the cluster to join through; repeat or comma-separate.
    #[arg(long, env = "RINGKV_JOIN", value_delimiter = ',')]
    join: Vec<String>,
    /// Name shown in tables (default: node-<first 8 hex digits of the id>).
    #[arg(long, env = "RINGKV_NAME")]
    name: Option<String>,
    /// Capacity weight: tokens in the ring are vnodes x weight.
    #[arg(long, env = "RINGKV_WEIGHT", value_parser = clap::value_parser!(u32).range(1..=1000))]
    weight: Option<u32>,
    /// Failure zone; replicas go to distinct zones first.
    #[arg(long, env = "RINGKV_ZONE")]
    zone: Option<String>,
    /// How long a dead member stays in the ring before its ranges move
    /// (e.g. 30s); a short blip must not reshuffle data.
    #[arg(long, env = "RINGKV_DEAD_GRACE", value_parser = crate::keyargs::parse_duration)]
    dead_grace: Option<Duration>,
    /// Admin HTTP address (/health, /metrics, /v1/members, /v1/ring), e.g.
    /// 127.0.0.1:8001; port 0 picks one. Off when not given.
    #[arg(long, env = "RINGKV_ADMIN")]
    admin: Option<SocketAddr>,
    /// How long a delete's tombstone is kept before it is collected (e.g.
    /// 1d, 10h); a replica away longer than this must not rejoin with old
    /// data (handoff sees to that).
    #[arg(long, env = "RINGKV_TOMBSTONE_GRACE", value_parser = crate::keyargs::parse_duration)]
    tombstone_grace: Option<Duration>,
    /// Seed of the peer's random choices (default: from the OS).
    #[arg(long, env = "RINGKV_SEED")]
    seed: Option<u64>,
    /// Serve the Redis protocol (RESP2/RESP3) on this address, e.g.
    /// 127.0.0.1:6379, or a bare port (on 127.0.0.1); port 0 picks one.
    /// Off when not given.
    #[arg(long, env = "RINGKV_RESP", value_parser = crate::resp::parse_listen)]
    resp: Option<SocketAddr>,
    /// Password RESP clients must give with AUTH (or HELLO ... AUTH);
    /// required when --resp is not a loopback address.
    #[arg(long, env = "RINGKV_RESP_PASSWORD")]
    resp_password: Option<String>,
    /// Consistency of RESP requests until a connection picks its own with
    /// CLIENT CONSISTENCY (default quorum).
    #[arg(long, env = "RINGKV_RESP_CONSISTENCY", value_enum)]
    resp_consistency: Option<api::Consistency>,
    /// TOML file with any of the settings above (keys as the flags, with
    /// underscores: data, listen, advertise, join = [..], name, weight,
    /// zone, dead_grace = "30s", tombstone_grace = "1d", cluster_key_file, admin,
    /// seed, resp, resp_password, resp_consistency = "quorum").
    #[arg(long, env = "RINGKV_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    key: KeyArgs,
    /// Once the peer serves, write its addresses here as JSON (id, name,
    /// quic, admin, resp, pid), atomically: what scripts and test harnesses
    /// read instead of the banner. Not in the config file: it is per
    /// process.
    #[arg(long, env = "RINGKV_READY_FILE")]
    ready_file: Option<PathBuf>,
    /// Accept fault-injection settings on the admin HTTP (partitions,
    /// loss, delay). Only the testbed passes it; hidden, and not in the
    /// config file or the environment.
    #[arg(long, hide = true)]
    testbed_faults: bool,
    #[command(flatten)]
    handoff: HandoffArgs,
}

/// Handoff and anti-entropy flags of `ringkv node` (in the `--config`
/// file: a `[handoff]` table with the same names, underscores for dashes).
#[derive(Debug, Args)]
pub(crate) struct HandoffArgs {
    /// How long the ring must stay unchanged before data moves (a flap
    /// moves nothing), e.g. 2s.
    #[arg(long, env = "RINGKV_SETTLE", value_parser = crate::keyargs::parse_duration)]
    settle: Option<Duration>,
    /// Handoff transfers this peer runs at once.
    #[arg(long, env = "RINGKV_MAX_TRANSFERS", value_parser = clap::value_parser!(u32).range(1..=64))]
    max_transfers: Option<u32>,
    /// Most bytes per second this peer pulls for handoff, e.g. 50MB; 0
    /// for no limit. Default 24MB.
    #[arg(long, env = "RINGKV_HANDOFF_RATE", value_parser = parse_rate)]
    handoff_rate: Option<u64>,
    /// Ranges this peer no longer replicates are deleted this long after
    /// every member holds the new ring, e.g. 10s.
    #[arg(long, env = "RINGKV_CLEANUP_GRACE", value_parser = crate::keyargs::parse_duration)]
    cleanup_grace: Option<Duration>,
    /// Pause between two anti-entropy comparisons of a range with another
    /// replica, e.g. 500ms; 0s turns anti-entropy off.
    #[arg(long, env = "RINGKV_ANTI_ENTROPY_INTERVAL", value_parser = crate::keyargs::parse_duration)]
    anti_entropy_interval: Option<Duration>,
    /// Longest a leaving peer (SIGTERM) waits for the others to take over
    /// its ranges, e.g. 2m.
    #[arg(long, env = "RINGKV_LEAVE_TIMEOUT", value_parser = crate::keyargs::parse_duration)]
    leave_timeout: Option<Duration>,
}

/// The `[handoff]` table of the `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HandoffFile {
    settle: Option<String>,
    max_transfers: Option<u32>,
    handoff_rate: Option<String>,
    cleanup_grace: Option<String>,
    anti_entropy_interval: Option<String>,
    leave_timeout: Option<String>,
}

/// The `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data: Option<PathBuf>,
    listen: Option<SocketAddr>,
    advertise: Option<SocketAddr>,
    #[serde(default)]
    join: Vec<String>,
    name: Option<String>,
    weight: Option<u32>,
    zone: Option<String>,
    dead_grace: Option<String>,
    cluster_key_file: Option<PathBuf>,
    seed: Option<u64>,
    admin: Option<SocketAddr>,
    tombstone_grace: Option<String>,
    #[serde(default)]
    handoff: HandoffFile,
    resp: Option<String>,
    resp_password: Option<String>,
    resp_consistency: Option<String>,
}

/// Settings after flags, environment and file are merged and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Data directory (identity, incarnation, cluster key, store).
    pub(crate) data: PathBuf,
    /// Where the QUIC endpoint binds; port 0 picks one.
    pub(crate) listen: SocketAddr,
    /// The address peers use (default: the bound one).
    pub(crate) advertise: Option<SocketAddr>,
    /// Peers to join through, as given (resolved at start).
    pub(crate) join: Vec<String>,
    /// Name shown in tables.
    pub(crate) name: Option<String>,
    /// Capacity weight, 1 to 1000.
    pub(crate) weight: u32,
    /// Failure zone.
    pub(crate) zone: Option<String>,
    /// How long a dead member stays in the ring.
    pub(crate) dead_grace: Duration,
    /// Seed of the peer's random choices (None: from the OS).
    pub(crate) seed: Option<u64>,
    /// Admin HTTP address, when served.
    pub(crate) admin: Option<SocketAddr>,
    /// How long tombstones are kept.
    pub(crate) tombstone_grace: Duration,
    /// Handoff and anti-entropy.
    pub(crate) handoff: HandoffConfig,
    /// The RESP server, when served (validated).
    pub(crate) resp: Option<crate::resp::RespConfig>,
    /// Where the cluster key comes from (flag, environment or file).
    pub(crate) key: KeyArgs,
    /// Fault injection on the admin HTTP (testbed only).
    pub(crate) testbed_faults: bool,
    /// Where to write the ready file once the peer serves.
    pub(crate) ready_file: Option<PathBuf>,
}

/// One setting's layers: the flag (or its environment variable: clap
/// reads both) wins, else the config file's value, turned into the
/// setting's type by `parse`; `None` when neither is given. A file value
/// `parse` refuses is an error naming the file key.
fn layer<T, F>(
    flag: Option<T>,
    file: Option<F>,
    key: &str,
    parse: impl FnOnce(F) -> Result<T, String>,
) -> Result<Option<T>> {
    match (flag, file) {
        (Some(value), _) => Ok(Some(value)),
        (None, Some(raw)) => parse(raw)
            .map(Some)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("config file: {key}")),
        (None, None) => Ok(None),
    }
}

/// A file value that needs no parsing (TOML already typed it).
#[allow(clippy::unnecessary_wraps)]
fn typed<T>(value: T) -> Result<T, String> {
    Ok(value)
}

/// A duration from the file, as people type them ("30s", "1d").
fn duration(text: String) -> Result<Duration, String> {
    crate::keyargs::parse_duration(&text)
}

impl Settings {
    /// The settings `ringkv node FLAGS` would run with (the environment
    /// and a `--config` file among the flags count too): how a test or an
    /// embedding program configures a peer for [`crate::daemon::start`].
    ///
    /// # Errors
    /// Flags clap refuses, and whatever [`Self::from_args`] refuses.
    pub fn from_flags<I, T>(flags: I) -> Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(Debug, clap::Parser)]
        struct Flags {
            #[command(flatten)]
            node: NodeArgs,
        }
        let argv = std::iter::once(std::ffi::OsString::from("ringkv node"))
            .chain(flags.into_iter().map(Into::into));
        let flags = <Flags as clap::Parser>::try_parse_from(argv)?;
        Self::from_args(&flags.node)
    }

    /// Merges the flags (and environment) with the `--config` file.
    ///
    /// # Errors
    /// An unreadable or malformed file, a value out of range, or a
    /// required setting (`data`, `listen`) given nowhere.
    pub(crate) fn from_args(args: &NodeArgs) -> Result<Self> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("bad config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        Self::layered(args, file)
    }

    fn layered(args: &NodeArgs, file: FileConfig) -> Result<Self> {
        let weight = layer(args.weight, file.weight, "weight", typed)?.unwrap_or(1);
        if !(1..=1000).contains(&weight) {
            bail!("weight {weight} is out of range: 1 to 1000");
        }
        let mut key = args.key.clone();
        if key.cluster_key.is_none() && key.cluster_key_file.is_none() {
            key.cluster_key_file.clone_from(&file.cluster_key_file);
        }
        let resp = resp_settings(args, &file)?;
        let join = if args.join.is_empty() {
            file.join
        } else {
            args.join.clone()
        };
        Ok(Self {
            data: layer(args.data.clone(), file.data, "data", typed)?
                .context("--data is required: the directory where this peer keeps its identity")?,
            listen: layer(args.listen, file.listen, "listen", typed)?
                .context("--listen is required, e.g. --listen 127.0.0.1:7001")?,
            advertise: layer(args.advertise, file.advertise, "advertise", typed)?,
            join,
            name: layer(args.name.clone(), file.name, "name", typed)?,
            weight,
            zone: layer(args.zone.clone(), file.zone, "zone", typed)?,
            dead_grace: layer(args.dead_grace, file.dead_grace, "dead_grace", duration)?
                .unwrap_or(DEAD_GRACE_DEFAULT),
            seed: layer(args.seed, file.seed, "seed", typed)?,
            admin: layer(args.admin, file.admin, "admin", typed)?,
            tombstone_grace: layer(
                args.tombstone_grace,
                file.tombstone_grace,
                "tombstone_grace",
                duration,
            )?
            .unwrap_or(TOMBSTONE_GRACE_DEFAULT),
            handoff: handoff_config(&args.handoff, file.handoff)?,
            resp,
            key,
            testbed_faults: args.testbed_faults,
            ready_file: args.ready_file.clone(),
        })
    }
}

fn handoff_config(args: &HandoffArgs, file: HandoffFile) -> Result<HandoffConfig> {
    let d = HandoffConfig::default();
    let rate = layer(
        args.handoff_rate,
        file.handoff_rate,
        "handoff.handoff_rate",
        |t| parse_rate(&t),
    )?
    .unwrap_or(d.rate);
    let max_transfers = layer(
        args.max_transfers,
        file.max_transfers,
        "handoff.max_transfers",
        typed,
    )?
    .unwrap_or(u32::try_from(d.max_transfers).unwrap_or(4));
    if !(1..=64).contains(&max_transfers) {
        bail!("max_transfers {max_transfers} is out of range: 1 to 64");
    }
    let pick = |flag, file, key, default| -> Result<Duration> {
        Ok(layer(flag, file, key, duration)?.unwrap_or(default))
    };
    Ok(HandoffConfig {
        settle: pick(args.settle, file.settle, "handoff.settle", d.settle)?,
        max_transfers: max_transfers as usize,
        rate,
        cleanup_grace: pick(
            args.cleanup_grace,
            file.cleanup_grace,
            "handoff.cleanup_grace",
            d.cleanup_grace,
        )?,
        anti_entropy: pick(
            args.anti_entropy_interval,
            file.anti_entropy_interval,
            "handoff.anti_entropy_interval",
            d.anti_entropy,
        )?,
        leave_timeout: pick(
            args.leave_timeout,
            file.leave_timeout,
            "handoff.leave_timeout",
            d.leave_timeout,
        )?,
        ..d
    })
}

/// The RESP server's settings, checked: a non-loopback address without a
/// password is refused here, before the peer starts.
fn resp_settings(args: &NodeArgs, file: &FileConfig) -> Result<Option<crate::resp::RespConfig>> {
    use clap::ValueEnum as _;
    let Some(listen) = layer(
        args.resp,
        file.resp.as_deref(),
        "resp",
        crate::resp::parse_listen,
    )?
    else {
        return Ok(None);
    };
    let consistency = layer(
        args.resp_consistency,
        file.resp_consistency.as_deref(),
        "resp_consistency",
        |text| {
            api::Consistency::from_str(text, true)
                .map_err(|_| format!("{text:?} is not one, quorum or all"))
        },
    )?
    .unwrap_or(api::Consistency::Quorum);
    let config = crate::resp::RespConfig {
        listen,
        password: args.resp_password.clone().or(file.resp_password.clone()),
        consistency,
    };
    config.validate()?;
    Ok(Some(config))
}

/// The `--join` addresses, resolved (the first address of each name).
///
/// # Errors
/// A seed that is not an address.
pub(crate) fn resolve_seeds(join: &[String]) -> Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for seed in join {
        let addrs = seed
            .to_socket_addrs()
            .with_context(|| format!("--join {seed}: not an address like 127.0.0.1:7001"))?;
        out.extend(addrs.take(1));
    }
    Ok(out)
}

/// A byte rate: a number with an optional KB, MB or GB suffix (powers of
/// 1024), per second.
fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim().trim_end_matches("/s");
    let upper = t.to_ascii_uppercase();
    let (num, mult) = [
        ("GB", 1u64 << 30),
        ("MB", 1 << 20),
        ("KB", 1 << 10),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| {
        upper
            .strip_suffix(suffix)
            .map(|n| (n.trim().to_owned(), *m))
    })
    .unwrap_or((upper.clone(), 1));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a rate like 50MB or 0"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{text:?} is not a rate like 50MB or 0"));
    }
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests;
