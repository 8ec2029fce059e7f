//! The blocking half of a replay: selecting its events from the journal, deciding each
//! through the rules in force, and building a chunk of jobs with their delivery ids, or the
//! dry run's plan.

use uuid::Uuid;

use super::{PlannedEvent, ReplayError, ReplayPlan, ReplaySpec, PLAN_LISTED};
use crate::config::Config;
use crate::queue::catalog::EventQuery;
use crate::queue::journal::Position;
use crate::queue::{JobRecord, Store};

/// The query that judges each selected event: the spec's, or none for events by id.
pub(super) fn judge_query(spec: &ReplaySpec) -> EventQuery {
    spec.query.clone().unwrap_or_default()
}

/// The events `spec` selects, oldest first.
pub(super) fn select(
    store: &Store,
    spec: &ReplaySpec,
) -> Result<Vec<(Uuid, Position)>, ReplayError> {
    match (&spec.query, spec.events.is_empty()) {
        (None, true) => Err(ReplayError::NothingSelected),
        (Some(_), false) => Err(ReplayError::Ambiguous),
        (Some(q), true) => Ok(store.select_events(q)?),
        (None, false) => {
            let mut found = Vec::new();
            let mut missing = Vec::new();
            for id in &spec.events {
                match store.event_position(id)? {
                    Some(at) => found.push((*id, at)),
                    None => missing.push(id.to_string()),
                }
            }
            if !missing.is_empty() {
                return Err(ReplayError::UnknownEvents(missing));
            }
            found.sort_unstable_by_key(|(id, _)| *id);
            found.dedup_by_key(|(id, _)| *id);
            Ok(found)
        }
    }
}

/// Today's destinations for one recorded event (only `to`, when given), with the routes
/// that send it there, and the routing report when asked to explain.
fn decide(
    config: &Config,
    spec: &ReplaySpec,
    kind: crate::event::EventKind,
    body: &[u8],
    explain: bool,
) -> (Vec<(String, Vec<String>)>, Option<String>) {
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (Vec::new(), explain.then(|| "the body is not JSON".into()));
    };
    let report = crate::inspect::route_report(config, kind, &payload, explain);
    let text = explain.then(|| crate::inspect::render_report(&report));
    let deliveries = report
        .deliveries
        .into_iter()
        .filter(|d| spec.to.as_ref().is_none_or(|to| &d.destination == to))
        .map(|d| (d.destination, d.routes))
        .collect();
    (deliveries, text)
}

/// The jobs of one chunk of events, and what it counts for the record.
pub(super) struct Chunk {
    pub(super) jobs: Vec<JobRecord>,
    pub(super) events: u64,
    pub(super) not_sent: u64,
    pub(super) last: Option<Uuid>,
}

/// The delivery id of replay `op`'s job of `event` for `destination`: a UUID v7 with the
/// chunk's time and, for its random bits, a digest of the three, so that a chunk queued
/// again after a crash (its first queueing lost with sled's last second) reuses the ids
/// receivers may already have seen, and they can de-duplicate (at-least-once, as ever).
fn delivery_id(op: &Uuid, at_ms: u64, event: &Uuid, destination: &str) -> Uuid {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(op.as_bytes())
        .chain_update(event.as_bytes())
        .chain_update(destination.as_bytes())
        .finalize();
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(at_ms, &random).into_uuid()
}

pub(super) fn build_chunk(
    store: &Store,
    config: &Config,
    spec: &ReplaySpec,
    (op, now): (Uuid, u64),
    events: &[(Uuid, Position)],
) -> Result<Chunk, ReplayError> {
    let q = judge_query(spec);
    let mut chunk = Chunk {
        jobs: Vec::new(),
        events: 0,
        not_sent: 0,
        last: None,
    };
    for &(id, at) in events {
        chunk.events += 1;
        chunk.last = Some(id);
        let Some((found, body)) = store.judge_event(&q, at)? else {
            chunk.not_sent += 1;
            continue;
        };
        let (deliveries, _) = decide(config, spec, found.header.kind, &body, false);
        if deliveries.is_empty() {
            chunk.not_sent += 1;
        }
        for (destination, routes) in deliveries {
            let job_id = delivery_id(&op, now, &id, &destination);
            let mut job = JobRecord::new(id, found.header.kind, destination, routes, now);
            job.id = job_id;
            job.event_at = Some(at);
            chunk.jobs.push(job);
        }
    }
    Ok(chunk)
}

pub(super) fn plan(
    store: &Store,
    config: &Config,
    spec: &ReplaySpec,
    selected: &[(Uuid, Position)],
    explain: bool,
) -> Result<ReplayPlan, ReplayError> {
    let q = judge_query(spec);
    let mut plan = ReplayPlan {
        selected: selected.len() as u64,
        complete: true,
        ..ReplayPlan::default()
    };
    for &(id, at) in selected {
        let Some((found, body)) = store.judge_event(&q, at)? else {
            plan.not_sent += 1;
            continue;
        };
        let listed = plan.events.len() < PLAN_LISTED;
        let (deliveries, text) = decide(config, spec, found.header.kind, &body, explain && listed);
        if deliveries.is_empty() {
            plan.not_sent += 1;
        }
        for (d, _) in &deliveries {
            *plan.destinations.entry(d.clone()).or_default() += 1;
        }
        if listed {
            plan.events.push(PlannedEvent {
                event_id: id,
                kind: found.header.kind.to_string(),
                received_at_ms: found.header.received_at_ms,
                destinations: deliveries.into_iter().map(|(d, _)| d).collect(),
                explain: text,
            });
        } else {
            plan.complete = false;
        }
    }
    Ok(plan)
}
