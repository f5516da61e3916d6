//! `ringkv node`: one peer. Wiring only: the data dir, the QUIC endpoint,
//! the gossip runner, the ring rebuilt from every view change, the client
//! request loop, and graceful shutdown.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ringkv_gossip::runner::{self, Command, Handle, RunnerParts, View};
use ringkv_gossip::transport::tls::{client_config, server_config, transport_config};
use ringkv_gossip::{Config as GossipConfig, Meta, NodeId, NodeStatus, State, Swim};
use ringkv_ring::{NodeSpec, Ring, DEFAULT_VNODES};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::datadir::DataDir;
use crate::handoff::{Handoff, HandoffConfig};
use crate::keyargs::KeyArgs;
use crate::rpc::api;
use crate::rpc::pool::Peers;
use crate::shared::{wall_ms, Kv};
use crate::status::RingState;

/// Dead members stay in the ring this long by default.
const DEAD_GRACE_DEFAULT: Duration = Duration::from_secs(30);
/// Tombstones are kept a day by default (Cassandra keeps them ten days;
/// ringkv's hints give up after three hours, and handoff re-sends whole
/// ranges to a peer away longer).
const TOMBSTONE_GRACE_DEFAULT: Duration = Duration::from_secs(24 * 3600);
/// How long a graceful leave waits for the news to spread.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

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

fn pick_duration(
    flag: Option<Duration>,
    file: Option<&String>,
    name: &str,
    default: Duration,
) -> Result<Duration> {
    match (flag, file) {
        (Some(d), _) => Ok(d),
        (None, Some(text)) => crate::keyargs::parse_duration(text)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("config file: handoff.{name}")),
        (None, None) => Ok(default),
    }
}

fn handoff_config(args: &HandoffArgs, file: &HandoffFile) -> Result<HandoffConfig> {
    let d = HandoffConfig::default();
    let rate = match (args.handoff_rate, &file.handoff_rate) {
        (Some(r), _) => r,
        (None, Some(text)) => parse_rate(text)
            .map_err(anyhow::Error::msg)
            .context("config file: handoff.handoff_rate")?,
        (None, None) => d.rate,
    };
    let max_transfers = args
        .max_transfers
        .or(file.max_transfers)
        .unwrap_or(u32::try_from(d.max_transfers).unwrap_or(4));
    if !(1..=64).contains(&max_transfers) {
        bail!("max_transfers {max_transfers} is out of range: 1 to 64");
    }
    Ok(HandoffConfig {
        settle: pick_duration(args.settle, file.settle.as_ref(), "settle", d.settle)?,
        max_transfers: max_transfers as usize,
        rate,
        cleanup_grace: pick_duration(
            args.cleanup_grace,
            file.cleanup_grace.as_ref(),
            "cleanup_grace",
            d.cleanup_grace,
        )?,
        anti_entropy: pick_duration(
            args.anti_entropy_interval,
            file.anti_entropy_interval.as_ref(),
            "anti_entropy_interval",
            d.anti_entropy,
        )?,
        leave_timeout: pick_duration(
            args.leave_timeout,
            file.leave_timeout.as_ref(),
            "leave_timeout",
            d.leave_timeout,
        )?,
        ..d
    })
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

/// Settings after flags, environment and file are merged.
#[derive(Debug)]
struct Settings {
    data: PathBuf,
    listen: SocketAddr,
    advertise: Option<SocketAddr>,
    join: Vec<String>,
    name: Option<String>,
    weight: u32,
    zone: Option<String>,
    dead_grace: Duration,
    seed: Option<u64>,
    admin: Option<SocketAddr>,
    tombstone_grace: Duration,
    handoff: HandoffConfig,
    resp: Option<crate::resp::RespConfig>,
}

fn settings(args: &NodeArgs) -> Result<(Settings, KeyArgs)> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("bad config file {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let dead_grace = match (&args.dead_grace, &file.dead_grace) {
        (Some(d), _) => *d,
        (None, Some(text)) => crate::keyargs::parse_duration(text)
            .map_err(anyhow::Error::msg)
            .context("config file: dead_grace")?,
        (None, None) => DEAD_GRACE_DEFAULT,
    };
    let weight = args.weight.or(file.weight).unwrap_or(1);
    if !(1..=1000).contains(&weight) {
        bail!("weight {weight} is out of range: 1 to 1000");
    }
    let mut key = args.key.clone();
    if key.cluster_key.is_none() && key.cluster_key_file.is_none() {
        key.cluster_key_file = file.cluster_key_file.clone();
    }
    let resp = resp_settings(args, &file)?;
    let settings = Settings {
        data: args
            .data
            .clone()
            .or(file.data)
            .context("--data is required: the directory where this peer keeps its identity")?,
        listen: args
            .listen
            .or(file.listen)
            .context("--listen is required, e.g. --listen 127.0.0.1:7001")?,
        advertise: args.advertise.or(file.advertise),
        join: if args.join.is_empty() {
            file.join
        } else {
            args.join.clone()
        },
        name: args.name.clone().or(file.name),
        weight,
        zone: args.zone.clone().or(file.zone),
        dead_grace,
        seed: args.seed.or(file.seed),
        admin: args.admin.or(file.admin),
        tombstone_grace: match (&args.tombstone_grace, &file.tombstone_grace) {
            (Some(d), _) => *d,
            (None, Some(text)) => crate::keyargs::parse_duration(text)
                .map_err(anyhow::Error::msg)
                .context("config file: tombstone_grace")?,
            (None, None) => TOMBSTONE_GRACE_DEFAULT,
        },
        handoff: handoff_config(&args.handoff, &file.handoff)?,
        resp,
    };
    Ok((settings, key))
}

/// The RESP server's settings, checked: a non-loopback address without a
/// password is refused here, before the peer starts.
fn resp_settings(args: &NodeArgs, file: &FileConfig) -> Result<Option<crate::resp::RespConfig>> {
    use clap::ValueEnum as _;
    let listen = match (args.resp, &file.resp) {
        (Some(addr), _) => addr,
        (None, Some(text)) => crate::resp::parse_listen(text)
            .map_err(anyhow::Error::msg)
            .context("config file: resp")?,
        (None, None) => return Ok(None),
    };
    let consistency = match (args.resp_consistency, &file.resp_consistency) {
        (Some(c), _) => c,
        (None, Some(text)) => api::Consistency::from_str(text, true).map_err(|_| {
            anyhow::anyhow!("config file: resp_consistency {text:?} is not one, quorum or all")
        })?,
        (None, None) => api::Consistency::Quorum,
    };
    let config = crate::resp::RespConfig {
        listen,
        password: args.resp_password.clone().or(file.resp_password.clone()),
        consistency,
    };
    config.validate()?;
    Ok(Some(config))
}

fn resolve_seeds(join: &[String]) -> Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for seed in join {
        let addrs = seed
            .to_socket_addrs()
            .with_context(|| format!("--join {seed}: not an address like 127.0.0.1:7001"))?;
        out.extend(addrs.take(1));
    }
    Ok(out)
}

/// Runs a peer until SIGTERM or Ctrl-C, then leaves gracefully.
pub(crate) async fn run(args: &NodeArgs) -> Result<()> {
    let mut shutdown = ShutdownSignal::listen()?;
    let (settings, key_args) = settings(args)?;
    let dir = DataDir::open(&settings.data)?;
    let identity = dir.identity()?;
    let id = identity.node_id();
    let seeds = resolve_seeds(&settings.join)?;
    let given_key = key_args.resolve()?;
    if given_key.is_none() && !seeds.is_empty() && dir.cluster_key()?.is_none() {
        bail!("joining a cluster needs its key: pass --cluster-key (or --cluster-key-file, or RINGKV_CLUSTER_KEY) as printed by its first peer");
    }
    let (key, created) = dir.bind_cluster(given_key)?;
    let incarnation = dir.next_incarnation()?;
    let store = ringkv_storage::Store::open(&settings.data.join("store"))
        .context("cannot open the store")?;
    let clock = ringkv_storage::Clock::new(id, store.generation(), store.hlc_floor());
    let forget_ready = check_absence(&store, settings.dead_grace, settings.tombstone_grace)?;

    let mut server =
        server_config(&key, &identity).context("cannot build the TLS server config")?;
    server.transport_config(Arc::new(transport_config()));
    let mut client =
        client_config(&key, &identity).context("cannot build the TLS client config")?;
    client.transport_config(Arc::new(transport_config()));
    let socket = std::net::UdpSocket::bind(settings.listen).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "cannot listen on {}: the address is in use (another ringkv?)",
            settings.listen
        ),
        _ => anyhow::anyhow!("cannot listen on {}: {e}", settings.listen),
    })?;
    let local = socket.local_addr()?;
    // The endpoint and the gossip runner live on a thread of their own, so
    // a peer busy with store requests still answers probes on time: a
    // starved failure detector declares healthy peers dead.
    let gossip_rt = GossipRuntime::start()?;
    let faults = args
        .testbed_faults
        .then(|| Arc::new(crate::faults::FaultSwitch::new(settings.seed)));
    if faults.is_some() {
        warn!("fault injection is on (--testbed-faults): the admin HTTP can drop and delay this peer's traffic");
    }
    let socket_faults = faults.clone();
    let endpoint = gossip_rt
        .block_on(async move {
            quinn::Endpoint::new_with_abstract_socket(
                quinn::EndpointConfig::default(),
                Some(server),
                crate::faults::endpoint_socket(socket, socket_faults)?,
                Arc::new(quinn::TokioRuntime),
            )
        })
        .context("cannot start the QUIC endpoint")?;
    let peers_endpoint = endpoint.clone();
    let peers_config = client.clone();
    let advertise = settings.advertise.unwrap_or(local);
    if advertise.ip().is_unspecified() {
        bail!(
            "--listen {} is a wildcard address: pass --advertise with the address peers should use",
            settings.listen
        );
    }

    let name = settings
        .name
        .clone()
        .unwrap_or_else(|| format!("node-{}", id.short()));
    let admin = match settings.admin {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(
            |e| match e.kind() {
                std::io::ErrorKind::AddrInUse => {
                    anyhow::anyhow!("cannot serve admin HTTP on {addr}: the address is in use")
                }
                _ => anyhow::anyhow!("cannot serve admin HTTP on {addr}: {e}"),
            },
        )?),
        None => None,
    };
    let resp = match &settings.resp {
        Some(config) => Some((crate::resp::bind(config).await?, config.clone())),
        None => None,
    };
    let admin_addr = admin
        .as_ref()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()?;
    let mut meta = Meta::new(advertise, name.clone());
    meta.admin = admin_addr;
    meta.weight = settings.weight;
    meta.zone = settings.zone.clone();
    meta.status = NodeStatus::Normal;
    meta.build = env!("CARGO_PKG_VERSION").to_owned();
    let gossip = GossipConfig {
        cluster: key.cluster_id(),
        ..GossipConfig::default()
    };
    let max_stream = gossip.max_stream_message;
    let rng = match settings.seed {
        Some(seed) => ChaCha8Rng::seed_from_u64(seed),
        None => ChaCha8Rng::from_os_rng(),
    };
    let now = tokio::time::Instant::now().into_std();
    let mut swim = Swim::new(gossip, id, incarnation, meta, rng, now);
    let mut all_seeds = seeds.clone();
    for peer in dir.peers() {
        if !all_seeds.contains(&peer) {
            all_seeds.push(peer);
        }
    }
    all_seeds.retain(|a| *a != advertise);
    if !all_seeds.is_empty() {
        swim.handle_join(now, all_seeds);
    }

    println!("ringkv: node {name} (id {id}) listening on {local}, incarnation {incarnation}");
    if created {
        println!("ringkv: started a new cluster. Join another peer to it with:");
        println!(
            "  ringkv node --data <DIR> --listen <ADDR> --join {advertise} --cluster-key {key}"
        );
    }

    let (req_tx, req_rx) = mpsc::channel(256);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let parts = RunnerParts {
        swim,
        endpoint,
        client_config: client,
        requests: req_tx,
        max_stream_message: max_stream,
    };
    let (handle, runner_task) = gossip_rt.block_on(async move {
        runner::spawn(parts, async move {
            let _ = stop_rx.await;
        })
    });
    let peers = Peers::new(
        peers_endpoint,
        peers_config,
        Duration::from_secs(2),
        handle.commands.clone(),
    );
    let ring_rx = spawn_ring_builder(handle.view.clone(), settings.dead_grace);
    spawn_persistence(handle.view.clone(), dir.clone());
    spawn_join_watch(handle.clone(), seeds);
    let kv = Arc::new(Kv::new(
        id,
        store,
        clock,
        handle.view.clone(),
        ring_rx.clone(),
        peers,
    ));
    let handoff = Handoff::new(
        kv.clone(),
        settings.handoff.clone(),
        handle.commands.clone(),
        handle.view.borrow().me.meta.as_ref().clone(),
        forget_ready,
    );
    handoff.spawn();
    if let Some((listener, config)) = resp {
        let addr = crate::resp::spawn(listener, kv.clone(), config)?;
        println!("ringkv: RESP (Redis protocol) on {addr}");
    }
    spawn_maintenance(kv.clone(), settings.tombstone_grace);
    spawn_clock_floor(kv.clone());
    spawn_pool_invalidation(handle.view.clone(), kv.clone());
    tokio::spawn(crate::rpc::server::serve_requests(
        req_rx,
        handle.clone(),
        ring_rx.clone(),
        kv.clone(),
        handoff.clone(),
    ));
    if let (Some(listener), Some(addr)) = (admin, admin_addr) {
        // Series not updated for a minute are dropped: hot-key series come
        // and go with the keys.
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
            .idle_timeout(
                metrics_util::MetricKindMask::GAUGE,
                Some(Duration::from_secs(60)),
            )
            .install_recorder()
            .context("cannot start the metrics recorder")?;
        let state = Arc::new(crate::admin::AdminState {
            view: handle.view.clone(),
            ring: ring_rx,
            transport: handle.transport.clone(),
            metrics,
            started: Instant::now(),
            kv: kv.clone(),
            handoff: handoff.clone(),
            faults,
        });
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, crate::admin::router(state)).await {
                warn!(err = %e, "admin HTTP stopped");
            }
        });
        println!("ringkv: admin HTTP on http://{addr}");
    }

    shutdown.wait().await;
    info!("shutting down: handing this peer's ranges over (a second signal skips this)");
    tokio::select! {
        () = handoff.leave() => {}
        () = shutdown.wait() => warn!("second signal: leaving without waiting for the handoff"),
    }
    info!("shutting down: leaving the cluster");
    let (done_tx, done_rx) = oneshot::channel();
    if handle
        .commands
        .send(Command::Leave {
            timeout: LEAVE_TIMEOUT,
            done: done_tx,
        })
        .await
        .is_ok()
    {
        let _ = tokio::time::timeout(LEAVE_TIMEOUT + Duration::from_secs(1), done_rx).await;
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), runner_task).await;
    // The incarnation the protocol last moved to, on disk before exit.
    let last = handle.view.borrow().me.incarnation;
    if let Err(e) = dir.store_incarnation(last) {
        warn!(err = %e, "cannot store the incarnation");
    }
    println!("ringkv: node {name} left the cluster");
    Ok(())
}

/// A single-threaded tokio runtime on a dedicated OS thread, for the QUIC
/// endpoint and the gossip runner. Dropped with the daemon.
struct GossipRuntime {
    handle: tokio::runtime::Handle,
    _stop: oneshot::Sender<()>,
}

impl GossipRuntime {
    fn start() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("ringkv-gossip")
            .build()
            .context("cannot start the gossip runtime")?;
        let handle = rt.handle().clone();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("ringkv-gossip".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
            })
            .context("cannot start the gossip thread")?;
        Ok(Self {
            handle,
            _stop: stop_tx,
        })
    }

    /// Runs `f` to completion on the gossip thread (for setup: what it
    /// spawns stays there).
    fn block_on<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().expect("the gossip thread runs")
    }
}

/// SIGTERM or Ctrl-C, listened for from the start of `run`, so a signal
/// during start-up still ends in a graceful leave rather than exit 143.
struct ShutdownSignal {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn listen() -> Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot listen for SIGTERM")?,
        })
    }

    async fn wait(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Rebuilds the ring whenever the set of members it counts changes: live
/// members, plus dead ones for `grace` after they were first seen dead.
fn spawn_ring_builder(
    mut view: watch::Receiver<Arc<View>>,
    grace: Duration,
) -> watch::Receiver<Arc<RingState>> {
    let (tx, rx) = watch::channel(Arc::new(RingState::default()));
    tokio::spawn(async move {
        let mut dead_since: BTreeMap<NodeId, Instant> = BTreeMap::new();
        let mut last: Option<(Vec<NodeSpec>, Vec<NodeSpec>)> = None;
        let mut rebuilds = 0u64;
        loop {
            let current = view.borrow_and_update().clone();
            let (specs, leaving) = ring_members(&current, &mut dead_since, grace);
            let both = (specs, leaving);
            if last.as_ref() != Some(&both) {
                let (specs, leaving) = &both;
                match Ring::build(specs, DEFAULT_VNODES) {
                    Ok(ring) => {
                        info!(nodes = specs.len(), leaving = leaving.len(), digest = %ring.digest().short(), "ring rebuilt");
                        rebuilds += 1;
                        let full = if leaving.is_empty() {
                            None
                        } else {
                            let mut all = specs.clone();
                            all.extend(leaving.iter().cloned());
                            all.sort_by_key(|s| s.id);
                            Ring::build(&all, DEFAULT_VNODES).ok()
                        };
                        let _ = tx.send(Arc::new(RingState {
                            ring: Some(ring),
                            full,
                            rebuilds,
                        }));
                    }
                    Err(e) => warn!(err = %e, "cannot build the ring from the view"),
                }
                last = Some(both);
            }
            tokio::select! {
                changed = view.changed() => if changed.is_err() { break },
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    });
    rx
}

/// The ring's members (live ones, and dead ones within the grace), and
/// apart from them the live members that are leaving: the ring no longer
/// counts them, but their ranges are read from them until taken over.
fn ring_members(
    view: &View,
    dead_since: &mut BTreeMap<NodeId, Instant>,
    grace: Duration,
) -> (Vec<NodeSpec>, Vec<NodeSpec>) {
    let now = Instant::now();
    let spec = |m: &ringkv_gossip::Member| {
        let mut s = NodeSpec::new(m.id).with_weight(m.meta.weight.max(1));
        s.zone = m.meta.zone.clone();
        s
    };
    let (mut out, mut leaving) = (Vec::new(), Vec::new());
    if view.me.meta.status == NodeStatus::Leaving {
        leaving.push(spec(&view.me));
    } else {
        out.push(spec(&view.me));
    }
    for m in &view.members {
        match m.state {
            State::Alive | State::Suspect if m.meta.status == NodeStatus::Leaving => {
                dead_since.remove(&m.id);
                leaving.push(spec(m));
            }
            State::Alive | State::Suspect => {
                dead_since.remove(&m.id);
                out.push(spec(m));
            }
            State::Dead => {
                let since = *dead_since.entry(m.id).or_insert(now);
                if now.duration_since(since) < grace {
                    out.push(spec(m));
                }
            }
            State::Left => {
                dead_since.remove(&m.id);
            }
        }
    }
    out.sort_by_key(|s| s.id);
    leaving.sort_by_key(|s| s.id);
    (out, leaving)
}

/// Says, once in a while, why this peer has not joined yet: nobody
/// answering (seeds down or wrong addresses) or seeds refusing our
/// certificate (another cluster's key).
fn spawn_join_watch(handle: Handle, seeds: Vec<SocketAddr>) {
    use std::sync::atomic::Ordering::Relaxed;
    tokio::spawn(async move {
        let mut wait = Duration::from_secs(5);
        loop {
            tokio::time::sleep(wait).await;
            if handle.view.borrow().joined {
                return;
            }
            let seeds: Vec<String> = seeds.iter().map(ToString::to_string).collect();
            let t = &handle.transport;
            if t.handshake_failures.load(Relaxed) > 0 {
                warn!(seeds = %seeds.join(","), "not joined yet: the seeds refused the handshake; is --cluster-key the key of their cluster?");
            } else if t.connect_timeouts.load(Relaxed) > 0 {
                warn!(seeds = %seeds.join(","), "not joined yet: no seed answers; are they running, and are these their --listen addresses? still retrying");
            } else {
                warn!(seeds = %seeds.join(","), "not joined yet; still retrying");
            }
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    });
}

/// Drops pooled replica connections to members that died, left or came
/// back with a new incarnation: a connection to a dead process looks open
/// until its idle timeout, and requests on it would only time out.
fn spawn_pool_invalidation(mut view: watch::Receiver<Arc<View>>, kv: Arc<Kv>) {
    tokio::spawn(async move {
        let mut seen: BTreeMap<NodeId, (u64, State, SocketAddr)> = BTreeMap::new();
        loop {
            let current = view.borrow_and_update().clone();
            for m in &current.members {
                let now = (m.incarnation, m.state, m.meta.addr);
                if let Some(before) = seen.insert(m.id, now) {
                    if before != now {
                        kv.peers.forget(before.2);
                    }
                }
            }
            if view.changed().await.is_err() {
                break;
            }
        }
    });
}

/// Background upkeep of the store: hint replay every second, tombstone
/// collection every minute.
fn spawn_maintenance(kv: Arc<Kv>, tombstone_grace: Duration) {
    tokio::spawn(async move {
        let mut round = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            kv.replay_hints().await;
            round += 1;
            if round % 10 == 0 {
                kv.hot.lock().expect("hot lock").decay();
            }
            if round % 60 == 0 {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let before = now.saturating_sub(tombstone_grace).as_millis();
                match kv
                    .store
                    .collect_tombstones(u64::try_from(before).unwrap_or(0))
                {
                    Ok(0) => {}
                    Ok(n) => info!(collected = n, "tombstones past their grace collected"),
                    Err(e) => warn!(err = %e, "cannot collect tombstones"),
                }
            }
        }
    });
}

/// Progress entry: wall-clock milliseconds at which this peer was last up.
const ALIVE_AT: &str = "alive-at";

/// How long this peer was away decides what its data is worth. Away
/// longer than the dead grace, the others moved its ranges and took writes
/// without it: it must pull everything again (returns true). Away longer
/// than the tombstone grace, the deletes it missed are forgotten
/// everywhere: its old records would bring deleted keys back, so they go.
fn check_absence(
    store: &ringkv_storage::Store,
    dead_grace: Duration,
    tombstone_grace: Duration,
) -> Result<bool> {
    let Some(bytes) = store.progress(ALIVE_AT)? else {
        return Ok(false);
    };
    let Ok(raw) = <[u8; 8]>::try_from(bytes.as_slice()) else {
        return Ok(true);
    };
    let away = Duration::from_millis(wall_ms().saturating_sub(u64::from_be_bytes(raw)));
    if away > tombstone_grace {
        let n = store.clear_records()?;
        warn!(
            away = ?away,
            records = n,
            "this peer was away longer than the tombstone grace: its old records are dropped and its ranges will be pulled afresh"
        );
        return Ok(true);
    }
    if away > dead_grace {
        info!(away = ?away, "this peer was away longer than the dead grace: its ranges will be compared afresh");
        return Ok(true);
    }
    Ok(false)
}

/// Keeps the clock's high-water mark on disk, two seconds ahead, so a
/// restarted peer's versions are above anything it issued before a crash.
fn spawn_clock_floor(kv: Arc<Kv>) {
    tokio::spawn(async move {
        loop {
            let mut floor = kv.clock.lock().expect("clock lock").last();
            floor.physical_ms += 2000;
            if let Err(e) = kv.store.store_hlc_floor(floor) {
                warn!(err = %e, "cannot store the clock's high-water mark");
            }
            if let Err(e) = kv.store.set_progress(ALIVE_AT, &wall_ms().to_be_bytes()) {
                warn!(err = %e, "cannot store the time this peer was last up");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// Keeps the incarnation and the known peers on disk.
fn spawn_persistence(mut view: watch::Receiver<Arc<View>>, dir: DataDir) {
    tokio::spawn(async move {
        let mut stored = view.borrow().me.incarnation;
        let mut peers_saved = Instant::now() - Duration::from_secs(3600);
        loop {
            let current = view.borrow_and_update().clone();
            if current.me.incarnation > stored {
                match dir.store_incarnation(current.me.incarnation) {
                    Ok(()) => stored = current.me.incarnation,
                    Err(e) => warn!(err = %e, "cannot store the incarnation"),
                }
            }
            if peers_saved.elapsed() > Duration::from_secs(10) {
                let peers: Vec<SocketAddr> = current
                    .members
                    .iter()
                    .filter(|m| m.state.is_live())
                    .map(|m| m.meta.addr)
                    .collect();
                if !peers.is_empty() {
                    if let Err(e) = dir.store_peers(&peers) {
                        warn!(err = %e, "cannot store known peers");
                    }
                    peers_saved = Instant::now();
                }
            }
            if view.changed().await.is_err() {
                break;
            }
        }
    });
}
