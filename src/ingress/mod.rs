//! The webhook listener: a hyper HTTP/1 server with a tower service in front of
//! [`handler::handle`].
//!
//! Mindstamp speaks HTTP/1.1, so the HTTP/1 builder is used with a timer: without one,
//! hyper's header-read timeout does nothing, and a client that connects and sends nothing
//! would hold a connection forever. Open connections are capped by a semaphore; beyond the
//! cap, new connections wait in the kernel's accept queue.

pub mod handler;
pub mod response;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

pub use handler::IngressState;

/// Largest header block accepted (hyper answers 431 beyond it).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Settings of one listener, read from the config at start.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// Time allowed to send the request head.
    pub header_read_timeout: Duration,
    /// Cap on open connections.
    pub max_connections: usize,
    /// Time given to open connections to finish at shutdown.
    pub shutdown_grace: Duration,
}

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
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let service = ServiceBuilder::new()
        .layer(CatchPanicLayer::custom(panic_response))
        .service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handler::handle(state, req).await) }
        });
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            // `max_buf_size` alone is not a header limit: hyper checks it only between reads,
            // and one read can take the buffer well past it (a 100 KiB head got through).
            // `max_header_size` checks the parsed head itself.
            .max_buf_size(MAX_HEADER_BYTES)
            .max_header_size(MAX_HEADER_BYTES)
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(service.clone()),
            );
        let connection = graceful.watch(connection);
        tasks.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(settings.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open at the end of the grace period were closed");
    }
}
