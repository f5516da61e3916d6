//! The replicated store through real peers: put through one peer and get
//! through the others, overwrite, delete, survive a dead replica, fail
//! clearly when `all` cannot be met, repair a stale replica by reading, and
//! refuse oversized input without writing anything.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn ringkv(args: &[&str], peer: &Peer, key: &str) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--peer", &peer.addr.to_string(), "--cluster-key", key])
        .output()
        .expect("ringkv runs")
}

fn put(peer: &Peer, key: &str, k: &str, v: &str, consistency: &str) -> Output {
    ringkv(&["put", k, v, "--consistency", consistency], peer, key)
}

fn get(peer: &Peer, key: &str, k: &str, consistency: &str) -> Output {
    ringkv(&["get", k, "--consistency", consistency], peer, key)
}

/// A get that answered: exit 0 (found) or 1 (absent). Exits 2 to 5 are
/// failures to read at all (by error kind), retried for at most 30 s.
fn get_answered(peer: &Peer, key: &str, k: &str, consistency: &str) -> Output {
    let mut out = None;
    wait_ok(Duration::from_secs(30), "a get answers", || {
        let o = get(peer, key, k, consistency);
        let answered = matches!(o.status.code(), Some(0 | 1));
        let why = text(&o);
        out = Some(o);
        if answered {
            Ok(())
        } else {
            Err(why)
        }
    });
    out.expect("at least one attempt")
}

/// Runs `op` until it succeeds, for at most 30 s, and returns its output.
/// For requests at `--consistency all`: each attempt needs every replica
/// within the peers' request timeout, which a loaded machine may miss once.
/// Puts of one value and gets are idempotent, so a retry changes nothing.
fn until_ok(what: &str, mut op: impl FnMut() -> Output) -> Output {
    let mut out = None;
    wait_ok(Duration::from_secs(30), what, || {
        let o = op();
        let ok = o.status.success();
        let why = text(&o);
        out = Some(o);
        if ok {
            Ok(())
        } else {
            Err(why)
        }
    });
    out.expect("at least one attempt")
}

fn text(o: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn put_through_one_peer_get_through_the_others_then_overwrite_and_delete() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (peers, key) = converged_cluster(dir.path(), 3, &[]);
    let o = put(&peers[0], &key, "user:42", "{\"name\":\"ada\"}", "quorum");
    assert!(o.status.success(), "{}", text(&o));
    for p in &peers[1..] {
        let o = get(p, &key, "user:42", "quorum");
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(o.stdout, b"{\"name\":\"ada\"}");
    }
    until_ok("a put at all succeeds", || {
        put(&peers[1], &key, "user:42", "v2", "all")
    });
    assert_eq!(get(&peers[2], &key, "user:42", "one").stdout, b"v2");
    let o = ringkv(&["del", "user:42"], &peers[2], &key);
    assert!(o.status.success(), "{}", text(&o));
    for p in &peers {
        let o = get_answered(p, &key, "user:42", "quorum");
        assert_eq!(
            o.status.code(),
            Some(1),
            "a deleted key is absent: {}",
            text(&o)
        );
        assert!(o.stdout.is_empty());
    }
    let o = get_answered(&peers[0], &key, "never-written", "quorum");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not found"));
}

#[test]
fn a_dead_replica_does_not_stop_quorum_and_all_fails_clearly() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (mut peers, key) = converged_cluster(dir.path(), 3, &[]);
    let victim = peers.pop().unwrap();
    victim.signal("-KILL");
    drop(victim);
    let o = put(&peers[0], &key, "k1", "v1", "quorum");
    assert!(
        o.status.success(),
        "quorum write with one replica down: {}",
        text(&o)
    );
    let o = get(&peers[1], &key, "k1", "quorum");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(o.stdout, b"v1");
    let o = put(&peers[1], &key, "k2", "v2", "all");
    assert!(
        !o.status.success(),
        "consistency all succeeded with a replica down"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("needed 3 acknowledgements, got 2"),
        "unclear error: {err}"
    );
    assert!(
        err.contains("p3"),
        "the error names the missing replica: {err}"
    );
}

#[test]
fn a_stale_replica_is_repaired_by_a_read() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (mut peers, key) = converged_cluster(dir.path(), 3, &[]);
    until_ok("a put at all succeeds", || {
        put(&peers[0], &key, "doc", "old", "all")
    });
    // p3 misses the next write: it is down, then comes back with "old".
    let p3 = peers.pop().unwrap();
    let (name, data) = (p3.name.clone(), p3.data.clone());
    p3.signal("-KILL");
    drop(p3);
    assert!(put(&peers[0], &key, "doc", "new", "quorum")
        .status
        .success());
    // Its data dir keeps its identity and the peers it knew; it needs no
    // old address.
    let p3 = Peer::start_in(data, &name, "127.0.0.1:0", &[]);
    let all: Vec<&Peer> = vec![&peers[0], &peers[1], &p3];
    wait_settled(&all, &key, 3);
    // A read through p1 at `all` sees both versions and repairs p3.
    let o = until_ok("a get at all succeeds", || {
        get(&peers[0], &key, "doc", "all")
    });
    assert_eq!(o.stdout, b"new", "{}", text(&o));
    // The repair runs in the background: wait until p3's own copy is new,
    // read at `one` through p3 (its local store alone, which repairs
    // nothing: the only answer is p3's own).
    wait_for(
        Duration::from_secs(20),
        "p3's own copy is the new one",
        || {
            let o = ringkv(&["get", "doc", "--consistency", "one", "--json"], &p3, &key);
            serde_json::from_slice::<serde_json::Value>(&o.stdout).is_ok_and(|json| {
                json["answered"] == serde_json::json!(["p3"]) && json["value"] == "new"
            })
        },
    );
    // Only p3 left: its own copy must be the new one now.
    drop(peers);
    let o = get(&p3, &key, "doc", "one");
    assert_eq!(o.stdout, b"new", "p3 was not repaired: {}", text(&o));
}

#[test]
fn oversized_and_empty_input_is_refused_and_writes_nothing() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (peers, key) = converged_cluster(dir.path(), 3, &[]);
    let big_key = "k".repeat(64 * 1024 + 1);
    let o = put(&peers[0], &key, &big_key, "v", "quorum");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nothing was sent"),
        "{}",
        text(&o)
    );
    let file = dir.path().join("big");
    std::fs::write(&file, vec![0u8; 16 * 1024 * 1024 + 1]).unwrap();
    let o = ringkv(
        &["put", "bigvalue", "--file", file.to_str().unwrap()],
        &peers[0],
        &key,
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("limit"),
        "{}",
        text(&o)
    );
    assert_eq!(
        get_answered(&peers[1], &key, "bigvalue", "all")
            .status
            .code(),
        Some(1),
        "the refused value was written"
    );
    let o = put(&peers[0], &key, "", "v", "quorum");
    assert!(!o.status.success(), "an empty key was accepted");
    // A value read from standard input works, bytes as they are.
    let mut child = Command::new(BIN)
        .args([
            "put",
            "bin",
            "--peer",
            &peers[0].addr.to_string(),
            "--cluster-key",
            &key,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&[0, 159, 146, 150, 255])
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        get(&peers[2], &key, "bin", "quorum").stdout,
        vec![0, 159, 146, 150, 255]
    );
}

#[test]
fn a_write_missed_by_a_dead_replica_is_replayed_from_a_hint_after_restart() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    // Anti-entropy off: it would bring the key to p3 too.
    let no_anti_entropy = ["--anti-entropy-interval", "0s"];
    let (mut peers, key) = converged_cluster(dir.path(), 3, &no_anti_entropy);
    let p3 = peers.pop().unwrap();
    let (name, data) = (p3.name.clone(), p3.data.clone());
    p3.signal("-KILL");
    drop(p3);
    let o = put(&peers[0], &key, "hinted", "while-you-were-out", "quorum");
    assert!(o.status.success(), "{}", text(&o));
    // The coordinator gives up on p3 after its request timeout and keeps a
    // hint; then p3 returns (its data dir keeps its identity and the peers
    // it knew; it needs no old address).
    std::thread::sleep(Duration::from_secs(3));
    let p3 = Peer::start_in(data, &name, "127.0.0.1:0", &no_anti_entropy);
    let all: Vec<&Peer> = vec![&peers[0], &peers[1], &p3];
    wait_settled(&all, &key, 3);
    // `keys` lists p3's own store, and repairs nothing.
    wait_for(
        Duration::from_secs(30),
        "p3 holds the hinted key itself",
        || {
            ringkv(&["keys"], &p3, &key)
                .stdout
                .split(|b| *b == b'\n')
                .any(|line| line == b"hinted")
        },
    );
    // No read touched the key, so only the hint can have brought it to p3.
    drop(peers);
    let o = get(&p3, &key, "hinted", "one");
    assert_eq!(
        o.stdout,
        b"while-you-were-out",
        "the hint was not replayed: {}",
        text(&o)
    );
}

#[test]
fn a_coordinator_whose_ring_shrank_does_not_settle_for_fewer_copies() {
    // Two of three peers die and drop out of the survivor's ring at once
    // (dead grace 0 s). Quorum still means two copies: the write must fail,
    // not be acknowledged with the survivor's copy alone.
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (mut peers, key) = converged_cluster(dir.path(), 3, &["--dead-grace", "0s"]);
    let survivor = peers.remove(0);
    for p in &peers {
        p.signal("-KILL");
    }
    drop(peers);
    wait_for(CONVERGE, "the survivor's ring holds only itself", || {
        members(survivor.addr, &key).is_some_and(|v| {
            v["members"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["ownership"].is_null())
                .count()
                == 2
        })
    });
    let o = put(&survivor, &key, "lonely", "v", "quorum");
    assert!(
        !o.status.success(),
        "a quorum write was acknowledged with one copy: {}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("needed 2 acknowledgements"),
        "{}",
        text(&o)
    );
    let o = put(&survivor, &key, "lonely", "v", "one");
    assert!(
        o.status.success(),
        "consistency one still works: {}",
        text(&o)
    );
}

#[test]
fn get_json_shows_text_as_text_and_other_bytes_exactly_as_hex() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (peers, key) = converged_cluster(dir.path(), 1, &[]);
    let file = dir.path().join("binary");
    std::fs::write(&file, [0u8, 0x9f, 0x92, 0x96, 0xff]).unwrap();
    let o = ringkv(
        &["put", "bin", "--file", file.to_str().unwrap()],
        &peers[0],
        &key,
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = ringkv(&["get", "bin", "--json"], &peers[0], &key);
    assert!(o.status.success(), "{}", text(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["value"], serde_json::Value::Null, "{json}");
    assert_eq!(json["value_hex"], "009f9296ff", "{json}");
    let o = put(&peers[0], &key, "txt", "héllo", "quorum");
    assert!(o.status.success(), "{}", text(&o));
    let o = ringkv(&["get", "txt", "--json"], &peers[0], &key);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["value"], "héllo", "{json}");
    assert!(json.get("value_hex").is_none(), "{json}");
}

#[test]
fn a_peer_whose_seeds_have_not_answered_coordinates_nothing() {
    // A joining peer knows only itself until a seed answers; before this
    // rule it acknowledged writes as the only replica of every key, and
    // lost them once it learned the real members. The seed here is a UDP
    // port on loopback that this test holds and that never answers.
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let seed = silent.local_addr().unwrap().to_string();
    let key = String::from_utf8(
        Command::new(BIN)
            .arg("keygen")
            .output()
            .expect("ringkv runs")
            .stdout,
    )
    .unwrap();
    let key = key.trim();
    let lone = Peer::start(dir.path(), "lone", &["--join", &seed, "--cluster-key", key]);
    let out = put(&lone, key, "k", "v", "quorum");
    assert!(
        !out.status.success(),
        "a put was acknowledged: {}",
        text(&out)
    );
    assert!(text(&out).contains("not joined"), "{}", text(&out));
    // Nothing was written: the definite-failure exit status, by kind.
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = put(&lone, key, "k", "v", "one");
    assert!(
        !out.status.success(),
        "a put at one was acknowledged: {}",
        text(&out)
    );
    let out = get(&lone, key, "k", "quorum");
    assert!(!out.status.success(), "a get answered: {}", text(&out));
    assert!(text(&out).contains("not joined"), "{}", text(&out));
}
