//! Replay: recorded events sent again through **today's** rules, as new jobs.
//!
//! An operation selects events from the journal (by id, or by time and the filters of
//! `event list`), decides for each where the rules in force now send it (only to `to` when
//! it is given: backfilling one destination without sending the others anything twice) and
//! queues one new job per destination, with a new delivery id, pointing at the recorded
//! event and body ([`crate::queue::Store::queue_replayed`]).
//!
//! A replay runs in the background, a chunk of events at a time, and creates a chunk only
//! while each destination it sends to has fewer than [`WINDOW`] jobs queued: the workers
//! deliver at each destination's own pace (`rate_limit`, `concurrency`, `Retry-After`), and
//! a replay of a month never fills the queue (`server.max_queue`) or starves live traffic.
//! Its record (cursor, counts, state) is saved with each chunk in the same sled
//! transaction, so a replay survives a restart: it resumes after the last chunk queued.
//! Cancelling stops it from queueing more; jobs already queued (at most [`WINDOW`] per
//! destination) are delivered.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::Config;
use crate::deliver::Dispatcher;
use crate::queue::catalog::EventQuery;
use crate::queue::journal::Position;
use crate::queue::{now_ms, JobRecord, Store, StoreError};
use crate::SharedConfig;

/// Jobs a destination may have queued before a replay waits to queue more for it.
pub const WINDOW: u64 = 100;
/// Events read and queued per chunk (one sled transaction).
const CHUNK: usize = 50;
/// How often a replay waiting for room looks at the queue again.
const POLL: Duration = Duration::from_millis(200);
/// Events a dry run lists one by one (its counts cover all of them).
pub const PLAN_LISTED: usize = 1000;

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

    fn encode(&self) -> Vec<u8> {
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

/// The replay operations of a running daemon; cheap to clone.
#[derive(Clone)]
pub struct Replays {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: SharedConfig,
    dispatcher: Dispatcher,
    /// Every operation's latest record; a record is saved only under this lock, so a
    /// cancel and a chunk never overwrite each other.
    records: Mutex<BTreeMap<Uuid, ReplayRecord>>,
    /// The cancel token of each running operation.
    running: Mutex<HashMap<Uuid, CancellationToken>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Replays {
    /// Loads the saved operations and resumes those still running (after a restart).
    pub fn start(
        store: Store,
        config: SharedConfig,
        dispatcher: Dispatcher,
        shutdown: CancellationToken,
    ) -> Result<Replays, ReplayError> {
        let mut records = BTreeMap::new();
        for (id, bytes) in store.replay_records()? {
            match serde_json::from_slice::<ReplayRecord>(&bytes) {
                Ok(r) => {
                    records.insert(id, r);
                }
                Err(e) => {
                    tracing::error!(replay = %id, error = %e, "a saved replay record does not decode; left as it is")
                }
            }
        }
        let replays = Replays {
            inner: Arc::new(Inner {
                store,
                config,
                dispatcher,
                records: Mutex::new(records.clone()),
                running: Mutex::new(HashMap::new()),
                shutdown,
                tasks: TaskTracker::new(),
            }),
        };
        for r in records.values() {
            if r.state == ReplayState::Running {
                tracing::info!(replay = %r.id, processed = r.processed, selected = r.selected, "resuming a replay after the restart");
                replays.spawn(r.id);
            }
        }
        Ok(replays)
    }

    /// Every operation, oldest first.
    pub fn list(&self) -> Vec<ReplayRecord> {
        self.lock().values().cloned().collect()
    }

    /// One operation.
    pub fn get(&self, id: &Uuid) -> Option<ReplayRecord> {
        self.lock().get(id).cloned()
    }

    /// Waits for every replay task to stop (they stop at shutdown), so that none writes to
    /// the store once it is being closed.
    pub async fn wait(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Uuid, ReplayRecord>> {
        self.inner.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks `spec` against the config in force and selects its events (oldest first).
    async fn select(&self, spec: &ReplaySpec) -> Result<Vec<(Uuid, Position)>, ReplayError> {
        if let Some(to) = &spec.to {
            if !self.inner.config.load().destinations.contains_key(to) {
                return Err(ReplayError::UnknownDestination(to.clone()));
            }
        }
        let (store, spec) = (self.inner.store.clone(), spec.clone());
        blocking(move || select(&store, &spec)).await
    }

    /// Starts a replay in the background; returns its record.
    pub async fn begin(&self, spec: ReplaySpec) -> Result<ReplayRecord, ReplayError> {
        let selected = self.select(&spec).await?;
        let record = ReplayRecord {
            id: Uuid::now_v7(),
            created_at_ms: now_ms(),
            spec,
            state: ReplayState::Running,
            selected: selected.len() as u64,
            processed: 0,
            not_sent: 0,
            destinations: BTreeMap::new(),
            cursor: None,
            chunk_ms: now_ms(),
            error: None,
            finished_at_ms: None,
        };
        {
            let mut records = self.lock();
            self.inner.store.save_replay(&record.id, &record.encode())?;
            records.insert(record.id, record.clone());
        }
        tracing::info!(replay = %record.id, selected = record.selected, to = record.spec.to.as_deref().unwrap_or("(today's rules)"), "replay started");
        self.spawn(record.id);
        Ok(record)
    }

    /// Stops a running replay from queueing more.
    pub fn cancel(&self, id: &Uuid) -> Result<ReplayRecord, ReplayError> {
        let mut records = self.lock();
        let record = records.get_mut(id).ok_or(ReplayError::NoReplay(*id))?;
        if record.state != ReplayState::Running {
            return Err(ReplayError::NotRunning(*id, record.state));
        }
        let mut next = record.clone();
        next.state = ReplayState::Cancelled;
        next.finished_at_ms = Some(now_ms());
        self.inner.store.save_replay(id, &next.encode())?;
        *record = next.clone();
        drop(records);
        if let Some(token) = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            token.cancel();
        }
        tracing::info!(replay = %id, processed = next.processed, selected = next.selected, jobs = next.jobs(), "replay cancelled");
        Ok(next)
    }

    /// What replaying `spec` would do now, sending nothing.
    pub async fn plan(&self, spec: ReplaySpec, explain: bool) -> Result<ReplayPlan, ReplayError> {
        let selected = self.select(&spec).await?;
        let (store, config) = (self.inner.store.clone(), self.inner.config.load_full());
        blocking(move || plan(&store, &config, &spec, &selected, explain)).await
    }

    fn spawn(&self, id: Uuid) {
        let token = self.inner.shutdown.child_token();
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, token.clone());
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            if let Err(e) = this.run(id, &token).await {
                this.fail(id, &e);
            }
            this.inner
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        });
    }

    fn fail(&self, id: Uuid, e: &ReplayError) {
        if matches!(e, ReplayError::Store(StoreError::Closed)) {
            return; // shutting down: resumed at the next start
        }
        tracing::error!(replay = %id, error = %e, "replay failed");
        let mut records = self.lock();
        if let Some(r) = records.get_mut(&id) {
            r.state = ReplayState::Failed;
            r.error = Some(e.to_string());
            r.finished_at_ms = Some(now_ms());
            let _ = self.inner.store.save_replay(&id, &r.encode());
        }
    }

    /// Queues the operation's events, a chunk at a time, until done, cancelled or shut down.
    async fn run(&self, id: Uuid, stop: &CancellationToken) -> Result<(), ReplayError> {
        let Some(record) = self.get(&id) else {
            return Ok(());
        };
        let mut todo = self.select(&record.spec).await?;
        todo.retain(|(event, _)| record.cursor.is_none_or(|c| *event > c));
        for chunk in todo.chunks(CHUNK) {
            let (store, config, spec) = (
                self.inner.store.clone(),
                self.inner.config.load_full(),
                record.spec.clone(),
            );
            let chunk = chunk.to_vec();
            let (op, at) = (record.id, self.get(&id).map_or(0, |r| r.chunk_ms));
            let jobs =
                blocking(move || build_chunk(&store, &config, &spec, (op, at), &chunk)).await?;
            if !self.wait_for_room(&jobs.jobs, stop).await {
                return Ok(());
            }
            let mut records = self.lock();
            let Some(r) = records.get_mut(&id) else {
                return Ok(());
            };
            if r.state != ReplayState::Running || stop.is_cancelled() {
                return Ok(());
            }
            let mut next = r.clone();
            next.processed += jobs.events;
            next.not_sent += jobs.not_sent;
            next.cursor = jobs.last;
            next.chunk_ms = now_ms();
            for job in &jobs.jobs {
                *next
                    .destinations
                    .entry(job.destination.clone())
                    .or_default() += 1;
            }
            self.inner
                .store
                .queue_replayed(&id, &next.encode(), &jobs.jobs)?;
            *r = next;
            drop(records);
            let mut woken: Vec<&str> = jobs.jobs.iter().map(|j| j.destination.as_str()).collect();
            woken.sort_unstable();
            woken.dedup();
            for d in woken {
                self.inner.dispatcher.wake(d);
            }
        }
        let mut records = self.lock();
        if let Some(r) = records.get_mut(&id) {
            if r.state == ReplayState::Running {
                r.state = ReplayState::Done;
                r.finished_at_ms = Some(now_ms());
                self.inner.store.save_replay(&id, &r.encode())?;
                tracing::info!(replay = %id, events = r.processed, jobs = r.jobs(), not_sent = r.not_sent, "replay done");
            }
        }
        Ok(())
    }

    /// Waits until every destination of `jobs` has fewer than [`WINDOW`] jobs queued; false
    /// if the replay was cancelled or the daemon stops meanwhile.
    async fn wait_for_room(&self, jobs: &[JobRecord], stop: &CancellationToken) -> bool {
        loop {
            if stop.is_cancelled() {
                return false;
            }
            let depth = self.inner.store.stats().snapshot();
            let full = jobs.iter().any(|j| {
                depth
                    .get(&j.destination)
                    .is_some_and(|d| d.pending + d.retrying >= WINDOW)
            });
            if !full {
                return true;
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReplayError> + Send + 'static,
) -> Result<T, ReplayError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ReplayError::Task(e.to_string()))?
}

/// The query that judges each selected event: the spec's, or none for events by id.
fn judge_query(spec: &ReplaySpec) -> EventQuery {
    spec.query.clone().unwrap_or_default()
}

/// The events `spec` selects, oldest first.
fn select(store: &Store, spec: &ReplaySpec) -> Result<Vec<(Uuid, Position)>, ReplayError> {
    match (&spec.query, spec.events.is_empty()) {
        (None, true) => Err(ReplayError::NothingSelected),
        (Some(_), false) => Err(ReplayError::Ambiguous),
        (Some(q), true) => Ok(store.select_events(q)?),
        (None, false) => {
            let mut found = Vec::new();
            let mut missing = Vec::new();
            for id in &spec.events {
                match store.event_position(id)? {
                    Some(at) => found.push((*id, at)),
                    None => missing.push(id.to_string()),
                }
            }
            if !missing.is_empty() {
                return Err(ReplayError::UnknownEvents(missing));
            }
            found.sort_unstable_by_key(|(id, _)| *id);
            found.dedup_by_key(|(id, _)| *id);
            Ok(found)
        }
    }
}

/// Today's destinations for one recorded event (only `to`, when given), with the routes
/// that send it there, and the routing report when asked to explain.
fn decide(
    config: &Config,
    spec: &ReplaySpec,
    kind: crate::event::EventKind,
    body: &[u8],
    explain: bool,
) -> (Vec<(String, Vec<String>)>, Option<String>) {
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (Vec::new(), explain.then(|| "the body is not JSON".into()));
    };
    let report = crate::inspect::route_report(config, kind, &payload, explain);
    let text = explain.then(|| crate::inspect::render_report(&report));
    let deliveries = report
        .deliveries
        .into_iter()
        .filter(|d| spec.to.as_ref().is_none_or(|to| &d.destination == to))
        .map(|d| (d.destination, d.routes))
        .collect();
    (deliveries, text)
}

/// The jobs of one chunk of events, and what it counts for the record.
struct Chunk {
    jobs: Vec<JobRecord>,
    events: u64,
    not_sent: u64,
    last: Option<Uuid>,
}

/// The delivery id of replay `op`'s job of `event` for `destination`: a UUID v7 with the
/// chunk's time and, for its random bits, a digest of the three, so that a chunk queued
/// again after a crash (its first queueing lost with sled's last second) reuses the ids
/// receivers may already have seen, and they can de-duplicate (at-least-once, as ever).
fn delivery_id(op: &Uuid, at_ms: u64, event: &Uuid, destination: &str) -> Uuid {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(op.as_bytes())
        .chain_update(event.as_bytes())
        .chain_update(destination.as_bytes())
        .finalize();
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(at_ms, &random).into_uuid()
}

fn build_chunk(
    store: &Store,
    config: &Config,
    spec: &ReplaySpec,
    (op, now): (Uuid, u64),
    events: &[(Uuid, Position)],
) -> Result<Chunk, ReplayError> {
    let q = judge_query(spec);
    let mut chunk = Chunk {
        jobs: Vec::new(),
        events: 0,
        not_sent: 0,
        last: None,
    };
    for &(id, at) in events {
        chunk.events += 1;
        chunk.last = Some(id);
        let Some((found, body)) = store.judge_event(&q, at)? else {
            chunk.not_sent += 1;
            continue;
        };
        let (deliveries, _) = decide(config, spec, found.header.kind, &body, false);
        if deliveries.is_empty() {
            chunk.not_sent += 1;
        }
        for (destination, routes) in deliveries {
            let job_id = delivery_id(&op, now, &id, &destination);
            let mut job = JobRecord::new(id, found.header.kind, destination, routes, now);
            job.id = job_id;
            job.event_at = Some(at);
            chunk.jobs.push(job);
        }
    }
    Ok(chunk)
}

fn plan(
    store: &Store,
    config: &Config,
    spec: &ReplaySpec,
    selected: &[(Uuid, Position)],
    explain: bool,
) -> Result<ReplayPlan, ReplayError> {
    let q = judge_query(spec);
    let mut plan = ReplayPlan {
        selected: selected.len() as u64,
        complete: true,
        ..ReplayPlan::default()
    };
    for &(id, at) in selected {
        let Some((found, body)) = store.judge_event(&q, at)? else {
            plan.not_sent += 1;
            continue;
        };
        let listed = plan.events.len() < PLAN_LISTED;
        let (deliveries, text) = decide(config, spec, found.header.kind, &body, explain && listed);
        if deliveries.is_empty() {
            plan.not_sent += 1;
        }
        for (d, _) in &deliveries {
            *plan.destinations.entry(d.clone()).or_default() += 1;
        }
        if listed {
            plan.events.push(PlannedEvent {
                event_id: id,
                kind: found.header.kind.to_string(),
                received_at_ms: found.header.received_at_ms,
                destinations: deliveries.into_iter().map(|(d, _)| d).collect(),
                explain: text,
            });
        } else {
            plan.complete = false;
        }
    }
    Ok(plan)
}
