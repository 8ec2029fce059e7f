//! What a replay is: its spec, its record (saved in `v2.replays` with each chunk), the dry
//! run's plan, and its errors. The same JSON on disk and in the admin API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::queue::catalog::EventQuery;
use crate::queue::StoreError;

/// What to replay: events by id, or by time and filters; and optionally one destination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaySpec {
    /// These events (our event ids); when empty, `query` selects.
    #[serde(default)]
    pub events: Vec<Uuid>,
    /// The selection by time and filters, as `event list` takes it.
    #[serde(default)]
    pub query: Option<EventQuery>,
    /// Only this destination, when today's rules send the event there.
    #[serde(default)]
    pub to: Option<String>,
}

/// Where a replay operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayState {
    /// Queueing jobs (or waiting for room to).
    Running,
    /// Every selected event was handled.
    Done,
    /// Stopped by an operator.
    Cancelled,
    /// Stopped by a store error (`error` says which).
    Failed,
}

/// One replay operation, as saved in the store and shown by the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRecord {
    /// The operation's id (UUID v7).
    pub id: Uuid,
    /// When it was started (Unix ms).
    pub created_at_ms: u64,
    /// What it replays.
    pub spec: ReplaySpec,
    /// Where it stands.
    pub state: ReplayState,
    /// Events selected (by id, or passing the time, kind, route and destination filters).
    pub selected: u64,
    /// Events handled so far (jobs queued for them, or passed over).
    pub processed: u64,
    /// Handled events that got no job: the status or Mindstamp id filter left them out, or
    /// today's rules send them nowhere (or not to `to`).
    pub not_sent: u64,
    /// Jobs created, per destination.
    pub destinations: BTreeMap<String, u64>,
    /// The last event handled: a resumed replay goes on after it.
    pub cursor: Option<Uuid>,
    /// The time in the delivery ids of the next chunk (Unix ms): saved with the chunk
    /// before, so a chunk queued again after a crash gets the same delivery ids.
    #[serde(default)]
    pub chunk_ms: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// When it finished, was cancelled or failed (Unix ms).
    pub finished_at_ms: Option<u64>,
}

impl ReplayRecord {
    /// Jobs created in all.
    pub fn jobs(&self) -> u64 {
        self.destinations.values().sum()
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        // Serializing our own plain struct cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One event of a dry run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedEvent {
    /// Its event id.
    pub event_id: Uuid,
    /// Its kind.
    pub kind: String,
    /// When it was received (Unix ms).
    pub received_at_ms: u64,
    /// Where a replay would send it now.
    pub destinations: Vec<String>,
    /// Why (each route's conditions as `hookrouter route --explain` shows them), when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<String>,
}

/// What a replay would do, sending nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayPlan {
    /// Events selected, as a replay counts them.
    pub selected: u64,
    /// Of those, events that would get no job.
    pub not_sent: u64,
    /// Jobs that would be created, per destination.
    pub destinations: BTreeMap<String, u64>,
    /// The first [`PLAN_LISTED`] events that passed every filter, oldest first.
    pub events: Vec<PlannedEvent>,
    /// Whether `events` lists every one.
    pub complete: bool,
}

/// Why a replay could not be started, found or cancelled.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Neither event ids nor a time selection.
    #[error("say what to replay: event ids, or --since (with filters)")]
    NothingSelected,
    /// Both event ids and a time selection.
    #[error("give event ids or --since with filters, not both")]
    Ambiguous,
    /// `to` names no configured destination.
    #[error("destination {0:?} is not in the config")]
    UnknownDestination(String),
    /// Some event ids are not in the journal.
    #[error("no event {} (never accepted, or purged after server.retention)", .0.join(", "))]
    UnknownEvents(Vec<String>),
    /// No such replay operation.
    #[error("no replay {0}")]
    NoReplay(Uuid),
    /// The operation has stopped already.
    #[error("replay {0} is {1:?} already")]
    NotRunning(Uuid, ReplayState),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking task did not finish.
    #[error("replay task: {0}")]
    Task(String),
}
