//! Stale statements are answered (correction.rs; issue 13, item 6).
//!
//! Found in the simulator (1,000 peers, 10% loss, one kill): a refutation
//! is gossiped a bounded number of times by each peer and then never again,
//! so now and then one suspecter misses all of it and, when its suspicion
//! runs out, declares a live peer dead. The end-to-end scenarios script that
//! loss on three peers `a`, `b`, `t`: `a` suspects `t` at incarnation 1 and
//! never receives `t`'s refutation (incarnation 2). The others check one
//! rule each on a single peer told something stale by a puppet.

use super::*;

const A: usize = 0;
const B: usize = 1;
const T: usize = 2;
/// An accuser the test speaks for; never driven.
const PUPPET: usize = 3;

fn config() -> Config {
    Config {
        // Push-pull would repair the view too, but only every 30 s or more
        // in a large cluster; keep it out of these few seconds.
        push_pull_interval: Duration::from_secs(600),
        seed_contact_interval: Duration::from_secs(600),
        ..Config::for_test()
    }
}

/// A peer at `incarnation` holding `view`, with nothing queued for gossip.
fn restored(i: usize, incarnation: Incarnation, view: Vec<Entry>, seed: u64) -> Peer {
    let now = Instant::now();
    let mut p = peer_with(config(), i, incarnation, seed, now);
    p.handle_restore(now, view);
    p
}

/// `a` (holds `t` at incarnation 1), `b` (holds `t`'s refutation, long
/// since gossiped) and `t` (at incarnation 2).
fn three(seed: u64, t_at_b: Entry) -> Vec<Peer> {
    vec![
        restored(
            A,
            1,
            vec![member(B, 1, State::Alive), member(T, 1, State::Alive)],
            seed,
        ),
        restored(B, 1, vec![member(A, 1, State::Alive), t_at_b], seed),
        restored(
            T,
            2,
            vec![member(A, 1, State::Alive), member(B, 1, State::Alive)],
            seed,
        ),
    ]
}

fn suspect(i: usize, incarnation: Incarnation, by: usize) -> Update {
    signed(Update::Suspect {
        id: id(i),
        incarnation,
        by: id(by),
        sig: Sig::NONE,
    })
}

fn dead(i: usize, incarnation: Incarnation, by: usize) -> Update {
    signed(Update::Dead {
        id: id(i),
        incarnation,
        by: id(by),
        sig: Sig::NONE,
    })
}

fn left(i: usize, incarnation: Incarnation) -> Update {
    signed(Update::Left {
        id: id(i),
        incarnation,
        sig: Sig::NONE,
    })
}

/// The puppet tells `p` `updates` in a gossip message; returns the
/// updates `p` sent back to the puppet at once.
fn tell(p: &mut Peer, updates: Vec<Update>) -> Vec<Update> {
    let now = Instant::now();
    p.handle_envelope(now, envelope(PUPPET, Body::Gossip, updates));
    let mut back = Vec::new();
    while let Some(tx) = p.poll_transmit() {
        if tx.to == addr(PUPPET) {
            let env = codec::decode(&tx.bytes, usize::MAX).expect("decodes");
            back.extend(env.updates);
        }
    }
    back
}

/// Runs the peers for `d` in 5 ms steps, delivering every datagram at once
/// unless `lost(from, to)`. Returns `a`'s events.
fn run(peers: &mut [Peer], d: Duration, lost: impl Fn(usize, usize) -> bool) -> Vec<Event> {
    let mut now = Instant::now();
    let end = now + d;
    let mut events = Vec::new();
    while now < end {
        now += ms(5);
        for p in peers.iter_mut() {
            p.handle_timeout(now);
        }
        // Bounded: answers to answers end (each is a strict step up).
        for _ in 0..16 {
            let mut wire = Vec::new();
            for (from, p) in peers.iter_mut().enumerate() {
                while let Some(tx) = p.poll_transmit() {
                    let to = (0..peers_len()).find(|&i| addr(i) == tx.to);
                    if let Some(to) = to.filter(|&to| !lost(from, to)) {
                        if tx.channel == Channel::Datagram {
                            wire.push((to, tx.bytes));
                        }
                    }
                }
            }
            if wire.is_empty() {
                break;
            }
            for (to, bytes) in wire {
                if let Some(p) = peers.get_mut(to) {
                    p.handle_datagram(now, &bytes).expect("decodes");
                }
            }
        }
        while let Some(e) = peers[A].poll_event() {
            events.push(e);
        }
    }
    events
}

fn peers_len() -> usize {
    3
}

fn t_at_a(peers: &[Peer]) -> (Incarnation, State) {
    let m = peers[A].member(&id(T)).expect("a knows t");
    (m.incarnation, m.state)
}

// ---- rule 1: an accusation older than the Alive we hold -------------------

#[test]
fn an_accusation_older_than_the_alive_held_is_answered_with_it() {
    let mut b = restored(B, 1, vec![member(T, 2, State::Alive)], 1);
    for stale in [suspect(T, 1, PUPPET), dead(T, 1, PUPPET)] {
        assert_eq!(tell(&mut b, vec![stale]), vec![alive(T, 2)]);
    }
    // A current one is not answered: a dead peer is still convicted.
    assert_eq!(tell(&mut b, vec![suspect(T, 2, PUPPET)]), vec![]);
}

/// `a` reaches `t` only through `b` (every datagram between `a` and `t` is
/// lost). `b` holds the refutation but has stopped gossiping it, and hears
/// `a`'s stale suspicion in `a`'s gossip and probe requests. Without rule
/// 1, `b` ignores it as old news and `a` declares `t` dead when its
/// suspicion runs out, although `b` relays acks from `t` all along.
#[test]
fn a_peer_that_knows_the_refutation_corrects_a_stale_suspecter() {
    for seed in 1..=8 {
        let mut peers = three(seed, member(T, 2, State::Alive));
        // By b: a signer a knows (a statement by an unknown signer is dropped).
        tell(&mut peers[A], vec![suspect(T, 1, B)]);
        assert_eq!(t_at_a(&peers), (1, State::Suspect));
        let cut = |from: usize, to: usize| (from == A && to == T) || (from == T && to == A);
        // The suspicion maximum for 3 peers is 6 x 150 ms; run well past it.
        let events = run(&mut peers, ms(3_000), cut);
        assert!(
            !events.contains(&Event::MemberDead(id(T))),
            "seed {seed}: a declared the live t dead: {events:?}"
        );
        assert_eq!(t_at_a(&peers), (2, State::Alive), "seed {seed}");
    }
}

/// The answer is only for accusations older than what we hold: here `b`
/// too holds `t` at incarnation 1 and `t` is gone, so `a` convicts it.
#[test]
fn a_current_suspicion_is_not_answered_and_a_dead_peer_is_convicted() {
    let mut peers = three(1, member(T, 1, State::Alive));
    tell(&mut peers[A], vec![suspect(T, 1, B)]);
    let t_is_dead = |from: usize, to: usize| from == T || to == T;
    let events = run(&mut peers, ms(3_000), t_is_dead);
    assert!(events.contains(&Event::MemberDead(id(T))), "{events:?}");
    assert_eq!(t_at_a(&peers), (1, State::Dead));
}

// ---- rule 2: this peer accused at an incarnation it refuted ---------------

#[test]
fn a_peer_accused_at_an_incarnation_it_refuted_answers_with_its_alive() {
    let mut t = restored(T, 2, vec![member(A, 1, State::Alive)], 1);
    for stale in [suspect(T, 1, PUPPET), dead(T, 1, PUPPET), left(T, 1)] {
        assert_eq!(tell(&mut t, vec![stale]), vec![alive(T, 2)]);
    }
    assert_eq!(t.me().incarnation, 2, "an old accusation needs no new life");
}

/// `a` and `t` only (`b` is silent). `t` already refuted the suspicion, but
/// every copy of the refutation to `a` was lost; now `a`'s probes of `t`
/// carry the old suspicion to `t`. Without rule 2, `t` ignores a suspicion
/// of an incarnation it has left behind, and `a` declares it dead.
#[test]
fn the_suspect_corrects_a_suspicion_of_an_old_incarnation() {
    for seed in 1..=8 {
        let mut peers = three(seed, member(T, 2, State::Alive));
        tell(&mut peers[A], vec![suspect(T, 1, B)]);
        let silent_b = |from: usize, to: usize| from == B || to == B;
        let events = run(&mut peers, ms(3_000), silent_b);
        assert!(
            !events.contains(&Event::MemberDead(id(T))),
            "seed {seed}: a declared the live t dead: {events:?}"
        );
        assert_eq!(t_at_a(&peers), (2, State::Alive), "seed {seed}");
    }
}

// ---- rule 3: Left is final for its incarnation ----------------------------

#[test]
fn anything_but_left_about_a_member_held_left_is_answered_with_the_left() {
    let mut b = restored(B, 1, vec![member(T, 2, State::Left)], 1);
    for stale in [
        suspect(T, 2, PUPPET),
        dead(T, 2, PUPPET),
        alive(T, 2),
        suspect(T, 1, PUPPET),
        alive(T, 1),
    ] {
        assert_eq!(
            tell(&mut b, vec![stale.clone()]),
            vec![left(T, 2)],
            "{stale:?}"
        );
        let m = b.member(&id(T)).expect("b knows t");
        assert_eq!((m.incarnation, m.state), (2, State::Left), "{stale:?}");
    }
    // A newer life is not contradicted, and a Left is not answered.
    assert_eq!(tell(&mut b, vec![left(T, 2)]), vec![]);
    assert_eq!(tell(&mut b, vec![alive(T, 3)]), vec![]);
}

/// `t` left and is gone; `b` heard its Left, `a` lost every copy. `a`'s
/// probes of `t` fail, it suspects `t` and gossips that to `b`. Without
/// rule 3 `b` ignores the suspicion (older than its Left) and `a` ends
/// holding `t` Dead; with it, `b` restates the Left and `a` ends Left.
#[test]
fn a_peer_that_missed_a_leave_ends_left_not_dead() {
    for seed in 1..=8 {
        let mut peers = three(seed, member(T, 1, State::Left));
        peers.truncate(2);
        let events = run(&mut peers, ms(3_000), |_, _| false);
        assert!(
            events.contains(&Event::MemberLeft(id(T))),
            "seed {seed}: {events:?}"
        );
        assert_eq!(t_at_a(&peers), (1, State::Left), "seed {seed}: {events:?}");
        let at_b = peers[B].member(&id(T)).expect("b knows t");
        assert_eq!((at_b.incarnation, at_b.state), (1, State::Left));
    }
}

// ---- rule 4: a peer that left restates its Left, never Alive --------------

#[test]
fn a_peer_that_left_answers_statements_about_itself_with_its_left() {
    let mut t = restored(T, 2, vec![member(A, 1, State::Alive)], 1);
    t.handle_leave(Instant::now());
    while t.poll_transmit().is_some() {}
    for stale in [
        suspect(T, 2, PUPPET),
        dead(T, 2, PUPPET),
        alive(T, 2),
        suspect(T, 1, PUPPET),
        left(T, 1),
    ] {
        assert_eq!(
            tell(&mut t, vec![stale.clone()]),
            vec![left(T, 2)],
            "{stale:?}"
        );
    }
    assert_eq!(tell(&mut t, vec![left(T, 2)]), vec![]);
    assert_eq!(t.me().incarnation, 2, "a peer that left takes no new life");
    assert!(t.has_left());
}

// ---- rule 5: the first suspecter asks the suspect again -------------------

/// Found in the simulator (100 peers, 10% loss, a kill): the peer that
/// raised a suspicion was the only one that missed the refutation, and it
/// had gossiped its suspicion before anyone knew better, so nothing stale
/// of it was left to answer. Now it probes its suspect every period, the
/// suspicion first in the ping, and a live suspect answers (rule 2).
#[test]
fn the_first_suspecter_probes_its_suspect_every_period_while_it_lasts() {
    let config = Config {
        suspicion_base: Duration::from_secs(60),
        // Failed probes of t would stretch the probe period (Lifeguard).
        awareness_max: 0,
        ..config()
    };
    let now = Instant::now();
    let mut a = peer_with(config.clone(), A, 1, 1, now);
    // t and five silent others: the round-robin order visits t about once
    // in six periods.
    let view = (1..=6).map(|i| member(i, 1, State::Alive)).collect();
    a.handle_restore(now, view);
    let accusation = suspect(T, 1, A);
    assert!(a.apply(now, accusation.clone(), crate::proto::swim::Source::Local));
    let periods = 24;
    let mut pings = 0;
    let mut t_now = now;
    while t_now < now + config.probe_interval * periods {
        t_now += ms(10);
        a.handle_timeout(t_now);
        let mut acks = Vec::new();
        while let Some(tx) = a.poll_transmit() {
            let env = codec::decode(&tx.bytes, usize::MAX).expect("decodes");
            let Body::Ping { seq, target } = env.body else {
                continue;
            };
            if target == id(T) {
                pings += usize::from(env.updates.first() == Some(&accusation));
            } else if let Some(i) = (1..=6).find(|&i| addr(i) == tx.to) {
                // The others answer, so this peer's health stays good.
                acks.push(envelope(i, Body::Ack { seq }, Vec::new()));
            }
        }
        for ack in acks {
            a.handle_envelope(t_now, ack);
        }
    }
    eprintln!("{pings} probes of t carrying the suspicion in {periods} periods");
    assert!(
        pings >= periods as usize / 2,
        "only {pings} probes of t carrying the suspicion in {periods} periods"
    );
}
