//! The ingest journal: append-only segment files of framed records.
//!
//! Every accepted event is written here first, as one record, and only here on the happy
//! path: one `write` and one `fdatasync` per batch of requests make a whole batch durable
//! (group commit), which is what an acknowledgement waits for. The journal knows nothing of
//! what its records mean; [`super::entry`] encodes them.
//!
//! # Format
//! `data_dir/journal/` holds segments named by a sequence number (`00000000000000000001.seg`,
//! ...). A segment starts with a 16-byte header (`HRJL`, format version u16 LE, two reserved
//! bytes, its sequence number u64 LE) followed by frames:
//!
//! | bytes | what |
//! |---|---|
//! | 4 | sync marker `HRRF`, so a reader can find the next frame after damage |
//! | 4 | payload length, u32 LE |
//! | 4 | CRC32C of the length bytes and the payload |
//! | n | payload |
//!
//! A segment is sealed when the next batch would take it past its size (a batch bigger than
//! a segment gets a segment of its own) or when the store asks (age-based rotation, so that
//! retention can return space). Creating a segment is followed by an fsync of the directory.
//!
//! # Damage
//! On open the last segment is read to its end. Bytes after the last valid frame that no
//! valid frame follows are a torn tail (a crash mid-write): they are truncated and logged,
//! with the offset and byte count. An invalid frame that a valid one follows is damage in
//! the middle (a flipped bit on disk): [`Scan`] reports it as [`Scanned::Damaged`] and goes
//! on with the next valid frame, so one bad record never stops the daemon from serving the
//! rest.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

/// First bytes of every segment.
const SEGMENT_MAGIC: [u8; 4] = *b"HRJL";
/// The segment format this code writes and reads.
const FORMAT_VERSION: u16 = 1;
/// Segment header length.
pub const HEADER_LEN: u64 = 16;
/// Marks the start of every frame.
const FRAME_SYNC: [u8; 4] = *b"HRRF";
/// Frame header length: sync, length, CRC.
const FRAME_HEADER: u64 = 12;
/// Largest payload a frame may claim; anything bigger is damage, not a record.
const MAX_PAYLOAD: u32 = 256 * 1024 * 1024;

/// Where a record starts: its segment and the byte offset of its frame in that segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Segment sequence number.
    pub segment: u64,
    /// Offset of the frame within the segment.
    pub offset: u64,
}

impl Position {
    /// The position before every record of `segment`.
    pub fn start_of(segment: u64) -> Position {
        Position {
            segment,
            offset: HEADER_LEN,
        }
    }
}

/// Why the journal could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading or writing a file failed.
    #[error("journal {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file in the journal directory is not a segment this version can read.
    #[error("journal {path}: {reason}")]
    BadSegment {
        /// The segment file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No valid record starts at a position that should hold one.
    #[error("journal: no valid record at segment {} offset {}: {reason}", .at.segment, .at.offset)]
    BadRecord {
        /// The position asked for.
        at: Position,
        /// What was found there instead.
        reason: String,
    },
    /// The segment holding a position is gone (deleted by retention).
    #[error("journal: segment {0} is gone")]
    NoSegment(u64),
}

/// Store directories are owner-only: the files in them hold webhook payloads (PII).
pub(crate) const PRIVATE_DIR_MODE: u32 = 0o700;
/// Store files are owner-only, whatever the process umask.
pub(crate) const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `dir` (and its parents) if needed and sets it to [`PRIVATE_DIR_MODE`]; an
/// existing directory is set too, so a store made by an older version is closed up.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR_MODE))
}

/// Options that create a file with [`PRIVATE_FILE_MODE`] (the mode is applied at creation,
/// so the file is never readable by others, not even for a moment).
pub(crate) fn private_file() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = OpenOptions::new();
    o.mode(PRIVATE_FILE_MODE);
    o
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What opening the journal found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Segments found.
    pub segments: usize,
    /// A torn tail truncated from the last segment: (offset, bytes removed).
    pub truncated: Option<(u64, u64)>,
}

/// One item of a [`Scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scanned {
    /// A valid record.
    Record {
        /// Where it starts.
        at: Position,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// Bytes that hold no valid frame, skipped up to the next valid frame (or the end).
    Damaged {
        /// Where the damage starts.
        at: Position,
        /// How many bytes were skipped.
        bytes: u64,
    },
}

/// What is known about one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Sequence number.
    pub seq: u64,
    /// Bytes that hold valid data (the durable end for the active segment).
    pub len: u64,
}

/// State shared between the writer and its readers.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    /// Every segment and its length in valid bytes.
    segments: RwLock<BTreeMap<u64, u64>>,
    /// Open read handles, by segment.
    files: Mutex<HashMap<u64, Arc<File>>>,
}

impl Shared {
    fn path(&self, seq: u64) -> PathBuf {
        segment_path(&self.dir, seq)
    }

    fn len_of(&self, seq: u64) -> Option<u64> {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&seq)
            .copied()
    }

    fn file(&self, seq: u64) -> Result<Arc<File>, JournalError> {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = files.get(&seq) {
            return Ok(f.clone());
        }
        if self.len_of(seq).is_none() {
            return Err(JournalError::NoSegment(seq));
        }
        let path = self.path(seq);
        let file = Arc::new(File::open(&path).map_err(io_error(&path))?);
        files.insert(seq, file.clone());
        Ok(file)
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

fn header(seq: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[8..].copy_from_slice(&seq.to_le_bytes());
    h
}

fn check_header(path: &Path, bytes: &[u8], seq: u64) -> Result<(), JournalError> {
    let bad = |reason: String| JournalError::BadSegment {
        path: path.display().to_string(),
        reason,
    };
    if bytes.len() < HEADER_LEN as usize || bytes[..4] != SEGMENT_MAGIC {
        return Err(bad("not a hookrouter journal segment".into()));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "segment format {version}, this hookrouter reads format {FORMAT_VERSION}"
        )));
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(&bytes[8..16]);
    if u64::from_le_bytes(s) != seq {
        return Err(bad("its header names another segment".into()));
    }
    Ok(())
}

/// Bytes a record of `payload_len` bytes takes in a segment.
pub fn frame_len(payload_len: usize) -> u64 {
    FRAME_HEADER + payload_len as u64
}

/// Appends one frame for `payload` to `buf`.
fn frame(buf: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload);
    buf.extend_from_slice(&FRAME_SYNC);
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Decodes the frame at the start of `bytes`: its payload and total length, or `None` if
/// no valid frame starts there (or it does not fit in `bytes`).
fn parse_frame(bytes: &[u8]) -> Option<(&[u8], usize)> {
    if bytes.len() < FRAME_HEADER as usize || bytes[..4] != FRAME_SYNC {
        return None;
    }
    let len_bytes: [u8; 4] = bytes[4..8].try_into().ok()?;
    let len = u32::from_le_bytes(len_bytes);
    if len > MAX_PAYLOAD {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().ok()?);
    let end = FRAME_HEADER as usize + len as usize;
    let payload = bytes.get(FRAME_HEADER as usize..end)?;
    (crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload) == crc).then_some((payload, end))
}

/// Reads a whole segment into memory after its header (segments are bounded in size).
fn read_segment(path: &Path, seq: u64) -> Result<Vec<u8>, JournalError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_error(path))?;
    check_header(path, &bytes, seq)?;
    Ok(bytes)
}

/// Walks the frames of one segment's bytes from `from`: every valid record and every
/// damaged stretch, in order, and the offset where valid data ends.
fn walk(bytes: &[u8], seq: u64, from: u64, mut each: impl FnMut(Scanned) -> bool) -> u64 {
    let mut at = usize::try_from(from)
        .unwrap_or(usize::MAX)
        .max(HEADER_LEN as usize);
    let mut end = at.min(bytes.len());
    while at < bytes.len() {
        if let Some((payload, len)) = parse_frame(&bytes[at..]) {
            let record = Scanned::Record {
                at: Position {
                    segment: seq,
                    offset: at as u64,
                },
                payload: payload.to_vec(),
            };
            at += len;
            end = at;
            if !each(record) {
                return end as u64;
            }
            continue;
        }
        // Find the next valid frame; with none, the rest is a torn tail, not damage.
        let next = (at + 1..bytes.len())
            .find(|&i| bytes[i..].starts_with(&FRAME_SYNC) && parse_frame(&bytes[i..]).is_some());
        match next {
            Some(n) => {
                if !each(Scanned::Damaged {
                    at: Position {
                        segment: seq,
                        offset: at as u64,
                    },
                    bytes: (n - at) as u64,
                }) {
                    return end as u64;
                }
                at = n;
            }
            None => break,
        }
    }
    end as u64
}

/// The writing end of the journal: one per store, used by one thread at a time.
#[derive(Debug)]
pub struct Journal {
    shared: Arc<Shared>,
    segment_bytes: u64,
    active: File,
    active_seq: u64,
    active_len: u64,
    buf: Vec<u8>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`; a new segment is started once the active one
    /// would pass `segment_bytes`. Truncates a torn tail of the last segment.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(Journal, OpenReport), JournalError> {
        private_dir(dir).map_err(io_error(dir))?;
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
                continue;
            };
            match stem.parse::<u64>() {
                Ok(seq) => seqs.push(seq),
                Err(_) => {
                    return Err(JournalError::BadSegment {
                        path: entry.path().display().to_string(),
                        reason: "a .seg file whose name is not a sequence number".into(),
                    })
                }
            }
        }
        seqs.sort_unstable();
        let mut report = OpenReport {
            segments: seqs.len(),
            truncated: None,
        };
        let mut segments = BTreeMap::new();
        for &seq in &seqs {
            let path = segment_path(dir, seq);
            let len = std::fs::metadata(&path).map_err(io_error(&path))?.len();
            segments.insert(seq, len);
        }
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            segments: RwLock::new(segments),
            files: Mutex::new(HashMap::new()),
        });
        let mut journal = match seqs.last() {
            None => Journal::create_segment(shared, segment_bytes, 1)?,
            Some(&last) => {
                let path = segment_path(dir, last);
                let raw_len = std::fs::metadata(&path).map_err(io_error(&path))?.len();
                if raw_len < HEADER_LEN {
                    // Created, but its header never reached the disk: start it again.
                    std::fs::remove_file(&path).map_err(io_error(&path))?;
                    shared
                        .segments
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&last);
                    Journal::create_segment(shared, segment_bytes, last)?
                } else {
                    let bytes = read_segment(&path, last)?;
                    let end = walk(&bytes, last, HEADER_LEN, |_| true);
                    let mut active = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&path)
                        .map_err(io_error(&path))?;
                    if end < raw_len {
                        active.set_len(end).map_err(io_error(&path))?;
                        active.sync_data().map_err(io_error(&path))?;
                        tracing::warn!(segment = %path.display(), offset = end, bytes = raw_len - end, "journal: truncated a torn tail (a write cut short by a crash; nothing acknowledged was in it)");
                        report.truncated = Some((end, raw_len - end));
                    }
                    active.seek(SeekFrom::Start(end)).map_err(io_error(&path))?;
                    shared
                        .segments
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(last, end);
                    Journal {
                        shared,
                        segment_bytes,
                        active,
                        active_seq: last,
                        active_len: end,
                        buf: Vec::new(),
                    }
                }
            }
        };
        journal.buf.reserve(64 * 1024);
        Ok((journal, report))
    }

    fn create_segment(
        shared: Arc<Shared>,
        segment_bytes: u64,
        seq: u64,
    ) -> Result<Journal, JournalError> {
        let path = shared.path(seq);
        let mut file = private_file()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_error(&path))?;
        file.write_all(&header(seq)).map_err(io_error(&path))?;
        file.sync_data().map_err(io_error(&path))?;
        sync_dir(&shared.dir)?;
        shared
            .segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(seq, HEADER_LEN);
        Ok(Journal {
            shared,
            segment_bytes,
            active: file,
            active_seq: seq,
            active_len: HEADER_LEN,
            buf: Vec::new(),
        })
    }

    /// Seals the active segment and starts the next one.
    pub fn rotate(&mut self) -> Result<(), JournalError> {
        let next =
            Journal::create_segment(self.shared.clone(), self.segment_bytes, self.active_seq + 1)?;
        let buf = std::mem::take(&mut self.buf);
        *self = next;
        self.buf = buf;
        Ok(())
    }

    /// Appends `records` with one write and one `fdatasync`; returns where each one starts.
    /// On an error nothing of the batch counts as written (the tail is cut back where it
    /// can be), and the caller must not acknowledge any of it.
    pub fn append<P: AsRef<[u8]>>(&mut self, records: &[P]) -> Result<Vec<Position>, JournalError> {
        self.buf.clear();
        let mut offsets = Vec::with_capacity(records.len());
        for r in records {
            offsets.push(self.buf.len() as u64);
            frame(&mut self.buf, r.as_ref());
        }
        let size = self.buf.len() as u64;
        if self.active_len > HEADER_LEN && self.active_len + size > self.segment_bytes {
            self.rotate()?;
        }
        let path = self.shared.path(self.active_seq);
        let start = self.active_len;
        let written = self
            .active
            .write_all(&self.buf)
            .and_then(|()| self.active.sync_data());
        if let Err(e) = written {
            // Best effort: cut the partial batch off so later appends follow valid data.
            let _ = self.active.set_len(start);
            let _ = self.active.seek(SeekFrom::Start(start));
            return Err(io_error(&path)(e));
        }
        self.active_len = start + size;
        self.shared
            .segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.active_seq, self.active_len);
        Ok(offsets
            .into_iter()
            .map(|o| Position {
                segment: self.active_seq,
                offset: start + o,
            })
            .collect())
    }

    /// The active segment's open file and its path, to check that they are still one
    /// ([`super::presence::check_file`]).
    pub fn active_file(&self) -> (&File, PathBuf) {
        (&self.active, self.shared.path(self.active_seq))
    }

    /// The position the next record will get (unless a rotation comes first).
    pub fn end(&self) -> Position {
        Position {
            segment: self.active_seq,
            offset: self.active_len,
        }
    }

    /// Bytes in the active segment.
    pub fn active_len(&self) -> u64 {
        self.active_len
    }

    /// A handle for reading, usable from any thread.
    pub fn reader(&self) -> JournalReader {
        JournalReader {
            shared: self.shared.clone(),
        }
    }

    /// Deletes segment `seq` (never the active one), then syncs the directory.
    pub fn delete_segment(&mut self, seq: u64) -> Result<(), JournalError> {
        if seq >= self.active_seq {
            return Ok(());
        }
        self.shared
            .segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&seq);
        self.shared
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&seq);
        let path = self.shared.path(seq);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path)(e)),
        }
        sync_dir(&self.shared.dir)
    }
}

/// Records read in a run, each with its position.
pub type Records = Vec<(Position, Vec<u8>)>;

/// Reads records by position and scans ranges; cheap to clone, safe to share.
#[derive(Debug, Clone)]
pub struct JournalReader {
    shared: Arc<Shared>,
}

impl JournalReader {
    /// The record starting at `at`.
    pub fn read_at(&self, at: Position) -> Result<Vec<u8>, JournalError> {
        let file = self.shared.file(at.segment)?;
        let path = self.shared.path(at.segment);
        let bad = |reason: &str| JournalError::BadRecord {
            at,
            reason: reason.to_string(),
        };
        let mut head = [0u8; FRAME_HEADER as usize];
        file.read_exact_at(&mut head, at.offset)
            .map_err(|_| bad("past the end of its segment"))?;
        if head[..4] != FRAME_SYNC {
            return Err(bad("no frame starts there"));
        }
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_PAYLOAD {
            return Err(bad("its length is damaged"));
        }
        let mut whole = vec![0u8; FRAME_HEADER as usize + len as usize];
        whole[..FRAME_HEADER as usize].copy_from_slice(&head);
        file.read_exact_at(
            &mut whole[FRAME_HEADER as usize..],
            at.offset + FRAME_HEADER,
        )
        .map_err(io_error(&path))?;
        match parse_frame(&whole) {
            Some((payload, _)) => Ok(payload.to_vec()),
            None => Err(bad("its checksum does not match (damaged on disk)")),
        }
    }

    /// The records of segment `at.segment` from `at`, in about `max_bytes` read at once (at
    /// least one whole record), up to `end` (an offset in that segment). Stops before a
    /// record that does not check out and says so with `Err` after the good ones: the caller
    /// decides what to skip.
    pub fn read_run(
        &self,
        at: Position,
        end: u64,
        max_bytes: usize,
    ) -> (Records, Result<(), JournalError>) {
        let mut out = Vec::new();
        let file = match self.shared.file(at.segment) {
            Ok(f) => f,
            Err(e) => return (out, Err(e)),
        };
        let want = usize::try_from(end.saturating_sub(at.offset))
            .unwrap_or(usize::MAX)
            .min(max_bytes);
        let mut buf = vec![0u8; want];
        if let Err(e) = file.read_exact_at(&mut buf, at.offset) {
            return (out, Err(io_error(&self.shared.path(at.segment))(e)));
        }
        let mut offset = 0usize;
        while offset < buf.len() {
            match parse_frame(&buf[offset..]) {
                Some((payload, len)) => {
                    out.push((
                        Position {
                            segment: at.segment,
                            offset: at.offset + offset as u64,
                        },
                        payload.to_vec(),
                    ));
                    offset += len;
                }
                None => break,
            }
        }
        if offset == buf.len() {
            return (out, Ok(()));
        }
        // The rest of the buffer holds no whole frame: a record cut by the buffer's end (read
        // it by itself), or damage.
        let next = Position {
            segment: at.segment,
            offset: at.offset + offset as u64,
        };
        match self.read_at(next) {
            Ok(payload) if out.is_empty() => {
                out.push((next, payload));
                (out, Ok(()))
            }
            Ok(_) => (out, Ok(())),
            Err(e) => (out, Err(e)),
        }
    }

    /// Every segment, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.shared
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(&seq, &len)| SegmentInfo { seq, len })
            .collect()
    }

    /// Valid bytes of segment `seq`, if it exists.
    pub fn segment_len(&self, seq: u64) -> Option<u64> {
        self.shared.len_of(seq)
    }

    /// The first segment after `seq`, if there is one.
    pub fn segment_after(&self, seq: u64) -> Option<u64> {
        self.shared
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .range(seq + 1..)
            .next()
            .map(|(&s, _)| s)
    }

    /// Bytes of every segment together.
    pub fn size(&self) -> u64 {
        self.segments().iter().map(|s| s.len).sum()
    }

    /// Scans from `from` to the current end, segment by segment.
    pub fn scan(&self, from: Position) -> Scan {
        Scan {
            reader: self.clone(),
            next: from,
            pending: std::collections::VecDeque::new(),
        }
    }

    /// Walks one whole segment, calling `each` for every record and damaged stretch until
    /// it returns false. Reads the segment sequentially rather than record by record.
    pub fn walk_segment(
        &self,
        seq: u64,
        from_offset: u64,
        each: impl FnMut(Scanned) -> bool,
    ) -> Result<(), JournalError> {
        let Some(len) = self.shared.len_of(seq) else {
            return Err(JournalError::NoSegment(seq));
        };
        let path = self.shared.path(seq);
        let file = File::open(&path).map_err(io_error(&path))?;
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        BufReader::new(file)
            .take(len)
            .read_to_end(&mut bytes)
            .map_err(io_error(&path))?;
        check_header(&path, &bytes, seq)?;
        walk(&bytes, seq, from_offset, each);
        Ok(())
    }
}

/// An iterator over records from a position to the end of the journal. A segment deleted
/// while scanning is skipped.
pub struct Scan {
    reader: JournalReader,
    next: Position,
    pending: std::collections::VecDeque<Scanned>,
}

impl Iterator for Scan {
    type Item = Result<Scanned, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(Ok(item));
            }
            let seq = {
                let segments = self
                    .reader
                    .shared
                    .segments
                    .read()
                    .unwrap_or_else(|p| p.into_inner());
                let (&seq, _) = segments.range(self.next.segment..).next()?;
                seq
            };
            let from = if seq == self.next.segment {
                self.next.offset
            } else {
                HEADER_LEN
            };
            let mut items = std::collections::VecDeque::new();
            match self.reader.walk_segment(seq, from, |item| {
                items.push_back(item);
                true
            }) {
                Ok(()) | Err(JournalError::NoSegment(_)) => {}
                Err(e) => {
                    self.next = Position::start_of(seq + 1);
                    return Some(Err(e));
                }
            }
            self.pending = items;
            self.next = Position::start_of(seq + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(reader: &JournalReader) -> Vec<Vec<u8>> {
        reader
            .scan(Position::start_of(0))
            .filter_map(|r| match r.unwrap() {
                Scanned::Record { payload, .. } => Some(payload),
                Scanned::Damaged { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_run_reads_whole_records_only_and_stops_at_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 1 << 20).unwrap();
        let records: Vec<Vec<u8>> = (0..10u8).map(|n| vec![n; 100 + n as usize]).collect();
        let positions = j.append(&records).unwrap();
        let end = j.end();
        let reader = j.reader();
        // A 500-byte run holds the first few whole records, not a cut one.
        let (run, ok) = reader.read_run(positions[0], end.offset, 500);
        assert!(ok.is_ok());
        assert!(!run.is_empty() && run.len() < 10, "{}", run.len());
        for (k, (at, payload)) in run.iter().enumerate() {
            assert_eq!((*at, payload), (positions[k], &records[k]));
        }
        // A run shorter than one record still yields that record.
        let (run, ok) = reader.read_run(positions[9], end.offset, 8);
        assert!(ok.is_ok());
        assert_eq!(run, vec![(positions[9], records[9].clone())]);
        // A flipped byte: the records before it, then the error.
        let path = dir.path().join(format!("{:020}.seg", positions[0].segment));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[positions[4].offset as usize + 20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (run, damaged) = reader.read_run(positions[0], end.offset, 1 << 20);
        assert_eq!(run.len(), 4);
        assert!(damaged.is_err());
    }

    #[test]
    fn appends_read_back_by_position_and_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, report) = Journal::open(dir.path(), 256).unwrap();
        assert_eq!(report.truncated, None);
        let mut positions = Vec::new();
        for n in 0..20u8 {
            let batch = vec![vec![n; 40], vec![n + 100; 3]];
            positions.extend(j.append(&batch).unwrap());
        }
        let reader = j.reader();
        assert!(reader.segments().len() > 3, "{:?}", reader.segments());
        assert_eq!(reader.read_at(positions[6]).unwrap(), vec![3u8; 40]);
        assert_eq!(reader.read_at(positions[7]).unwrap(), vec![103u8; 3]);
        let all = records(&reader);
        assert_eq!(all.len(), 40);
        assert_eq!(all[39], vec![119u8; 3]);
        // A batch bigger than a segment gets a segment of its own.
        let big = j.append(&[vec![7u8; 1000]]).unwrap()[0];
        assert_eq!(big.offset, HEADER_LEN);
        assert_eq!(reader.read_at(big).unwrap().len(), 1000);
        drop(j);
        let (j, _) = Journal::open(dir.path(), 256).unwrap();
        assert_eq!(records(&j.reader()).len(), 41);
    }

    #[test]
    fn a_torn_tail_is_truncated_and_appending_goes_on_after_the_last_valid_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 1 << 20).unwrap();
        j.append(&[b"one".to_vec(), b"two".to_vec()]).unwrap();
        let end = j.end();
        drop(j);
        // A crash in the middle of writing the next frame.
        let path = segment_path(dir.path(), end.segment);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        let mut partial = Vec::new();
        frame(&mut partial, b"three, never acknowledged");
        f.write_all(&partial[..partial.len() - 5]).unwrap();
        drop(f);
        let (mut j, report) = Journal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            report.truncated,
            Some((end.offset, partial.len() as u64 - 5))
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), end.offset);
        j.append(&[b"four".to_vec()]).unwrap();
        assert_eq!(
            records(&j.reader()),
            vec![b"one".to_vec(), b"two".to_vec(), b"four".to_vec()]
        );
    }

    #[test]
    fn a_flipped_byte_mid_segment_is_reported_and_the_rest_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 1 << 20).unwrap();
        let at = j
            .append(&[b"first".to_vec(), b"second".to_vec(), b"third".to_vec()])
            .unwrap();
        drop(j);
        let path = segment_path(dir.path(), at[1].segment);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[usize::try_from(at[1].offset).unwrap() + 14] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let (j, report) = Journal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            report.truncated, None,
            "damage mid-segment is not a torn tail"
        );
        let reader = j.reader();
        let items: Vec<Scanned> = reader
            .scan(Position::start_of(0))
            .map(Result::unwrap)
            .collect();
        assert_eq!(items.len(), 3, "{items:?}");
        assert_eq!(
            items[1],
            Scanned::Damaged {
                at: at[1],
                bytes: at[2].offset - at[1].offset
            }
        );
        assert!(matches!(&items[2], Scanned::Record { payload, .. } if payload == b"third"));
        assert!(matches!(
            reader.read_at(at[1]),
            Err(JournalError::BadRecord { .. })
        ));
        assert_eq!(reader.read_at(at[2]).unwrap(), b"third");
    }

    #[test]
    fn deleted_segments_are_gone_for_readers_and_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 1 << 20).unwrap();
        let first = j.append(&[b"old".to_vec()]).unwrap()[0];
        j.rotate().unwrap();
        let second = j.append(&[b"new".to_vec()]).unwrap()[0];
        j.delete_segment(first.segment).unwrap();
        // The active segment is never deleted.
        j.delete_segment(second.segment).unwrap();
        let reader = j.reader();
        assert!(matches!(
            reader.read_at(first),
            Err(JournalError::NoSegment(_))
        ));
        assert_eq!(records(&reader), vec![b"new".to_vec()]);
        drop(j);
        let (j, report) = Journal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(report.segments, 1);
        assert_eq!(j.reader().read_at(second).unwrap(), b"new");
    }

    #[test]
    fn a_segment_of_another_format_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            segment_path(dir.path(), 1),
            b"HRJL\x09\x00\x00\x00\x01\0\0\0\0\0\0\0",
        )
        .unwrap();
        let err = Journal::open(dir.path(), 1 << 20).unwrap_err().to_string();
        assert!(err.contains("segment format 9"), "{err}");
        assert!(err.contains("00000000000000000001.seg"), "{err}");
    }
}
