//! The decision of what one attempt came to, without I/O: a response's status, headers and
//! body (already read and masked by `attempt.rs`), or a failure to get one, become an
//! [`Outcome`] here and only here. `transition.rs` then turns the outcome into a store
//! update.

use std::time::{Duration, SystemTime};

use http::StatusCode;

pub use crate::destination::{Classifier, StatusSet};
use crate::outcomes::AttemptOutcome;

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

    /// The outcome as its attempt record keeps it.
    pub fn recorded(&self) -> AttemptOutcome {
        match self {
            Outcome::Delivered { .. } => AttemptOutcome::Delivered,
            Outcome::Retry { .. } => AttemptOutcome::Retry,
            Outcome::Permanent { .. } => AttemptOutcome::Permanent,
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

/// A request that got no response (a timeout, a refused connection, a reset, no token):
/// always retried, with no status and nothing from the receiver.
pub fn no_response(error: String) -> Outcome {
    Outcome::Retry {
        status: None,
        error,
        snippet: None,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

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

    #[test]
    fn class_edges_are_exact() {
        let c = |s: u16| classify_with(&Classifier::default(), s, None, None).label();
        // The default retry_on is [408, 429, "5xx"]: the neighbours of each are permanent.
        for (s, label) in [
            (299, "delivered"),
            (300, "permanent"),
            (399, "permanent"),
            (407, "permanent"),
            (408, "retry"),
            (409, "permanent"),
            (428, "permanent"),
            (429, "retry"),
            (430, "permanent"),
            (499, "permanent"),
            (500, "retry"),
            (599, "retry"),
        ] {
            assert_eq!(c(s), label, "{s}");
        }
    }

    #[test]
    fn success_on_turns_a_status_into_delivered_and_nothing_else() {
        let mut success_on = StatusSet::empty();
        success_on.add("409").unwrap();
        let c = Classifier {
            success_on: Some(success_on),
            permanent_if_body: Regex::new("CONTACT_EXISTS").ok(),
            ..Classifier::default()
        };
        // success_on is decided before the body rules: HubSpot's 409 says why in its body.
        assert_eq!(
            classify_with(&c, 409, Some("CONTACT_EXISTS"), None),
            Outcome::Delivered { status: 409 }
        );
        assert_eq!(classify_with(&c, 410, None, None).label(), "permanent");
        assert_eq!(classify_with(&c, 503, None, None).label(), "retry");
    }

    #[test]
    fn a_request_without_a_response_is_retried_without_a_status() {
        let o = no_response("timed out".into());
        assert_eq!(o.label(), "retry");
        assert_eq!(o.status(), None);
        assert!(
            matches!(o, Outcome::Retry { ref error, snippet: None, retry_after: None, .. } if error == "timed out"),
            "{o:?}"
        );
    }

    #[test]
    fn the_snippet_is_cut_on_a_character_boundary() {
        // 1023 ASCII bytes then a 3-byte character straddling the 1024-byte cut.
        let body = format!("{}\u{20ac}tail", "a".repeat(SNIPPET_BYTES - 1));
        let o = classify_with(&Classifier::default(), 400, Some(&body), None);
        let Outcome::Permanent {
            snippet: Some(snippet),
            ..
        } = o
        else {
            panic!("{o:?}");
        };
        assert_eq!(snippet, "a".repeat(SNIPPET_BYTES - 1));
    }
}
