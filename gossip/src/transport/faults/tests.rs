//! Settings validation, the pure receive filter, and the wrapper on real
//! loopback UDP sockets.

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::AsyncUdpSocket;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::*;

fn parse(json: &str) -> Result<Faults, BadFaults> {
    Faults::from_json(json.as_bytes())
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn seed() -> u64 {
    let seed = std::env::var("RINGKV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    eprintln!("seed {seed} (override with RINGKV_SEED)");
    seed
}

#[test]
fn a_clock_offset_is_set_and_cleared_at_run_time_and_touches_no_datagram() {
    let faults = parse(r#"{"clock_offset_ms": -2000}"#).unwrap();
    assert_eq!(faults.clock_offset_ms, -2000);
    assert!(!faults.is_active(), "no datagram fault");
    assert_eq!(faults.to_body().clock_offset_ms, -2000);
    let switch = FaultSwitch::new(Some(1));
    switch.set(faults);
    assert_eq!(switch.clock_offset_ms(), -2000);
    switch.set(Faults::default());
    assert_eq!(switch.clock_offset_ms(), 0);
    let full = parse(r#"{"full_disk": true}"#).unwrap();
    assert!(full.full_disk && !full.is_active());
    switch.set(full);
    assert!(switch.full_disk());
    let year_and_more = 401 * 86_400_000_i64;
    let err = parse(&format!(r#"{{"clock_offset_ms": {year_and_more}}}"#)).unwrap_err();
    assert!(err.0.contains("clock_offset_ms"), "{err}");
}

#[test]
fn empty_body_is_no_fault() {
    let faults = parse("{}").unwrap();
    assert_eq!(faults, Faults::default());
    assert!(!faults.is_active());
    assert_eq!(
        serde_json::to_value(faults.to_body()).unwrap(),
        serde_json::json!({"drop": [], "loss": 0.0, "delay_ms": 0, "clock_offset_ms": 0, "full_disk": false})
    );
}

#[test]
fn full_body_round_trips_with_addresses_sorted_and_deduplicated() {
    let faults = parse(
        r#"{"drop": ["127.0.0.1:4002", "127.0.0.1:4001", "[::ffff:127.0.0.1]:4002"], "loss": 0.1, "delay_ms": 50}"#,
    )
    .unwrap();
    assert_eq!(
        faults.drop.iter().copied().collect::<Vec<_>>(),
        vec![addr("127.0.0.1:4001"), addr("127.0.0.1:4002")]
    );
    assert!((faults.loss - 0.1).abs() < f64::EPSILON);
    assert_eq!(faults.delay, Duration::from_millis(50));
    assert!(faults.is_active());
    let body = faults.to_body();
    assert_eq!(body.drop, vec!["127.0.0.1:4001", "127.0.0.1:4002"]);
    assert_eq!(Faults::try_from(body).unwrap(), faults);
}

#[test]
fn bad_bodies_are_refused_with_a_message_naming_the_field() {
    let cases = [
        (r#"{"loss": 1.5}"#, "loss 1.5 is out of range"),
        (r#"{"loss": -0.1}"#, "loss -0.1 is out of range"),
        (r#"{"delay_ms": 10001}"#, "delay_ms 10001 is out of range"),
        (r#"{"delay_ms": -1}"#, "bad fault settings"),
        (r#"{"drop": ["nowhere"]}"#, r#"drop: "nowhere" is not"#),
        (r#"{"drop": ["127.0.0.1"]}"#, r#"drop: "127.0.0.1" is not"#),
        (r#"{"drop": "127.0.0.1:1"}"#, "bad fault settings"),
        (r#"{"partition": []}"#, "unknown field `partition`"),
        ("not json", "bad fault settings"),
        ("", "bad fault settings"),
    ];
    for (body, want) in cases {
        let err = parse(body).expect_err(body);
        assert!(err.0.contains(want), "{body}: {err} lacks {want:?}");
    }
}

#[test]
fn drop_matches_ipv4_mapped_sources() {
    let faults = parse(r#"{"drop": ["127.0.0.1:4001"]}"#).unwrap();
    assert!(faults.drops(addr("127.0.0.1:4001")));
    assert!(faults.drops(addr("[::ffff:127.0.0.1]:4001")));
    assert!(!faults.drops(addr("127.0.0.1:4002")));
}

#[test]
fn keep_datagrams_compacts_in_order_and_keeps_the_short_tail_last() {
    // Three datagrams of stride 4: "aaaa" "bbbb" "cc".
    let original = b"aaaabbbbcc".to_vec();
    let cases: [(&[bool], &[u8]); 6] = [
        (&[true, true, true], b"aaaabbbbcc"),
        (&[false, true, true], b"bbbbcc"),
        (&[true, false, true], b"aaaacc"),
        (&[true, true, false], b"aaaabbbb"),
        (&[false, false, true], b"cc"),
        (&[false, false, false], b""),
    ];
    for (pattern, want) in cases {
        let mut buf = original.clone();
        let mut verdicts = pattern.iter().copied();
        let len = keep_datagrams(&mut buf, 4, || verdicts.next().unwrap());
        assert_eq!(&buf[..len], want, "pattern {pattern:?}");
        assert!(verdicts.next().is_none(), "one verdict per datagram");
    }
}

/// Receive buffers and metas as quinn's endpoint lays them out.
fn received(datagrams: &[(&str, &[u8], usize)]) -> (Vec<Vec<u8>>, Vec<RecvMeta>) {
    let mut bufs = Vec::new();
    let mut metas = Vec::new();
    for (from, data, stride) in datagrams {
        let mut buf = vec![0u8; 64];
        buf[..data.len()].copy_from_slice(data);
        bufs.push(buf);
        metas.push(RecvMeta {
            addr: addr(from),
            len: data.len(),
            stride: *stride,
            ..RecvMeta::default()
        });
    }
    (bufs, metas)
}

#[test]
fn filter_received_removes_dropped_sources_and_moves_the_rest_forward() {
    let switch = FaultSwitch::new(Some(1));
    switch.set(parse(r#"{"drop": ["127.0.0.1:2"]}"#).unwrap());
    let (mut raw, mut metas) = received(&[
        ("127.0.0.1:2", b"xxxxyy", 4),
        ("127.0.0.1:1", b"one", 3),
        ("127.0.0.1:2", b"zz", 2),
        ("127.0.0.1:3", b"threethree", 5),
    ]);
    let mut bufs: Vec<IoSliceMut<'_>> = raw.iter_mut().map(|b| IoSliceMut::new(b)).collect();
    let kept = switch.filter_received(&mut bufs, &mut metas, 4);
    assert_eq!(kept, 2);
    assert_eq!(&bufs[0][..metas[0].len], b"one");
    assert_eq!(metas[0].addr, addr("127.0.0.1:1"));
    assert_eq!(&bufs[1][..metas[1].len], b"threethree");
    assert_eq!((metas[1].addr, metas[1].stride), (addr("127.0.0.1:3"), 5));
    // Two datagrams in the first (GRO) buffer, one in the third.
    assert_eq!(switch.stats.partition_in.load(Relaxed), 3);
}

#[test]
fn filter_received_with_total_loss_keeps_nothing() {
    let switch = FaultSwitch::new(Some(1));
    switch.set(parse(r#"{"loss": 1.0}"#).unwrap());
    let (mut raw, mut metas) = received(&[("127.0.0.1:1", b"aabbc", 2), ("127.0.0.1:2", b"d", 1)]);
    let mut bufs: Vec<IoSliceMut<'_>> = raw.iter_mut().map(|b| IoSliceMut::new(b)).collect();
    assert_eq!(switch.filter_received(&mut bufs, &mut metas, 2), 0);
    assert_eq!(switch.stats.loss_in.load(Relaxed), 4);
}

#[test]
fn loss_drops_about_its_share_of_datagrams() {
    let switch = FaultSwitch::new(Some(seed()));
    switch.set(parse(r#"{"loss": 0.25}"#).unwrap());
    let to = addr("127.0.0.1:9");
    let dropped = (0..10_000)
        .filter(|_| switch.judge_send(to) == Verdict::Drop)
        .count();
    assert!((2_000..3_000).contains(&dropped), "{dropped} of 10000 lost");
    assert_eq!(switch.stats.loss_out.load(Relaxed), dropped as u64);
}

#[test]
fn judge_send_order_partition_then_loss_then_delay() {
    let switch = FaultSwitch::new(Some(1));
    switch.set(parse(r#"{"drop": ["127.0.0.1:2"], "delay_ms": 20}"#).unwrap());
    assert_eq!(switch.judge_send(addr("127.0.0.1:2")), Verdict::Drop);
    assert_eq!(
        switch.judge_send(addr("127.0.0.1:3")),
        Verdict::Delay(Duration::from_millis(20))
    );
    switch.set(Faults::default());
    assert!(!switch.is_active());
    assert_eq!(switch.judge_send(addr("127.0.0.1:2")), Verdict::Pass);
}

/// A wrapped socket on 127.0.0.1 and its address.
fn faulty(switch: &Arc<FaultSwitch>) -> (Arc<dyn AsyncUdpSocket>, SocketAddr) {
    let std = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let socket = endpoint_socket(std, Some(switch.clone())).unwrap();
    let local = socket.local_addr().unwrap();
    assert_eq!(socket.max_transmit_segments(), 1);
    (socket, local)
}

async fn plain() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    (socket, local)
}

/// Sends one datagram, waiting for the socket to be writable as quinn does.
async fn send(socket: &Arc<dyn AsyncUdpSocket>, to: SocketAddr, data: &[u8]) {
    let transmit = Transmit {
        destination: to,
        ecn: None,
        contents: data,
        segment_size: None,
        src_ip: None,
    };
    let mut poller = socket.clone().create_io_poller();
    for _ in 0..100 {
        match socket.try_send(&transmit) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx))
                    .await
                    .unwrap();
            }
            Err(e) => panic!("send failed: {e}"),
        }
    }
    panic!("the socket never became writable");
}

/// The next datagram on a plain socket, or None after `wait`.
async fn next_plain(socket: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some(buf[..n].to_vec())
}

/// Every datagram the wrapped socket yields within `wait`, with sources.
async fn drain_faulty(socket: &dyn AsyncUdpSocket, wait: Duration) -> Vec<(SocketAddr, Vec<u8>)> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut raw = vec![vec![0u8; 2048]; 4];
    let mut metas = [RecvMeta::default(); 4];
    loop {
        let mut bufs: Vec<IoSliceMut<'_>> = raw.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let read = std::future::poll_fn(|cx| socket.poll_recv(cx, &mut bufs, &mut metas));
        let Ok(n) = tokio::time::timeout_at(deadline, read).await else {
            return out;
        };
        for i in 0..n.unwrap() {
            let m = metas[i];
            for datagram in bufs[i][..m.len].chunks(m.stride.max(1)) {
                out.push((m.addr, datagram.to_vec()));
            }
        }
    }
}

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn sends_to_a_dropped_address_vanish_and_others_arrive() {
    let switch = Arc::new(FaultSwitch::new(Some(1)));
    let (a, _) = faulty(&switch);
    let ((b, b_addr), (c, c_addr)) = (plain().await, plain().await);
    switch.set(parse(&format!(r#"{{"drop": ["{b_addr}"]}}"#)).unwrap());
    send(&a, b_addr, b"to b").await;
    send(&a, c_addr, b"to c").await;
    assert_eq!(
        next_plain(&c, QUIET * 10).await.as_deref(),
        Some(&b"to c"[..])
    );
    assert_eq!(next_plain(&b, QUIET).await, None, "b is cut off");
    assert_eq!(switch.stats.partition_out.load(Relaxed), 1);

    switch.set(parse("{}").unwrap());
    send(&a, b_addr, b"healed").await;
    assert_eq!(
        next_plain(&b, QUIET * 10).await.as_deref(),
        Some(&b"healed"[..])
    );
}

#[tokio::test]
async fn datagrams_from_a_dropped_address_are_never_received() {
    let switch = Arc::new(FaultSwitch::new(Some(1)));
    let (a, a_addr) = faulty(&switch);
    let ((b, b_addr), (c, c_addr)) = (plain().await, plain().await);
    switch.set(parse(&format!(r#"{{"drop": ["{b_addr}"]}}"#)).unwrap());
    for i in 0..3u8 {
        b.send_to(&[b'b', i], a_addr).await.unwrap();
        c.send_to(&[b'c', i], a_addr).await.unwrap();
    }
    let got = drain_faulty(&*a, QUIET * 3).await;
    let want: Vec<(SocketAddr, Vec<u8>)> = (0..3u8).map(|i| (c_addr, vec![b'c', i])).collect();
    assert_eq!(got, want);
    assert_eq!(switch.stats.partition_in.load(Relaxed), 3);
}

#[tokio::test]
async fn total_loss_isolates_both_ways() {
    let switch = Arc::new(FaultSwitch::new(Some(1)));
    let (a, a_addr) = faulty(&switch);
    let (b, b_addr) = plain().await;
    switch.set(parse(r#"{"loss": 1.0}"#).unwrap());
    for _ in 0..10 {
        send(&a, b_addr, b"out").await;
        b.send_to(b"in", a_addr).await.unwrap();
    }
    assert_eq!(next_plain(&b, QUIET).await, None);
    assert!(drain_faulty(&*a, QUIET).await.is_empty());
    assert_eq!(switch.stats.loss_out.load(Relaxed), 10);
    assert_eq!(switch.stats.loss_in.load(Relaxed), 10);
}

#[tokio::test]
async fn delayed_datagrams_arrive_after_the_delay_in_order() {
    let switch = Arc::new(FaultSwitch::new(Some(1)));
    let (a, _) = faulty(&switch);
    let (b, b_addr) = plain().await;
    let delay = Duration::from_millis(300);
    switch.set(parse(r#"{"delay_ms": 300}"#).unwrap());
    let sent = Instant::now();
    for i in 0..5u8 {
        send(&a, b_addr, &[i]).await;
    }
    for i in 0..5u8 {
        let got = next_plain(&b, Duration::from_secs(10)).await;
        assert_eq!(got, Some(vec![i]), "datagram {i}, in order");
    }
    let took = sent.elapsed();
    assert!(took >= delay, "arrived after {took:?}, before the delay");
    assert_eq!(switch.stats.delayed.load(Relaxed), 5);
    assert_eq!(switch.stats.delay_failed.load(Relaxed), 0);
    assert_eq!(switch.queued.load(Relaxed), 0);
}

#[tokio::test]
async fn partial_loss_of_a_gso_batch_keeps_the_rest_in_order() {
    let switch = Arc::new(FaultSwitch::new(Some(seed())));
    let (a, a_addr) = faulty(&switch);
    // A plain quinn socket, which may send one batch of datagrams (GSO)
    // that the receiver reads as one buffer (GRO).
    let std = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = endpoint_socket(std, None).unwrap();
    let segments = b.max_transmit_segments().min(20);
    eprintln!("sending in batches of {segments}");
    switch.set(parse(r#"{"loss": 0.5}"#).unwrap());
    let sent: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100]).collect();
    for batch in sent.chunks(segments) {
        let contents = batch.concat();
        let transmit = Transmit {
            destination: a_addr,
            ecn: None,
            contents: &contents,
            segment_size: (batch.len() > 1).then_some(100),
            src_ip: None,
        };
        let mut poller = b.clone().create_io_poller();
        while let Err(e) = b.try_send(&transmit) {
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
            std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx))
                .await
                .unwrap();
        }
    }
    let got: Vec<Vec<u8>> = drain_faulty(&*a, QUIET * 3)
        .await
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    let lost = switch.stats.loss_in.load(Relaxed) as usize;
    assert_eq!(got.len() + lost, sent.len(), "each datagram judged once");
    assert!(
        got.windows(2).all(|w| w[0][0] < w[1][0]),
        "survivors in order"
    );
    assert!(got.iter().all(|d| sent.contains(d)), "survivors intact");
    assert!(!got.is_empty() && lost > 0, "{lost} of 20 lost at 50%");
}
