//! One HTTP attempt of one job, and the classification of its result.
//!
//! Outcomes are data: [`Outcome`] is decided here and only here ([`Classifier::classify`]),
//! and the worker turns it into a store update with the pure retry policy.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::StatusCode;

use super::format::{render_request, DeliveryIds};
use crate::destination::Destination;
pub use crate::destination::{Classifier, StatusSet};
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
        /// The receiver's `Retry-After` (on 429 and 503): the whole destination waits.
        retry_after: Option<Duration>,
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

/// The parts of a response that classification looks at.
#[derive(Debug, Clone, Default)]
pub struct ResponseSummary {
    /// `Location`, for the dead letter of a redirect.
    pub location: Option<String>,
    /// `Retry-After`, as sent.
    pub retry_after: Option<String>,
    /// The body, up to 64 KiB, lossily decoded.
    pub body: Option<String>,
}

impl Classifier {
    /// The classification rule, in order: 2xx is delivered; a redirect is permanent (never
    /// followed); a body matching `permanent_if_body`, then `retry_if_body`, decides; then
    /// `retry_on` decides by status. A retried 429 or 503 carries its `Retry-After`, read
    /// against `now`.
    pub fn classify(
        &self,
        status: StatusCode,
        response: ResponseSummary,
        now: SystemTime,
    ) -> Outcome {
        let code = status.as_u16();
        if status.is_success() || self.success_on.as_ref().is_some_and(|s| s.contains(code)) {
            return Outcome::Delivered { status: code };
        }
        let body = response.body.as_deref().unwrap_or("");
        let snippet = response.body.as_deref().map(snippet_of);
        if status.is_redirection() {
            let error = match response.location {
                Some(loc) => format!("HTTP {status}: redirect to {loc} not followed"),
                None => format!("HTTP {status}: redirect not followed"),
            };
            return permanent(code, error, snippet);
        }
        if self
            .permanent_if_body
            .as_ref()
            .is_some_and(|r| r.is_match(body))
        {
            return permanent(
                code,
                format!("HTTP {status}: body matches permanent_if_body"),
                snippet,
            );
        }
        let by_body = self
            .retry_if_body
            .as_ref()
            .is_some_and(|r| r.is_match(body));
        if !by_body && !self.retry_on.contains(code) {
            return permanent(code, format!("HTTP {status}"), snippet);
        }
        let retry_after = match code {
            429 | 503 => response
                .retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, now)),
            _ => None,
        };
        Outcome::Retry {
            status: Some(code),
            error: if by_body {
                format!("HTTP {status}: body matches retry_if_body")
            } else {
                format!("HTTP {status}")
            },
            snippet,
            retry_after,
        }
    }
}

fn permanent(code: u16, error: String, snippet: Option<String>) -> Outcome {
    Outcome::Permanent {
        status: Some(code),
        error,
        snippet,
    }
}

fn snippet_of(body: &str) -> String {
    let mut end = body.len().min(SNIPPET_BYTES);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body[..end].to_string()
}

/// `Retry-After` as delay-seconds or an HTTP date; a date in the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
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

/// Renders `job` for `dest` (the same [`render_request`] that `route --render` shows) and
/// sends it once (with an OAuth2 token from `auth`, refreshed and sent again once after a
/// 401); returns the outcome and how long it took. A render failure is permanent: the same
/// template will fail the same way on every retry.
pub async fn attempt(
    client: &reqwest::Client,
    auth: &crate::auth::Authorizer,
    dest: &Destination,
    job: &JobRecord,
    body: Bytes,
) -> super::authorized::Attempted {
    let started = Instant::now();
    let payload = if dest.uses_templates() {
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)
    } else {
        serde_json::Value::Null
    };
    let ids = DeliveryIds::now(job.event_id, job.id);
    let rendered = match render_request(dest, job.kind, &body, &payload, &ids) {
        Ok(r) => r,
        Err(e) => {
            let outcome = Outcome::Permanent {
                status: None,
                error: e.to_string(),
                snippet: None,
            };
            return super::authorized::Attempted {
                outcome,
                latency: started.elapsed(),
                refused: None,
            };
        }
    };
    let (outcome, refused) = super::authorized::send(client, auth, dest, rendered).await;
    super::authorized::Attempted {
        outcome,
        latency: started.elapsed(),
        refused,
    }
}

/// Describes a transport error without the URL (which may hold a secret token).
pub(crate) fn describe_error(e: &reqwest::Error) -> String {
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

pub(crate) async fn read_body(mut response: reqwest::Response) -> Option<String> {
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

/// Secret text shorter than this is not masked in response bodies (it would garble them,
/// and so short a value is no secret).
const MIN_MASKED_LEN: usize = 4;

/// What we sent that is secret and a receiver might echo back (some echo the whole request
/// in an error page): the value of each sensitive header and each word after its first (the
/// token of `Bearer <token>`), the URL's password, and the path and query of a URL from `${VAR}`.
pub(crate) fn secrets_sent(r: &super::format::RenderedRequest) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for value in r.headers.values().filter(|v| v.is_sensitive()) {
        let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
        // `Bearer <token>`: the token alone too, not the scheme.
        out.extend(text.split_whitespace().skip(1).map(str::to_string));
        out.push(text);
    }
    if let Some(password) = r.url.password() {
        out.push(password.to_string());
    }
    if r.url_is_secret {
        out.push(r.url.path().to_string());
        out.extend(r.url.query().map(str::to_string));
    }
    out.retain(|s| s.len() >= MIN_MASKED_LEN);
    // Longest first, so a header value is masked whole before its words.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// `body` with every one of `secrets` replaced by `<secret>`, so a dead letter's stored
/// response snippet never holds our credentials.
pub(crate) fn mask(body: String, secrets: &[String]) -> String {
    secrets.iter().fold(body, |b, s| {
        if b.contains(s.as_str()) {
            b.replace(s.as_str(), "<secret>")
        } else {
            b
        }
    })
}

pub(crate) async fn classify_response(
    classifier: &Classifier,
    response: reqwest::Response,
    secrets: &[String],
) -> Outcome {
    let status = response.status();
    let header = |name: http::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // A redirect's target goes into the dead letter's reason: masked like the body.
    let location = header(http::header::LOCATION).map(|l| mask(l, secrets));
    let retry_after = header(http::header::RETRY_AFTER);
    // Read (up to 64 KiB) even after a 2xx, so the connection can be reused. Masked before
    // the snippet is cut, so no part of a secret is kept at the cut either.
    let body = read_body(response).await.map(|b| mask(b, secrets));
    let summary = ResponseSummary {
        location,
        retry_after,
        body,
    };
    classifier.classify(status, summary, SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    #[test]
    fn sent_secrets_are_masked_longest_first() {
        let secrets = vec!["Bearer tok-12345".to_string(), "tok-12345".to_string()];
        assert_eq!(
            mask("echo: Bearer tok-12345 / tok-12345".into(), &secrets),
            "echo: <secret> / <secret>"
        );
        assert_eq!(mask("nothing here".into(), &secrets), "nothing here");
    }

    fn classify_with(
        c: &Classifier,
        s: u16,
        body: Option<&str>,
        retry_after: Option<&str>,
    ) -> Outcome {
        let summary = ResponseSummary {
            location: None,
            retry_after: retry_after.map(str::to_string),
            body: body.map(str::to_string),
        };
        c.classify(StatusCode::from_u16(s).unwrap(), summary, SystemTime::now())
    }

    #[test]
    fn statuses_are_classified() {
        let c = |s: u16| classify_with(&Classifier::default(), s, None, None).label();
        assert_eq!(c(200), "delivered");
        assert_eq!(c(204), "delivered");
        for s in [408, 429, 500, 502, 503, 599] {
            assert_eq!(c(s), "retry", "{s}");
        }
        for s in [301, 400, 401, 403, 404, 410, 422] {
            assert_eq!(c(s), "permanent", "{s}");
        }
        let summary = ResponseSummary {
            location: Some("https://x/y".into()),
            ..ResponseSummary::default()
        };
        let redirect =
            Classifier::default().classify(StatusCode::FOUND, summary, SystemTime::now());
        assert!(
            matches!(redirect, Outcome::Permanent { ref error, .. } if error.contains("https://x/y"))
        );
    }

    #[test]
    fn retry_on_and_body_rules_are_per_destination() {
        let mut retry_on = StatusSet::empty();
        retry_on.add("503").unwrap();
        retry_on.add("4xx").unwrap();
        let c = Classifier {
            retry_on,
            success_on: None,
            permanent_if_body: Regex::new("channel_is_archived|invalid_payload").ok(),
            retry_if_body: Regex::new("REQUEST_LIMIT_EXCEEDED").ok(),
        };
        assert_eq!(classify_with(&c, 500, None, None).label(), "permanent");
        assert_eq!(classify_with(&c, 503, None, None).label(), "retry");
        assert_eq!(classify_with(&c, 404, None, None).label(), "retry");
        // The permanent body rule wins over a retryable status.
        assert_eq!(
            classify_with(&c, 410, Some("channel_is_archived"), None).label(),
            "permanent"
        );
        assert_eq!(
            classify_with(&c, 503, Some("invalid_payload"), None).label(),
            "permanent"
        );
        let d = Classifier {
            retry_if_body: Regex::new("REQUEST_LIMIT_EXCEEDED").ok(),
            ..Classifier::default()
        };
        let o = classify_with(
            &d,
            403,
            Some(r#"[{"errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#),
            None,
        );
        assert!(
            matches!(o, Outcome::Retry { ref error, .. } if error.contains("retry_if_body")),
            "{o:?}"
        );
        assert_eq!(
            classify_with(&d, 403, Some("FORBIDDEN"), None).label(),
            "permanent"
        );
        // A 2xx is delivered whatever its body says.
        assert_eq!(
            classify_with(&c, 200, Some("invalid_payload"), None).label(),
            "delivered"
        );
        assert!(StatusSet::empty().add("6xx").is_err());
        assert!(StatusSet::empty().add("99").is_err());
    }

    #[test]
    fn retry_after_is_read_on_429_and_503_only() {
        let c = Classifier::default();
        let ra = |s: u16, v: &str| match classify_with(&c, s, None, Some(v)) {
            Outcome::Retry { retry_after, .. } => retry_after,
            other => panic!("{other:?}"),
        };
        assert_eq!(ra(429, "2"), Some(Duration::from_secs(2)));
        assert_eq!(ra(503, " 120 "), Some(Duration::from_secs(120)));
        assert_eq!(ra(500, "2"), None);
        assert_eq!(ra(429, "soon"), None);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
    }
}
