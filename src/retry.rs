//! The pure retry policy: given a job's persisted attempt count and first-attempt time,
//! when is its next attempt, or is it time to give up?
//!
//! The `backoff` crate's `ExponentialBackoff` measures its elapsed-time budget with a
//! process-local clock, which a restart resets. So the budget is enforced here from the
//! wall-clock time stored in the job record, and the crate is used for what it is good at:
//! one jittered step at the interval that the attempt count implies.

use std::time::Duration;

use backoff::backoff::Backoff;

/// Exponential backoff with jitter and an overall deadline, from `retry:` in the config.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the second attempt.
    pub initial_interval: Duration,
    /// Growth factor between attempts.
    pub multiplier: f64,
    /// Cap on one delay.
    pub max_interval: Duration,
    /// After this long since the first attempt, the job is dead-lettered.
    pub max_elapsed: Duration,
    /// Jitter: each delay is drawn from `interval * (1 ± factor)`.
    pub randomization_factor: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_interval: Duration::from_secs(1),
            multiplier: 2.0,
            max_interval: Duration::from_secs(600),
            max_elapsed: Duration::from_secs(24 * 3600),
            randomization_factor: 0.5,
        }
    }
}

impl RetryPolicy {
    /// Checks the values make a sensible policy; the error says which one does not.
    pub fn check(&self) -> Result<(), String> {
        if self.initial_interval.is_zero() {
            return Err("initial_interval must be greater than zero".into());
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(format!(
                "multiplier must be at least 1.0, found {}",
                self.multiplier
            ));
        }
        if self.max_interval < self.initial_interval {
            return Err("max_interval must not be shorter than initial_interval".into());
        }
        Ok(())
    }

    /// The un-jittered interval after `attempts` failed attempts (1 -> initial_interval).
    pub fn base_interval(&self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(1000) as i32;
        let secs = self.initial_interval.as_secs_f64() * self.multiplier.powi(exp);
        if !secs.is_finite() || secs >= self.max_interval.as_secs_f64() {
            self.max_interval
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The delay before the next attempt after `attempts` failed attempts, the first of which
    /// happened `elapsed` ago; `None` means the budget is spent and the job is dead-lettered.
    pub fn next_delay(&self, attempts: u32, elapsed: Duration) -> Option<Duration> {
        if elapsed >= self.max_elapsed {
            return None;
        }
        let mut step = backoff::ExponentialBackoff {
            current_interval: self.base_interval(attempts),
            initial_interval: self.initial_interval,
            randomization_factor: self.randomization_factor,
            multiplier: self.multiplier,
            max_interval: self.max_interval,
            max_elapsed_time: None,
            ..backoff::ExponentialBackoff::default()
        };
        let delay = step.next_backoff()?;
        if elapsed + delay > self.max_elapsed {
            return None;
        }
        Some(delay)
    }

    /// Like [`RetryPolicy::next_delay`], but a receiver's `hint` (`Retry-After`, already
    /// capped) replaces the backoff step; the overall budget still applies.
    pub fn next_delay_hinted(
        &self,
        attempts: u32,
        elapsed: Duration,
        hint: Option<Duration>,
    ) -> Option<Duration> {
        let Some(hint) = hint else {
            return self.next_delay(attempts, elapsed);
        };
        if elapsed >= self.max_elapsed || elapsed + hint > self.max_elapsed {
            return None;
        }
        Some(hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_interval: Duration::from_millis(100),
            multiplier: 2.0,
            max_interval: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(10),
            randomization_factor: 0.5,
        }
    }

    #[test]
    fn intervals_grow_then_cap() {
        let p = policy();
        assert_eq!(p.base_interval(1), Duration::from_millis(100));
        assert_eq!(p.base_interval(2), Duration::from_millis(200));
        assert_eq!(p.base_interval(4), Duration::from_millis(800));
        assert_eq!(p.base_interval(5), Duration::from_secs(1));
        assert_eq!(p.base_interval(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn delays_are_jittered_within_the_factor() {
        let p = policy();
        for attempts in 1..8 {
            let base = p.base_interval(attempts).as_secs_f64();
            for _ in 0..50 {
                let d = p
                    .next_delay(attempts, Duration::ZERO)
                    .unwrap()
                    .as_secs_f64();
                assert!(
                    d >= base * 0.5 - 1e-6 && d <= base * 1.5 + 1e-6,
                    "{d} vs {base}"
                );
            }
        }
    }

    #[test]
    fn the_budget_comes_from_the_persisted_elapsed_time() {
        let p = policy();
        assert!(p.next_delay(1, Duration::from_secs(9)).is_some());
        assert_eq!(p.next_delay(1, Duration::from_secs(10)), None);
        assert_eq!(p.next_delay(1, Duration::from_secs(11)), None);
        // A delay that would end past the budget gives up now rather than sleep in vain.
        assert_eq!(p.next_delay(10, Duration::from_millis(9_600)), None);
    }

    #[test]
    fn a_retry_after_hint_replaces_the_step_within_the_budget() {
        let p = policy();
        assert_eq!(
            p.next_delay_hinted(1, Duration::ZERO, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            p.next_delay_hinted(1, Duration::from_secs(9), Some(Duration::from_secs(2))),
            None
        );
        let d = p.next_delay_hinted(1, Duration::ZERO, None).unwrap();
        assert!(d <= Duration::from_millis(150), "{d:?}");
    }

    #[test]
    fn bad_values_are_refused() {
        let mut p = policy();
        p.multiplier = 0.5;
        assert!(p.check().is_err());
        let mut p = policy();
        p.max_interval = Duration::from_millis(1);
        assert!(p.check().is_err());
    }
}
