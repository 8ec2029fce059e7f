//! The durable queue: accepted events, their delivery jobs and dead letters, in sled.
//!
//! # Layout
//! | tree       | key                                         | value                      |
//! |------------|---------------------------------------------|----------------------------|
//! | `events`   | event id (16 bytes, UUID v7)                 | [`EventRecord`] JSON       |
//! | `bodies`   | event id + chunk number (u32 BE)             | up to 64 KiB of the body   |
//! | `jobs`     | job id (16 bytes, UUID v7)                   | [`JobRecord`] JSON         |
//! | `due`      | destination, NUL, due ms (u64 BE), job id    | job state (1 byte)         |
//! | `attempts` | job id + attempt number (u32 BE)             | [`AttemptRecord`] JSON     |
//! | `dead`     | job id                                       | [`DeadLetter`] JSON        |
//! | `done`     | job id                                       | [`SettledJob`] JSON        |
//! | `expiry`   | expiry ms (u64 BE), tag, record key          | empty                      |
//! | `seen`     | SHA-256 of kind, `id`, `updated_at`          | [`SeenRecord`] JSON        |
//!
//! A job is pending exactly while its `due` entry exists; the key order makes a range scan of
//! one destination's prefix return its jobs in due order, so a worker reads only what is due.
//!
//! # Life of a job, and retention
//! `jobs`+`due` (queued) -> `done` (delivered) or `dead`; a dead letter goes back to
//! `jobs`+`due` when an operator retries it (same id, attempt numbers keep counting, so the
//! earlier attempts stay in `attempts`), or to `done` as `dropped`. Once no job of an event
//! is queued or dead, the event is *settled*: an `expiry` entry schedules the event, its
//! body, its settled jobs and their attempts for purging after `server.retention` (zero
//! purges at once). Dead letters get an `expiry` entry for `server.dead_retention`, and
//! de-duplication records one for `server.dedupe_window`. [`housekeeping`] walks `expiry`
//! up to now; each purge re-checks its record first, since a dead letter may have been
//! retried meanwhile. So under steady traffic the store holds at most `retention` worth of
//! events plus the queue: it does not grow without bound.
//!
//! Queue depth is counted in memory ([`stats`]), since sled cannot count a tree cheaply.
//!
//! # Durability
//! Ingress writes an event, its body and its jobs in one sled transaction, then the
//! [`commit::Committer`] calls `flush()` once for the whole batch and `fdatasync`s the
//! database file before any request of that batch is answered 200 (sled's own flush uses
//! `sync_file_range`, which survives a killed process but not a power cut). So:
//! - an acknowledged event and all its jobs survive `kill -9` and power loss;
//! - an event whose request was not acknowledged may or may not be on disk; if it is, it is
//!   complete (transactions are atomic) and will be delivered;
//! - delivery outcomes are written without a flush: a crash can forget that a job was
//!   delivered (it is sent again, with the same delivery id) or forget an attempt (the
//!   backoff restarts one step earlier). Nothing pending can be lost.
//! - an I/O error while writing (a full disk) is sticky in sled 0.34: every later write
//!   fails too, even after space returns. The store trips [`Store::failed`], the daemon
//!   answers 503 meanwhile and then exits non-zero, and its supervisor's restart reopens a
//!   working store; everything acknowledged before the error is on disk.

pub mod commit;
pub mod housekeeping;
pub mod journal;
pub mod keys;
pub mod operator;
pub mod record;
pub mod stats;

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use record::{
    now_ms, AttemptRecord, DeadLetter, EventRecord, JobRecord, JobState, SeenRecord, SettledJob,
};
pub use stats::{Depth, QueueStats};

use stats::Slot;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error (I/O, corruption, disk full).
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// Syncing the database file failed.
    #[error("store: fdatasync: {0}")]
    Sync(std::io::Error),
    /// A record did not decode.
    #[error("store: corrupt record: {0}")]
    Corrupt(String),
    /// The batch this event was in could not be made durable.
    #[error("store: could not persist: {0}")]
    NotPersisted(String),
    /// The committer is gone (shutting down).
    #[error("store: shutting down")]
    Closed,
}

impl StoreError {
    /// True for errors after which this process cannot trust its store again. sled 0.34
    /// makes any I/O error in its write path sticky: it records a "global error" and fails
    /// every later operation with it, even once the cause (a full disk) is gone, until the
    /// database is reopened. A failed `fdatasync` leaves the page cache in an unknown state.
    /// Recovery is a restart: what was acknowledged is on disk, and sled replays its log.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            StoreError::Sled(sled::Error::Io(_)) | StoreError::Sync(_)
        )
    }
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Serializing our own plain structs cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// An event ready to be committed with its body and jobs.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The event.
    pub event: EventRecord,
    /// The body, byte for byte as received.
    pub body: Bytes,
    /// One job per destination.
    pub jobs: Vec<JobRecord>,
    /// Its identity for de-duplication, when de-duplication is on and the body has an `id`.
    pub dedupe: Option<housekeeping::DedupeKey>,
}

/// What became of one event handed to [`Store::commit_events`].
#[derive(Debug, Clone, PartialEq)]
pub enum Committed {
    /// Stored with its jobs.
    New,
    /// Not stored: the same event was accepted within the de-duplication window.
    Duplicate {
        /// The id the first copy was accepted under.
        event_id: Uuid,
    },
}

/// Jobs of one destination that are due now, and when the next one after them is due.
#[derive(Debug, Default)]
pub struct DueScan {
    /// Due jobs, oldest due first.
    pub jobs: Vec<JobRecord>,
    /// Due time of the first not-yet-due job, if any.
    pub next_due_ms: Option<u64>,
}

/// Handle to the sled store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    events: sled::Tree,
    bodies: sled::Tree,
    jobs: sled::Tree,
    due: sled::Tree,
    attempts: sled::Tree,
    dead: sled::Tree,
    done: sled::Tree,
    expiry: sled::Tree,
    seen: sled::Tree,
    stats: QueueStats,
    /// `server.retention` and `server.dead_retention` in ms; atomics so a reload can change
    /// them under running workers.
    retention_ms: AtomicU64,
    dead_retention_ms: AtomicU64,
    /// Our own handle on sled's log file, to `fdatasync` after each flush.
    db_file: Option<File>,
    /// Cancelled at the first fatal error (see [`StoreError::is_fatal`]).
    failed: CancellationToken,
}

impl Store {
    /// Opens (or creates) the store in `dir` with a page cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let db_file = File::options().read(true).open(dir.join("db")).ok();
        let inner = Inner {
            events: db.open_tree("events")?,
            bodies: db.open_tree("bodies")?,
            jobs: db.open_tree("jobs")?,
            due: db.open_tree("due")?,
            attempts: db.open_tree("attempts")?,
            dead: db.open_tree("dead")?,
            done: db.open_tree("done")?,
            expiry: db.open_tree("expiry")?,
            seen: db.open_tree("seen")?,
            stats: QueueStats::default(),
            retention_ms: AtomicU64::new(7 * 24 * 3600 * 1000),
            dead_retention_ms: AtomicU64::new(30 * 24 * 3600 * 1000),
            db,
            db_file,
            failed: CancellationToken::new(),
        };
        let store = Store {
            inner: Arc::new(inner),
        };
        store.count_queue()?;
        Ok(store)
    }

    /// Counts queued jobs and dead letters once, at open (one pass over `due` and `dead`).
    fn count_queue(&self) -> Result<(), StoreError> {
        let i = &self.inner;
        for item in i.due.iter() {
            let (key, value) = item?;
            let Some((destination, _, job_id)) = keys::parse_due_key(&key) else {
                continue;
            };
            match keys::parse_due_value(&value) {
                Some(state) => i.stats.add(destination, Slot::Queued(state)),
                // An entry from before due values carried the state: read the job.
                None => {
                    if let Some(job) = self.job(&job_id)? {
                        i.stats.add(&job.destination, Slot::Queued(job.state()));
                    }
                }
            }
        }
        for item in i.dead.iter() {
            let letter: DeadLetter = decode(&item?.1)?;
            i.stats.add(&letter.job.destination, Slot::Dead);
        }
        Ok(())
    }

    /// Sets how long settled events and dead letters are kept (from `server:`; a reload
    /// applies to what is settled or dead-lettered from then on).
    pub fn set_retention(&self, retention: Duration, dead_retention: Duration) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.inner
            .retention_ms
            .store(ms(retention), Ordering::Relaxed);
        self.inner
            .dead_retention_ms
            .store(ms(dead_retention), Ordering::Relaxed);
    }

    fn retention_ms(&self) -> u64 {
        self.inner.retention_ms.load(Ordering::Relaxed)
    }

    fn dead_retention_ms(&self) -> u64 {
        self.inner.dead_retention_ms.load(Ordering::Relaxed)
    }

    /// Queue depth per destination and state.
    pub fn stats(&self) -> &QueueStats {
        &self.inner.stats
    }

    /// Bytes the store takes on disk (sled's own estimate, cheap).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.size_on_disk()?)
    }

    /// Cancelled once a write hit a fatal error ([`StoreError::is_fatal`]). The daemon stops
    /// then, so that its supervisor restarts it on a store that works: otherwise every
    /// later webhook would get 503 and every delivery would be sent again and again, its
    /// outcome unrecordable, until someone restarted it by hand.
    pub fn failed(&self) -> CancellationToken {
        self.inner.failed.clone()
    }

    /// Passes `e` through, tripping [`Store::failed`] if it is fatal.
    fn observe(&self, e: StoreError) -> StoreError {
        if e.is_fatal() && !self.inner.failed.is_cancelled() {
            tracing::error!(error = %e, "the store cannot write any more; sled needs a restart to recover");
            self.inner.failed.cancel();
        }
        e
    }

    /// Makes everything written so far durable: sled flush, then `fdatasync`.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        if let Some(f) = &self.inner.db_file {
            f.sync_data().map_err(StoreError::Sync)?;
        }
        Ok(())
    }

    /// Writes a batch of events atomically and makes it durable; an event already accepted
    /// within its de-duplication window is not written and comes back as
    /// [`Committed::Duplicate`]. On failure the batch is removed again (best effort), so an
    /// event that was refused is not delivered later.
    pub fn commit_events(&self, batch: &[NewEvent]) -> Result<Vec<Committed>, StoreError> {
        let i = &self.inner;
        let now = now_ms();
        let written = (&i.events, &i.bodies, &i.jobs, &i.due, &i.seen, &i.expiry)
            .transaction(|(events, bodies, jobs, due, seen, expiry)| {
                let mut outcomes = Vec::with_capacity(batch.len());
                for ev in batch {
                    if let Some(key) = &ev.dedupe {
                        if let Some(event_id) =
                            housekeeping::check_seen(key, &ev.event.id, now, seen, expiry)?
                        {
                            outcomes.push(Committed::Duplicate { event_id });
                            continue;
                        }
                    }
                    write_event(ev, events, bodies, jobs, due)?;
                    outcomes.push(Committed::New);
                }
                Ok(outcomes)
            })
            .map_err(StoreError::from)
            .and_then(|outcomes| self.flush().map(|()| outcomes))
            .map_err(|e| self.observe(e));
        match &written {
            Ok(outcomes) => {
                for (ev, outcome) in batch.iter().zip(outcomes) {
                    if *outcome == Committed::New {
                        for job in &ev.jobs {
                            i.stats.add(&job.destination, Slot::Queued(job.state()));
                        }
                    }
                }
            }
            Err(_) => {
                let _ = (&i.events, &i.bodies, &i.jobs, &i.due, &i.seen).transaction(
                    |(events, bodies, jobs, due, seen)| -> TxResult<()> {
                        for ev in batch {
                            remove_event(ev, events, bodies, jobs, due)?;
                            if let Some(key) = &ev.dedupe {
                                housekeeping::forget_seen(key, &ev.event.id, seen)?;
                            }
                        }
                        Ok(())
                    },
                );
            }
        }
        written
    }

    /// Up to `limit` jobs of `destination` due at `now_ms`, skipping those `skip` names
    /// (already in flight).
    pub fn due_jobs(
        &self,
        destination: &str,
        now_ms: u64,
        limit: usize,
        skip: impl Fn(&Uuid) -> bool,
    ) -> Result<DueScan, StoreError> {
        let mut scan = DueScan::default();
        for item in self.inner.due.scan_prefix(keys::due_prefix(destination)) {
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
            if scan.jobs.len() >= limit {
                scan.next_due_ms = Some(due_ms);
                break;
            }
            match self.inner.jobs.get(job_id.as_bytes())? {
                Some(bytes) => scan.jobs.push(decode(&bytes)?),
                // A due entry without its job cannot be delivered: drop the stray entry.
                None => {
                    self.inner.due.remove(&key)?;
                }
            }
        }
        Ok(scan)
    }

    /// Every pending job of `destination`, due or not (for dead-lettering a removed one).
    pub fn all_jobs_of(
        &self,
        destination: &str,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .inner
            .due
            .scan_prefix(keys::due_prefix(destination))
            .take(limit)
        {
            let (key, _) = item?;
            if let Some((_, _, job_id)) = keys::parse_due_key(&key) {
                if let Some(bytes) = self.inner.jobs.get(job_id.as_bytes())? {
                    out.push(decode(&bytes)?);
                }
            }
        }
        Ok(out)
    }

    /// Destination names that have pending jobs.
    pub fn destinations_with_jobs(&self) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        let mut from: Vec<u8> = Vec::new();
        while let Some((key, _)) = self.inner.due.range(from.clone()..).next().transpose()? {
            let Some((dest, _, _)) = keys::parse_due_key(&key) else {
                break;
            };
            names.push(dest.to_string());
            // Skip to the first key after this destination's prefix.
            from = dest.as_bytes().to_vec();
            from.push(1);
        }
        Ok(names)
    }

    /// Number of queued jobs (all destinations), from the in-memory counters.
    pub fn pending_count(&self) -> usize {
        usize::try_from(self.inner.stats.queued()).unwrap_or(usize::MAX)
    }

    /// Number of dead letters, from the in-memory counters.
    pub fn dead_count(&self) -> usize {
        usize::try_from(self.inner.stats.dead()).unwrap_or(usize::MAX)
    }

    /// The stored body of `event_id`.
    pub fn load_body(&self, event_id: &Uuid) -> Result<Option<Bytes>, StoreError> {
        let Some(ev) = self.event(event_id)? else {
            return Ok(None);
        };
        let mut body = Vec::with_capacity(usize::try_from(ev.body_len).unwrap_or(0));
        for item in self.inner.bodies.scan_prefix(event_id.as_bytes()) {
            let (_, chunk) = item?;
            body.extend_from_slice(&chunk);
        }
        Ok(Some(Bytes::from(body)))
    }

    /// The event record of `event_id`.
    pub fn event(&self, event_id: &Uuid) -> Result<Option<EventRecord>, StoreError> {
        self.inner
            .events
            .get(event_id.as_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    /// The pending job `job_id`.
    pub fn job(&self, job_id: &Uuid) -> Result<Option<JobRecord>, StoreError> {
        self.inner
            .jobs
            .get(job_id.as_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    /// The dead letter of `job_id`.
    pub fn dead_letter(&self, job_id: &Uuid) -> Result<Option<DeadLetter>, StoreError> {
        self.inner
            .dead
            .get(job_id.as_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Every dead letter, oldest job first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner
            .dead
            .iter()
            .map(|item| decode(&item?.1))
            .collect()
    }

    /// The recorded attempts of `job_id`, in order.
    pub fn attempts(&self, job_id: &Uuid) -> Result<Vec<AttemptRecord>, StoreError> {
        self.inner
            .attempts
            .scan_prefix(job_id.as_bytes())
            .map(|item| decode(&item?.1))
            .collect()
    }

    /// Records a successful delivery: the job moves to `done` with its final attempt, and
    /// once none of the event's jobs is queued or dead the event is settled (kept for
    /// `server.retention`, then purged).
    pub fn mark_delivered(
        &self,
        job: &JobRecord,
        attempt: &AttemptRecord,
    ) -> Result<(), StoreError> {
        let i = &self.inner;
        let mut settled = job.clone();
        settled.attempts = attempt.attempt;
        settled.first_attempt_at_ms = job.first_attempt_at_ms.or(Some(attempt.at_ms));
        settled.last_attempt_at_ms = Some(attempt.at_ms);
        settled.last_status = attempt.status;
        settled.last_error = None;
        let record = SettledJob {
            job: settled,
            outcome: "delivered".into(),
            settled_at_ms: now_ms(),
        };
        let retention = self.retention_ms();
        let was_queued = (
            &i.events,
            &i.bodies,
            &i.jobs,
            &i.due,
            &i.attempts,
            &i.dead,
            &i.done,
            &i.expiry,
        )
            .transaction(
                |(events, bodies, jobs, due, attempts, dead, done, expiry)| {
                    let was_queued = unqueue(due, job)?;
                    jobs.remove(job.id.as_bytes())?;
                    attempts.insert(
                        &keys::attempt_key(&job.id, attempt.attempt),
                        encode(attempt),
                    )?;
                    done.insert(job.id.as_bytes(), encode(&record))?;
                    let trees = housekeeping::EventTrees {
                        events,
                        bodies,
                        jobs,
                        dead,
                        done,
                        attempts,
                    };
                    housekeeping::settle_event(
                        &job.event_id,
                        &trees,
                        expiry,
                        record.settled_at_ms,
                        retention,
                    )?;
                    Ok(was_queued)
                },
            )
            .map_err(StoreError::from)
            .map_err(|e| self.observe(e))?;
        if was_queued {
            i.stats.remove(&job.destination, Slot::Queued(job.state()));
        }
        Ok(())
    }

    /// Records a failed attempt and moves the job's due entry to `updated.next_attempt_at_ms`.
    pub fn reschedule(
        &self,
        old: &JobRecord,
        updated: &JobRecord,
        attempt: &AttemptRecord,
    ) -> Result<(), StoreError> {
        let i = &self.inner;
        let was_queued = (&i.jobs, &i.due, &i.attempts)
            .transaction(|(jobs, due, attempts)| {
                let was_queued = unqueue(due, old)?;
                due.insert(
                    keys::due_key(
                        &updated.destination,
                        updated.next_attempt_at_ms,
                        &updated.id,
                    ),
                    &keys::due_value(updated.state())[..],
                )?;
                jobs.insert(updated.id.as_bytes(), encode(updated))?;
                attempts.insert(
                    &keys::attempt_key(&updated.id, attempt.attempt),
                    encode(attempt),
                )?;
                Ok(was_queued)
            })
            .map_err(StoreError::from)
            .map_err(|e| self.observe(e))?;
        let to = Slot::Queued(updated.state());
        if was_queued {
            i.stats
                .moved(&old.destination, Slot::Queued(old.state()), to);
        } else {
            i.stats.add(&updated.destination, to);
        }
        Ok(())
    }

    /// Moves a job to the dead-letter tree (`old` is the job as its due entry knows it).
    pub fn dead_letter_job(
        &self,
        old: &JobRecord,
        letter: &DeadLetter,
        attempt: Option<&AttemptRecord>,
    ) -> Result<(), StoreError> {
        let i = &self.inner;
        let expires = letter.dead_at_ms.saturating_add(self.dead_retention_ms());
        let (was_queued, was_dead) = (&i.jobs, &i.due, &i.attempts, &i.dead, &i.expiry)
            .transaction(|(jobs, due, attempts, dead, expiry)| {
                let was_queued = unqueue(due, old)?;
                jobs.remove(old.id.as_bytes())?;
                if let Some(a) = attempt {
                    attempts.insert(&keys::attempt_key(&old.id, a.attempt), encode(a))?;
                }
                let was_dead = dead.insert(old.id.as_bytes(), encode(letter))?.is_some();
                expiry.insert(
                    keys::expiry_key(expires, keys::Expiring::Dead, old.id.as_bytes()),
                    &[][..],
                )?;
                Ok((was_queued, was_dead))
            })
            .map_err(StoreError::from)
            .map_err(|e| self.observe(e))?;
        if was_queued {
            i.stats.remove(&old.destination, Slot::Queued(old.state()));
        }
        if !was_dead {
            i.stats.add(&old.destination, Slot::Dead);
        }
        Ok(())
    }
}

fn write_event(
    ev: &NewEvent,
    events: &TransactionalTree,
    bodies: &TransactionalTree,
    jobs: &TransactionalTree,
    due: &TransactionalTree,
) -> TxResult<()> {
    events.insert(ev.event.id.as_bytes(), encode(&ev.event))?;
    for (n, chunk) in ev.body.chunks(keys::BODY_CHUNK).enumerate() {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        bodies.insert(&keys::body_key(&ev.event.id, n), chunk)?;
    }
    for job in &ev.jobs {
        jobs.insert(job.id.as_bytes(), encode(job))?;
        due.insert(
            keys::due_key(&job.destination, job.next_attempt_at_ms, &job.id),
            &keys::due_value(job.state())[..],
        )?;
    }
    Ok(())
}

/// Removes `job`'s entry from the `due` index; true if it was queued (a job can already be
/// gone: dead-lettered by an operator or retired while its attempt was in flight).
fn unqueue(due: &TransactionalTree, job: &JobRecord) -> TxResult<bool> {
    let key = keys::due_key(&job.destination, job.next_attempt_at_ms, &job.id);
    Ok(due.remove(key)?.is_some())
}

fn remove_event(
    ev: &NewEvent,
    events: &TransactionalTree,
    bodies: &TransactionalTree,
    jobs: &TransactionalTree,
    due: &TransactionalTree,
) -> TxResult<()> {
    events.remove(ev.event.id.as_bytes())?;
    for n in 0..ev.body.len().div_ceil(keys::BODY_CHUNK) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        bodies.remove(&keys::body_key(&ev.event.id, n))?;
    }
    for job in &ev.jobs {
        jobs.remove(job.id.as_bytes())?;
        unqueue(due, job)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn new_event(destinations: &[&str]) -> NewEvent {
        let id = Uuid::now_v7();
        let now = now_ms();
        let jobs: Vec<JobRecord> = destinations
            .iter()
            .map(|d| JobRecord::new(id, EventKind::Lead, d.to_string(), vec!["r".into()], now))
            .collect();
        NewEvent {
            event: EventRecord {
                id,
                kind: EventKind::Lead,
                received_at_ms: now,
                routes: vec!["r".into()],
                jobs: jobs.iter().map(|j| j.id).collect(),
                body_len: 2,
            },
            body: Bytes::from_static(b"{}"),
            jobs,
            dedupe: None,
        }
    }

    #[test]
    fn queue_counts_are_rebuilt_at_open_from_due_entries_old_and_new() {
        let dir = tempfile::tempdir().unwrap();
        let (retrying_job, legacy_job) = {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            store
                .commit_events(&[new_event(&["crm", "slack"]), new_event(&["crm"])])
                .unwrap();
            let scan = store.due_jobs("crm", now_ms(), 10, |_| false).unwrap();
            // One crm job fails once: it is retrying from now on.
            let old = scan.jobs[0].clone();
            let mut updated = old.clone();
            updated.attempts = 1;
            updated.next_attempt_at_ms = now_ms() + 60_000;
            let attempt = AttemptRecord {
                attempt: 1,
                at_ms: now_ms(),
                latency_ms: 1,
                status: Some(503),
                outcome: "retry".into(),
                error: Some("HTTP 503".into()),
            };
            store.reschedule(&old, &updated, &attempt).unwrap();
            // An entry as written before due values carried the state: empty.
            let legacy = &store
                .due_jobs("slack", now_ms(), 10, |_| false)
                .unwrap()
                .jobs[0];
            let key = keys::due_key("slack", legacy.next_attempt_at_ms, &legacy.id);
            store.inner.due.insert(key, &[][..]).unwrap();
            store.flush().unwrap();
            (updated.id, legacy.id)
        };
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let depth = store.inner.stats.snapshot();
        assert_eq!(
            (depth["crm"].pending, depth["crm"].retrying),
            (1, 1),
            "{depth:?}"
        );
        assert_eq!(
            (depth["slack"].pending, depth["slack"].retrying),
            (1, 0),
            "{depth:?}"
        );
        assert_eq!(store.pending_count(), 3);
        assert!(store.job(&retrying_job).unwrap().is_some());
        assert!(store.job(&legacy_job).unwrap().is_some());
    }
}
