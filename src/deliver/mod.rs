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
pub mod authorized;
pub mod format;
mod job;
pub mod outcome;
pub mod pace;
pub mod transition;

// The compiled destination's parts, at their old paths.
pub use crate::destination::{sign, template, url_template};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::alert::Alerts;
use crate::destination::Destination;
use crate::health::{Gate, HealthBoard};
use crate::metrics::{DeliveryOutcome, Metrics};
use crate::notify::Heartbeats;
use crate::queue::{now_ms, DeadLetter, Store, StoreError, Transition};
use crate::SharedConfig;
pub use format::{render_request, DeliveryIds, RenderError, RenderedRequest};
pub use outcome::Outcome;
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
    /// OAuth2 tokens of the destinations that use them.
    auth: crate::auth::Authorizer,
    workers: Mutex<HashMap<String, Arc<Notify>>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    metrics: Arc<Metrics>,
    heartbeats: Heartbeats,
    health: HealthBoard,
    alerts: Alerts,
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
        metrics: Arc<Metrics>,
        health: HealthBoard,
        alerts: Alerts,
    ) -> Result<Self, DispatchError> {
        let client = attempt::build_client()?;
        let auth = crate::auth::Authorizer::new(client.clone(), Some(store.clone()));
        Ok(Dispatcher {
            inner: Arc::new(Inner {
                store,
                config,
                client,
                auth,
                workers: Mutex::new(HashMap::new()),
                shutdown,
                tracker: TaskTracker::new(),
                metrics,
                heartbeats: Heartbeats::default(),
                health,
                alerts,
            }),
        })
    }

    /// The workers' heartbeats, which the systemd watchdog reads to tell a wedged delivery
    /// loop from an idle one.
    pub fn heartbeats(&self) -> Heartbeats {
        self.inner.heartbeats.clone()
    }

    /// After a reload: releases the destinations held because their credentials were
    /// refused, so the reloaded credentials get tried (reconcile then wakes the workers).
    pub fn release_credential_holds(&self) {
        match self.inner.health.release_credential_holds(now_ms()) {
            Ok(released) => {
                for name in released {
                    tracing::info!(
                        destination = %name,
                        "released the hold for refused credentials: the reloaded ones are tried next"
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not release the holds for refused credentials");
            }
        }
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
    /// A delivery task ended: a receiver's `Retry-After` pauses the whole destination; a
    /// store error is logged and the worker pauses before it looks again.
    async fn finished(&self, result: Done, pacer: &mut Pacer) {
        match result {
            Ok(Some(delay)) if !delay.is_zero() => {
                self.inner.metrics.paused(&self.name, delay);
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

    async fn run(self) {
        let mut in_flight: JoinSet<Done> = JoinSet::new();
        let mut ids: HashMap<tokio::task::Id, Uuid> = HashMap::new();
        let mut pacer = Pacer::default();
        loop {
            self.inner.heartbeats.beat(&self.name);
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
                    // A held destination gets nothing but its probe.
                    let gate = self.inner.health.gate(&self.name, now_ms(), &dest.health);
                    // While held, its queue waits in the journal, not in memory or sled.
                    self.inner
                        .store
                        .park(&self.name, !matches!(gate, Gate::Open));
                    let (take, wait) = plan_pass(gate, free);
                    pause = pause.min(wait);
                    if let Some(take) = take {
                        pause = pause.min(self.take_jobs(
                            &dest,
                            take,
                            &mut pacer,
                            &mut in_flight,
                            &mut ids,
                        ));
                    }
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
                    self.finished(result, &mut pacer).await;
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        // Shutdown: let deliveries in flight finish (bounded by `Dispatcher::drain`).
        while in_flight.join_next().await.is_some() {}
    }

    /// Starts up to `free` due jobs (one when rate-limited or probing), dead-lettering
    /// stale ones on the way; returns how long the worker may sleep before looking again.
    fn take_jobs(
        &self,
        dest: &Arc<Destination>,
        take: Take,
        pacer: &mut Pacer,
        in_flight: &mut JoinSet<Done>,
        ids: &mut HashMap<tokio::task::Id, Uuid>,
    ) -> Duration {
        let taken: HashSet<Uuid> = ids.values().copied().collect();
        let now = now_ms();
        let LeaseSize {
            limit,
            fresh,
            probe,
        } = lease_for(take, dest.rate_limit.is_some());
        let scan = match self
            .inner
            .store
            .lease_with(&self.name, now, limit, fresh, |id| taken.contains(id))
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
        let mut leases = scan.leases.into_iter();
        while let Some(lease) = leases.next() {
            let held = self
                .inner
                .health
                .held_between(&self.name, lease.job.created_at_ms, now);
            if let Some(stale) = transition::stale(&lease.job, dest.max_age, now, held) {
                if let Err(e) = self.inner.settle_dead(&lease, stale) {
                    tracing::error!(destination = %self.name, error = %e, "cannot dead-letter a stale job");
                    // The leases not started go back where they came from.
                    self.inner.store.unlease(leases.collect());
                    return STORE_ERROR_PAUSE;
                }
                self.inner
                    .metrics
                    .delivery(&self.name, DeliveryOutcome::Dead, None);
                // Look again at once: a fresh job may be next.
                pause = Duration::ZERO;
                continue;
            }
            let job_id = lease.job.id;
            let handle =
                in_flight.spawn(job::deliver(self.inner.clone(), dest.clone(), lease, probe));
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
            let leases = match self.inner.store.lease_all(&self.name, 1000) {
                Ok(leases) => leases,
                Err(e) => {
                    tracing::error!(destination = %self.name, error = %e, "cannot read jobs of a removed destination");
                    break;
                }
            };
            if leases.is_empty() {
                break;
            }
            for lease in leases {
                let letter = DeadLetter {
                    job: lease.job.clone(),
                    reason: reason.clone(),
                    response_snippet: None,
                    dead_at_ms: now_ms(),
                };
                let dead = Transition::Dead {
                    letter,
                    attempt: None,
                };
                if let Err(e) = self.inner.settle_dead(&lease, dead) {
                    tracing::error!(destination = %self.name, error = %e, "cannot dead-letter a job");
                    return;
                }
                self.inner
                    .metrics
                    .delivery(&self.name, DeliveryOutcome::Dead, None);
            }
        }
        self.inner.heartbeats.forget(&self.name);
        if let Err(e) = self.inner.health.forget(&self.name) {
            tracing::warn!(destination = %self.name, error = %e, "cannot forget the removed destination's health record");
        }
        let mut workers = self.inner.workers.lock().unwrap_or_else(|p| p.into_inner());
        workers.remove(&self.name);
    }
}

/// What one pass takes, given the destination's gate and the worker's `free` places, and
/// the longest the worker may sleep before it looks again.
fn plan_pass(gate: Gate, free: usize) -> (Option<Take>, Duration) {
    match gate {
        Gate::Open => (Some(Take::Jobs(free)), MAX_IDLE),
        Gate::Probe => (Some(Take::Probe), MAX_IDLE),
        Gate::Paced { fresh, next_in } => (Some(Take::Paced { free, fresh }), next_in),
        Gate::Closed(wait) => (None, wait.unwrap_or(MAX_IDLE)),
    }
}

/// How many jobs one pass leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LeaseSize {
    /// Jobs in all.
    limit: usize,
    /// Of which fresh ones (not yet attempted) at most.
    fresh: usize,
    /// The one job is a held destination's probe.
    probe: bool,
}

/// The lease of `take`: a rate-limited destination sends one job per pass, so it leases no
/// more than that.
fn lease_for(take: Take, rate_limited: bool) -> LeaseSize {
    let (free, fresh, probe) = match take {
        Take::Jobs(free) => (free, free, false),
        Take::Paced { free, fresh } => (free, usize::from(fresh), false),
        Take::Probe => (1, 1, true),
    };
    let limit = if rate_limited { 1 } else { free };
    LeaseSize {
        limit,
        fresh: fresh.min(limit),
        probe,
    }
}

/// What the worker takes on one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// Up to this many due jobs.
    Jobs(usize),
    /// Up to `free` retries due in the retry queue, and a fresh job only with `fresh` (a
    /// streak of failures: see `health.failing_pace`).
    Paced {
        /// Jobs the worker may start.
        free: usize,
        /// Whether one of them may be a fresh job.
        fresh: bool,
    },
    /// One job, as the probe of a held destination.
    Probe,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_gate_plans_its_pass() {
        let secs = Duration::from_secs;
        assert_eq!(plan_pass(Gate::Open, 8), (Some(Take::Jobs(8)), MAX_IDLE));
        assert_eq!(plan_pass(Gate::Probe, 8), (Some(Take::Probe), MAX_IDLE));
        let paced = Gate::Paced {
            fresh: false,
            next_in: secs(1),
        };
        let take = Take::Paced {
            free: 8,
            fresh: false,
        };
        assert_eq!(plan_pass(paced, 8), (Some(take), secs(1)));
        assert_eq!(plan_pass(Gate::Closed(Some(secs(2))), 8), (None, secs(2)));
        assert_eq!(plan_pass(Gate::Closed(None), 8), (None, MAX_IDLE));
    }

    #[test]
    fn a_lease_takes_what_the_pass_allows() {
        let lease = |limit, fresh, probe| LeaseSize {
            limit,
            fresh,
            probe,
        };
        assert_eq!(lease_for(Take::Jobs(8), false), lease(8, 8, false));
        assert_eq!(
            lease_for(Take::Jobs(8), true),
            lease(1, 1, false),
            "rate-limited: one per pass"
        );
        let paced = |fresh| Take::Paced { free: 8, fresh };
        assert_eq!(
            lease_for(paced(false), false),
            lease(8, 0, false),
            "retries only"
        );
        assert_eq!(lease_for(paced(true), false), lease(8, 1, false));
        assert_eq!(lease_for(paced(true), true), lease(1, 1, false));
        assert_eq!(lease_for(Take::Probe, false), lease(1, 1, true));
    }
}
