//! From one attempt's outcome to what the store records: pure, so every rule (a 5xx after
//! N attempts, a `Retry-After`, a permanent failure, a job past its `max_age`) has a unit
//! test and the worker only carries the decision out.

use std::time::Duration;

use super::attempt::Outcome;
use crate::queue::{AttemptRecord, DeadLetter, JobRecord, Transition};
use crate::retry::RetryPolicy;

/// What a worker does with one attempt's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What the store records.
    pub transition: Transition,
    /// The pause the receiver asked for (`Retry-After`, capped by `max_interval`), which
    /// holds the whole destination.
    pub pause: Option<Duration>,
    /// For a retry: how long until the next attempt.
    pub retry_in: Option<Duration>,
}

/// The record of attempt number `job.attempts + 1`, started at `started_ms`.
pub fn attempt_record(
    job: &JobRecord,
    outcome: &Outcome,
    started_ms: u64,
    latency: Duration,
) -> AttemptRecord {
    AttemptRecord {
        attempt: job.attempts + 1,
        at_ms: started_ms,
        latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
        status: outcome.status(),
        outcome: outcome.recorded(),
        error: match outcome {
            Outcome::Delivered { .. } => None,
            Outcome::Retry { error, .. } | Outcome::Permanent { error, .. } => Some(error.clone()),
        },
    }
}

fn dead(job: JobRecord, reason: String, snippet: Option<String>, now_ms: u64) -> DeadLetter {
    DeadLetter {
        job,
        reason,
        response_snippet: snippet,
        dead_at_ms: now_ms,
    }
}

/// Decides what `outcome` of attempt `record` means for `job` under `retry`, at `now_ms`.
/// `held` is how long the destination was held since the job's first attempt: that time
/// does not count against `max_elapsed` (the job did not fail, its destination did).
pub fn decide(
    job: &JobRecord,
    outcome: Outcome,
    record: AttemptRecord,
    retry: &RetryPolicy,
    now_ms: u64,
    held: Duration,
) -> Decision {
    let first_attempt_ms = job.first_attempt_at_ms.unwrap_or(record.at_ms);
    let mut updated = job.clone();
    updated.attempts = record.attempt;
    updated.first_attempt_at_ms = Some(first_attempt_ms);
    updated.last_attempt_at_ms = Some(record.at_ms);
    updated.last_status = record.status;
    updated.last_error = record.error.clone();
    match outcome {
        Outcome::Delivered { .. } => Decision {
            transition: Transition::Delivered { attempt: record },
            pause: None,
            retry_in: None,
        },
        Outcome::Retry {
            error,
            snippet,
            retry_after,
            ..
        } => {
            let elapsed =
                Duration::from_millis(now_ms.saturating_sub(first_attempt_ms)).saturating_sub(held);
            // `Retry-After: 0` asks for nothing: a zero hint would retry in a hot loop.
            let hint = retry_after
                .filter(|d| !d.is_zero())
                .map(|d| d.min(retry.max_interval));
            // Attempts before an operator's retry do not count against the fresh budget.
            let counted = record.attempt.saturating_sub(job.attempt_base);
            match retry.next_delay_hinted(counted, elapsed, hint) {
                Some(delay) => {
                    updated.next_attempt_at_ms = now_ms
                        .saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX / 2));
                    Decision {
                        transition: Transition::Retry {
                            job: updated,
                            attempt: record,
                        },
                        pause: hint,
                        retry_in: Some(delay),
                    }
                }
                None => {
                    let reason = format!(
                        "gave up after {} attempts over {}: {error}",
                        record.attempt,
                        humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
                    );
                    Decision {
                        transition: Transition::Dead {
                            letter: dead(updated, reason, snippet, now_ms),
                            attempt: Some(record),
                        },
                        pause: hint,
                        retry_in: None,
                    }
                }
            }
        }
        Outcome::Permanent { error, snippet, .. } => Decision {
            transition: Transition::Dead {
                letter: dead(
                    updated,
                    format!("permanent failure: {error}"),
                    snippet,
                    now_ms,
                ),
                attempt: Some(record),
            },
            pause: None,
            retry_in: None,
        },
    }
}

/// Why `job` is too old to send (`max_age`, counted from when the event was received, less
/// the time `held` its destination was held since), as a dead letter, if it is.
pub fn stale(
    job: &JobRecord,
    max_age: Option<Duration>,
    now_ms: u64,
    held: Duration,
) -> Option<Transition> {
    let max_age = max_age?;
    let age = Duration::from_millis(now_ms.saturating_sub(job.created_at_ms)).saturating_sub(held);
    (age > max_age).then(|| {
        let reason = format!(
            "stale: the event is {} old, older than max_age {}",
            humantime::format_duration(Duration::from_secs(age.as_secs())),
            humantime::format_duration(max_age)
        );
        Transition::Dead {
            letter: dead(job.clone(), reason, None, now_ms),
            attempt: None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_interval: Duration::from_secs(1),
            multiplier: 2.0,
            max_interval: Duration::from_secs(60),
            max_elapsed: Duration::from_secs(300),
            randomization_factor: 0.0,
        }
    }

    fn job() -> JobRecord {
        JobRecord::new(
            uuid::Uuid::now_v7(),
            EventKind::Lead,
            "crm".into(),
            vec![],
            1_000,
        )
    }

    fn retry(status: u16, retry_after: Option<Duration>) -> Outcome {
        Outcome::Retry {
            status: Some(status),
            error: format!("HTTP {status}"),
            snippet: Some("busy".into()),
            retry_after,
        }
    }

    #[test]
    fn a_2xx_is_delivered_with_its_attempt() {
        let j = job();
        let o = Outcome::Delivered { status: 204 };
        let r = attempt_record(&j, &o, 2_000, Duration::from_millis(7));
        let d = decide(&j, o, r.clone(), &policy(), 2_007, Duration::ZERO);
        assert_eq!(d.transition, Transition::Delivered { attempt: r.clone() });
        assert_eq!((r.attempt, r.status, r.latency_ms), (1, Some(204), 7));
    }

    #[test]
    fn a_5xx_is_retried_with_backoff_until_the_budget_is_spent() {
        let j = job();
        let o = retry(503, None);
        let r = attempt_record(&j, &o, 2_000, Duration::ZERO);
        let d = decide(&j, o, r, &policy(), 2_000, Duration::ZERO);
        let Transition::Retry { job: next, attempt } = d.transition else {
            panic!("{:?}", d.transition);
        };
        assert_eq!((next.attempts, attempt.attempt), (1, 1));
        assert_eq!(
            next.next_attempt_at_ms, 3_000,
            "the first step is initial_interval"
        );
        assert_eq!(next.first_attempt_at_ms, Some(2_000));
        assert_eq!(next.last_error.as_deref(), Some("HTTP 503"));
        // 299 s after the first attempt the next step no longer fits in max_elapsed.
        let o = retry(500, None);
        let r = attempt_record(&next, &o, 301_000, Duration::ZERO);
        let d = decide(&next, o, r, &policy(), 301_000, Duration::ZERO);
        // Had the destination been held for 200 of those seconds, the budget is not spent.
        let o = retry(500, None);
        let r = attempt_record(&next, &o, 301_000, Duration::ZERO);
        let held = Duration::from_secs(200);
        let kept = decide(&next, o, r.clone(), &policy(), 301_000, held);
        assert!(
            matches!(kept.transition, Transition::Retry { .. }),
            "{:?}",
            kept.transition
        );
        let Transition::Dead { letter, attempt } = d.transition else {
            panic!("{:?}", d.transition);
        };
        assert!(
            letter
                .reason
                .starts_with("gave up after 2 attempts over 4m 59s: HTTP 500"),
            "{}",
            letter.reason
        );
        assert_eq!(letter.response_snippet.as_deref(), Some("busy"));
        assert_eq!(attempt.map(|a| a.attempt), Some(2));
    }

    #[test]
    fn retry_after_replaces_the_step_is_capped_and_pauses_the_destination() {
        let j = job();
        let o = retry(429, Some(Duration::from_secs(3600)));
        let r = attempt_record(&j, &o, 0, Duration::ZERO);
        let d = decide(&j, o, r, &policy(), 0, Duration::ZERO);
        assert_eq!(d.pause, Some(Duration::from_secs(60)));
        assert_eq!(d.retry_in, Some(Duration::from_secs(60)));
        // Retry-After: 0 is no hint at all.
        let o = retry(503, Some(Duration::ZERO));
        let r = attempt_record(&j, &o, 0, Duration::ZERO);
        assert_eq!(decide(&j, o, r, &policy(), 0, Duration::ZERO).pause, None);
    }

    #[test]
    fn a_job_retried_by_an_operator_gets_a_fresh_budget() {
        let mut j = job();
        j.attempts = 9;
        j.attempt_base = 9;
        let o = retry(503, None);
        let r = attempt_record(&j, &o, 10_000, Duration::ZERO);
        assert_eq!(r.attempt, 10, "attempt numbers keep counting");
        let d = decide(&j, o, r, &policy(), 10_000, Duration::ZERO);
        assert_eq!(
            d.retry_in,
            Some(Duration::from_secs(1)),
            "backoff starts over"
        );
    }

    #[test]
    fn permanent_failures_and_stale_jobs_are_dead_letters() {
        let j = job();
        let o = Outcome::Permanent {
            status: Some(410),
            error: "HTTP 410".into(),
            snippet: None,
        };
        let r = attempt_record(&j, &o, 5, Duration::ZERO);
        let Transition::Dead { letter, .. } =
            decide(&j, o, r, &policy(), 5, Duration::ZERO).transition
        else {
            panic!("not dead");
        };
        assert_eq!(letter.reason, "permanent failure: HTTP 410");
        assert_eq!(
            stale(&j, Some(Duration::from_secs(1)), 1_500, Duration::ZERO),
            None
        );
        // Two of its three seconds were spent with its destination held: not stale.
        assert_eq!(
            stale(
                &j,
                Some(Duration::from_secs(1)),
                3_000,
                Duration::from_secs(2)
            ),
            None
        );
        let Some(Transition::Dead {
            letter,
            attempt: None,
        }) = stale(&j, Some(Duration::from_secs(1)), 3_000, Duration::ZERO)
        else {
            panic!("not stale");
        };
        assert!(
            letter.reason.starts_with("stale: the event is 2s old"),
            "{}",
            letter.reason
        );
        assert_eq!(stale(&j, None, u64::MAX, Duration::ZERO), None);
    }

    #[test]
    fn max_age_is_exceeded_only_past_it_and_held_time_saturates() {
        let j = job(); // received at 1_000 ms
        let max_age = Some(Duration::from_secs(1));
        // Exactly max_age old: still sent; a millisecond more: stale.
        assert_eq!(stale(&j, max_age, 2_000, Duration::ZERO), None);
        assert!(stale(&j, max_age, 2_001, Duration::ZERO).is_some());
        // Held for longer than the job is old (the hold began before the event): age 0.
        assert_eq!(stale(&j, max_age, 2_001, Duration::from_secs(60)), None);
        // A clock behind the job's creation is no age at all.
        assert_eq!(stale(&j, max_age, 0, Duration::ZERO), None);
    }
}
