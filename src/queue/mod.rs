//! The durable queue: an ingest journal for every accepted event, a fast lane in memory for
//! fresh jobs, and sled as the persistent retry queue.
//!
//! # Where a job lives
//! ```text
//! accept ──▶ journal (event + body, one write + fdatasync per batch) ──200──▶ Mindstamp
//!               │
//!               ├─▶ fast lane (memory, bounded per destination) ──delivered──▶ journal: Delivered record
//!               │      ▲       │ waits 30 s, or its           │ fails an attempt
//!               │      │       │ destination is held          ▼
//!               │      │ read  ▼                sled retry queue (job, due index, attempts)
//!               └─▶ beyond a destination's share of the lane,        ──▶ done / dead letter
//!                   its jobs wait in the journal (`overflow`, `push_back`)
//! ```
//! On a healthy destination a job never touches sled: the only writes are the event record
//! in the journal and, after delivery, a small Delivered record appended with a later batch.
//!
//! # The journal ([`journal`], [`entry`])
//! Segment files under `data_dir/journal/`, records framed with length and CRC32C, encoded
//! with postcard; an event's body follows its header, compressed with zstd (level 1) where
//! that is smaller, which halves the disk a backlog of Mindstamp's JSON takes. A sealed segment gets an index file ([`segments`]) listing its events (id,
//! offset, de-duplication digest), so `event show` finds an event without reading segments
//! and a restart rebuilds the de-duplication memory from small files.
//!
//! # The retry queue in sled
//! | tree          | key                                         | value (version byte + postcard) |
//! |---------------|---------------------------------------------|---------------------------------|
//! | `v2.jobs`     | job id (16 bytes, UUID v7)                  | [`JobRecord`], with the journal position of its event, and its attempts |
//! | `v2.due`      | destination, NUL, due ms (u64 BE), job id   | job state (1 byte) + segment of its event (u64 BE) |
//! | `v2.attempts` | job id + attempt number (u32 BE)            | [`AttemptRecord`]: written only by earlier versions (and migration), still read |
//! | `v2.dead`     | job id                                      | [`DeadLetter`] and its attempts |
//! | `v2.done`     | job id                                      | [`SettledJob`] (a job settled through sled) and its attempts |
//! | `v2.replays`  | replay operation id                         | its record, JSON ([`replay`](crate::replay)), saved with each chunk of jobs it queues |
//!
//! A job's attempts travel inside its record (value version 2: the record, then its
//! attempts) as it moves between `jobs`, `dead` and `done`: one sled record per retrying
//! job besides its due entry, since sled spends about 190 bytes of disk on every record.
//! | `v2.expiry`   | expiry ms (u64 BE), tag, job id             | empty: what housekeeping purges when |
//! | `v2.meta`     | `format`                                    | the store format (2)            |
//!
//! A job in sled is pending exactly while its due entry exists. Bodies stay in the journal:
//! a job in sled points at its event's record. Sled holds no event and no body.
//!
//! # Durability and the checkpoint
//! - An event is acknowledged only after the batch holding it is written to the journal and
//!   `fdatasync`ed. It survives `kill -9` and power loss.
//! - The checkpoint file ([`checkpoint`]) names the oldest journal position whose jobs may
//!   still be only in memory. It is advanced about once a second, after sled was flushed and
//!   synced, so everything before it is either delivered (its Delivered record durable),
//!   safe in sled, or waiting in the journal as an overflow record written in the same sync
//!   says ([`overflow_records`]). Start-up replays the journal from the checkpoint and
//!   re-creates every job of those events that has neither a Delivered record nor a sled
//!   record; a destination's jobs waiting in the journal start from its record.
//! - A delivery's outcome becomes durable with the next group commit (Delivered record) or
//!   the next sled flush (retry, dead letter). A crash can forget that a job was delivered:
//!   it is sent again after the restart, with the same `X-Hookrouter-Delivery` id
//!   (at-least-once). It cannot lose a pending job.
//! - An I/O error writing the journal or sled (a full disk) trips [`Store::failed`]: the
//!   daemon answers 503 meanwhile and exits non-zero; its supervisor's restart reopens the
//!   store from what is on disk.
//!
//! # Space
//! A journal segment is deleted whole once it is sealed, older than `server.retention`,
//! before the checkpoint and every destination's first job waiting in the journal, and no
//! job or dead letter in sled points into it; records still
//! needed are first copied forward into the current segment ([`segments`]). Settled sled
//! records and dead letters are purged by [`housekeeping`] after their retention.
//!
//! # Threads
//! The committer thread ([`commit`]) appends batches; delivery workers lease and settle on
//! tokio's threads (sled calls and reads of the page cache, each a few microseconds); the
//! housekeeping pass ([`housekeeping::run`]) runs the checkpoint, rotation, segment deletion
//! and purges on a blocking thread.

pub mod catalog;
pub mod checkpoint;
pub mod commit;
mod credentials;
pub mod entry;
mod error;
mod health_records;
pub mod housekeeping;
mod ingest;
pub mod journal;
pub mod keys;
pub mod lane;
mod lease;
mod migrate;
pub mod operator;
mod overflow;
mod overflow_records;
pub mod presence;
mod push_back;
pub mod record;
mod recover;
mod replay;
mod restore;
mod retry_queue;
pub mod segments;
pub mod stats;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use error::StoreError;
pub use lease::{Lease, LeaseScan, Transition};
pub use record::{now_ms, AttemptRecord, DeadLetter, EventRecord, JobRecord, JobState, SettledJob};
pub use stats::{Depth, QueueStats};

use journal::{Journal, JournalReader, Position};
use lane::Lane;
use segments::IndexEntry;

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

impl From<entry::EntryError> for StoreError {
    fn from(e: entry::EntryError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// How the store is sized and how long it keeps things.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled's page cache.
    pub cache_bytes: u64,
    /// How long events and settled jobs are kept (`server.retention`).
    pub retention: Duration,
    /// How long dead letters are kept (`server.dead_retention`).
    pub dead_retention: Duration,
    /// How long an event identity counts for de-duplication (`server.dedupe_window`).
    pub dedupe_window: Duration,
    /// Size at which a journal segment is sealed.
    pub segment_bytes: u64,
    /// Jobs the fast lane holds per destination before that destination's new jobs wait in
    /// the journal (those beyond the byte budget without their body, about 250 bytes each).
    pub lane_capacity: usize,
    /// Body bytes the fast lane holds (each job counting its event's body).
    pub lane_capacity_bytes: usize,
}

impl StoreOptions {
    /// The defaults, with a page cache of `cache_bytes`.
    pub fn new(cache_bytes: u64) -> StoreOptions {
        StoreOptions {
            cache_bytes,
            retention: Duration::from_secs(7 * 24 * 3600),
            dead_retention: Duration::from_secs(30 * 24 * 3600),
            dedupe_window: Duration::from_secs(24 * 3600),
            segment_bytes: 64 * 1024 * 1024,
            lane_capacity: 50_000,
            lane_capacity_bytes: 16 * 1024 * 1024,
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

/// The sled trees of the retry queue.
struct Trees {
    jobs: sled::Tree,
    due: sled::Tree,
    attempts: sled::Tree,
    dead: sled::Tree,
    done: sled::Tree,
    expiry: sled::Tree,
    meta: sled::Tree,
}

impl Trees {
    fn open(db: &sled::Db) -> Result<Trees, StoreError> {
        Ok(Trees {
            jobs: db.open_tree("v2.jobs")?,
            due: db.open_tree("v2.due")?,
            attempts: db.open_tree("v2.attempts")?,
            dead: db.open_tree("v2.dead")?,
            done: db.open_tree("v2.done")?,
            expiry: db.open_tree("v2.expiry")?,
            meta: db.open_tree("v2.meta")?,
        })
    }
}

/// The journal's writing end and what the store keeps about the active segment.
struct Writer {
    journal: Journal,
    /// Events in the active segment, written out as its index when it is sealed.
    index: Vec<IndexEntry>,
    /// When the first record went into the active segment (Unix ms), if one has.
    active_since_ms: Option<u64>,
    /// Per destination, jobs waiting in the journal for room in the fast lane. Under the
    /// writer's lock because placing a new event's jobs decides by it.
    overflow: HashMap<String, overflow::Overflow>,
}

/// Delivered records waiting for the next journal append, and the lane positions they
/// release once durable.
#[derive(Default)]
struct Settles {
    records: Vec<Vec<u8>>,
    releases: Vec<Position>,
    jobs: Vec<Uuid>,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    trees: Trees,
    /// Our own handle on sled's log file, to `fdatasync` after each flush.
    db_file: Option<File>,
    journal_dir: PathBuf,
    journal: JournalReader,
    writer: Mutex<Writer>,
    settles: Mutex<Settles>,
    /// Fast-lane jobs delivered whose Delivered record is not in the journal yet, with the
    /// attempt, so `event show` sees the delivery at once.
    unsynced: Mutex<HashMap<Uuid, AttemptRecord>>,
    lane: Lane,
    /// First 16 bytes of a de-duplication digest -> the event accepted under it.
    dedupe: Mutex<HashMap<u128, Uuid>>,
    /// Jobs and dead letters in sled per journal segment they point into.
    refs: Mutex<BTreeMap<u64, i64>>,
    stats: QueueStats,
    /// `server.retention`, `dead_retention` and `dedupe_window` in ms; atomics so a reload
    /// can change them under running workers.
    retention_ms: AtomicU64,
    dead_retention_ms: AtomicU64,
    dedupe_window_ms: AtomicU64,
    segment_bytes: u64,
    /// The checkpoint last written.
    checkpoint: Mutex<Position>,
    /// Held by the one thread moving jobs from the journal into the lane.
    refilling: Mutex<()>,
    /// Destinations whose jobs wait in the journal while they are held ([`Store::park`]).
    parked: Mutex<std::collections::HashSet<String>>,
    /// The overflow records last written, so an unchanged set is not written again.
    saved_overflow: Mutex<Vec<(String, overflow_records::OverflowRecord)>>,
    /// Whether any destination has jobs waiting in the journal (`Writer::overflow` is not
    /// empty): read by every lease without taking the writer's lock, which the committer
    /// holds through each `fdatasync`. Set under that lock whenever the map changes.
    any_overflow: std::sync::atomic::AtomicBool,
    /// Cancelled at the first fatal error (see [`StoreError::is_fatal`]).
    failed: CancellationToken,
    /// The data directory as opened, checked by every housekeeping pass.
    presence: presence::Presence,
    /// Set when the fatal error was the data directory vanishing ([`Store::vanished`]).
    vanished: std::sync::atomic::AtomicBool,
    /// Set by [`Store::close`]: nothing is written after the counts were saved.
    closed: std::sync::atomic::AtomicBool,
}

impl Store {
    /// Opens (or creates) the store in `dir`: sled's retry queue, then the journal, which is
    /// replayed from the checkpoint. A store of the previous format (everything in sled) is
    /// migrated first.
    ///
    /// A damaged file is a [`StoreError::Damaged`] naming it, never a panic: sled 0.34
    /// panics on some damaged pages, so the whole open runs under `catch_unwind`.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let opened =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| recover::open(dir, options)));
        match opened {
            Ok(result) => result.map_err(|e| recover::damaged(dir, e)),
            Err(panic) => {
                let reason = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("unreadable");
                Err(StoreError::Damaged {
                    path: dir.join("db"),
                    reason: format!("sled failed reading it: {reason}"),
                })
            }
        }
    }

    /// Sets how long settled events and dead letters are kept and how long an identity
    /// counts as a duplicate (from `server:`; a reload applies from then on).
    pub fn set_retention(&self, retention: Duration, dead_retention: Duration) {
        self.inner
            .retention_ms
            .store(ms(retention), Ordering::Relaxed);
        self.inner
            .dead_retention_ms
            .store(ms(dead_retention), Ordering::Relaxed);
    }

    /// Sets the de-duplication window used to forget old identities.
    pub fn set_dedupe_window(&self, window: Duration) {
        self.inner
            .dedupe_window_ms
            .store(ms(window), Ordering::Relaxed);
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

    /// Bytes the store takes on disk: sled's own estimate plus the journal's segments.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.size_on_disk()? + self.inner.journal.size())
    }

    /// Cancelled once a write hit a fatal error ([`StoreError::is_fatal`]). The daemon stops
    /// then, so that its supervisor restarts it on a store that works: otherwise every
    /// later webhook would get 503 and every delivery would be sent again and again, its
    /// outcome unrecordable, until someone restarted it by hand.
    pub fn failed(&self) -> CancellationToken {
        self.inner.failed.clone()
    }

    /// Whether [`Store::failed`] tripped because files of the store were deleted or
    /// replaced under it: a restart would start from an empty or a foreign directory, so
    /// the daemon exits with a code its supervisor does not restart on.
    pub fn vanished(&self) -> bool {
        self.inner.vanished.load(Ordering::SeqCst)
    }

    /// Passes `e` through, tripping [`Store::failed`] if it is fatal.
    fn observe(&self, e: StoreError) -> StoreError {
        let vanished = matches!(e, StoreError::Vanished(_));
        if vanished {
            self.inner.vanished.store(true, Ordering::SeqCst);
        }
        if e.is_fatal() && !self.inner.failed.is_cancelled() {
            if vanished {
                tracing::error!(error = %e, "the data directory is not the one opened any more; stopping");
            } else {
                tracing::error!(error = %e, "the store cannot write any more; it needs a restart to recover");
            }
            self.inner.failed.cancel();
        }
        e
    }

    /// Makes sled's writes durable: flush, then `fdatasync` of its file.
    fn sync_sled(&self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        if let Some(f) = &self.inner.db_file {
            f.sync_data().map_err(StoreError::Sync)?;
        }
        Ok(())
    }

    /// Makes everything recorded so far durable (delivered records, sled) and advances the
    /// checkpoint. Called at shutdown and by housekeeping.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.sync_settles()?;
        self.advance_checkpoint()?;
        self.sync_sled().map_err(|e| self.observe(e))
    }

    /// Stops the store cleanly: jobs still waiting in the fast lane go back to the
    /// journal (so the next start replays nothing), everything is synced, the checkpoint
    /// goes to the end, and the queue counts are saved so the next start need not walk
    /// the due index. Any write after this is refused (a delivery that finishes later
    /// stays queued).
    pub fn close(&self) -> Result<(), StoreError> {
        let waiting = self.inner.lane.take_waiting(None, Duration::ZERO);
        self.push_back(waiting)?;
        self.flush()?;
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        recover::save_counts(self)?;
        self.sync_sled().map_err(|e| self.observe(e))
    }

    /// Refuses a write once the store is closed.
    fn check_open(&self) -> Result<(), StoreError> {
        if self.inner.closed.load(std::sync::atomic::Ordering::SeqCst) {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    /// Number of queued jobs (all destinations), from the in-memory counters.
    pub fn pending_count(&self) -> usize {
        usize::try_from(self.inner.stats.queued()).unwrap_or(usize::MAX)
    }

    /// Number of dead letters, from the in-memory counters.
    pub fn dead_count(&self) -> usize {
        usize::try_from(self.inner.stats.dead()).unwrap_or(usize::MAX)
    }

    /// Jobs waiting or in flight in the fast lane.
    pub fn lane_len(&self) -> usize {
        self.inner.lane.len()
    }

    fn add_ref(&self, segment: u64, by: i64) {
        let mut refs = self.inner.refs.lock().unwrap_or_else(|p| p.into_inner());
        let n = refs.entry(segment).or_default();
        *n += by;
        if *n == 0 {
            refs.remove(&segment);
        }
    }

    fn refs_of(&self, segment: u64) -> i64 {
        self.inner
            .refs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&segment)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod overflow_tests;
#[cfg(test)]
mod push_back_tests;
#[cfg(test)]
mod tests;
