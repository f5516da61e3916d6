//! `ringkv node`: one peer. [`start`] wires it: the data dir, the QUIC
//! endpoint on a gossip thread of its own, the gossip runner, the ring
//! builder and the other background tasks ([`tasks`]), the request
//! server, RESP and the admin HTTP; it returns a running [`Peer`] that
//! [`Peer::shutdown`] ([`shutdown`]) stops. IO: binds sockets, opens the
//! store, prints the startup banner.

#[cfg(test)]
mod absence_tests;
mod banner;
pub(crate) mod seeds;
mod shutdown;
mod tasks;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use metrics_exporter_prometheus::PrometheusHandle;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ringkv_gossip::proto::codec;
use ringkv_gossip::proto::version::ProtocolRange;
use ringkv_gossip::runner::{self, Handle, RunnerParts};
use ringkv_gossip::transport::keyring::Keyring;
use ringkv_gossip::transport::live::TlsKeys;
use ringkv_gossip::transport::tls::{link_transport_config, server_transport_config};
use ringkv_gossip::{Config as GossipConfig, Meta, NodeId, NodeIdentity, NodeStatus, Swim};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use self::shutdown::{ShutdownSignal, Stopped};
use self::tasks::Tasks;
use crate::config::{NodeArgs, Settings};
use crate::datadir::DataDir;
use crate::handoff::Handoff;
use crate::rpc::pool::Peers;
use crate::shared::Kv;
use crate::wall::WallClock;
use ringkv_gossip::transport::faults::FaultSwitch;

/// Sockets the caller bound already (tests bind `127.0.0.1:0`); each one
/// not given is bound from the settings.
#[derive(Debug, Default)]
pub struct Listeners {
    /// The QUIC endpoint's UDP socket (else `listen` is bound).
    pub udp: Option<std::net::UdpSocket>,
    /// The admin HTTP listener (else `admin`, when set, is bound).
    pub admin: Option<TcpListener>,
    /// The RESP listener (else `resp`, when set, is bound); its settings
    /// come from `resp`, or are loopback defaults when that is not set.
    pub resp: Option<TcpListener>,
}

/// Where a started peer serves.
#[derive(Debug, Clone)]
pub struct PeerAddrs {
    /// Its node id.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// The bound QUIC (UDP) address.
    pub quic: SocketAddr,
    /// The admin HTTP address, when served.
    pub admin: Option<SocketAddr>,
    /// The RESP address, when served.
    pub resp: Option<SocketAddr>,
}

/// A running peer; [`Peer::shutdown`] makes it leave.
#[derive(Debug)]
pub struct Peer {
    addrs: PeerAddrs,
    handle: Handle,
    handoff: Arc<Handoff>,
    dir: DataDir,
    tasks: Tasks,
    runner_task: JoinHandle<()>,
    runner_stop: oneshot::Sender<()>,
    /// Keeps the gossip thread up; dropped last.
    _gossip_rt: GossipRuntime,
}

impl Peer {
    /// Where it serves.
    pub fn addrs(&self) -> &PeerAddrs {
        &self.addrs
    }

    /// Its membership view, as the gossip runner publishes it.
    pub fn view(&self) -> tokio::sync::watch::Receiver<Arc<runner::View>> {
        self.handle.view.clone()
    }

    /// The gossip transport's counters.
    pub fn transport(&self) -> Arc<runner::TransportStats> {
        self.handle.transport.clone()
    }
}

/// Runs `ringkv node` until SIGTERM or Ctrl-C, then leaves gracefully (a
/// second signal skips waiting for the handoff).
///
/// # Errors
/// Bad settings, or a peer that cannot start.
pub(crate) async fn run(args: &NodeArgs) -> Result<()> {
    let mut signal = ShutdownSignal::listen()?;
    // Like Redis: as many descriptors as allowed, for RESP clients.
    match crate::resp::guard::raise_fd_limit() {
        Ok((before, after)) => info!(?before, ?after, "file-descriptor soft limit"),
        Err(e) => warn!(err = %e, "cannot raise the file-descriptor limit"),
    }
    let settings = Settings::from_args(args)?;
    let peer = start(settings, Listeners::default()).await?;
    signal.wait().await;
    let stopped = peer.shutdown(signal.wait()).await;
    if !stopped.unfinished.is_empty() {
        warn!(tasks = ?stopped.unfinished, "tasks still running at exit");
    }
    Ok(())
}

/// Starts a peer on `listeners` (and what `settings` says to bind for
/// the rest), serves until `shutdown` completes, then leaves gracefully:
/// the in-process form of `ringkv node`, like mini-redis's
/// `server::run(listener, shutdown)`.
///
/// # Errors
/// As [`start`].
pub async fn serve(
    settings: Settings,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Stopped> {
    let peer = start(settings, listeners).await?;
    shutdown.await;
    Ok(peer.shutdown(std::future::pending()).await)
}

/// What the data dir and the store say about this peer at start.
struct Opened {
    dir: DataDir,
    identity: NodeIdentity,
    id: NodeId,
    keyring: Keyring,
    /// The live TLS material of `keyring`, shared by the endpoint, the
    /// role checks and `ringkv keyring`.
    tls: Arc<TlsKeys>,
    created: bool,
    incarnation: u64,
    store: ringkv_storage::Store,
    clock: ringkv_storage::Clock,
    /// How long this peer was away by its own clock (`None`: a new store).
    away: Option<Duration>,
    /// Whether its ranges must be compared afresh (set once the absence
    /// is settled, in [`start`]).
    forget_ready: bool,
    seeds: Vec<SocketAddr>,
}

fn open(settings: &Settings) -> Result<Opened> {
    let dir = DataDir::open(&settings.data)?;
    let identity = dir.identity()?;
    let id = identity.node_id();
    let seeds = first_seeds(&settings.join);
    let given_key = settings.key.resolve_keyring()?;
    if given_key.is_none() && !settings.join.is_empty() && dir.keyring()?.is_none() {
        bail!("joining a cluster needs its key: pass --cluster-key-file FILE with a copy of its first peer's <DATA>/cluster.key (or set RINGKV_CLUSTER_KEY)");
    }
    let (keyring, created) = dir.bind_cluster(given_key)?;
    let tls = TlsKeys::new(&keyring, &identity).context("cannot build the TLS material")?;
    let incarnation = dir.next_incarnation()?;
    let store = ringkv_storage::Store::open(&settings.data.join("store"))
        .context("cannot open the store")?;
    let clock = ringkv_storage::Clock::new(id, store.generation(), store.hlc_floor());
    let away = tasks::away(&store, WallClock::system().now_ms())?;
    Ok(Opened {
        dir,
        identity,
        id,
        keyring,
        tls,
        created,
        incarnation,
        store,
        clock,
        away,
        forget_ready: false,
        seeds,
    })
}

/// The seed names resolved once at start, every address of each (a
/// name that does not resolve yet is logged and retried later by the
/// seed watch).
fn first_seeds(names: &[crate::seeds::SeedName]) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for name in names {
        match seeds::SystemResolver::resolve_now(name) {
            Ok(addrs) => {
                for a in addrs {
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
            Err(e) => warn!(seed = %name, err = %e, "cannot resolve seed yet; retrying"),
        }
    }
    out
}

fn bind_udp(
    settings: &Settings,
    given: Option<std::net::UdpSocket>,
) -> Result<std::net::UdpSocket> {
    if let Some(socket) = given {
        return Ok(socket);
    }
    std::net::UdpSocket::bind(settings.listen).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "cannot listen on {}: the address is in use (another ringkv?)",
            settings.listen
        ),
        _ => anyhow::anyhow!("cannot listen on {}: {e}", settings.listen),
    })
}

async fn bind_admin(
    settings: &Settings,
    given: Option<TcpListener>,
) -> Result<Option<TcpListener>> {
    if let Some(listener) = given {
        settings.admin_http.check(listener.local_addr()?)?;
        return Ok(Some(listener));
    }
    let Some(addr) = settings.admin else {
        return Ok(None);
    };
    // Settings checked it already; the check stays next to the bind.
    settings.admin_http.check(addr)?;
    let listener = TcpListener::bind(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            anyhow::anyhow!("cannot serve admin HTTP on {addr}: the address is in use")
        }
        _ => anyhow::anyhow!("cannot serve admin HTTP on {addr}: {e}"),
    })?;
    Ok(Some(listener))
}

async fn bind_resp(
    settings: &Settings,
    given: Option<TcpListener>,
) -> Result<Option<(TcpListener, crate::resp::RespConfig)>> {
    match (given, &settings.resp) {
        (Some(listener), config) => {
            let config = match config {
                Some(c) => c.clone(),
                None => crate::resp::RespConfig {
                    listen: listener.local_addr()?,
                    password: None,
                    consistency: crate::rpc::api::Consistency::Quorum,
                    limits: crate::resp::ClientLimits::default(),
                },
            };
            Ok(Some((listener, config)))
        }
        (None, Some(config)) => Ok(Some((crate::resp::bind(config).await?, config.clone()))),
        (None, None) => Ok(None),
    }
}

/// The QUIC endpoint on `socket`, started on the gossip thread, and the
/// client config replicas are reached with.
fn endpoint(
    gossip_rt: &GossipRuntime,
    opened: &Opened,
    socket: std::net::UdpSocket,
    faults: Option<Arc<FaultSwitch>>,
    protocol_max: u8,
) -> Result<(quinn::Endpoint, quinn::ClientConfig)> {
    let mut server = opened
        .tls
        .server_config_up_to(protocol_max)
        .context("cannot build the TLS server config")?;
    server.transport_config(Arc::new(server_transport_config()));
    let mut client = opened
        .tls
        .client_config_up_to(protocol_max)
        .context("cannot build the TLS client config")?;
    // No keep-alive: a link nobody uses idles out (`link_transport_config`).
    client.transport_config(Arc::new(link_transport_config()));
    let endpoint = gossip_rt
        .block_on(async move {
            quinn::Endpoint::new_with_abstract_socket(
                quinn::EndpointConfig::default(),
                Some(server),
                ringkv_gossip::transport::faults::endpoint_socket(socket, faults)?,
                Arc::new(quinn::TokioRuntime),
            )
        })
        .context("cannot start the QUIC endpoint")?;
    Ok((endpoint, client))
}

/// The membership state machine: this peer's metadata, and a join through
/// the seeds and the peers it knew, unless it is alone.
fn swim(
    settings: &Settings,
    opened: &Opened,
    mut meta: Meta,
    protocol_max: u8,
) -> Swim<ChaCha8Rng> {
    let advertise = meta.addr;
    ProtocolRange {
        min: codec::MIN_VERSION,
        max: protocol_max,
    }
    .advertise(&mut meta);
    ringkv_gossip::links::advertise(&mut meta);
    let gossip = GossipConfig {
        cluster: opened.keyring.cluster_id(),
        protocol_max,
        ..GossipConfig::default()
    };
    let rng = match settings.seed {
        Some(seed) => ChaCha8Rng::seed_from_u64(seed),
        None => ChaCha8Rng::from_os_rng(),
    };
    let now = tokio::time::Instant::now().into_std();
    // Statements are signed with the same Ed25519 key as the certificate.
    let auth = ringkv_gossip::Ed25519Auth::new(&opened.identity)
        .expect("the identity loaded and made the certificate, so it signs too");
    let mut swim = Swim::new(
        gossip,
        opened.id,
        opened.incarnation,
        meta,
        rng,
        Box::new(auth),
        now,
    );
    let mut all_seeds = opened.seeds.clone();
    for peer in opened.dir.peers() {
        if !all_seeds.contains(&peer) {
            all_seeds.push(peer);
        }
    }
    all_seeds.retain(|a| *a != advertise);
    if !all_seeds.is_empty() {
        swim.handle_join(now, all_seeds);
    }
    swim
}

/// Test-only: raises this peer's newest wire version to
/// `codec::TEST_VERSION`, so a rolling upgrade can be rehearsed between
/// two "builds" that differ only in it (docs/upgrades.md). Never set in
/// production.
pub(crate) const TEST_PROTOCOL_ENV: &str = "RINGKV_TEST_PROTOCOL_MAX";

/// The newest wire version this peer speaks: [`codec::VERSION`], or what
/// [`TEST_PROTOCOL_ENV`] says (`var`), which must be a version this build
/// knows.
fn protocol_max(var: Option<&str>) -> Result<u8> {
    let Some(var) = var else {
        return Ok(codec::VERSION);
    };
    let v: u8 = var
        .trim()
        .parse()
        .with_context(|| format!("{TEST_PROTOCOL_ENV}={var:?} is not a version number"))?;
    if !(codec::VERSION..=codec::MAX_KNOWN_VERSION).contains(&v) {
        bail!(
            "{TEST_PROTOCOL_ENV}={v}: this build speaks wire versions {}..={}",
            codec::VERSION,
            codec::MAX_KNOWN_VERSION
        );
    }
    Ok(v)
}

fn meta(
    settings: &Settings,
    advertise: SocketAddr,
    name: String,
    admin: Option<SocketAddr>,
) -> Meta {
    let mut meta = Meta::new(advertise, name);
    meta.admin = admin;
    meta.weight = settings.weight;
    meta.zone.clone_from(&settings.zone);
    meta.status = NodeStatus::Normal;
    meta.build = env!("CARGO_PKG_VERSION").to_owned();
    meta
}

fn print_banner(addrs: &PeerAddrs, opened: &Opened, advertise: SocketAddr) {
    let key_file = opened.dir.cluster_key_path();
    let key_file = std::path::absolute(&key_file).unwrap_or(key_file);
    let created = opened
        .created
        .then_some((opened.keyring.primary(), key_file.as_path()));
    for line in banner::lines(addrs, opened.incarnation, created, advertise) {
        println!("{line}");
    }
}

/// Starts a peer: binds what `listeners` does not hold, joins the
/// cluster, spawns every task, prints the banner, and returns once it
/// serves.
///
/// # Errors
/// An unusable data dir or store, an address that cannot be bound, a
/// wildcard `listen` without `advertise`, or joining without the key.
pub async fn start(settings: Settings, listeners: Listeners) -> Result<Peer> {
    let mut opened = open(&settings)?;
    let known: Vec<SocketAddr> = opened
        .seeds
        .iter()
        .copied()
        .chain(opened.dir.peers())
        .collect();
    opened.forget_ready = tasks::settle_absence(
        &opened.store,
        opened.away,
        settings.dead_grace,
        settings.tombstone_grace,
        || {
            tasks::confirm_clock(
                known,
                opened.keyring.primary().clone(),
                WallClock::system(),
                settings.max_clock_offset,
            )
        },
    )
    .await?;
    let socket = bind_udp(&settings, listeners.udp)?;
    let local = socket.local_addr()?;
    // The endpoint and the gossip runner live on a thread of their own, so
    // a peer busy with store requests still answers probes on time: a
    // starved failure detector declares healthy peers dead.
    let gossip_rt = GossipRuntime::start()?;
    let faults = settings
        .testbed_faults
        .then(|| Arc::new(FaultSwitch::new(settings.seed)));
    if faults.is_some() {
        warn!("fault injection is on (--testbed-faults): the admin HTTP can drop and delay this peer's traffic");
    }
    let protocol_max = protocol_max(std::env::var(TEST_PROTOCOL_ENV).ok().as_deref())?;
    if protocol_max != codec::VERSION {
        warn!(
            protocol_max,
            "{TEST_PROTOCOL_ENV} is set: speaking a test-only wire version"
        );
    }
    let (endpoint, client) = endpoint(&gossip_rt, &opened, socket, faults.clone(), protocol_max)?;
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
        .unwrap_or_else(|| format!("node-{}", opened.id.short()));
    let admin = bind_admin(&settings, listeners.admin).await?;
    let resp = bind_resp(&settings, listeners.resp).await?;
    let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
    let swim = swim(
        &settings,
        &opened,
        meta(&settings, advertise, name.clone(), admin_addr),
        protocol_max,
    );
    let mut addrs = PeerAddrs {
        id: opened.id,
        name,
        quic: local,
        admin: admin_addr,
        resp: None,
    };
    print_banner(&addrs, &opened, advertise);
    let served = Serve {
        settings,
        opened,
        swim,
        endpoint,
        client,
        gossip_rt,
        faults,
    };
    let ready_file = served.settings.ready_file.clone();
    let peer = served.spawn(&mut addrs, admin, resp)?;
    if let Some(path) = &ready_file {
        write_ready_file(path, &addrs)?;
    }
    Ok(peer)
}

/// Everything [`start`] built, before the tasks are spawned.
struct Serve {
    settings: Settings,
    opened: Opened,
    swim: Swim<ChaCha8Rng>,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    gossip_rt: GossipRuntime,
    faults: Option<Arc<FaultSwitch>>,
}

impl Serve {
    /// Spawns the gossip runner, the background tasks and the servers.
    fn spawn(
        self,
        addrs: &mut PeerAddrs,
        admin: Option<TcpListener>,
        resp: Option<(TcpListener, crate::resp::RespConfig)>,
    ) -> Result<Peer> {
        let Self {
            settings,
            opened,
            swim,
            endpoint,
            client,
            gossip_rt,
            faults,
        } = self;
        // A quarter of --requests-max wait for a slot; the rest are
        // refused unread as busy (gossip runner, `REQUEST_BUSY`).
        let (req_tx, req_rx) = tokio::sync::mpsc::channel((settings.requests_max / 4).max(1));
        let roles = Arc::new(ringkv_gossip::transport::credentials::Roles::live(
            opened.tls.clone(),
        ));
        let parts = RunnerParts {
            max_stream_message: GossipConfig::default().max_stream_message,
            swim,
            endpoint: endpoint.clone(),
            client_config: client.clone(),
            requests: req_tx,
            handshakes: settings.handshakes.clone(),
            roles,
        };
        let (handle, runner_task, runner_stop) = gossip_rt.spawn_runner(parts);
        let peers = Peers::new(
            endpoint,
            client,
            Duration::from_secs(2),
            handle.commands.clone(),
            handle.view.clone(),
            handle.links.clone(),
        );
        let mut tasks = Tasks::new();
        let removals = Arc::new(crate::removenode::Removals::default());
        let ring_rx = tasks::ring_builder(
            &mut tasks,
            handle.view.clone(),
            settings.dead_grace,
            removals.clone(),
        );
        tasks::persistence(&mut tasks, handle.view.clone(), opened.dir.clone());
        let me = handle.view.borrow().me.meta.addr;
        let seeds_shown = crate::seeds::merge(std::slice::from_ref(&opened.seeds), me);
        tasks::join_watch(&mut tasks, handle.clone(), seeds_shown);
        seed_watch(&mut tasks, &settings, &opened, &handle);
        let wall = WallClock::new(faults.clone());
        let (kv, handoff, dir) = shared(
            &settings,
            opened,
            wall,
            &handle,
            ring_rx.clone(),
            peers,
            removals,
        );
        for (name, task) in handoff.loops() {
            tasks.spawn(name, task);
        }
        tasks.spawn(
            "revocations",
            handoff.clone().revocation_loop(handle.view.clone()),
        );
        if let Some((listener, config)) = resp {
            let (addr, accept) = crate::resp::serve(listener, kv.clone(), config)?;
            tasks.spawn("RESP server", accept);
            addrs.resp = Some(addr);
            println!("ringkv: RESP (Redis protocol) on {addr}");
        }
        store_tasks(&mut tasks, &settings, &kv, &handle, faults.clone());
        tasks.spawn(
            "request server",
            crate::server::serve_requests(
                req_rx,
                handle.clone(),
                ring_rx.clone(),
                kv.clone(),
                handoff.clone(),
                settings.requests_max,
            ),
        );
        if let (Some(listener), Some(addr)) = (admin, addrs.admin) {
            let state = crate::admin::AdminState {
                view: handle.view.clone(),
                ring: ring_rx,
                transport: handle.transport.clone(),
                metrics: metrics_recorder()?,
                started: Instant::now(),
                kv,
                handoff: handoff.clone(),
                faults,
                rejections: Arc::default(),
                key_names: settings.admin_http.key_names,
            };
            serve_admin(
                &mut tasks,
                listener,
                addr,
                state,
                settings.admin_http.clone(),
            );
        }
        Ok(Peer {
            addrs: addrs.clone(),
            handle,
            handoff,
            dir,
            tasks,
            runner_task,
            runner_stop,
            _gossip_rt: gossip_rt,
        })
    }
}

/// Re-resolves the `--join` names on each join attempt and after a
/// partition (see [`crate::seeds`]); nothing to do without names.
fn seed_watch(tasks: &mut Tasks, settings: &Settings, opened: &Opened, handle: &Handle) {
    if settings.join.is_empty() {
        return;
    }
    let me = handle.view.borrow().me.meta.addr;
    let rng = match settings.seed {
        Some(seed) => ChaCha8Rng::seed_from_u64(seed ^ 0x5eed),
        None => ChaCha8Rng::from_os_rng(),
    };
    let watch = seeds::SeedWatch {
        names: settings.join.clone(),
        known: opened.dir.peers(),
        me,
        first: crate::seeds::merge(std::slice::from_ref(&opened.seeds), me),
        retry: crate::seeds::SeedRetry::default(),
        rng,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let resolver: Arc<dyn seeds::Resolve> = Arc::new(seeds::SystemResolver);
    tasks.spawn(
        "seed watch",
        watch.run(resolver, handle.view.clone(), seeds::sighting, tx),
    );
    tasks.spawn("seed forward", seeds::forward(rx, handle.commands.clone()));
}

/// Writes `addrs` and the pid to `path` as one JSON object, atomically
/// (a temporary file renamed over it), so a reader sees all or nothing.
fn write_ready_file(path: &std::path::Path, addrs: &PeerAddrs) -> Result<()> {
    let ready = serde_json::json!({
        "id": addrs.id.to_string(),
        "name": addrs.name,
        "quic": addrs.quic,
        "admin": addrs.admin,
        "resp": addrs.resp,
        "pid": std::process::id(),
    });
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{ready}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write the ready file {}", path.display()))
}

/// The state the peer's tasks share, and handoff (spawned); also returns
/// the data dir, the one part of `opened` left.
fn shared(
    settings: &Settings,
    opened: Opened,
    wall: WallClock,
    handle: &Handle,
    ring: tokio::sync::watch::Receiver<Arc<crate::ring_view::RingState>>,
    peers: Peers,
    removals: Arc<crate::removenode::Removals>,
) -> (Arc<Kv>, Arc<Handoff>, DataDir) {
    let mut kv = Kv::new(
        opened.id,
        opened.store,
        opened.clock,
        wall,
        handle.view.clone(),
        ring,
        peers,
    );
    kv.keyring = Some(crate::keyring::PeerKeyring::new(
        opened.dir.clone(),
        opened.tls.clone(),
        opened.keyring.clone(),
    ));
    kv.removals = removals;
    kv.max_clock_offset = settings.max_clock_offset;
    kv.min_free_space = settings.min_free_space;
    // The first sample before any request: a peer that starts on a full
    // disk must not acknowledge a write in its first second.
    if let Ok(available) = crate::disk::free_bytes(&settings.data) {
        kv.space
            .get_mut()
            .expect("space lock")
            .handle_sample(available, settings.min_free_space);
    }
    let kv = Arc::new(kv);
    let handoff = Handoff::new(
        kv.clone(),
        settings.handoff.clone(),
        handle.commands.clone(),
        handle.view.borrow().me.meta.as_ref().clone(),
        opened.forget_ready,
    );
    (kv, handoff, opened.dir)
}

/// The store's background tasks: maintenance, the clock floor and probe,
/// the disk watch and pool invalidation.
fn store_tasks(
    tasks: &mut Tasks,
    settings: &Settings,
    kv: &Arc<Kv>,
    handle: &Handle,
    faults: Option<Arc<FaultSwitch>>,
) {
    tasks::maintenance(tasks, kv.clone(), settings.tombstone_grace);
    tasks::clock_floor(tasks, kv.clone());
    tasks::clock_probe(tasks, kv.clone());
    tasks::disk_watch(tasks, kv.clone(), settings.data.clone(), faults);
    tasks::pool_invalidation(tasks, handle.view.clone(), kv.clone());
}

/// Serves the admin HTTP on `listener` until the tasks stop.
fn serve_admin(
    tasks: &mut Tasks,
    listener: TcpListener,
    addr: SocketAddr,
    state: crate::admin::AdminState,
    http: crate::admin::settings::AdminHttp,
) {
    let rejections = state.rejections.clone();
    let router = crate::admin::router(Arc::new(state), http.token.clone());
    tasks.spawn(
        "admin HTTP",
        crate::admin::http::serve(listener, router, http, rejections),
    );
    println!("ringkv: admin HTTP on http://{addr}");
}

/// The process's Prometheus recorder, installed by the first peer that
/// serves the admin HTTP: `metrics` has one global recorder, so peers
/// started in one process (tests) share it and report together.
fn metrics_recorder() -> Result<PrometheusHandle> {
    static RECORDER: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut recorder = RECORDER.lock().expect("recorder lock");
    if let Some(handle) = recorder.as_ref() {
        return Ok(handle.clone());
    }
    // Series not updated for a minute are dropped: hot-key series come
    // and go with the keys.
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .idle_timeout(
            metrics_util::MetricKindMask::GAUGE,
            Some(Duration::from_secs(60)),
        )
        .install_recorder()
        .context("cannot start the metrics recorder")?;
    *recorder = Some(handle.clone());
    Ok(handle)
}

/// A single-threaded tokio runtime on a dedicated OS thread, for the QUIC
/// endpoint and the gossip runner. Dropped with the peer.
#[derive(Debug)]
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

    /// Spawns the gossip runner on the gossip thread; it stops when the
    /// returned sender is used or dropped.
    fn spawn_runner(&self, parts: RunnerParts) -> (Handle, JoinHandle<()>, oneshot::Sender<()>) {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (handle, task) = self.block_on(async move {
            runner::spawn(parts, async move {
                let _ = stop_rx.await;
            })
        });
        (handle, task, stop_tx)
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

#[cfg(test)]
mod protocol_tests {
    use super::*;

    #[test]
    fn the_test_protocol_variable_raises_the_maximum_to_a_known_version_only() {
        assert_eq!(protocol_max(None).expect("default"), codec::VERSION);
        assert_eq!(
            protocol_max(Some("4")).expect("the test version"),
            codec::TEST_VERSION
        );
        assert_eq!(protocol_max(Some(" 3 ")).expect("current"), codec::VERSION);
        for bad in ["2", "5", "four", ""] {
            let err = protocol_max(Some(bad)).expect_err(bad);
            assert!(
                format!("{err:#}").contains(TEST_PROTOCOL_ENV),
                "{bad}: {err:#}"
            );
        }
    }
}
