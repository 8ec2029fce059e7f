//! Segment indexes, finding an event in the journal, and giving space back.
//!
//! When a segment is sealed, the events in it are listed in `<seq>.idx` beside it: event
//! id, offset and de-duplication digest, 41 bytes each, with a CRC32C over the file. A
//! restart reads these small files to rebuild the de-duplication memory, and `event show`
//! reads them to find an event, instead of reading whole segments. A missing or damaged
//! index is rebuilt from its segment.
//!
//! A sealed segment is deleted once it is older than `server.retention`, before the
//! checkpoint, and no sled record points into it. Jobs and dead letters that still do are
//! carried forward first: their events are copied into the active segment and the sled
//! records re-pointed, each in a transaction that re-checks the record, so a worker that
//! settles a job meanwhile is never overwritten.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use sled::Transactional;
use uuid::Uuid;

use super::entry::{self, Entry, EventHeader};
use super::journal::{frame_len, JournalError, Position, Scanned, HEADER_LEN};
use super::record::{DeadLetter, JobRecord};
use super::retry_queue::{decode, decode_with_tx, due_value, encode_with, parse_due_value};
use super::{keys, Store, StoreError, Writer};

const INDEX_MAGIC: [u8; 4] = *b"HRJI";
const INDEX_VERSION: u16 = 1;
const ENTRY_LEN: usize = 41;

/// One event of a segment, as its index lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// The event id.
    pub id: Uuid,
    /// Its record's offset in the segment.
    pub offset: u64,
    /// The first 16 bytes of its de-duplication digest, if it has one.
    pub dedupe: Option<u128>,
}

/// The index key of a de-duplication digest.
pub fn dedupe_slot(digest: &[u8; 32]) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(b)
}

fn index_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.idx"))
}

/// Writes the index of segment `seq`, durably.
pub fn write_index(dir: &Path, seq: u64, entries: &[IndexEntry]) -> Result<(), JournalError> {
    let mut bytes = Vec::with_capacity(16 + entries.len() * ENTRY_LEN + 4);
    bytes.extend_from_slice(&INDEX_MAGIC);
    bytes.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    bytes.extend_from_slice(&[0, 0]);
    bytes.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        bytes.extend_from_slice(e.id.as_bytes());
        bytes.extend_from_slice(&e.offset.to_le_bytes());
        match e.dedupe {
            Some(d) => {
                bytes.push(1);
                bytes.extend_from_slice(&d.to_le_bytes());
            }
            None => {
                bytes.push(0);
                bytes.extend_from_slice(&[0; 16]);
            }
        }
    }
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let path = index_path(dir, seq);
    let tmp = path.with_extension("idx.tmp");
    let io = |source| JournalError::Io {
        path: tmp.display().to_string(),
        source,
    };
    let mut f = super::journal::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_data().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(|source| JournalError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Reads the index of segment `seq`; `None` if it is missing or damaged.
pub fn read_index(dir: &Path, seq: u64) -> Option<Vec<IndexEntry>> {
    let bytes = std::fs::read(index_path(dir, seq)).ok()?;
    if bytes.len() < 20 || bytes[..4] != INDEX_MAGIC {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        tracing::warn!(
            segment = seq,
            "journal index is damaged; it is rebuilt from the segment"
        );
        return None;
    }
    if u16::from_le_bytes([body[4], body[5]]) != INDEX_VERSION {
        return None;
    }
    let count = usize::try_from(u64::from_le_bytes(body[8..16].try_into().ok()?)).ok()?;
    let list = &body[16..];
    if list.len() != count.checked_mul(ENTRY_LEN)? {
        return None;
    }
    Some(
        list.chunks_exact(ENTRY_LEN)
            .filter_map(|c| {
                Some(IndexEntry {
                    id: Uuid::from_slice(&c[..16]).ok()?,
                    offset: u64::from_le_bytes(c[16..24].try_into().ok()?),
                    dedupe: (c[24] == 1)
                        .then(|| c[25..41].try_into().ok().map(u128::from_le_bytes))
                        .flatten(),
                })
            })
            .collect(),
    )
}

/// Removes the index of a deleted segment.
fn remove_index(dir: &Path, seq: u64) {
    let _ = std::fs::remove_file(index_path(dir, seq));
}

/// Removes the indexes of segments that are gone: a crash between deleting a segment and
/// its index leaves one behind, and nothing else would ever remove it.
pub(super) fn remove_orphan_indexes(dir: &Path, segments: &[u64]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".idx"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if segments.binary_search(&seq).is_err() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(index = %entry.path().display(), "journal: removed the index of a segment that is gone (left by a crash during its deletion)")
                }
                Err(e) => {
                    tracing::warn!(index = %entry.path().display(), error = %e, "journal: could not remove the index of a segment that is gone")
                }
            }
        }
    }
}

/// Last modification of segment `seq`, Unix ms (0 if unknown).
pub(super) fn modified_ms(dir: &Path, seq: u64) -> u64 {
    std::fs::metadata(dir.join(format!("{seq:020}.seg")))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The index entries of every event record in a walk of one segment.
pub(super) fn index_of(at: Position, payload: &[u8]) -> Option<IndexEntry> {
    match entry::decode(payload) {
        Ok(Entry::Event(h, _)) => Some(IndexEntry {
            id: h.id,
            offset: at.offset,
            dedupe: h.dedupe.as_ref().map(dedupe_slot),
        }),
        // A copy is found by `event show` but is no new identity.
        Ok(Entry::Carried(h, _)) => Some(IndexEntry {
            id: h.id,
            offset: at.offset,
            dedupe: None,
        }),
        _ => None,
    }
}

impl Writer {
    /// Appends `records` (sealing the active segment first if they would take it past
    /// `segment_bytes`, so that every sealed segment gets its index).
    pub(super) fn append(
        &mut self,
        dir: &Path,
        segment_bytes: u64,
        records: &[Vec<u8>],
    ) -> Result<Vec<Position>, JournalError> {
        let size: u64 = records.iter().map(|r| frame_len(r.len())).sum();
        let len = self.journal.active_len();
        if len > HEADER_LEN && len + size > segment_bytes {
            self.rotate(dir)?;
        }
        let positions = self.journal.append(records)?;
        self.active_since_ms.get_or_insert_with(super::now_ms);
        Ok(positions)
    }

    /// Seals the active segment (writing its index) and starts the next one.
    pub(super) fn rotate(&mut self, dir: &Path) -> Result<(), JournalError> {
        let sealed = self.journal.end().segment;
        write_index(dir, sealed, &self.index)?;
        self.journal.rotate()?;
        self.index.clear();
        self.active_since_ms = None;
        Ok(())
    }
}

impl Store {
    /// Where the record of event `id` is, searching the active segment's list and then the
    /// sealed segments' indexes, newest first.
    fn locate_event(&self, id: &Uuid) -> Result<Option<Position>, StoreError> {
        let i = &self.inner;
        let active = {
            let w = i.writer.lock().unwrap_or_else(|p| p.into_inner());
            let seq = w.journal.end().segment;
            if let Some(e) = w.index.iter().find(|e| e.id == *id) {
                return Ok(Some(Position {
                    segment: seq,
                    offset: e.offset,
                }));
            }
            seq
        };
        for seg in i.journal.segments().iter().rev() {
            if seg.seq >= active {
                continue;
            }
            let entries = match read_index(&i.journal_dir, seg.seq) {
                Some(entries) => entries,
                None => {
                    let mut entries = Vec::new();
                    i.journal.walk_segment(seg.seq, HEADER_LEN, |item| {
                        if let Scanned::Record { at, payload } = item {
                            entries.extend(index_of(at, &payload));
                        }
                        true
                    })?;
                    entries
                }
            };
            if let Some(e) = entries.iter().find(|e| e.id == *id) {
                return Ok(Some(Position {
                    segment: seg.seq,
                    offset: e.offset,
                }));
            }
        }
        Ok(None)
    }

    /// The event record at `at` and its body.
    pub(super) fn read_event(&self, at: Position) -> Result<(EventHeader, Bytes), StoreError> {
        let bytes = Bytes::from(self.inner.journal.read_at(at)?);
        match entry::decode(&bytes)? {
            // A body stored as is shares the record's buffer: no second copy.
            Entry::Event(h, body) | Entry::Carried(h, body) => {
                let body = match body.bytes()? {
                    std::borrow::Cow::Borrowed(b) => bytes.slice_ref(b),
                    std::borrow::Cow::Owned(b) => Bytes::from(b),
                };
                Ok((h, body))
            }
            Entry::Delivered(_) => Err(StoreError::Corrupt(format!(
                "segment {} offset {} holds no event",
                at.segment, at.offset
            ))),
        }
    }

    /// Finds event `id` in the journal, with its position and body, while it is kept: it has a job
    /// queued or dead, or it was received less than `server.retention` ago. (Space goes
    /// back a whole segment at a time; an event past its retention is gone for readers even
    /// while its segment still waits for deletion.)
    pub(super) fn find_event(
        &self,
        id: &Uuid,
        now: u64,
    ) -> Result<Option<(Position, EventHeader, Bytes)>, StoreError> {
        let Some(at) = self.locate_event(id)? else {
            return Ok(None);
        };
        let (header, body) = self.read_event(at)?;
        if header.received_at_ms.saturating_add(self.retention_ms()) > now {
            return Ok(Some((at, header, body)));
        }
        for job in &header.jobs {
            if self.inner.lane.job(&job.id).is_some()
                || self.inner.trees.jobs.contains_key(job.id.as_bytes())?
                || self.inner.trees.dead.contains_key(job.id.as_bytes())?
            {
                return Ok(Some((at, header, body)));
            }
        }
        Ok(None)
    }

    /// Deletes every sealed segment past retention that nothing needs, carrying forward the
    /// records still needed; seals the active segment once it is old enough for that to
    /// matter. Returns the segments deleted.
    pub(super) fn reclaim_segments(&self, now: u64) -> Result<usize, StoreError> {
        let i = &self.inner;
        let retention = self.retention_ms();
        // Seal the active segment once retention could free it: at half the retention,
        // between a second and an hour, and only if it holds anything.
        let seal_after = (retention / 2).clamp(1000, 3_600_000);
        {
            let mut w = i.writer.lock().unwrap_or_else(|p| p.into_inner());
            if w.active_since_ms
                .is_some_and(|since| now.saturating_sub(since) >= seal_after)
            {
                w.rotate(&i.journal_dir)
                    .map_err(|e| self.observe(e.into()))?;
            }
        }
        let checkpoint = *i.checkpoint.lock().unwrap_or_else(|p| p.into_inner());
        // Jobs waiting in the journal are re-created from their events: none of those
        // segments may go (the checkpoint passes them, see `overflow_records`).
        let keep_from = {
            let w = i.writer.lock().unwrap_or_else(|p| p.into_inner());
            w.overflow
                .values()
                .map(|o| o.from.segment)
                .min()
                .unwrap_or(u64::MAX)
        };
        let mut deleted = 0;
        for seg in i.journal.segments() {
            if seg.seq >= checkpoint.segment || seg.seq >= keep_from {
                break;
            }
            if modified_ms(&i.journal_dir, seg.seq).saturating_add(retention) > now {
                break;
            }
            if self.refs_of(seg.seq) > 0 {
                self.carry_forward(seg.seq)?;
                if self.refs_of(seg.seq) > 0 {
                    continue;
                }
                // The copies must be durable in sled's view before the original goes.
                self.sync_sled().map_err(|e| self.observe(e))?;
            }
            let mut w = i.writer.lock().unwrap_or_else(|p| p.into_inner());
            w.journal
                .delete_segment(seg.seq)
                .map_err(|e| self.observe(e.into()))?;
            drop(w);
            remove_index(&i.journal_dir, seg.seq);
            tracing::debug!(
                segment = seg.seq,
                bytes = seg.len,
                "journal segment past retention deleted"
            );
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Copies the events that sled records in segment `seq` point at into the active
    /// segment and re-points those records.
    fn carry_forward(&self, seq: u64) -> Result<(), StoreError> {
        let t = &self.inner.trees;
        let mut events: BTreeMap<Position, (Vec<Uuid>, Vec<Uuid>)> = BTreeMap::new();
        for item in t.due.iter() {
            let (key, value) = item?;
            if parse_due_value(&value).is_some_and(|(_, s)| s == seq) {
                if let Some((_, _, job_id)) = keys::parse_due_key(&key) {
                    if let Some(bytes) = t.jobs.get(job_id.as_bytes())? {
                        let job: JobRecord = decode(&bytes)?;
                        if let Some(at) = job.event_at.filter(|p| p.segment == seq) {
                            events.entry(at).or_default().0.push(job.id);
                        }
                    }
                }
            }
        }
        for item in t.dead.iter() {
            let letter: DeadLetter = decode(&item?.1)?;
            if let Some(at) = letter.job.event_at.filter(|p| p.segment == seq) {
                events.entry(at).or_default().1.push(letter.job.id);
            }
        }
        if events.is_empty() {
            return Ok(());
        }
        let mut copies = Vec::with_capacity(events.len());
        let mut ids = Vec::with_capacity(events.len());
        for at in events.keys() {
            let (header, body) = self.read_event(*at)?;
            copies.push(entry::carried(&header, &body));
            ids.push(header.id);
        }
        let positions = {
            let mut w = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            let positions = w
                .append(&self.inner.journal_dir, self.inner.segment_bytes, &copies)
                .map_err(|e| self.observe(e.into()))?;
            for (id, p) in ids.iter().zip(&positions) {
                w.index.push(IndexEntry {
                    id: *id,
                    offset: p.offset,
                    dedupe: None,
                });
            }
            positions
        };
        let mut moved = 0usize;
        for ((old, (jobs, dead)), new) in events.iter().zip(positions) {
            for id in jobs {
                if self.repoint_job(id, *old, new)? {
                    moved += 1;
                }
            }
            for id in dead {
                if self.repoint_dead(id, *old, new)? {
                    moved += 1;
                }
            }
        }
        tracing::info!(segment = seq, events = events.len(), records = moved, "journal: carried events still needed by queued jobs and dead letters forward before deleting their segment");
        Ok(())
    }

    fn repoint_job(&self, id: &Uuid, old: Position, new: Position) -> Result<bool, StoreError> {
        let t = &self.inner.trees;
        let done = (&t.jobs, &t.due)
            .transaction(|(jobs, due)| {
                let Some(bytes) = jobs.get(id.as_bytes())? else {
                    return Ok(false);
                };
                let (mut job, history): (JobRecord, _) = decode_with_tx(&bytes)?;
                if job.event_at != Some(old) {
                    return Ok(false);
                }
                let key = keys::due_key(&job.destination, job.next_attempt_at_ms, &job.id);
                if due.get(&key)?.is_none() {
                    return Ok(false);
                }
                job.event_at = Some(new);
                jobs.insert(id.as_bytes(), encode_with(&job, &history))?;
                due.insert(key, &due_value(job.state(), new.segment)[..])?;
                Ok(true)
            })
            .map_err(StoreError::from)
            .map_err(|e| self.observe(e))?;
        if done {
            self.move_ref(old.segment, new.segment);
        }
        Ok(done)
    }

    fn repoint_dead(&self, id: &Uuid, old: Position, new: Position) -> Result<bool, StoreError> {
        let t = &self.inner.trees;
        let done = t
            .dead
            .transaction(|dead| {
                let Some(bytes) = dead.get(id.as_bytes())? else {
                    return Ok(false);
                };
                let (mut letter, history): (DeadLetter, _) = decode_with_tx(&bytes)?;
                if letter.job.event_at != Some(old) {
                    return Ok(false);
                }
                letter.job.event_at = Some(new);
                dead.insert(id.as_bytes(), encode_with(&letter, &history))?;
                Ok(true)
            })
            .map_err(StoreError::from)
            .map_err(|e| self.observe(e))?;
        if done {
            self.move_ref(old.segment, new.segment);
        }
        Ok(done)
    }
}
