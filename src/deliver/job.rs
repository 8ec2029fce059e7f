//! One leased job: attempted once (`attempt.rs`), the outcome counted by the destination's
//! health, decided into a transition (`transition.rs`) and settled in the store, with the
//! log line and the metrics an operator reads.

use std::sync::Arc;
use std::time::Duration;

use super::{attempt, transition, Done, Inner, Outcome};
use crate::destination::Destination;
use crate::health::AttemptResult;
use crate::metrics::DeliveryOutcome;
use crate::queue::{now_ms, DeadLetter, Lease, StoreError, Transition};

/// Attempts one leased job and records the outcome; returns the pause the receiver asked
/// for (`Retry-After`, capped by `max_interval`) so the worker can hold the whole
/// destination.
pub(super) async fn deliver(
    inner: Arc<Inner>,
    dest: Arc<Destination>,
    lease: Lease,
    probe: bool,
) -> Done {
    let metrics = &inner.metrics;
    let job = &lease.job;
    let _in_flight = metrics.in_flight(&job.destination);
    let Some(body) = lease.body.clone() else {
        metrics.delivery(&job.destination, DeliveryOutcome::Dead, None);
        let letter = DeadLetter {
            job: job.clone(),
            reason: "the event's body is missing from the store".to_string(),
            response_snippet: None,
            dead_at_ms: now_ms(),
        };
        let dead = Transition::Dead {
            letter,
            attempt: None,
        };
        inner.settle_dead(&lease, dead)?;
        return Ok(None);
    };
    let started_ms = now_ms();
    let attempted = attempt::attempt(&inner.client, &inner.auth, &dest, job, body).await;
    let (outcome, latency) = (attempted.outcome, attempted.latency);
    if let Some(reason) = &attempted.refused {
        // Every job would meet the same refusal: hold the destination instead.
        if let Err(e) =
            inner
                .health
                .hold_for_credentials(&job.destination, now_ms(), &dest.health, reason)
        {
            tracing::error!(destination = %job.destination, error = %e, "cannot store the hold of a destination whose credentials were refused");
        }
    }
    let attempt = Attempt {
        outcome,
        latency,
        started_ms,
        probe,
    };
    record(&inner, &dest, &lease, attempt)
}

/// One attempt's result, as the worker records it.
struct Attempt {
    outcome: Outcome,
    latency: Duration,
    started_ms: u64,
    probe: bool,
}

/// Records `attempt` of `lease`: the destination's health, then the job's transition
/// (delivered, retry at T, or dead), with its log line and metrics.
fn record(inner: &Inner, dest: &Destination, lease: &Lease, attempt: Attempt) -> Done {
    let Attempt {
        outcome,
        latency,
        started_ms,
        probe,
    } = attempt;
    let (store, metrics, job) = (&inner.store, &inner.metrics, &lease.job);
    let record = transition::attempt_record(job, &outcome, started_ms, latency);
    let span = tracing::info_span!(
        "delivery",
        event_id = %job.event_id,
        kind = %job.kind,
        route = %job.routes.join(","),
        destination = %job.destination,
        delivery_id = %job.id,
        attempt = record.attempt,
        status = outcome.status(),
        latency_ms = record.latency_ms,
    );
    let _entered = span.enter();
    let error = record.error.clone();
    if let Some(result) = health_result(&outcome, started_ms, probe) {
        if let Err(e) = inner.health.record(&job.destination, &result, &dest.health) {
            tracing::error!(error = %e, "cannot store the destination's health");
        }
    }
    let now = now_ms();
    let first_attempt_ms = job.first_attempt_at_ms.unwrap_or(started_ms);
    let held = inner
        .health
        .held_between(&job.destination, first_attempt_ms, now);
    let decision = transition::decide(job, outcome, record, &dest.retry, now, held);
    match &decision.transition {
        Transition::Delivered { .. } => {
            store.settle(lease, decision.transition)?;
            metrics.delivery(&job.destination, DeliveryOutcome::Delivered, Some(latency));
            metrics.delivered_after(&job.destination, job.created_at_ms);
            tracing::info!(outcome = "delivered", "delivered");
        }
        Transition::Retry { .. } => {
            store.settle(lease, decision.transition)?;
            metrics.delivery(&job.destination, DeliveryOutcome::Retried, Some(latency));
            let retry_in = decision
                .retry_in
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            tracing::info!(
                outcome = "retry",
                error = error.as_deref().unwrap_or(""),
                retry_in_ms = retry_in,
                "delivery failed; will retry"
            );
        }
        Transition::Dead { .. } => {
            metrics.delivery(&job.destination, DeliveryOutcome::Dead, Some(latency));
            inner.settle_dead(lease, decision.transition)?;
        }
    }
    Ok(decision.pause)
}

/// An attempt's outcome as destination health counts it: a failure to render (the job's
/// own fault, no request was sent) says nothing about the destination.
fn health_result(outcome: &Outcome, started_ms: u64, probe: bool) -> Option<AttemptResult> {
    let (ok, error) = match outcome {
        Outcome::Delivered { .. } => (true, None),
        Outcome::Retry { error, .. } => (false, Some(error.clone())),
        Outcome::Permanent { status: None, .. } => return None,
        Outcome::Permanent { error, .. } => (false, Some(error.clone())),
    };
    Some(AttemptResult {
        ok,
        status: outcome.status(),
        error,
        at_ms: started_ms,
        probe,
    })
}

impl Inner {
    /// Settles `lease` as the dead letter `dead`, with the warning an operator looks for,
    /// and tells the alerts.
    pub(super) fn settle_dead(&self, lease: &Lease, dead: Transition) -> Result<(), StoreError> {
        let reason = match &dead {
            Transition::Dead { letter, .. } => {
                let job = &lease.job;
                tracing::warn!(event_id = %job.event_id, delivery_id = %job.id, destination = %job.destination, outcome = "dead", reason = %letter.reason, "delivery dead-lettered");
                Some(letter.reason.clone())
            }
            _ => None,
        };
        self.store.settle(lease, dead)?;
        if let Some(reason) = reason {
            self.alerts
                .dead_letter(lease.job.kind, &lease.job.destination, &reason);
        }
        Ok(())
    }
}
