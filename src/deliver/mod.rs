//! Delivery: one worker per destination takes due jobs from the store, sends them, and
//! records each outcome (delivered, rescheduled with backoff, or dead-lettered).
//!
//! One worker per destination keeps destinations independent: a destination that times out
//! for ten seconds per attempt delays only its own jobs. Each worker looks its destination
//! up in the *current* config at every pass, so a reload that fixes a URL or token applies
//! to pending retries, and a destination removed from the config has its jobs
//! dead-lettered with that reason.

pub mod attempt;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::Destination;
use crate::queue::{now_ms, AttemptRecord, DeadLetter, JobRecord, Store, StoreError};
use crate::SharedConfig;
pub use attempt::Outcome;

/// Longest a worker sleeps without looking at the store again.
const MAX_IDLE: Duration = Duration::from_secs(5);
/// Pause after a store error, so a broken store does not turn into a hot loop.
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Starts and wakes the per-destination workers; cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: SharedConfig,
    client: reqwest::Client,
    workers: Mutex<HashMap<String, Arc<Notify>>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// Why the dispatcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The HTTP client could not be built (TLS roots).
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Dispatcher {
    /// Creates the dispatcher; call [`Dispatcher::reconcile`] to start workers.
    pub fn new(
        store: Store,
        config: SharedConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, DispatchError> {
        Ok(Dispatcher {
            inner: Arc::new(Inner {
                store,
                config,
                client: attempt::build_client()?,
                workers: Mutex::new(HashMap::new()),
                shutdown,
                tracker: TaskTracker::new(),
            }),
        })
    }

    /// Starts a worker for every configured destination and every destination that still
    /// has jobs in the store (those of removed destinations get dead-lettered).
    pub fn reconcile(&self) -> Result<(), DispatchError> {
        let mut names: HashSet<String> = self
            .inner
            .config
            .load()
            .destinations
            .keys()
            .cloned()
            .collect();
        names.extend(self.inner.store.destinations_with_jobs()?);
        let mut workers = self.inner.workers.lock().unwrap_or_else(|p| p.into_inner());
        for name in names {
            match workers.get(&name) {
                // Let a running worker re-read its destination now.
                Some(wake) => wake.notify_one(),
                None => {
                    let wake = Arc::new(Notify::new());
                    workers.insert(name.clone(), wake.clone());
                    let worker = Worker {
                        name,
                        inner: self.inner.clone(),
                        wake,
                    };
                    self.inner.tracker.spawn(worker.run());
                }
            }
        }
        Ok(())
    }

    /// Tells the worker of `destination` that new jobs are due.
    pub fn wake(&self, destination: &str) {
        let workers = self.inner.workers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = workers.get(destination) {
            w.notify_one();
        }
    }

    /// After shutdown was signalled: waits up to `grace` for deliveries in flight. Jobs
    /// still in flight after that stay pending and are sent again after the restart.
    pub async fn drain(&self, grace: Duration) {
        self.inner.tracker.close();
        if tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?grace, "deliveries still in flight at the end of the grace period; they stay queued");
        }
    }
}

struct Worker {
    name: String,
    inner: Arc<Inner>,
    wake: Arc<Notify>,
}

impl Worker {
    async fn run(self) {
        let mut in_flight: JoinSet<Result<(), StoreError>> = JoinSet::new();
        let mut ids: HashMap<tokio::task::Id, Uuid> = HashMap::new();
        loop {
            let Some(dest) = self
                .inner
                .config
                .load()
                .destinations
                .get(&self.name)
                .cloned()
            else {
                self.retire(&mut in_flight).await;
                return;
            };
            let mut pause = MAX_IDLE;
            let free = dest.concurrency.saturating_sub(in_flight.len());
            if free > 0 {
                let taken: HashSet<Uuid> = ids.values().copied().collect();
                let now = now_ms();
                match self
                    .inner
                    .store
                    .due_jobs(&self.name, now, free, |id| taken.contains(id))
                {
                    Ok(scan) => {
                        for job in scan.jobs {
                            let job_id = job.id;
                            let task = deliver(self.inner.clone(), dest.clone(), job);
                            let handle = in_flight.spawn(task);
                            ids.insert(handle.id(), job_id);
                        }
                        if let Some(next) = scan.next_due_ms {
                            pause = pause.min(Duration::from_millis(next.saturating_sub(now)));
                        }
                    }
                    Err(e) => {
                        tracing::error!(destination = %self.name, error = %e, "cannot read due jobs");
                        pause = STORE_ERROR_PAUSE;
                    }
                }
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => break,
                Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                    let (task, result) = match done {
                        Ok((task, result)) => (task, result),
                        Err(e) => (e.id(), Ok(())),
                    };
                    ids.remove(&task);
                    if let Err(e) = result {
                        tracing::error!(destination = %self.name, error = %e, "cannot record a delivery outcome; the job stays queued");
                        tokio::time::sleep(STORE_ERROR_PAUSE).await;
                    }
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        // Shutdown: let deliveries in flight finish (bounded by `Dispatcher::drain`).
        while in_flight.join_next().await.is_some() {}
    }

    /// The destination is gone from the config: finish what is in flight, then dead-letter
    /// every job still queued for it.
    async fn retire(&self, in_flight: &mut JoinSet<Result<(), StoreError>>) {
        while in_flight.join_next().await.is_some() {}
        let reason = format!("destination {:?} was removed from the config", self.name);
        loop {
            let jobs = match self.inner.store.all_jobs_of(&self.name, 1000) {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::error!(destination = %self.name, error = %e, "cannot read jobs of a removed destination");
                    break;
                }
            };
            if jobs.is_empty() {
                break;
            }
            for job in jobs {
                let letter = DeadLetter {
                    job: job.clone(),
                    reason: reason.clone(),
                    response_snippet: None,
                    dead_at_ms: now_ms(),
                };
                if let Err(e) = self.inner.store.dead_letter_job(&job, &letter, None) {
                    tracing::error!(destination = %self.name, error = %e, "cannot dead-letter a job");
                    return;
                }
                tracing::warn!(event_id = %job.event_id, delivery_id = %job.id, destination = %self.name, outcome = "dead", reason = %reason, "delivery dead-lettered");
            }
        }
        let mut workers = self.inner.workers.lock().unwrap_or_else(|p| p.into_inner());
        workers.remove(&self.name);
    }
}

/// Attempts one job and records the outcome.
async fn deliver(
    inner: Arc<Inner>,
    dest: Arc<Destination>,
    job: JobRecord,
) -> Result<(), StoreError> {
    let store = &inner.store;
    let Some(body) = store.load_body(&job.event_id)? else {
        let letter = DeadLetter {
            job: job.clone(),
            reason: "the event's body is missing from the store".into(),
            response_snippet: None,
            dead_at_ms: now_ms(),
        };
        return store.dead_letter_job(&job, &letter, None);
    };
    let started_ms = now_ms();
    let (outcome, latency) = attempt::attempt(&inner.client, &dest, &job, body).await;
    let number = job.attempts + 1;
    let record = AttemptRecord {
        attempt: number,
        at_ms: started_ms,
        latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
        status: outcome.status(),
        outcome: outcome.label().to_string(),
        error: match &outcome {
            Outcome::Delivered { .. } => None,
            Outcome::Retry { error, .. } | Outcome::Permanent { error, .. } => Some(error.clone()),
        },
    };
    let span = tracing::info_span!(
        "delivery",
        event_id = %job.event_id,
        kind = %job.kind,
        route = %job.routes.join(","),
        destination = %job.destination,
        delivery_id = %job.id,
        attempt = number,
        status = outcome.status(),
        latency_ms = record.latency_ms,
    );
    let _entered = span.enter();
    let first_attempt_ms = job.first_attempt_at_ms.unwrap_or(started_ms);
    let mut updated = job.clone();
    updated.attempts = number;
    updated.first_attempt_at_ms = Some(first_attempt_ms);
    updated.last_attempt_at_ms = Some(started_ms);
    updated.last_status = outcome.status();
    updated.last_error = record.error.clone();
    match outcome {
        Outcome::Delivered { .. } => {
            store.mark_delivered(&job, &record)?;
            tracing::info!(outcome = "delivered", "delivered");
        }
        Outcome::Retry { error, snippet, .. } => {
            let elapsed = Duration::from_millis(now_ms().saturating_sub(first_attempt_ms));
            match dest.retry.next_delay(number, elapsed) {
                Some(delay) => {
                    updated.next_attempt_at_ms =
                        now_ms() + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX / 2);
                    store.reschedule(&job, &updated, &record)?;
                    tracing::info!(outcome = "retry", error = %error, retry_in_ms = delay.as_millis() as u64, "delivery failed; will retry");
                }
                None => {
                    let reason = format!(
                        "gave up after {number} attempts over {}: {error}",
                        humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
                    );
                    dead_letter(store, &job, updated, reason, snippet, &record)?;
                }
            }
        }
        Outcome::Permanent { error, snippet, .. } => {
            dead_letter(
                store,
                &job,
                updated,
                format!("permanent failure: {error}"),
                snippet,
                &record,
            )?;
        }
    }
    Ok(())
}

fn dead_letter(
    store: &Store,
    old: &JobRecord,
    updated: JobRecord,
    reason: String,
    snippet: Option<String>,
    record: &AttemptRecord,
) -> Result<(), StoreError> {
    tracing::warn!(outcome = "dead", reason = %reason, "delivery dead-lettered");
    let letter = DeadLetter {
        job: updated,
        reason,
        response_snippet: snippet,
        dead_at_ms: now_ms(),
    };
    store.dead_letter_job(old, &letter, Some(record))
}
