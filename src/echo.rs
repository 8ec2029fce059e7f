//! `hookrouter echo`: a receiver that prints every request and answers 200, so an operator
//! can try routes locally before pointing them at Slack or a CRM.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Formats one request the way `echo` prints it: request line, headers, then the body as
/// pretty JSON (or as text when it is not JSON).
pub fn format_request(method: &str, path: &str, headers: &http::HeaderMap, body: &[u8]) -> String {
    let mut out = format!("{method} {path}\n");
    for (name, value) in headers {
        out.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    out.push('\n');
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => out.push_str(&serde_json::to_string_pretty(&v).unwrap_or_default()),
        Err(_) => out.push_str(&String::from_utf8_lossy(body)),
    }
    out.push_str("\n\n");
    out
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = format_request(
        parts.method.as_str(),
        parts.uri.path(),
        &parts.headers,
        &body,
    );
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

/// Serves on `listen` until `shutdown` is cancelled.
pub async fn run(listen: SocketAddr, shutdown: CancellationToken) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!(
        "hookrouter echo: listening on http://{}",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
