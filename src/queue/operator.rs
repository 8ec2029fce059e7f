//! What an operator reads and does through the admin API: the story of an event, dead
//! letters listed, retried and dropped, and the queue's shape.

use sled::transaction::ConflictableTransactionError;
use sled::Transactional;
use uuid::Uuid;

use super::entry::{self, Entry};
use super::ingest::uuid_ms;
use super::journal::{Position, Scanned, HEADER_LEN};
use super::keys::{self, Expiring};
use super::record::{
    now_ms, AttemptRecord, DeadLetter, EventRecord, JobRecord, JobState, SettledJob,
};
use super::retry_queue::{decode, encode, queue_job, segment_of};
use super::stats::Slot;
use super::{Store, StoreError};
use bytes::Bytes;

/// Segments searched after a job's event for its Delivered record: a fast-lane job is
/// delivered or moved to sled within seconds, so its record is never far behind.
const DELIVERED_SEARCH_SEGMENTS: usize = 3;
/// How far a file's modification time may lag the clock that stamps job ids.
const MTIME_SLACK_MS: u64 = 2_000;

/// Where one job of an event stands now.
#[derive(Debug, Clone, PartialEq)]
pub enum JobStatus {
    /// Queued, waiting for its first attempt or a retry.
    Queued(JobRecord),
    /// In the dead letters.
    Dead(DeadLetter),
    /// Delivered or dropped.
    Settled(SettledJob),
}

impl Store {
    /// The event record of `event_id`, while it is kept (see `server.retention`).
    pub fn event(&self, event_id: &Uuid) -> Result<Option<EventRecord>, StoreError> {
        Ok(self
            .find_event(event_id, now_ms())?
            .map(|(_, h, body)| h.record(body.len())))
    }

    /// The stored body of `event_id`, while the event is kept.
    pub fn load_body(&self, event_id: &Uuid) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .find_event(event_id, now_ms())?
            .map(|(_, _, body)| body))
    }

    /// The queued job `job_id` (in the fast lane or in sled).
    pub fn job(&self, job_id: &Uuid) -> Result<Option<JobRecord>, StoreError> {
        if let Some(job) = self.inner.lane.job(job_id) {
            return Ok(Some(job));
        }
        self.inner
            .trees
            .jobs
            .get(job_id.as_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    /// The dead letter of `job_id`.
    pub fn dead_letter(&self, job_id: &Uuid) -> Result<Option<DeadLetter>, StoreError> {
        self.inner
            .trees
            .dead
            .get(job_id.as_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Every dead letter, oldest job first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.dead_letters_of(None, usize::MAX)
    }

    /// Dead letters, oldest job first, optionally of one destination only, at most `limit`.
    pub fn dead_letters_of(
        &self,
        destination: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.trees.dead.iter() {
            if out.len() >= limit {
                break;
            }
            let letter: DeadLetter = decode(&item?.1)?;
            if destination.is_none_or(|d| d == letter.job.destination) {
                out.push(letter);
            }
        }
        Ok(out)
    }

    /// The Delivered record of fast-lane job `job_id`, searched from `from` (or from the
    /// segment written when the job was created) over a few segments.
    fn delivered_in_journal(
        &self,
        job_id: &Uuid,
        from: Option<Position>,
    ) -> Result<Option<AttemptRecord>, StoreError> {
        if let Some(attempt) = self
            .inner
            .unsynced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(job_id)
        {
            return Ok(Some(attempt.clone()));
        }
        let created = uuid_ms(job_id);
        let segments = self.inner.journal.segments();
        let start = match from {
            Some(p) => p,
            None => {
                // The first segment still written to after the job was created (file
                // times come from a coarse clock: allow for it).
                let Some(seg) = segments.iter().find(|s| {
                    super::segments::modified_ms(&self.inner.journal_dir, s.seq)
                        .saturating_add(MTIME_SLACK_MS)
                        >= created
                }) else {
                    return Ok(None);
                };
                Position::start_of(seg.seq)
            }
        };
        let mut found = None;
        for seg in segments
            .iter()
            .filter(|s| s.seq >= start.segment)
            .take(DELIVERED_SEARCH_SEGMENTS)
        {
            let from = if seg.seq == start.segment {
                start.offset
            } else {
                HEADER_LEN
            };
            self.inner.journal.walk_segment(seg.seq, from, |item| {
                if let Scanned::Record { payload, .. } = item {
                    if let Ok(Entry::Delivered(d)) = entry::decode(&payload) {
                        if d.job == *job_id {
                            found = Some(d);
                            return false;
                        }
                    }
                }
                true
            })?;
            if found.is_some() {
                break;
            }
        }
        // Gone for readers once the event is past retention, like the event itself.
        Ok(found
            .filter(|d| uuid_ms(&d.event).saturating_add(self.retention_ms()) > now_ms())
            .map(|d| d.attempt))
    }

    /// The recorded attempts of `job_id`, in order (from sled, or the one attempt of a job
    /// delivered from the fast lane).
    pub fn attempts(&self, job_id: &Uuid) -> Result<Vec<AttemptRecord>, StoreError> {
        self.attempts_from(job_id, None)
    }

    /// [`Store::attempts`], searching the journal from `event_at` when it is known.
    fn attempts_from(
        &self,
        job_id: &Uuid,
        event_at: Option<Position>,
    ) -> Result<Vec<AttemptRecord>, StoreError> {
        let t = &self.inner.trees;
        let stored: Vec<AttemptRecord> = t
            .attempts
            .scan_prefix(job_id.as_bytes())
            .map(|item| decode(&item?.1))
            .collect::<Result<_, _>>()?;
        if !stored.is_empty()
            || t.jobs.contains_key(job_id.as_bytes())?
            || t.dead.contains_key(job_id.as_bytes())?
            || t.done.contains_key(job_id.as_bytes())?
        {
            return Ok(stored);
        }
        Ok(self
            .delivered_in_journal(job_id, event_at)?
            .into_iter()
            .collect())
    }

    /// Where job `job_id` stands: queued, dead or settled; `None` once purged.
    pub fn job_status(&self, job_id: &Uuid) -> Result<Option<JobStatus>, StoreError> {
        if let Some(job) = self.job(job_id)? {
            return Ok(Some(JobStatus::Queued(job)));
        }
        if let Some(letter) = self.dead_letter(job_id)? {
            return Ok(Some(JobStatus::Dead(letter)));
        }
        if let Some(bytes) = self.inner.trees.done.get(job_id.as_bytes())? {
            return Ok(Some(JobStatus::Settled(decode(&bytes)?)));
        }
        Ok(None)
    }

    /// The whole story of event `event_id` while it is kept: the event, its body, and each
    /// job's status with its attempts.
    #[allow(clippy::type_complexity)]
    pub fn event_story(
        &self,
        event_id: &Uuid,
    ) -> Result<
        Option<(
            EventRecord,
            Bytes,
            Vec<(Uuid, Option<JobStatus>, Vec<AttemptRecord>)>,
        )>,
        StoreError,
    > {
        let Some((event_at, header, body)) = self.find_event(event_id, now_ms())? else {
            return Ok(None);
        };
        let mut jobs = Vec::with_capacity(header.jobs.len());
        for job in header.fresh_jobs() {
            let status = self.job_status(&job.id)?;
            let attempts = self.attempts_from(&job.id, Some(event_at))?;
            let status = match (status, attempts.last()) {
                // Waiting in the journal for room in the fast lane.
                (None, None) if self.waits_in_journal(&job.destination, &job.id, event_at) => {
                    let mut queued = job.clone();
                    queued.event_at = Some(event_at);
                    Some(JobStatus::Queued(queued))
                }
                (None, Some(a)) => {
                    // Delivered from the fast lane: its only attempt is its whole story.
                    let mut settled = job.clone();
                    settled.attempts = a.attempt;
                    settled.first_attempt_at_ms = Some(a.at_ms);
                    settled.last_attempt_at_ms = Some(a.at_ms);
                    settled.last_status = a.status;
                    Some(JobStatus::Settled(SettledJob {
                        job: settled,
                        outcome: "delivered".into(),
                        settled_at_ms: a.at_ms.saturating_add(a.latency_ms),
                    }))
                }
                (status, _) => status,
            };
            jobs.push((job.id, status, attempts));
        }
        Ok(Some((header.record(body.len()), body, jobs)))
    }

    /// Puts a dead letter back in the queue, due now, with a fresh attempt budget. It keeps
    /// its delivery id, and its attempt numbers go on counting so earlier attempts stay in
    /// the history. Returns the queued job, or `None` if there is no such dead letter.
    pub fn retry_dead(&self, job_id: &Uuid) -> Result<Option<JobRecord>, StoreError> {
        let i = &self.inner;
        let t = &i.trees;
        let now = now_ms();
        let queued = (&t.jobs, &t.due, &t.dead)
            .transaction(|(jobs, due, dead)| {
                let Some(bytes) = dead.remove(job_id.as_bytes())? else {
                    return Ok(None);
                };
                let letter: DeadLetter =
                    decode(&bytes).map_err(ConflictableTransactionError::Abort)?;
                let mut job = letter.job;
                job.attempt_base = job.attempts;
                job.first_attempt_at_ms = None;
                job.next_attempt_at_ms = now;
                queue_job(jobs, due, &job)?;
                Ok(Some(job))
            })
            .map_err(StoreError::from)
            .map_err(|e| self.observe(e))?;
        if let Some(job) = &queued {
            i.stats.moved(
                &job.destination,
                Slot::Dead,
                Slot::Queued(JobState::Pending),
            );
        }
        Ok(queued)
    }

    /// Drops a dead letter: the job is settled as `dropped` (its history stays readable for
    /// `server.retention`). Returns false if there is no such dead letter.
    pub fn drop_dead(&self, job_id: &Uuid) -> Result<bool, StoreError> {
        let i = &self.inner;
        let t = &i.trees;
        let now = now_ms();
        let retention = self.retention_ms();
        let dropped: Option<DeadLetter> = (&t.dead, &t.done, &t.expiry)
            .transaction(|(dead, done, expiry)| {
                let Some(bytes) = dead.remove(job_id.as_bytes())? else {
                    return Ok(None);
                };
                let letter: DeadLetter =
                    decode(&bytes).map_err(ConflictableTransactionError::Abort)?;
                let settled = SettledJob {
                    job: letter.job.clone(),
                    outcome: "dropped".into(),
                    settled_at_ms: now,
                };
                done.insert(job_id.as_bytes(), encode(&settled))?;
                expiry.insert(
                    keys::expiry_key(
                        now.saturating_add(retention),
                        Expiring::Settled,
                        job_id.as_bytes(),
                    ),
                    &[][..],
                )?;
                Ok(Some(letter))
            })
            .map_err(StoreError::from)
            .map_err(|e| self.observe(e))?;
        if let Some(letter) = &dropped {
            self.add_ref(segment_of(&letter.job), -1);
            i.stats.remove(&letter.job.destination, Slot::Dead);
        }
        Ok(dropped.is_some())
    }

    /// Up to `limit` queued jobs of `destination`, due or not, without leasing them: the
    /// fast lane's, then sled's in due order.
    pub fn queued_jobs(
        &self,
        destination: &str,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let mut out = self.inner.lane.jobs_of(destination, limit);
        out.extend(self.sled_jobs_of(destination, limit.saturating_sub(out.len()))?);
        Ok(out)
    }

    /// Destination names that have queued jobs (in the fast lane, waiting in the journal for
    /// it, or in sled).
    pub fn destinations_with_jobs(&self) -> Result<Vec<String>, StoreError> {
        let mut names = self.inner.lane.destinations();
        names.extend(self.overflowed_destinations());
        let due = &self.inner.trees.due;
        let mut from: Vec<u8> = Vec::new();
        while let Some((key, _)) = due.range(from.clone()..).next().transpose()? {
            let Some((dest, _, _)) = keys::parse_due_key(&key) else {
                break;
            };
            names.push(dest.to_string());
            // Skip to the first key after this destination's prefix.
            from = dest.as_bytes().to_vec();
            from.push(1);
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Age in ms of the oldest queued job of `destination` (job ids are time-ordered UUID
    /// v7, so only due keys are read, at most `scan_limit` of them, and the lane's front).
    pub fn oldest_queued_age_ms(
        &self,
        destination: &str,
        now: u64,
        scan_limit: usize,
    ) -> Result<Option<u64>, StoreError> {
        let mut oldest = self.inner.lane.oldest_created_ms(destination);
        if let Some((_, since)) = self.overflowed(destination) {
            oldest = Some(oldest.map_or(since, |o| o.min(since)));
        }
        for item in self
            .inner
            .trees
            .due
            .scan_prefix(keys::due_prefix(destination))
            .take(scan_limit)
        {
            let (key, _) = item?;
            let Some((_, _, job_id)) = keys::parse_due_key(&key) else {
                continue;
            };
            let ms = uuid_ms(&job_id);
            oldest = Some(oldest.map_or(ms, |o| o.min(ms)));
        }
        Ok(oldest.map(|ms| now.saturating_sub(ms)))
    }
}
