//! Finding events in the journal by time and attributes: `event list`, and the selection
//! that `replay` and the shadow check work on.
//!
//! The journal has no index by kind, route or destination: a query walks the segments that
//! can hold events received after `since` (a segment's modification time is at least the
//! receive time of its last event) and decodes only the records' headers. Bodies are read
//! only for the events that pass those filters and need one (`mindstamp_id`).
//!
//! A job's status comes from where it is now: queued (fast lane, journal overflow or sled),
//! dead, or settled in sled; a job found nowhere was delivered from the fast lane (its
//! Delivered record is in the journal), since a queued job is never forgotten.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::entry::{self, EventHeader, JobSeed};
use super::journal::{Position, Scanned, HEADER_LEN};
use super::record::now_ms;
use super::retry_queue::decode;
use super::{SettledJob, Store, StoreError};
use crate::event::EventKind;

/// How far a segment file's modification time may lag the clock that stamps events.
const MTIME_SLACK_MS: u64 = 2_000;

/// Where an event stands, judged from its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    /// It matched no route and has no jobs.
    Unrouted,
    /// A job of it is waiting for an attempt or a retry.
    Queued,
    /// A job of it is in the dead letters.
    Dead,
    /// Every job of it was delivered.
    Delivered,
    /// Settled, but an operator dropped a dead letter of it.
    Dropped,
}

impl EventStatus {
    /// The name used on the command line and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Unrouted => "unrouted",
            EventStatus::Queued => "queued",
            EventStatus::Dead => "dead",
            EventStatus::Delivered => "delivered",
            EventStatus::Dropped => "dropped",
        }
    }

    /// Parses [`EventStatus::as_str`]'s names.
    pub fn parse(s: &str) -> Option<EventStatus> {
        [
            EventStatus::Unrouted,
            EventStatus::Queued,
            EventStatus::Dead,
            EventStatus::Delivered,
            EventStatus::Dropped,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// Which events a query selects. Every filter given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventQuery {
    /// Received at or after this (Unix ms).
    pub since_ms: u64,
    /// Received before this (Unix ms), if given.
    #[serde(default)]
    pub until_ms: Option<u64>,
    /// Of this kind.
    #[serde(default)]
    pub kind: Option<EventKind>,
    /// Matched this route when it was accepted.
    #[serde(default)]
    pub route: Option<String>,
    /// Had a job for this destination (its status then judged from that job alone).
    #[serde(default)]
    pub destination: Option<String>,
    /// With this status now.
    #[serde(default)]
    pub status: Option<EventStatus>,
    /// With this Mindstamp `id` in its body.
    #[serde(default)]
    pub mindstamp_id: Option<String>,
}

/// One job of a found event and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundJob {
    /// The job as recorded at acceptance.
    pub seed: JobSeed,
    /// Its status (never `Unrouted`).
    pub status: EventStatus,
}

/// An event a query found.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundEvent {
    /// Where its record is.
    pub at: Position,
    /// Its header (id, kind, receive time, routes, jobs).
    pub header: EventHeader,
    /// Its status (over the jobs of `destination` when the query names one).
    pub status: EventStatus,
    /// Its jobs with their status.
    pub jobs: Vec<FoundJob>,
}

impl EventQuery {
    /// Whether `h` passes the filters a header alone can decide.
    fn admits(&self, h: &EventHeader) -> bool {
        h.received_at_ms >= self.since_ms
            && self.until_ms.is_none_or(|u| h.received_at_ms < u)
            && self.kind.is_none_or(|k| k == h.kind)
            && self.route.as_ref().is_none_or(|r| h.routes.contains(r))
            && self
                .destination
                .as_ref()
                .is_none_or(|d| h.jobs.iter().any(|j| &j.destination == d))
    }
}

impl Store {
    /// The events that pass `q`'s header filters (kind, route, destination, time), oldest
    /// first by id, with their positions. Status and Mindstamp id are judged later, by
    /// [`Store::judge_event`], one event at a time. Events past `server.retention` are
    /// left out, as `event show` leaves them out.
    pub fn select_events(&self, q: &EventQuery) -> Result<Vec<(Uuid, Position)>, StoreError> {
        let i = &self.inner;
        let kept_from = now_ms().saturating_sub(self.retention_ms());
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for seg in i.journal.segments() {
            let modified = super::segments::modified_ms(&i.journal_dir, seg.seq);
            if modified.saturating_add(MTIME_SLACK_MS) < q.since_ms.max(kept_from) {
                continue;
            }
            i.journal.walk_segment(seg.seq, HEADER_LEN, |item| {
                let Scanned::Record { at, payload } = item else {
                    return true;
                };
                if let Ok(entry::Entry::Event(h, _) | entry::Entry::Carried(h, _)) =
                    entry::decode(&payload)
                {
                    if h.received_at_ms >= kept_from && q.admits(&h) && seen.insert(h.id) {
                        out.push((h.id, at));
                    }
                }
                true
            })?;
        }
        out.sort_unstable_by_key(|(id, _)| *id);
        Ok(out)
    }

    /// Where event `id` is in the journal, while it is kept (as [`Store::event`] finds it).
    pub fn event_position(&self, id: &Uuid) -> Result<Option<Position>, StoreError> {
        Ok(self.find_event(id, now_ms())?.map(|(at, _, _)| at))
    }

    /// Reads the event at `at` and judges the filters that need its body or its jobs'
    /// status; `None` if it does not pass them.
    pub fn judge_event(
        &self,
        q: &EventQuery,
        at: Position,
    ) -> Result<Option<(FoundEvent, bytes::Bytes)>, StoreError> {
        let (header, body) = self.read_event(at)?;
        if let Some(want) = &q.mindstamp_id {
            let found = serde_json::from_slice(&body)
                .ok()
                .and_then(|json| crate::ingress::recent::mindstamp_id(&json));
            if found.as_ref() != Some(want) {
                return Ok(None);
            }
        }
        let mut jobs = Vec::with_capacity(header.jobs.len());
        for seed in &header.jobs {
            let status = self.job_now(seed, at)?;
            jobs.push(FoundJob {
                seed: seed.clone(),
                status,
            });
        }
        let status = event_status(
            jobs.iter()
                .filter(|j| {
                    q.destination
                        .as_ref()
                        .is_none_or(|d| &j.seed.destination == d)
                })
                .map(|j| j.status),
        );
        if q.status.is_some_and(|s| s != status) {
            return Ok(None);
        }
        Ok(Some((
            FoundEvent {
                at,
                header,
                status,
                jobs,
            },
            body,
        )))
    }

    /// Events passing every filter of `q`, newest first, older than `before` when given, at
    /// most `limit`; and whether more would follow (for paging).
    pub fn list_events(
        &self,
        q: &EventQuery,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<(Vec<FoundEvent>, bool), StoreError> {
        let mut out = Vec::new();
        for (id, at) in self.select_events(q)?.into_iter().rev() {
            if before.is_some_and(|b| id >= b) {
                continue;
            }
            let Some((found, _)) = self.judge_event(q, at)? else {
                continue;
            };
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(found);
        }
        Ok((out, false))
    }

    /// Where job `seed` of the event at `at` stands now.
    fn job_now(&self, seed: &JobSeed, at: Position) -> Result<EventStatus, StoreError> {
        let t = &self.inner.trees;
        let key = seed.id.as_bytes();
        if self.inner.lane.job(&seed.id).is_some()
            || t.jobs.contains_key(key)?
            || self.waits_in_journal(&seed.destination, &seed.id, at)
        {
            return Ok(EventStatus::Queued);
        }
        if t.dead.contains_key(key)? {
            return Ok(EventStatus::Dead);
        }
        if let Some(bytes) = t.done.get(key)? {
            let settled: SettledJob = decode(&bytes)?;
            if settled.outcome == "dropped" {
                return Ok(EventStatus::Dropped);
            }
        }
        // Settled in sled as delivered, or delivered from the fast lane.
        Ok(EventStatus::Delivered)
    }
}

/// An event's status from its jobs': dead before queued before dropped before delivered;
/// an event with no jobs is unrouted.
pub fn event_status(jobs: impl Iterator<Item = EventStatus>) -> EventStatus {
    let mut status = None;
    for s in jobs {
        let rank = |s: EventStatus| match s {
            EventStatus::Dead => 4,
            EventStatus::Queued => 3,
            EventStatus::Dropped => 2,
            EventStatus::Delivered => 1,
            EventStatus::Unrouted => 0,
        };
        if status.is_none_or(|cur| rank(s) > rank(cur)) {
            status = Some(s);
        }
    }
    status.unwrap_or(EventStatus::Unrouted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_as_bad_as_its_worst_job_and_unrouted_without_jobs() {
        use EventStatus::*;
        assert_eq!(event_status([].into_iter()), Unrouted);
        assert_eq!(event_status([Delivered, Delivered].into_iter()), Delivered);
        assert_eq!(event_status([Delivered, Dropped].into_iter()), Dropped);
        assert_eq!(
            event_status([Dropped, Queued, Delivered].into_iter()),
            Queued
        );
        assert_eq!(event_status([Queued, Dead].into_iter()), Dead);
        for s in [Unrouted, Queued, Dead, Delivered, Dropped] {
            assert_eq!(EventStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(EventStatus::parse("lost"), None);
    }
}
