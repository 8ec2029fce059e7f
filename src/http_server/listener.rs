//! The accept loop both HTTP listeners share (webhooks and the admin API).
//!
//! hyper's HTTP/1 builder gets a timer, without which its header-read timeout does nothing
//! and a client that connects and sends nothing holds a connection forever. Every
//! connection is accepted at once: one still waiting for its request head holds no slot of
//! `max_connections` (a request takes one from its head to its answer), and waiting
//! connections are bounded per peer (beyond its share a new one is parked, unread, until
//! its turn) and in all ([`super::admission`]), so slow or silent clients cannot make real
//! webhooks queue behind them, nor flood the accept queue by reconnecting. Every connection
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
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admission::{Admission, Admit, Connection, Limits};

/// Largest header block accepted (hyper answers 431 beyond it).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Connections waiting for a head, per `max_connections`: in all, and from one address.
const WAITING_PER_SLOT: usize = 4;
const WAITING_PER_PEER_PER_SLOT: usize = 1;
/// Connections parked (held unread until their peer's turn), per `max_connections`: in
/// all, and for one address.
const PARKED_PER_SLOT: usize = 4;
const PARKED_PER_PEER_PER_SLOT: usize = 4;

/// Limits of one listener, read from the config at start.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// Time allowed to send the request head.
    pub header_read_timeout: Duration,
    /// Cap on requests in progress (head received, answer not ready yet); connections
    /// waiting for a head may be up to four times as many (one time as many from one
    /// address, beyond which new ones are parked, up to four times as many), the oldest
    /// closed beyond that.
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
    let admission = Admission::new(limits(settings.max_connections));
    let mut flood_log = FloodLog::new(name);
    while let Some((stream, peer)) = next_connection(&listener, name, &shutdown).await {
        flood_log.note(&admission);
        let _ = stream.set_nodelay(true);
        let accepted = Accepted {
            name,
            stream,
            peer,
            service: service.clone(),
            slots: admission.request_slots(),
            header_read_timeout: settings.header_read_timeout,
            graceful: graceful.watcher(),
        };
        match admission.admit(peer.ip()) {
            Admit::Now(connection) => {
                tasks.spawn(accepted.serve(connection));
            }
            Admit::Parked(mut parked) => {
                let shutdown = shutdown.clone();
                // Parked for as long as a head may take; then closed unread.
                let patience = settings.header_read_timeout;
                tasks.spawn(async move {
                    let promoted = tokio::select! {
                        promoted = parked.promoted() => promoted,
                        () = tokio::time::sleep(patience) => None,
                        () = shutdown.cancelled() => None,
                    };
                    drop(parked);
                    if let Some(connection) = promoted {
                        accepted.serve(connection).await;
                    }
                });
            }
        }
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

/// The admission limits that follow from `max_connections`.
fn limits(max_connections: usize) -> Limits {
    let slots = max_connections.max(1);
    Limits {
        requests: slots,
        per_peer: slots.saturating_mul(WAITING_PER_PEER_PER_SLOT),
        total: slots.saturating_mul(WAITING_PER_SLOT),
        parked_per_peer: slots.saturating_mul(PARKED_PER_PEER_PER_SLOT),
        parked_total: slots.saturating_mul(PARKED_PER_SLOT),
    }
}

/// How often at most the listener warns that connections are being parked or closed.
const FLOOD_WARN_EVERY: Duration = Duration::from_secs(60);

/// Connections parked and closed to make room since the last warning, for one warning a
/// minute at most (a flood must not flood the log too).
struct FloodLog {
    name: &'static str,
    parked: u64,
    closed: u64,
    last_warned: Option<tokio::time::Instant>,
}

impl FloodLog {
    fn new(name: &'static str) -> FloodLog {
        FloodLog {
            name,
            parked: 0,
            closed: 0,
            last_warned: None,
        }
    }

    /// Takes the counts since the last accept; logs each change at debug, and warns once a
    /// minute at most while connections are parked or closed, naming the busiest peer.
    fn note(&mut self, admission: &Admission) {
        let (closed, parked) = admission.take_counts();
        if closed == 0 && parked == 0 {
            return;
        }
        let (waiting, parked_now) = admission.waiting();
        tracing::debug!(
            listener = self.name,
            closed,
            parked,
            waiting,
            parked_now,
            "connections waiting for a request head: some closed to make room or parked"
        );
        self.closed += closed;
        self.parked += parked;
        let now = tokio::time::Instant::now();
        if self
            .last_warned
            .is_some_and(|at| now.duration_since(at) < FLOOD_WARN_EVERY)
        {
            return;
        }
        let (peer, of_peer, parked_of_peer) = admission
            .busiest_peer()
            .map_or((String::from("-"), 0, 0), |(p, w, k)| (p.to_string(), w, k));
        tracing::warn!(
            listener = self.name,
            parked = self.parked,
            closed = self.closed,
            waiting,
            parked_now,
            busiest_peer = %peer,
            busiest_waiting = of_peer,
            busiest_parked = parked_of_peer,
            "more connections wait for a request head than an address's share (a slow or idle flood?): new ones are parked until their turn, the longest waiting closed beyond the bounds; counts since the last such line"
        );
        self.last_warned = Some(now);
        self.parked = 0;
        self.closed = 0;
    }
}

/// An accepted connection and what serving it needs.
struct Accepted<S> {
    name: &'static str,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    service: S,
    slots: Arc<Semaphore>,
    header_read_timeout: Duration,
    graceful: Watcher,
}

impl<S, B> Accepted<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Serves HTTP/1 on the connection until it ends or is closed to make room.
    async fn serve(self, connection: Arc<Connection>) {
        let Accepted {
            name,
            stream,
            peer,
            service,
            slots,
            header_read_timeout,
            graceful,
        } = self;
        let admitted = Admitted {
            service,
            connection: connection.clone(),
            slots,
            peer,
        };
        let served = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
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
        tokio::select! {
            result = served => {
                if let Err(e) = result {
                    tracing::debug!(listener = name, error = %e, "connection ended with an error");
                }
            }
            // Dropping the connection closes it.
            () = connection.evicted() => {}
        }
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
