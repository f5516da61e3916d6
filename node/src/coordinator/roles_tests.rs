//! Issue 14 item 2 (roles) against three in-process peers: client
//! credentials may put and get, and every peer-only request they send is
//! refused (`Refused`), changes nothing and is counted; an expired
//! credential is refused at the handshake with "credentials expired".

use std::sync::atomic::Ordering::Relaxed;

use ringkv_gossip::transport::credentials::ClientCredentials;
use ringkv_gossip::NodeId;
use ringkv_ring::{Token, TokenRange};
use ringkv_storage::{Hlc, Record, Version};

use super::test_peers::{cluster, get, put, stop, CALL};
use crate::keyargs::{wall_secs, Access};
use crate::rpc::api::{ErrorKind, GetReply, PutReply, ReadAnswer, Request, RequestError};
use crate::rpc::client;

fn kind_of(e: &anyhow::Error) -> Option<ErrorKind> {
    e.chain()
        .find_map(|c| c.downcast_ref::<RequestError>())
        .map(|r| r.kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_credentials_may_put_and_get_but_peer_requests_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (peers, key) = cluster(dir.path(), 3, &[]).await;
    let now = wall_secs();
    let creds = ClientCredentials::issue(&key, "app", now - 60, now + 3600).expect("issued");
    let client = Access::Client(creds);
    let p1 = peers[0].addrs().quic;

    let _: PutReply = client::request(p1, &client, &put(b"user:1", b"ada"), CALL)
        .await
        .expect("a client credential may put");
    let got: GetReply = client::request(p1, &client, &get(b"user:1"), CALL)
        .await
        .expect("and get");
    assert_eq!(got.value.as_deref(), Some(&b"ada"[..]));
    // The keys listing (`ringkv keys`) is a client request too.
    let listed: crate::rpc::api::VersionsReply = client::request(
        p1,
        &client,
        &Request::RangeVersions {
            range: TokenRange::new(Token(0), Token(0)),
            after: None,
            max: 10,
            any: true,
        },
        CALL,
    )
    .await
    .expect("a client credential may list keys");
    assert!(!listed.versions.is_empty());

    let record = Record {
        value: Some(b"forged".to_vec()),
        version: Version {
            hlc: Hlc::new(u64::MAX / 2, 0),
            generation: 1,
            node: NodeId([7; 16]),
        },
        expires_ms: None,
    };
    let full = TokenRange::new(Token(0), Token(0));
    let peer_only = [
        Request::ReplicaApply {
            key: b"forged".to_vec(),
            record: record.clone(),
        },
        // A hint replayed to its replica is this same write.
        Request::ReplicaApply {
            key: b"user:1".to_vec(),
            record,
        },
        Request::ReplicaRead {
            key: b"user:1".to_vec(),
        },
        Request::RangePage {
            range: full,
            after: None,
            max_bytes: 1 << 20,
        },
        Request::RangeSummary { range: full },
        Request::RangeVersions {
            range: full,
            after: None,
            max: 10,
            any: false,
        },
        Request::ReadMany {
            keys: vec![b"user:1".to_vec()],
        },
        Request::Time,
    ];
    let before = peers[0].transport().rpc_refused_role.load(Relaxed);
    for req in &peer_only {
        let e = client::request::<serde::de::IgnoredAny>(p1, &client, req, CALL)
            .await
            .expect_err("refused");
        assert_eq!(kind_of(&e), Some(ErrorKind::Refused), "{req:?}: {e:#}");
        assert!(format!("{e:#}").contains("peers only"), "{e:#}");
    }
    assert_eq!(
        peers[0].transport().rpc_refused_role.load(Relaxed) - before,
        peer_only.len() as u64
    );
    // Nothing changed: neither key was written on any replica.
    for p in &peers {
        for (k, want) in [(&b"forged"[..], None), (&b"user:1"[..], Some(&b"ada"[..]))] {
            let read: ReadAnswer = client::request(
                p.addrs().quic,
                &key,
                &Request::ReplicaRead { key: k.to_vec() },
                CALL,
            )
            .await
            .expect("a peer may read a replica");
            let (ReadAnswer::Held(r) | ReadAnswer::NotHeld(r)) = read;
            let value = r.and_then(|r| r.value);
            if want.is_none() {
                assert_eq!(value, None, "{k:?} written on {}", p.addrs().name);
            } else if let Some(v) = value {
                assert_eq!(Some(&v[..]), want);
            }
        }
    }
    stop(peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_credential_is_refused_at_the_handshake() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (peers, key) = cluster(dir.path(), 1, &[]).await;
    let now = wall_secs();
    let expired = ClientCredentials::issue(&key, "old", now - 7200, now - 3600).expect("issued");
    let e = client::request::<GetReply>(
        peers[0].addrs().quic,
        &Access::Client(expired),
        &get(b"k"),
        CALL,
    )
    .await
    .expect_err("refused");
    assert_eq!(kind_of(&e), Some(ErrorKind::Refused), "{e:#}");
    assert!(format!("{e:#}").contains("credentials expired"), "{e:#}");
    stop(peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_credential_is_refused_on_every_peer_after_gossip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (peers, key) = cluster(dir.path(), 3, &[]).await;
    let now = wall_secs();
    let app = Access::Client(ClientCredentials::issue(&key, "app", now - 60, now + 3600).unwrap());
    let other =
        Access::Client(ClientCredentials::issue(&key, "other", now - 60, now + 3600).unwrap());
    for p in &peers {
        let _: GetReply = client::request(p.addrs().quic, &app, &get(b"k"), CALL)
            .await
            .expect("not revoked yet");
    }
    let revoke = Request::Revoke {
        name: "app".to_owned(),
    };
    // A client may not revoke (nor un-revoke by flooding): peers only.
    let e = client::request::<serde::de::IgnoredAny>(peers[0].addrs().quic, &app, &revoke, CALL)
        .await
        .expect_err("refused");
    assert_eq!(kind_of(&e), Some(ErrorKind::Refused), "{e:#}");
    let bad = Request::Revoke {
        name: "a b".to_owned(),
    };
    let e = client::request::<serde::de::IgnoredAny>(peers[0].addrs().quic, &key, &bad, CALL)
        .await
        .expect_err("a bad name");
    assert_eq!(kind_of(&e), Some(ErrorKind::Refused), "{e:#}");

    let _: crate::rpc::api::RevokeReply =
        client::request(peers[0].addrs().quic, &key, &revoke, CALL)
            .await
            .expect("an operator revokes through p1");
    let deadline = std::time::Instant::now() + super::test_peers::WAIT;
    for p in &peers {
        loop {
            match client::request::<GetReply>(p.addrs().quic, &app, &get(b"k"), CALL).await {
                Err(e) if format!("{e:#}").contains("credentials revoked") => {
                    assert_eq!(kind_of(&e), Some(ErrorKind::Refused), "{e:#}");
                    break;
                }
                other => assert!(
                    std::time::Instant::now() < deadline,
                    "{} still serves the revoked credential: {other:?}",
                    p.addrs().name
                ),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let _: GetReply = client::request(p.addrs().quic, &other, &get(b"k"), CALL)
            .await
            .expect("another name still works");
    }
    stop(peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_is_refused_at_once_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (peers, key) = cluster(dir.path(), 1, &[]).await;
    let now = wall_secs();
    let app = Access::Client(ClientCredentials::issue(&key, "app", now - 60, now + 3600).unwrap());
    let revoke = Request::Revoke {
        name: "app".to_owned(),
    };
    let _: crate::rpc::api::RevokeReply =
        client::request(peers[0].addrs().quic, &key, &revoke, CALL)
            .await
            .expect("revoked");
    let revoked = |e: &anyhow::Error| format!("{e:#}").contains("credentials revoked");
    let e = client::request::<GetReply>(peers[0].addrs().quic, &app, &get(b"k"), CALL)
        .await
        .expect_err("refused at once by the peer that was told");
    assert!(revoked(&e), "{e:#}");
    stop(peers).await;

    let data = dir.path().join("p1").display().to_string();
    let settings = crate::config::Settings::from_flags(
        [
            "--data",
            &data,
            "--listen",
            "127.0.0.1:0",
            "--name",
            "p1",
            "--settle",
            "200ms",
        ]
        .map(String::from),
    )
    .expect("settings");
    let p1 = crate::daemon::start(settings, crate::daemon::Listeners::default())
        .await
        .expect("p1 restarts");
    let addr = p1.addrs().quic;
    let deadline = std::time::Instant::now() + super::test_peers::WAIT;
    while client::request::<GetReply>(addr, &key, &get(b"k"), CALL)
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "p1 never served again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let e = client::request::<GetReply>(addr, &app, &get(b"k"), CALL)
        .await
        .expect_err("still revoked after the restart");
    assert!(revoked(&e), "{e:#}");
    stop(vec![p1]).await;
}
