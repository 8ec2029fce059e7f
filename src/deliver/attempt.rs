//! One HTTP attempt of one job, and the classification of its result.
//!
//! Outcomes are data: [`Outcome`] is decided here and only here, and the worker turns it
//! into a store update with the pure retry policy.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use crate::config::Destination;
use crate::queue::JobRecord;

/// How much of a response body is read at most (the rest is discarded unread).
const MAX_RESPONSE_READ: usize = 64 * 1024;
/// How much of a response body is kept in a dead letter.
pub const SNIPPET_BYTES: usize = 1024;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The destination accepted the job (any 2xx).
    Delivered {
        /// The response status.
        status: u16,
    },
    /// A transient failure: try again later.
    Retry {
        /// The response status, if one came back.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// The start of the response body.
        snippet: Option<String>,
    },
    /// A failure that retrying will not fix: dead-letter now.
    Permanent {
        /// The response status, if one came back.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// The start of the response body.
        snippet: Option<String>,
    },
}

impl Outcome {
    /// The HTTP status, if a response came back.
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Delivered { status } => Some(*status),
            Outcome::Retry { status, .. } | Outcome::Permanent { status, .. } => *status,
        }
    }

    /// `delivered`, `retry` or `permanent`, for records and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Permanent { .. } => "permanent",
        }
    }
}

/// Builds the one HTTP client all deliveries share.
///
/// Redirects are not followed (reqwest would turn a redirected POST into a body-less GET);
/// proxies from the environment are ignored, so deliveries go where the config says.
pub fn build_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("hookrouter/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
}

/// Sends `job` with `body` to `dest` once; returns the outcome and how long it took.
pub async fn attempt(
    client: &reqwest::Client,
    dest: &Destination,
    job: &JobRecord,
    body: Bytes,
) -> (Outcome, Duration) {
    let started = Instant::now();
    let mut request = client
        .post(dest.url.clone())
        .timeout(dest.timeout)
        .header(http::header::CONTENT_TYPE, "application/json");
    for (name, value) in &dest.headers {
        request = request.header(name, value);
    }
    request = request
        .header(
            "X-Hookrouter-Event",
            HeaderValue::from_static(job.kind.as_str()),
        )
        .header("X-Hookrouter-Delivery", job.id.to_string())
        .body(body);
    let outcome = match request.send().await {
        Ok(response) => classify_response(response).await,
        Err(e) => Outcome::Retry {
            status: None,
            error: describe_error(&e),
            snippet: None,
        },
    };
    (outcome, started.elapsed())
}

/// Describes a transport error without the URL (which may hold a secret token).
fn describe_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body error"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

async fn read_snippet(mut response: reqwest::Response) -> Option<String> {
    let mut buf = Vec::new();
    while buf.len() < MAX_RESPONSE_READ {
        match response.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    if buf.is_empty() {
        return None;
    }
    buf.truncate(SNIPPET_BYTES);
    Some(String::from_utf8_lossy(&buf).into_owned())
}

async fn classify_response(response: reqwest::Response) -> Outcome {
    let status = response.status();
    let location = response
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let snippet = read_snippet(response).await;
    classify(status, location, snippet)
}

/// The classification rule: 2xx delivered; 408, 429 and 5xx retried; anything else,
/// including redirects, permanent.
pub fn classify(status: StatusCode, location: Option<String>, snippet: Option<String>) -> Outcome {
    let code = status.as_u16();
    if status.is_success() {
        return Outcome::Delivered { status: code };
    }
    if code == 408 || code == 429 || status.is_server_error() {
        return Outcome::Retry {
            status: Some(code),
            error: format!("HTTP {status}"),
            snippet,
        };
    }
    let error = match (status.is_redirection(), location) {
        (true, Some(loc)) => format!("HTTP {status}: redirect to {loc} not followed"),
        (true, None) => format!("HTTP {status}: redirect not followed"),
        _ => format!("HTTP {status}"),
    };
    Outcome::Permanent {
        status: Some(code),
        error,
        snippet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let c = |s: u16| classify(StatusCode::from_u16(s).unwrap(), None, None).label();
        assert_eq!(c(200), "delivered");
        assert_eq!(c(204), "delivered");
        for s in [408, 429, 500, 502, 503, 599] {
            assert_eq!(c(s), "retry", "{s}");
        }
        for s in [301, 400, 401, 403, 404, 410, 422] {
            assert_eq!(c(s), "permanent", "{s}");
        }
        let redirect = classify(StatusCode::FOUND, Some("https://x/y".into()), None);
        assert!(
            matches!(redirect, Outcome::Permanent { ref error, .. } if error.contains("https://x/y"))
        );
    }
}
