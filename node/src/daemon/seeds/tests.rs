use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, watch};

use super::{Lookup, Resolve, SeedWatch};
use crate::seeds::{SeedName, SeedRetry, Sighting};

/// Answers from a script, the last one repeated; counts the lookups.
#[derive(Debug)]
struct Scripted {
    answers: Mutex<VecDeque<Vec<SocketAddr>>>,
    lookups: Mutex<Vec<String>>,
}

impl Scripted {
    fn new(answer: Vec<SocketAddr>) -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::new(vec![answer].into()),
            lookups: Mutex::new(Vec::new()),
        })
    }

    /// From now on, the name resolves to `answer`.
    fn then(&self, answer: Vec<SocketAddr>) {
        let mut a = self.answers.lock().expect("answers");
        a.clear();
        a.push_back(answer);
    }

    fn lookups(&self) -> usize {
        self.lookups.lock().expect("lookups").len()
    }
}

impl Resolve for Scripted {
    fn resolve(&self, name: &SeedName) -> Lookup<'_> {
        self.lookups.lock().expect("lookups").push(name.to_string());
        let answer = self.answers.lock().expect("answers").front().cloned();
        Box::pin(async move { answer.ok_or_else(|| std::io::Error::other("no such host")) })
    }
}

/// The test's view: joined, and the live others' addresses.
type TestView = (bool, Vec<SocketAddr>);

fn sight(view: &TestView, seeds: &[SocketAddr]) -> Sighting {
    Sighting {
        joined: view.0,
        live_others: view.1.len(),
        seeds_known: !seeds.is_empty(),
        seed_live: seeds.iter().any(|s| view.1.contains(s)),
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

const RETRY: SeedRetry = SeedRetry {
    base: Duration::from_secs(1),
    max: Duration::from_secs(30),
};

/// The next attempt (virtual time runs on while the task waits).
async fn next(rx: &mut mpsc::Receiver<Vec<SocketAddr>>, what: &str) -> Vec<SocketAddr> {
    tokio::time::timeout(RETRY.max * 2, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no attempt within {:?}: {what}", RETRY.max * 2))
        .expect("the task runs")
}

/// Lets the task run until it waits again (paused time, one thread).
async fn let_run() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn join_attempts_follow_the_addresses_the_names_resolve_to() {
    let seed = std::env::var("RINGKV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    eprintln!("seed {seed}");
    let me = addr(7000);
    // The seed first resolves to one address (and to this peer), then,
    // once its pod moved, to another.
    let resolver = Scripted::new(vec![addr(7001), me]);
    let (view_tx, view_rx) = watch::channel::<TestView>((false, Vec::new()));
    let (tx, mut rx) = mpsc::channel(4);
    let watch = SeedWatch {
        names: vec![SeedName::parse("seed.test:7001").expect("name")],
        known: Vec::new(),
        me,
        first: vec![addr(7001)],
        retry: RETRY,
        rng: ChaCha8Rng::seed_from_u64(seed),
    };
    let task = tokio::spawn(watch.run(resolver.clone(), view_rx, sight, tx));

    // Not joined: each attempt resolves again, further apart each time.
    let t0 = tokio::time::Instant::now();
    assert_eq!(next(&mut rx, "first retry").await, vec![addr(7001)]);
    let t1 = tokio::time::Instant::now();
    assert!(t1 - t0 <= RETRY.base, "first retry after {:?}", t1 - t0);
    assert_eq!(next(&mut rx, "second retry").await, vec![addr(7001)]);
    resolver.then(vec![addr(7002)]);
    assert_eq!(
        next(&mut rx, "a retry after the name moved").await,
        vec![addr(7002)],
        "the attempt goes to the new address"
    );
    assert_eq!(resolver.lookups(), 3, "one lookup per attempt");

    // Joined through it, the seed alive: no attempt in an hour.
    view_tx.send_replace((true, vec![addr(7002)]));
    let_run().await;
    tokio::time::advance(Duration::from_secs(3600)).await;
    let_run().await;
    assert!(rx.try_recv().is_err(), "no attempt while settled");
    assert_eq!(resolver.lookups(), 3, "no lookups while settled");

    // Partitioned (alone): resolves again at once and follows the name
    // to yet another address.
    resolver.then(vec![addr(7003)]);
    let before = tokio::time::Instant::now();
    view_tx.send_replace((true, Vec::new()));
    assert_eq!(next(&mut rx, "after the partition").await, vec![addr(7003)]);
    assert_eq!(tokio::time::Instant::now(), before, "at once");

    drop(view_tx);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the task ends once the view closes")
        .expect("no panic");
}
