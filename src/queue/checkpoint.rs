//! The checkpoint: the oldest journal position whose jobs may still be only in memory.
//!
//! Kept in `data_dir/journal/checkpoint` (segment u64 LE, offset u64 LE, CRC32C of both),
//! replaced atomically: written to a temporary file, synced, renamed over the old one, and
//! the directory synced. A missing or damaged file means "replay from the first segment",
//! which is slow but never loses anything.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::journal::{JournalError, Position};

const NAME: &str = "checkpoint";

/// The key in sled's `v2.meta` of the checkpoint sled was last synced with: written just
/// before the sync that precedes every checkpoint, so sled's copy is never behind the
/// file's. Behind at open means sled lost writes it had made durable (a truncated `db`, or
/// an older copy of it put back): jobs waiting for a retry and dead letters may be gone,
/// and the store is reported damaged rather than opened short of them.
pub const SLED_MARK: &[u8] = b"checkpoint";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads the checkpoint of the journal in `dir`, if there is a valid one.
pub fn read(dir: &Path) -> Option<Position> {
    let bytes = std::fs::read(dir.join(NAME)).ok()?;
    if bytes.len() != 20 {
        tracing::warn!(dir = %dir.display(), "journal checkpoint has the wrong size; replaying the whole journal");
        return None;
    }
    let crc = u32::from_le_bytes(bytes[16..20].try_into().ok()?);
    if crc32c::crc32c(&bytes[..16]) != crc {
        tracing::warn!(dir = %dir.display(), "journal checkpoint is damaged; replaying the whole journal");
        return None;
    }
    Some(Position {
        segment: u64::from_le_bytes(bytes[..8].try_into().ok()?),
        offset: u64::from_le_bytes(bytes[8..16].try_into().ok()?),
    })
}

/// Replaces the checkpoint of the journal in `dir` with `at`, durably.
pub fn write(dir: &Path, at: Position) -> Result<(), JournalError> {
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&at.segment.to_le_bytes());
    bytes.extend_from_slice(&at.offset.to_le_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("checkpoint.tmp");
    let mut f = super::journal::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(&bytes).map_err(io(&tmp))?;
    f.sync_data().map_err(io(&tmp))?;
    let path = dir.join(NAME);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_round_trips_and_a_damaged_one_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        let at = Position {
            segment: 3,
            offset: 4096,
        };
        write(dir.path(), at).unwrap();
        assert_eq!(read(dir.path()), Some(at));
        let path = dir.path().join(NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[9] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read(dir.path()), None);
    }
}
