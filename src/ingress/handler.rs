//! The webhook endpoints: `POST /webhooks/{view,interaction,lead}` and `GET /healthz`.
//!
//! A request passes: path -> method -> `X-KEY` -> size -> JSON object -> routing -> durable
//! commit -> 200. Each refusal is answered at the first step that fails, with a JSON reason,
//! and nothing of a refused request is stored or forwarded.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use uuid::Uuid;

use super::response::{error, json, JsonResponse};
use crate::config::ServerSettings;
use crate::deliver::Dispatcher;
use crate::event::EventKind;
use crate::queue::commit::Committer;
use crate::queue::{now_ms, EventRecord, JobRecord, NewEvent};
use crate::verify::VerifyError;
use crate::SharedConfig;

/// What the handler needs; shared by all connections.
pub struct IngressState {
    /// The current config (swapped whole on reload).
    pub config: SharedConfig,
    /// Durable writes.
    pub committer: Committer,
    /// Woken for each destination that got new jobs.
    pub dispatcher: Dispatcher,
}

#[derive(Serialize)]
struct Accepted<'a> {
    status: &'a str,
    event_id: String,
    routes: Vec<String>,
    deliveries: usize,
}

/// Answers one request.
pub async fn handle(state: Arc<IngressState>, req: Request<Incoming>) -> JsonResponse {
    let path = req.uri().path();
    if path == "/healthz" {
        return match *req.method() {
            Method::GET | Method::HEAD => {
                json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
            }
            _ => method_not_allowed("GET"),
        };
    }
    let Some(kind) = path
        .strip_prefix("/webhooks/")
        .and_then(|k| k.parse::<EventKind>().ok())
    else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "unknown path; webhooks go to /webhooks/view, /webhooks/interaction or /webhooks/lead",
        );
    };
    if req.method() != Method::POST {
        return method_not_allowed("POST");
    }
    receive(state, kind, req).await
}

fn method_not_allowed(allow: &'static str) -> JsonResponse {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this endpoint only accepts {allow}"),
    );
    r.headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    r
}

/// Why a webhook was refused: the HTTP status, a stable machine-readable code and a
/// sentence for the human reading the sender's logs.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }

    fn into_response(self) -> JsonResponse {
        error(self.status, self.code, self.message)
    }
}

/// A verified webhook's body, byte for byte, and its parsed JSON object.
pub struct Payload {
    /// The body as received; raw destinations get exactly these bytes.
    pub body: Bytes,
    /// The parsed object that routes match against.
    pub json: serde_json::Value,
}

async fn receive(
    state: Arc<IngressState>,
    kind: EventKind,
    req: Request<Incoming>,
) -> JsonResponse {
    // The rules in force when the request arrived apply to it, even if a reload lands meanwhile.
    let config = state.config.load_full();
    let presented = req.headers().get("x-key").map(|v| v.as_bytes().to_vec());
    let mut request = match config.keys.verify(presented.as_deref(), req) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%kind, reason = %e, outcome = "rejected", "webhook rejected");
            let code = match e {
                VerifyError::Missing => "missing_key",
                VerifyError::Wrong => "invalid_key",
            };
            return error(StatusCode::UNAUTHORIZED, code, e.to_string());
        }
    };
    let body = match read_body(request.get_mut(), &config.server).await {
        Ok(b) => b,
        Err(refusal) => return refusal.into_response(),
    };
    let verified = match request.try_map(|_| parse_payload(body)) {
        Ok(v) => v,
        Err(refusal) => return refusal.into_response(),
    };
    let decision = config.rules.decide(kind, &verified.get().json);
    if decision.deliveries.is_empty() {
        tracing::info!(%kind, outcome = "unrouted", "webhook matched no route");
        return json(
            StatusCode::OK,
            &Accepted {
                status: "unrouted",
                event_id: String::new(),
                routes: Vec::new(),
                deliveries: 0,
            },
        );
    }
    let now = now_ms();
    let event_id = Uuid::now_v7();
    let jobs: Vec<JobRecord> = decision
        .deliveries
        .iter()
        .map(|d| JobRecord {
            id: Uuid::now_v7(),
            event_id,
            kind,
            destination: d.destination.clone(),
            routes: d.routes.clone(),
            created_at_ms: now,
            attempts: 0,
            first_attempt_at_ms: None,
            last_attempt_at_ms: None,
            next_attempt_at_ms: now,
            last_status: None,
            last_error: None,
        })
        .collect();
    let new_event = NewEvent {
        event: EventRecord {
            id: event_id,
            kind,
            received_at_ms: now,
            routes: decision.routes.clone(),
            jobs: jobs.iter().map(|j| j.id).collect(),
            body_len: verified.get().body.len() as u64,
        },
        body: verified.into_inner().body,
        jobs,
    };
    if let Err(e) = state.committer.commit(new_event).await {
        tracing::error!(%kind, error = %e, "webhook not persisted; answered 503");
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the event could not be stored durably; send it again later",
        );
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("5"),
        );
        return r;
    }
    for d in &decision.deliveries {
        state.dispatcher.wake(&d.destination);
    }
    tracing::info!(
        %event_id,
        %kind,
        route = %decision.routes.join(","),
        deliveries = decision.deliveries.len(),
        outcome = "accepted",
        "webhook accepted"
    );
    json(
        StatusCode::OK,
        &Accepted {
            status: "accepted",
            event_id: event_id.to_string(),
            routes: decision.routes,
            deliveries: decision.deliveries.len(),
        },
    )
}

/// Reads the body within the size limit and the body timeout.
async fn read_body(req: &mut Request<Incoming>, server: &ServerSettings) -> Result<Bytes, Refusal> {
    let limit = server.max_body_bytes;
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body exceeds the limit of {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Refuse a declared oversize body before reading any of it.
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let read = Limited::new(req.body_mut(), limit).collect();
    match tokio::time::timeout(server.body_read_timeout, read).await {
        Err(_) => Err(Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the body did not arrive in time",
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("could not read the body: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Parses the body as a JSON object (anything else is a 400).
fn parse_payload(body: Bytes) -> Result<Payload, Refusal> {
    match serde_json::from_slice(&body) {
        Ok(json @ serde_json::Value::Object(_)) => Ok(Payload { body, json }),
        Ok(_) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "not_an_object",
            "the body must be a JSON object",
        )),
        Err(e) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )),
    }
}
