//! Sending a rendered request with the destination's OAuth2 token: the token comes from
//! the destination's [`TokenSource`](crate::auth::oauth2::TokenSource) (fetched once for
//! all concurrent deliveries); a 401 drops it, fetches another and sends again, exactly
//! once. A destination without `oauth2:` is sent as rendered (bearer and basic headers are
//! part of the rendering).

use http::HeaderValue;

use super::attempt::{classify_response, describe_error, secrets_sent};
use super::format::RenderedRequest;
use super::outcome::{no_response, Outcome};
use crate::auth::{AuthError, Authorizer, Issued};
use crate::destination::Destination;

/// What [`attempt`](super::attempt::attempt) came to.
#[derive(Debug)]
pub struct Attempted {
    /// The outcome.
    pub outcome: Outcome,
    /// How long it took, token fetch included.
    pub latency: std::time::Duration,
    /// The token endpoint refused the destination's credentials (why): hold it.
    pub refused: Option<String>,
}

/// Sends `rendered` for `dest`; returns the outcome and, when the token endpoint refused
/// the credentials, why (the caller holds the destination).
pub async fn send(
    client: &reqwest::Client,
    auth: &Authorizer,
    dest: &Destination,
    rendered: RenderedRequest,
) -> (Outcome, Option<String>) {
    let Some(source) = auth.source(dest) else {
        return (send_once(client, dest, rendered, None).await, None);
    };
    let issued = match source.token().await {
        Ok(t) => t,
        Err(e) => return unauthorized(e),
    };
    let outcome = send_once(client, dest, rendered.clone(), Some(&issued)).await;
    if outcome.status() != Some(401) {
        return (outcome, None);
    }
    tracing::info!(destination = %dest.name, "the receiver refused the access token (401); fetching a new one and sending once more");
    source.invalidate(&issued).await;
    let issued = match source.token().await {
        Ok(t) => t,
        Err(e) => return unauthorized(e),
    };
    (send_once(client, dest, rendered, Some(&issued)).await, None)
}

/// No token: a retry like any transient failure, and the refusal to hold on.
fn unauthorized(e: AuthError) -> (Outcome, Option<String>) {
    let error = e.to_string();
    let refused = matches!(e, AuthError::Refused { .. }).then(|| error.clone());
    (no_response(error), refused)
}

/// Adds `Authorization: Bearer <token>` (sensitive) to `rendered`; false when the token is
/// not a valid header value.
pub fn insert_token(rendered: &mut RenderedRequest, issued: &Issued) -> bool {
    match HeaderValue::from_str(&format!("Bearer {}", issued.token.expose())) {
        Ok(mut value) => {
            value.set_sensitive(true);
            rendered.headers.insert(http::header::AUTHORIZATION, value);
            true
        }
        Err(_) => false,
    }
}

async fn send_once(
    client: &reqwest::Client,
    dest: &Destination,
    mut rendered: RenderedRequest,
    token: Option<&Issued>,
) -> Outcome {
    if let Some(issued) = token {
        if !insert_token(&mut rendered, issued) {
            return no_response("the OAuth access token is not a valid header value".into());
        }
    }
    // Every secret we send (the token too) is masked in what we keep of the answer.
    let secrets = secrets_sent(&rendered);
    let request = client
        .request(rendered.method, rendered.url)
        .timeout(dest.timeout)
        .headers(rendered.headers)
        .body(rendered.body);
    match request.send().await {
        Ok(response) => classify_response(&dest.classify, response, &secrets).await,
        Err(e) => no_response(describe_error(&e)),
    }
}
