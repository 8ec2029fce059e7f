//! The floor of forwarding in this architecture, for the benchmark notes: a bare hyper
//! server that, for every POST, reads the body, answers `200`, and sends the body on to two
//! receivers with reqwest (spawned, as hookrouter's workers do) — no verification, no
//! routing, no journal, no retry queue, no log line. What it costs per request is what any
//! daemon built on hyper and reqwest pays here before doing any of its own work.
//!
//! ```text
//! cargo run --release --example forward_floor -- 127.0.0.1:9200 http://127.0.0.1:9101/a http://127.0.0.1:9102/b
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

async fn answer(
    client: reqwest::Client,
    targets: std::sync::Arc<Vec<String>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    for url in targets.iter() {
        let send = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send();
        tokio::spawn(async move {
            let _ = send.await;
        });
    }
    Ok(Response::new(Full::new(Bytes::new())))
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9200".into())
        .parse()
        .map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("address: {e}"))
        })?;
    let targets = std::sync::Arc::new(args.collect::<Vec<String>>());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let listener = TcpListener::bind(addr).await?;
        println!("listening {}", listener.local_addr()?);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (client, targets) = (client.clone(), targets.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(client.clone(), targets.clone(), req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
