//! The hostile-client suite (issue 14, item 8): one real three-peer
//! cluster, attacked in turn the ways the issue's findings did. Every
//! attack must be refused (the attacker gets the refusal or the closed
//! connection), counted in `/metrics`, and change nothing (members, their
//! incarnations, a canary key); after all of them the attacked peer still
//! answers within a bound of its own baseline latency, with bounded
//! memory. Real processes on 127.0.0.1 (admin HTTP bound to 0.0.0.0 so
//! the token rule applies; the test only ever connects to 127.0.0.1),
//! ephemeral ports, temp dirs, bounded waits, every process killed on drop.
//!
//! The attacks each have a focused test elsewhere (`forgery.rs`,
//! `roles.rs`, `hostile_resp.rs`, `admin.rs`, `handshakes.rs`, the
//! `roles_tests` and `rotation_tests` in the crate); this suite runs them
//! together against one cluster and adds the latency and memory bounds.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use ringkv_gossip::proto::{auth, codec};
use ringkv_gossip::transport::credentials::ClientCredentials;
use ringkv_gossip::transport::tls::{client_config, SERVER_NAME};
use ringkv_gossip::{Body, ClusterKey, Ed25519Auth, Envelope, NodeIdentity, Sig, Update};
use serde_json::Value;

const TOKEN: &str = "hostile-suite-admin-token-0123456789";
const PASSWORD: &str = "hostile-suite-resp-password";

/// The attacked peer's request latency after every attack, against its
/// own baseline: p99 of PINGs at most this many times the baseline p99...
const LATENCY_FACTOR: u32 = 20;
/// ...or this, whichever is larger: CI runs on a loaded 2-core machine,
/// where a 1 ms baseline says little about a scheduler hiccup.
const LATENCY_FLOOR: Duration = Duration::from_millis(500);
/// Most the attacked peer's resident memory may grow over the whole
/// suite. The 40 unauthenticated half-16-MiB requests alone used to cost
/// 343 MB; the cap on unauthenticated requests makes them cost nothing.
const MEMORY_GROWTH_MAX_KB: u64 = 64 * 1024;

fn loopback(addr: SocketAddr) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], addr.port()))
}

/// A GET on the admin HTTP with `token` (or none): status and body.
fn admin_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut conn = TcpStream::connect(loopback(addr)).expect("admin connects");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut text = String::new();
    let _ = conn.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

fn metrics(peer: &Peer) -> String {
    let (status, body) = admin_get(peer.admin.expect("admin"), "/metrics", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    body
}

/// The sum of every series of `family` whose labels contain `labels`.
fn counter(metrics: &str, family: &str, labels: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn rss_kb(peer: &Peer) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", peer.child.id()))
        .expect("/proc status")
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .expect("VmRSS")
}

/// A RESP connection that authenticated.
fn resp(peer: &Peer) -> TcpStream {
    let mut conn = TcpStream::connect(peer.resp.expect("resp")).expect("resp connects");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.set_nodelay(true).unwrap();
    conn.write_all(&multibulk(&[b"AUTH", PASSWORD.as_bytes()]))
        .unwrap();
    assert_eq!(read_line(&mut conn), "+OK");
    conn
}

fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One reply line (without CRLF); empty if the peer closed.
fn read_line(conn: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match conn.read(&mut b) {
            Ok(1) => line.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&line).trim_end().to_owned()
}

/// p99 of `n` PINGs on one authenticated connection.
fn ping_p99(peer: &Peer, n: usize) -> Duration {
    let mut conn = resp(peer);
    let mut took: Vec<Duration> = (0..n)
        .map(|_| {
            let at = Instant::now();
            conn.write_all(b"PING\r\n").unwrap();
            assert_eq!(read_line(&mut conn), "+PONG");
            at.elapsed()
        })
        .collect();
    took.sort();
    took[(n * 99 / 100).min(n - 1)]
}

/// `ringkv members --json` from `peer`: name -> (state, incarnation).
fn states(peer: &Peer, key: &str) -> Vec<(String, String, u64)> {
    let view: Value = members(peer.addr, key).expect("members answers");
    let mut out: Vec<(String, String, u64)> = view["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_owned(),
                m["state"].as_str().unwrap_or_default().to_owned(),
                m["incarnation"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    out.sort();
    out
}

/// Nothing changed: every peer lists every member alive at a believable
/// incarnation, and the canary reads back.
fn unchanged(peers: &[Peer], key: &str, after: &str) {
    for p in peers {
        let s = states(p, key);
        assert_eq!(s.len(), 3, "{after}: {}: {s:?}", p.name);
        for (name, state, inc) in &s {
            assert_eq!(state, "alive", "{after}: {} sees {name} {state}", p.name);
            assert!(*inc < 1 << 20, "{after}: {} sees {name} at {inc}", p.name);
        }
    }
    let out = Command::new(BIN)
        .args(["get", "canary", "--peer", &peers[1].addr.to_string()])
        .args(["--cluster-key", key])
        .output()
        .expect("ringkv runs");
    assert!(out.status.success(), "{after}: {out:?}");
    assert_eq!(out.stdout, b"v1", "{after}: the canary changed");
}

/// Sends each of `updates` to `to` on a fresh QUIC connection, one uni
/// stream each, as the gossip runner sends stream messages.
async fn send_gossip(key: &ClusterKey, me: &NodeIdentity, to: SocketAddr, updates: Vec<Update>) {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("endpoint");
    let config = client_config(key, me).expect("client config");
    let conn = tokio::time::timeout(
        Duration::from_secs(20),
        endpoint.connect_with(config, to, SERVER_NAME).unwrap(),
    )
    .await
    .expect("connects in time")
    .expect("the cluster key is enough for a handshake");
    for update in updates {
        let env = Envelope {
            cluster: key.cluster_id(),
            from: me.node_id(),
            from_addr: endpoint.local_addr().expect("bound"),
            view: 0,
            shape: 0,
            body: Body::Gossip,
            updates: vec![update],
        };
        let mut stream = conn.open_uni().await.expect("a uni stream");
        stream
            .write_all(&codec::encode(&env).expect("encodes"))
            .await
            .expect("written");
        stream.finish().expect("finished");
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.stopped()).await;
    }
    endpoint.close(0u32.into(), b"done");
}

fn node_id(view: &Value, name: &str) -> ringkv_gossip::NodeId {
    view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .and_then(|m| m["id"].as_str()?.parse().ok())
        .expect("a member id")
}

#[test]
fn every_attack_is_refused_counted_and_changes_nothing_and_the_peer_keeps_answering() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let token = token.display().to_string();
    let extra = [
        "--admin",
        "0.0.0.0:0",
        "--admin-token-file",
        &token,
        "--resp",
        "127.0.0.1:0",
        "--resp-password",
        PASSWORD,
    ];
    let (peers, key) = converged_cluster(dir.path(), 3, &extra);
    let victim = &peers[0];
    let put = Command::new(BIN)
        .args(["put", "canary", "v1", "--peer", &victim.addr.to_string()])
        .args(["--cluster-key", &key])
        .output()
        .expect("ringkv runs");
    assert!(put.status.success(), "{put:?}");
    unchanged(&peers, &key, "before any attack");
    let baseline = ping_p99(victim, 200);
    let rss_before = rss_kb(victim);
    let m = metrics(victim);
    let before = |family: &str, labels: &str| counter(&m, family, labels);
    let (rejected0, refused0, unauth0, pattern0, admin0) = (
        before("ringkv_gossip_rejected_total", ""),
        before("ringkv_rpc_refused_total", "reason=\"role\""),
        before(
            "ringkv_resp_rejected_total",
            "reason=\"unauthenticated_request\"",
        ),
        before("ringkv_resp_rejected_total", "reason=\"pattern_too_long\""),
        before("ringkv_admin_rejected_total", "reason=\"unauthorized\""),
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster_key = ClusterKey::parse(&key).unwrap();

    // 1. Forged membership statements from a cluster-key holder: p3 left
    //    at u64::MAX (unsigned, and signed by the attacker), p3 suspect and
    //    dead "by p2" (signed by the attacker, not p2).
    let view: Value = members(victim.addr, &key).unwrap();
    let (p2, p3) = (node_id(&view, "p2"), node_id(&view, "p3"));
    let me = NodeIdentity::generate().unwrap();
    let signer = Ed25519Auth::new(&me).unwrap();
    let id = cluster_key.cluster_id();
    let forged = vec![
        Update::Left {
            id: p3,
            incarnation: u64::MAX,
            sig: Sig::NONE,
        },
        auth::sign(
            &signer,
            &id,
            Update::Left {
                id: p3,
                incarnation: u64::MAX,
                sig: Sig::NONE,
            },
        ),
        auth::sign(
            &signer,
            &id,
            Update::Suspect {
                id: p3,
                incarnation: 5,
                by: p2,
                sig: Sig::NONE,
            },
        ),
        auth::sign(
            &signer,
            &id,
            Update::Dead {
                id: p3,
                incarnation: 5,
                by: p2,
                sig: Sig::NONE,
            },
        ),
    ];
    let n_forged = forged.len() as u64;
    rt.block_on(send_gossip(&cluster_key, &me, victim.addr, forged));
    wait_for(CONVERGE, "the forged statements are counted", || {
        counter(&metrics(victim), "ringkv_gossip_rejected_total", "") >= rejected0 + n_forged
    });
    unchanged(&peers, &key, "forged statements");

    // 2. A client credential sending every peer-only request.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let creds = ClientCredentials::issue(&cluster_key, "mallory", now - 60, now + 3600).unwrap();
    for kind in ringkv_node::attack::PEER_ONLY {
        let answer = rt.block_on(ringkv_node::attack::peer_request_as_client(
            victim.addr,
            &creds,
            kind,
        ));
        let why = answer.expect_err(kind);
        assert!(why.starts_with("Refused"), "{kind}: {why}");
        assert!(why.contains("client credentials may not"), "{kind}: {why}");
    }
    let refused = counter(
        &metrics(victim),
        "ringkv_rpc_refused_total",
        "reason=\"role\"",
    );
    assert!(
        refused >= refused0 + ringkv_node::attack::PEER_ONLY.len() as u64,
        "refusals counted: {refused0} -> {refused}"
    );
    unchanged(&peers, &key, "client credentials sending peer requests");

    // 3. RESP abuse. A CONFIG GET pattern of a million '*' (it overflowed
    //    a worker's stack) is refused; '*' x 60 + 'q' (it backtracked for
    //    ever) is answered at once.
    let mut conn = resp(victim);
    let stars = vec![b'*'; 1_000_000];
    conn.write_all(&multibulk(&[b"CONFIG", b"GET", &stars]))
        .unwrap();
    let line = read_line(&mut conn);
    assert!(line.starts_with("-ERR"), "{line}");
    let mut pattern = vec![b'*'; 60];
    pattern.push(b'q');
    let at = Instant::now();
    conn.write_all(&multibulk(&[b"CONFIG", b"GET", &pattern]))
        .unwrap();
    assert_eq!(read_line(&mut conn), "*0", "an empty match list");
    assert!(
        at.elapsed() < Duration::from_secs(2),
        "took {:?}",
        at.elapsed()
    );
    // 40 unauthenticated clients, each announcing a 16 MiB bulk string and
    // sending half of it: each is cut off at the header, nothing buffered.
    let half = vec![b'x'; 8 << 20];
    let mut cut = 0;
    for _ in 0..40 {
        let mut c = TcpStream::connect(victim.resp.unwrap()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = c.write_all(b"*2\r\n$3\r\nSET\r\n$16777216\r\n");
        let _ = c.write_all(&half);
        let line = read_line(&mut c);
        cut += usize::from(line.contains("unauthenticated") || line.is_empty());
    }
    assert_eq!(cut, 40, "every unauthenticated client was cut off");
    let m = metrics(victim);
    assert!(
        counter(
            &m,
            "ringkv_resp_rejected_total",
            "reason=\"unauthenticated_request\""
        ) >= unauth0 + 40,
        "unauthenticated requests counted"
    );
    assert!(
        counter(
            &m,
            "ringkv_resp_rejected_total",
            "reason=\"pattern_too_long\""
        ) > pattern0,
        "the long pattern counted"
    );
    unchanged(&peers, &key, "RESP abuse");

    // 4. Admin HTTP without the token on its non-loopback bind.
    for path in [
        "/metrics",
        "/v1/members",
        "/v1/ring",
        "/v1/faults",
        "/v1/members?wait=1s",
    ] {
        let (status, _) = admin_get(victim.admin.unwrap(), path, None);
        assert_eq!(status, 401, "{path} without a token");
    }
    let (status, _) = admin_get(victim.admin.unwrap(), "/health", None);
    assert!(
        status == 200 || status == 503,
        "/health stays open: {status}"
    );
    assert!(
        counter(
            &metrics(victim),
            "ringkv_admin_rejected_total",
            "reason=\"unauthorized\""
        ) >= admin0 + 5
    );

    // 5. A flood of stalled QUIC handshakes from 24 other loopback
    //    addresses: the CLI still gets in, the admission counters move.
    let packets = initials(280);
    let target = victim.addr;
    let sockets = std::thread::spawn(move || flood(target, &packets, 24))
        .join()
        .unwrap();
    let at = Instant::now();
    assert!(
        members(victim.addr, &key).is_some(),
        "the CLI was locked out by the flood"
    );
    assert!(
        at.elapsed() < Duration::from_secs(4),
        "the CLI took {:?}",
        at.elapsed()
    );
    drop(sockets);
    let m = metrics(victim);
    assert!(
        counter(&m, "ringkv_quic_retries_total", "")
            + counter(&m, "ringkv_quic_handshakes_refused_total", "")
            > 0,
        "the flood met no admission limit"
    );

    // 6. Garbage datagrams on the QUIC port.
    let garbage = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..2000u32 {
        let bytes: Vec<u8> = (0..(i % 1400 + 1))
            .map(|j| (i * 31 + j * 7) as u8)
            .collect();
        let _ = garbage.send_to(&bytes, victim.addr);
    }

    // After everything: nothing changed, the peer answers at its normal
    // latency, and its memory is bounded.
    unchanged(&peers, &key, "all attacks");
    let after = ping_p99(victim, 200);
    let bound = (baseline * LATENCY_FACTOR).max(LATENCY_FLOOR);
    assert!(
        after <= bound,
        "PING p99 {after:?} after the attacks, baseline {baseline:?}, bound {bound:?}"
    );
    let grown = rss_kb(victim).saturating_sub(rss_before);
    eprintln!(
        "hostile suite: PING p99 {baseline:?} before, {after:?} after (bound {bound:?}); resident {rss_before} kB before, +{grown} kB after"
    );
    assert!(
        grown <= MEMORY_GROWTH_MAX_KB,
        "resident memory grew by {grown} kB (from {rss_before} kB), bound {MEMORY_GROWTH_MAX_KB} kB"
    );
}
