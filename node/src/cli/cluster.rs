//! `ringkv members`, `ringkv ring --peer`, `ringkv owners`, `ringkv keygen`:
//! what a live cluster looks like, from any peer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use ringkv_gossip::ClusterKey;

use super::table::{pct, Align, Table};
use crate::keyargs::{Access, AccessArgs};
use crate::rpc::api::{LegacyMembersReply, MembersReply, OwnersReply, Request, RingReply};
use crate::rpc::client;

/// How long a CLI request may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where to ask, and with which key.
#[derive(Debug, Clone, Args)]
pub(crate) struct PeerArgs {
    /// Any peer's --listen (or --advertise) address.
    #[arg(long, env = "RINGKV_PEER")]
    pub(crate) peer: SocketAddr,
    #[command(flatten)]
    pub(crate) key: AccessArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Arguments of `ringkv members`.
#[derive(Debug, Args)]
pub(crate) struct MembersArgs {
    #[command(flatten)]
    pub(crate) peer: PeerArgs,
    /// Keep printing each membership change as it happens (Ctrl-C stops).
    #[arg(long)]
    pub(crate) watch: bool,
}

/// Arguments of `ringkv owners`.
#[derive(Debug, Args)]
pub(crate) struct OwnersArgs {
    /// The key whose replicas to show.
    pub(crate) key: String,
    #[command(flatten)]
    pub(crate) peer: PeerArgs,
}

/// `ringkv keygen`: a new cluster key.
pub(crate) fn keygen() -> String {
    format!("{}\n", ClusterKey::generate(&mut rand::rng()))
}

pub(crate) async fn members(args: &MembersArgs) -> Result<String> {
    let key = args.peer.key.require()?;
    let reply = members_of(args.peer.peer, &key).await?;
    if !args.watch {
        return Ok(if args.peer.json {
            serde_json::to_string_pretty(&reply)? + "\n"
        } else {
            render_members(&reply)
        });
    }
    watch_members(args.peer.peer, &key, reply, args.peer.json).await
}

/// `peer`'s view of the members. A peer of a build from before
/// [`Request::Members`] refuses it as a bad request (it cannot decode the
/// variant); it is then asked [`Request::MembersLegacy`], whose answer has
/// no builds or wire versions (shown as `?`). docs/upgrades.md.
async fn members_of(peer: SocketAddr, key: &Access) -> Result<MembersReply> {
    match client::request(peer, key, &Request::Members, TIMEOUT).await {
        Err(e) if client::refused_as_unknown(&e) => {
            let old: LegacyMembersReply =
                client::request(peer, key, &Request::MembersLegacy, TIMEOUT).await?;
            Ok(old.into())
        }
        other => other,
    }
}

/// Prints one line per change of any member's state, polling the peer.
async fn watch_members(
    peer: SocketAddr,
    key: &Access,
    first: MembersReply,
    json: bool,
) -> Result<String> {
    let mut known: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut reply = first;
    loop {
        for m in &reply.members {
            let now = (m.state.clone(), m.addr.clone());
            if known.get(&m.id) != Some(&now) {
                if json {
                    println!("{}", serde_json::to_string(m)?);
                } else {
                    println!(
                        "{:<16} {:<10} {:<22} incarnation {}",
                        m.name, m.state, m.addr, m.incarnation
                    );
                }
                known.insert(m.id.clone(), now);
            }
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(String::new()),
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        reply = members_of(peer, key).await?;
    }
}

fn render_members(r: &MembersReply) -> String {
    let mut t = Table::new(&[
        ("name", Align::Left),
        ("id", Align::Left),
        ("address", Align::Left),
        ("state", Align::Left),
        ("inc", Align::Right),
        ("zone", Align::Left),
        ("weight", Align::Right),
        ("owns", Align::Right),
        ("build", Align::Left),
        ("proto", Align::Left),
    ]);
    for m in &r.members {
        t.row(vec![
            if m.this_peer {
                format!("{} *", m.name)
            } else {
                m.name.clone()
            },
            m.id[..8].to_owned(),
            m.addr.clone(),
            m.state.clone(),
            m.incarnation.to_string(),
            m.zone.clone().unwrap_or_else(|| "-".into()),
            m.weight.to_string(),
            m.ownership.map_or_else(|| "-".into(), |o| pct(o, 1)),
            m.build.clone(),
            m.protocol.clone(),
        ]);
    }
    let mut out = t.render();
    let _ = writeln!(
        out,
        "* answering peer. View {} (change #{}); {} of {} live peers heard from agree with it; ring {}",
        r.view_digest,
        r.index,
        r.agreeing,
        r.reporting,
        r.ring_digest.as_deref().map_or("not built", |d| &d[..16])
    );
    out
}

pub(crate) async fn ring(args: &PeerArgs) -> Result<String> {
    let key = args.key.require()?;
    let reply: RingReply = client::request(args.peer, &key, &Request::Ring, TIMEOUT).await?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&reply)? + "\n");
    }
    let mut t = Table::new(&[
        ("node", Align::Left),
        ("tokens", Align::Right),
        ("owns", Align::Right),
        ("replicas", Align::Right),
    ]);
    for n in &reply.nodes {
        t.row(vec![
            n.name.clone(),
            n.tokens.to_string(),
            pct(n.share, 2),
            pct(n.replica_share * reply.replication as f64, 2),
        ]);
    }
    let mut out = format!(
        "ring {} ({} vnodes per unit of weight, {} ranges)\n\n",
        &reply.digest[..16],
        reply.vnodes,
        reply.ranges.len()
    );
    out.push_str(&t.render());
    let _ = writeln!(
        out,
        "owns: key space owned as primary; replicas: key space held at replication {}",
        reply.replication
    );
    Ok(out)
}

pub(crate) async fn owners(args: &OwnersArgs) -> Result<String> {
    let key = args.peer.key.require()?;
    let req = Request::Owners {
        key: args.key.as_bytes().to_vec(),
    };
    let reply: OwnersReply = client::request(args.peer.peer, &key, &req, TIMEOUT).await?;
    if args.peer.json {
        return Ok(serde_json::to_string_pretty(&reply)? + "\n");
    }
    let mut t = Table::new(&[
        ("replica", Align::Right),
        ("node", Align::Left),
        ("address", Align::Left),
    ]);
    for (i, r) in reply.replicas.iter().enumerate() {
        t.row(vec![(i + 1).to_string(), r.name.clone(), r.addr.clone()]);
    }
    Ok(format!(
        "key {:?} at position {}\n\n{}",
        args.key,
        reply.position,
        t.render()
    ))
}

pub(crate) async fn hot(args: &PeerArgs) -> Result<String> {
    let key = args.key.require()?;
    let rows: Vec<crate::rpc::api::HotRow> =
        client::request(args.peer, &key, &Request::Hot, TIMEOUT).await?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&rows)? + "\n");
    }
    let mut t = Table::new(&[
        ("key", Align::Left),
        ("requests", Align::Right),
        ("may overcount by", Align::Right),
    ]);
    for r in &rows {
        t.row(vec![
            r.key.clone(),
            r.requests.to_string(),
            r.error.to_string(),
        ]);
    }
    Ok(format!(
        "keys this peer coordinated most requests for (counts halve every 10 s)\n\n{}",
        t.render()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::api::MemberRow;

    fn row(name: &str, build: &str, protocol: &str) -> MemberRow {
        MemberRow {
            name: name.into(),
            id: "0123456789abcdef".into(),
            addr: "127.0.0.1:7001".into(),
            state: "alive".into(),
            incarnation: 1,
            zone: None,
            weight: 1,
            status: "normal".into(),
            build: build.into(),
            protocol: protocol.into(),
            ownership: None,
            this_peer: false,
        }
    }

    #[test]
    fn members_shows_each_build_and_protocol_range() {
        let reply = MembersReply {
            index: 1,
            view_digest: "00".into(),
            ring_digest: None,
            agreeing: 1,
            reporting: 1,
            joined: true,
            members: vec![row("a", "0.1.0", "3-4"), row("b", "-", "3-3")],
        };
        let out = render_members(&reply);
        let header = out.lines().next().expect("a header");
        assert!(
            header.contains("build") && header.contains("proto"),
            "{out}"
        );
        let a = out.lines().find(|l| l.starts_with('a')).expect("row a");
        assert!(
            a.contains("0.1.0") && a.trim_end().ends_with("3-4"),
            "{out}"
        );
        let b = out.lines().find(|l| l.starts_with('b')).expect("row b");
        assert!(b.trim_end().ends_with("3-3"), "{out}");
    }
}
