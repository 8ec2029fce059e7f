//! The accept loop both HTTP listeners share (webhooks and the admin API).
//!
//! hyper's HTTP/1 builder gets a timer, without which its header-read timeout does nothing
//! and a client that connects and sends nothing holds a connection forever; a semaphore caps
//! open connections (beyond it, new ones wait in the kernel's accept queue); every
//! connection runs on the daemon's task tracker, so shutdown can wait for the last one that
//! holds the store; and at shutdown open connections get a grace period to finish. hyper's
//! own parse-error answers get a JSON body on the way out ([`super::refusal`]).

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest header block accepted (hyper answers 431 beyond it).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Limits of one listener, read from the config at start.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// Time allowed to send the request head.
    pub header_read_timeout: Duration,
    /// Cap on open connections.
    pub max_connections: usize,
    /// Time given to open connections to finish at shutdown.
    pub shutdown_grace: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `service` with `peer` put into every request's extensions.
fn with_peer<S, B>(
    service: S,
    peer: std::net::SocketAddr,
) -> impl Service<Request<Incoming>, Response = Response<B>, Error = S::Error, Future = S::Future>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body,
{
    hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(super::peer::Peer(peer));
        service.call(req)
    })
}

/// Serves `service` on every connection accepted from `listener` until `shutdown` is
/// cancelled, then lets open connections finish for up to the grace period. `name` labels
/// the log lines ("ingress", "admin"). Every request carries the connection's remote
/// address as a [`Peer`] extension.
pub async fn serve_http1<S, B>(
    name: &'static str,
    listener: TcpListener,
    service: S,
    settings: ListenerSettings,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(listener = name, error = %e, "accept failed");
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
                TokioIo::new(super::refusal::JsonRefusals::new(stream, name, peer)),
                with_peer(service.clone(), peer),
            );
        let connection = graceful.watch(connection);
        tasks.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(listener = name, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(settings.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "connections still open at the end of the grace period were closed"
        );
    }
}
