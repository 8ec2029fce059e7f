//! One destination's health as a pure state machine: attempts go in, state changes come
//! out. Pure (no clock, no I/O) so that every rule — when a destination starts failing, when
//! it is held, how probes are spaced, how held time is counted — has a unit test, and the
//! board ([`super::HealthBoard`]) only stores, persists and announces.
//!
//! ```text
//!              N consecutive failures               hold_after_failures in a row,
//!              or error share over the window        for at least hold_after
//!   healthy ───────────────────────────────▶ failing ─────────────────────────▶ held
//!      ▲  ◀─────────── success, share below ───┘                               │  │
//!      │                                                                        │  │
//!      └───────────── a probe succeeds (or an operator releases) ──────────────┘  │
//!                                                    a probe fails: next probe in │
//!                                                    twice the interval (≤ probe_max)
//! ```
//! An operator's hold sends no probes: only a release ends it.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::policy::HealthPolicy;

/// Attempts remembered for the error share; more than this in one window are not needed
/// to tell a share.
const WINDOW_CAP: usize = 2_000;
/// Fewest attempts in the window before the error share may call a destination failing
/// (two failures out of three is no trend).
pub const MIN_SHARE_ATTEMPTS: usize = 20;
/// Hold periods remembered, for [`HoldHistory::held_between`]: far more than a job's
/// lifetime sees.
const HOLDS_CAP: usize = 64;

/// A destination's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Delivering normally.
    Healthy,
    /// Failing often enough to warn about, still attempting every job.
    Failing,
    /// No job is attempted (except probes, for an automatic hold); the queue is kept.
    Held,
}

impl HealthState {
    /// Every state, in the order gauges are written.
    pub const ALL: [HealthState; 3] = [
        HealthState::Healthy,
        HealthState::Failing,
        HealthState::Held,
    ];

    /// `healthy`, `failing` or `held`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Failing => "failing",
            HealthState::Held => "held",
        }
    }
}

impl std::fmt::Display for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attempt's result as health sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    /// The destination accepted the job.
    pub ok: bool,
    /// The response status, if one came back.
    pub status: Option<u16>,
    /// What went wrong, if it failed.
    pub error: Option<String>,
    /// When the attempt started (Unix ms).
    pub at_ms: u64,
    /// It was the probe of a held destination.
    pub probe: bool,
}

/// A change worth telling someone about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Healthy to failing.
    Failing,
    /// Held, by the failure streak or by an operator.
    Held {
        /// An operator held it by hand.
        by_operator: bool,
    },
    /// Held because the destination's token endpoint refused its credentials
    /// (`invalid_grant`): like an operator's hold, no probes; only a release ends it.
    CredentialsRefused,
    /// Back to healthy: a probe or an attempt succeeded, or an operator released it.
    Recovered {
        /// An operator released it by hand.
        by_operator: bool,
    },
}

/// What a worker may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Deliver as usual.
    Open,
    /// Held: attempt exactly one job, as a probe.
    Probe,
    /// Failing with a streak of failures: retries due in the retry queue go as usual, but
    /// at most one fresh job (with `fresh`) per `failing_pace`; the next may go after
    /// `next_in`.
    Paced {
        /// One fresh job may go now.
        fresh: bool,
        /// When the next fresh job may go.
        next_in: Duration,
    },
    /// Held: attempt nothing; look again after this long (an operator's hold: never by
    /// itself).
    Closed(Option<Duration>),
}

/// The periods a destination was held, so the time a job spent waiting for its destination
/// does not count against its `max_elapsed` or `max_age`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldHistory {
    /// `(start, end)` in Unix ms, oldest first; the last one may be open (`end` `None`).
    periods: VecDeque<(u64, Option<u64>)>,
}

impl HoldHistory {
    /// Opens a hold period at `at_ms` (no-op when one is open).
    fn start(&mut self, at_ms: u64) {
        if self.periods.back().is_some_and(|(_, end)| end.is_none()) {
            return;
        }
        if self.periods.len() == HOLDS_CAP {
            self.periods.pop_front();
        }
        self.periods.push_back((at_ms, None));
    }

    /// Closes the open hold period at `at_ms`.
    fn end(&mut self, at_ms: u64) {
        if let Some((start, end @ None)) = self.periods.back_mut() {
            *end = Some(at_ms.max(*start));
        }
    }

    /// How long the destination was held between `from_ms` and `to_ms`.
    pub fn held_between(&self, from_ms: u64, to_ms: u64) -> Duration {
        let total: u64 = self
            .periods
            .iter()
            .map(|&(start, end)| {
                let end = end.unwrap_or(to_ms).min(to_ms);
                end.saturating_sub(start.max(from_ms))
            })
            .sum();
        Duration::from_millis(total)
    }
}

/// One destination's health and what it is derived from. Serialized whole (except the
/// window of recent attempts) so a hold survives a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationHealth {
    /// The state.
    pub state: HealthState,
    /// Since when (Unix ms).
    pub since_ms: u64,
    /// Held by an operator (no probes; only a release ends it).
    pub held_by_operator: bool,
    /// Held because the token endpoint refused the credentials (also `held_by_operator`:
    /// no probes; a reload, which may bring fixed ones, or a release ends it).
    #[serde(default)]
    pub held_for_credentials: bool,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// When the current run of failures began.
    pub streak_started_ms: Option<u64>,
    /// The latest failure's status and error.
    pub last_status: Option<u16>,
    /// The latest failure's error.
    pub last_error: Option<String>,
    /// The latest success (Unix ms).
    pub last_success_ms: Option<u64>,
    /// While held: the current gap between probes.
    pub probe_interval_ms: u64,
    /// While held: when the next probe may go.
    pub next_probe_ms: u64,
    /// Probes sent during the current hold.
    pub probes: u32,
    /// Past and current hold periods.
    pub holds: HoldHistory,
    /// Recent attempts (time, success) for the error share: not persisted, a restart starts
    /// a fresh window.
    #[serde(skip)]
    window: VecDeque<(u64, bool)>,
    /// While paced (a streak of failures, not held): when the next attempt may go. Not
    /// persisted: after a restart the first attempt goes at once.
    #[serde(skip)]
    next_paced_ms: u64,
}

impl DestinationHealth {
    /// A destination with no history: healthy since `now_ms`.
    pub fn new(now_ms: u64) -> DestinationHealth {
        DestinationHealth {
            state: HealthState::Healthy,
            since_ms: now_ms,
            held_by_operator: false,
            held_for_credentials: false,
            consecutive_failures: 0,
            streak_started_ms: None,
            last_status: None,
            last_error: None,
            last_success_ms: None,
            probe_interval_ms: 0,
            next_probe_ms: 0,
            probes: 0,
            holds: HoldHistory::default(),
            window: VecDeque::new(),
            next_paced_ms: 0,
        }
    }

    /// The share of failed attempts in the window, when it holds enough attempts to judge.
    pub fn error_share(&self) -> Option<f64> {
        if self.window.len() < MIN_SHARE_ATTEMPTS {
            return None;
        }
        let failed = self.window.iter().filter(|(_, ok)| !ok).count();
        Some(failed as f64 / self.window.len() as f64)
    }

    fn is_failing(&self, policy: &HealthPolicy) -> bool {
        (policy.failing_after_failures > 0
            && self.consecutive_failures >= policy.failing_after_failures)
            || self
                .error_share()
                .is_some_and(|share| share >= policy.failing_error_share)
    }

    fn enter(&mut self, state: HealthState, at_ms: u64) {
        self.state = state;
        self.since_ms = at_ms;
    }

    fn hold(&mut self, at_ms: u64, by_operator: bool, policy: &HealthPolicy) {
        self.enter(HealthState::Held, at_ms);
        self.held_by_operator = by_operator;
        self.probes = 0;
        self.probe_interval_ms = ms(policy.probe_every);
        self.next_probe_ms = at_ms.saturating_add(self.probe_interval_ms);
        self.holds.start(at_ms);
    }

    fn resume(&mut self, at_ms: u64) {
        self.enter(HealthState::Healthy, at_ms);
        self.held_by_operator = false;
        self.held_for_credentials = false;
        self.consecutive_failures = 0;
        self.streak_started_ms = None;
        self.window.clear();
        self.holds.end(at_ms);
    }

    /// Takes one attempt's result into account; returns the change it caused, if any.
    pub fn record(&mut self, attempt: &AttemptResult, policy: &HealthPolicy) -> Option<Change> {
        let at = attempt.at_ms;
        while self
            .window
            .front()
            .is_some_and(|(t, _)| t.saturating_add(ms(policy.window)) < at)
            || self.window.len() >= WINDOW_CAP
        {
            self.window.pop_front();
        }
        self.window.push_back((at, attempt.ok));
        if attempt.ok {
            self.last_success_ms = Some(self.last_success_ms.map_or(at, |t| t.max(at)));
            self.consecutive_failures = 0;
            self.streak_started_ms = None;
            return match self.state {
                // A success from a delivery started before an operator's hold changes
                // nothing: only the operator ends that hold.
                HealthState::Held if self.held_by_operator => None,
                HealthState::Held => {
                    self.resume(at);
                    Some(Change::Recovered { by_operator: false })
                }
                HealthState::Failing if !self.is_failing(policy) => {
                    self.enter(HealthState::Healthy, at);
                    Some(Change::Recovered { by_operator: false })
                }
                _ => None,
            };
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let streak_start = *self.streak_started_ms.get_or_insert(at);
        self.last_status = attempt.status;
        self.last_error = attempt.error.clone();
        match self.state {
            HealthState::Held => {
                if attempt.probe && !self.held_by_operator {
                    // Twice the wait before the next probe, up to probe_max.
                    self.probe_interval_ms = self
                        .probe_interval_ms
                        .saturating_mul(2)
                        .clamp(ms(policy.probe_every), ms(policy.probe_max).max(1));
                    self.next_probe_ms = at.saturating_add(self.probe_interval_ms);
                }
                None
            }
            HealthState::Healthy | HealthState::Failing => {
                let became_failing = self.state == HealthState::Healthy && self.is_failing(policy);
                if became_failing {
                    self.enter(HealthState::Failing, at);
                }
                let hold = policy.hold_after_failures > 0
                    && self.consecutive_failures >= policy.hold_after_failures
                    && at.saturating_sub(streak_start) >= ms(policy.hold_after);
                if hold && self.state == HealthState::Failing {
                    self.hold(at, false, policy);
                    return Some(Change::Held { by_operator: false });
                }
                became_failing.then_some(Change::Failing)
            }
        }
    }

    /// What a worker may do at `now_ms`. A probe slot is used up when it is handed out: the
    /// next one comes one interval later whatever the probe's outcome is.
    pub fn gate(&mut self, now_ms: u64, policy: &HealthPolicy) -> Gate {
        if self.state != HealthState::Held {
            let pace = u64::try_from(policy.failing_pace.as_millis()).unwrap_or(u64::MAX);
            // A destination refusing jobs (a 4xx but 408 and 429) is up: its jobs die at
            // once and do not wait in the retry queue, so only a streak of failures that
            // retry (no answer, a timeout, 408, 429, 5xx) is paced.
            let retrying = self
                .last_status
                .is_none_or(|s| s >= 500 || s == 408 || s == 429);
            let streak = policy.failing_after_failures > 0
                && self.consecutive_failures >= policy.failing_after_failures
                && retrying;
            if pace == 0 || !streak {
                return Gate::Open;
            }
            let fresh = now_ms >= self.next_paced_ms;
            if fresh {
                self.next_paced_ms = now_ms.saturating_add(pace);
            }
            return Gate::Paced {
                fresh,
                next_in: Duration::from_millis(self.next_paced_ms - now_ms),
            };
        }
        if self.held_by_operator {
            return Gate::Closed(None);
        }
        if now_ms >= self.next_probe_ms {
            self.probes = self.probes.saturating_add(1);
            self.next_probe_ms = now_ms.saturating_add(self.probe_interval_ms.max(1));
            return Gate::Probe;
        }
        Gate::Closed(Some(Duration::from_millis(self.next_probe_ms - now_ms)))
    }

    /// An operator holds the destination; returns the change unless it was held that way.
    pub fn hold_by_operator(&mut self, now_ms: u64, policy: &HealthPolicy) -> Option<Change> {
        match (self.state, self.held_by_operator) {
            (HealthState::Held, true) => None,
            (HealthState::Held, false) => {
                // Already held automatically: it stays held, now without probes.
                self.held_by_operator = true;
                Some(Change::Held { by_operator: true })
            }
            _ => {
                self.hold(now_ms, true, policy);
                Some(Change::Held { by_operator: true })
            }
        }
    }

    /// The token endpoint refused the credentials (`error` says how): held without probes
    /// (retrying cannot help until an operator fixes them), `error` kept as the last error
    /// so `status` shows why. Returns the change unless it was held that way already.
    pub fn hold_for_credentials(
        &mut self,
        now_ms: u64,
        policy: &HealthPolicy,
        error: String,
    ) -> Option<Change> {
        let already = self.state == HealthState::Held && self.held_by_operator;
        self.last_status = None;
        self.last_error = Some(error);
        if already {
            return None;
        }
        if self.state == HealthState::Held {
            self.held_by_operator = true;
        } else {
            self.hold(now_ms, true, policy);
        }
        self.held_for_credentials = true;
        Some(Change::CredentialsRefused)
    }

    /// An operator releases the destination; returns the change unless it was not held.
    pub fn release(&mut self, now_ms: u64) -> Option<Change> {
        if self.state != HealthState::Held {
            return None;
        }
        self.resume(now_ms);
        Some(Change::Recovered { by_operator: true })
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
