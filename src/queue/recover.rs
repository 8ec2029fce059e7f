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
use super::lane::{Lane, LaneJob};
use super::migrate;
use super::overflow::{Overflow, Recheck};
use super::overflow_records::OverflowRecord;
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
    let reader = journal.reader();
    let seqs: Vec<u64> = reader.segments().iter().map(|s| s.seq).collect();
    segments::remove_orphan_indexes(&journal_dir, &seqs);
    let store = Store {
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
    };
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

/// What replaying the journal found.
#[derive(Debug, Default)]
struct Replayed {
    events: usize,
    recreated: usize,
    waiting: usize,
    damaged: usize,
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

    /// Rebuilds the de-duplication memory and the active segment's index, and re-creates
    /// the jobs that were only in memory, from the checkpoint on.
    fn replay(&self) -> Result<(), StoreError> {
        let i = &self.inner;
        let now = now_ms();
        let window = i
            .dedupe_window_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        let segments = i.journal.segments();
        let active = i
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .journal
            .end()
            .segment;
        let first = segments.first().map_or(active, |s| s.seq);
        let from = match checkpoint::read(&i.journal_dir) {
            Some(cp) if cp.segment >= first => cp,
            Some(_) | None => Position::start_of(first),
        };
        let mut candidates: Vec<(Position, EventHeader)> = Vec::new();
        let mut delivered: HashSet<Uuid> = HashSet::new();
        let mut identities: HashMap<u128, Uuid> = HashMap::new();
        let mut report = Replayed::default();
        let remember = |entries: &[IndexEntry], identities: &mut HashMap<u128, Uuid>| {
            for e in entries {
                if let Some(slot) = e.dedupe {
                    if uuid_ms(&e.id).saturating_add(window) > now {
                        identities.insert(slot, e.id);
                    }
                }
            }
        };
        let mut active_index = Vec::new();
        for seg in &segments {
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
                        remember(entries, &mut identities);
                    }
                    continue;
                }
                if !recent {
                    continue;
                }
            }
            let mut entries = Vec::new();
            i.journal.walk_segment(seg.seq, HEADER_LEN, |item| {
                match item {
                    Scanned::Record { at, payload } => match entry::decode(&payload) {
                        Ok(e) => {
                            entries.extend(segments::index_of(at, &payload));
                            match e {
                                Entry::Event(h, _) if at >= from => candidates.push((at, h)),
                                Entry::Delivered(d) if at >= from => {
                                    delivered.insert(d.job);
                                }
                                _ => {}
                            }
                        }
                        Err(e) => {
                            tracing::error!(segment = at.segment, offset = at.offset, error = %e, "journal: a record does not decode; skipped");
                            report.damaged += 1;
                        }
                    },
                    Scanned::Damaged { at, bytes } => {
                        tracing::error!(segment = at.segment, offset = at.offset, bytes, "journal: damaged bytes (a bad checksum) skipped; the records after them are read");
                        report.damaged += 1;
                    }
                }
                true
            })?;
            if recent {
                remember(&entries, &mut identities);
            }
            if seg.seq == active {
                active_index = entries;
            } else if index.is_none() {
                if let Err(e) = segments::write_index(&i.journal_dir, seg.seq, &entries) {
                    tracing::warn!(segment = seg.seq, error = %e, "could not write a journal index; the segment will be read again at the next start");
                }
            }
        }
        *i.dedupe.lock().unwrap_or_else(|p| p.into_inner()) = identities;
        {
            let mut w = i.writer.lock().unwrap_or_else(|p| p.into_inner());
            if w.journal.active_len() > HEADER_LEN {
                w.active_since_ms = Some(now);
            }
            w.index = active_index;
        }
        report.events = candidates.len();
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
            for mut job in header.fresh_jobs() {
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
                i.stats.add(&job.destination, Slot::Queued(job.state()));
                report.recreated += 1;
                let room = i.lane.room(&job.destination, 0).is_some();
                match overflow.get_mut(&job.destination) {
                    Some(o) if at >= o.from => o.jobs += 1,
                    Some(o) if !room => {
                        // Before a restored overflow: it starts earlier now.
                        o.from = at;
                        o.from_ms = o.from_ms.min(header.received_at_ms);
                        o.jobs += 1;
                    }
                    None if !room => {
                        let mut o = Overflow::new(at, header.received_at_ms);
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
                        continue;
                    }
                }
                report.waiting += 1;
            }
        }
        let delivered = Arc::new(delivered);
        for (name, r) in &records {
            let mut jobs = r
                .jobs
                .saturating_sub(delivered_since.get(name).copied().unwrap_or(0));
            if let Some(o) = overflow.get_mut(name) {
                jobs -= self.uncount_moved_to_sled(name, r, o)?;
            }
            i.stats
                .add_many(name, Slot::Queued(super::record::JobState::Pending), jobs);
            report.waiting += usize::try_from(r.jobs).unwrap_or(usize::MAX);
            if let Some(o) = overflow.get_mut(name) {
                o.recheck = Some(Recheck {
                    before: r.upto,
                    delivered: Arc::clone(&delivered),
                });
            }
        }
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
}
