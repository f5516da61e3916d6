//! Key handling of real `ringkv` processes on 127.0.0.1 with ephemeral
//! ports and temporary data dirs: the first peer's banner names the key
//! file and never prints the key, a peer joins with that file, and a key
//! on the command line warns (the environment does not). Every wait is a
//! bounded poll; every process is killed when its handle drops.

mod common;

use std::path::Path;
use std::process::{Child, Command};

use common::*;
use ringkv_testbed::ready;

const ARGV_WARNING: &str = "ps and shell history";

/// Starts `ringkv node` named `name` with its output in `<dir>/<name>.log`.
fn start_logged(dir: &Path, name: &str, args: &[&str]) -> (Child, ready::Ready) {
    ready::start(&ready::PeerCommand {
        bin: BIN.into(),
        data: dir.join(name),
        name: name.to_owned(),
        listen: "127.0.0.1:0".to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        log_level: "warn".to_owned(),
        log: Some(dir.join(format!("{name}.log"))),
    })
    .unwrap_or_else(|e| panic!("peer {name} starts: {e:#}"))
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).expect("a log")
}

#[test]
fn the_banner_names_the_key_file_never_the_key_and_a_peer_joins_with_that_file() {
    let _one = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (child, first) = start_logged(dir.path(), "p1", &[]);
    let _p1 = Killed(child);
    let key = std::fs::read_to_string(dir.path().join("p1").join("cluster.key")).unwrap();
    let key = key.trim();
    let hex = key.trim_start_matches("rkv1-");
    let banner = log_of(dir.path(), "p1");
    assert!(
        !banner.contains(hex),
        "the banner prints the key:\n{banner}"
    );
    let file = banner
        .split("--cluster-key-file ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("the banner names no key file:\n{banner}"))
        .trim()
        .to_owned();
    assert!(file.ends_with("cluster.key"), "{file}");
    let seed = first.quic.to_string();
    let (child, _) = start_logged(
        dir.path(),
        "p2",
        &["--join", &seed, "--cluster-key-file", &file],
    );
    let _p2 = Killed(child);
    wait_for(CONVERGE, "p1 sees p2 alive", || {
        members(first.quic, key)
            .and_then(|v| state_of(&v, "p2"))
            .is_some_and(|(s, _)| s == "alive")
    });
    let joined = log_of(dir.path(), "p2");
    assert!(!joined.contains(ARGV_WARNING), "{joined}");
    assert!(!joined.contains(hex), "{joined}");
}

#[test]
fn a_key_on_the_command_line_warns_and_one_in_the_environment_does_not() {
    // A malformed key: the command stops before it opens any connection.
    let bad = "rkv1-not-a-key";
    let argv = Command::new(BIN)
        .args(["members", "--peer", "127.0.0.1:1", "--cluster-key", bad])
        .env_remove("RINGKV_CLUSTER_KEY")
        .output()
        .unwrap();
    assert!(!argv.status.success());
    let err = String::from_utf8_lossy(&argv.stderr);
    assert!(
        err.contains(ARGV_WARNING) && err.contains("--cluster-key-file"),
        "no warning: {err}"
    );
    let env = Command::new(BIN)
        .args(["members", "--peer", "127.0.0.1:1"])
        .env("RINGKV_CLUSTER_KEY", bad)
        .output()
        .unwrap();
    assert!(!env.status.success());
    let err = String::from_utf8_lossy(&env.stderr);
    assert!(!err.contains(ARGV_WARNING), "{err}");
    assert!(err.contains("RINGKV_CLUSTER_KEY"), "{err}");
}
