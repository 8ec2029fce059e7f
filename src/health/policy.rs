//! `health:` at the top level and per destination: when a destination counts as failing,
//! when it is held, and how held destinations are probed.

use std::time::Duration;

/// The thresholds of one destination's health.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthPolicy {
    /// Failures in a row that make a destination `failing` (0: never by a streak).
    pub failing_after_failures: u32,
    /// Share of failed attempts over `window` (with at least 20 attempts) that makes a
    /// destination `failing` even without a streak: 0.5 is half.
    pub failing_error_share: f64,
    /// The window of the error share.
    pub window: Duration,
    /// While the last `failing_after_failures` attempts or more all failed, the latest with
    /// a failure that is retried (no answer, a timeout, 408, 429, 5xx), the destination gets
    /// one attempt at a time, at most one per this (zero: no pacing): a destination that is
    /// down is not sent every fresh job, each to fail into the retry queue, during the
    /// minute before it is held.
    pub failing_pace: Duration,
    /// Failures in a row that hold a destination (0: never held automatically)...
    pub hold_after_failures: u32,
    /// ...once the run of failures has lasted at least this long.
    pub hold_after: Duration,
    /// The first probe of a held destination comes this long after the hold; each probe
    /// that fails doubles the wait...
    pub probe_every: Duration,
    /// ...up to this.
    pub probe_max: Duration,
}

impl Default for HealthPolicy {
    /// Failing after 3 failures in a row (then one attempt a second until one succeeds) or
    /// half of the last 5 minutes' attempts; held after
    /// 10 failures in a row over at least a minute; probed after 30 s, then 1, 2, 4, 8 and
    /// at most every 10 minutes.
    fn default() -> Self {
        HealthPolicy {
            failing_after_failures: 3,
            failing_error_share: 0.5,
            window: Duration::from_secs(300),
            failing_pace: Duration::from_secs(1),
            hold_after_failures: 10,
            hold_after: Duration::from_secs(60),
            probe_every: Duration::from_secs(30),
            probe_max: Duration::from_secs(600),
        }
    }
}

impl HealthPolicy {
    /// Checks the values make sense together; the error names the key at fault.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(self.failing_error_share > 0.0 && self.failing_error_share <= 1.0) {
            return Err((
                "failing_error_share",
                format!(
                    "must be more than 0 and at most 1 (0.5 is half), found {}",
                    self.failing_error_share
                ),
            ));
        }
        if self.window.is_zero() {
            return Err(("window", "must be greater than zero".into()));
        }
        if self.probe_every.is_zero() {
            return Err(("probe_every", "must be greater than zero".into()));
        }
        if self.probe_max < self.probe_every {
            return Err(("probe_max", "must not be shorter than probe_every".into()));
        }
        Ok(())
    }
}
