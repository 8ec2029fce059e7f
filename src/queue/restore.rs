//! Placing the jobs a replay found: into the lane while it has room, into the journal
//! overflow beyond, and a destination whose jobs waited in the journal at the last
//! checkpoint from its overflow record (see [`super::overflow_records`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use uuid::Uuid;

use super::entry::EventHeader;
use super::journal::Position;
use super::lane::LaneJob;
use super::overflow::{Overflow, Recheck};
use super::overflow_records::OverflowRecord;
use super::recover::Replayed;
use super::retry_queue::{decode, parse_due_value};
use super::stats::Slot;
use super::{keys, JobRecord, JobState, Store, StoreError};

impl Store {
    /// Re-creates the replayed events' jobs that have neither a Delivered record nor a
    /// sled record, and restores the overflow records; returns the overflows to install.
    pub(super) fn place_replayed(
        &self,
        candidates: Vec<(Position, EventHeader)>,
        delivered: HashSet<Uuid>,
        report: &mut Replayed,
    ) -> Result<HashMap<String, Overflow>, StoreError> {
        let i = &self.inner;
        // The lane takes the jobs while it has room (their bodies are read when they are
        // leased); from the first event that does not fit, they wait in the journal, as
        // they would have if the daemon had not stopped. A destination whose jobs waited
        // in the journal at the last checkpoint starts from its record instead.
        let records = self.overflow_records()?;
        let mut overflow: HashMap<String, Overflow> = records
            .iter()
            .map(|(name, r)| (name.clone(), r.restore()))
            .collect();
        // Jobs the record counted already: in its stretch [from, upto).
        let counted = |destination: &str, at: Position| {
            records
                .get(destination)
                .is_some_and(|r| at >= r.from && at < r.upto)
        };
        // Jobs a record counted that were delivered after it, per destination.
        let mut delivered_since: HashMap<String, u64> = HashMap::new();
        for (at, header) in candidates {
            for job in header.fresh_jobs() {
                // Counted by its overflow's record; delivered since (a Delivered record after
                // the checkpoint) it leaves the count here, moved to sled since it leaves it
                // below (`uncount_moved_to_sled`); the refill checks again (`Recheck`). No
                // sled lookup per job for the backlog of a destination that is down.
                if counted(&job.destination, at) {
                    if delivered.contains(&job.id) {
                        if let Some(o) = overflow.get_mut(&job.destination) {
                            o.skip.insert(job.id);
                            o.jobs = o.jobs.saturating_sub(1);
                            *delivered_since.entry(job.destination.clone()).or_default() += 1;
                        }
                    }
                    continue;
                }
                if delivered.contains(&job.id) || self.in_sled(&job.id)? {
                    if let Some(o) = overflow.get_mut(&job.destination) {
                        if at >= o.from {
                            o.skip.insert(job.id);
                        }
                    }
                    continue;
                }
                self.recreate(job, at, header.received_at_ms, &mut overflow, report);
            }
        }
        let delivered = Arc::new(delivered);
        for (name, r) in &records {
            let mut jobs = r
                .jobs
                .saturating_sub(delivered_since.get(name).copied().unwrap_or(0));
            if let Some(o) = overflow.get_mut(name) {
                jobs = jobs.saturating_sub(self.uncount_moved_to_sled(name, r, o)?);
            }
            i.stats
                .add_many(name, Slot::Queued(JobState::Pending), jobs);
            report.waiting += usize::try_from(jobs).unwrap_or(usize::MAX);
            if let Some(o) = overflow.get_mut(name) {
                o.recheck = Some(Recheck {
                    before: r.upto,
                    delivered: Arc::clone(&delivered),
                });
            }
        }
        Ok(overflow)
    }

    /// Re-creates one replayed job of the event at `at`: in the lane while it has room,
    /// else waiting in the journal, where its destination's overflow starts (earlier now,
    /// if it was restored from a record that starts later).
    fn recreate(
        &self,
        mut job: JobRecord,
        at: Position,
        received_at_ms: u64,
        overflow: &mut HashMap<String, Overflow>,
        report: &mut Replayed,
    ) {
        let i = &self.inner;
        i.stats.add(&job.destination, Slot::Queued(job.state()));
        report.recreated += 1;
        let room = i.lane.room(&job.destination, 0).is_some();
        match overflow.get_mut(&job.destination) {
            Some(o) if at >= o.from => o.jobs += 1,
            Some(o) if !room => {
                o.from = at;
                o.from_ms = o.from_ms.min(received_at_ms);
                o.jobs += 1;
            }
            None if !room => {
                let mut o = Overflow::new(at, received_at_ms);
                o.jobs = 1;
                overflow.insert(job.destination.clone(), o);
            }
            Some(_) | None => {
                job.event_at = Some(at);
                i.lane.push(LaneJob {
                    job,
                    body: None,
                    at,
                });
                return;
            }
        }
        report.waiting += 1;
    }

    /// Jobs the overflow record of `destination` counts that moved to sled's retry queue
    /// after it was written (refilled, attempted, failed, before a crash): taken out of
    /// the count (and into the skip set), so the queue is not counted high until the
    /// refill reaches them. Returns how many; walks only that destination's due entries
    /// in the record's segments.
    fn uncount_moved_to_sled(
        &self,
        destination: &str,
        r: &OverflowRecord,
        o: &mut Overflow,
    ) -> Result<u64, StoreError> {
        let t = &self.inner.trees;
        let mut n = 0;
        for item in t.due.scan_prefix(keys::due_prefix(destination)) {
            let (key, value) = item?;
            if parse_due_value(&value).is_some_and(|(_, segment)| segment < r.from.segment) {
                continue;
            }
            let Some((_, _, job_id)) = keys::parse_due_key(&key) else {
                continue;
            };
            if o.skip.contains(&job_id) {
                continue;
            }
            let Some(bytes) = t.jobs.get(job_id.as_bytes())? else {
                continue;
            };
            let job: JobRecord = decode(&bytes)?;
            if job.event_at.is_some_and(|at| at >= r.from && at < r.upto) && n < o.jobs {
                o.skip.insert(job_id);
                o.jobs -= 1;
                n += 1;
            }
        }
        Ok(n)
    }
}
