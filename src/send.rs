//! `hookrouter send`: one real request to one destination, to try a Slack URL, a token or a
//! template for real before any webhook depends on it.
//!
//! The request is rendered by [`render_request`] and sent by the same client settings as
//! every delivery (no redirects followed, no proxy, the destination's timeout), so what the
//! receiver gets is what a delivery would send. Nothing is written to the store: there is
//! no job, no retry and no dead letter. The answer is shown with what delivery would make
//! of it (delivered, retried or permanent), and with every secret we sent masked in it.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde_json::Value as Json;
use uuid::Uuid;

use crate::config::Config;
use crate::deliver::attempt::{
    build_client, describe_error, mask, read_body, secrets_sent, Outcome, ResponseSummary,
    SNIPPET_BYTES,
};
use crate::deliver::{render_request, DeliveryIds, RenderError};
use crate::event::EventKind;

/// Why nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No destination of that name.
    #[error("no destination {name:?} in {file} (defined: {known})")]
    UnknownDestination {
        /// The name asked for.
        name: String,
        /// The config file.
        file: String,
        /// The names defined.
        known: String,
    },
    /// The request could not be rendered (a delivery would be dead-lettered).
    #[error("{0} (a delivery of this payload would be dead-lettered)")]
    Render(#[from] RenderError),
    /// `send` opens no store, so it cannot use the refresh token the daemon keeps (and a
    /// refresh could rotate it under the daemon).
    #[error("destination {0:?} uses the OAuth refresh-token grant: send does not refresh its token (the running daemon holds the current refresh token, and the token endpoint may rotate it); try it with a real delivery, or with `hookrouter route --render` for the request")]
    RefreshGrant(String),
    /// No OAuth token could be had.
    #[error("{0}")]
    Auth(#[from] crate::auth::AuthError),
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// What came back.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Its reason phrase (`OK`).
    pub reason: String,
    /// Response headers, as received (values masked like the body).
    pub headers: Vec<(String, String)>,
    /// The body (up to 64 KiB read), secrets we sent masked.
    pub body: Option<String>,
    /// What a delivery would make of it.
    pub verdict: Outcome,
}

/// One request sent and its answer.
#[derive(Debug)]
pub struct Sent {
    /// The destination.
    pub destination: String,
    /// The kind it was rendered as.
    pub kind: EventKind,
    /// The request, secrets shown as `<secret>`.
    pub request: String,
    /// How long the request took.
    pub elapsed: Duration,
    /// The answer, or why none came (a transport error: delivery would retry).
    pub answer: Result<Answer, String>,
}

impl Sent {
    /// True when a delivery would have counted this as delivered.
    pub fn delivered(&self) -> bool {
        matches!(
            self.answer,
            Ok(Answer {
                verdict: Outcome::Delivered { .. },
                ..
            })
        )
    }
}

/// The kind `send` renders for when none is given: the first kind a route sends to
/// `destination`, or `view` when no route does.
pub fn default_kind(config: &Config, destination: &str) -> EventKind {
    config
        .rules
        .routes()
        .iter()
        .filter(|r| r.to.iter().any(|t| t == destination))
        .find_map(|r| match &r.events {
            Some(kinds) => kinds.first().copied(),
            None => Some(EventKind::View),
        })
        .unwrap_or(EventKind::View)
}

/// Renders `body` (parsed: `payload`) as an event of `kind` for `destination`, sends it
/// once and returns the answer.
pub async fn send(
    config: &Config,
    destination: &str,
    kind: EventKind,
    body: Bytes,
    payload: &Json,
) -> Result<Sent, SendError> {
    let Some(dest) = config.destinations.get(destination) else {
        return Err(SendError::UnknownDestination {
            name: destination.to_string(),
            file: config.source.display().to_string(),
            known: config
                .destinations
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let ids = DeliveryIds::now(Uuid::now_v7(), Uuid::now_v7());
    let mut rendered = render_request(dest, kind, &body, payload, &ids)?;
    let client = build_client()?;
    add_client_token(&client, dest, &mut rendered).await?;
    let request = rendered.redacted();
    let secrets = secrets_sent(&rendered);
    let started = Instant::now();
    let sent = client
        .request(rendered.method, rendered.url)
        .timeout(dest.timeout)
        .headers(rendered.headers)
        .body(rendered.body)
        .send()
        .await;
    let answer = match sent {
        Err(e) => Err(describe_error(&e)),
        Ok(response) => Ok(read_answer(dest, response, &secrets).await),
    };
    Ok(Sent {
        destination: destination.to_string(),
        kind,
        request,
        elapsed: started.elapsed(),
        answer,
    })
}

/// An OAuth2 destination's token for a one-off send: client credentials only (a refresh
/// grant would rotate the daemon's refresh token behind its back), kept in memory.
async fn add_client_token(
    client: &reqwest::Client,
    dest: &crate::destination::Destination,
    rendered: &mut crate::deliver::RenderedRequest,
) -> Result<(), SendError> {
    if let Some(crate::auth::AuthSpec::OAuth2(spec)) = dest.auth.as_deref() {
        if spec.refresh_token.is_some() {
            return Err(SendError::RefreshGrant(dest.name.clone()));
        }
        // Client credentials: a token of its own, kept in memory only.
        let authorizer = crate::auth::Authorizer::new(client.clone(), None);
        if let Some(source) = authorizer.source(dest) {
            let issued = source.token().await?;
            if !crate::deliver::authorized::insert_token(rendered, &issued) {
                return Err(SendError::Auth(crate::auth::AuthError::Unavailable(
                    "the access token is not a valid header value".into(),
                )));
            }
        }
    }
    Ok(())
}

/// The receiver's answer, secrets masked, with the verdict delivery would reach.
async fn read_answer(
    dest: &crate::destination::Destination,
    response: reqwest::Response,
    secrets: &[String],
) -> Answer {
    let status = response.status();
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(k, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (k.to_string(), mask(value, secrets))
        })
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let (location, retry_after) = (header("location"), header("retry-after"));
    let body = read_body(response).await.map(|b| mask(b, secrets));
    let verdict = dest.classify.classify(
        status,
        ResponseSummary {
            location,
            retry_after,
            body: body.clone(),
        },
        SystemTime::now(),
    );
    Answer {
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("").to_string(),
        headers,
        body,
        verdict,
    }
}

/// The request and its answer as text for a terminal.
pub fn render(sent: &Sent) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "--- request to {} ({} event) ---",
        sent.destination, sent.kind
    );
    let _ = writeln!(out, "{}", sent.request.trim_end());
    let ms = sent.elapsed.as_millis();
    match &sent.answer {
        Err(e) => {
            let _ = writeln!(out, "\n--- no answer after {ms} ms ---\n{e}");
            let _ = writeln!(out, "\na delivery would retry this (network error)");
        }
        Ok(a) => {
            let _ = writeln!(out, "\n--- answer in {ms} ms ---");
            let _ = writeln!(out, "HTTP {} {}", a.status, a.reason);
            for (k, v) in &a.headers {
                let _ = writeln!(out, "{k}: {v}");
            }
            if let Some(body) = &a.body {
                let mut end = body.len().min(SNIPPET_BYTES);
                while !body.is_char_boundary(end) {
                    end -= 1;
                }
                let _ = writeln!(out, "\n{}", &body[..end]);
                if end < body.len() {
                    let _ = writeln!(out, "… ({} more bytes)", body.len() - end);
                }
            }
            let verdict = match &a.verdict {
                Outcome::Delivered { .. } => "delivered".to_string(),
                Outcome::Retry { error, .. } => format!("retried ({error})"),
                Outcome::Permanent { error, .. } => {
                    format!("a permanent failure, dead-lettered ({error})")
                }
            };
            let _ = writeln!(out, "\na delivery would count this as {verdict}");
        }
    }
    let _ = writeln!(out, "(a test: nothing was queued, nothing will be retried)");
    out
}
