//! The admin API: a second listener (`server.admin_listen`, loopback by default) where an
//! operator sees the queue and the dead letters, replays or drops them, reads an event's
//! history, reloads the config and scrapes metrics. The CLI ([`client`]) speaks to it.
//!
//! It is separate from the webhook listener so that it is never reachable where webhooks
//! are (a reverse proxy forwards only the webhook port), and it can be guarded by a bearer
//! token (`server.admin_token`). Every answer is JSON, errors as
//! `{"error": code, "message": sentence}` like ingress, except `/metrics` (Prometheus text)
//! and the status page ([`page`]) at `/`, which a browser opens.
//!
//! Any request that changes state and comes from another site's page in a browser is
//! refused first ([`origin`]), whatever the path, and so is one that does not say
//! `Content-Type: application/json` (but the page's login and logout forms).

pub mod cli;
mod cli_render;
pub mod client;
mod dead_letters;
mod error;
pub mod handlers;
pub mod history;
mod history_cli;
pub mod lookup;
pub mod origin;
pub mod overview;
pub mod page;
pub mod page_api;
pub mod session;
pub mod table;
pub mod views;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::deliver::Dispatcher;
use crate::health::HealthBoard;
use crate::http_server::response::{error, JsonResponse};
use crate::http_server::{serve_http1, ListenerSettings};
use crate::metrics::Metrics;
use crate::queue::Store;
use crate::{Reloader, SharedConfig};

/// Admin connections open at once; more wait in the accept queue (operators and one
/// Prometheus do not need more).
const MAX_CONNECTIONS: usize = 32;
/// Time allowed to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin handlers need.
pub struct AdminState {
    /// The store they read and change.
    pub store: Store,
    /// The config in force (token, destinations).
    pub config: SharedConfig,
    /// Woken when a dead letter is retried.
    pub dispatcher: Dispatcher,
    /// Rendered at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Destination health: shown by `status`, changed by hold and release.
    pub health: HealthBoard,
    /// Runs `POST /reload`.
    pub reloader: Reloader,
    /// Mindstamp ids of accepted events, for the page's event lookup.
    pub recent_ids: Arc<crate::ingress::recent::RecentIds>,
    /// Replay operations: started, listed and cancelled through the API.
    pub replays: crate::replay::Replays,
}

/// Does the request carry the configured bearer token (or is none configured)?
fn authorized(state: &AdminState, req: &Request<Incoming>) -> bool {
    let config = state.config.load();
    let Some(token) = &config.server.admin_token else {
        return true;
    };
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    token.matches(presented.as_bytes())
}

async fn handle(state: Arc<AdminState>, req: Request<Incoming>) -> JsonResponse {
    if let Err(e) = origin::check(req.method(), req.headers()) {
        tracing::warn!(method = %req.method(), path = req.uri().path(), reason = %e, "cross-site admin request refused");
        return error(StatusCode::FORBIDDEN, "cross_site", e.to_string());
    }
    if let Err(e) = origin::check_content_type(req.method(), req.uri().path(), req.headers()) {
        tracing::warn!(method = %req.method(), path = req.uri().path(), reason = %e, "admin request without a JSON content type refused");
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            e.to_string(),
        );
    }
    if page::serves(req.uri().path()) {
        return page::handle(&state, req).await;
    }
    // Health stays open so a load balancer or systemd probe needs no token.
    if req.uri().path() != "/healthz" && !authorized(&state, &req) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the admin API needs the bearer token from server.admin_token",
        );
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    handlers::route(&state, req).await
}

/// Serves the admin API on `listener` until `shutdown`, then gives open connections a
/// moment to finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(state, req).await) }
    });
    let settings = ListenerSettings {
        header_read_timeout: HEADER_READ_TIMEOUT,
        max_connections: MAX_CONNECTIONS,
        shutdown_grace: Duration::from_secs(2),
    };
    serve_http1("admin", listener, service, settings, shutdown, tasks).await;
}
