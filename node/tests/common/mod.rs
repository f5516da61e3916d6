//! The process harness shared by the integration tests: real `ringkv node`
//! processes on 127.0.0.1 with ephemeral ports and temporary data dirs,
//! bounded polls, and kill-on-drop.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ringkv_testbed::ready;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_ringkv");

/// How long a cluster may take to agree on members, ring and readiness: a
/// loaded 2-core machine is slow, and waits return as soon as it holds.
pub const CONVERGE: Duration = Duration::from_secs(60);

/// The tests of one file that start peers run one at a time: a few peers
/// each are enough load on a shared 2-core machine, and failure detection
/// and timeouts are what they measure. Take it first and hold it for the
/// whole test; a test that failed does not block the others.
pub fn one_cluster_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running peer; killed on drop.
pub struct Peer {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    /// The RESP address, when started with `--resp`.
    pub resp: Option<SocketAddr>,
    pub data: PathBuf,
    pub name: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    pub fn start(dir: &Path, name: &str, extra: &[&str]) -> Self {
        let data = dir.join(name);
        Self::start_in(data, name, "127.0.0.1:0", extra)
    }

    pub fn start_in(data: PathBuf, name: &str, listen: &str, extra: &[&str]) -> Self {
        let (child, ready) = ready::start(&ready::PeerCommand {
            bin: BIN.into(),
            data: data.clone(),
            name: name.to_owned(),
            listen: listen.to_owned(),
            args: extra.iter().map(|a| (*a).to_owned()).collect(),
            log_level: "warn".to_owned(),
            log: None,
        })
        .unwrap_or_else(|e| panic!("peer {name} starts: {e:#}"));
        Self {
            child,
            addr: ready.quic,
            admin: ready.admin,
            resp: ready.resp,
            data,
            name: name.to_owned(),
        }
    }

    pub fn key(&self) -> String {
        std::fs::read_to_string(self.data.join("cluster.key"))
            .expect("a cluster key")
            .trim()
            .to_owned()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}

/// `ringkv COMMAND --json` against a peer: its answer, if it succeeded.
fn json_of(command: &str, peer: SocketAddr, key: &str) -> Option<Value> {
    let out = Command::new(BIN)
        .args([command, "--json", "--peer", &peer.to_string()])
        .args(["--cluster-key", key])
        .output()
        .expect("ringkv runs");
    out.status.success().then(|| {
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{command} --json is not JSON: {e}"))
    })
}

/// `ringkv members --json` against a peer.
pub fn members(peer: SocketAddr, key: &str) -> Option<Value> {
    json_of("members", peer, key)
}

pub fn state_of(view: &Value, name: &str) -> Option<(String, u64)> {
    view["members"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
        .map(|m| {
            (
                m["state"].as_str().unwrap_or_default().to_owned(),
                m["incarnation"].as_u64().unwrap_or_default(),
            )
        })
}

/// `ringkv handoff --json` against a peer.
pub fn handoff(peer: SocketAddr, key: &str) -> Option<Value> {
    json_of("handoff", peer, key)
}

/// Polls `check` until it holds or `limit` passes; the message names what
/// was missing.
pub fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {limit:?} waiting until {what}");
}

/// Polls `check` until it is `Ok` or `limit` passes; the message names what
/// was awaited and the last reason `check` gave.
pub fn wait_ok(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<(), String>,
) -> Duration {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        match check() {
            Ok(()) => return start.elapsed(),
            Err(why) => last = why,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {limit:?} waiting until {what}; last: {last}");
}

pub fn cluster(dir: &Path, n: usize, extra: &[&str]) -> (Vec<Peer>, String) {
    let seed = Peer::start(dir, "p1", extra);
    let key = seed.key();
    let join = seed.addr.to_string();
    let mut peers = vec![seed];
    for i in 2..=n {
        let mut args = vec!["--join", &join, "--cluster-key", &key];
        args.extend_from_slice(extra);
        peers.push(Peer::start(dir, &format!("p{i}"), &args));
    }
    (peers, key)
}

pub fn all_alive_and_agree(peers: &[&Peer], key: &str, n: usize) -> bool {
    let mut digests = Vec::new();
    for p in peers {
        let Some(view) = members(p.addr, key) else {
            return false;
        };
        let alive = view["members"]
            .as_array()
            .map_or(0, |ms| ms.iter().filter(|m| m["state"] == "alive").count());
        if alive != n {
            return false;
        }
        digests.push(view["ring_digest"].clone());
    }
    digests.windows(2).all(|w| w[0] == w[1] && !w[0].is_null())
}

/// Whether the peers are settled: each lists `n` alive members, all list
/// one ring digest and the same incarnation of every member, and each has
/// announced that it holds that ring (`ready == ring` in `ringkv handoff`).
/// The announcement is gossiped metadata and bumps the announcer's
/// incarnation, so once the incarnations agree every peer has seen every
/// other's, and no announcement is left to bump one later. The error says
/// what is still missing.
pub fn settled(peers: &[&Peer], key: &str, n: usize) -> Result<(), String> {
    let mut first: Option<(Value, Vec<(String, u64)>)> = None;
    for p in peers {
        let view = members(p.addr, key).ok_or(format!("{}: no members answer", p.name))?;
        let ms = view["members"].as_array().cloned().unwrap_or_default();
        let alive = ms.iter().filter(|m| m["state"] == "alive").count();
        if alive != n {
            return Err(format!("{} lists {alive} of {n} alive", p.name));
        }
        let mut incarnations: Vec<(String, u64)> = ms
            .iter()
            .map(|m| {
                let name = m["name"].as_str().unwrap_or_default().to_owned();
                (name, m["incarnation"].as_u64().unwrap_or_default())
            })
            .collect();
        incarnations.sort();
        let digest = view["ring_digest"].clone();
        if digest.is_null() {
            return Err(format!("{} has no ring", p.name));
        }
        match &first {
            None => first = Some((digest, incarnations)),
            Some((d, _)) if *d != digest => {
                return Err(format!("{} has another ring digest", p.name));
            }
            Some((_, i)) if *i != incarnations => {
                return Err(format!(
                    "incarnations differ: {} lists {incarnations:?}, {} lists {i:?}",
                    p.name, peers[0].name
                ));
            }
            Some(_) => {}
        }
        let h = handoff(p.addr, key).ok_or(format!("{}: no handoff answer", p.name))?;
        if h["ring"].is_null() || h["ready"] != h["ring"] {
            return Err(format!(
                "{} is not ready: ready {}, ring {}",
                p.name, h["ready"], h["ring"]
            ));
        }
    }
    Ok(())
}

/// Waits (bounded by [`CONVERGE`]) until the peers are [`settled`].
pub fn wait_settled(peers: &[&Peer], key: &str, n: usize) -> Duration {
    wait_ok(
        CONVERGE,
        &format!("{n} peers agree on members and ring and are ready"),
        || settled(peers, key, n),
    )
}

/// `n` peers joined through the first, once they are [`settled`]: all
/// list `n` alive members and one ring, and every peer's announcement that
/// it is ready for that ring has reached every other, so no later
/// incarnation bump comes from it.
pub fn converged_cluster(dir: &Path, n: usize, extra: &[&str]) -> (Vec<Peer>, String) {
    let (peers, key) = cluster(dir, n, extra);
    let refs: Vec<&Peer> = peers.iter().collect();
    wait_settled(&refs, &key, n);
    (peers, key)
}

/// An HTTP/1.1 request to an admin endpoint (the testbed's one loopback
/// client), waiting long enough for blocking member queries: the status
/// and the body.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let body = (!body.is_empty()).then_some(body);
    ringkv_testbed::http::request_within(addr, method, path, body, Duration::from_secs(40))
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e:#}"))
}

/// `n` distinct client Initials (distinct destination connection ids):
/// a quinn client dials a UDP socket that reads and never answers.
pub fn initials(n: usize) -> Vec<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let sink = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("a sink");
        let to = sink.local_addr().expect("its address");
        let identity = ringkv_gossip::NodeIdentity::generate().expect("an identity");
        // Any key: the server reads the Initial before any certificate.
        let config = ringkv_gossip::transport::tls::client_config(
            &ringkv_gossip::ClusterKey::from_bytes([9; 32]),
            &identity,
        )
        .expect("config");
        let endpoint =
            quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("client");
        let dialling: Vec<_> = (0..n)
            .map(|_| {
                endpoint.connect_with(
                    config.clone(),
                    to,
                    ringkv_gossip::transport::tls::SERVER_NAME,
                )
            })
            .collect::<Result<_, _>>()
            .expect("connects start");
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while out.len() < n {
            let (len, _) = tokio::time::timeout_at(deadline, sink.recv_from(&mut buf))
                .await
                .expect("the client's Initials arrive")
                .expect("recv");
            let packet = &buf[..len];
            // A long-header Initial: 0b11xx_0000 type bits 00, then the
            // version, then the destination connection id.
            let initial = len > 6 && packet[0] & 0xf0 == 0xc0;
            let dcid = initial.then(|| {
                let cid_len = usize::from(packet[5]);
                packet.get(6..6 + cid_len).map(<[u8]>::to_vec)
            });
            if let Some(Some(dcid)) = dcid {
                if seen.insert(dcid) {
                    out.push(packet.to_vec());
                }
            }
        }
        drop(dialling);
        endpoint.close(0u32.into(), b"captured");
        out
    })
}

/// Sends every Initial once to `target`, spread over `sources` loopback
/// addresses (127.0.0.2 up), about one per millisecond so the peer's
/// socket buffer is not what drops them. The sockets are returned (open,
/// never read): the peer's answers go nowhere.
pub fn flood(target: SocketAddr, packets: &[Vec<u8>], sources: u8) -> Vec<std::net::UdpSocket> {
    let sockets: Vec<std::net::UdpSocket> = (0..sources)
        .map(|i| {
            std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 2 + i], 0))).expect("bind")
        })
        .collect();
    for (i, packet) in packets.iter().enumerate() {
        let _ = sockets[i % sockets.len()].send_to(packet, target);
        if i % 4 == 3 {
            std::thread::sleep(Duration::from_millis(4));
        }
    }
    sockets
}
