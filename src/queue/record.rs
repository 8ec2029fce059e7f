//! The records kept in the store: in sled as postcard behind a version byte
//! ([`super::retry_queue`]), and read as JSON by the admin API.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::journal::Position;
use crate::event::EventKind;
use crate::outcomes::{AttemptOutcome, SettledOutcome};

/// One accepted webhook. Its body lives in the `bodies` tree, in chunks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventRecord {
    /// Time-ordered id (UUID v7), returned to Mindstamp as `event_id`.
    pub id: Uuid,
    /// The kind, from the ingress path.
    pub kind: EventKind,
    /// Wall-clock receive time, Unix milliseconds.
    pub received_at_ms: u64,
    /// Routes that matched.
    pub routes: Vec<String>,
    /// Ids of the jobs created for it (one per destination).
    pub jobs: Vec<Uuid>,
    /// Body length in bytes.
    pub body_len: u64,
}

/// One delivery of one event to one destination.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobRecord {
    /// Delivery id, sent as `X-Hookrouter-Delivery`; stable across retries and replays.
    pub id: Uuid,
    /// The event delivered.
    pub event_id: Uuid,
    /// The event's kind, sent as `X-Hookrouter-Event`.
    pub kind: EventKind,
    /// Destination name; its current definition is looked up at each attempt.
    pub destination: String,
    /// Routes that sent the event to this destination.
    pub routes: Vec<String>,
    /// When the job was created, Unix ms.
    pub created_at_ms: u64,
    /// Attempts made so far (persisted, so backoff survives restarts).
    pub attempts: u32,
    /// Wall-clock time of the first attempt, Unix ms; the retry budget counts from here.
    pub first_attempt_at_ms: Option<u64>,
    /// Wall-clock time of the latest attempt, Unix ms.
    pub last_attempt_at_ms: Option<u64>,
    /// When the job is due; also encoded in its `due` index key.
    pub next_attempt_at_ms: u64,
    /// HTTP status of the latest attempt, if one came back.
    pub last_status: Option<u16>,
    /// Error of the latest attempt, if it failed.
    pub last_error: Option<String>,
    /// Attempts made before an operator last retried the job from the dead letters. Backoff
    /// counts from here, so a retried job gets a fresh budget while its attempt numbers (and
    /// the history stored under them) keep counting up.
    #[serde(default)]
    pub attempt_base: u32,
    /// Where the event's record (and body) is in the journal, once it is there.
    #[serde(default)]
    pub event_at: Option<Position>,
}

impl JobRecord {
    /// A new job of `event_id` for `destination`, due now and not attempted yet.
    pub fn new(
        event_id: Uuid,
        kind: EventKind,
        destination: String,
        routes: Vec<String>,
        now_ms: u64,
    ) -> JobRecord {
        JobRecord {
            id: Uuid::now_v7(),
            event_id,
            kind,
            destination,
            routes,
            created_at_ms: now_ms,
            attempts: 0,
            first_attempt_at_ms: None,
            last_attempt_at_ms: None,
            next_attempt_at_ms: now_ms,
            last_status: None,
            last_error: None,
            attempt_base: 0,
            event_at: None,
        }
    }

    /// Whether the job is waiting for its first attempt (since creation or since an
    /// operator retry) or for a retry after a failure.
    pub fn state(&self) -> JobState {
        if self.attempts > self.attempt_base {
            JobState::Retrying
        } else {
            JobState::Pending
        }
    }
}

/// Where a queued job stands, for `GET /queue` and the queue-depth gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Not attempted yet.
    Pending,
    /// Attempted, failed, waiting for its next attempt.
    Retrying,
}

/// A job that needs nothing more: delivered, or dropped from the dead letters by an
/// operator. Kept for `server.retention` so `event show` can tell its story.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SettledJob {
    /// The job as it was at the end.
    pub job: JobRecord,
    /// `delivered` or `dropped`.
    pub outcome: SettledOutcome,
    /// When it was settled, Unix ms.
    pub settled_at_ms: u64,
}

/// One attempt of one job, for the history an operator reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttemptRecord {
    /// 1-based attempt number.
    pub attempt: u32,
    /// Start of the attempt, Unix ms.
    pub at_ms: u64,
    /// How long the attempt took.
    pub latency_ms: u64,
    /// HTTP status, if a response came back.
    pub status: Option<u16>,
    /// `delivered`, `retry` or `permanent`.
    pub outcome: AttemptOutcome,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// A job that will not be attempted again without an operator's say-so.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    /// The job as it was at its last attempt.
    pub job: JobRecord,
    /// Why it was dead-lettered (permanent status, budget spent, destination removed...).
    pub reason: String,
    /// The first KiB of the last response body, if any.
    pub response_snippet: Option<String>,
    /// When it was dead-lettered, Unix ms.
    pub dead_at_ms: u64,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
