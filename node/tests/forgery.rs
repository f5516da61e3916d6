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
