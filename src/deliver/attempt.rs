//! One HTTP attempt of one job: render, send, read the answer. The I/O shell around the
//! pure decision in `outcome.rs` ([`Classifier::classify`], [`super::outcome::no_response`]), which
//! decides what the attempt came to; the worker turns that into a store update with the
//! pure retry policy (`transition.rs`).

use std::time::{Instant, SystemTime};

use bytes::Bytes;

use super::format::{render_request, DeliveryIds};
pub use super::outcome::{parse_retry_after, Outcome, ResponseSummary, SNIPPET_BYTES};
use crate::destination::Destination;
pub use crate::destination::{Classifier, StatusSet};
pub use crate::http_client::build_client;
pub(crate) use crate::http_client::{describe_error, mask, read_body};
use crate::queue::JobRecord;

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

    #[test]
    fn sent_secrets_are_masked_longest_first() {
        let secrets = vec!["Bearer tok-12345".to_string(), "tok-12345".to_string()];
        assert_eq!(
            mask("echo: Bearer tok-12345 / tok-12345".into(), &secrets),
            "echo: <secret> / <secret>"
        );
        assert_eq!(mask("nothing here".into(), &secrets), "nothing here");
    }
}
