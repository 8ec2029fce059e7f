//! A recording HTTP receiver on 127.0.0.1 that answers from a script: the downstream end
//! of every delivery test.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) at: Instant,
}

impl Recorded {
    /// A header's value as text ("" when absent).
    pub(crate) fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
    pub(crate) delay: Duration,
}

impl Reply {
    /// A bare status with body "ok".
    pub(crate) fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: "ok".into(),
            delay: Duration::ZERO,
        }
    }

    /// Adds a response header.
    pub(crate) fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the response body.
    pub(crate) fn body(mut self, body: &str) -> Reply {
        self.body = body.into();
        self
    }

    /// Waits this long before answering.
    pub(crate) fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

struct ReceiverState {
    requests: Vec<Recorded>,
    script: VecDeque<Reply>,
    default: Reply,
}

/// An HTTP receiver on 127.0.0.1 that records every request and answers from a script
/// (then with the default reply).
pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
    stop: CancellationToken,
}

impl Receiver {
    /// Starts a receiver on an ephemeral port that answers 200.
    pub(crate) async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        Receiver::serve(listener)
    }

    /// Starts a receiver on a given port (to bring a "down" destination back up).
    pub(crate) async fn start_on(addr: SocketAddr) -> Receiver {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match TcpListener::bind(addr).await {
                Ok(l) => return Receiver::serve(l),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        }
    }

    fn serve(listener: TcpListener) -> Receiver {
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(ReceiverState {
            requests: Vec::new(),
            script: VecDeque::new(),
            default: Reply::status(200),
        }));
        let stop = CancellationToken::new();
        let (st, token) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((s, _)) => s,
                        Err(_) => continue,
                    },
                };
                let st = st.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(st.clone(), req));
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = token.cancelled() => {}
                    }
                });
            }
        });
        Receiver { addr, state, stop }
    }

    /// The URL of `path` on this receiver.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Queues replies for the next requests.
    pub(crate) fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    /// Sets the reply used once the script is exhausted.
    pub(crate) fn set_default(&self, reply: Reply) {
        self.state.lock().unwrap().default = reply;
    }

    /// Every request so far.
    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Waits until at least `n` requests arrived; panics after `timeout`.
    pub(crate) async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "receiver {} got {} requests, expected {n} within {timeout:?}",
                self.addr,
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops listening (the port becomes free; connections are dropped), without dropping
    /// the receiver and what it recorded: a destination going down mid-test.
    #[allow(dead_code)] // harness API, for tests to come (dropping does the same)
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn answer(
    state: Arc<Mutex<ReceiverState>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let reply = {
        let mut s = state.lock().unwrap();
        s.requests.push(Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            headers: parts.headers.clone(),
            body,
            at: Instant::now(),
        });
        let next = s.script.pop_front();
        next.unwrap_or_else(|| s.default.clone())
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = StatusCode::from_u16(reply.status).expect("valid status");
    for (k, v) in reply.headers {
        response.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            http::HeaderValue::from_str(&v).expect("header value"),
        );
    }
    Ok(response)
}

/// A loopback port for a destination that is down: bound but never listening, so a
/// delivery to it is refused at once, and held, so no daemon or receiver that asks for port
/// 0 anywhere in the test binary is given it meanwhile (a free port merely looked up could
/// be, and the "down" destination would answer). [`DownPort::release`] frees it for
/// [`Receiver::start_on`], to bring the destination up.
pub(crate) struct DownPort {
    /// The reserved address.
    pub(crate) addr: SocketAddr,
    socket: tokio::net::TcpSocket,
}

impl DownPort {
    /// Reserves a free loopback port.
    pub(crate) fn reserve() -> DownPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind a loopback port");
        let addr = socket.local_addr().expect("local addr");
        DownPort { addr, socket }
    }

    /// Frees the port and returns its address.
    pub(crate) fn release(self) -> SocketAddr {
        drop(self.socket);
        self.addr
    }
}

impl std::fmt::Display for DownPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}
