//! The on-disk format: segment names and headers, record frames, and the walk over a
//! segment's frames that tells valid records from damage.

use super::*;

pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

pub(super) fn header(seq: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[8..].copy_from_slice(&seq.to_le_bytes());
    h
}

pub(super) fn check_header(path: &Path, bytes: &[u8], seq: u64) -> Result<(), JournalError> {
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
pub(super) fn frame(buf: &mut Vec<u8>, payload: &[u8]) {
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
pub(super) fn parse_frame(bytes: &[u8]) -> Option<(&[u8], usize)> {
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
pub(super) fn read_segment(path: &Path, seq: u64) -> Result<Vec<u8>, JournalError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_error(path))?;
    check_header(path, &bytes, seq)?;
    Ok(bytes)
}

/// Walks the frames of one segment's bytes from `from`: every valid record and every
/// damaged stretch, in order, and the offset where valid data ends.
pub(super) fn walk(
    bytes: &[u8],
    seq: u64,
    from: u64,
    mut each: impl FnMut(Scanned) -> bool,
) -> u64 {
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
