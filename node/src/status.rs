//! What a peer reports about itself: members, ring, owners. One set of
//! builders for the QUIC client API and the admin HTTP API, so both say the
//! same thing.

use std::collections::BTreeMap;

use ringkv_gossip::proto::version::ProtocolRange;
use ringkv_gossip::runner::View;
use ringkv_gossip::{Member, NodeId};
use ringkv_ring::analysis;

/// Where the ring state lives now; re-exported for the modules that
/// still name it here.
pub(crate) use crate::ring_view::RingState;
use crate::rpc::api::{MemberRow, MembersReply, OwnersReply, ReplicaRow, RingNodeRow, RingReply};

/// Replication factor the ring reports shares for (the store's N).
pub(crate) const REPLICATION: usize = 3;

fn by_id(view: &View) -> BTreeMap<NodeId, &Member> {
    std::iter::once(&view.me)
        .chain(view.members.iter())
        .map(|m| (m.id, m))
        .collect()
}

pub(crate) fn members_reply(view: &View, ring: &RingState) -> MembersReply {
    let shares: BTreeMap<NodeId, f64> = ring
        .ring
        .as_ref()
        .map(|r| {
            analysis::shares(r, 1)
                .into_iter()
                .map(|s| (s.id, s.share))
                .collect()
        })
        .unwrap_or_default();
    let row = |m: &Member, this_peer: bool| MemberRow {
        name: m.meta.name.clone(),
        id: m.id.to_string(),
        addr: m.meta.addr.to_string(),
        state: m.state.to_string(),
        incarnation: m.incarnation,
        zone: m.meta.zone.clone(),
        weight: m.meta.weight,
        status: format!("{:?}", m.meta.status).to_lowercase(),
        build: if m.meta.build.is_empty() {
            "-".into()
        } else {
            m.meta.build.clone()
        },
        protocol: ProtocolRange::of(&m.meta).to_string(),
        ownership: shares.get(&m.id).copied(),
        this_peer,
    };
    let mut members: Vec<MemberRow> = std::iter::once(row(&view.me, true))
        .chain(view.members.iter().map(|m| row(m, false)))
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    MembersReply {
        index: view.index,
        view_digest: format!("{:016x}", view.digest),
        ring_digest: ring.ring.as_ref().map(|r| r.digest().to_string()),
        agreeing: view.agreement.0,
        reporting: view.agreement.1,
        joined: view.joined,
        members,
    }
}

pub(crate) fn ring_reply(view: &View, ring: &RingState) -> Result<RingReply, String> {
    let r = ring.ring.as_ref().ok_or("no ring yet")?;
    let names = by_id(view);
    let name = |id: &NodeId| {
        names
            .get(id)
            .map_or_else(|| id.short(), |m| m.meta.name.clone())
    };
    let nodes = analysis::shares(r, REPLICATION)
        .into_iter()
        .map(|s| RingNodeRow {
            name: name(&s.id),
            id: s.id.to_string(),
            tokens: s.tokens,
            share: s.share,
            replica_share: s.replica_share,
        })
        .collect();
    let ranges = r
        .ranges()
        .map(|(range, owner)| (range.start.to_string(), range.end.to_string(), name(&owner)))
        .collect();
    Ok(RingReply {
        digest: r.digest().to_string(),
        vnodes: r.vnodes(),
        replication: REPLICATION,
        nodes,
        ranges,
    })
}

pub(crate) fn owners_reply(
    view: &View,
    ring: &RingState,
    key: &[u8],
) -> Result<OwnersReply, String> {
    let r = ring.ring.as_ref().ok_or("no ring yet")?;
    let names = by_id(view);
    let replicas = r
        .replicas(key, REPLICATION)
        .into_iter()
        .map(|id| {
            let m = names.get(&id);
            ReplicaRow {
                name: m.map_or_else(|| id.short(), |m| m.meta.name.clone()),
                id: id.to_string(),
                addr: m.map_or_else(String::new, |m| m.meta.addr.to_string()),
            }
        })
        .collect();
    Ok(OwnersReply {
        position: ringkv_ring::key_position(key).to_string(),
        replicas,
    })
}
