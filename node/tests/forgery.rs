//! Issue 14, item 1, end to end: a process that holds the cluster key but
//! has an identity of its own connects over QUIC and sends, on a uni
//! stream exactly as gossip does, `Left { id: p3, incarnation: u64::MAX }`
//! (unsigned, and signed with its own key) plus a Left of p3 at a
//! believable incarnation signed with its own key. p1 and p2 must still
//! hold p3 alive after a later, legitimate change (p4 joining) has reached
//! them, and count the rejections. In-process peers on 127.0.0.1:0, temp
//! dirs, bounded polls, everything stopped at the end.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ringkv_gossip::proto::auth;
use ringkv_gossip::proto::codec;
use ringkv_gossip::transport::tls::{client_config, SERVER_NAME};
use ringkv_gossip::{Body, ClusterKey, Ed25519Auth, Envelope, NodeIdentity, Sig, State, Update};
use ringkv_node::config::Settings;
use ringkv_node::daemon::{self, Listeners, Peer};
use ringkv_testbed::{http, ready};

/// Longest any one wait here may take; they return as soon as they hold.
const WAIT: Duration = Duration::from_secs(30);

fn subscribe() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

fn settings(dir: &Path, name: &str, seed: Option<(SocketAddr, &Path)>) -> Settings {
    let data = dir.join(name);
    let mut flags: Vec<String> = [
        "--data",
        &data.display().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--name",
        name,
        "--admin",
        "127.0.0.1:0",
        "--settle",
        "200ms",
        "--leave-timeout",
        "10s",
        "--ready-file",
        &ready::path_for(&data).display().to_string(),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    if let Some((addr, seed_data)) = seed {
        flags.extend(["--join".to_owned(), addr.to_string()]);
        flags.push("--cluster-key-file".to_owned());
        flags.push(seed_data.join("cluster.key").display().to_string());
    }
    Settings::from_flags(flags).expect("settings")
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `(state, incarnation)` of member `name` in `peer`'s view.
fn state_of(peer: &Peer, name: &str) -> Option<(State, u64)> {
    let view = peer.view().borrow().clone();
    view.members
        .iter()
        .find(|m| m.meta.name == name)
        .map(|m| (m.state, m.incarnation))
}

fn rejected(peer: &Peer) -> u64 {
    peer.view().borrow().stats.rejected.total()
}

/// Sends `env` to `to` on a fresh QUIC connection, one uni stream, as the
/// gossip runner sends stream messages; waits until the receiver has
/// acknowledged every byte.
async fn send_as_gossip(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    to: SocketAddr,
    env: &Envelope,
) {
    let bytes = codec::encode(env).expect("encodes");
    let conn = tokio::time::timeout(
        WAIT,
        endpoint.connect_with(config, to, SERVER_NAME).unwrap(),
    )
    .await
    .expect("connects in time")
    .expect("the cluster key is enough for a handshake");
    let mut stream = conn.open_uni().await.expect("a uni stream");
    stream.write_all(&bytes).await.expect("written");
    stream.finish().expect("finished");
    let _ = tokio::time::timeout(WAIT, stream.stopped()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_left_from_a_cluster_key_holder_changes_nobodys_view() {
    subscribe();
    let dir = tempfile::tempdir().expect("temp dir");
    let p1 = daemon::start(settings(dir.path(), "p1", None), Listeners::default())
        .await
        .expect("p1 starts");
    let seed = (p1.addrs().quic, dir.path().join("p1"));
    let mut peers = vec![p1];
    for name in ["p2", "p3"] {
        let s = settings(dir.path(), name, Some((seed.0, &seed.1)));
        peers.push(
            daemon::start(s, Listeners::default())
                .await
                .expect("starts"),
        );
    }
    eventually("p1 and p2 hold p3 alive", || {
        peers[..2]
            .iter()
            .all(|p| state_of(p, "p3").is_some_and(|(s, _)| s == State::Alive))
    })
    .await;

    // The attacker: the cluster key, and an identity of its own.
    let key_text = std::fs::read_to_string(seed.1.join("cluster.key")).expect("key file");
    let key = ClusterKey::parse(key_text.trim()).expect("a cluster key");
    let me = NodeIdentity::generate().expect("an identity");
    let signer = Ed25519Auth::new(&me).expect("a signer");
    let config = client_config(&key, &me).expect("client config");
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("endpoint");
    let p3 = peers[2].addrs().id;
    let p3_incarnation = peers[2].view().borrow().me.incarnation;
    let left = |incarnation| Update::Left {
        id: p3,
        incarnation,
        sig: Sig::NONE,
    };
    let updates = vec![
        left(u64::MAX),
        auth::sign(&signer, &key.cluster_id(), left(u64::MAX)),
        auth::sign(&signer, &key.cluster_id(), left(p3_incarnation + 1)),
    ];
    let before: Vec<u64> = peers[..2].iter().map(rejected).collect();
    for target in &peers[..2] {
        for update in &updates {
            let env = Envelope {
                cluster: key.cluster_id(),
                from: me.node_id(),
                from_addr: endpoint.local_addr().expect("bound"),
                view: 0,
                shape: 0,
                body: Body::Gossip,
                updates: vec![update.clone()],
            };
            send_as_gossip(&endpoint, config.clone(), target.addrs().quic, &env).await;
        }
    }
    // A later, legitimate change must reach p1 and p2: by then the forged
    // statements had every chance to spread.
    let s = settings(dir.path(), "p4", Some((seed.0, &seed.1)));
    peers.push(
        daemon::start(s, Listeners::default())
            .await
            .expect("p4 starts"),
    );
    eventually("p1 and p2 hold p4 alive", || {
        peers[..2]
            .iter()
            .all(|p| state_of(p, "p4").is_some_and(|(s, _)| s == State::Alive))
    })
    .await;
    for p in &peers[..2] {
        let (state, incarnation) = state_of(p, "p3").expect("p3 known");
        assert_eq!(state, State::Alive, "{}: p3 is {state}", p.addrs().name);
        assert!(
            incarnation < 1 << 20,
            "{}: p3 at incarnation {incarnation}",
            p.addrs().name
        );
    }
    let me3 = peers[2].view().borrow().me.clone();
    assert_eq!(me3.state, State::Alive);
    assert!(me3.incarnation < 1 << 20, "p3 adopted a wild incarnation");
    eventually("p1 and p2 counted the three rejections", || {
        peers[..2]
            .iter()
            .zip(&before)
            .all(|(p, b)| rejected(p) >= b + 3)
    })
    .await;

    // The rejections are exported.
    let admin = peers[0].addrs().admin.expect("admin");
    let metrics = tokio::task::spawn_blocking(move || http::get(admin, "/metrics"))
        .await
        .expect("no panic")
        .expect("metrics");
    assert!(
        metrics.contains("ringkv_gossip_rejected_total{reason=\"incarnation_jump\"}"),
        "no rejection metric in:\n{metrics}"
    );

    endpoint.close(0u32.into(), b"done");
    for peer in peers {
        let name = peer.addrs().name.clone();
        tokio::time::timeout(WAIT, peer.shutdown(std::future::pending()))
            .await
            .unwrap_or_else(|_| panic!("{name} stops in time"));
    }
}

/// Issue 14, item 3, gossip side: p1 learns member x (a real, signed
/// Alive) at an address where another node listens. p1's connection there
/// presents the wrong certificate, so it is dropped and counted, and
/// nothing meant for x reaches the impostor (x ends up dead at p1: it is
/// never reached).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gossip_to_a_member_goes_only_to_a_node_with_its_certificate() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use ringkv_gossip::transport::tls::server_config;
    use ringkv_gossip::Meta;

    subscribe();
    let dir = tempfile::tempdir().expect("temp dir");
    let p1 = daemon::start(settings(dir.path(), "p1", None), Listeners::default())
        .await
        .expect("p1 starts");
    let key_text = std::fs::read_to_string(dir.path().join("p1/cluster.key")).expect("key file");
    let key = ClusterKey::parse(key_text.trim()).expect("a cluster key");

    // The impostor: a cluster peer of its own identity, counting whatever
    // it receives.
    let impostor = NodeIdentity::generate().expect("an identity");
    let server = quinn::Endpoint::server(
        server_config(&key, &impostor).expect("server config"),
        "127.0.0.1:0".parse().unwrap(),
    )
    .expect("server endpoint");
    let received = Arc::new(AtomicU64::new(0));
    let handshakes = Arc::new(AtomicU64::new(0));
    let accepting = server.clone();
    let (counter, shaken) = (received.clone(), handshakes.clone());
    let task = tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            let Ok(conn) = incoming.await else { continue };
            shaken.fetch_add(1, Ordering::Relaxed);
            let counter = counter.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        d = conn.read_datagram() => match d {
                            Ok(_) => { counter.fetch_add(1, Ordering::Relaxed); }
                            Err(_) => break,
                        },
                        s = conn.accept_uni() => match s {
                            Ok(_) => { counter.fetch_add(1, Ordering::Relaxed); }
                            Err(_) => break,
                        },
                    }
                }
            });
        }
    });
    let impostor_addr = server.local_addr().expect("bound");

    // x announces itself, properly signed, at the impostor's address.
    let x = NodeIdentity::generate().expect("an identity");
    let x_auth = Ed25519Auth::new(&x).expect("a signer");
    let alive = auth::sign(
        &x_auth,
        &key.cluster_id(),
        Update::Alive {
            id: x.node_id(),
            incarnation: 1,
            meta: Meta::new(impostor_addr, "x").into(),
            key: ringkv_gossip::Auth::public_key(&x_auth),
            sig: Sig::NONE,
        },
    );
    let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("endpoint");
    let env = Envelope {
        cluster: key.cluster_id(),
        from: x.node_id(),
        from_addr: impostor_addr,
        view: 0,
        shape: 0,
        body: Body::Gossip,
        updates: vec![alive],
    };
    let config = client_config(&key, &x).expect("client config");
    send_as_gossip(&client, config, p1.addrs().quic, &env).await;
    eventually("p1 knows x", || state_of(&p1, "x").is_some()).await;

    // p1 keeps trying x and never reaches it, so it declares x dead, and
    // then pings it now and then to find healed partitions: several
    // handshakes with the impostor, and nothing sent on any of them.
    eventually("p1 declares the unreachable x dead", || {
        state_of(&p1, "x").is_some_and(|(s, _)| s == State::Dead)
    })
    .await;
    let shaken = handshakes.load(Ordering::Relaxed);
    eventually(
        "p1 dialled the impostor twice more, or sent it something",
        || handshakes.load(Ordering::Relaxed) >= shaken + 2 || received.load(Ordering::Relaxed) > 0,
    )
    .await;
    assert_eq!(
        received.load(Ordering::Relaxed),
        0,
        "the impostor received gossip meant for x"
    );
    let transport = p1.transport();
    assert!(transport.peer_mismatch.load(Ordering::Relaxed) >= shaken + 2);

    client.close(0u32.into(), b"done");
    server.close(0u32.into(), b"done");
    task.abort();
    tokio::time::timeout(WAIT, p1.shutdown(std::future::pending()))
        .await
        .expect("p1 stops in time");
}
