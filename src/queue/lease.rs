//! Leasing due jobs to a worker and settling each lease with a transition.
//!
//! A lease is a job a worker holds while it attempts it, with the body to send. Its
//! settlement says what became of it; where that is written depends on where the job was:
//!
//! | from      | delivered                         | retry at T                | dead                  |
//! |-----------|-----------------------------------|---------------------------|-----------------------|
//! | fast lane | Delivered record in the journal   | moves to sled (job + due) | dead letter in sled   |
//! | sled      | `done` (+ purge after retention)  | due entry moved           | moved to `dead`       |

use bytes::Bytes;
use sled::Transactional;
use uuid::Uuid;

use super::entry::{self, DeliveredEntry};
use super::journal::Position;
use super::keys::{self, Expiring};
use super::record::{now_ms, AttemptRecord, DeadLetter, JobRecord, SettledJob};
use super::retry_queue::{decode, encode_with, parse_due_value, queue_job, segment_of, unqueue};
use super::stats::Slot;
use super::{Store, StoreError};

/// A job held by a worker while it is attempted.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The job as it was leased.
    pub job: JobRecord,
    /// The body to send; `None` if the event's record could not be read (the job is then
    /// dead-lettered with that reason).
    pub body: Option<Bytes>,
    /// The event's position, when the job came from the fast lane.
    lane: Option<Position>,
}

impl Lease {
    /// Whether the job came from the fast lane (it has never been attempted before).
    pub fn from_lane(&self) -> bool {
        self.lane.is_some()
    }
}

/// What became of a leased job.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// The destination took it.
    Delivered {
        /// The attempt that delivered it.
        attempt: AttemptRecord,
    },
    /// It failed and is tried again at `job.next_attempt_at_ms`.
    Retry {
        /// The job with its attempt counted and its next due time.
        job: JobRecord,
        /// The failed attempt.
        attempt: AttemptRecord,
    },
    /// It will not be tried again without an operator.
    Dead {
        /// The dead letter.
        letter: DeadLetter,
        /// The attempt that ended it, if one was made.
        attempt: Option<AttemptRecord>,
    },
}

/// Leases of one destination that are due now, and when the next one after them is due.
#[derive(Debug, Default)]
pub struct LeaseScan {
    /// Due jobs: retries from sled first, then the fast lane.
    pub leases: Vec<Lease>,
    /// Due time of the first not-yet-due job in sled, if any.
    pub next_due_ms: Option<u64>,
}

impl Store {
    /// The body of a sled job, read from its event's journal record.
    fn body_of(&self, job: &JobRecord) -> Option<Bytes> {
        let at = job.event_at?;
        match self.read_event(at) {
            Ok((_, body)) => Some(body),
            Err(e) => {
                tracing::error!(delivery_id = %job.id, error = %e, "cannot read the event of a queued job from the journal");
                None
            }
        }
    }

    /// Leases up to `limit` jobs of `destination` due at `now_ms`: sled's due retries
    /// first (skipping those `skip` names, already in flight), then fresh jobs from the
    /// fast lane.
    pub fn lease(
        &self,
        destination: &str,
        now_ms: u64,
        limit: usize,
        skip: impl Fn(&Uuid) -> bool,
    ) -> Result<LeaseScan, StoreError> {
        self.lease_with(destination, now_ms, limit, limit, skip)
    }

    /// [`Store::lease`], with at most `fresh_limit` of the jobs fresh ones (from the lane
    /// or the journal): a destination failing in a streak keeps retrying what is in the
    /// retry queue but takes fresh jobs only one at a time.
    pub fn lease_with(
        &self,
        destination: &str,
        now_ms: u64,
        limit: usize,
        fresh_limit: usize,
        skip: impl Fn(&Uuid) -> bool,
    ) -> Result<LeaseScan, StoreError> {
        let mut scan = LeaseScan::default();
        let t = &self.inner.trees;
        for item in t.due.scan_prefix(keys::due_prefix(destination)) {
            let (key, _) = item?;
            let Some((_, due_ms, job_id)) = keys::parse_due_key(&key) else {
                continue;
            };
            if due_ms > now_ms {
                scan.next_due_ms = Some(due_ms);
                break;
            }
            if skip(&job_id) {
                continue;
            }
            if scan.leases.len() >= limit {
                scan.next_due_ms = Some(due_ms);
                break;
            }
            match t.jobs.get(job_id.as_bytes())? {
                Some(bytes) => {
                    let job: JobRecord = decode(&bytes)?;
                    let body = self.body_of(&job);
                    scan.leases.push(Lease {
                        job,
                        body,
                        lane: None,
                    });
                }
                // A due entry without its job cannot be delivered: drop the stray entry, and
                // the count and segment reference that opening the store gave it.
                None => {
                    if let Some(value) = t.due.remove(&key)? {
                        if let Some((state, segment)) = parse_due_value(&value) {
                            self.inner.stats.remove(destination, Slot::Queued(state));
                            self.add_ref(segment, -1);
                        }
                        tracing::warn!(destination, delivery_id = %job_id, "a due entry without its job record was dropped");
                    }
                }
            }
        }
        let room = limit.saturating_sub(scan.leases.len()).min(fresh_limit);
        if room > 0 {
            let mut fresh = self.inner.lane.take(destination, room);
            if fresh.len() < room && self.overflowing(destination) {
                // Jobs wait in the journal for the lane: bring the next ones in.
                self.refill_lane(destination)?;
                fresh.extend(self.inner.lane.take(destination, room - fresh.len()));
            }
            for lj in fresh {
                let body = lj.body.or_else(|| self.body_of(&lj.job));
                scan.leases.push(Lease {
                    job: lj.job,
                    body,
                    lane: Some(lj.at),
                });
            }
        }
        Ok(scan)
    }

    /// Leases up to `limit` jobs of `destination`, due or not (to dead-letter the jobs of a
    /// destination removed from the config).
    pub fn lease_all(&self, destination: &str, limit: usize) -> Result<Vec<Lease>, StoreError> {
        let mut fresh = self.inner.lane.take(destination, limit);
        if fresh.len() < limit && self.overflowing(destination) {
            // Those waiting in the journal too, or they would stay queued for a destination
            // that no worker serves any more.
            self.refill_lane(destination)?;
            fresh.extend(self.inner.lane.take(destination, limit - fresh.len()));
        }
        let mut out: Vec<Lease> = fresh
            .into_iter()
            .map(|lj| Lease {
                job: lj.job,
                body: lj.body,
                lane: Some(lj.at),
            })
            .collect();
        let sled = self.sled_jobs_of(destination, limit.saturating_sub(out.len()))?;
        out.extend(sled.into_iter().map(|job| Lease {
            job,
            body: None,
            lane: None,
        }));
        Ok(out)
    }

    /// Gives back leases that were never attempted: fast-lane jobs return to the front of
    /// the lane; sled jobs need nothing (their due entries never moved).
    pub fn unlease(&self, leases: Vec<Lease>) {
        let lane: Vec<Uuid> = leases
            .iter()
            .filter(|l| l.lane.is_some())
            .map(|l| l.job.id)
            .collect();
        self.inner.lane.put_back(&lane);
    }

    /// Records what became of a leased job.
    pub fn settle(&self, lease: &Lease, transition: Transition) -> Result<(), StoreError> {
        self.check_open()?;
        match lease.lane {
            Some(at) => self.settle_lane(lease, at, transition),
            None => self.settle_sled(&lease.job, transition),
        }
        .map_err(|e| self.observe(e))
    }

    fn settle_lane(
        &self,
        lease: &Lease,
        at: Position,
        transition: Transition,
    ) -> Result<(), StoreError> {
        let i = &self.inner;
        let job = &lease.job;
        if !i.lane.finish(&job.id) {
            return Ok(());
        }
        let from = Slot::Queued(job.state());
        match transition {
            Transition::Delivered { attempt } => {
                i.unsynced
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(job.id, attempt.clone());
                let record = entry::delivered(&DeliveredEntry {
                    job: job.id,
                    event: job.event_id,
                    attempt,
                });
                let mut s = i.settles.lock().unwrap_or_else(|p| p.into_inner());
                s.records.push(record);
                s.releases.push(at);
                s.jobs.push(job.id);
                drop(s);
                i.stats.remove(&job.destination, from);
            }
            Transition::Retry { mut job, attempt } => {
                job.event_at = Some(at);
                let t = &i.trees;
                (&t.jobs, &t.due)
                    .transaction(|(jobs, due)| {
                        queue_job(jobs, due, &job, std::slice::from_ref(&attempt))
                    })
                    .map_err(StoreError::from)?;
                self.add_ref(at.segment, 1);
                i.stats
                    .moved(&job.destination, from, Slot::Queued(job.state()));
                i.lane.release(at);
            }
            Transition::Dead {
                mut letter,
                attempt,
            } => {
                letter.job.event_at = Some(at);
                self.write_dead(&letter, attempt.as_ref(), None)?;
                self.add_ref(at.segment, 1);
                i.stats.moved(&job.destination, from, Slot::Dead);
                i.lane.release(at);
            }
        }
        Ok(())
    }

    /// Writes a dead letter (removing `queued`'s due entry and record in the same
    /// transaction when given); returns the job as it was queued and whether the letter
    /// replaced one.
    fn write_dead(
        &self,
        letter: &DeadLetter,
        attempt: Option<&AttemptRecord>,
        queued: Option<&JobRecord>,
    ) -> Result<(Option<JobRecord>, bool), StoreError> {
        let t = &self.inner.trees;
        let expires = letter.dead_at_ms.saturating_add(self.dead_retention_ms());
        Ok(
            (&t.jobs, &t.due, &t.dead, &t.expiry).transaction(|(jobs, due, dead, expiry)| {
                let mut letter = letter.clone();
                let mut history = Vec::new();
                let was = match queued {
                    Some(q) => match unqueue(jobs, due, q)? {
                        Some((stored, attempts)) => {
                            // The stored record knows where the event is now (carried
                            // forward).
                            letter.job.event_at = stored.event_at;
                            history = attempts;
                            Some(stored)
                        }
                        None => None,
                    },
                    None => None,
                };
                history.extend(attempt.cloned());
                let replaced = dead
                    .insert(letter.job.id.as_bytes(), encode_with(&letter, &history))?
                    .is_some();
                expiry.insert(
                    keys::expiry_key(expires, Expiring::Dead, letter.job.id.as_bytes()),
                    &[][..],
                )?;
                Ok((was, replaced))
            })?,
        )
    }

    fn settle_sled(&self, old: &JobRecord, transition: Transition) -> Result<(), StoreError> {
        let i = &self.inner;
        let t = &i.trees;
        let from = Slot::Queued(old.state());
        match transition {
            Transition::Delivered { attempt } => self.settle_sled_delivered(old, &attempt, from)?,
            Transition::Retry { mut job, attempt } => {
                let was = (&t.jobs, &t.due)
                    .transaction(|(jobs, due)| {
                        let stored = unqueue(jobs, due, old)?;
                        let mut job = job.clone();
                        let mut history = Vec::new();
                        if let Some((s, attempts)) = &stored {
                            job.event_at = s.event_at;
                            history.clone_from(attempts);
                        }
                        history.push(attempt.clone());
                        queue_job(jobs, due, &job, &history)?;
                        Ok(stored.map(|(s, _)| s))
                    })
                    .map_err(StoreError::from)?;
                let to = Slot::Queued(job.state());
                match was {
                    Some(stored) => {
                        job.event_at = stored.event_at;
                        i.stats.moved(&old.destination, from, to);
                    }
                    // Settled by an operator meanwhile and queued again now: count it in.
                    None => {
                        self.add_ref(segment_of(&job), 1);
                        i.stats.add(&job.destination, to);
                    }
                }
            }
            Transition::Dead { letter, attempt } => {
                let (was, replaced) = self.write_dead(&letter, attempt.as_ref(), Some(old))?;
                if was.is_some() {
                    i.stats.remove(&old.destination, from);
                } else if !replaced {
                    self.add_ref(segment_of(&letter.job), 1);
                }
                if !replaced {
                    i.stats.add(&old.destination, Slot::Dead);
                }
            }
        }
        Ok(())
    }

    /// A job from sled delivered: out of the queue into `v2.done` with its attempts,
    /// purged after `retention`.
    fn settle_sled_delivered(
        &self,
        old: &JobRecord,
        attempt: &AttemptRecord,
        from: Slot,
    ) -> Result<(), StoreError> {
        let i = &self.inner;
        let t = &i.trees;
        let retention = self.retention_ms();
        let now = now_ms();
        let was = (&t.jobs, &t.due, &t.done, &t.expiry)
            .transaction(|(jobs, due, done, expiry)| {
                let Some((stored, mut history)) = unqueue(jobs, due, old)? else {
                    return Ok(None);
                };
                let mut settled = stored.clone();
                settled.attempts = attempt.attempt;
                settled.first_attempt_at_ms = stored.first_attempt_at_ms.or(Some(attempt.at_ms));
                settled.last_attempt_at_ms = Some(attempt.at_ms);
                settled.last_status = attempt.status;
                settled.last_error = None;
                let record = SettledJob {
                    job: settled,
                    outcome: "delivered".into(),
                    settled_at_ms: now,
                };
                history.push(attempt.clone());
                done.insert(old.id.as_bytes(), encode_with(&record, &history))?;
                expiry.insert(
                    keys::expiry_key(
                        now.saturating_add(retention),
                        Expiring::Settled,
                        old.id.as_bytes(),
                    ),
                    &[][..],
                )?;
                Ok(Some(stored))
            })
            .map_err(StoreError::from)?;
        if let Some(stored) = was {
            self.add_ref(segment_of(&stored), -1);
            i.stats.remove(&old.destination, from);
        }
        Ok(())
    }
}
