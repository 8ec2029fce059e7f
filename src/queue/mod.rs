//! The durable queue: accepted events, their delivery jobs and dead letters, in sled.
//!
//! # Layout
//! | tree       | key                                         | value                      |
//! |------------|---------------------------------------------|----------------------------|
//! | `events`   | event id (16 bytes, UUID v7)                 | [`EventRecord`] JSON       |
//! | `bodies`   | event id + chunk number (u32 BE)             | up to 64 KiB of the body   |
//! | `jobs`     | job id (16 bytes, UUID v7)                   | [`JobRecord`] JSON         |
//! | `due`      | destination, NUL, due ms (u64 BE), job id    | empty                      |
//! | `attempts` | job id + attempt number (u32 BE)             | [`AttemptRecord`] JSON     |
//! | `dead`     | job id                                       | [`DeadLetter`] JSON        |
//!
//! A job is pending exactly while its `due` entry exists; the key order makes a range scan of
//! one destination's prefix return its jobs in due order, so a worker reads only what is due.
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
pub mod keys;
pub mod record;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use record::{now_ms, AttemptRecord, DeadLetter, EventRecord, JobRecord};

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
            db,
            db_file,
            failed: CancellationToken::new(),
        };
        Ok(Store {
            inner: Arc::new(inner),
        })
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

    /// Writes a batch of events atomically and makes it durable. On failure the batch is
    /// removed again (best effort), so an event that was refused is not delivered later.
    pub fn commit_events(&self, batch: &[NewEvent]) -> Result<(), StoreError> {
        let i = &self.inner;
        let written = (&i.events, &i.bodies, &i.jobs, &i.due)
            .transaction(|(events, bodies, jobs, due)| {
                for ev in batch {
                    write_event(ev, events, bodies, jobs, due)?;
                }
                Ok(())
            })
            .map_err(StoreError::from)
            .and_then(|()| self.flush())
            .map_err(|e| self.observe(e));
        if written.is_err() {
            let _ = (&i.events, &i.bodies, &i.jobs, &i.due).transaction(
                |(events, bodies, jobs, due)| -> TxResult<()> {
                    for ev in batch {
                        remove_event(ev, events, bodies, jobs, due)?;
                    }
                    Ok(())
                },
            );
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

    /// Number of pending jobs (all destinations).
    pub fn pending_count(&self) -> usize {
        self.inner.due.len()
    }

    /// Number of dead letters.
    pub fn dead_count(&self) -> usize {
        self.inner.dead.len()
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

    /// Records a successful delivery: the job is done, and the event too once none of its
    /// jobs is pending or dead.
    pub fn mark_delivered(
        &self,
        job: &JobRecord,
        attempt: &AttemptRecord,
    ) -> Result<(), StoreError> {
        let i = &self.inner;
        (&i.events, &i.bodies, &i.jobs, &i.due, &i.attempts, &i.dead)
            .transaction(|(events, bodies, jobs, due, attempts, dead)| {
                due.remove(keys::due_key(
                    &job.destination,
                    job.next_attempt_at_ms,
                    &job.id,
                ))?;
                jobs.remove(job.id.as_bytes())?;
                for n in 1..attempt.attempt {
                    attempts.remove(&keys::attempt_key(&job.id, n))?;
                }
                forget_event_if_done(&job.event_id, events, bodies, jobs, dead)?;
                Ok(())
            })
            .map_err(StoreError::from)
            .map_err(|e| self.observe(e))
    }

    /// Records a failed attempt and moves the job's due entry to `updated.next_attempt_at_ms`.
    pub fn reschedule(
        &self,
        old: &JobRecord,
        updated: &JobRecord,
        attempt: &AttemptRecord,
    ) -> Result<(), StoreError> {
        let i = &self.inner;
        (&i.jobs, &i.due, &i.attempts)
            .transaction(|(jobs, due, attempts)| {
                due.remove(keys::due_key(
                    &old.destination,
                    old.next_attempt_at_ms,
                    &old.id,
                ))?;
                due.insert(
                    keys::due_key(
                        &updated.destination,
                        updated.next_attempt_at_ms,
                        &updated.id,
                    ),
                    &[][..],
                )?;
                jobs.insert(updated.id.as_bytes(), encode(updated))?;
                attempts.insert(
                    &keys::attempt_key(&updated.id, attempt.attempt),
                    encode(attempt),
                )?;
                Ok(())
            })
            .map_err(StoreError::from)
            .map_err(|e| self.observe(e))
    }

    /// Moves a job to the dead-letter tree (`old` is the job as its due entry knows it).
    pub fn dead_letter_job(
        &self,
        old: &JobRecord,
        letter: &DeadLetter,
        attempt: Option<&AttemptRecord>,
    ) -> Result<(), StoreError> {
        let i = &self.inner;
        (&i.jobs, &i.due, &i.attempts, &i.dead)
            .transaction(|(jobs, due, attempts, dead)| {
                due.remove(keys::due_key(
                    &old.destination,
                    old.next_attempt_at_ms,
                    &old.id,
                ))?;
                jobs.remove(old.id.as_bytes())?;
                if let Some(a) = attempt {
                    attempts.insert(&keys::attempt_key(&old.id, a.attempt), encode(a))?;
                }
                dead.insert(old.id.as_bytes(), encode(letter))?;
                Ok(())
            })
            .map_err(StoreError::from)
            .map_err(|e| self.observe(e))
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
            &[][..],
        )?;
    }
    Ok(())
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
        due.remove(keys::due_key(
            &job.destination,
            job.next_attempt_at_ms,
            &job.id,
        ))?;
    }
    Ok(())
}

/// Removes the event and its body once none of its jobs is pending or dead.
fn forget_event_if_done(
    event_id: &Uuid,
    events: &TransactionalTree,
    bodies: &TransactionalTree,
    jobs: &TransactionalTree,
    dead: &TransactionalTree,
) -> TxResult<()> {
    let Some(bytes) = events.get(event_id.as_bytes())? else {
        return Ok(());
    };
    let ev: EventRecord = decode(&bytes).map_err(ConflictableTransactionError::Abort)?;
    for job in &ev.jobs {
        if jobs.get(job.as_bytes())?.is_some() || dead.get(job.as_bytes())?.is_some() {
            return Ok(());
        }
    }
    events.remove(event_id.as_bytes())?;
    let chunks = usize::try_from(ev.body_len)
        .unwrap_or(0)
        .div_ceil(keys::BODY_CHUNK);
    for n in 0..chunks {
        bodies.remove(&keys::body_key(
            event_id,
            u32::try_from(n).unwrap_or(u32::MAX),
        ))?;
    }
    Ok(())
}
