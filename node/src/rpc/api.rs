//! The peer protocol on a peer's QUIC endpoint (authenticated with the
//! cluster key): one request per bidirectional stream, encoded by
//! [`crate::rpc::codec`]; the client finishes its side after the request and
//! the peer answers and finishes. Clients (the CLI) and coordinators (peers
//! asking replicas) speak the same protocol.

use serde::{Deserialize, Serialize};

use ringkv_ring::TokenRange;
use ringkv_storage::{Record, Version};

/// Largest key, in bytes (checked before anything is sent).
pub(crate) const KEY_MAX: usize = 64 * 1024;
/// Largest value, in bytes, unless configured otherwise.
pub(crate) const VALUE_MAX: usize = 16 * 1024 * 1024;
/// Largest request a peer reads: a key, a value and framing.
pub(crate) const REQUEST_MAX: usize = KEY_MAX + VALUE_MAX + 4096;
/// Largest answer a client reads.
pub(crate) const REPLY_MAX: usize = 32 * 1024 * 1024;

/// How a peer's answer to a request it cannot decode starts (a malformed
/// request, or one from a newer build). Every build so far answers so;
/// keep it (the CLI falls back to older requests on it).
pub(crate) const BAD_REQUEST: &str = "bad request";

/// How many replicas must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub(crate) enum Consistency {
    /// One replica.
    One,
    /// A majority of the replicas (N/2 + 1).
    Quorum,
    /// Every replica.
    All,
}

/// What a client can ask.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Request {
    /// The membership as this peer sees it, in the first builds' layout
    /// ([`LegacyMembersReply`], without builds and wire versions): what a
    /// CLI from before [`Request::Members`] asks (docs/upgrades.md).
    MembersLegacy,
    /// The ring as this peer built it.
    Ring,
    /// The replicas of a key.
    Owners {
        /// The key, as bytes.
        key: Vec<u8>,
    },
    /// Store a value (or delete, with `None`) through this peer.
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
        consistency: Consistency,
    },
    /// Read a value through this peer.
    Get {
        key: Vec<u8>,
        consistency: Consistency,
    },
    /// Replica side: apply this record if newer (coordinator to replica).
    ReplicaApply { key: Vec<u8>, record: Record },
    /// Replica side: the stored record, if any.
    ReplicaRead { key: Vec<u8> },
    /// The keys this peer coordinates most requests for.
    Hot,
    /// Handoff: a page of the records of a range, after a cursor.
    RangePage {
        range: TokenRange,
        after: Option<Vec<u8>>,
        max_bytes: u32,
    },
    /// Handoff and anti-entropy: the blake3 summary of a range.
    RangeSummary { range: TokenRange },
    /// Anti-entropy: the keys and versions of a range, a page at a time.
    RangeVersions {
        range: TokenRange,
        after: Option<Vec<u8>>,
        max: u32,
        /// Whatever the peer holds, even while it is still receiving its
        /// first ranges (`ringkv keys`); peers' handoff leaves it false.
        any: bool,
    },
    /// The stored records of several keys (what a diff found newer).
    ReadMany { keys: Vec<Vec<u8>> },
    /// Transfers in progress and handoff counters.
    Handoff,
    /// This peer's wall clock (clock offset probes).
    Time,
    /// Revoke every client credential issued to `name` until now: this
    /// peer announces it in its metadata, and gossip spreads it (peers
    /// only: an operator with the cluster key).
    Revoke { name: String },
    /// The keyring (peers only: an operator with the cluster key). With
    /// `cluster`, this peer does it on every live member and reports each.
    Keyring { op: KeyringOp, cluster: bool },
    /// Drop a dead member from the ring now, before its dead grace ends
    /// (peers only: an operator with the cluster key). `node` is its name
    /// or 8 to 32 hex digits of its id. With `cluster`, this peer does it
    /// on every live member and reports each ([`crate::removenode`]).
    RemoveNode { node: String, cluster: bool },
    /// Anti-entropy now over this peer's ranges (those overlapping
    /// `range`, or holding `key`, when given), in the background; its
    /// progress is in [`HandoffReply::repair`] (peers only).
    Repair {
        range: Option<TokenRange>,
        key: Option<Vec<u8>>,
    },
    /// Pause, resume or cancel this peer's transfers (peers only);
    /// answered with the handoff report after it.
    Transfers(TransferOp),
    /// The membership as this peer sees it, with each member's build and
    /// wire versions. New variants go after this one; no variant's layout
    /// ever changes (`rpc/layout_tests.rs`).
    Members,
}

/// What [`Request::Transfers`] does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum TransferOp {
    /// No new page is asked for until resumed (checkpoints stay).
    Pause,
    /// Pages are asked for again, from the checkpoints.
    Resume,
    /// The transfer of this range stops taking pages from its source; it
    /// goes on from its checkpoint with the next holder (or later).
    Cancel(TokenRange),
}

/// A repair run (`ringkv repair`), as `ringkv handoff` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RepairRow {
    /// Whether it is still going.
    pub(crate) running: bool,
    /// This peer's ranges it covers, and how many are done.
    pub(crate) ranges_total: u64,
    pub(crate) ranges_done: u64,
    /// Comparisons with another replica made, and how many differed.
    pub(crate) compared: u64,
    pub(crate) differed: u64,
    /// Records pulled because another replica held a newer one.
    pub(crate) records: u64,
    /// Comparisons that failed (no answer, no live replica), and the
    /// first few reasons.
    pub(crate) failed: u64,
    pub(crate) failures: Vec<String>,
    /// Seconds since it started (until it ended, once it did).
    pub(crate) elapsed: f64,
}

/// One member's answer to [`Request::RemoveNode`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RemoveNodeRow {
    /// The member's name and address.
    pub(crate) name: String,
    pub(crate) addr: String,
    /// Whether its ring dropped the member now (`Some(false)`: it had
    /// already, or the member left; `None`: refused, see `error`).
    pub(crate) changed: Option<bool>,
    /// Why it refused (nothing changed on that member).
    pub(crate) error: Option<String>,
}

/// Answer to [`Request::RemoveNode`]: the member removed and one row per
/// member asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RemoveNodeReply {
    /// The removed member's name and full id.
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) members: Vec<RemoveNodeRow>,
}

/// What [`Request::Keyring`] does ([`crate::keyring`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum KeyringOp {
    /// The fingerprints of the installed keys.
    List,
    /// Install this key (trusted, not presented).
    Install(SecretKey),
    /// Make the key with this fingerprint the primary.
    Use(String),
    /// Remove the key with this fingerprint (never the primary).
    Remove(String),
}

/// A cluster key in a request, in its text form. `Debug` shows its
/// fingerprint only, so a logged request never shows the key.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct SecretKey(pub(crate) String);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match ringkv_gossip::ClusterKey::parse(&self.0) {
            Ok(key) => write!(f, "SecretKey({:?})", key),
            Err(_) => f.write_str("SecretKey(malformed)"),
        }
    }
}

/// One member's keyring, as `ringkv keyring` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyringRow {
    /// The member's name and address.
    pub(crate) name: String,
    pub(crate) addr: String,
    /// Whether the operation changed its keyring (`None`: it failed).
    pub(crate) changed: Option<bool>,
    /// Why it failed, if it did (nothing changed on that member).
    pub(crate) error: Option<String>,
    /// Fingerprint (8 hex digits) of its primary key, when known.
    pub(crate) primary: Option<String>,
    /// Fingerprints of every installed key, the primary first.
    pub(crate) keys: Vec<String>,
}

/// Answer to [`Request::Keyring`]: one row per member asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeyringReply {
    pub(crate) members: Vec<KeyringRow>,
}

/// Answer to [`Request::Revoke`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RevokeReply {
    /// Credentials issued to the name at or before this time (Unix
    /// seconds, this peer's clock) are refused.
    pub(crate) before: u64,
    /// Names in this peer's revocation list now.
    pub(crate) revoked: usize,
}

/// Answer to [`Request::Time`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TimeReply {
    /// Wall-clock milliseconds since the Unix epoch, read as the request
    /// was answered.
    pub(crate) wall_ms: u64,
}

/// Answer to [`Request::ReplicaRead`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ReadAnswer {
    /// The replica holds the key's range fully: its record, if any.
    Held(Option<Record>),
    /// The replica does not hold the key's range fully (still receiving
    /// it, or already dropping it): what it has, which may be stale or
    /// missing. Coordinators use it only when no better replica exists.
    NotHeld(Option<Record>),
}

/// Answer to [`Request::RangePage`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RangePageReply {
    /// The records, encoded as `Vec<(key, Record)>` by [`crate::rpc::codec`].
    #[serde(with = "serde_bytes")]
    pub(crate) batch: Vec<u8>,
    /// blake3 of `batch`: checked before anything is applied.
    pub(crate) check: [u8; 32],
    /// Records in the batch.
    pub(crate) records: u32,
    /// About how many records the whole range holds at the source.
    pub(crate) estimate: u64,
    /// Cursor of the next page; `None` at the end of the range.
    pub(crate) next: Option<Vec<u8>>,
}

/// Answer to [`Request::RangeSummary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SummaryReply {
    pub(crate) hash: [u8; 32],
    pub(crate) records: u64,
}

/// Answer to [`Request::RangeVersions`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VersionsReply {
    pub(crate) versions: Vec<(Vec<u8>, Version)>,
    pub(crate) next: Option<Vec<u8>>,
}

/// One transfer, as `ringkv handoff` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TransferRow {
    /// The range, `(start, end]` in hex.
    pub(crate) range: String,
    /// The peer it comes from.
    pub(crate) source: String,
    /// Records in the range at the source when the transfer started.
    pub(crate) total_records: u64,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    /// Seconds since it started.
    pub(crate) elapsed: f64,
}

/// Answer to [`Request::Handoff`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct HandoffReply {
    /// Digest (short) of the ring this peer is building towards.
    pub(crate) ring: Option<String>,
    /// Digest (short) of the ring this peer announced it holds fully.
    pub(crate) ready: Option<String>,
    /// Ranges still to pull for the current ring.
    pub(crate) pending_ranges: usize,
    pub(crate) transfers: Vec<TransferRow>,
    pub(crate) keys_moved: u64,
    pub(crate) bytes_moved: u64,
    pub(crate) ranges_completed: u64,
    pub(crate) repairs: u64,
    pub(crate) ranges_dropped: u64,
    pub(crate) records_dropped: u64,
    /// Dead members an operator removed from this peer's ring
    /// (`ringkv removenode`), by name.
    pub(crate) removed: Vec<String>,
    /// The current or last repair run (`ringkv repair`).
    pub(crate) repair: Option<RepairRow>,
    /// Whether an operator paused the transfers (`ringkv handoff --pause`).
    pub(crate) paused: bool,
    /// Transfers an operator cancelled since start.
    pub(crate) cancelled: u64,
}

/// One hot key, as `ringkv hot` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HotRow {
    /// The key, lossily as text.
    pub(crate) key: String,
    /// Requests in the recent window (may overcount by `error`).
    pub(crate) requests: u64,
    pub(crate) error: u64,
}

/// Answer to [`Request::Put`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PutReply {
    /// Replicas that acknowledged, by name.
    pub(crate) acknowledged: Vec<String>,
    /// The version written, as text.
    pub(crate) version: String,
}

/// Answer to [`Request::Get`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GetReply {
    /// The value, `None` when absent or deleted.
    #[serde(with = "serde_bytes")]
    pub(crate) value: Option<Vec<u8>>,
    /// The newest version seen, as text.
    pub(crate) version: Option<String>,
    /// Replicas that answered, by name.
    pub(crate) answered: Vec<String>,
}

/// One member, as `ringkv members` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MemberRow {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) addr: String,
    pub(crate) state: String,
    pub(crate) incarnation: u64,
    pub(crate) zone: Option<String>,
    pub(crate) weight: u32,
    pub(crate) status: String,
    /// Build version string it gossips (`-` from builds that send none).
    pub(crate) build: String,
    /// Wire versions it speaks, `min-max` (docs/upgrades.md).
    pub(crate) protocol: String,
    /// Share of the key space owned as primary, if in the ring.
    pub(crate) ownership: Option<f64>,
    /// Whether this row is the answering peer.
    pub(crate) this_peer: bool,
}

/// One member in [`LegacyMembersReply`]: [`MemberRow`] without `build`
/// and `protocol`. Frozen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LegacyMemberRow {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) addr: String,
    pub(crate) state: String,
    pub(crate) incarnation: u64,
    pub(crate) zone: Option<String>,
    pub(crate) weight: u32,
    pub(crate) status: String,
    pub(crate) ownership: Option<f64>,
    pub(crate) this_peer: bool,
}

/// Answer to [`Request::MembersLegacy`]: [`MembersReply`] as the first
/// builds sent it. Frozen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LegacyMembersReply {
    pub(crate) index: u64,
    pub(crate) view_digest: String,
    pub(crate) ring_digest: Option<String>,
    pub(crate) agreeing: usize,
    pub(crate) reporting: usize,
    pub(crate) joined: bool,
    pub(crate) members: Vec<LegacyMemberRow>,
}

/// What an old build's answer does not say.
const UNKNOWN: &str = "?";

impl From<MembersReply> for LegacyMembersReply {
    fn from(r: MembersReply) -> Self {
        Self {
            index: r.index,
            view_digest: r.view_digest,
            ring_digest: r.ring_digest,
            agreeing: r.agreeing,
            reporting: r.reporting,
            joined: r.joined,
            members: r
                .members
                .into_iter()
                .map(|m| LegacyMemberRow {
                    name: m.name,
                    id: m.id,
                    addr: m.addr,
                    state: m.state,
                    incarnation: m.incarnation,
                    zone: m.zone,
                    weight: m.weight,
                    status: m.status,
                    ownership: m.ownership,
                    this_peer: m.this_peer,
                })
                .collect(),
        }
    }
}

impl From<LegacyMembersReply> for MembersReply {
    /// An old build's answer: builds and wire versions shown as `?`.
    fn from(r: LegacyMembersReply) -> Self {
        Self {
            index: r.index,
            view_digest: r.view_digest,
            ring_digest: r.ring_digest,
            agreeing: r.agreeing,
            reporting: r.reporting,
            joined: r.joined,
            members: r
                .members
                .into_iter()
                .map(|m| MemberRow {
                    name: m.name,
                    id: m.id,
                    addr: m.addr,
                    state: m.state,
                    incarnation: m.incarnation,
                    zone: m.zone,
                    weight: m.weight,
                    status: m.status,
                    build: UNKNOWN.into(),
                    protocol: UNKNOWN.into(),
                    ownership: m.ownership,
                    this_peer: m.this_peer,
                })
                .collect(),
        }
    }
}

/// Answer to [`Request::Members`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MembersReply {
    /// Changes with every membership change this peer saw.
    pub(crate) index: u64,
    pub(crate) view_digest: String,
    pub(crate) ring_digest: Option<String>,
    /// Live peers whose last message carried the same view digest.
    pub(crate) agreeing: usize,
    /// Live peers heard from.
    pub(crate) reporting: usize,
    pub(crate) joined: bool,
    pub(crate) members: Vec<MemberRow>,
}

/// One node's place in the ring.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RingNodeRow {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) tokens: u32,
    pub(crate) share: f64,
    pub(crate) replica_share: f64,
}

/// Answer to [`Request::Ring`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RingReply {
    pub(crate) digest: String,
    pub(crate) vnodes: u32,
    pub(crate) replication: usize,
    pub(crate) nodes: Vec<RingNodeRow>,
    /// Token ranges `(start, end]` in hex with their owner's name.
    pub(crate) ranges: Vec<(String, String, String)>,
}

/// One replica of a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReplicaRow {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) addr: String,
}

/// Answer to [`Request::Owners`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OwnersReply {
    pub(crate) position: String,
    pub(crate) replicas: Vec<ReplicaRow>,
}

/// A replica's answer to `ReplicaApply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ApplyReply {
    /// The record is on disk here: applied now, or this exact version was
    /// already held (the same write again: versions are unique per writer,
    /// so an equal version is the same write). An acknowledgement.
    Applied,
    /// This replica holds a newer version of the key, given here, and kept
    /// it. Not an acknowledgement: the coordinator must stamp the write past
    /// it, or a read could return the older write after this one.
    Newer(Version),
}

/// Every answer: the value, or an error with its kind and a message a
/// person can read. Consumers decide by `kind`, never by the text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reply<T> {
    Ok(T),
    Err { kind: ErrorKind, message: String },
}

impl<T> Reply<T> {
    /// An error answer from a [`RequestError`].
    pub(crate) fn error(e: RequestError) -> Self {
        Self::Err {
            kind: e.kind,
            message: e.message,
        }
    }
}

/// What a failed request did, as far as the answering peer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorKind {
    /// The request surely had no effect: it was invalid for this peer's
    /// ring (no ring yet, too few replicas), or no replica acknowledged
    /// and every replica refused or was unreachable before anything was
    /// sent. Nothing was written; retrying is safe.
    Definite,
    /// The request may have been applied: some replica acknowledged a
    /// write that missed its quorum, a replica was sent the write and did
    /// not answer in time, or the error is not known to be harmless. The
    /// conservative kind: any error not classified otherwise.
    Unknown,
    /// The request was refused before anything happened: malformed, a key
    /// or value too large, bad input. State did not change; retrying the
    /// same request fails again.
    Refused,
    /// The replica does not hold the key's range fully (still receiving
    /// it, or already dropping it). State did not change.
    NotHeld,
    /// The peer is too busy to take the request (too many requests, or it
    /// timed out waiting for admission). State did not change.
    Overloaded,
}

/// An error of a store request, with the kind the peer answers it with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct RequestError {
    /// What the failure means for the request's effect.
    pub(crate) kind: ErrorKind,
    /// The message a person reads (unchanged from before kinds existed).
    pub(crate) message: String,
}

impl RequestError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The kind of any error: a [`RequestError`]'s own (anywhere in the
    /// chain), otherwise `Unknown` (conservative: it may have had an
    /// effect).
    pub(crate) fn kind_of(e: &anyhow::Error) -> ErrorKind {
        e.chain()
            .find_map(|c| c.downcast_ref::<Self>())
            .map_or(ErrorKind::Unknown, |r| r.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::codec;

    const KINDS: [ErrorKind; 5] = [
        ErrorKind::Definite,
        ErrorKind::Unknown,
        ErrorKind::Refused,
        ErrorKind::NotHeld,
        ErrorKind::Overloaded,
    ];

    #[test]
    fn every_kind_round_trips_through_the_codec() {
        for kind in KINDS {
            let sent = Reply::<PutReply>::error(RequestError::new(kind, "why"));
            let bytes = codec::encode(&sent);
            match codec::decode::<Reply<PutReply>>(&bytes, REPLY_MAX).expect("decodes") {
                Reply::Err { kind: got, message } => {
                    assert_eq!(got, kind);
                    assert_eq!(message, "why");
                }
                Reply::Ok(_) => panic!("{kind:?} came back as ok"),
            }
        }
    }

    #[test]
    fn kind_of_finds_a_request_error_in_the_chain_and_defaults_to_unknown() {
        let typed = anyhow::Error::new(RequestError::new(ErrorKind::Refused, "the key is empty"));
        assert_eq!(RequestError::kind_of(&typed), ErrorKind::Refused);
        let wrapped = typed.context("while coordinating");
        assert_eq!(RequestError::kind_of(&wrapped), ErrorKind::Refused);
        let plain = anyhow::anyhow!("nothing was written");
        assert_eq!(RequestError::kind_of(&plain), ErrorKind::Unknown);
    }
}
