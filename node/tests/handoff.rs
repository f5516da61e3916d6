//! Handoff with real peers: data follows the ring on join, graceful leave
//! and failure; an interrupted transfer resumes; anti-entropy repairs a
//! replica restored from an old copy of its data dir. Each holding is
//! checked key by key against the ring rebuilt here from the members.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::str::FromStr as _;
use std::time::Duration;

use common::{
    converged_cluster, handoff, members, one_cluster_at_a_time, wait_for, wait_ok, Peer, BIN,
    CONVERGE,
};
use ringkv_ring::{NodeId, NodeSpec, Ring, DEFAULT_VNODES};

/// Fast handoff settings for tests; anti-entropy off unless a test turns
/// it on, so that handoff alone must move every key.
const FAST: &[&str] = &[
    "--settle",
    "1s",
    "--cleanup-grace",
    "3s",
    "--anti-entropy-interval",
    "0s",
];

fn ringkv(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("ringkv runs")
}

/// Loads keys `bench:0..n` with their verifiable values.
fn load(peers: &[&Peer], key: &str, n: usize, value_size: usize) {
    let mut flags = sequential(n, "0");
    flags.extend(["--value-size".to_owned(), value_size.to_string()]);
    finish(bench(peers, key, &flags), "the load");
}

/// Bench flags for one pass over keys `bench:0..n` in order.
fn sequential(n: usize, read_ratio: &str) -> Vec<String> {
    [
        "--ops",
        &n.to_string(),
        "--keys",
        &n.to_string(),
        "--sequential",
        "--read-ratio",
        read_ratio,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A `ringkv bench --verify` process over the peers.
fn bench<S: AsRef<std::ffi::OsStr>>(peers: &[&Peer], key: &str, extra: &[S]) -> Child {
    let others: Vec<String> = peers[1..].iter().map(|p| p.addr.to_string()).collect();
    let mut cmd = Command::new(BIN);
    cmd.args(["bench", "--quiet", "--verify", "--concurrency", "16"])
        .args(["--peer", &peers[0].addr.to_string()])
        .args(["--cluster-key", key]);
    if !others.is_empty() {
        cmd.args(["--peers", &others.join(",")]);
    }
    cmd.args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bench starts")
}

/// The keys a peer holds itself.
fn local_keys(peer: SocketAddr, key: &str) -> Option<BTreeSet<String>> {
    let out = ringkv(&["keys", "--peer", &peer.to_string(), "--cluster-key", key]);
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    })
}

/// The ring as `peer` sees it, rebuilt here from its members; checked
/// against the peer's own digest. With the member names by id.
fn ring_of(peer: SocketAddr, key: &str) -> Option<(Ring, BTreeMap<NodeId, String>)> {
    let view = members(peer, key)?;
    let mut specs = Vec::new();
    let mut names = BTreeMap::new();
    for m in view["members"].as_array()? {
        let state = m["state"].as_str()?;
        if state != "alive" || m["status"] == "leaving" {
            continue;
        }
        let id = NodeId::from_str(m["id"].as_str()?).ok()?;
        let weight = u32::try_from(m["weight"].as_u64()?).ok()?;
        specs.push(NodeSpec::new(id).with_weight(weight));
        names.insert(id, m["name"].as_str()?.to_owned());
    }
    specs.sort_by_key(|s| s.id);
    let ring = Ring::build(&specs, DEFAULT_VNODES).ok()?;
    (view["ring_digest"].as_str() == Some(ring.digest().to_string().as_str()))
        .then_some((ring, names))
}

/// Every peer announces the ring every peer has, and has cleaned up: the
/// common ring.
fn settled(peers: &[&Peer], key: &str) -> Option<(Ring, BTreeMap<NodeId, String>)> {
    let (ring, names) = ring_of(peers[0].addr, key)?;
    if names.len() != peers.len() {
        return None;
    }
    let tag = ring.digest().short();
    for p in peers {
        let (other, _) = ring_of(p.addr, key)?;
        if other.digest() != ring.digest() {
            return None;
        }
        let h = handoff(p.addr, key)?;
        if h["ready"].as_str() != Some(tag.as_str()) || h["pending_ranges"] != 0 {
            return None;
        }
    }
    Some((ring, names))
}

/// Waits until every peer holds exactly the keys `bench:0..n` the ring
/// gives it, and returns the holdings.
fn wait_exact(peers: &[&Peer], key: &str, n: usize, limit: Duration) {
    let all: Vec<String> = (0..n).map(|i| format!("bench:{i}")).collect();
    let mut last = String::new();
    let start = std::time::Instant::now();
    let mut check = || {
        let Some((ring, names)) = settled(peers, key) else {
            last = "not settled (rings or ready tags differ)".into();
            return false;
        };
        for p in peers {
            let Some(held) = local_keys(p.addr, key) else {
                return false;
            };
            let id = names
                .iter()
                .find(|(_, name)| **name == p.name)
                .map(|(id, _)| *id)
                .expect("the peer is in the ring");
            let want: BTreeSet<String> = all
                .iter()
                .filter(|k| ring.replicas(k.as_bytes(), 3).contains(&id))
                .cloned()
                .collect();
            if held != want {
                let missing = want.difference(&held).count();
                let extra = held.difference(&want).count();
                last = format!("{}: {missing} missing, {extra} extra", p.name);
                return false;
            }
        }
        true
    };
    while !check() {
        assert!(
            start.elapsed() < limit,
            "after {limit:?} the peers do not hold exactly their keys: {last}; handoff: {:?}",
            peers
                .iter()
                .map(|p| (p.name.clone(), handoff(p.addr, key)))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!("exact holdings after {:?}", start.elapsed());
}

/// Every key `bench:0..n` has exactly three copies among `peers`.
fn three_copies(peers: &[&Peer], key: &str, n: usize) -> Result<(), String> {
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for p in peers {
        let held = local_keys(p.addr, key).ok_or("keys failed")?;
        for k in held {
            *copies.entry(k).or_default() += 1;
        }
    }
    for i in 0..n {
        let k = format!("bench:{i}");
        let c = copies.get(&k).copied().unwrap_or(0);
        if c != 3 {
            return Err(format!("{k} has {c} copies"));
        }
    }
    Ok(())
}

/// Waits for a bench process: its report (stdout and stderr), once it
/// exited with success.
fn exited_ok(child: Child, what: &str) -> String {
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed: {text}");
    text
}

fn finish(child: Child, what: &str) -> String {
    let text = exited_ok(child, what);
    assert!(text.contains("errors 0"), "{what} had errors: {text}");
    text
}

/// Like [`finish`] for a verifying reader that runs while peers join: a
/// request may fail now and then on a loaded machine (a replica too slow
/// to answer in time), so errors up to 0.5% of the operations are allowed
/// and printed. A get that found nothing or another value still fails the
/// reader (`--verify`).
fn finish_with_rare_errors(child: Child, what: &str) -> String {
    let text = exited_ok(child, what);
    // The report's rows `put COUNT ...` and `get COUNT ...` count the
    // successful operations; `total ... ops/s; errors N` the others.
    let count = |op: &str| -> u64 {
        text.lines()
            .find_map(|line| {
                let mut cells = line.split_whitespace();
                (cells.next() == Some(op)).then(|| cells.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {op} row in the report of {what}: {text}"))
    };
    let errors: u64 = text
        .lines()
        .find(|line| line.starts_with("total "))
        .and_then(|line| line.rsplit("errors ").next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no error count in the report of {what}: {text}"));
    let ops = count("put") + count("get") + errors;
    if errors > 0 {
        let last = text
            .lines()
            .find(|line| line.starts_with("last error:"))
            .unwrap_or_default();
        eprintln!("{what}: {errors} error(s) in {ops} operations; {last}");
    }
    assert!(
        errors * 200 <= ops,
        "{what}: {errors} errors in {ops} operations, more than 0.5%: {text}"
    );
    text
}

#[test]
fn joining_peers_receive_exactly_their_ranges_while_reads_never_miss() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (mut peers, key) = converged_cluster(dir.path(), 3, FAST);
    let n = 20_000;
    {
        let refs: Vec<&Peer> = peers.iter().collect();
        load(&refs, &key, n, 100);
        wait_exact(&refs, &key, n, Duration::from_secs(60));
    }
    // A reader runs throughout: every get must find the loaded value.
    let reader = {
        let refs: Vec<&Peer> = peers.iter().collect();
        bench(
            &refs,
            &key,
            &[
                "--duration",
                "12s",
                "--read-ratio",
                "1",
                "--keys",
                &n.to_string(),
            ],
        )
    };
    let join = peers[0].addr.to_string();
    for name in ["p4", "p5"] {
        let mut args = vec!["--join", join.as_str(), "--cluster-key", key.as_str()];
        args.extend_from_slice(FAST);
        peers.push(Peer::start(dir.path(), name, &args));
    }
    let refs: Vec<&Peer> = peers.iter().collect();
    wait_exact(&refs, &key, n, Duration::from_secs(90));
    let text = finish_with_rare_errors(reader, "the reader");
    assert!(
        text.contains("0 found nothing, 0 found another value"),
        "{text}"
    );
    // The new peers received; nobody kept what it no longer replicates.
    let h4 = handoff(peers[3].addr, &key).unwrap();
    assert!(h4["keys_moved"].as_u64().unwrap() > 0, "{h4}");
    let dropped: u64 = peers[..3]
        .iter()
        .map(|p| {
            handoff(p.addr, &key).unwrap()["records_dropped"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert!(dropped > 0, "old peers dropped nothing");
}

#[test]
fn a_killed_peer_s_ranges_get_three_copies_again_on_the_others() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut flags = FAST.to_vec();
    flags.extend(["--dead-grace", "2s"]);
    let (mut peers, key) = converged_cluster(dir.path(), 5, &flags);
    let n = 5_000;
    {
        let refs: Vec<&Peer> = peers.iter().collect();
        load(&refs, &key, n, 100);
    }
    let victim = peers.remove(4);
    drop(victim); // kill -9
    let refs: Vec<&Peer> = peers.iter().collect();
    wait_for(
        Duration::from_secs(90),
        "three copies on the live peers",
        || settled(&refs, &key).is_some() && three_copies(&refs, &key, n).is_ok(),
    );
    wait_exact(&refs, &key, n, Duration::from_secs(30));
}

#[test]
fn a_graceful_leave_under_writes_loses_nothing_and_keeps_three_copies() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (mut peers, key) = converged_cluster(dir.path(), 5, FAST);
    let (before, after) = (3_000, 6_000);
    {
        let refs: Vec<&Peer> = peers[..4].iter().collect();
        load(&refs, &key, before, 100);
    }
    // Writes of new keys run while p5 leaves (through the other four).
    let writer = {
        let refs: Vec<&Peer> = peers[..4].iter().collect();
        bench(&refs, &key, &sequential(after, "0"))
    };
    std::thread::sleep(Duration::from_millis(500));
    let mut leaving = peers.remove(4);
    leaving.signal("-TERM");
    let status = {
        let mut status = None;
        wait_for(Duration::from_secs(90), "the leaving peer exits", || {
            status = leaving.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    };
    assert!(status.success(), "the leaving peer failed: {status}");
    finish(writer, "the writer");
    let refs: Vec<&Peer> = peers.iter().collect();
    wait_exact(&refs, &key, after, Duration::from_secs(60));
    three_copies(&refs, &key, after).unwrap();
    // Every acknowledged write reads back.
    let reader = bench(&refs, &key, &sequential(after, "1"));
    finish(reader, "the reader");
}

#[test]
fn an_interrupted_transfer_resumes_after_the_receiver_restarts() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (mut peers, key) = converged_cluster(dir.path(), 3, FAST);
    let n = 3_000;
    {
        let refs: Vec<&Peer> = peers.iter().collect();
        load(&refs, &key, n, 1000);
    }
    // A slow receiver: about 2.3 MB to pull at 200 KB/s.
    let join = peers[0].addr.to_string();
    let mut args = vec!["--join", join.as_str(), "--cluster-key", key.as_str()];
    args.extend_from_slice(FAST);
    let mut slow = args.clone();
    slow.extend(["--handoff-rate", "200KB"]);
    let p4 = Peer::start(dir.path(), "p4", &slow);
    let addr = p4.addr;
    wait_for(Duration::from_secs(60), "the transfer is under way", || {
        handoff(addr, &key).is_some_and(|h| h["keys_moved"].as_u64().unwrap_or(0) > 200)
    });
    let before = handoff(addr, &key).unwrap();
    assert_ne!(
        before["ready"], before["ring"],
        "finished too soon: {before}"
    );
    drop(p4); // kill -9 mid-transfer
    peers.push(Peer::start_in(
        dir.path().join("p4"),
        "p4",
        "127.0.0.1:0",
        &args,
    ));
    let refs: Vec<&Peer> = peers.iter().collect();
    wait_exact(&refs, &key, n, Duration::from_secs(90));
    // It went on from its checkpoints instead of starting over.
    let after = handoff(peers[3].addr, &key).unwrap();
    let held = local_keys(peers[3].addr, &key).unwrap().len() as u64;
    let moved = after["keys_moved"].as_u64().unwrap();
    assert!(
        moved < held,
        "pulled {moved} keys after the restart for {held} held: no resume"
    );
    let mut args = sequential(n, "1");
    args.extend(["--value-size".to_owned(), "1000".to_owned()]);
    let reader = bench(&refs, &key, &args);
    finish(reader, "the reader");
}

#[test]
fn a_replica_restored_from_an_old_copy_is_repaired_by_anti_entropy() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--settle",
        "1s",
        "--cleanup-grace",
        "1s",
        "--anti-entropy-interval",
        "20ms",
    ];
    let (mut peers, key) = converged_cluster(dir.path(), 3, &flags);
    let n = 1_000;
    {
        let refs: Vec<&Peer> = peers.iter().collect();
        load(&refs, &key, n, 100);
    }
    // Copy p3's data dir while it is stopped, then bring it back.
    let old = dir.path().join("p3-old");
    let data = peers[2].data.clone();
    let restart = |peers: &mut Vec<Peer>| {
        let join = peers[0].addr.to_string();
        let mut args = vec!["--join", join.as_str(), "--cluster-key", key.as_str()];
        args.extend_from_slice(&flags);
        peers.push(Peer::start_in(data.clone(), "p3", "127.0.0.1:0", &args));
    };
    wait_for(Duration::from_secs(60), "every peer is ready", || {
        let refs: Vec<&Peer> = peers.iter().collect();
        settled(&refs, &key).is_some()
    });
    drop(peers.remove(2));
    copy_dir(&data, &old);
    restart(&mut peers);
    wait_for(Duration::from_secs(60), "p3 is back and ready", || {
        let refs: Vec<&Peer> = peers.iter().collect();
        settled(&refs, &key).is_some()
    });
    // New writes that p3 acknowledges (no hints are kept for it). Each
    // needs all three replicas within the request timeout, which a loaded
    // machine may miss: retried (a put of one value is idempotent).
    for i in 0..20 {
        let k = format!("fresh:{i}");
        wait_ok(
            Duration::from_secs(30),
            &format!("{k} is written at all"),
            || {
                let out = ringkv(&[
                    "put",
                    &k,
                    "new",
                    "--consistency",
                    "all",
                    "--peer",
                    &peers[0].addr.to_string(),
                    "--cluster-key",
                    &key,
                ]);
                if out.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).into_owned())
                }
            },
        );
    }
    // Put the old copy back: p3 lost those writes.
    drop(peers.remove(2));
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&old, &data);
    // Proof that the restored p3 is stale, before anti-entropy can run:
    // the old copy (what p3 restarts on, byte for byte; no peer runs on
    // it) read offline.
    let fresh_in_old = {
        let store = ringkv_storage::Store::open(&old.join("store")).expect("the old copy opens");
        (0..20)
            .filter(|i| {
                store
                    .get(format!("fresh:{i}").as_bytes())
                    .expect("the old copy reads")
                    .is_some_and(|r| r.value.is_some())
            })
            .count()
    };
    assert_eq!(fresh_in_old, 0, "the old copy holds fresh writes");
    restart(&mut peers);
    let p3 = peers[2].addr;
    let fresh_held = |held: &BTreeSet<String>| {
        (0..20)
            .filter(|i| held.contains(&format!("fresh:{i}")))
            .count()
    };
    wait_for(Duration::from_secs(90), "anti-entropy repaired p3", || {
        local_keys(p3, &key).is_some_and(|held| fresh_held(&held) == 20)
    });
    let h = handoff(p3, &key).unwrap();
    assert!(
        h["repairs"].as_u64().unwrap() >= 1,
        "no repair counted: {h}"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Issue 13: three peers hold the keys; three more join, throttled so
/// their pulls cannot finish, and are killed with -9 once the old holders
/// hold the ring of six. The dead joiners have announced nothing, so the
/// old holders keep every range until the ring drops them (dead grace),
/// then plan again with each other: every acknowledged key still reads at
/// quorum, with three copies. (Counting the dead as ready, the old holders
/// dropped the ranges whose three new replicas were all joiners.)
#[test]
fn joiners_killed_before_their_pulls_finish_lose_no_acknowledged_key() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut flags = FAST.to_vec();
    flags.extend(["--dead-grace", "15s"]);
    let (mut peers, key) = converged_cluster(dir.path(), 3, &flags);
    let n = 2_000;
    {
        let refs: Vec<&Peer> = peers.iter().collect();
        load(&refs, &key, n, 1000);
    }
    let join = peers[0].addr.to_string();
    let mut slow = vec!["--join", join.as_str(), "--cluster-key", key.as_str()];
    slow.extend_from_slice(&flags);
    // About 1 MB each to pull at 20 KB/s: nearly a minute.
    slow.extend(["--handoff-rate", "20KB"]);
    let joiners: Vec<Peer> = ["p4", "p5", "p6"]
        .iter()
        .map(|name| Peer::start(dir.path(), name, &slow))
        .collect();
    // The old holders hold the ring of six (they pull nothing for it).
    wait_ok(CONVERGE, "the old holders announce the ring of six", || {
        for p in &peers {
            let (ring, _) = ring_of(p.addr, &key).ok_or(format!("{}: no ring", p.name))?;
            if ring.nodes().len() != 6 {
                return Err(format!("{}: {} members", p.name, ring.nodes().len()));
            }
            let h = handoff(p.addr, &key).ok_or(format!("{}: no handoff", p.name))?;
            if h["ready"].as_str() != Some(ring.digest().short().as_str()) {
                return Err(format!("{} is not ready: {h}", p.name));
            }
        }
        Ok(())
    });
    for j in &joiners {
        let h = handoff(j.addr, &key).unwrap();
        assert_ne!(h["ready"], h["ring"], "{} finished too soon: {h}", j.name);
    }
    drop(joiners); // kill -9, before their pulls finish
    let refs: Vec<&Peer> = peers.iter().collect();
    // The dead grace passes, the ring is the three again, all ready.
    wait_ok(
        Duration::from_secs(120),
        "the three hold their ring again",
        || {
            for p in &refs {
                let (ring, _) = ring_of(p.addr, &key).ok_or(format!("{}: no ring", p.name))?;
                if ring.nodes().len() != 3 {
                    return Err(format!("{}: {} members", p.name, ring.nodes().len()));
                }
            }
            settled(&refs, &key)
                .map(|_| ())
                .ok_or("not settled".to_owned())
        },
    );
    three_copies(&refs, &key, n).unwrap();
    let mut args = sequential(n, "1");
    args.extend(["--value-size".to_owned(), "1000".to_owned()]);
    finish(bench(&refs, &key, &args), "the reader");
    peers.clear();
}
