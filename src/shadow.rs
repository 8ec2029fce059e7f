//! The shadow test: a candidate config judged against recorded traffic before it is
//! reloaded. Every event kept in the journal since a time is routed by the rules in force
//! and by the candidate's; the report counts, per route and per destination, what each
//! sends, and samples the deliveries the candidate would gain and lose. Nothing is sent.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Config;
use crate::queue::catalog::EventQuery;
use crate::queue::{Store, StoreError};

/// Deliveries gained and lost listed in a report (the counts cover all).
pub const SAMPLE: usize = 20;

/// What the current and the candidate rules send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Under the rules in force.
    pub current: u64,
    /// Under the candidate rules.
    pub candidate: u64,
}

/// One event whose delivery to a destination the candidate changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Our event id.
    pub event_id: Uuid,
    /// Its kind.
    pub kind: String,
    /// The destination it would gain or lose.
    pub destination: String,
}

/// The shadow report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowReport {
    /// Events evaluated (kept in the journal and received since `since_ms`).
    pub events: u64,
    /// Received since (Unix ms).
    pub since_ms: u64,
    /// Events each route matches, by route name (routes of either config).
    pub routes: BTreeMap<String, Counts>,
    /// Events each destination would receive, by destination name.
    pub destinations: BTreeMap<String, Counts>,
    /// Deliveries the candidate adds, in all.
    pub gained: u64,
    /// Deliveries the candidate takes away, in all.
    pub lost: u64,
    /// The first [`SAMPLE`] deliveries gained.
    pub gained_sample: Vec<Change>,
    /// The first [`SAMPLE`] deliveries lost.
    pub lost_sample: Vec<Change>,
}

/// Routes `current` and `candidate` over every event received since `since_ms`.
pub fn report(
    store: &Store,
    current: &Config,
    candidate: &Config,
    since_ms: u64,
) -> Result<ShadowReport, StoreError> {
    let q = EventQuery {
        since_ms,
        ..EventQuery::default()
    };
    let mut r = ShadowReport {
        since_ms,
        ..ShadowReport::default()
    };
    for (id, at) in store.select_events(&q)? {
        let Some((found, body)) = store.judge_event(&q, at)? else {
            continue;
        };
        let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&body) else {
            continue;
        };
        r.events += 1;
        let kind = found.header.kind;
        let now = current.rules.decide(kind, &payload);
        let next = candidate.rules.decide(kind, &payload);
        for route in &now.routes {
            r.routes.entry(route.clone()).or_default().current += 1;
        }
        for route in &next.routes {
            r.routes.entry(route.clone()).or_default().candidate += 1;
        }
        let before: BTreeSet<&str> = now
            .deliveries
            .iter()
            .map(|d| d.destination.as_str())
            .collect();
        let after: BTreeSet<&str> = next
            .deliveries
            .iter()
            .map(|d| d.destination.as_str())
            .collect();
        for d in &before {
            r.destinations.entry(d.to_string()).or_default().current += 1;
        }
        for d in &after {
            r.destinations.entry(d.to_string()).or_default().candidate += 1;
        }
        let change = |destination: &str| Change {
            event_id: id,
            kind: kind.to_string(),
            destination: destination.to_string(),
        };
        for d in after.difference(&before) {
            r.gained += 1;
            if r.gained_sample.len() < SAMPLE {
                r.gained_sample.push(change(d));
            }
        }
        for d in before.difference(&after) {
            r.lost += 1;
            if r.lost_sample.len() < SAMPLE {
                r.lost_sample.push(change(d));
            }
        }
    }
    Ok(r)
}
