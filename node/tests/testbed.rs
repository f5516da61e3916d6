//! `ringkv testbed ...` end to end: detached clusters driven command by
//! command, the shipped scenarios, and the demo. Each test stops every peer
//! it started (a guard runs `testbed down` even when an assertion fails);
//! tests that start clusters run one at a time, so a loaded machine is not
//! asked for more than five peers at once.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

const BIN: &str = env!("CARGO_BIN_EXE_ringkv");

/// One cluster at a time.
static CLUSTERS: Mutex<()> = Mutex::new(());

fn testbed(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("testbed")
        .args(args)
        .env_remove("RINGKV_TESTBED_DIR")
        .env_remove("RINGKV_SEED")
        .output()
        .expect("ringkv runs")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let out = testbed(args);
    assert!(
        out.status.success(),
        "testbed {args:?} failed: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[&str]) -> String {
    let out = testbed(args);
    assert!(
        !out.status.success(),
        "testbed {args:?} should fail: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `testbed down` on drop.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = testbed(&["down", "--dir", &self.0.display().to_string()]);
    }
}

fn pids(dir: &Path) -> Vec<(String, u32)> {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("testbed.json")).unwrap()).unwrap();
    state["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["pid"].as_u64().unwrap() as u32,
            )
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !matches!(
            s.rsplit(')').next().and_then(|r| r.trim().chars().next()),
            Some('Z' | 'X')
        )
    })
}

/// The cluster key is in no peer's argv, not in `up`'s output nor the
/// peers' logs, and the state file holding it is 0600.
fn key_stays_private(dir: &Path, up: &str, peers: &[(String, u32)]) {
    use std::os::unix::fs::PermissionsExt as _;
    let key = std::fs::read_to_string(dir.join("p1").join("cluster.key")).unwrap();
    let hex = key.trim().trim_start_matches("rkv1-").to_owned();
    assert_eq!(hex.len(), 64, "{key}");
    assert!(!up.contains(&hex), "`up` prints the key: {up}");
    for (name, pid) in peers {
        let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
        assert!(!argv.contains(&hex), "{name}'s argv holds the key: {argv}");
        let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap();
        assert!(!log.contains(&hex), "{name}'s log holds the key");
    }
    let state = std::fs::metadata(dir.join("testbed.json")).unwrap();
    assert_eq!(state.permissions().mode() & 0o777, 0o600);
}

#[test]
fn detached_cluster_survives_its_command_and_takes_faults_load_and_down() {
    let _one = CLUSTERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tb");
    let d = dir.display().to_string();
    let _down = Down(dir.clone());
    let up = ok(&[
        "up",
        "--nodes",
        "3",
        "--dir",
        &d,
        "--",
        "--dead-grace",
        "0s",
    ]);
    assert!(up.contains("3 peers up and converged"), "{up}");
    assert!(up.contains("p3") && up.contains("running"), "{up}");
    let before = pids(&dir);
    assert_eq!(before.len(), 3);
    assert!(
        before.iter().all(|(_, pid)| alive(*pid)),
        "the peers outlive `up`"
    );
    assert!(dir.join("p1.log").exists() && dir.join("p1").is_dir());
    key_stays_private(&dir, &up, &before);

    // Bad input is refused clearly and changes nothing.
    assert!(fails(&["kill", "p9", "--dir", &d]).contains("no peer called \"p9\""));
    assert!(fails(&["up", "--nodes", "1", "--dir", &d]).contains("already running"));
    let scenario =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testbed/scenarios/kill-restart.toml");
    let err = fails(&["scenario", &scenario.display().to_string(), "--dir", &d]);
    assert!(err.contains("already running"), "{err}");
    assert!(
        before.iter().all(|(_, pid)| alive(*pid)),
        "a refused command stops nothing"
    );
    assert!(fails(&["restart", "p1", "--dir", &d]).contains("its process is running"));
    assert!(fails(&["delay", "p1", "soon", "--dir", &d]).contains("not a duration"));

    ok(&["kill", "p2", "--dir", &d]);
    assert!(!alive(before[1].1), "SIGKILL went to p2");
    let watched = ok(&[
        "watch",
        "--until-converged",
        "--duration",
        "60s",
        "--dir",
        &d,
    ]);
    assert!(watched.contains("converged"), "{watched}");
    let status = ok(&["status", "--dir", &d]);
    assert!(status.contains("gone (killed)"), "{status}");
    ok(&["restart", "p2", "--dir", &d]);
    ok(&[
        "watch",
        "--until-converged",
        "--duration",
        "60s",
        "--dir",
        &d,
    ]);

    // A short workload through the live peers checks clean.
    let history = tmp.path().join("h.jsonl");
    let h = history.display().to_string();
    let load = ok(&[
        "load",
        "--rate",
        "300",
        "--duration",
        "3s",
        "--keys",
        "200",
        "--out",
        &h,
        "--check",
        "--dir",
        &d,
    ]);
    assert!(load.contains("OK: no violations"), "{load}");
    assert!(ok(&["check", &h]).contains("lost writes: 0"));

    let down = ok(&["down", "--dir", &d]);
    assert!(down.contains("stopped"), "{down}");
    for (name, pid) in pids(&dir) {
        assert!(!alive(pid), "{name} still runs after down");
    }
}

#[test]
fn fault_commands_set_the_switch_or_say_why_not() {
    let _one = CLUSTERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tb");
    let d = dir.display().to_string();
    let _down = Down(dir.clone());
    ok(&["up", "--nodes", "2", "--dir", &d]);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("testbed.json")).unwrap()).unwrap();
    if state["fault_switch"] == true {
        // The peers have the switch: the commands must work.
        ok(&["loss", "p1", "10%", "--dir", &d]);
        ok(&["delay", "p1", "50ms", "--dir", &d]);
        let status = ok(&["status", "--dir", &d]);
        assert!(status.contains("loss 10%, delay 50ms"), "{status}");
        ok(&["heal", "--dir", &d]);
    } else {
        let err = fails(&["partition", "p1", "/", "p2", "--dir", &d]);
        assert!(err.contains("--testbed-faults"), "{err}");
        assert!(fails(&["heal", "--dir", &d]).contains("fault switch"));
    }
    ok(&["down", "--dir", &d]);
}

#[test]
fn commands_on_a_missing_or_corrupt_cluster_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display().to_string();
    assert!(fails(&["status", "--dir", &d]).contains("no testbed cluster"));
    std::fs::write(tmp.path().join("testbed.json"), "{oops").unwrap();
    assert!(fails(&["kill", "p1", "--dir", &d]).contains("not a testbed state file"));
    let h = tmp.path().join("h.jsonl");
    std::fs::write(&h, "not a history\n").unwrap();
    assert!(fails(&["check", &h.display().to_string()]).contains("line 1"));
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\nnodes = 5\n[[step]]\nrun = \"dance\"\n").unwrap();
    assert!(fails(&["scenario", &bad.display().to_string()]).contains("step 1"));
}

fn scenario(name: &str) {
    scenario_output(name);
}

/// Runs a shipped scenario; its output and its history file's text.
fn scenario_output(name: &str) -> (String, String) {
    scenario_with(name, &[])
}

/// Runs a shipped scenario with extra arguments (`--netns`).
fn scenario_with(name: &str, extra: &[&str]) -> (String, String) {
    let _one = CLUSTERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testbed/scenarios")
        .join(format!("{name}.toml"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tb");
    let _down = Down(dir.clone());
    let (file, dir_text) = (file.display().to_string(), dir.display().to_string());
    let mut args = vec!["scenario", &file, "--dir", &dir_text];
    args.extend(extra);
    let out = ok(&args);
    assert!(out.contains(&format!("scenario {name} passed")), "{out}");
    assert!(out.contains("lost writes: 0"), "{out}");
    let history = std::fs::read_to_string(dir.join("history.jsonl")).unwrap_or_default();
    (out, history)
}

#[test]
fn scenario_kill_restart_converges_and_loses_nothing() {
    scenario("kill-restart");
}

#[test]
fn scenario_graceful_leave_converges_and_loses_nothing() {
    scenario("graceful-leave");
}

#[test]

fn scenario_add_under_load_converges_and_loses_nothing() {
    scenario("add-under-load");
}

#[test]

fn scenario_partition_heal_converges_and_loses_nothing() {
    scenario("partition-heal");
}

#[test]
fn scenario_clock_skew_loses_nothing() {
    scenario("clock-skew");
}

#[test]
fn scenario_joiners_dying_mid_handoff_lose_nothing() {
    scenario("joiners-die");
}

#[test]
fn scenario_full_disk_loses_nothing() {
    scenario("full-disk");
}

#[test]
fn scenario_kill_all_at_once_loses_nothing() {
    scenario("kill-all");
}

/// Issue 13 item 7(a): the checker catches a replica that acknowledges a
/// write before flushing it. The same power-loss scenario, with every
/// peer mutated (a debug build's `RINGKV_TEST_MUTATIONS`, see
/// `node/src/mutation.rs`), must fail with lost writes: sled keeps the
/// unflushed writes in the process's memory, which kill -9 takes with it.
#[cfg(debug_assertions)]
#[test]
fn a_replica_that_acknowledges_before_the_flush_is_caught_by_kill_all() {
    let _one = CLUSTERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testbed/scenarios/kill-all.toml");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tb");
    let _down = Down(dir.clone());
    let out = Command::new(BIN)
        .args(["testbed", "scenario"])
        .arg(&file)
        .arg("--dir")
        .arg(&dir)
        .env_remove("RINGKV_TESTBED_DIR")
        .env_remove("RINGKV_SEED")
        .env("RINGKV_TEST_MUTATIONS", "ack-before-flush")
        .output()
        .expect("ringkv runs");
    let all = text(&out);
    assert!(!out.status.success(), "the mutation went unnoticed: {all}");
    let lost: u64 = all
        .lines()
        .find_map(|l| l.trim().strip_prefix("lost writes: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no lost-writes line: {all}"));
    assert!(lost > 0, "failed, but not for lost writes: {all}");
}

#[test]
fn demo_runs_end_to_end_and_writes_a_self_contained_report() {
    let _one = CLUSTERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tb");
    let _down = Down(dir.clone());
    let report = tmp.path().join("report.html");
    let out = ok(&[
        "demo",
        "--dir",
        &dir.display().to_string(),
        "--report",
        &report.display().to_string(),
    ]);
    assert!(out.contains("demo passed"), "{out}");
    assert!(out.contains("lost writes: 0 (must be 0)"), "{out}");
    assert!(out.contains("kill -9 p3"), "{out}");
    let page = std::fs::read_to_string(&report).unwrap();
    assert!(page.contains("<svg") && page.contains("kill p3") && page.contains("restart p3"));
    assert!(
        !page.contains("src=") && !page.contains("href="),
        "nothing fetched"
    );
    for (name, pid) in pids(&dir) {
        assert!(!alive(pid), "{name} still runs after the demo");
    }
}

/// How long after a restart its failures may last: a restarted peer's
/// clock bound makes replicas refuse its first writes for up to ~1.5 s
/// (the same in `kill-restart`; nothing to do with the wire version).
const RESTART_WINDOW_S: f64 = 3.0;

#[test]
fn scenario_rolling_upgrade_loses_nothing_and_fails_only_at_restarts() {
    let (out, history) = scenario_output("rolling-upgrade");
    // Restart instants: the `kill pN` steps, "  3.00 s  kill p4".
    let restarts: Vec<f64> = out
        .lines()
        .filter(|l| l.contains(" s  kill p"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(restarts.len(), 4, "{out}");
    let mut failed = 0;
    for line in history.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("history is JSON lines");
        if v["type"] != "op" || v["outcome"] == "ok" {
            continue;
        }
        failed += 1;
        // An operation in flight across a restart (killed mid-call) counts
        // as failing at it.
        let at = v["start_us"].as_f64().expect("a start") / 1e6;
        let end = v["end_us"].as_f64().expect("an end") / 1e6;
        assert!(
            restarts
                .iter()
                .any(|&r| at <= r + RESTART_WINDOW_S && end >= r - 0.1),
            "an operation failed at {at:.2}..{end:.2} s, outside every restart window {restarts:?}: {line}"
        );
    }
    eprintln!("{failed} failed operations, all at restart instants");
}

/// Whether the multi-host mode can run here. Under CI (`CI` set) it must:
/// a missing tool or permission fails the test; elsewhere it is skipped
/// with the reason.
fn netns_here() -> bool {
    match ringkv_testbed::netns::unavailable() {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => {
            panic!("CI runs the multi-host scenarios: {why}")
        }
        Some(why) => {
            eprintln!("skipped: {why}");
            false
        }
    }
}

#[test]
fn netns_scenario_kill_restart_loses_nothing() {
    if netns_here() {
        scenario_with("kill-restart", &["--netns"]);
    }
}

/// The partition comes from iptables in the peers' namespaces: without
/// the kernel rules, nobody is seen dead and the scenario fails.
#[test]
fn netns_scenario_partition_heal_loses_nothing() {
    if netns_here() {
        let (out, _) = scenario_with("partition-heal", &["--netns"]);
        assert!(out.contains("partition p1,p2 / p3,p4,p5"), "{out}");
    }
}

#[test]
fn netns_scenario_clock_skew_loses_nothing() {
    if netns_here() {
        scenario_with("clock-skew", &["--netns"]);
    }
}

/// Issue 15 item 2: a peer back at a new address keeps its identity
/// and is re-dialed there; a seed that moved is still found by name.
///
/// Also issue 13: p3 and then p1 are killed and restarted within 2 s of
/// each other in a cluster whose first pulls the kill interrupted, so
/// writes are acknowledged by replicas that announced no ring; the joiner
/// p5 then pulled only from the one member that had announced, and the
/// check found lost writes (1 in about 20 runs on a loaded machine).
/// Fixed in `handoff::phase::plan_pulls`.
#[test]
fn netns_scenario_readdress_keeps_identity_and_loses_nothing() {
    if netns_here() {
        let (out, _) = scenario_with("readdress", &["--netns"]);
        assert!(out.contains("every running peer lists p3 at"), "{out}");
        assert!(out.contains("p5 started"), "{out}");
    }
}

fn sh(argv: &[&str]) -> (bool, String) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Peers in their own namespaces: distinct addresses on an isolated /24,
/// names from their hosts files, kernel faults in their chains, and a
/// `down` that removes everything, also what a crashed run left behind.
#[test]
fn netns_peers_are_isolated_named_faulted_by_the_kernel_and_cleaned_up() {
    if !netns_here() {
        return;
    }
    let _one = CLUSTERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tb");
    let d = dir.display().to_string();
    let _down = Down(dir.clone());
    let up = ok(&["up", "--netns", "--nodes", "3", "--dir", &d]);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("testbed.json")).unwrap()).unwrap();
    let subnet = state["netns"]["subnet"].as_u64().unwrap();
    let ns = |n: u32| format!("rkv{subnet}-p{n}");
    for n in 1..=3u32 {
        let want = format!("10.213.{subnet}.{}:7000", 10 + n);
        assert!(up.contains(&want), "p{n} at {want}: {up}");
    }
    // Isolated: the namespace's only route is its /24; nothing outside
    // it is reachable (a route lookup, no packet is sent).
    let (_, routes) = sh(&["ip", "-n", &ns(1), "route", "show"]);
    assert!(!routes.contains("default"), "{routes}");
    let (reachable, why) = sh(&["ip", "-n", &ns(1), "route", "get", "192.0.2.1"]);
    assert!(!reachable, "a route out of the testbed: {why}");
    let (_, forward) = sh(&["iptables", "-S", "FORWARD"]);
    assert!(
        forward.contains(&format!("-i rkv{subnet} ! -o rkv{subnet}"))
            && forward.contains("ringkv-testbed"),
        "{forward}"
    );
    // Named: p2.ringkv.test resolves in p1's namespace to p2's address.
    let (_, hosts) = sh(&[
        "ip",
        "netns",
        "exec",
        &ns(1),
        "getent",
        "hosts",
        "p2.ringkv.test",
    ]);
    assert!(hosts.contains(&format!("10.213.{subnet}.12")), "{hosts}");
    // Joined by name.
    let p2_cmdline = std::fs::read(format!("/proc/{}/cmdline", pids(&dir)[1].1)).unwrap();
    assert!(String::from_utf8_lossy(&p2_cmdline).contains("p1.ringkv.test:7000"));
    // A one-way cut is an OUTPUT rule on the sender only.
    ok(&["partition", "--one-way", "p1", "/", "p2", "--dir", &d]);
    let (_, out1) = sh(&["ip", "netns", "exec", &ns(1), "iptables", "-S", "rkv-out"]);
    assert!(
        out1.contains(&format!("-d 10.213.{subnet}.12/32 -j DROP")),
        "{out1}"
    );
    let (_, in2) = sh(&["ip", "netns", "exec", &ns(2), "iptables", "-S", "rkv-in"]);
    assert!(!in2.contains("DROP"), "{in2}");
    ok(&["loss", "p3", "10%", "--dir", &d]);
    let (_, in3) = sh(&["ip", "netns", "exec", &ns(3), "iptables", "-S", "rkv-in"]);
    assert!(in3.contains("statistic"), "{in3}");
    ok(&["link", "p3", "down", "--dir", &d]);
    let status = ok(&["status", "--dir", &d]);
    assert!(status.contains("link down"), "{status}");
    ok(&["heal", "--dir", &d]);
    let (_, out1) = sh(&["ip", "netns", "exec", &ns(1), "iptables", "-S", "rkv-out"]);
    assert!(!out1.contains("DROP"), "healed: {out1}");
    ok(&[
        "watch",
        "--until-converged",
        "--duration",
        "30s",
        "--dir",
        &d,
    ]);
    // A crash: the peers die with the testbed's state file still saying
    // they run, and a namespace the state never recorded is left behind.
    for (_, pid) in pids(&dir) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let (made, why) = sh(&["ip", "netns", "add", &ns(9)]);
    assert!(made, "{why}");
    let down = ok(&["down", "--dir", &d]);
    assert!(down.contains("removed"), "{down}");
    let net = ringkv_testbed::netns::Net {
        subnet: u8::try_from(subnet).unwrap(),
    };
    let left = ringkv_testbed::netns::Host::leftovers(net);
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(!Path::new(&format!("/etc/netns/{}", ns(1))).exists());
    // The subnet is free again and another testbed takes it: a second
    // `down` here must leave that one's network alone.
    let bridge = format!("rkv{subnet}");
    let (made, why) = sh(&["ip", "link", "add", &bridge, "type", "bridge"]);
    assert!(made, "{why}");
    let (labelled, why) = sh(&[
        "ip",
        "link",
        "set",
        &bridge,
        "alias",
        "ringkv-testbed:someone-else",
    ]);
    let again = testbed(&["down", "--dir", &d]);
    let still = Path::new("/sys/class/net").join(&bridge).exists();
    let _ = sh(&["ip", "link", "del", &bridge]);
    assert!(labelled, "{why}");
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("left alone"),
        "{}",
        text(&again)
    );
    assert!(still, "another testbed's bridge was removed");
}
