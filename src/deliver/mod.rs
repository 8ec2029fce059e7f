//! Delivery: one worker per destination takes due jobs from the store, sends them, and
//! records each outcome (delivered, rescheduled with backoff, or dead-lettered).
//!
//! One worker per destination keeps destinations independent: a destination that times out
//! for ten seconds per attempt delays only its own jobs. Each worker looks its destination
//! up in the *current* config at every pass, so a reload that fixes a URL or token applies
//! to pending retries, and a destination removed from the config has its jobs
//! dead-lettered with that reason.
//!
//! The worker also paces its destination ([`pace`]): it takes no job while the rate limit
//! or a receiver's `Retry-After` says "not yet", so waiting is never an attempt and never
//! blocks another destination. A job older than the destination's `max_age` is
//! dead-lettered as stale before it is sent. Requests are built by [`format::render_request`]
//! from the destination's compiled [`template`]s, and signed by [`sign`] when configured.

pub mod attempt;
pub mod format;
pub mod pace;
pub mod sign;
pub mod template;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::Destination;
use crate::queue::{now_ms, AttemptRecord, DeadLetter, JobRecord, Store, StoreError};
use crate::SharedConfig;
pub use attempt::Outcome;
pub use format::{render_request, DeliveryIds, RenderError, RenderedRequest};
use pace::Pacer;

/// What a finished delivery task tells its worker: the pause the receiver asked for.
type Done = Result<Option<Duration>, StoreError>;

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
        let mut in_flight: JoinSet<Done> = JoinSet::new();
        let mut ids: HashMap<tokio::task::Id, Uuid> = HashMap::new();
        let mut pacer = Pacer::default();
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
            match pacer.wait(Instant::now()) {
                Some(wait) => pause = pause.min(wait),
                None if free > 0 => {
                    pause = pause.min(self.take_jobs(
                        &dest,
                        free,
                        &mut pacer,
                        &mut in_flight,
                        &mut ids,
                    ));
                }
                None => {}
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => break,
                Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                    let (task, result) = match done {
                        Ok((task, result)) => (task, result),
                        Err(e) => (e.id(), Ok(None)),
                    };
                    ids.remove(&task);
                    match result {
                        Ok(Some(delay)) if !delay.is_zero() => {
                            if pacer.pause(Instant::now(), delay) {
                                tracing::warn!(destination = %self.name, pause_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "the destination asked to slow down (Retry-After); pausing all its deliveries");
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(destination = %self.name, error = %e, "cannot record a delivery outcome; the job stays queued");
                            tokio::time::sleep(STORE_ERROR_PAUSE).await;
                        }
                    }
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        // Shutdown: let deliveries in flight finish (bounded by `Dispatcher::drain`).
        while in_flight.join_next().await.is_some() {}
    }

    /// Starts up to `free` due jobs (one when rate-limited), dead-lettering stale ones on
    /// the way; returns how long the worker may sleep before looking again.
    fn take_jobs(
        &self,
        dest: &Arc<Destination>,
        free: usize,
        pacer: &mut Pacer,
        in_flight: &mut JoinSet<Done>,
        ids: &mut HashMap<tokio::task::Id, Uuid>,
    ) -> Duration {
        let taken: HashSet<Uuid> = ids.values().copied().collect();
        let now = now_ms();
        let scan = match self
            .inner
            .store
            .due_jobs(&self.name, now, free, |id| taken.contains(id))
        {
            Ok(scan) => scan,
            Err(e) => {
                tracing::error!(destination = %self.name, error = %e, "cannot read due jobs");
                return STORE_ERROR_PAUSE;
            }
        };
        let mut pause = match scan.next_due_ms {
            Some(next) => Duration::from_millis(next.saturating_sub(now)),
            None => MAX_IDLE,
        };
        for job in scan.jobs {
            if let Some(reason) = stale(dest, &job, now) {
                if let Err(e) =
                    dead_letter(&self.inner.store, &job, job.clone(), reason, None, None)
                {
                    tracing::error!(destination = %self.name, error = %e, "cannot dead-letter a stale job");
                    return STORE_ERROR_PAUSE;
                }
                // Look again at once: a fresh job may be next.
                pause = Duration::ZERO;
                continue;
            }
            let job_id = job.id;
            let handle = in_flight.spawn(deliver(self.inner.clone(), dest.clone(), job));
            ids.insert(handle.id(), job_id);
            pacer.sent(Instant::now(), dest.rate_limit);
            if let Some(limit) = dest.rate_limit {
                return pause.min(limit.interval());
            }
        }
        pause
    }

    /// The destination is gone from the config: finish what is in flight, then dead-letter
    /// every job still queued for it.
    async fn retire(&self, in_flight: &mut JoinSet<Done>) {
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

/// Why `job` is too old to send to `dest`, if it is (`max_age`, counted from when the
/// event was received).
fn stale(dest: &Destination, job: &JobRecord, now_ms: u64) -> Option<String> {
    let max_age = dest.max_age?;
    let age = Duration::from_millis(now_ms.saturating_sub(job.created_at_ms));
    (age > max_age).then(|| {
        format!(
            "stale: the event is {} old, older than max_age {}",
            humantime::format_duration(Duration::from_secs(age.as_secs())),
            humantime::format_duration(max_age)
        )
    })
}

/// Attempts one job and records the outcome; returns the pause the receiver asked for
/// (`Retry-After`, capped by `max_interval`) so the worker can hold the whole destination.
async fn deliver(inner: Arc<Inner>, dest: Arc<Destination>, job: JobRecord) -> Done {
    let store = &inner.store;
    let Some(body) = store.load_body(&job.event_id)? else {
        let reason = "the event's body is missing from the store".to_string();
        dead_letter(store, &job, job.clone(), reason, None, None)?;
        return Ok(None);
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
            Ok(None)
        }
        Outcome::Retry {
            error,
            snippet,
            retry_after,
            ..
        } => {
            let elapsed = Duration::from_millis(now_ms().saturating_sub(first_attempt_ms));
            // `Retry-After: 0` asks for nothing: a zero hint would retry in a hot loop.
            let hint = retry_after
                .filter(|d| !d.is_zero())
                .map(|d| d.min(dest.retry.max_interval));
            match dest.retry.next_delay_hinted(number, elapsed, hint) {
                Some(delay) => {
                    updated.next_attempt_at_ms =
                        now_ms() + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX / 2);
                    store.reschedule(&job, &updated, &record)?;
                    tracing::info!(outcome = "retry", error = %error, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "delivery failed; will retry");
                    Ok(hint)
                }
                None => {
                    let reason = format!(
                        "gave up after {number} attempts over {}: {error}",
                        humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
                    );
                    dead_letter(store, &job, updated, reason, snippet, Some(&record))?;
                    Ok(hint)
                }
            }
        }
        Outcome::Permanent { error, snippet, .. } => {
            let reason = format!("permanent failure: {error}");
            dead_letter(store, &job, updated, reason, snippet, Some(&record))?;
            Ok(None)
        }
    }
}

fn dead_letter(
    store: &Store,
    old: &JobRecord,
    updated: JobRecord,
    reason: String,
    snippet: Option<String>,
    record: Option<&AttemptRecord>,
) -> Result<(), StoreError> {
    tracing::warn!(event_id = %old.event_id, delivery_id = %old.id, destination = %old.destination, outcome = "dead", reason = %reason, "delivery dead-lettered");
    let letter = DeadLetter {
        job: updated,
        reason,
        response_snippet: snippet,
        dead_at_ms: now_ms(),
    };
    store.dead_letter_job(old, &letter, record)
}
