//! Issue 14 item 2, roles, end to end: an operator issues client
//! credentials with `ringkv credentials issue`; the CLI puts and gets with
//! them; an expired file is refused with "credentials expired" (exit 4),
//! and so is a revoked one after `ringkv credentials revoke`;
//! gossip sent on a client credential's connection is dropped unread and
//! counted, and the member view stays as it was. Real processes and
//! in-process peers on 127.0.0.1:0, temp dirs, bounded polls, everything
//! stopped at the end.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use ringkv_gossip::proto::{auth, codec};
use ringkv_gossip::transport::credentials::ClientCredentials;
use ringkv_gossip::transport::tls::SERVER_NAME;
use ringkv_gossip::{Body, ClusterKey, Ed25519Auth, Envelope, Meta, NodeIdentity, Sig, Update};
use ringkv_node::config::Settings;
use ringkv_node::daemon::{self, Listeners, Peer as InProc};

const WAIT: Duration = Duration::from_secs(30);

fn ringkv(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RINGKV_CLUSTER_KEY")
        .env_remove("RINGKV_CREDENTIALS")
        .output()
        .expect("ringkv runs")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[test]
fn issued_credentials_put_and_get_and_an_expired_file_exits_4() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let p1 = Peer::start(dir.path(), "p1", &[]);
    let peer = p1.addr.to_string();
    let key_file = p1.data.join("cluster.key");
    let key_file = key_file.to_str().unwrap();
    let creds = dir.path().join("app.credentials");
    let creds = creds.to_str().unwrap();

    let out = ringkv(&[
        "credentials",
        "issue",
        "--name",
        "app",
        "--expires",
        "90d",
        "--out",
        creds,
        "--cluster-key-file",
        key_file,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let written = std::fs::read_to_string(creds).unwrap();
    assert!(!written.contains(&p1.key()[5..]), "the file holds the key");

    // Until the peer has announced its ring a put may fail: poll.
    let deadline = Instant::now() + CONVERGE;
    loop {
        let out = ringkv(&[
            "put",
            "user:1",
            "ada",
            "--peer",
            &peer,
            "--credentials",
            creds,
        ]);
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "no put: {}", text(&out));
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = Command::new(BIN)
        .args(["get", "user:1", "--peer", &peer])
        .env("RINGKV_CREDENTIALS", creds)
        .env_remove("RINGKV_CLUSTER_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(out.stdout, b"ada");
    let out = ringkv(&["members", "--peer", &peer, "--credentials", creds]);
    assert!(out.status.success(), "{}", text(&out));
    // The cluster key still works (it makes the CLI a peer).
    let out = ringkv(&[
        "get",
        "user:1",
        "--peer",
        &peer,
        "--cluster-key-file",
        key_file,
    ]);
    assert!(out.status.success(), "{}", text(&out));

    // An expired file: refused, clearly, exit 4.
    let key = ClusterKey::parse(&p1.key()).unwrap();
    let expired = ClientCredentials::issue(&key, "old", now() - 7200, now() - 3600).unwrap();
    let expired_file = dir.path().join("old.credentials");
    std::fs::write(&expired_file, expired.to_text()).unwrap();
    let out = ringkv(&[
        "get",
        "user:1",
        "--peer",
        &peer,
        "--credentials",
        expired_file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("credentials expired"),
        "{}",
        text(&out)
    );
    // Revoked through the peer by an operator: refused, exit 4.
    let out = ringkv(&[
        "credentials",
        "revoke",
        "--name",
        "app",
        "--peer",
        &peer,
        "--cluster-key-file",
        key_file,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // The peer's own view takes the new metadata a moment later: poll.
    let deadline = Instant::now() + CONVERGE;
    loop {
        let out = ringkv(&["get", "user:1", "--peer", &peer, "--credentials", creds]);
        if String::from_utf8_lossy(&out.stderr).contains("credentials revoked") {
            assert_eq!(out.status.code(), Some(4), "{}", text(&out));
            break;
        }
        assert!(Instant::now() < deadline, "still served: {}", text(&out));
        std::thread::sleep(Duration::from_millis(100));
    }
    // A file that is not credentials: a clear error, nothing sent.
    let out = ringkv(&["get", "user:1", "--peer", &peer, "--credentials", key_file]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a ringkv credentials file"),
        "{}",
        text(&out)
    );
}

fn settings(dir: &Path, name: &str) -> Settings {
    let data = dir.join(name).display().to_string();
    Settings::from_flags(
        [
            "--data",
            &data,
            "--listen",
            "127.0.0.1:0",
            "--name",
            name,
            "--settle",
            "200ms",
            "--admin",
            "127.0.0.1:0",
        ]
        .map(String::from),
    )
    .expect("settings")
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn knows(peer: &InProc, name: &str) -> bool {
    peer.view()
        .borrow()
        .members
        .iter()
        .any(|m| m.meta.name == name)
}

/// A properly signed `Alive` of a new member `x`, from `x`: a peer-key
/// holder sending it makes x a member (forgery.rs relies on that).
fn alive_of_x(key: &ClusterKey, addr: SocketAddr) -> Vec<u8> {
    let x = NodeIdentity::generate().expect("an identity");
    let x_auth = Ed25519Auth::new(&x).expect("a signer");
    let alive = auth::sign(
        &x_auth,
        &key.cluster_id(),
        Update::Alive {
            id: x.node_id(),
            incarnation: 1,
            meta: Meta::new(addr, "x").into(),
            key: ringkv_gossip::Auth::public_key(&x_auth),
            sig: Sig::NONE,
        },
    );
    codec::encode(&Envelope {
        cluster: key.cluster_id(),
        from: x.node_id(),
        from_addr: addr,
        view: 0,
        shape: 0,
        body: Body::Gossip,
        updates: vec![alive],
    })
    .expect("encodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gossip_on_a_client_credentials_connection_is_dropped_and_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p1 = daemon::start(settings(dir.path(), "p1"), Listeners::default())
        .await
        .expect("p1 starts");
    let key_text = std::fs::read_to_string(dir.path().join("p1/cluster.key")).expect("key");
    let key = ClusterKey::parse(key_text.trim()).expect("a cluster key");
    let creds = ClientCredentials::issue(&key, "app", now() - 60, now() + 3600).expect("issued");
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("endpoint");
    let conn = tokio::time::timeout(
        WAIT,
        endpoint
            .connect_with(
                creds.client_config().expect("config"),
                p1.addrs().quic,
                SERVER_NAME,
            )
            .unwrap(),
    )
    .await
    .expect("connects in time")
    .expect("client credentials are enough for a handshake");
    let members_before = p1.view().borrow().members.len();
    let bytes = alive_of_x(&key, endpoint.local_addr().unwrap());

    // As gossip sends it: a uni stream, and a datagram.
    let mut stream = conn.open_uni().await.expect("a uni stream");
    stream.write_all(&bytes).await.expect("written");
    stream.finish().expect("finished");
    let _ = tokio::time::timeout(WAIT, stream.stopped()).await;
    let _ = conn.send_datagram(bytes.clone().into());
    let refused = || p1.transport().gossip_refused_role.load(Ordering::Relaxed);
    eventually("p1 counted the gossip it refused", || refused() >= 1).await;
    assert!(!knows(&p1, "x"), "a client credential added a member");
    assert_eq!(p1.view().borrow().members.len(), members_before);

    // The same bytes from a cluster-key holder do add x: what the client
    // sent would have changed the view.
    let me = NodeIdentity::generate().expect("an identity");
    let peer_conn = tokio::time::timeout(
        WAIT,
        endpoint
            .connect_with(
                ringkv_gossip::transport::tls::client_config(&key, &me).expect("config"),
                p1.addrs().quic,
                SERVER_NAME,
            )
            .unwrap(),
    )
    .await
    .expect("connects in time")
    .expect("handshake");
    let mut stream = peer_conn.open_uni().await.expect("a uni stream");
    stream.write_all(&bytes).await.expect("written");
    stream.finish().expect("finished");
    eventually("p1 learns x from a peer", || knows(&p1, "x")).await;

    // The refusal is exported.
    let admin = p1.addrs().admin.expect("admin");
    let metrics = tokio::task::spawn_blocking(move || ringkv_testbed::http::get(admin, "/metrics"))
        .await
        .expect("no panic")
        .expect("metrics");
    assert!(
        metrics.contains("ringkv_gossip_refused_total{reason=\"role\"}"),
        "no refusal metric in:\n{metrics}"
    );
    assert!(metrics.contains("ringkv_rpc_refused_total{reason=\"role\"}"));

    endpoint.close(0u32.into(), b"done");
    tokio::time::timeout(WAIT, p1.shutdown(std::future::pending()))
        .await
        .expect("p1 stops in time");
}
