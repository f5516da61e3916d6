//! `ringkv removenode`: a dead member leaves every ring at once instead of
//! after its dead grace, and its ranges get three live copies again; a
//! live member, the asked peer itself, an unknown name and client
//! credentials are refused and change nothing.

use std::time::{Duration, Instant};

use super::test_peers::{cluster, faults, get, in_ring, put, stop, CALL, WAIT};
use crate::daemon::Peer;
use crate::keyargs::{wall_secs, Access};
use crate::rpc::api::{
    ErrorKind, GetReply, HandoffReply, MembersReply, PutReply, RemoveNodeReply, Request,
    RequestError,
};
use crate::rpc::client;
use ringkv_gossip::transport::credentials::ClientCredentials;

fn remove(node: &str, cluster: bool) -> Request {
    Request::RemoveNode {
        node: node.to_owned(),
        cluster,
    }
}

fn kind_of(e: &anyhow::Error) -> Option<ErrorKind> {
    e.chain()
        .find_map(|c| c.downcast_ref::<RequestError>())
        .map(|r| r.kind)
}

/// Waits until every one of `peers` sees `name` in `state`.
async fn until_state(peers: &[&Peer], key: &ringkv_gossip::ClusterKey, name: &str, state: &str) {
    let deadline = Instant::now() + WAIT;
    'peers: for p in peers {
        loop {
            let m: MembersReply = client::request(p.addrs().quic, key, &Request::Members, CALL)
                .await
                .expect("members");
            if m.members.iter().any(|r| r.name == name && r.state == state) {
                continue 'peers;
            }
            assert!(
                Instant::now() < deadline,
                "{} never saw {name} {state}",
                p.addrs().name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removenode_drops_a_dead_member_from_every_ring_now_and_refuses_a_live_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    // An hour of dead grace: without removenode, the dead member would
    // stay a replica for the whole test.
    let (peers, key) = cluster(dir.path(), 4, &["--dead-grace", "1h"]).await;
    let live: Vec<&Peer> = peers[..3].iter().collect();
    let victim = &peers[3];
    let name = victim.addrs().name.clone();
    for i in 0..40 {
        let k = format!("r{i}");
        client::request::<PutReply>(
            live[i % 3].addrs().quic,
            &key,
            &put(k.as_bytes(), b"v"),
            CALL,
        )
        .await
        .expect("put before the failure");
    }

    // A live member is refused, by name and by id; so is the asked peer
    // itself and a name nobody has; nothing changes.
    for (node, why) in [
        (name.as_str(), "is alive here"),
        ("p1", "cannot remove itself"),
        ("nobody", "no member named"),
        ("zz", "no member named"),
    ] {
        let e = client::request::<RemoveNodeReply>(
            live[0].addrs().quic,
            &key,
            &remove(node, true),
            CALL,
        )
        .await
        .expect_err("refused");
        assert_eq!(kind_of(&e), Some(ErrorKind::Refused), "{e:#}");
        assert!(format!("{e:#}").contains(why), "{node}: {e:#}");
    }
    assert!(
        in_ring(live[0], &key, &name).await,
        "refusals changed nothing"
    );

    // Client credentials may not remove anyone.
    let now = wall_secs();
    let creds = Access::Client(
        ClientCredentials::issue(&key, "app", now - 60, now + 3600).expect("issued"),
    );
    let e = client::request::<RemoveNodeReply>(
        live[0].addrs().quic,
        &creds,
        &remove(&name, true),
        CALL,
    )
    .await
    .expect_err("a client");
    assert_eq!(kind_of(&e), Some(ErrorKind::Refused), "{e:#}");

    // The victim is cut off: dead to everyone, still in every ring.
    let others: Vec<String> = live
        .iter()
        .map(|p| format!("{:?}", p.addrs().quic.to_string()))
        .collect();
    faults(victim, format!(r#"{{"drop": [{}]}}"#, others.join(","))).await;
    until_state(&live, &key, &name, "dead").await;
    for p in &live {
        assert!(in_ring(p, &key, &name).await, "within the grace");
    }

    // Removed by its id prefix, through one peer, on every live member.
    let id = {
        let m: MembersReply = client::request(live[1].addrs().quic, &key, &Request::Members, CALL)
            .await
            .expect("members");
        m.members
            .iter()
            .find(|r| r.name == name)
            .expect("listed")
            .id
            .clone()
    };
    let reply: RemoveNodeReply =
        client::request(live[1].addrs().quic, &key, &remove(&id[..8], true), CALL)
            .await
            .expect("removed");
    assert_eq!(reply.name, name);
    assert_eq!(reply.members.len(), 3, "{reply:?}");
    assert!(
        reply
            .members
            .iter()
            .all(|r| r.changed == Some(true) && r.error.is_none()),
        "{reply:?}"
    );
    for p in &live {
        assert!(
            !in_ring(p, &key, &name).await,
            "{} still has it",
            p.addrs().name
        );
        let h: HandoffReply = client::request(p.addrs().quic, &key, &Request::Handoff, CALL)
            .await
            .expect("handoff");
        assert_eq!(
            h.removed,
            std::slice::from_ref(&name),
            "visible in ringkv handoff"
        );
    }
    // Again: nothing to do, said so.
    let again: RemoveNodeReply =
        client::request(live[1].addrs().quic, &key, &remove(&name, true), CALL)
            .await
            .expect("again");
    assert!(
        again.members.iter().all(|r| r.changed == Some(false)),
        "{again:?}"
    );

    // Every key is read at quorum from the three live peers, whose rings
    // now hold every range.
    let deadline = Instant::now() + WAIT;
    for i in 0..40 {
        let k = format!("r{i}");
        loop {
            match client::request::<GetReply>(
                live[i % 3].addrs().quic,
                &key,
                &get(k.as_bytes()),
                CALL,
            )
            .await
            {
                Ok(g) if g.value.as_deref() == Some(b"v".as_slice()) => break,
                other => assert!(Instant::now() < deadline, "{k}: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Back alive: a member again, in every ring.
    faults(victim, r#"{"drop": []}"#.to_owned()).await;
    until_state(&live, &key, &name, "alive").await;
    let deadline = Instant::now() + WAIT;
    while !in_ring(live[0], &key, &name).await {
        assert!(Instant::now() < deadline, "never back in the ring");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(peers).await;
}
