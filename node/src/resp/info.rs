//! The text of `INFO` (server, clients, stats, keyspace, cluster) and the
//! approximate key count of `DBSIZE`, from the server's counters, the
//! store and the membership view. No IO beyond reading those.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use ringkv_gossip::State;

use super::session::consistency_name;
use super::{Server, Session};
use crate::coordinator::REPLICAS;

/// The Redis version whose protocol and replies ringkv follows; tools
/// compare it to decide what they may send.
pub(crate) const REDIS_VERSION: &str = "7.0.0";

/// Every section, in Redis's order.
const SECTIONS: &[&str] = &["server", "clients", "stats", "keyspace", "cluster"];

/// `INFO [section ...]`: `all`, `default` and `everything` mean every
/// section; unknown names are ignored, as in Redis.
pub(crate) fn info(args: &[Vec<u8>], session: &Session, server: &Server) -> String {
    let wanted: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| matches!(w.as_str(), "all" | "default" | "everything"));
    let mut out = String::new();
    for section in SECTIONS {
        if !all && !wanted.iter().any(|w| w == section) {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        match *section {
            "server" => server_section(&mut out, session, server),
            "clients" => clients_section(&mut out, server),
            "stats" => stats_section(&mut out, server),
            "keyspace" => keyspace_section(&mut out, server),
            _ => cluster_section(&mut out, server),
        }
    }
    out
}

fn server_section(out: &mut String, session: &Session, server: &Server) {
    let uptime = server.started.elapsed().as_secs();
    let _ = write!(
        out,
        "# Server\r\nredis_version:{REDIS_VERSION}\r\nringkv_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nringkv_default_consistency:{}\r\nringkv_connection_consistency:{}\r\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH,
        std::process::id(),
        server.kv.me,
        server.addr.port(),
        uptime / 86_400,
        consistency_name(server.config.consistency),
        consistency_name(session.consistency),
    );
}

fn clients_section(out: &mut String, server: &Server) {
    let _ = write!(
        out,
        "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n",
        server.clients.load(Ordering::Relaxed),
        server.limits.max_clients,
    );
}

fn stats_section(out: &mut String, server: &Server) {
    let _ = write!(
        out,
        "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\n",
        server.connections_total.load(Ordering::Relaxed),
        server.commands_total.load(Ordering::Relaxed),
        server.rejected_total.load(Ordering::Relaxed),
    );
}

fn keyspace_section(out: &mut String, server: &Server) {
    // Only `keys` is given: expiry counts would need a scan.
    let _ = write!(
        out,
        "# Keyspace\r\ndb0:keys={}\r\nringkv_local_records:{}\r\n",
        approximate_keys(server),
        server.kv.store.len(),
    );
}

fn cluster_section(out: &mut String, server: &Server) {
    let view = server.kv.view.borrow().clone();
    let ring = server.kv.ring.borrow().clone();
    let live = view.live().count();
    let _ = write!(
        out,
        "# Cluster\r\ncluster_enabled:0\r\nringkv_members:{}\r\nringkv_live_members:{live}\r\nringkv_replication:{}\r\nringkv_ring_digest:{}\r\n",
        1 + view
            .members
            .iter()
            .filter(|m| m.state != State::Left)
            .count(),
        REPLICAS.min(live.max(1)),
        ring.ring
            .as_ref()
            .map_or_else(|| "none".to_owned(), |r| r.digest().short()),
    );
    let members = std::iter::once(&view.me).chain(view.members.iter());
    for (i, m) in members.enumerate() {
        let _ = write!(
            out,
            "ringkv_member{i}:name={},id={},addr={},state={},incarnation={}{}\r\n",
            m.meta.name,
            m.id.short(),
            m.meta.addr,
            m.state,
            m.incarnation,
            if i == 0 { ",self=1" } else { "" },
        );
    }
}

/// The number of keys in the cluster, estimated from this peer's store:
/// its records times live members over copies per key. Counts deleted and
/// expired keys not yet collected, and is off by the ring's imbalance.
pub(crate) fn approximate_keys(server: &Server) -> i64 {
    let live = server.kv.view.borrow().live().count().max(1);
    let copies = REPLICAS.min(live);
    let local = server.kv.store.len();
    i64::try_from(local.saturating_mul(live) / copies).unwrap_or(i64::MAX)
}
