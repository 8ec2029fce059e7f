//! Lane jobs going back to the journal: a job that waited too long in the fast lane, and
//! every waiting job of a parked (held) destination.
//!
//! A job in the lane is a copy of what its event record in the journal already says, so
//! taking it back costs no write: the destination's [`Overflow`] starts at the oldest job
//! taken back, and [`Store::refill_lane`] re-creates the jobs from there when the
//! destination can take them. Jobs of the destination in that stretch of the journal that
//! were not taken back (delivered, in flight, in sled) go into the overflow's skip set, so
//! a refill never re-creates them. The overflow is kept durably with the checkpoint
//! ([`super::overflow_records`]), so the checkpoint need not wait for these jobs.
//!
//! Before, such jobs moved to sled: a destination down for an hour put every job of that
//! hour into sled (about 130 bytes of memory and 400 bytes of disk each, and sled replays
//! its log at every start). Now sled holds only the jobs that failed an attempt.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use uuid::Uuid;

use super::entry::{self, Entry};
use super::journal::Position;
use super::lane::LaneJob;
use super::overflow::{Overflow, Step};
use super::{Store, StoreError};

/// How long a job may wait in the fast lane before it goes back to the journal: the lane
/// holds the young jobs of destinations that keep up; a slow or paused destination's
/// backlog waits in the journal.
pub(super) const LANE_MAX_WAIT: Duration = Duration::from_secs(30);

impl Store {
    /// Parks or unparks `destination`: while parked (held, see `health`), its waiting
    /// jobs go back to the journal at the next housekeeping pass, and the lane takes only
    /// one job of it at a time (for a probe). Cheap; called at every look of its worker.
    pub fn park(&self, destination: &str, parked: bool) {
        let mut set = self.inner.parked.lock().unwrap_or_else(|p| p.into_inner());
        if parked {
            if !set.contains(destination) {
                set.insert(destination.to_owned());
            }
        } else {
            set.remove(destination);
        }
    }

    /// Whether `destination` is parked.
    pub(super) fn is_parked(&self, destination: &str) -> bool {
        self.inner
            .parked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(destination)
    }

    /// Takes back to the journal the lane jobs that waited longer than [`LANE_MAX_WAIT`],
    /// and every waiting job of a parked destination beyond the one its probe may use.
    /// Runs in housekeeping, between checkpoints (never beside [`Store::advance_checkpoint`]).
    pub(super) fn push_back_waiting(&self) -> Result<usize, StoreError> {
        let mut jobs = self.inner.lane.take_waiting(None, LANE_MAX_WAIT);
        let parked: Vec<String> = self
            .inner
            .parked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        for name in parked {
            if self.inner.lane.waiting_of(&name) > 1 {
                jobs.extend(self.inner.lane.take_waiting(Some(&name), Duration::ZERO));
            }
        }
        self.push_back(jobs)
    }

    /// Turns lane jobs (already taken out of the lane) back into jobs waiting in the
    /// journal; returns how many.
    pub(super) fn push_back(&self, jobs: Vec<LaneJob>) -> Result<usize, StoreError> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let i = &self.inner;
        // No refill may run meanwhile: it could re-create a job before its skip entry is in.
        let _one = i.refilling.lock().unwrap_or_else(|p| p.into_inner());
        let n = jobs.len();
        let mut by_destination: HashMap<String, Vec<LaneJob>> = HashMap::new();
        for job in jobs {
            by_destination
                .entry(job.job.destination.clone())
                .or_default()
                .push(job);
        }
        for (destination, jobs) in by_destination {
            let Some(from) = jobs.iter().map(|j| j.at).min() else {
                continue;
            };
            let from_ms = jobs
                .iter()
                .map(|j| j.job.created_at_ms)
                .min()
                .unwrap_or_default();
            let taken: HashSet<Uuid> = jobs.iter().map(|j| j.job.id).collect();
            // The stretch of the journal the overflow grows by: up to where it started
            // before, or the journal's end.
            let until = {
                let mut w = i.writer.lock().unwrap_or_else(|p| p.into_inner());
                let end = w.journal.end();
                let until = match w.overflow.get_mut(&destination) {
                    Some(o) => {
                        let until = o.from;
                        if from < o.from {
                            o.from = from;
                            o.from_ms = o.from_ms.min(from_ms);
                        }
                        o.jobs += jobs.len() as u64;
                        o.taken_back = true;
                        until
                    }
                    None => {
                        let mut o = Overflow::new(from, from_ms);
                        o.jobs = jobs.len() as u64;
                        o.taken_back = true;
                        w.overflow.insert(destination.clone(), o);
                        self.note_overflow(&w);
                        end
                    }
                };
                // The overflow holds them now (durably with the next checkpoint, which
                // cannot pass them before that).
                for j in &jobs {
                    i.lane.release(j.at);
                }
                until
            };
            let others = self.jobs_between(&destination, from, until);
            let mut w = i.writer.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(o) = w.overflow.get_mut(&destination) {
                o.skip
                    .extend(others.into_iter().filter(|id| !taken.contains(id)));
            }
        }
        Ok(n)
    }

    /// The ids of `destination`'s jobs in the event records from `from` up to `until`.
    /// A damaged stretch is logged and skipped (its jobs cannot be re-created either).
    fn jobs_between(&self, destination: &str, from: Position, until: Position) -> Vec<Uuid> {
        let mut out = Vec::new();
        self.walk_records(
            from,
            until,
            "taken back from the fast lane",
            |_, payload| {
                if let Ok(Entry::Event(header, _)) = entry::decode(payload) {
                    out.extend(
                        header
                            .jobs
                            .iter()
                            .filter(|j| j.destination == destination)
                            .map(|j| j.id),
                    );
                }
                Step::Next
            },
        );
        out
    }
}
