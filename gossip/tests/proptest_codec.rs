//! Property tests of the wire codec and of the state machine fed with
//! arbitrary (but well-formed) messages: nothing a peer sends may panic us,
//! encoding round-trips, and the membership invariants hold whatever
//! arrives in whatever order.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ringkv_gossip::proto::codec::{self, decode, encode};
use ringkv_gossip::{
    Auth, Body, Channel, ClusterId, CodecError, Config, Entry, Envelope, Event, InsecureAuth, Meta,
    NodeId, NodeStatus, Sig, State, Swim, Update,
};

/// The limit the brief's callers use for arbitrary input.
const LIMIT: usize = 65_536;

// ---- strategies -------------------------------------------------------------

fn arb_node_id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 16]>().prop_map(NodeId)
}

/// Any address serde can carry exactly (it drops IPv6 flow info and scope).
fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::from((Ipv4Addr::from(ip), port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            0,
            0
        ))),
    ]
}

fn arb_state() -> impl Strategy<Value = State> {
    prop_oneof![
        Just(State::Alive),
        Just(State::Suspect),
        Just(State::Dead),
        Just(State::Left)
    ]
}

fn arb_status() -> impl Strategy<Value = NodeStatus> {
    prop_oneof![
        Just(NodeStatus::Joining),
        Just(NodeStatus::Normal),
        Just(NodeStatus::Leaving)
    ]
}

fn arb_meta() -> impl Strategy<Value = Meta> {
    (
        arb_addr(),
        proptest::option::of(arb_addr()),
        ".{0,12}",
        any::<u32>(),
        proptest::option::of("[a-z0-9-]{0,8}"),
        arb_status(),
        ".{0,8}",
        proptest::collection::btree_map(".{0,6}", ".{0,10}", 0..3),
    )
        .prop_map(
            |(addr, admin, name, weight, zone, status, build, tags)| Meta {
                addr,
                admin,
                name,
                weight,
                zone,
                status,
                build,
                tags,
            },
        )
}

fn arb_sig() -> impl Strategy<Value = Sig> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
        let mut sig = [0; 64];
        sig[..32].copy_from_slice(&a);
        sig[32..].copy_from_slice(&b);
        Sig(sig)
    })
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    (arb_update(), proptest::option::of(arb_update()))
        .prop_map(|(alive, latest)| Entry::new(alive, latest))
}

fn arb_update() -> impl Strategy<Value = Update> {
    prop_oneof![
        (
            arb_node_id(),
            any::<u64>(),
            arb_meta(),
            any::<[u8; 32]>(),
            arb_sig()
        )
            .prop_map(|(id, incarnation, meta, key, sig)| Update::Alive {
                id,
                incarnation,
                meta: meta.clone().into(),
                key,
                sig,
            }),
        (arb_node_id(), any::<u64>(), arb_node_id(), arb_sig()).prop_map(
            |(id, incarnation, by, sig)| Update::Suspect {
                id,
                incarnation,
                by,
                sig,
            }
        ),
        (arb_node_id(), any::<u64>(), arb_node_id(), arb_sig()).prop_map(
            |(id, incarnation, by, sig)| Update::Dead {
                id,
                incarnation,
                by,
                sig,
            }
        ),
        (arb_node_id(), any::<u64>(), arb_sig()).prop_map(|(id, incarnation, sig)| Update::Left {
            id,
            incarnation,
            sig
        }),
    ]
}

fn arb_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (any::<u64>(), arb_node_id()).prop_map(|(seq, target)| Body::Ping { seq, target }),
        (any::<u64>(), arb_node_id(), arb_addr()).prop_map(|(seq, target, target_addr)| {
            Body::PingReq {
                seq,
                target,
                target_addr,
            }
        }),
        any::<u64>().prop_map(|seq| Body::Ack { seq }),
        any::<u64>().prop_map(|seq| Body::Nack { seq }),
        Just(Body::Gossip),
        (
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(arb_entry(), 0..4)
        )
            .prop_map(|(join, reply, members)| Body::PushPull {
                join,
                reply,
                members
            }),
    ]
}

fn arb_envelope() -> impl Strategy<Value = Envelope> {
    (
        any::<[u8; 16]>(),
        arb_node_id(),
        arb_addr(),
        any::<u64>(),
        any::<u64>(),
        arb_body(),
        proptest::collection::vec(arb_update(), 0..6),
    )
        .prop_map(
            |(cluster, from, from_addr, view, shape, body, updates)| Envelope {
                cluster: ClusterId(cluster),
                from,
                from_addr,
                view,
                shape,
                body,
                updates,
            },
        )
}

// ---- a small world for the state machine ----------------------------------------

/// Peers the generated messages talk about; peer 0 is the one under test.
const WORLD: usize = 4;

fn world_id(i: usize) -> NodeId {
    NodeId::from_name(&format!("p{i}"))
}

fn world_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16))
}

fn world_meta(i: usize, variant: u8) -> Meta {
    let mut meta = Meta::new(world_addr(i), format!("p{i}"));
    meta.weight = 1 + u32::from(variant % 3);
    meta
}

/// Incarnations small enough to collide often (0..8).
fn arb_inc() -> impl Strategy<Value = u64> {
    0u64..8
}

fn arb_who() -> impl Strategy<Value = usize> {
    0..WORLD
}

/// Signed by its author nine times in ten, by someone else otherwise.
fn world_sign(update: Update, signer: Option<usize>) -> Update {
    let author = signer.map_or_else(|| ringkv_gossip::proto::auth::author(&update), world_id);
    ringkv_gossip::proto::auth::sign(
        &InsecureAuth::for_id(author),
        &Config::for_test().cluster,
        update,
    )
}

fn arb_signer() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![9 => Just(None), 1 => arb_who().prop_map(Some)]
}

fn world_alive(i: usize, incarnation: u64, v: u8) -> Update {
    Update::Alive {
        id: world_id(i),
        incarnation,
        meta: world_meta(i, v).into(),
        key: InsecureAuth::for_id(world_id(i)).public_key(),
        sig: Sig::NONE,
    }
}

fn arb_world_update() -> impl Strategy<Value = Update> {
    let unsigned = prop_oneof![
        (arb_who(), arb_inc(), any::<u8>()).prop_map(|(i, incarnation, v)| world_alive(
            i,
            incarnation,
            v
        )),
        (arb_who(), arb_inc(), arb_who()).prop_map(|(i, incarnation, by)| Update::Suspect {
            id: world_id(i),
            incarnation,
            by: world_id(by),
            sig: Sig::NONE,
        }),
        (arb_who(), arb_inc(), arb_who()).prop_map(|(i, incarnation, by)| Update::Dead {
            id: world_id(i),
            incarnation,
            by: world_id(by),
            sig: Sig::NONE,
        }),
        (arb_who(), arb_inc()).prop_map(|(i, incarnation)| Update::Left {
            id: world_id(i),
            incarnation,
            sig: Sig::NONE,
        }),
    ];
    (unsigned, arb_signer()).prop_map(|(u, signer)| world_sign(u, signer))
}

fn arb_world_member() -> impl Strategy<Value = Entry> {
    (arb_who(), arb_inc(), arb_state(), any::<u8>(), arb_who()).prop_map(
        |(i, incarnation, state, v, by)| {
            let (id, by, sig) = (world_id(i), world_id(by), Sig::NONE);
            let latest = match state {
                State::Alive => None,
                State::Suspect => Some(Update::Suspect {
                    id,
                    incarnation,
                    by,
                    sig,
                }),
                State::Dead => Some(Update::Dead {
                    id,
                    incarnation,
                    by,
                    sig,
                }),
                State::Left => Some(Update::Left {
                    id,
                    incarnation,
                    sig,
                }),
            };
            Entry::new(
                world_sign(world_alive(i, incarnation, v), None),
                latest.map(|u| world_sign(u, None)),
            )
        },
    )
}

fn arb_world_body() -> impl Strategy<Value = Body> {
    // Small sequence numbers, so acks and nacks hit real probes.
    prop_oneof![
        (0u64..24, arb_who()).prop_map(|(seq, t)| Body::Ping {
            seq,
            target: world_id(t)
        }),
        (0u64..24, arb_who()).prop_map(|(seq, t)| Body::PingReq {
            seq,
            target: world_id(t),
            target_addr: world_addr(t)
        }),
        (0u64..24).prop_map(|seq| Body::Ack { seq }),
        (0u64..24).prop_map(|seq| Body::Nack { seq }),
        Just(Body::Gossip),
        (
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(arb_world_member(), 0..5)
        )
            .prop_map(|(join, reply, members)| Body::PushPull {
                join,
                reply,
                members
            }),
    ]
}

fn arb_world_envelope() -> impl Strategy<Value = Envelope> {
    (
        // Now and then from another cluster.
        prop_oneof![9 => Just(Config::for_test().cluster), 1 => Just(ClusterId([7; 16]))],
        // Now and then claiming to be the peer under test itself.
        prop_oneof![9 => 1..WORLD, 1 => Just(0)],
        any::<u64>(),
        any::<u64>(),
        arb_world_body(),
        proptest::collection::vec(arb_world_update(), 0..5),
    )
        .prop_map(|(cluster, from, view, shape, body, updates)| Envelope {
            cluster,
            from: world_id(from),
            from_addr: world_addr(from),
            view,
            shape,
            body,
            updates,
        })
}

#[derive(Clone, Debug)]
enum Op {
    /// A message arrives; push-pulls on a stream, the rest as datagrams.
    Deliver(Envelope),
    /// Time passes by this many milliseconds and due timers fire.
    Tick(u64),
    /// The owner changes this peer's metadata.
    UpdateMeta(u8),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => arb_world_envelope().prop_map(Op::Deliver),
        3 => (0u64..400).prop_map(Op::Tick),
        1 => any::<u8>().prop_map(Op::UpdateMeta),
    ]
}

type Peer = Swim<ChaCha8Rng>;

/// What one op made the peer send: `(to, channel, bytes)`.
type Sends = Vec<(SocketAddr, Channel, Vec<u8>)>;

fn fresh_peer(seed: u64, t0: Instant) -> Peer {
    let mut p = Swim::new(
        Config::for_test(),
        world_id(0),
        1,
        world_meta(0, 0),
        ChaCha8Rng::seed_from_u64(seed),
        Box::new(InsecureAuth::for_id(world_id(0))),
        t0,
    );
    p.handle_join(t0, vec![world_addr(1)]);
    p
}

/// Applies one op; returns what came out.
fn run_op(p: &mut Peer, now: &mut Instant, op: &Op) -> (Sends, Vec<Event>) {
    match op {
        Op::Deliver(env) => {
            let bytes = encode(env).expect("generated envelopes encode");
            let res = if matches!(env.body, Body::PushPull { .. }) {
                p.handle_stream(*now, &bytes)
            } else {
                p.handle_datagram(*now, &bytes)
            };
            // Small generated messages always fit the datagram limit.
            res.expect("well-formed messages are accepted");
        }
        Op::Tick(ms) => {
            *now += Duration::from_millis(*ms);
            p.handle_timeout(*now);
        }
        Op::UpdateMeta(v) => {
            let meta = world_meta(0, *v);
            p.handle_update_meta(*now, meta);
        }
    }
    let transmits = std::iter::from_fn(|| p.poll_transmit())
        .map(|t| (t.to, t.channel, t.bytes))
        .collect();
    let events = std::iter::from_fn(|| p.poll_event()).collect();
    (transmits, events)
}

// ---- properties -----------------------------------------------------------------

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode(&bytes, LIMIT);
    }

    #[test]
    fn decoding_arbitrary_bodies_behind_a_valid_header_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let bytes = [b"RG\x03".as_slice(), &body].concat();
        let _ = decode(&bytes, LIMIT);
    }

    #[test]
    fn corrupted_encodings_never_panic(
        env in arb_envelope(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = encode(&env).expect("encodes");
        for (at, with) in flips {
            let i = at.index(bytes.len());
            bytes[i] = with;
        }
        let _ = decode(&bytes, LIMIT);
    }

    #[test]
    fn encode_then_decode_round_trips(env in arb_envelope()) {
        let bytes = encode(&env).expect("encodes");
        prop_assert_eq!(&bytes[..3], b"RG\x03");
        prop_assert_eq!(decode(&bytes, bytes.len()).expect("decodes"), env);
        prop_assert_eq!(
            decode(&bytes, bytes.len() - 1),
            Err(CodecError::TooLarge { len: bytes.len(), limit: bytes.len() - 1 })
        );
    }

    #[test]
    fn every_strict_prefix_and_any_extension_is_rejected(env in arb_envelope(), extra in 1u8..=255) {
        let bytes = encode(&env).expect("encodes");
        for cut in 0..bytes.len() {
            prop_assert!(decode(&bytes[..cut], LIMIT).is_err(), "prefix of {} bytes decoded", cut);
        }
        let mut longer = bytes.clone();
        longer.push(extra);
        prop_assert!(decode(&longer, LIMIT).is_err(), "trailing byte accepted");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The brief's invariants: no panic, the own incarnation never falls,
    /// live members are a subset of the members.
    #[test]
    fn state_machine_survives_arbitrary_message_sequences(
        seed in any::<u64>(),
        ops in proptest::collection::vec(arb_op(), 1..60),
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut p = fresh_peer(seed, t0);
        let mut incarnation = p.me().incarnation;
        for op in &ops {
            run_op(&mut p, &mut now, op);
            prop_assert!(p.me().incarnation >= incarnation, "incarnation fell after {:?}", op);
            incarnation = p.me().incarnation;
            prop_assert!(p.live_count() <= p.members().count());
        }
    }

    /// Stricter invariants over the same inputs.
    #[test]
    fn state_machine_keeps_its_view_consistent(
        seed in any::<u64>(),
        ops in proptest::collection::vec(arb_op(), 1..60),
    ) {
        let config = Config::for_test();
        let t0 = Instant::now();
        let mut now = t0;
        let mut p = fresh_peer(seed, t0);
        let mut last_bump = p.me().incarnation;
        for op in &ops {
            let (transmits, events) = run_op(&mut p, &mut now, op);
            let me = p.me().id;
            prop_assert!(p.member(&me).is_none(), "this peer is listed among its members");
            prop_assert!(p.members().all(|m| m.id != me));
            let live = p.members().filter(|m| m.state.is_live()).count();
            prop_assert_eq!(p.live_count(), live, "live_count disagrees with members()");
            for (to, channel, bytes) in &transmits {
                let limit = match channel {
                    Channel::Datagram => config.max_datagram_size,
                    Channel::Stream => config.max_stream_message,
                };
                prop_assert!(bytes.len() <= limit, "{}-byte {:?} to {}", bytes.len(), channel, to);
                let env = decode(bytes, usize::MAX).expect("what we send decodes");
                prop_assert_eq!(env.cluster, config.cluster);
                prop_assert_eq!(env.from, me);
                prop_assert_ne!(*to, p.me().meta.addr, "sent to itself");
            }
            for event in &events {
                if let Event::IncarnationChanged(to) = event {
                    prop_assert!(*to > last_bump, "IncarnationChanged({}) after {}", to, last_bump);
                    last_bump = *to;
                }
            }
            prop_assert_eq!(last_bump, p.me().incarnation, "every rise is announced");
            let mut seen = BTreeMap::new();
            for m in p.members() {
                prop_assert!(seen.insert(m.id, ()).is_none(), "member listed twice");
            }
        }
    }
}

#[test]
fn header_only_and_empty_inputs_are_errors() {
    assert_eq!(decode(b"", LIMIT), Err(CodecError::BadMagic));
    assert_eq!(decode(b"RG", LIMIT), Err(CodecError::BadMagic));
    // Version 1 (before statements were signed) and 2 (before envelopes
    // carried the ring-shape digest) are no longer spoken.
    assert_eq!(
        decode(b"RG\x01", LIMIT),
        Err(CodecError::UnsupportedVersion {
            got: 1,
            min: 3,
            max: 3
        })
    );
    assert_eq!(
        decode(b"RG\x02", LIMIT),
        Err(CodecError::UnsupportedVersion {
            got: 2,
            min: 3,
            max: 3
        })
    );
    assert_eq!(
        decode(b"RG\x04", LIMIT),
        Err(CodecError::UnsupportedVersion {
            got: 4,
            min: 3,
            max: 3
        })
    );
    assert!(matches!(
        decode(b"RG\x03", LIMIT),
        Err(CodecError::Malformed(_))
    ));
    assert_eq!(codec::MAGIC, *b"RG");
}
