//! The webhook endpoints: `POST /webhooks/{view,interaction,lead}` and `GET /healthz`.
//!
//! A request passes: path -> method -> `X-KEY` -> size -> JSON object -> routing -> durable
//! commit -> 200. Each refusal is answered at the first step that fails, with a JSON reason,
//! and nothing of a refused request is stored or forwarded.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use uuid::Uuid;

use super::body;
use super::recent::{mindstamp_id, RecentIds};
use crate::config::{Config, ServerSettings};
use crate::deliver::Dispatcher;
use crate::event::EventKind;
use crate::http_server::peer::Peer;
use crate::http_server::response::{
    error, json, ErrorCause, ErrorCode, ErrorMessage, JsonResponse,
};
use crate::metrics::Metrics;
use crate::queue::commit::Committer;
use crate::queue::housekeeping::dedupe_key;
use crate::queue::{now_ms, Committed, EventRecord, JobRecord, NewEvent, Store};
use crate::route::Decision;
use crate::verify::{Verified, VerifyError};
use crate::SharedConfig;

/// What the handler needs; shared by all connections.
pub struct IngressState {
    /// The current config (swapped whole on reload).
    pub config: SharedConfig,
    /// Durable writes.
    pub committer: Committer,
    /// Woken for each destination that got new jobs.
    pub dispatcher: Dispatcher,
    /// Read for the queue depth (back-pressure).
    pub store: Store,
    /// Counts every answer by kind and outcome.
    pub metrics: Arc<Metrics>,
    /// Mindstamp ids of accepted events, for the status page's lookup.
    pub recent_ids: Arc<RecentIds>,
    /// Route matches, for the traffic alerts (`expect:`).
    pub activity: Arc<crate::alert::silence::Activity>,
    /// Memory for the bodies of requests in progress.
    pub bodies: body::Budget,
}

/// The `status` of a 200 answer, kept as a response extension for the metrics; its JSON
/// (and metric label) is the lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookStatus {
    /// Committed with one job per destination.
    Accepted,
    /// Matched no route (kept for replay unless `server.keep_unrouted` is off).
    Unrouted,
    /// The same webhook was accepted before; not forwarded again.
    Duplicate,
}

impl WebhookStatus {
    /// The name in the answer, the logs and the `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookStatus::Accepted => "accepted",
            WebhookStatus::Unrouted => "unrouted",
            WebhookStatus::Duplicate => "duplicate",
        }
    }
}

fn ok(accepted: &Accepted) -> JsonResponse {
    let mut r = json(StatusCode::OK, accepted);
    r.extensions_mut().insert(accepted.status);
    r
}

/// Counts one answer to a webhook of `kind` in the metrics.
fn count(metrics: &Metrics, kind: EventKind, response: &JsonResponse) {
    if let Some(status) = response.extensions().get::<WebhookStatus>() {
        metrics.webhook(kind, status.as_str(), None);
    } else {
        let reason = response
            .extensions()
            .get::<ErrorCode>()
            .map_or("unknown", |c| c.0.as_str());
        metrics.webhook(kind, "rejected", Some(reason));
    }
}

#[derive(Serialize)]
struct Accepted {
    status: WebhookStatus,
    event_id: String,
    routes: Vec<String>,
    deliveries: usize,
}

/// Answers one request; every refusal is logged once, with its code and who sent it.
pub async fn handle(state: Arc<IngressState>, req: Request<Incoming>) -> JsonResponse {
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    let client = peer.and_then(|p| {
        state
            .config
            .load()
            .server
            .trusted_proxies
            .client(p, req.headers())
    });
    let (kind, response) = answer(state, req).await;
    log_refusal(kind, peer, client, &response);
    response
}

async fn answer(
    state: Arc<IngressState>,
    req: Request<Incoming>,
) -> (Option<EventKind>, JsonResponse) {
    let path = req.uri().path();
    if path == "/healthz" {
        let response = match *req.method() {
            Method::GET | Method::HEAD => {
                json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
            }
            _ => method_not_allowed("GET"),
        };
        return (None, response);
    }
    let Some(kind) = path
        .strip_prefix("/webhooks/")
        .and_then(|k| k.parse::<EventKind>().ok())
    else {
        let response = error(
            StatusCode::NOT_FOUND,
            "not_found",
            "unknown path; webhooks go to /webhooks/view, /webhooks/interaction or /webhooks/lead",
        );
        return (None, response);
    };
    let response = if req.method() != Method::POST {
        method_not_allowed("POST")
    } else {
        receive(state.clone(), kind, req).await
    };
    count(&state.metrics, kind, &response);
    (Some(kind), response)
}

/// The one log line of a refused request: its code, status and sentence, the peer, and the
/// client behind a trusted proxy. An error of ours (the store) is an error; a client's
/// mistake a warning; a path nobody serves (scanners) only information.
fn log_refusal(
    kind: Option<EventKind>,
    peer: Option<std::net::SocketAddr>,
    client: Option<std::net::IpAddr>,
    response: &JsonResponse,
) {
    let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() else {
        return;
    };
    let status = response.status().as_u16();
    let message = response
        .extensions()
        .get::<ErrorMessage>()
        .map_or("", |m| m.0.as_str());
    let cause = response
        .extensions()
        .get::<ErrorCause>()
        .map(|c| c.0.as_str());
    let kind = kind.map(EventKind::as_str);
    let peer = peer.map(|p| p.to_string());
    let client = client.map(|c| c.to_string());
    macro_rules! refused {
        ($level:ident) => {
            tracing::$level!(
                kind,
                code = code.as_str(),
                status,
                peer,
                client,
                error = cause,
                outcome = "rejected",
                "webhook rejected: {message}"
            )
        };
    }
    match status {
        404 => refused!(info),
        500.. if code != "queue_full" => refused!(error),
        _ => refused!(warn),
    }
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
    let mut request = match admit(&state, &config, req) {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    // `_body_memory` keeps the body's share of the budget until the answer.
    let (body, _body_memory) =
        match read_body(request.get_mut(), &config.server, &state.bodies).await {
            Ok(b) => b,
            Err(refusal) => return refusal.into_response(),
        };
    let verified = match request.try_map(|_| parse_payload(body)) {
        Ok(v) => v,
        Err(refusal) => return refusal.into_response(),
    };
    let decision = config.rules.decide(kind, &verified.get().json);
    if config.watches_traffic() {
        state.activity.matched(kind, &decision.routes, now_ms());
    }
    let unrouted = decision.deliveries.is_empty();
    if unrouted && !config.server.keep_unrouted {
        tracing::info!(%kind, outcome = "unrouted", "webhook matched no route; not kept (server.keep_unrouted: false)");
        return ok(&Accepted {
            status: WebhookStatus::Unrouted,
            event_id: String::new(),
            routes: Vec::new(),
            deliveries: 0,
        });
    }
    let source_id = mindstamp_id(&verified.get().json);
    let new_event = new_event(kind, &decision, verified, config.server.dedupe_window);
    let event_id = new_event.event.id;
    match state.committer.commit(new_event).await {
        Ok(Committed::New) => {
            if let Some(id) = source_id {
                state.recent_ids.record(id, event_id);
            }
        }
        Ok(Committed::Duplicate { event_id: first }) => {
            tracing::info!(event_id = %first, %kind, outcome = "duplicate", "webhook already accepted; not forwarded again");
            return ok(&Accepted {
                status: WebhookStatus::Duplicate,
                event_id: first.to_string(),
                routes: decision.routes,
                deliveries: 0,
            });
        }
        Err(e) => return store_unavailable(e.to_string()),
    }
    if unrouted {
        tracing::info!(%event_id, %kind, outcome = "unrouted", "webhook matched no route; kept in the journal for replay");
        return ok(&Accepted {
            status: WebhookStatus::Unrouted,
            event_id: event_id.to_string(),
            routes: Vec::new(),
            deliveries: 0,
        });
    }
    accepted(&state, kind, event_id, decision)
}

/// The checks before the body is read: exactly one `X-KEY` (400), a configured key (401),
/// then room in the queue (503 `queue_full`, so a full queue costs no body read).
fn admit(
    state: &IngressState,
    config: &Config,
    req: Request<Incoming>,
) -> Result<Verified<Request<Incoming>>, Box<JsonResponse>> {
    // Two `X-KEY` headers are ambiguous (a proxy and a client may each have added one, and
    // which one is "the" key differs between implementations): refused, never first-wins.
    if req.headers().get_all("x-key").iter().nth(1).is_some() {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "duplicate_key",
            "the request has more than one X-KEY header; send exactly one",
        )));
    }
    let presented = req.headers().get("x-key").map(|v| v.as_bytes().to_vec());
    let request = config.keys.verify(presented.as_deref(), req).map_err(|e| {
        let code = match e {
            VerifyError::Missing => "missing_key",
            VerifyError::Wrong => "invalid_key",
        };
        Box::new(error(StatusCode::UNAUTHORIZED, code, e.to_string()))
    })?;
    if state.store.pending_count() as u64 >= config.server.max_queue {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_full",
            format!(
                "{} deliveries are queued (server.max_queue); send it again later",
                config.server.max_queue
            ),
        );
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("30"),
        );
        return Err(Box::new(r));
    }
    Ok(request)
}

/// The event to commit: its record, its body, one job per destination, and its
/// de-duplication identity.
fn new_event(
    kind: EventKind,
    decision: &Decision,
    verified: Verified<Payload>,
    dedupe_window: std::time::Duration,
) -> NewEvent {
    // An unrouted event is kept without an identity: a later copy, after a rule fix, is
    // routed rather than answered `duplicate` of an event that went nowhere.
    let dedupe = if decision.deliveries.is_empty() {
        None
    } else {
        dedupe_key(kind, &verified.get().json, dedupe_window)
    };
    let now = now_ms();
    let event_id = Uuid::now_v7();
    let jobs: Vec<JobRecord> = decision
        .deliveries
        .iter()
        .map(|d| JobRecord::new(event_id, kind, d.destination.clone(), d.routes.clone(), now))
        .collect();
    NewEvent {
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
        dedupe,
    }
}

/// 503 `store_unavailable`: the commit failed, nothing of the event is queued.
fn store_unavailable(cause: String) -> JsonResponse {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the event could not be stored durably; send it again later",
    );
    r.extensions_mut().insert(ErrorCause(cause));
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("5"),
    );
    r
}

/// 200 `accepted`, once the event is durable: its destinations' workers are woken.
fn accepted(
    state: &IngressState,
    kind: EventKind,
    event_id: Uuid,
    decision: Decision,
) -> JsonResponse {
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
    ok(&Accepted {
        status: WebhookStatus::Accepted,
        event_id: event_id.to_string(),
        routes: decision.routes,
        deliveries: decision.deliveries.len(),
    })
}

/// Reads the body within the size limit, the body timeout and the memory budget; the
/// reservation is held until the request is answered.
async fn read_body(
    req: &mut Request<Incoming>,
    server: &ServerSettings,
    budget: &body::Budget,
) -> Result<(Bytes, body::Reserved), Refusal> {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let read = body::read(
        req.body_mut(),
        declared,
        server.max_body_bytes,
        budget,
        server.body_read_timeout,
    );
    read.await.map_err(|e| {
        let (status, code) = match e {
            body::BodyError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            body::BodyError::Timeout => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            body::BodyError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            body::BodyError::Read(_) => (StatusCode::BAD_REQUEST, "bad_body"),
        };
        Refusal::new(status, code, e.to_string())
    })
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
