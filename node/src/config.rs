//! `ringkv node`'s settings: the clap flags (each also read from a
//! `RINGKV_...` environment variable by clap), the `--config` TOML file,
//! and [`Settings`], what they add up to. Flags win, then the environment,
//! then the file, then the default, through one helper ([`layer`]); values
//! are checked here so a bad setting stops the peer before it binds
//! anything. Reads the config file, no other IO.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use ringkv_gossip::transport::admission::HandshakeLimits;
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
    /// 127.0.0.1:8001; port 0 picks one. Off when not given. An address
    /// other machines can reach needs --admin-token-file.
    #[arg(long, env = "RINGKV_ADMIN")]
    admin: Option<SocketAddr>,
    /// File holding the admin HTTP's bearer token (at least 16 bytes):
    /// every endpoint but /health then needs `Authorization: Bearer
    /// <token>`. Required when --admin is not a loopback address.
    #[arg(long, env = "RINGKV_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Time an admin HTTP client has to send a request's headers before it
    /// is disconnected (default 10s, 100ms to 5m).
    #[arg(long, env = "RINGKV_ADMIN_HEADER_TIMEOUT", value_parser = crate::keyargs::parse_duration)]
    admin_header_timeout: Option<Duration>,
    /// Admin HTTP connections served at once (default 64); more are closed
    /// as soon as they are accepted.
    #[arg(long, env = "RINGKV_ADMIN_MAX_CONNECTIONS")]
    admin_max_connections: Option<usize>,
    /// Name the hot keys in /metrics (`key` label of
    /// ringkv_hot_key_requests). Off by default: key names are user data.
    #[arg(long, env = "RINGKV_METRICS_KEY_NAMES")]
    metrics_key_names: bool,
    /// How long a delete's tombstone is kept before it is collected (e.g.
    /// 1d, 10h); a replica away longer than this must not rejoin with old
    /// data (handoff sees to that).
    #[arg(long, env = "RINGKV_TOMBSTONE_GRACE", value_parser = crate::keyargs::parse_duration)]
    tombstone_grace: Option<Duration>,
    /// Largest wall-clock offset tolerated between peers (default 500ms,
    /// 10ms to 1h). A peer farther than this from most of the peers it
    /// measured coordinates no writes and reports 503 on /health; replicas
    /// refuse versions stamped further ahead of their own clock.
    #[arg(long, env = "RINGKV_MAX_CLOCK_OFFSET", value_parser = crate::keyargs::parse_duration)]
    max_clock_offset: Option<Duration>,
    /// Free space the data dir must keep (default 64MB; B, KB, MB, GB).
    /// Below it the peer refuses writes and reports 503 on /health, keeps
    /// serving reads, and takes writes again once space is freed.
    #[arg(long, env = "RINGKV_MIN_FREE_SPACE", value_parser = parse_bytes)]
    min_free_space: Option<u64>,
    /// Most QUIC handshakes in progress at once (default 64); beyond it
    /// new ones are refused, and past half of it unvalidated sources get a
    /// Retry first. See docs/security.md.
    #[arg(long, env = "RINGKV_HANDSHAKES_MAX", value_parser = clap::value_parser!(u32).range(1..=4096))]
    handshakes_max: Option<u32>,
    /// Most QUIC handshakes in progress from one IP address (default 8);
    /// more Initials from it are ignored until one finishes.
    #[arg(long, env = "RINGKV_HANDSHAKES_PER_SOURCE", value_parser = clap::value_parser!(u32).range(1..=4096))]
    handshakes_per_source: Option<u32>,
    /// Most requests (from peers and clients over QUIC) in progress at
    /// once (default 1024, 1 to 65536); about a quarter as many more wait,
    /// and beyond that new ones are refused unread as overloaded, so
    /// callers may retry them. See docs/daemon.md.
    #[arg(long, env = "RINGKV_REQUESTS_MAX", value_parser = clap::value_parser!(u32).range(1..=i64::from(REQUESTS_MAX_MAX)))]
    requests_max: Option<u32>,
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
    /// Most RESP clients at once (default 10000, Redis's maxclients);
    /// lowered at start to leave 128 file descriptors for the rest of the
    /// peer.
    #[arg(long, env = "RINGKV_RESP_MAX_CLIENTS", value_parser = clap::value_parser!(u32).range(1..))]
    resp_max_clients: Option<u32>,
    /// Closes a RESP connection that sent nothing for this long (Redis's
    /// timeout; default 300s; 0 never).
    #[arg(long, env = "RINGKV_RESP_TIMEOUT", value_parser = crate::keyargs::parse_duration)]
    resp_timeout: Option<Duration>,
    /// Disconnects a RESP client whose unread replies exceed this (Redis's
    /// client-output-buffer-limit normal; default 64MB; 0 no limit).
    #[arg(long, env = "RINGKV_RESP_OUTPUT_LIMIT", value_parser = parse_bytes)]
    resp_output_limit: Option<u64>,
    /// TOML file with any of the settings above (keys as the flags, with
    /// underscores: data, listen, advertise, join = [..], name, weight,
    /// zone, dead_grace = "30s", tombstone_grace = "1d", max_clock_offset =
    /// "500ms", min_free_space = "64MB", handshakes_max,
    /// handshakes_per_source, requests_max, cluster_key_file, admin,
    /// admin_token_file, admin_header_timeout = "10s",
    /// admin_max_connections, metrics_key_names = true,
    /// seed, resp, resp_password, resp_consistency = "quorum",
    /// resp_max_clients, resp_timeout = "300s", resp_output_limit = "64MB").
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
    admin_token_file: Option<PathBuf>,
    admin_header_timeout: Option<String>,
    admin_max_connections: Option<usize>,
    metrics_key_names: Option<bool>,
    tombstone_grace: Option<String>,
    max_clock_offset: Option<String>,
    min_free_space: Option<String>,
    handshakes_max: Option<u32>,
    handshakes_per_source: Option<u32>,
    requests_max: Option<u32>,
    #[serde(default)]
    handoff: HandoffFile,
    resp: Option<String>,
    resp_password: Option<String>,
    resp_consistency: Option<String>,
    resp_max_clients: Option<u32>,
    resp_timeout: Option<String>,
    resp_output_limit: Option<String>,
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
    /// Peers to join through (`host:port`, checked), resolved at start
    /// and again on each join attempt and after a partition.
    pub(crate) join: Vec<crate::seeds::SeedName>,
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
    /// The admin HTTP's token, limits and metrics policy (checked against
    /// `admin`).
    pub(crate) admin_http: crate::admin::settings::AdminHttp,
    /// How long tombstones are kept.
    pub(crate) tombstone_grace: Duration,
    /// The clock offset bound (`--max-clock-offset`).
    pub(crate) max_clock_offset: Duration,
    /// The data dir's free-space floor (`--min-free-space`).
    pub(crate) min_free_space: u64,
    /// Limits on incoming QUIC handshakes (`--handshakes-max`,
    /// `--handshakes-per-source`; validated).
    pub(crate) handshakes: HandshakeLimits,
    /// Most requests in progress at once (`--requests-max`; validated).
    pub(crate) requests_max: usize,
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
        if !key.given() {
            key.cluster_key_file.clone_from(&file.cluster_key_file);
        }
        let resp = resp_settings(args, &file)?;
        let handshakes = handshake_limits(args, &file)?;
        let admin = layer(args.admin, file.admin, "admin", typed)?;
        let admin_http = admin_http(args, &file, admin)?;
        let join = seed_names(if args.join.is_empty() {
            &file.join
        } else {
            &args.join
        })?;
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
            admin,
            admin_http,
            tombstone_grace: layer(
                args.tombstone_grace,
                file.tombstone_grace,
                "tombstone_grace",
                duration,
            )?
            .unwrap_or(TOMBSTONE_GRACE_DEFAULT),
            max_clock_offset: max_clock_offset(layer(
                args.max_clock_offset,
                file.max_clock_offset,
                "max_clock_offset",
                duration,
            )?)?,
            min_free_space: layer(
                args.min_free_space,
                file.min_free_space,
                "min_free_space",
                |t| parse_bytes(&t),
            )?
            .unwrap_or(crate::disk::MIN_FREE_DEFAULT),
            handshakes,
            requests_max: requests_max(layer(
                args.requests_max,
                file.requests_max,
                "requests_max",
                typed,
            )?)?,
            handoff: handoff_config(&args.handoff, file.handoff)?,
            resp,
            key,
            testbed_faults: args.testbed_faults,
            ready_file: args.ready_file.clone(),
        })
    }
}

/// The handshake limits: the two given (flag, else file, else default),
/// Retries past half the slots, checked together.
fn handshake_limits(args: &NodeArgs, file: &FileConfig) -> Result<HandshakeLimits> {
    let d = HandshakeLimits::default();
    let max = layer(
        args.handshakes_max,
        file.handshakes_max,
        "handshakes_max",
        typed,
    )?
    .map_or(d.handshakes_max, |n| n as usize);
    let per_source = layer(
        args.handshakes_per_source,
        file.handshakes_per_source,
        "handshakes_per_source",
        typed,
    )?
    .map_or(d.per_source_max.min(max), |n| n as usize);
    let limits = HandshakeLimits {
        handshakes_max: max,
        validate_above: max / 2,
        per_source_max: per_source,
        ..d
    };
    limits
        .validate()
        .map_err(|e| anyhow::anyhow!("handshake limits: {}: {}", e.field, e.reason))?;
    Ok(limits)
}

/// The default of `--requests-max`.
pub(crate) const REQUESTS_MAX_DEFAULT: usize = 1024;
/// The largest `--requests-max`.
const REQUESTS_MAX_MAX: u32 = 65_536;

/// `--requests-max` (the flag's range is checked by clap; a file value
/// here).
fn requests_max(given: Option<u32>) -> Result<usize> {
    match given {
        None => Ok(REQUESTS_MAX_DEFAULT),
        Some(n) if (1..=REQUESTS_MAX_MAX).contains(&n) => Ok(n as usize),
        Some(n) => bail!("requests_max {n} is out of range: 1 to {REQUESTS_MAX_MAX}"),
    }
}

fn max_clock_offset(given: Option<Duration>) -> Result<Duration> {
    let d = given.unwrap_or(crate::clock_offset::MAX_CLOCK_OFFSET_DEFAULT);
    if d < Duration::from_millis(10) || d > Duration::from_secs(3600) {
        bail!("max_clock_offset {d:?} is out of range: 10ms to 1h");
    }
    Ok(d)
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

/// The admin HTTP's settings, checked against its address: one other
/// machines can reach without a token is refused here, before the peer
/// starts.
fn admin_http(
    args: &NodeArgs,
    file: &FileConfig,
    admin: Option<SocketAddr>,
) -> Result<crate::admin::settings::AdminHttp> {
    use crate::admin::settings::{AdminHttp, AdminToken};
    let d = AdminHttp::default();
    let token_file = layer(
        args.admin_token_file.clone(),
        file.admin_token_file.clone(),
        "admin_token_file",
        typed,
    )?;
    let http = AdminHttp {
        token: token_file.as_deref().map(AdminToken::read).transpose()?,
        header_timeout: layer(
            args.admin_header_timeout,
            file.admin_header_timeout.clone(),
            "admin_header_timeout",
            duration,
        )?
        .unwrap_or(d.header_timeout),
        max_connections: layer(
            args.admin_max_connections,
            file.admin_max_connections,
            "admin_max_connections",
            typed,
        )?
        .unwrap_or(d.max_connections),
        key_names: args.metrics_key_names || file.metrics_key_names.unwrap_or(false),
    };
    if let Some(addr) = admin {
        http.check(addr)?;
    }
    Ok(http)
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
        limits: resp_limits(args, file)?,
    };
    config.validate()?;
    Ok(Some(config))
}

/// `--resp-max-clients`, `--resp-timeout`, `--resp-output-limit`.
fn resp_limits(args: &NodeArgs, file: &FileConfig) -> Result<crate::resp::ClientLimits> {
    let d = crate::resp::ClientLimits::default();
    let max_clients = match args.resp_max_clients.or(file.resp_max_clients) {
        Some(0) => bail!("resp_max_clients must be at least 1"),
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => d.max_clients,
    };
    let idle = layer(
        args.resp_timeout,
        file.resp_timeout.clone(),
        "resp_timeout",
        duration,
    )?;
    let output = layer(
        args.resp_output_limit,
        file.resp_output_limit.as_deref(),
        "resp_output_limit",
        parse_bytes,
    )?;
    Ok(crate::resp::ClientLimits {
        max_clients,
        idle_timeout: match idle {
            None => d.idle_timeout,
            Some(t) if t.is_zero() => None,
            Some(t) => Some(t),
        },
        output_max: match output {
            None => d.output_max,
            Some(0) => usize::MAX,
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        },
    })
}

/// The `--join` seeds, checked: each `host:port` (names are resolved by
/// the daemon, at start and again on each join attempt).
///
/// # Errors
/// A seed that is not `host:port`.
pub(crate) fn seed_names(join: &[String]) -> Result<Vec<crate::seeds::SeedName>> {
    join.iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| crate::seeds::SeedName::parse(s).map_err(anyhow::Error::msg))
        .collect()
}

/// A byte rate: a size (see [`parse_bytes`]) per second, `/s` optional.
fn parse_rate(text: &str) -> Result<u64, String> {
    parse_bytes(text.trim().trim_end_matches("/s"))
        .map_err(|_| format!("{text:?} is not a rate like 50MB or 0"))
}

/// A size: a number with an optional B, KB, MB or GB suffix (powers of
/// 1024; MiB and the like too).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let upper = t.to_ascii_uppercase().replace("IB", "B");
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
        .map_err(|_| format!("{text:?} is not a size like 64MB or 0"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{text:?} is not a size like 64MB or 0"));
    }
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests;
