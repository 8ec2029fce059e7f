//! Opening the store: sled, the journal, the queue counted, identities remembered, and the
//! journal replayed from the checkpoint.
//!
//! Replay re-creates every job of an event at or after the checkpoint that has neither a
//! Delivered record after it nor a record in sled (queued, dead or settled): exactly the
//! jobs that were only in memory when the daemon stopped. They are due at once, with the
//! delivery ids they had, so a receiver that saw one before the crash can tell.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::checkpoint;
use super::entry::{self, Entry, EventHeader};
use super::ingest::uuid_ms;
use super::journal::{self, Journal, JournalError, Position, Scanned, HEADER_LEN};
use super::lane::Lane;
use super::migrate;
use super::record::{now_ms, DeadLetter, JobRecord};
use super::retry_queue::{decode, encode, parse_due_value, segment_of};
use super::segments::{self, IndexEntry};
use super::stats::{QueueStats, Slot};
use super::{keys, ms, Inner, Settles, Store, StoreError, StoreOptions, Trees, Writer};

/// The key in `v2.meta` of the counts a clean stop saved.
const COUNTS_KEY: &[u8] = b"counts";

/// The queue counts and segment references, as a clean stop leaves them.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedCounts {
    stats: Vec<(String, [i64; 3])>,
    refs: Vec<(u64, i64)>,
}

/// Saves the counts for the next open (see [`Store::close`]).
pub(super) fn save_counts(store: &Store) -> Result<(), StoreError> {
    let i = &store.inner;
    // Jobs waiting in the journal for the lane are counted again by the next replay.
    let waiting = store.overflowed_counts();
    let mut stats = i.stats.export();
    for (dest, counts) in &mut stats {
        if let Some(n) = waiting.get(dest) {
            counts[0] -= i64::try_from(*n).unwrap_or(i64::MAX);
        }
    }
    let saved = SavedCounts {
        stats,
        refs: i
            .refs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect(),
    };
    i.trees.meta.insert(COUNTS_KEY, encode(&saved))?;
    Ok(())
}

/// Sets every file in `dir` to [`journal::PRIVATE_FILE_MODE`] and every directory under
/// it (`blobs/`, `journal/`) to the directory mode: sled's files, made with the umask's
/// mode, and those of a store an older version wrote.
fn close_up_files(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let mode = if kind.is_file() {
            journal::PRIVATE_FILE_MODE
        } else if kind.is_dir() {
            close_up_files(&entry.path())?;
            journal::PRIVATE_DIR_MODE
        } else {
            continue;
        };
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// An error from opening the store in `dir`, as [`StoreError::Damaged`] where it says a
/// file's content is not what it should be (other errors, such as a lock held by another
/// process or a permission, pass unchanged).
pub(super) fn damaged(dir: &Path, e: StoreError) -> StoreError {
    match e {
        StoreError::Sled(sled::Error::Corruption { at, .. }) => StoreError::Damaged {
            path: dir.join("db"),
            reason: match at {
                Some(at) => format!("sled found a corrupt record at {at:?}"),
                None => "sled found a corrupt record".into(),
            },
        },
        StoreError::Sled(sled::Error::Unsupported(reason)) => StoreError::Damaged {
            path: dir.join("conf"),
            reason,
        },
        StoreError::Journal(JournalError::BadSegment { path, reason }) => StoreError::Damaged {
            path: path.into(),
            reason,
        },
        StoreError::Corrupt(reason) => StoreError::Damaged {
            path: dir.join("db"),
            reason: format!("a record in the retry queue does not decode: {reason}"),
        },
        other => other,
    }
}

/// Refuses a sled older than the journal's checkpoint ([`checkpoint::SLED_MARK`]): it lost
/// writes it had made durable. A store without the mark (an earlier version wrote it, or
/// it never reached a checkpoint) is not judged.
fn check_sled_is_current(store: &Store, dir: &Path) -> Result<(), StoreError> {
    let i = &store.inner;
    let (Some(file), Some(bytes)) = (
        checkpoint::read(&i.journal_dir),
        i.trees.meta.get(checkpoint::SLED_MARK)?,
    ) else {
        return Ok(());
    };
    let Ok(mark) = decode::<Position>(&bytes) else {
        return Err(StoreError::Damaged {
            path: dir.join("db"),
            reason: "the retry queue's record of its last checkpoint does not decode".into(),
        });
    };
    if mark < file {
        return Err(StoreError::Damaged {
            path: dir.join("db"),
            reason: format!(
                "the retry queue is older than the journal: it was last synced with the checkpoint at segment {} offset {}, the journal's is at segment {} offset {}, so writes sled had made durable are gone (a truncated `db`, or an older copy of it put back), and jobs waiting for a retry or dead letters may be missing",
                mark.segment, mark.offset, file.segment, file.offset
            ),
        });
    }
    Ok(())
}

/// The store's state as opened, before counting and replay.
fn assemble(
    dir: &Path,
    o: &StoreOptions,
    db: sled::Db,
    trees: Trees,
    db_file: Option<File>,
    journal: Journal,
) -> Store {
    let reader = journal.reader();
    let journal_dir = dir.join("journal");
    Store {
        inner: Arc::new(Inner {
            trees,
            db_file,
            journal: reader,
            writer: Mutex::new(Writer {
                journal,
                index: Vec::new(),
                active_since_ms: None,
                overflow: HashMap::new(),
            }),
            settles: Mutex::new(Settles::default()),
            unsynced: Mutex::new(HashMap::new()),
            lane: Lane::new(o.lane_capacity, o.lane_capacity_bytes),
            dedupe: Mutex::new(HashMap::new()),
            refs: Mutex::new(BTreeMap::new()),
            stats: QueueStats::default(),
            retention_ms: AtomicU64::new(ms(o.retention)),
            dead_retention_ms: AtomicU64::new(ms(o.dead_retention)),
            dedupe_window_ms: AtomicU64::new(ms(o.dedupe_window)),
            segment_bytes: o.segment_bytes,
            checkpoint: Mutex::new(Position::start_of(0)),
            refilling: Mutex::new(()),
            parked: Mutex::new(HashSet::new()),
            saved_overflow: Mutex::new(Vec::new()),
            any_overflow: std::sync::atomic::AtomicBool::new(false),
            failed: CancellationToken::new(),
            presence: super::presence::Presence::record(dir),
            vanished: std::sync::atomic::AtomicBool::new(false),
            closed: std::sync::atomic::AtomicBool::new(false),
            journal_dir,
            db,
        }),
    }
}

/// Opens the store in `dir` (see [`Store::open`]).
pub(super) fn open(dir: &Path, o: StoreOptions) -> Result<Store, StoreError> {
    let started = std::time::Instant::now();
    let private = |source| {
        StoreError::from(JournalError::Io {
            path: dir.display().to_string(),
            source,
        })
    };
    // Written by every run of this format within its first second, and at every stop.
    let ran_before = dir.join("journal").join("checkpoint").exists();
    journal::private_dir(dir).map_err(private)?;
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(o.cache_bytes)
        .mode(sled::Mode::HighThroughput)
        .open()?;
    // sled creates its files with the umask's mode (and snapshots later): the directory
    // above keeps others out of those, and the files there now are owner-only too.
    close_up_files(dir).map_err(private)?;
    let db_file = File::options().read(true).open(dir.join("db")).ok();
    let trees = Trees::open(&db)?;
    let journal_dir = dir.join("journal");
    let sled_ms = started.elapsed().as_millis();
    let (journal, _report) = Journal::open(&journal_dir, o.segment_bytes)?;
    let seqs: Vec<u64> = journal.reader().segments().iter().map(|s| s.seq).collect();
    segments::remove_orphan_indexes(&journal_dir, &seqs);
    let store = assemble(dir, &o, db, trees, db_file, journal);
    if ran_before && store.inner.trees.meta.get(migrate::FORMAT_KEY)?.is_none() {
        // sled starts afresh on a `db` that is missing, empty or unreadable: the jobs that
        // waited for a retry and every dead letter were in it. Never silently.
        return Err(StoreError::Damaged {
            path: dir.join("db"),
            reason: "the retry queue is empty and new, but the journal shows this store has run before: sled's files were deleted, emptied or replaced, and the jobs waiting for a retry and the dead letters in them are gone".into(),
        });
    }
    check_sled_is_current(&store, dir)?;
    migrate::run_if_needed(&store)?;
    let counting = std::time::Instant::now();
    store.count_queue()?;
    let count_ms = counting.elapsed().as_millis();
    let replaying = std::time::Instant::now();
    store.replay()?;
    tracing::info!(
        sled_ms,
        count_ms,
        replay_ms = replaying.elapsed().as_millis(),
        total_ms = started.elapsed().as_millis(),
        pending = store.pending_count(),
        dead = store.dead_count(),
        "store opened"
    );
    Ok(store)
}

/// What walking the journal from the checkpoint gathered.
#[derive(Debug, Default)]
struct Walked {
    /// Events from the checkpoint on, in journal order.
    candidates: Vec<(Position, EventHeader)>,
    /// Jobs with a Delivered record from the checkpoint on.
    delivered: HashSet<Uuid>,
    /// De-duplication identities still inside the window.
    identities: HashMap<u128, Uuid>,
    /// The active segment's index entries.
    active_index: Vec<IndexEntry>,
    /// Records skipped as damaged.
    damaged: usize,
}

/// What replaying the journal found.
#[derive(Debug, Default)]
pub(super) struct Replayed {
    /// Events read from the checkpoint on.
    pub(super) events: usize,
    /// Jobs re-created (in the lane or waiting in the journal).
    pub(super) recreated: usize,
    /// Jobs waiting in the journal, those of restored overflow records included.
    pub(super) waiting: usize,
    /// Records skipped as damaged.
    pub(super) damaged: usize,
}

impl Store {
    /// Counts queued jobs, dead letters and the sled records pointing into each journal
    /// segment, once (one pass over the due index and the dead letters).
    fn count_queue(&self) -> Result<(), StoreError> {
        let i = &self.inner;
        let t = &i.trees;
        // Saved by a clean stop: valid for exactly this open, so it goes at once (a crash
        // from here on recounts).
        if let Some(bytes) = t.meta.remove(COUNTS_KEY)? {
            match decode::<SavedCounts>(&bytes) {
                Ok(saved) => {
                    i.stats.import(saved.stats);
                    *i.refs.lock().unwrap_or_else(|p| p.into_inner()) =
                        saved.refs.into_iter().collect();
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the queue counts saved at the last stop do not decode; counting again")
                }
            }
        }
        let mut refs: BTreeMap<u64, i64> = BTreeMap::new();
        for item in t.due.iter() {
            let (key, value) = item?;
            let Some((destination, _, job_id)) = keys::parse_due_key(&key) else {
                continue;
            };
            let (state, segment) = match parse_due_value(&value) {
                Some(v) => v,
                None => match t.jobs.get(job_id.as_bytes())? {
                    Some(bytes) => {
                        let job: JobRecord = decode(&bytes)?;
                        (job.state(), segment_of(&job))
                    }
                    None => continue,
                },
            };
            i.stats.add(destination, Slot::Queued(state));
            *refs.entry(segment).or_default() += 1;
        }
        for item in t.dead.iter() {
            let letter: DeadLetter = decode(&item?.1)?;
            i.stats.add(&letter.job.destination, Slot::Dead);
            *refs.entry(segment_of(&letter.job)).or_default() += 1;
        }
        *i.refs.lock().unwrap_or_else(|p| p.into_inner()) = refs;
        Ok(())
    }

    /// Whether sled knows job `id` (queued, dead or settled there).
    pub(super) fn in_sled(&self, id: &Uuid) -> Result<bool, StoreError> {
        let t = &self.inner.trees;
        Ok(t.jobs.contains_key(id.as_bytes())?
            || t.dead.contains_key(id.as_bytes())?
            || t.done.contains_key(id.as_bytes())?)
    }

    /// Rebuilds the de-duplication memory and the active segment's index, and re-creates
    /// the jobs that were only in memory, from the checkpoint on.
    fn replay(&self) -> Result<(), StoreError> {
        let i = &self.inner;
        let now = now_ms();
        let active = i
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .journal
            .end()
            .segment;
        let first = i.journal.segments().first().map_or(active, |s| s.seq);
        let from = match checkpoint::read(&i.journal_dir) {
            Some(cp) if cp.segment >= first => cp,
            Some(_) | None => Position::start_of(first),
        };
        let walked = self.walk_journal(from, active, now)?;
        *i.dedupe.lock().unwrap_or_else(|p| p.into_inner()) = walked.identities;
        {
            let mut w = i.writer.lock().unwrap_or_else(|p| p.into_inner());
            if w.journal.active_len() > HEADER_LEN {
                w.active_since_ms = Some(now);
            }
            w.index = walked.active_index;
        }
        let mut report = Replayed {
            events: walked.candidates.len(),
            damaged: walked.damaged,
            ..Replayed::default()
        };
        let overflow = self.place_replayed(walked.candidates, walked.delivered, &mut report)?;
        {
            let mut w = i.writer.lock().unwrap_or_else(|p| p.into_inner());
            w.overflow = overflow;
            self.note_overflow(&w);
        }
        *i.checkpoint.lock().unwrap_or_else(|p| p.into_inner()) = from;
        tracing::info!(
            from_segment = from.segment,
            from_offset = from.offset,
            events = report.events,
            jobs_recreated = report.recreated,
            jobs_waiting_in_journal = report.waiting,
            damaged = report.damaged,
            "journal replayed from the checkpoint"
        );
        Ok(())
    }

    /// Reads the journal for [`Store::replay`]: every segment from the checkpoint `from` on
    /// (their events and Delivered records), and the identities of the last
    /// `dedupe_window` from the indexes of older ones; writes a missing index on the way.
    fn walk_journal(&self, from: Position, active: u64, now: u64) -> Result<Walked, StoreError> {
        let i = &self.inner;
        let window = i
            .dedupe_window_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut walked = Walked::default();
        let remember = |entries: &[IndexEntry], identities: &mut HashMap<u128, Uuid>| {
            for e in entries {
                if let Some(slot) = e.dedupe {
                    if uuid_ms(&e.id).saturating_add(window) > now {
                        identities.insert(slot, e.id);
                    }
                }
            }
        };
        for seg in &i.journal.segments() {
            let replayed = seg.seq >= from.segment;
            let recent =
                segments::modified_ms(&i.journal_dir, seg.seq).saturating_add(window) > now;
            let index = (seg.seq != active)
                .then(|| segments::read_index(&i.journal_dir, seg.seq))
                .flatten();
            if !replayed {
                // Before the checkpoint a segment matters only for its identities, and its
                // index holds those.
                if let Some(entries) = &index {
                    if recent {
                        remember(entries, &mut walked.identities);
                    }
                    continue;
                }
                if !recent {
                    continue;
                }
            }
            let entries = self.walk_segment_records(seg.seq, from, &mut walked)?;
            if recent {
                remember(&entries, &mut walked.identities);
            }
            if seg.seq == active {
                walked.active_index = entries;
            } else if index.is_none() {
                if let Err(e) = segments::write_index(&i.journal_dir, seg.seq, &entries) {
                    tracing::warn!(segment = seg.seq, error = %e, "could not write a journal index; the segment will be read again at the next start");
                }
            }
        }
        Ok(walked)
    }

    /// One segment's records: its index entries, and (from `from` on) its events and
    /// Delivered records into `walked`; damage is logged, counted and skipped.
    fn walk_segment_records(
        &self,
        seq: u64,
        from: Position,
        walked: &mut Walked,
    ) -> Result<Vec<IndexEntry>, StoreError> {
        let mut entries = Vec::new();
        self.inner.journal.walk_segment(seq, HEADER_LEN, |item| {
            match item {
                Scanned::Record { at, payload } => match entry::decode(&payload) {
                    Ok(e) => {
                        entries.extend(segments::index_of(at, &payload));
                        match e {
                            Entry::Event(h, _) if at >= from => walked.candidates.push((at, h)),
                            Entry::Delivered(d) if at >= from => {
                                walked.delivered.insert(d.job);
                            }
                            _ => {}
                        }
                    }
                    Err(e) => {
                        tracing::error!(segment = at.segment, offset = at.offset, error = %e, "journal: a record does not decode; skipped");
                        walked.damaged += 1;
                    }
                },
                Scanned::Damaged { at, bytes } => {
                    tracing::error!(segment = at.segment, offset = at.offset, bytes, "journal: damaged bytes (a bad checksum) skipped; the records after them are read");
                    walked.damaged += 1;
                }
            }
            true
        })?;
        Ok(entries)
    }
}
