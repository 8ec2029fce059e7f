//! What an operator does to the store through the admin API: list, retry and drop dead
//! letters, and read the whole story of an event.

use sled::transaction::ConflictableTransactionError;
use sled::Transactional;
use uuid::Uuid;

use super::housekeeping::{self, EventTrees};
use super::keys;
use super::record::{now_ms, DeadLetter, JobRecord, JobState, SettledJob};
use super::stats::Slot;
use super::{decode, encode, Store, StoreError};

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
    /// Dead letters, oldest job first, optionally of one destination only, at most `limit`.
    pub fn dead_letters_of(
        &self,
        destination: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.dead.iter() {
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

    /// Puts a dead letter back in the queue, due now, with a fresh attempt budget. It keeps
    /// its delivery id, and its attempt numbers go on counting so earlier attempts stay in
    /// the history. Returns the queued job, or `None` if there is no such dead letter.
    pub fn retry_dead(&self, job_id: &Uuid) -> Result<Option<JobRecord>, StoreError> {
        let i = &self.inner;
        let now = now_ms();
        let queued = (&i.jobs, &i.due, &i.dead)
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
                jobs.insert(job.id.as_bytes(), encode(&job))?;
                due.insert(
                    keys::due_key(&job.destination, now, &job.id),
                    &keys::due_value(job.state())[..],
                )?;
                Ok(Some(job))
            })
            .map_err(StoreError::from)?;
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
        let now = now_ms();
        let retention = self.retention_ms();
        let dropped: Option<DeadLetter> = (
            &i.events,
            &i.bodies,
            &i.jobs,
            &i.dead,
            &i.done,
            &i.attempts,
            &i.expiry,
        )
            .transaction(|(events, bodies, jobs, dead, done, attempts, expiry)| {
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
                let t = EventTrees {
                    events,
                    bodies,
                    jobs,
                    dead,
                    done,
                    attempts,
                };
                housekeeping::settle_event(&letter.job.event_id, &t, expiry, now, retention)?;
                Ok(Some(letter))
            })
            .map_err(StoreError::from)?;
        if let Some(letter) = &dropped {
            i.stats.remove(&letter.job.destination, Slot::Dead);
        }
        Ok(dropped.is_some())
    }

    /// Where job `job_id` stands: queued, dead or settled; `None` once purged.
    pub fn job_status(&self, job_id: &Uuid) -> Result<Option<JobStatus>, StoreError> {
        if let Some(job) = self.job(job_id)? {
            return Ok(Some(JobStatus::Queued(job)));
        }
        if let Some(letter) = self.dead_letter(job_id)? {
            return Ok(Some(JobStatus::Dead(letter)));
        }
        Ok(self
            .inner
            .done
            .get(job_id.as_bytes())?
            .map(|b| decode(&b))
            .transpose()?
            .map(JobStatus::Settled))
    }

    /// Age in ms of the oldest queued job of `destination` (job ids are time-ordered UUID
    /// v7, so only `due` keys are read, at most `scan_limit` of them).
    pub fn oldest_queued_age_ms(
        &self,
        destination: &str,
        now: u64,
        scan_limit: usize,
    ) -> Result<Option<u64>, StoreError> {
        let mut oldest: Option<u64> = None;
        for item in self
            .inner
            .due
            .scan_prefix(keys::due_prefix(destination))
            .take(scan_limit)
        {
            let (key, _) = item?;
            let Some((_, _, job_id)) = keys::parse_due_key(&key) else {
                continue;
            };
            if let Some(ts) = job_id.get_timestamp() {
                let (secs, nanos) = ts.to_unix();
                let ms = secs
                    .saturating_mul(1000)
                    .saturating_add(u64::from(nanos / 1_000_000));
                oldest = Some(oldest.map_or(ms, |o| o.min(ms)));
            }
        }
        Ok(oldest.map(|ms| now.saturating_sub(ms)))
    }
}
