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

mod model;
mod select;

pub use model::{PlannedEvent, ReplayError, ReplayPlan, ReplayRecord, ReplaySpec, ReplayState};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::deliver::Dispatcher;
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
        blocking(move || select::select(&store, &spec)).await
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
        blocking(move || select::plan(&store, &config, &spec, &selected, explain)).await
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
                blocking(move || select::build_chunk(&store, &config, &spec, (op, at), &chunk))
                    .await?;
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
