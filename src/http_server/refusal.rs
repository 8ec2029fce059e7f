//! JSON bodies for the answers hyper writes by itself.
//!
//! When a request head cannot be parsed, hyper answers before any service sees a request:
//! `400` (bad method, header, URI or version), `431` (a head larger than the limit) or
//! `414` (a URI too long), with `content-length: 0` and no way to choose the body. Every
//! other answer of ours is a JSON object with a reason, so [`JsonRefusals`] sits between
//! hyper and the socket and, when hyper writes exactly such a head (one of those statuses,
//! `content-length: 0`, no `content-type`: no response of ours looks like that), writes the
//! same head with a JSON body instead. hyper closes the connection after it either way.
//!
//! Where hyper sends nothing at all, there is nothing to give a body to: a head that does
//! not arrive within `header_read_timeout`, a connection closed mid-head, and an HTTP/2
//! preface on the HTTP/1 listener are closed without an answer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The error codes and messages of hyper's own refusals, by status line.
const REFUSALS: [(&[u8], &str, &str); 3] = [
    (
        b"HTTP/1.1 400 Bad Request\r\n",
        "bad_request",
        "the request is not valid HTTP/1.1 (method, URI, version or a header could not be parsed)",
    ),
    (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        "headers_too_large",
        "the request head (request line and headers) is larger than 64 KiB",
    ),
    (
        b"HTTP/1.1 414 URI Too Long\r\n",
        "uri_too_long",
        "the request URI is too long",
    ),
];

/// The JSON version of `head` if it is one of hyper's body-less refusals.
#[cfg(test)]
fn with_json_body(head: &[u8]) -> Option<Vec<u8>> {
    refusal_of(head).map(|(bytes, _, _)| bytes)
}

/// The JSON version of `head`, with the refusal's code and message, if it is one of
/// hyper's body-less refusals.
fn refusal_of(head: &[u8]) -> Option<(Vec<u8>, &'static str, &'static str)> {
    let (status_line, code, message) = REFUSALS
        .iter()
        .find(|(line, _, _)| head.starts_with(line))?;
    let text = std::str::from_utf8(head).ok()?;
    if !text.ends_with("\r\n\r\n") {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    if !lower.contains("\r\ncontent-length: 0\r\n") || lower.contains("\r\ncontent-type:") {
        return None;
    }
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut out = Vec::with_capacity(head.len() + body.len() + 64);
    out.extend_from_slice(status_line);
    for line in text[status_line.len()..text.len() - 4].split("\r\n") {
        if !line.to_ascii_lowercase().starts_with("content-length:") {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"content-type: application/json\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body.as_bytes());
    Some((out, code, message))
}

/// A connection whose body-less parse-error answers from hyper get a JSON body (see the
/// module doc). Reads pass through untouched.
pub struct JsonRefusals<T> {
    inner: T,
    /// The listener (`ingress`, `admin`) and the peer, for the refusal's log line.
    listener: &'static str,
    peer: std::net::SocketAddr,
    /// A replacement being written: the bytes and how many are out, and the length of the
    /// buffer hyper gave (reported written once the replacement is).
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl<T> JsonRefusals<T> {
    /// Wraps `inner`, the connection from `peer` to `listener`.
    pub fn new(inner: T, listener: &'static str, peer: std::net::SocketAddr) -> Self {
        JsonRefusals {
            inner,
            listener,
            peer,
            replacing: None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonRefusals<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonRefusals<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none() {
            match refusal_of(buf) {
                Some((bytes, code, message)) => {
                    let status: u16 = std::str::from_utf8(&buf[9..12])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    tracing::warn!(
                        listener = this.listener,
                        code,
                        status,
                        peer = %this.peer,
                        outcome = "rejected",
                        "request refused: {message}"
                    );
                    this.replacing = Some((bytes, 0, buf.len()));
                }
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        let Some((bytes, written, given)) = this.replacing.as_mut() else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        while *written < bytes.len() {
            match Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let given = *given;
        this.replacing = None;
        Poll::Ready(Ok(given))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then writes a response head in one contiguous buffer, where a
    // refusal can be recognised whole.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodyless_refusals_are_rewritten() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(with_json_body(head).unwrap()).unwrap();
        let (head_part, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head_part.starts_with("HTTP/1.1 431 "), "{out}");
        assert!(head_part.contains("\r\ndate: Tue"), "{out}");
        assert!(
            head_part.contains("content-type: application/json"),
            "{out}"
        );
        assert!(
            head_part.contains(&format!("content-length: {}", body.len())),
            "{out}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "headers_too_large");
        // Our own answers are left alone.
        for ours in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 20\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
        ] {
            assert!(with_json_body(ours).is_none(), "{:?}", String::from_utf8_lossy(ours));
        }
    }
}
