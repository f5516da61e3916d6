//! Admin HTTP for operators and load balancers (axum):
//! - `GET /health`: 200 when this peer has joined and built its ring and
//!   its clock is within the maximum offset of most peers, 503 otherwise,
//!   with the reason in the JSON body (and the clock offset);
//! - `GET /metrics`: Prometheus text;
//! - `GET /v1/members`: the members JSON that `ringkv members --json`
//!   prints; with `?index=N&wait=30s` it blocks until the view changes
//!   past N (or the wait ends), as Consul's blocking queries do, so a
//!   client can follow the live peers without polling;
//! - `GET /v1/ring`: the ring JSON;
//! - `GET`/`PUT /v1/faults`: the testbed's fault-injection settings (see
//!   `crate::faults`); 403 unless the peer runs with `--testbed-faults`.
//!
//! With `--admin-token-file`, every endpoint but `/health` needs
//! `Authorization: Bearer <token>` ([`http`]); a non-loopback `--admin`
//! needs one ([`settings`]). Connections are capped and must send their
//! headers in time.

pub(crate) mod http;
pub(crate) mod settings;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use ringkv_gossip::runner::{TransportStats, View};
use ringkv_gossip::transport::faults::{FaultStats, FaultSwitch};
use ringkv_gossip::Stats as GossipStats;
use ringkv_ring::Ring;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::ring_view::RingState;
use crate::rpc::api::HandoffReply;
use crate::status;

/// Longest a blocking query may wait.
const WAIT_MAX: Duration = Duration::from_secs(300);

/// What the handlers read.
#[derive(Debug)]
pub(crate) struct AdminState {
    pub(crate) view: watch::Receiver<Arc<View>>,
    pub(crate) ring: watch::Receiver<Arc<RingState>>,
    pub(crate) transport: Arc<TransportStats>,
    pub(crate) metrics: PrometheusHandle,
    pub(crate) started: Instant,
    pub(crate) kv: Arc<crate::shared::Kv>,
    /// Handoff counters.
    pub(crate) handoff: Arc<crate::handoff::Handoff>,
    /// The fault-injection switch; `None` unless `--testbed-faults`.
    pub(crate) faults: Option<Arc<FaultSwitch>>,
    /// Requests and connections turned away.
    pub(crate) rejections: Arc<http::Rejections>,
    /// Whether `/metrics` names the hot keys (`--metrics-key-names`).
    pub(crate) key_names: bool,
}

/// The routes, behind the token check when `token` is set.
pub(crate) fn router(state: Arc<AdminState>, token: Option<settings::AdminToken>) -> Router {
    let rejections = state.rejections.clone();
    let routes = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/v1/members", get(members))
        .route("/v1/ring", get(ring))
        .route("/v1/faults", get(faults_get).put(faults_put))
        .with_state(state);
    http::guarded(routes, token, rejections)
}

async fn health(State(s): State<Arc<AdminState>>) -> Response {
    let view = s.view.borrow().clone();
    let has_ring = s.ring.borrow().ring.is_some();
    let clock = s.kv.clock_verdict();
    let disk = s.kv.disk_refusal();
    let reason = if view.me.state != ringkv_gossip::State::Alive {
        Some(format!("this peer is {}", view.me.state))
    } else if !view.joined {
        Some("not joined yet: no seed has answered".to_owned())
    } else if !has_ring {
        Some("the ring is not built yet".to_owned())
    } else if let Some(why) = disk {
        Some(format!("{why}: writes are refused"))
    } else if clock.is_beyond() {
        Some(format!(
            "{clock} (--max-clock-offset {:?}): this peer coordinates no writes",
            s.kv.max_clock_offset
        ))
    } else {
        None
    };
    let body = json!({
        "status": if reason.is_none() { "ok" } else { "unavailable" },
        "reason": reason,
        "name": view.me.meta.name,
        "live_members": view.live().count(),
        "clock_offset_ms": clock.offset_ms(),
        "uptime_s": s.started.elapsed().as_secs(),
    });
    let code = if reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

#[derive(Debug, Deserialize)]
struct MembersQuery {
    index: Option<u64>,
    wait: Option<String>,
}

async fn members(State(s): State<Arc<AdminState>>, Query(q): Query<MembersQuery>) -> Response {
    if let Some(index) = q.index {
        let wait = match q.wait.as_deref().map(crate::keyargs::parse_duration) {
            None => Duration::from_secs(30),
            Some(Ok(d)) => d.min(WAIT_MAX),
            Some(Err(e)) => {
                return (StatusCode::BAD_REQUEST, Json(json!({ "error": e }))).into_response()
            }
        };
        let mut rx = s.view.clone();
        let _ = tokio::time::timeout(wait, rx.wait_for(|v| v.index > index)).await;
    }
    let view = s.view.borrow().clone();
    let ring = s.ring.borrow().clone();
    let reply = status::members_reply(&view, &ring);
    let mut response = Json(reply).into_response();
    if let Ok(v) = HeaderValue::from_str(&view.index.to_string()) {
        response.headers_mut().insert("x-ringkv-index", v);
    }
    response
}

async fn ring(State(s): State<Arc<AdminState>>) -> Response {
    let view = s.view.borrow().clone();
    let ring = s.ring.borrow().clone();
    match status::ring_reply(&view, &ring) {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": e }))).into_response(),
    }
}

fn faults_off() -> Response {
    let body = json!({ "error": ringkv_gossip::transport::faults::OFF_MESSAGE });
    (StatusCode::FORBIDDEN, Json(body)).into_response()
}

async fn faults_get(State(s): State<Arc<AdminState>>) -> Response {
    match &s.faults {
        Some(switch) => Json(switch.get().to_body()).into_response(),
        None => faults_off(),
    }
}

/// Replaces the fault settings entirely; `{}` heals everything.
async fn faults_put(State(s): State<Arc<AdminState>>, body: Bytes) -> Response {
    let Some(switch) = &s.faults else {
        return faults_off();
    };
    match ringkv_gossip::transport::faults::Faults::from_json(&body) {
        Ok(faults) => {
            let shown = faults.to_body();
            tracing::info!(drop = ?shown.drop, loss = shown.loss, delay_ms = shown.delay_ms, "fault settings replaced");
            switch.set(faults);
            Json(shown).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({ "error": e.0 }))).into_response(),
    }
}

async fn metrics_text(State(s): State<Arc<AdminState>>) -> Response {
    record(&s);
    let mut response = s.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// Copies the current figures into the metrics recorder, a family at a
/// time.
fn record(s: &AdminState) {
    let view = s.view.borrow().clone();
    let ring = s.ring.borrow().clone();
    record_members(&view);
    record_gossip(&view.stats, &s.transport);
    record_view(&view, &ring);
    record_hints(&s.kv);
    record_handoff(&s.handoff.report());
    metrics::gauge!("ringkv_records").set(s.kv.store.len() as f64);
    if let Some(switch) = &s.faults {
        record_faults(&switch.stats);
    }
    record_hot(&s.kv, s.key_names);
    for (reason, n) in s.rejections.by_reason() {
        metrics::counter!("ringkv_admin_rejected_total", "reason" => reason).absolute(n);
    }
    if let Some(r) = &ring.ring {
        record_ring(r);
    }
}

/// Members by state, this peer included.
fn record_members(view: &View) {
    for state in ["alive", "suspect", "dead", "left"] {
        let mut n = view
            .members
            .iter()
            .filter(|m| m.state.to_string() == state)
            .count();
        n += usize::from(view.me.state.to_string() == state);
        metrics::gauge!("ringkv_members", "state" => state).set(n as f64);
    }
}

/// The failure detector's and the gossip transport's counters.
fn record_gossip(st: &GossipStats, transport: &TransportStats) {
    use std::sync::atomic::Ordering::Relaxed;
    metrics::counter!("ringkv_probes_total").absolute(st.probes);
    metrics::counter!("ringkv_probes_failed_total").absolute(st.probes_failed);
    metrics::counter!("ringkv_suspicions_raised_total").absolute(st.suspicions_raised);
    metrics::counter!("ringkv_refutations_total").absolute(st.refutations);
    metrics::counter!("ringkv_gossip_messages_sent_total", "channel" => "datagram")
        .absolute(st.datagrams_sent);
    metrics::counter!("ringkv_gossip_messages_sent_total", "channel" => "stream")
        .absolute(st.streams_sent);
    metrics::counter!("ringkv_gossip_bytes_sent_total", "channel" => "datagram")
        .absolute(st.datagram_bytes_sent);
    metrics::counter!("ringkv_gossip_bytes_sent_total", "channel" => "stream")
        .absolute(st.stream_bytes_sent);
    metrics::counter!("ringkv_gossip_messages_received_total").absolute(st.messages_received);
    metrics::counter!("ringkv_gossip_bytes_received_total").absolute(st.bytes_received);
    metrics::counter!("ringkv_gossip_decode_errors_total").absolute(st.decode_errors);
    for (i, n) in st.received_by_version.iter().enumerate() {
        let version = (usize::from(ringkv_gossip::proto::codec::MIN_VERSION) + i).to_string();
        metrics::counter!("ringkv_gossip_received_by_version_total", "version" => version)
            .absolute(*n);
    }
    metrics::counter!("ringkv_gossip_foreign_dropped_total").absolute(st.foreign_dropped);
    metrics::counter!("ringkv_stalls_total").absolute(st.stalls);
    metrics::counter!("ringkv_view_repairs_total").absolute(st.view_repairs);
    // Membership statements dropped: unsigned, forged, wild incarnations or
    // weights, a full member table, a connection to the wrong peer.
    for (reason, n) in st.rejected.iter() {
        // The transport counts connections to the wrong node itself.
        let n = if reason == ringkv_gossip::Reject::PeerMismatch.as_str() {
            n + transport.peer_mismatch.load(Relaxed)
        } else {
            n
        };
        metrics::counter!("ringkv_gossip_rejected_total", "reason" => reason).absolute(n);
    }
    metrics::counter!("ringkv_handshake_failures_total")
        .absolute(transport.handshake_failures.load(Relaxed));
    metrics::counter!("ringkv_rpc_refused_total", "reason" => "role")
        .absolute(transport.rpc_refused_role.load(Relaxed));
    metrics::counter!("ringkv_rpc_refused_total", "reason" => "busy")
        .absolute(transport.rpc_refused_busy.load(Relaxed));
    metrics::counter!("ringkv_gossip_refused_total", "reason" => "role")
        .absolute(transport.gossip_refused_role.load(Relaxed));
    metrics::counter!("ringkv_connections_closed_total", "reason" => "key_removed")
        .absolute(transport.connections_closed_rekeyed.load(Relaxed));
    metrics::counter!("ringkv_connect_timeouts_total")
        .absolute(transport.connect_timeouts.load(Relaxed));
    metrics::counter!("ringkv_inbox_dropped_total").absolute(transport.inbox_dropped.load(Relaxed));
    metrics::counter!("ringkv_unsent_total").absolute(transport.unsent.load(Relaxed));
    metrics::counter!("ringkv_quic_handshakes_refused_total", "reason" => "full")
        .absolute(transport.handshakes_refused_full.load(Relaxed));
    metrics::counter!("ringkv_quic_handshakes_refused_total", "reason" => "per_source")
        .absolute(transport.handshakes_ignored_per_source.load(Relaxed));
    metrics::counter!("ringkv_quic_handshake_timeouts_total")
        .absolute(transport.handshake_timeouts.load(Relaxed));
    metrics::counter!("ringkv_quic_connects_refused_total")
        .absolute(transport.connects_refused.load(Relaxed));
    metrics::counter!("ringkv_quic_retries_total")
        .absolute(transport.handshake_retries.load(Relaxed));
    metrics::gauge!("ringkv_quic_connections").set(transport.open_connections.load(Relaxed) as f64);
    metrics::gauge!("ringkv_requests_in_progress")
        .set(transport.requests_in_progress.load(Relaxed) as f64);
}

/// This peer's health, incarnation, view agreement and ring rebuilds.
fn record_view(view: &View, ring: &RingState) {
    metrics::gauge!("ringkv_health_score").set(f64::from(view.health));
    metrics::gauge!("ringkv_incarnation").set(view.me.incarnation as f64);
    metrics::gauge!("ringkv_view_agreeing_peers").set(view.agreement.0 as f64);
    metrics::gauge!("ringkv_view_reporting_peers").set(view.agreement.1 as f64);
    // What the handoff settle waits on (`readiness::views_agree`).
    metrics::gauge!("ringkv_ring_shape_agreeing_peers").set(view.ring_agreement.0 as f64);
    metrics::counter!("ringkv_ring_rebuilds_total").absolute(ring.rebuilds);
}

/// Hinted handoff: hints held, their limits, dropped and replayed.
fn record_hints(kv: &crate::shared::Kv) {
    use std::sync::atomic::Ordering::Relaxed;
    let (hints, hint_bytes) = kv.store.hint_stats();
    metrics::gauge!("ringkv_hints").set(hints as f64);
    metrics::gauge!("ringkv_hint_bytes").set(hint_bytes as f64);
    metrics::gauge!("ringkv_hint_bytes_max").set(kv.hint_limits.max_bytes as f64);
    metrics::gauge!("ringkv_hint_age_max_seconds").set(kv.hint_limits.max_age_ms as f64 / 1000.0);
    metrics::counter!("ringkv_hints_dropped_total").absolute(kv.hints_dropped.load(Relaxed));
    metrics::counter!("ringkv_hints_replayed_total").absolute(kv.hints_replayed.load(Relaxed));
}

/// Range handoff and anti-entropy.
fn record_handoff(h: &HandoffReply) {
    metrics::counter!("ringkv_handoff_keys_moved_total").absolute(h.keys_moved);
    metrics::counter!("ringkv_handoff_bytes_moved_total").absolute(h.bytes_moved);
    metrics::counter!("ringkv_handoff_ranges_completed_total").absolute(h.ranges_completed);
    metrics::gauge!("ringkv_handoff_transfers_active").set(h.transfers.len() as f64);
    metrics::gauge!("ringkv_handoff_pending_ranges").set(h.pending_ranges as f64);
    metrics::gauge!("ringkv_handoff_ready").set(if h.ring.is_some() && h.ring == h.ready {
        1.0
    } else {
        0.0
    });
    metrics::counter!("ringkv_anti_entropy_repairs_total").absolute(h.repairs);
    metrics::counter!("ringkv_handoff_records_dropped_total").absolute(h.records_dropped);
}

/// The testbed's fault injection: datagrams dropped and delayed.
fn record_faults(f: &FaultStats) {
    use std::sync::atomic::Ordering::Relaxed;
    for (reason, direction, n) in [
        ("partition", "out", &f.partition_out),
        ("partition", "in", &f.partition_in),
        ("loss", "out", &f.loss_out),
        ("loss", "in", &f.loss_in),
        ("delay_failed", "out", &f.delay_failed),
    ] {
        metrics::counter!("ringkv_fault_datagrams_dropped_total", "reason" => reason, "direction" => direction)
            .absolute(n.load(Relaxed));
    }
    metrics::counter!("ringkv_fault_datagrams_delayed_total").absolute(f.delayed.load(Relaxed));
}

/// The keys this peer coordinates most requests for: by rank only, unless
/// `key_names` (`--metrics-key-names`): key names are user data, and
/// metrics travel to dashboards and third parties.
fn record_hot(kv: &crate::shared::Kv, key_names: bool) {
    for (rank, hot) in kv.hot_keys(10).into_iter().enumerate() {
        let rank = (rank + 1).to_string();
        if key_names {
            let key: String = hot.key.chars().take(64).collect();
            metrics::gauge!("ringkv_hot_key_requests", "rank" => rank, "key" => key)
                .set(hot.requests as f64);
        } else {
            metrics::gauge!("ringkv_hot_key_requests", "rank" => rank).set(hot.requests as f64);
        }
    }
}

/// The ring's size and digest.
fn record_ring(r: &Ring) {
    metrics::gauge!("ringkv_ring_nodes").set(r.nodes().len() as f64);
    // The digest as a label of an info metric, and its first 48 bits
    // as a number that dashboards can compare across peers.
    let digest = r.digest();
    let head = u64::from_be_bytes([
        0,
        0,
        digest.0[0],
        digest.0[1],
        digest.0[2],
        digest.0[3],
        digest.0[4],
        digest.0[5],
    ]);
    metrics::gauge!("ringkv_ring_digest").set(head as f64);
}
