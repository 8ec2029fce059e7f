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

mod format;
mod reader;
#[cfg(test)]
mod tests;

pub use format::frame_len;
use format::*;
pub use reader::{JournalReader, Records, Scan};

/// The sequence numbers of the segments in `dir`; a `.seg` file named otherwise is refused.
fn segment_numbers(dir: &Path) -> Result<Vec<u64>, JournalError> {
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
    Ok(seqs)
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
        let mut seqs = segment_numbers(dir)?;
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
                    Journal::reopen(shared, segment_bytes, last, raw_len, &mut report)?
                }
            }
        };
        journal.buf.reserve(64 * 1024);
        Ok((journal, report))
    }

    /// Reopens the last segment `last` (`raw_len` bytes on disk) for appending, after its
    /// last valid frame: a torn tail is truncated, synced and logged.
    fn reopen(
        shared: Arc<Shared>,
        segment_bytes: u64,
        last: u64,
        raw_len: u64,
        report: &mut OpenReport,
    ) -> Result<Journal, JournalError> {
        let path = segment_path(&shared.dir, last);
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
        Ok(Journal {
            shared,
            segment_bytes,
            active,
            active_seq: last,
            active_len: end,
            buf: Vec::new(),
        })
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
