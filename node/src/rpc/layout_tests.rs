//! The peer protocol's layouts are frozen (docs/upgrades.md, "Peer RPC"):
//! bincode is not self-describing, so a field added to, removed from or
//! moved in any message breaks every peer and CLI of the builds before it
//! in a rolling upgrade, and no decoder notices until the bytes are
//! misread. This test encodes one sample of every request and answer and
//! compares the bytes with `layouts.txt`, written from the build that
//! first shipped each message. A changed line means a changed layout: add
//! a new request variant (at the end of [`Request`]) instead, and keep
//! answering the old one in its old layout.

use std::collections::BTreeMap;

use ringkv_ring::{NodeId, Token, TokenRange};
use ringkv_storage::{Hlc, Record, Version};

use super::api::*;
use super::codec;

const FROZEN: &str = include_str!("layouts.txt");

fn version() -> Version {
    Version {
        hlc: Hlc {
            physical_ms: 1_700_000_000_123,
            logical: 3,
        },
        generation: 2,
        node: NodeId([7; 16]),
    }
}

fn record() -> Record {
    Record {
        value: Some(b"value".to_vec()),
        version: version(),
        expires_ms: Some(1_700_000_060_000),
    }
}

fn range() -> TokenRange {
    TokenRange {
        start: Token(1),
        end: Token(u64::MAX - 1),
    }
}

fn err(kind: ErrorKind) -> Vec<u8> {
    codec::encode(&Reply::<()>::error(RequestError::new(kind, "why")))
}

/// One sample of every message, by name.
fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let key = || b"key".to_vec();
    let requests: Vec<(&'static str, Request)> = vec![
        ("request/members-legacy", Request::MembersLegacy),
        ("request/ring", Request::Ring),
        ("request/owners", Request::Owners { key: key() }),
        (
            "request/put",
            Request::Put {
                key: key(),
                value: Some(b"v".to_vec()),
                consistency: Consistency::Quorum,
            },
        ),
        (
            "request/delete",
            Request::Put {
                key: key(),
                value: None,
                consistency: Consistency::All,
            },
        ),
        (
            "request/get",
            Request::Get {
                key: key(),
                consistency: Consistency::One,
            },
        ),
        (
            "request/replica-apply",
            Request::ReplicaApply {
                key: key(),
                record: record(),
            },
        ),
        ("request/replica-read", Request::ReplicaRead { key: key() }),
        ("request/hot", Request::Hot),
        (
            "request/range-page",
            Request::RangePage {
                range: range(),
                after: Some(key()),
                max_bytes: 65_536,
            },
        ),
        (
            "request/range-summary",
            Request::RangeSummary { range: range() },
        ),
        (
            "request/range-versions",
            Request::RangeVersions {
                range: range(),
                after: None,
                max: 512,
                any: true,
            },
        ),
        (
            "request/read-many",
            Request::ReadMany {
                keys: vec![key(), b"k2".to_vec()],
            },
        ),
        ("request/handoff", Request::Handoff),
        ("request/time", Request::Time),
        ("request/revoke", Request::Revoke { name: "app".into() }),
        (
            "request/keyring-list",
            Request::Keyring {
                op: KeyringOp::List,
                cluster: true,
            },
        ),
        (
            "request/keyring-install",
            Request::Keyring {
                op: KeyringOp::Install(SecretKey("secret".into())),
                cluster: false,
            },
        ),
        (
            "request/keyring-use",
            Request::Keyring {
                op: KeyringOp::Use("0123abcd".into()),
                cluster: true,
            },
        ),
        (
            "request/keyring-remove",
            Request::Keyring {
                op: KeyringOp::Remove("0123abcd".into()),
                cluster: true,
            },
        ),
        (
            "request/removenode",
            Request::RemoveNode {
                node: "p3".into(),
                cluster: true,
            },
        ),
        (
            "request/repair",
            Request::Repair {
                range: Some(range()),
                key: Some(key()),
            },
        ),
        (
            "request/transfers-pause",
            Request::Transfers(TransferOp::Pause),
        ),
        (
            "request/transfers-resume",
            Request::Transfers(TransferOp::Resume),
        ),
        (
            "request/transfers-cancel",
            Request::Transfers(TransferOp::Cancel(range())),
        ),
        ("request/members", Request::Members),
    ];
    let mut out: Vec<(&'static str, Vec<u8>)> = requests
        .into_iter()
        .map(|(name, r)| (name, codec::encode(&r)))
        .collect();
    let replies: Vec<(&'static str, Vec<u8>)> = vec![
        ("reply/err-definite", err(ErrorKind::Definite)),
        ("reply/err-unknown", err(ErrorKind::Unknown)),
        ("reply/err-refused", err(ErrorKind::Refused)),
        ("reply/err-not-held", err(ErrorKind::NotHeld)),
        ("reply/err-overloaded", err(ErrorKind::Overloaded)),
        (
            "reply/put",
            codec::encode(&Reply::Ok(PutReply {
                acknowledged: vec!["p1".into(), "p2".into()],
                version: "v".into(),
            })),
        ),
        (
            "reply/get",
            codec::encode(&Reply::Ok(GetReply {
                value: Some(b"v".to_vec()),
                version: Some("v".into()),
                answered: vec!["p1".into()],
            })),
        ),
        (
            "reply/replica-apply-applied",
            codec::encode(&Reply::Ok(ApplyReply::Applied)),
        ),
        (
            "reply/replica-apply-newer",
            codec::encode(&Reply::Ok(ApplyReply::Newer(version()))),
        ),
        (
            "reply/replica-read-held",
            codec::encode(&Reply::Ok(ReadAnswer::Held(Some(record())))),
        ),
        (
            "reply/replica-read-not-held",
            codec::encode(&Reply::Ok(ReadAnswer::NotHeld(None))),
        ),
        (
            "reply/range-page",
            codec::encode(&Reply::Ok(RangePageReply {
                batch: codec::encode(&vec![
                    (key(), record()),
                    (
                        b"gone".to_vec(),
                        Record {
                            value: None,
                            version: version(),
                            expires_ms: None,
                        },
                    ),
                ]),
                check: [9; 32],
                records: 2,
                estimate: 40,
                next: Some(b"gone".to_vec()),
            })),
        ),
        (
            "reply/range-summary",
            codec::encode(&Reply::Ok(SummaryReply {
                hash: [5; 32],
                records: 12,
            })),
        ),
        (
            "reply/range-versions",
            codec::encode(&Reply::Ok(VersionsReply {
                versions: vec![(key(), version())],
                next: None,
            })),
        ),
        (
            "reply/read-many",
            codec::encode(&Reply::Ok(vec![Some(record()), None])),
        ),
        (
            "reply/time",
            codec::encode(&Reply::Ok(TimeReply {
                wall_ms: 1_700_000_000_999,
            })),
        ),
        (
            "reply/members-legacy",
            codec::encode(&Reply::Ok(LegacyMembersReply::from(members()))),
        ),
        ("reply/members", codec::encode(&Reply::Ok(members()))),
        (
            "reply/ring",
            codec::encode(&Reply::Ok(RingReply {
                digest: "d".into(),
                vnodes: 256,
                replication: 3,
                nodes: vec![RingNodeRow {
                    name: "p1".into(),
                    id: "07".into(),
                    tokens: 256,
                    share: 0.25,
                    replica_share: 0.75,
                }],
                ranges: vec![("0".into(), "1".into(), "p1".into())],
            })),
        ),
        (
            "reply/owners",
            codec::encode(&Reply::Ok(OwnersReply {
                position: "00ff".into(),
                replicas: vec![ReplicaRow {
                    name: "p1".into(),
                    id: "07".into(),
                    addr: "127.0.0.1:7001".into(),
                }],
            })),
        ),
        (
            "reply/hot",
            codec::encode(&Reply::Ok(vec![HotRow {
                key: "k".into(),
                requests: 10,
                error: 1,
            }])),
        ),
        (
            "reply/handoff",
            codec::encode(&Reply::Ok(HandoffReply {
                ring: Some("r".into()),
                ready: None,
                pending_ranges: 2,
                transfers: vec![TransferRow {
                    range: "(0, 1]".into(),
                    source: "p2".into(),
                    total_records: 9,
                    records: 3,
                    bytes: 300,
                    elapsed: 1.5,
                }],
                keys_moved: 1,
                bytes_moved: 2,
                ranges_completed: 3,
                repairs: 4,
                ranges_dropped: 5,
                records_dropped: 6,
                removed: vec!["p4".into()],
                repair: Some(RepairRow {
                    running: true,
                    ranges_total: 8,
                    ranges_done: 2,
                    compared: 2,
                    differed: 1,
                    records: 7,
                    failed: 1,
                    failures: vec!["no answer".into()],
                    elapsed: 0.5,
                }),
                paused: true,
                cancelled: 1,
            })),
        ),
        (
            "reply/revoke",
            codec::encode(&Reply::Ok(RevokeReply {
                before: 1_700_000_000,
                revoked: 2,
            })),
        ),
        (
            "reply/keyring",
            codec::encode(&Reply::Ok(KeyringReply {
                members: vec![KeyringRow {
                    name: "p1".into(),
                    addr: "127.0.0.1:7001".into(),
                    changed: Some(true),
                    error: None,
                    primary: Some("0123abcd".into()),
                    keys: vec!["0123abcd".into()],
                }],
            })),
        ),
        (
            "reply/removenode",
            codec::encode(&Reply::Ok(RemoveNodeReply {
                name: "p3".into(),
                id: "07".into(),
                members: vec![RemoveNodeRow {
                    name: "p1".into(),
                    addr: "127.0.0.1:7001".into(),
                    changed: Some(false),
                    error: Some("why".into()),
                }],
            })),
        ),
    ];
    out.extend(replies);
    out
}

/// A sample of `ringkv members`' answer.
fn members() -> MembersReply {
    MembersReply {
        index: 4,
        view_digest: "00ff".into(),
        ring_digest: Some("d".into()),
        agreeing: 2,
        reporting: 3,
        joined: true,
        members: vec![MemberRow {
            name: "p1".into(),
            id: "07".into(),
            addr: "127.0.0.1:7001".into(),
            state: "alive".into(),
            incarnation: 5,
            zone: Some("a".into()),
            weight: 1,
            status: "normal".into(),
            build: "0.1.0".into(),
            protocol: "3-4".into(),
            ownership: Some(0.25),
            this_peer: true,
        }],
    }
}

fn frozen() -> BTreeMap<&'static str, &'static str> {
    FROZEN
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once(' ').expect("name and hex"))
        .collect()
}

#[test]
fn every_request_and_answer_keeps_its_layout() {
    let frozen = frozen();
    let mut changed = Vec::new();
    let mut missing = Vec::new();
    for (name, bytes) in samples() {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match frozen.get(name) {
            Some(want) if *want == hex => {}
            Some(want) => changed.push(format!("{name}\n  frozen {want}\n  now    {hex}")),
            None => missing.push(format!("{name} {hex}")),
        }
    }
    assert!(
        changed.is_empty(),
        "these messages changed their layout, which breaks every build before this one \
         (add a new request variant instead, docs/upgrades.md):\n{}",
        changed.join("\n")
    );
    assert!(
        missing.is_empty(),
        "new messages: append these lines to node/src/rpc/layouts.txt:\n{}",
        missing.join("\n")
    );
}
