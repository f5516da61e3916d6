//! A full disk, on a small file system the test mounts (tmpfs) and
//! removes: the peer refuses writes with a clear error, never an
//! acknowledgement, reports 503 on /health, keeps serving reads, and
//! takes writes again by itself once space is freed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::test_peers::{cluster, get, health, put, stop, CALL, WAIT};
use crate::rpc::api::{ErrorKind, GetReply, PutReply, RequestError};
use crate::rpc::client;

/// A tmpfs mounted for the test, detached when dropped (lazily: a stopped
/// peer's files may still be open).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills `path` with real (not sparse) bytes until `leave` bytes are free.
fn fill(path: &Path, leave: u64) {
    let free = crate::disk::free_bytes(path.parent().expect("dir")).expect("statvfs");
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0xa5u8; 1 << 20];
    let mut left = free.saturating_sub(leave);
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).expect("small");
        file.write_all(&chunk[..n]).expect("fill");
        left -= n as u64;
    }
    file.sync_all().expect("sync");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_serves_reads_and_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(_fs) = Tmpfs::mount(&dir.path().join("p1"), "48m") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must mount a tmpfs for this test"
        );
        eprintln!("skipped: cannot mount a tmpfs here (not root?)");
        return;
    };
    let (peers, key) = cluster(dir.path(), 1, &["--min-free-space", "8MB"]).await;
    let p1 = &peers[0];
    client::request::<PutReply>(p1.addrs().quic, &key, &put(b"kept", b"before"), CALL)
        .await
        .expect("a put with room");

    fill(&dir.path().join("p1").join("filler"), 4 << 20);
    let deadline = Instant::now() + WAIT;
    let refused = loop {
        match client::request::<PutReply>(p1.addrs().quic, &key, &put(b"new", b"full"), CALL).await
        {
            Err(e) if format!("{e:#}").contains("disk is full") => break e,
            Err(e) => panic!("a write on a full disk fails only for that reason: {e:#}"),
            Ok(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "writes still acknowledged on a full disk"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        RequestError::kind_of(&refused),
        ErrorKind::Definite,
        "{refused:#}"
    );
    assert!(
        format!("{refused:#}").contains("nothing was written"),
        "{refused:#}"
    );
    let (status, body) = health(p1).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("disk is full"), "{body}");
    let read: GetReply = client::request(p1.addrs().quic, &key, &get(b"kept"), CALL)
        .await
        .expect("reads go on");
    assert_eq!(read.value.as_deref(), Some(&b"before"[..]));

    std::fs::remove_file(dir.path().join("p1").join("filler")).expect("free the space");
    let deadline = Instant::now() + WAIT;
    while client::request::<PutReply>(p1.addrs().quic, &key, &put(b"new", b"room"), CALL)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "writes never resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = health(p1).await;
    assert_eq!(status, 200, "{body}");
    stop(peers).await;
}
