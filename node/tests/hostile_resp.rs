//! The RESP server against hostile clients (issue 14): CONFIG GET
//! patterns that overflowed the stack or backtracked exponentially, an
//! unauthenticated client announcing a huge request, idle and
//! unauthenticated connections left open, and a client that pipelines
//! large replies without reading them. Each must be refused or cut off,
//! counted in /metrics, and leave the peer serving everyone else.

mod common;

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn connect(addr: SocketAddr) -> TcpStream {
    let conn = TcpStream::connect(addr).expect("connects");
    conn.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout set");
    conn
}

/// Reads until `want` bytes came, the peer closed, or `limit` passed:
/// what came, and whether the peer closed the connection.
fn read_for(conn: &mut TcpStream, want: usize, limit: Duration) -> (Vec<u8>, bool) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while got.len() < want && start.elapsed() < limit {
        match conn.read(&mut chunk) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

/// Sends `request` on a fresh connection; the reply (`want` bytes).
fn request(addr: SocketAddr, request: &[u8], want: usize) -> Vec<u8> {
    let mut conn = connect(addr);
    conn.write_all(request).expect("request sent");
    read_for(&mut conn, want, Duration::from_secs(30)).0
}

/// The value of the counter `name` in the peer's /metrics (0 if absent).
fn metric(peer: &Peer, name: &str) -> u64 {
    let admin = peer.admin.expect("started with --admin");
    let (status, body) = http(admin, "GET", "/metrics", "");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

fn rejected(reason: &str) -> String {
    format!("ringkv_resp_rejected_total{{reason=\"{reason}\"}}")
}

fn ping_pongs(addr: SocketAddr) {
    assert_eq!(request(addr, b"PING\r\n", 7), b"+PONG\r\n");
}

#[test]
fn hostile_patterns_and_unread_replies_leave_the_peer_serving() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (mut peers, _) = converged_cluster(
        dir.path(),
        3,
        &[
            "--resp",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--resp-output-limit",
            "2MB",
        ],
    );
    let addr = peers[0].resp.expect("started with --resp");

    // A million stars aborted the process (a stack overflow in the
    // recursive glob); now it is refused as too long.
    let stars = vec![b'*'; 1_000_000];
    let got = request(addr, &multibulk(&[b"CONFIG", b"GET", &stars]), 40);
    assert!(
        got.starts_with(b"-ERR CONFIG GET pattern too long"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // Sixty stars and a q wedged a core; now it matches nothing at once.
    let mut sixty = vec![b'*'; 60];
    sixty.push(b'q');
    let wedge = multibulk(&[b"CONFIG", b"GET", &sixty]);
    let (a, b) = (
        std::thread::spawn(move || request(addr, &wedge, 4)),
        std::thread::spawn({
            let wedge = multibulk(&[b"CONFIG", b"GET", &sixty]);
            move || request(addr, &wedge, 4)
        }),
    );
    assert_eq!(a.join().unwrap(), b"*0\r\n");
    assert_eq!(b.join().unwrap(), b"*0\r\n");
    ping_pongs(addr);
    let got = request(addr, &multibulk(&[b"CONFIG", b"GET", b"MAX*"]), 64);
    assert!(
        String::from_utf8_lossy(&got).contains("maxclients"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(metric(&peers[0], &rejected("pattern_too_long")), 1);

    unread_replies_disconnect_the_client(&peers[0], addr);
    ping_pongs(addr);
    assert!(
        peers[0].child.try_wait().unwrap().is_none(),
        "the peer is still running"
    );
}

/// A client pipelines GETs of a 1 MiB value and never reads: past the
/// 2 MB output limit the peer disconnects it and stops queueing replies.
fn unread_replies_disconnect_the_client(peer: &Peer, addr: SocketAddr) {
    let value = vec![b'v'; 1 << 20];
    assert_eq!(
        request(addr, &multibulk(&[b"SET", b"big", &value]), 5),
        b"+OK\r\n"
    );
    const GETS: usize = 300;
    let mut hog = connect(addr);
    hog.write_all(&multibulk(&[b"GET", b"big"]).repeat(GETS))
        .expect("the pipeline is sent");
    wait_for(Duration::from_secs(60), "the output limit to trip", || {
        metric(peer, &rejected("output_buffer")) >= 1
    });
    // What the kernel buffered before the cut, then the end.
    let (got, closed) = read_for(&mut hog, usize::MAX, Duration::from_secs(30));
    assert!(closed, "the peer closed the non-reading client");
    assert!(
        got.len() < GETS * value.len() / 4,
        "{} of {} bytes of replies were queued for it",
        got.len(),
        GETS * value.len()
    );
    assert_eq!(metric(peer, &rejected("output_buffer")), 1);
}

#[test]
fn unauthenticated_and_idle_clients_are_cut_off() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (peers, _) = converged_cluster(
        dir.path(),
        3,
        &[
            "--resp",
            "127.0.0.1:0",
            "--resp-password",
            "s3cret",
            "--resp-timeout",
            "2s",
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let peer = &peers[0];
    let addr = peer.resp.expect("started with --resp");

    // A 16 MiB value announced before AUTH: refused at its header, the
    // connection closed at once (well within the 2 s to authenticate),
    // without the peer waiting for the bytes or buffering them.
    let mut conn = connect(addr);
    let started = Instant::now();
    conn.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16777216\r\n")
        .unwrap();
    let (got, closed) = read_for(&mut conn, usize::MAX, Duration::from_secs(10));
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR Protocol error: unauthenticated bulk length\r\n"
    );
    assert!(closed, "closed after the error");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "closed before the authentication deadline: {:?}",
        started.elapsed()
    );
    // Half of the value finds nobody reading it.
    conn.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(
        conn.write_all(&vec![b'x'; 8 << 20]).is_err(),
        "the peer no longer reads this connection"
    );
    let (got, _) = {
        let mut conn = connect(addr);
        conn.write_all(b"*11\r\n").unwrap();
        read_for(&mut conn, usize::MAX, Duration::from_secs(10))
    };
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    assert_eq!(metric(peer, &rejected("unauthenticated_request")), 2);

    // After AUTH the full limits apply, in the same pipeline.
    let mut big = multibulk(&[b"AUTH", b"s3cret"]);
    big.extend(multibulk(&[b"SET", b"k", &vec![b'v'; 100_000]]));
    assert_eq!(request(addr, &big, 10), b"+OK\r\n+OK\r\n");

    // Idle (authenticated) and never authenticating: both closed after
    // the 2 s timeout.
    let mut idle = connect(addr);
    idle.write_all(&multibulk(&[b"AUTH", b"s3cret"])).unwrap();
    let mut mute = connect(addr);
    let started = Instant::now();
    let (got, closed) = read_for(&mut idle, usize::MAX, Duration::from_secs(30));
    assert_eq!(got, b"+OK\r\n");
    assert!(closed, "the idle connection was closed");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let (got, closed) = read_for(&mut mute, usize::MAX, Duration::from_secs(30));
    assert!(got.is_empty() && closed, "the unauthenticated one too");
    assert_eq!(metric(peer, &rejected("idle_timeout")), 1);
    assert_eq!(metric(peer, &rejected("auth_timeout")), 1);
    let mut pipeline = multibulk(&[b"AUTH", b"s3cret"]);
    pipeline.extend(multibulk(&[b"PING"]));
    assert_eq!(request(addr, &pipeline, 12), b"+OK\r\n+PONG\r\n");
}
