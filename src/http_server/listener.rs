//! The accept loop both HTTP listeners share (webhooks and the admin API).
//!
//! hyper's HTTP/1 builder gets a timer, without which its header-read timeout does nothing
//! and a client that connects and sends nothing holds a connection forever. Every
//! connection is accepted at once: one still waiting for its request head holds no slot of
//! `max_connections` (a request takes one from its head to its answer), and waiting
//! connections are bounded per peer and in all by closing the oldest ([`super::admission`]),
//! so slow or silent clients cannot make real webhooks queue behind them. Every connection
//! runs on the daemon's task tracker, so shutdown can wait for the last one that holds the
//! store; and at shutdown open connections get a grace period to finish. hyper's own
//! parse-error answers get a JSON body on the way out ([`super::refusal`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::{HttpService, Service};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admission::{Admission, Connection};

/// Largest header block accepted (hyper answers 431 beyond it).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Connections waiting for a head, per `max_connections`: in all, and from one address.
const WAITING_PER_SLOT: usize = 4;
const WAITING_PER_PEER_PER_SLOT: usize = 1;

/// Limits of one listener, read from the config at start.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// Time allowed to send the request head.
    pub header_read_timeout: Duration,
    /// Cap on requests in progress (head received, answer not ready yet); connections
    /// waiting for a head may be up to four times as many (one time as many from one
    /// address), the oldest closed beyond that.
    pub max_connections: usize,
    /// Time given to open connections to finish at shutdown.
    pub shutdown_grace: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `service` behind [`Admission`]: a request waits for a slot before it is handled (with
/// its peer address put into its extensions), and the connection counts as waiting for a
/// head again once the answer is ready.
struct Admitted<S> {
    service: S,
    connection: Arc<Connection>,
    slots: Arc<Semaphore>,
    /// The remote address, put into every request's extensions as a [`super::peer::Peer`].
    peer: std::net::SocketAddr,
}

/// Puts the connection back among those waiting for a head when the request is done
/// (answered, or dropped with the connection).
struct WaitAgain(Arc<Connection>);

impl Drop for WaitAgain {
    fn drop(&mut self) {
        self.0.start_waiting();
    }
}

impl<S> hyper::service::Service<Request<Incoming>> for Admitted<S>
where
    S: HttpService<Incoming> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<S::ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        self.connection.head_arrived();
        req.extensions_mut().insert(super::peer::Peer(self.peer));
        let again = WaitAgain(self.connection.clone());
        let slots = self.slots.clone();
        let mut service = self.service.clone();
        Box::pin(async move {
            // The semaphore is never closed; without a permit the request still goes on.
            let _slot = slots.acquire_owned().await.ok();
            let response = HttpService::call(&mut service, req).await;
            drop(again);
            response
        })
    }
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
    let slots = settings.max_connections.max(1);
    let admission = Admission::new(
        slots,
        slots.saturating_mul(WAITING_PER_PEER_PER_SLOT),
        slots.saturating_mul(WAITING_PER_SLOT),
    );
    while let Some((stream, peer)) = next_connection(&listener, name, &shutdown).await {
        let closed = admission.take_closed();
        if closed > 0 {
            tracing::debug!(
                listener = name,
                closed,
                waiting = admission.waiting(),
                "closed the connections waiting longest for a request head to make room"
            );
        }
        let _ = stream.set_nodelay(true);
        let connection = admission.connection(peer.ip());
        let admitted = Admitted {
            service: service.clone(),
            connection: connection.clone(),
            slots: admission.request_slots(),
            peer,
        };
        let served = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            // `max_buf_size` alone is not a header limit: hyper checks it only between reads,
            // and one read can take the buffer well past it (a 100 KiB head got through).
            // `max_header_size` checks the parsed head itself.
            .max_buf_size(MAX_HEADER_BYTES)
            .max_header_size(MAX_HEADER_BYTES)
            .serve_connection(
                TokioIo::new(super::refusal::JsonRefusals::new(stream, name, peer)),
                admitted,
            );
        let served = graceful.watch(served);
        tasks.spawn(async move {
            tokio::select! {
                result = served => {
                    if let Err(e) = result {
                        tracing::debug!(listener = name, error = %e, "connection ended with an error");
                    }
                }
                // Dropping the connection closes it.
                () = connection.evicted() => {}
            }
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

/// The next accepted connection, or `None` once `shutdown` is cancelled. A failed accept
/// (usually EMFILE) is logged and retried after a short pause instead of spinning.
async fn next_connection(
    listener: &TcpListener,
    name: &'static str,
    shutdown: &CancellationToken,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => return Some(accepted),
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}
