//! The outbound HTTP client and what every caller of it needs from an answer: deliveries
//! (`deliver/`), the OAuth token endpoint (`auth/`) and `send`. A leaf: it knows reqwest,
//! not destinations, so `deliver` and `auth` both stand on it rather than on each other.

use std::time::Duration;

/// How much of a response body is read at most (the rest is discarded unread).
const MAX_RESPONSE_READ: usize = 64 * 1024;
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

/// Describes a transport error without the URL (which may hold a secret token).
pub fn describe_error(e: &reqwest::Error) -> String {
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

/// The body of `response`, up to 64 KiB and lossily decoded (`None` when empty); the rest
/// is left unread, so a huge answer costs no memory.
pub async fn read_body(mut response: reqwest::Response) -> Option<String> {
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
    buf.truncate(MAX_RESPONSE_READ);
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// `body` with every one of `secrets` replaced by `<secret>`, so a dead letter's stored
/// response snippet never holds our credentials.
pub fn mask(body: String, secrets: &[String]) -> String {
    secrets.iter().fold(body, |b, s| {
        if b.contains(s.as_str()) {
            b.replace(s.as_str(), "<secret>")
        } else {
            b
        }
    })
}
