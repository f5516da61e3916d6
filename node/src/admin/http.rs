//! How the admin HTTP is served: an accept loop that closes connections
//! past the cap at once, hyper's HTTP/1 with a header-read timeout (a
//! client that trickles its headers is cut off), and the bearer-token check
//! in front of every route but `/health`. Rejections are counted for
//! `/metrics`. IO: the listener and its connections.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::warn;

use super::settings::{AdminHttp, AdminToken};

/// Requests and connections the admin HTTP turned away, by reason.
#[derive(Debug, Default)]
pub(crate) struct Rejections {
    /// Requests without the right bearer token (401).
    pub(crate) unauthorized: AtomicU64,
    /// Connections closed because the cap was reached.
    pub(crate) connection_limit: AtomicU64,
    /// Connections closed because their headers did not arrive in time.
    pub(crate) header_timeout: AtomicU64,
}

impl Rejections {
    /// `(reason, count)` for each kind, as `/metrics` labels them.
    pub(crate) fn by_reason(&self) -> [(&'static str, u64); 3] {
        [
            ("unauthorized", self.unauthorized.load(Relaxed)),
            ("connection_limit", self.connection_limit.load(Relaxed)),
            ("header_timeout", self.header_timeout.load(Relaxed)),
        ]
    }
}

/// What the token check needs.
#[derive(Debug)]
struct Guard {
    token: Option<AdminToken>,
    rejections: Arc<Rejections>,
}

/// Puts the token check in front of `router`'s routes.
pub(crate) fn guarded(
    router: Router,
    token: Option<AdminToken>,
    rejections: Arc<Rejections>,
) -> Router {
    let guard = Arc::new(Guard { token, rejections });
    router.layer(axum::middleware::from_fn_with_state(guard, check_token))
}

/// `/health` is open (load balancers probe it); with a token configured
/// every other path needs `Authorization: Bearer <token>`.
async fn check_token(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let Some(token) = &guard.token else {
        return next.run(req).await;
    };
    if req.uri().path() == "/health" || bearer(req.headers()).is_some_and(|t| token.matches(t)) {
        return next.run(req).await;
    }
    guard.rejections.unauthorized.fetch_add(1, Relaxed);
    let body = json!({ "error": "this endpoint needs Authorization: Bearer <the token in --admin-token-file>" });
    let mut response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The token of an `Authorization: Bearer ...` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Serves `router` on `listener` until dropped; dropping it closes every
/// connection it serves too (they live in its `JoinSet`).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    http: AdminHttp,
    rejections: Arc<Rejections>,
) {
    let slots = Arc::new(Semaphore::new(http.max_connections));
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                warn!(err = %e, "admin HTTP cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            rejections.connection_limit.fetch_add(1, Relaxed);
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let rejections = rejections.clone();
        let header_timeout = http.header_timeout;
        conns.spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                if e.is_timeout() {
                    rejections.header_timeout.fetch_add(1, Relaxed);
                }
            }
            drop(slot);
        });
    }
}
