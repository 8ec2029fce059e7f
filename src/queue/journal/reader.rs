//! Reading the journal: records by position, runs of records, and scans (for replay, the
//! catalog and event lookups), from any thread.

use super::*;

/// Records read in a run, each with its position.
pub type Records = Vec<(Position, Vec<u8>)>;

/// Reads records by position and scans ranges; cheap to clone, safe to share.
#[derive(Debug, Clone)]
pub struct JournalReader {
    pub(super) shared: Arc<Shared>,
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
