//! Destination health: `healthy`, `failing` or `held`, from each destination's recent
//! attempts ([`machine`]), with the thresholds of `health:` ([`policy`]).
//!
//! A destination that is down should not have every queued job retried on its own
//! schedule until each one's budget runs out and it is dead-lettered: it is **held**. No job
//! of a held destination is attempted except one probe at a growing interval; the queue is
//! kept, and the time spent held does not count against a job's `max_elapsed` or
//! `max_age` (the job did not fail, its destination did). A probe that succeeds resumes
//! delivery. An operator can hold and release by hand.
//!
//! The [`HealthBoard`] is shared by the delivery workers (who ask [`HealthBoard::gate`]
//! before taking jobs and [`HealthBoard::record`] after each attempt), the admin API, and
//! metrics. A change is logged here, persisted in the store (so a hold survives a restart)
//! and handed to the listener set with [`HealthBoard::on_change`] (the alerts).

pub mod machine;
pub mod policy;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use machine::{AttemptResult, Change, DestinationHealth, Gate, HealthState};
pub use policy::HealthPolicy;

use crate::queue::{Store, StoreError};

/// A change of one destination's health, with the state it left the destination in.
#[derive(Debug, Clone)]
pub struct HealthEvent {
    /// The destination.
    pub destination: String,
    /// What changed.
    pub change: Change,
    /// The destination's health after the change.
    pub health: DestinationHealth,
}

type Listener = Box<dyn Fn(&HealthEvent) + Send + Sync>;

/// Every destination's health; cheap to clone.
#[derive(Clone)]
pub struct HealthBoard {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    states: Mutex<HashMap<String, DestinationHealth>>,
    listener: OnceLock<Listener>,
}

impl HealthBoard {
    /// The board with the health records `store` kept (held destinations stay held). A
    /// record that cannot be read is logged and the destination starts healthy.
    pub fn open(store: Store, now_ms: u64) -> Result<HealthBoard, StoreError> {
        let mut states = HashMap::new();
        for (name, bytes) in store.health_records()? {
            match serde_json::from_slice::<DestinationHealth>(&bytes) {
                Ok(health) => {
                    if health.state == HealthState::Held {
                        tracing::warn!(destination = %name, since_ms = health.since_ms, by_operator = health.held_by_operator, "the destination is still held from before the restart");
                    }
                    states.insert(name, health);
                }
                Err(e) => {
                    tracing::error!(destination = %name, error = %e, "cannot read the destination's stored health; it starts healthy");
                    states.insert(name, DestinationHealth::new(now_ms));
                }
            }
        }
        Ok(HealthBoard {
            inner: Arc::new(Inner {
                store,
                states: Mutex::new(states),
                listener: OnceLock::new(),
            }),
        })
    }

    /// Sets the one listener every change is handed to (the alerts); later calls are
    /// ignored.
    pub fn on_change(&self, listener: impl Fn(&HealthEvent) + Send + Sync + 'static) {
        let _ = self.inner.listener.set(Box::new(listener));
    }

    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<String, DestinationHealth>> {
        self.inner.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the worker of `destination` may do at `now_ms`.
    pub fn gate(&self, destination: &str, now_ms: u64, policy: &HealthPolicy) -> Gate {
        let mut states = self.states();
        match states.get_mut(destination) {
            Some(h) => {
                let gate = h.gate(now_ms, policy);
                if gate == Gate::Probe {
                    tracing::info!(
                        destination,
                        probe = h.probes,
                        next_probe_in_ms = h.probe_interval_ms,
                        "the destination is held; sending one job as a probe"
                    );
                }
                gate
            }
            None => Gate::Open,
        }
    }

    /// Takes one attempt of `destination` into account under `policy`.
    pub fn record(
        &self,
        destination: &str,
        attempt: &AttemptResult,
        policy: &HealthPolicy,
    ) -> Result<(), StoreError> {
        let event = {
            let mut states = self.states();
            let h = states
                .entry(destination.to_string())
                .or_insert_with(|| DestinationHealth::new(attempt.at_ms));
            let next_probe = h.next_probe_ms;
            let change = h.record(attempt, policy);
            // A hold and its probe spacing are what a restart must find again. Written
            // under the lock so two changes reach the store in the order they happened
            // (changes are rare: a state change or a probe; the write is not synced, so it
            // costs microseconds).
            if change.is_some() || (h.state == HealthState::Held && h.next_probe_ms != next_probe) {
                self.persist(destination, h, false)?;
            }
            change.map(|change| HealthEvent {
                destination: destination.to_string(),
                change,
                health: h.clone(),
            })
        };
        if let Some(event) = event {
            self.announce(&event);
        }
        Ok(())
    }

    /// An operator holds `destination`; `Ok(false)` when it was already held by hand.
    pub fn hold(
        &self,
        destination: &str,
        now_ms: u64,
        policy: &HealthPolicy,
    ) -> Result<bool, StoreError> {
        self.operator_change(destination, now_ms, |h| h.hold_by_operator(now_ms, policy))
    }

    /// The token endpoint of `destination` refused its credentials: hold it without probes
    /// with `error` as its last error (synced, so the hold survives a crash) and alert;
    /// `Ok(false)` when it was already held that way.
    pub fn hold_for_credentials(
        &self,
        destination: &str,
        now_ms: u64,
        policy: &HealthPolicy,
        error: &str,
    ) -> Result<bool, StoreError> {
        self.operator_change(destination, now_ms, |h| {
            h.hold_for_credentials(now_ms, policy, error.to_string())
        })
    }

    /// Releases every destination held because its token endpoint refused the credentials
    /// (after a reload, which may have brought new ones: a refusal holds it again at the
    /// next fetch); the names released.
    pub fn release_credential_holds(&self, now_ms: u64) -> Result<Vec<String>, StoreError> {
        let held: Vec<String> = self
            .states()
            .iter()
            .filter(|(_, h)| h.held_for_credentials)
            .map(|(name, _)| name.clone())
            .collect();
        let mut released = Vec::new();
        for name in held {
            if self.release(&name, now_ms)? {
                released.push(name);
            }
        }
        Ok(released)
    }

    /// An operator releases `destination`; `Ok(false)` when it was not held.
    pub fn release(&self, destination: &str, now_ms: u64) -> Result<bool, StoreError> {
        self.operator_change(destination, now_ms, |h| h.release(now_ms))
    }

    fn operator_change(
        &self,
        destination: &str,
        now_ms: u64,
        change: impl FnOnce(&mut DestinationHealth) -> Option<Change>,
    ) -> Result<bool, StoreError> {
        let event = {
            let mut states = self.states();
            let h = states
                .entry(destination.to_string())
                .or_insert_with(|| DestinationHealth::new(now_ms));
            let before = h.clone();
            match change(h) {
                Some(change) => {
                    let health = h.clone();
                    if let Err(e) = self.persist(destination, &health, true) {
                        // Not durable: not done either, so the operator can try again.
                        *h = before;
                        return Err(e);
                    }
                    Some(HealthEvent {
                        destination: destination.to_string(),
                        change,
                        health,
                    })
                }
                None => None,
            }
        };
        let changed = event.is_some();
        if let Some(event) = event {
            self.announce(&event);
        }
        Ok(changed)
    }

    /// Writes `health` to the store; `sync` (an operator's change) makes it durable before
    /// returning, an automatic change is durable with the next housekeeping flush.
    fn persist(
        &self,
        destination: &str,
        health: &DestinationHealth,
        sync: bool,
    ) -> Result<(), StoreError> {
        // Serializing plain data to JSON cannot fail.
        let bytes = serde_json::to_vec(health).unwrap_or_default();
        self.inner
            .store
            .save_health_record(destination, &bytes, sync)
    }

    fn announce(&self, event: &HealthEvent) {
        let h = &event.health;
        let error = h.last_error.as_deref().unwrap_or("");
        let status = h.last_status.map(|s| s.to_string()).unwrap_or_default();
        let d = &event.destination;
        match event.change {
            Change::Failing => {
                tracing::warn!(destination = %d, consecutive_failures = h.consecutive_failures, last_status = %status, last_error = %error, "the destination is failing")
            }
            Change::Held { by_operator: true } => {
                tracing::warn!(destination = %d, "the destination is held by an operator: no job is attempted until it is released")
            }
            Change::Held { by_operator: false } => {
                tracing::error!(destination = %d, consecutive_failures = h.consecutive_failures, last_status = %status, last_error = %error, probe_in_ms = h.probe_interval_ms, "the destination is held after failing without a break: its jobs stay queued and one probe is sent at a growing interval")
            }
            Change::CredentialsRefused => {
                tracing::error!(destination = %d, last_error = %error, "the destination is held: its token endpoint refused the credentials; nothing is sent until they are fixed and the destination released")
            }
            Change::Recovered { by_operator: true } => {
                tracing::warn!(destination = %d, "the destination was released by an operator; delivery resumes")
            }
            Change::Recovered { by_operator: false } => {
                tracing::warn!(destination = %d, "the destination recovered; delivery resumes")
            }
        }
        if let Some(listener) = self.inner.listener.get() {
            listener(event);
        }
    }

    /// How long `destination` was held between `from_ms` and `to_ms`.
    pub fn held_between(&self, destination: &str, from_ms: u64, to_ms: u64) -> Duration {
        self.states()
            .get(destination)
            .map_or(Duration::ZERO, |h| h.holds.held_between(from_ms, to_ms))
    }

    /// Every destination's health that has any (a destination never attempted has none:
    /// it is healthy).
    pub fn snapshot(&self) -> BTreeMap<String, DestinationHealth> {
        self.states()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The health of `destination` (healthy since `now_ms` when it has no history).
    pub fn get(&self, destination: &str, now_ms: u64) -> DestinationHealth {
        self.states()
            .get(destination)
            .cloned()
            .unwrap_or_else(|| DestinationHealth::new(now_ms))
    }

    /// Forgets a destination that was removed from the config.
    pub fn forget(&self, destination: &str) -> Result<(), StoreError> {
        self.states().remove(destination);
        self.inner.store.remove_health_record(destination)
    }
}
