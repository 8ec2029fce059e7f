//! The JSON shapes of the admin API, shared by the server (which builds them from store
//! records) and the CLI (which reads them back), so the two cannot drift apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::queue::operator::JobStatus;
use crate::queue::{AttemptRecord, DeadLetter, EventRecord, JobRecord};

/// `GET /queue`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct QueueView {
    /// Every configured destination and every destination with jobs left.
    pub destinations: BTreeMap<String, DestinationQueue>,
    /// The sums over all destinations.
    pub total: DestinationQueue,
}

/// The queue of one destination (or all of them, in `total`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DestinationQueue {
    /// Queued, not attempted yet.
    pub pending: u64,
    /// Queued after a failed attempt.
    pub retrying: u64,
    /// Being attempted right now (also counted in pending or retrying).
    pub in_flight: u64,
    /// Dead letters.
    pub dead: u64,
    /// Age of the oldest queued job in seconds, if any is queued.
    pub oldest_pending_age_seconds: Option<f64>,
    /// The destination's health (not in `total`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthView>,
}

/// A destination's health, as `GET /queue` and the hold and release answers show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HealthView {
    /// `healthy`, `failing` or `held`.
    pub state: String,
    /// Since when (Unix ms).
    pub since_ms: u64,
    /// Held by an operator (no probes until released).
    pub held_by_operator: bool,
    /// Held because the token endpoint refused the credentials (`held_by_operator` too;
    /// absent from an older daemon's answer).
    #[serde(default)]
    pub held_for_credentials: bool,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// The latest failure's status.
    pub last_status: Option<u16>,
    /// The latest failure's error.
    pub last_error: Option<String>,
    /// The latest success (Unix ms).
    pub last_success_ms: Option<u64>,
    /// While held automatically: when the next probe may go (Unix ms).
    pub next_probe_ms: Option<u64>,
}

impl HealthView {
    /// The view of `h`.
    pub fn of(h: &crate::health::DestinationHealth) -> HealthView {
        let held = h.state == crate::health::HealthState::Held;
        HealthView {
            state: h.state.as_str().to_string(),
            since_ms: h.since_ms,
            held_by_operator: h.held_by_operator,
            held_for_credentials: h.held_for_credentials,
            consecutive_failures: h.consecutive_failures,
            last_status: h.last_status,
            last_error: h.last_error.clone(),
            last_success_ms: h.last_success_ms,
            next_probe_ms: (held && !h.held_by_operator).then_some(h.next_probe_ms),
        }
    }
}

/// The answer to `POST /destinations/{name}/hold` and `.../release`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HoldResult {
    /// The destination.
    pub destination: String,
    /// False when it already was in the state asked for.
    pub changed: bool,
    /// Its health now.
    pub health: HealthView,
}

/// One dead letter, as `GET /dead` lists it and `GET /dead/{id}` shows it (with the body).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetterView {
    /// The delivery id (also the `X-Hookrouter-Delivery` header).
    pub id: String,
    /// The event it delivers.
    pub event_id: String,
    /// The event's kind.
    pub kind: String,
    /// Where it was going.
    pub destination: String,
    /// The routes that sent it there.
    pub routes: Vec<String>,
    /// Attempts made in all.
    pub attempts: u32,
    /// First attempt since the job was created or last retried (RFC 3339).
    pub first_attempt_at: Option<String>,
    /// Last attempt (RFC 3339).
    pub last_attempt_at: Option<String>,
    /// When it was dead-lettered (RFC 3339).
    pub dead_at: String,
    /// HTTP status of the last attempt, if a response came back.
    pub last_status: Option<u16>,
    /// Why it was dead-lettered.
    pub error: String,
    /// The start of the last response body.
    pub response_snippet: Option<String>,
    /// The original webhook body (only in `GET /dead/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
}

/// `GET /dead`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadList {
    /// Dead letters, oldest first.
    pub dead: Vec<DeadLetterView>,
    /// Dead letters in all (of the destination asked for, if any), beyond the limit too.
    pub total: u64,
}

/// Answer of the retry endpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RetryResult {
    /// Delivery ids put back in the queue.
    pub retried: Vec<String>,
    /// Dead letters left alone, with the reason (their destination is no longer configured).
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// Skipped dead letters beyond those listed in `skipped` (a bulk retry names at most
    /// 1,000 per removed destination, so its answer stays small).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_unlisted: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A dead letter a bulk retry did not requeue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Skipped {
    /// The delivery id.
    pub id: String,
    /// Why.
    pub reason: String,
}

/// `GET /events/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventView {
    /// The event id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// When it was accepted (RFC 3339).
    pub received_at: String,
    /// The routes it matched.
    pub routes: Vec<String>,
    /// The body as received (a JSON object).
    pub body: Option<serde_json::Value>,
    /// One per destination.
    pub jobs: Vec<JobView>,
}

/// One job of an event with its whole history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobView {
    /// Delivery id.
    pub id: String,
    /// Destination name.
    pub destination: String,
    /// Routes that sent the event there.
    pub routes: Vec<String>,
    /// `pending`, `retrying`, `dead`, `delivered`, `dropped`, or `purged`.
    pub status: String,
    /// For a queued job, when its next attempt is due (RFC 3339).
    pub next_attempt_at: Option<String>,
    /// For a dead letter, why.
    pub dead_reason: Option<String>,
    /// Every recorded attempt, oldest first.
    pub attempts: Vec<AttemptView>,
}

/// One attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttemptView {
    /// 1-based attempt number (it keeps counting across operator retries).
    pub attempt: u32,
    /// When it started (RFC 3339).
    pub at: String,
    /// How long it took.
    pub latency_ms: u64,
    /// HTTP status, if a response came back.
    pub status: Option<u16>,
    /// `delivered`, `retry` or `permanent` (as recorded).
    pub outcome: crate::outcomes::AttemptOutcome,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// `POST /reload`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReloadView {
    /// Always `reloaded`.
    pub status: String,
    /// Route names added, removed and changed.
    pub routes_added: Vec<String>,
    /// Removed routes.
    pub routes_removed: Vec<String>,
    /// Changed routes.
    pub routes_changed: Vec<String>,
    /// Destination names added.
    pub destinations_added: Vec<String>,
    /// Removed destinations.
    pub destinations_removed: Vec<String>,
    /// Changed destinations.
    pub destinations_changed: Vec<String>,
}

/// Unix ms as RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A stored body as JSON (it was checked to be a JSON object at ingress); anything else as
/// a lossy string, so a view never fails over a body.
pub fn body_json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into_owned()))
}

impl DeadLetterView {
    /// The view of `letter`, with `body` when showing one dead letter.
    pub fn new(letter: &DeadLetter, body: Option<serde_json::Value>) -> Self {
        let job = &letter.job;
        DeadLetterView {
            id: job.id.to_string(),
            event_id: job.event_id.to_string(),
            kind: job.kind.to_string(),
            destination: job.destination.clone(),
            routes: job.routes.clone(),
            attempts: job.attempts,
            first_attempt_at: job.first_attempt_at_ms.map(rfc3339),
            last_attempt_at: job.last_attempt_at_ms.map(rfc3339),
            dead_at: rfc3339(letter.dead_at_ms),
            last_status: job.last_status,
            error: letter.reason.clone(),
            response_snippet: letter.response_snippet.clone(),
            body,
        }
    }
}

impl From<&AttemptRecord> for AttemptView {
    fn from(a: &AttemptRecord) -> Self {
        AttemptView {
            attempt: a.attempt,
            at: rfc3339(a.at_ms),
            latency_ms: a.latency_ms,
            status: a.status,
            outcome: a.outcome.clone(),
            error: a.error.clone(),
        }
    }
}

impl JobView {
    /// The view of a job from its current status and recorded attempts.
    pub fn new(
        job_id: &uuid::Uuid,
        status: Option<&JobStatus>,
        attempts: &[AttemptRecord],
    ) -> Self {
        let attempts = attempts.iter().map(AttemptView::from).collect();
        let base = |job: &JobRecord, status: &str| JobView {
            id: job.id.to_string(),
            destination: job.destination.clone(),
            routes: job.routes.clone(),
            status: status.to_string(),
            next_attempt_at: None,
            dead_reason: None,
            attempts: Vec::new(),
        };
        let mut view = match status {
            Some(JobStatus::Queued(job)) => {
                let state = match job.state() {
                    crate::queue::JobState::Pending => "pending",
                    crate::queue::JobState::Retrying => "retrying",
                };
                JobView {
                    next_attempt_at: Some(rfc3339(job.next_attempt_at_ms)),
                    ..base(job, state)
                }
            }
            Some(JobStatus::Dead(letter)) => JobView {
                dead_reason: Some(letter.reason.clone()),
                ..base(&letter.job, "dead")
            },
            Some(JobStatus::Settled(s)) => base(&s.job, s.outcome.as_str()),
            None => JobView {
                id: job_id.to_string(),
                destination: String::new(),
                routes: Vec::new(),
                status: "purged".into(),
                next_attempt_at: None,
                dead_reason: None,
                attempts: Vec::new(),
            },
        };
        view.attempts = attempts;
        view
    }
}

impl EventView {
    /// The view of `event` with its body and jobs.
    pub fn new(event: &EventRecord, body: Option<&[u8]>, jobs: Vec<JobView>) -> Self {
        EventView {
            id: event.id.to_string(),
            kind: event.kind.to_string(),
            received_at: rfc3339(event.received_at_ms),
            routes: event.routes.clone(),
            body: body.map(body_json),
            jobs,
        }
    }
}
