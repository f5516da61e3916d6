// Shared by the two gossip targets: a fresh peer that has joined one
// seed, fed the input as a peer's message would arrive.
use std::net::SocketAddr;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ringkv_gossip::{Config, InsecureAuth, Meta, NodeId, Swim};

pub fn peer() -> (Swim<ChaCha8Rng>, Instant) {
    let now = Instant::now();
    let id = NodeId::from_name("p0");
    let mut swim = Swim::new(
        Config::for_test(),
        id,
        1,
        Meta::new(SocketAddr::from(([127, 0, 0, 1], 9000)), "p0".to_owned()),
        ChaCha8Rng::seed_from_u64(7),
        Box::new(InsecureAuth::for_id(id)),
        now,
    );
    swim.handle_join(now, vec![SocketAddr::from(([127, 0, 0, 1], 9001))]);
    (swim, now)
}
