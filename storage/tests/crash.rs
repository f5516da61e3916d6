//! kill -9 durability: this test binary re-executes itself as a child that
//! writes with `apply(..).await` and prints every acknowledged key; the
//! parent kills it with SIGKILL mid-stream, reopens the store and requires
//! every acknowledged key. Three cycles on the same directory.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::open_retrying;
use ringkv_ring::NodeId;
use ringkv_storage::{Hlc, Record, Version};

/// Set in the child: the store directory.
const CHILD_DIR: &str = "RINGKV_CRASH_CHILD";
/// Set in the child: the cycle number, so that keys differ per cycle.
const CHILD_CYCLE: &str = "RINGKV_CRASH_CYCLE";
const CYCLES: usize = 3;
const WRITERS: usize = 8;
/// How long the parent lets the child write after its first ack.
const WRITE_FOR: Duration = Duration::from_secs(1);
/// Bound on waiting for the child's first ack, and on the child's life.
const PATIENCE: Duration = Duration::from_secs(60);

fn key(cycle: &str, writer: usize, i: u64) -> String {
    format!("c{cycle}-w{writer}-{i}")
}

/// The child's body: runs only when the parent sets [`CHILD_DIR`]; a plain
/// `cargo test` passes straight through it.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let cycle = std::env::var(CHILD_CYCLE).expect("the parent sets the cycle");
    // The parent dropped its handle on the store just before starting us.
    let store = open_retrying(Path::new(&dir));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime builds");
    rt.block_on(async move {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let store = store.clone();
            let cycle = cycle.clone();
            tasks.push(tokio::spawn(async move {
                let node = NodeId::from_name(&format!("writer-{writer}"));
                // Bounded: the parent kills us long before either limit.
                for i in 0..10_000_000u64 {
                    if tokio::time::Instant::now() > deadline {
                        break;
                    }
                    let k = key(&cycle, writer, i);
                    let version = Version {
                        hlc: Hlc::new(i, 0),
                        generation: store.generation(),
                        node,
                    };
                    let record = Record::put(k.clone().into_bytes(), version);
                    assert!(store.apply(k.as_bytes(), record).await.expect("apply"));
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {k}").expect("stdout");
                    out.flush().expect("stdout flush");
                }
            }));
        }
        for task in tasks {
            task.await.expect("writer task");
        }
    });
}

/// Runs one child until it has acknowledged writes for [`WRITE_FOR`], kills
/// it with SIGKILL, and returns every key it acknowledged.
fn run_and_kill(dir: &Path, cycle: usize) -> Vec<String> {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_CYCLE, cycle.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(k) = line.strip_prefix("ack ") {
                if tx.send(k.to_owned()).is_err() {
                    break;
                }
            }
        }
    });

    let mut acked = Vec::new();
    let first = rx.recv_timeout(PATIENCE);
    let first = match first {
        Ok(k) => k,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child acknowledged nothing: {e}");
        }
    };
    acked.push(first);
    let stop_at = Instant::now() + WRITE_FOR;
    while let Some(left) = stop_at.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(k) => acked.push(k),
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("child stopped writing early"),
        }
    }
    // SIGKILL on unix: no destructor, no sled flush on the way out.
    child.kill().expect("kill the child");
    let status = child.wait().expect("reap the child");
    assert!(!status.success(), "the child was killed, not finished");
    // Lines already in the pipe were acknowledged too. The pipe closes with
    // the child, so the reader ends; the deadline only bounds a bug.
    let drain_until = Instant::now() + PATIENCE;
    loop {
        let left = drain_until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(k) => acked.push(k),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("child stdout never closed"),
        }
    }
    reader.join().expect("reader thread");
    acked
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return; // never recurse from inside a child
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut all_acked: Vec<String> = Vec::new();
    let mut generation = None;
    for cycle in 0..CYCLES {
        let acked = run_and_kill(dir.path(), cycle);
        assert!(!acked.is_empty());
        all_acked.extend(acked);

        let store = open_retrying(dir.path());
        let missing: Vec<&String> = all_acked
            .iter()
            .filter(|k| match store.get(k.as_bytes()).expect("get") {
                Some(r) => r.value.as_deref() != Some(k.as_bytes()),
                None => true,
            })
            .collect();
        assert!(
            missing.is_empty(),
            "cycle {cycle}: {} of {} acknowledged keys lost, e.g. {:?}",
            missing.len(),
            all_acked.len(),
            &missing[..missing.len().min(5)]
        );
        assert!(store.len() >= all_acked.len());
        // A crash of a store with records is a restart, not a lost disk.
        let g = store.generation();
        assert_eq!(
            *generation.get_or_insert(g),
            g,
            "generation kept across kill -9"
        );
        eprintln!(
            "cycle {cycle}: {} acknowledged keys so far, all present ({} records)",
            all_acked.len(),
            store.len()
        );
    }
}
