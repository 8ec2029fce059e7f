//! The webhook listener: a tower service (with a panic guard) in front of
//! [`handler::handle`], served by the shared HTTP/1 accept loop in [`crate::http_server::listener`]. Mindstamp
//! speaks HTTP/1.1, so HTTP/1 is all it serves.

pub mod body;
pub mod handler;
pub mod recent;

use std::convert::Infallible;
use std::sync::Arc;

use http::StatusCode;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use crate::http_server::{response, serve_http1, ListenerSettings};

pub use handler::IngressState;

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> response::JsonResponse {
    tracing::error!("a request handler panicked");
    response::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "hookrouter failed while handling this request; nothing was stored",
    )
}

/// Serves webhooks on `listener` until `shutdown` is cancelled, then lets open connections
/// finish for up to the grace period.
pub async fn serve(
    listener: TcpListener,
    state: Arc<IngressState>,
    settings: ListenerSettings,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let service = ServiceBuilder::new()
        .layer(CatchPanicLayer::custom(panic_response))
        .service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handler::handle(state, req).await) }
        });
    let service = TowerToHyperService::new(service);
    serve_http1("ingress", listener, service, settings, shutdown, tasks).await;
}
