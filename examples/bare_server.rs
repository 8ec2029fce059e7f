//! The benchmark's reference server and receiver: a bare hyper HTTP/1 server that answers
//! every request `200` with an empty body and does nothing else.
//!
//! It plays two parts in `bench/run.sh`: the "bare hyper server" whose rate hookrouter's
//! durable ingest is compared with, and the receiver deliveries go to (it counts them;
//! `GET /__count` answers the number of POSTs seen so far, so the bench can tell when every
//! job has been delivered).
//!
//! ```text
//! cargo run --release --example bare_server -- 127.0.0.1:9100
//! ```
//! It prints `listening <addr>` on stdout once bound (port 0 picks a free port).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Answers 200; counts POSTs (after reading their body, as a real receiver would).
async fn answer(
    seen: Arc<AtomicU64>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::GET && req.uri().path() == "/__count" {
        let n = seen.load(Ordering::Relaxed);
        return Ok(Response::new(Full::new(Bytes::from(n.to_string()))));
    }
    let is_post = req.method() == Method::POST;
    // Read the body so the comparison with hookrouter (which must read it) is fair.
    let _ = req.into_body().collect().await;
    if is_post {
        seen.fetch_add(1, Ordering::Relaxed);
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9100".into())
        .parse()
        .map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("address: {e}"))
        })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        println!("listening {}", listener.local_addr()?);
        let seen = Arc::new(AtomicU64::new(0));
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(seen.clone(), req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
