//! What the store writes into the journal, and how it is encoded.
//!
//! A journal record is one tag byte, a [postcard] header, and for events the body after the
//! header: byte for byte (tags 1 and 3), or, where that is smaller, its length and a zstd
//! frame (tags 4 and 5). Decoding a header never copies or decompresses a body; only
//! [`Body::bytes`] does. The tag names the record kind and its version: a later format adds
//! tags, it never changes what an existing tag means.

use std::borrow::Cow;
use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::record::{AttemptRecord, EventRecord, JobRecord};
use crate::event::EventKind;

/// An accepted event (version 1).
const TAG_EVENT: u8 = 1;
/// A job of an event delivered from the fast lane (version 1).
const TAG_DELIVERED: u8 = 2;
/// An event copied forward out of a segment being deleted (version 1); its jobs are in
/// sled already, so replay does not create jobs from it.
const TAG_CARRIED: u8 = 3;
/// [`TAG_EVENT`] with its body compressed.
const TAG_EVENT_ZSTD: u8 = 4;
/// [`TAG_CARRIED`] with its body compressed.
const TAG_CARRIED_ZSTD: u8 = 5;

/// Bodies shorter than this are stored as they are: a zstd frame has about 20 bytes of
/// overhead and small bodies hardly compress.
const COMPRESS_FROM: usize = 256;
/// zstd's fastest level: ingest pays a few microseconds per event for about half the disk.
const ZSTD_LEVEL: i32 = 1;
/// The largest body a record may claim to decompress to (a damaged length must not make
/// us allocate gigabytes). Far above any body ingress accepts.
const MAX_BODY: usize = 256 << 20;

/// One job of an event, as the journal records it: enough to re-create the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSeed {
    /// Delivery id.
    pub id: Uuid,
    /// Destination name.
    pub destination: String,
    /// Routes that sent the event there.
    pub routes: Vec<String>,
}

/// The header of an event record: everything about the event but its body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventHeader {
    /// Event id (UUID v7).
    pub id: Uuid,
    /// Its kind.
    pub kind: EventKind,
    /// Wall-clock receive time, Unix ms.
    pub received_at_ms: u64,
    /// Routes that matched.
    pub routes: Vec<String>,
    /// One job per destination.
    pub jobs: Vec<JobSeed>,
    /// De-duplication digest, when the event had an identity.
    pub dedupe: Option<[u8; 32]>,
}

impl EventHeader {
    /// The event record an operator reads, for a body of `body_len` bytes.
    pub fn record(&self, body_len: usize) -> EventRecord {
        EventRecord {
            id: self.id,
            kind: self.kind,
            received_at_ms: self.received_at_ms,
            routes: self.routes.clone(),
            jobs: self.jobs.iter().map(|j| j.id).collect(),
            body_len: body_len as u64,
        }
    }

    /// The jobs as they were when the event was accepted (not attempted yet).
    pub fn fresh_jobs(&self) -> impl Iterator<Item = JobRecord> + '_ {
        self.jobs.iter().map(|seed| {
            let mut job = JobRecord::new(
                self.id,
                self.kind,
                seed.destination.clone(),
                seed.routes.clone(),
                self.received_at_ms,
            );
            job.id = seed.id;
            job
        })
    }
}

/// A fast-lane job that was delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveredEntry {
    /// The job.
    pub job: Uuid,
    /// Its event.
    pub event: Uuid,
    /// The attempt that delivered it.
    pub attempt: AttemptRecord,
}

/// An event's body inside a record, as stored: decompressed only when asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Body<'a> {
    /// Stored as received.
    Plain(&'a [u8]),
    /// A zstd frame of a body of `len` bytes.
    Zstd {
        /// The body's length.
        len: usize,
        /// The frame.
        frame: &'a [u8],
    },
}

impl<'a> Body<'a> {
    /// The body as received (borrowed when it was stored as is).
    pub fn bytes(&self) -> Result<Cow<'a, [u8]>, EntryError> {
        match *self {
            Body::Plain(b) => Ok(Cow::Borrowed(b)),
            Body::Zstd { len, frame } => {
                let out = zstd::bulk::decompress(frame, len).map_err(EntryError::Zstd)?;
                if out.len() != len {
                    return Err(EntryError::Length {
                        want: len,
                        got: out.len(),
                    });
                }
                Ok(Cow::Owned(out))
            }
        }
    }
}

/// A decoded journal record; event bodies borrow from the record's bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<'a> {
    /// An accepted event and its body.
    Event(EventHeader, Body<'a>),
    /// A copy of an event whose jobs are all in sled.
    Carried(EventHeader, Body<'a>),
    /// A fast-lane delivery.
    Delivered(DeliveredEntry),
}

/// Why a record did not decode.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// A tag this version does not know (a newer hookrouter wrote it).
    #[error("unknown journal record tag {0}")]
    UnknownTag(u8),
    /// The header did not decode.
    #[error("journal record: {0}")]
    Decode(#[from] postcard::Error),
    /// An empty record.
    #[error("empty journal record")]
    Empty,
    /// A compressed body that does not decompress.
    #[error("journal record: the body does not decompress: {0}")]
    Zstd(std::io::Error),
    /// A compressed body that decompresses to another length than recorded.
    #[error("journal record: the body decompresses to {got} bytes, {want} were recorded")]
    Length {
        /// Recorded.
        want: usize,
        /// Found.
        got: usize,
    },
    /// A compressed body claims an impossible length.
    #[error("journal record: a body of {0} bytes is recorded (damaged?)")]
    TooLarge(usize),
}

fn with_tag<T: Serialize>(tag: u8, header: &T, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + body.len());
    out.push(tag);
    // Serializing our own plain structs into a Vec cannot fail.
    let mut out = postcard::to_extend(header, out).unwrap_or_else(|_| vec![tag]);
    out.extend_from_slice(body);
    out
}

thread_local! {
    /// One compression context per thread (the committer's, the housekeeper's): creating
    /// one costs more than compressing a body.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// `body` as a zstd frame, if that is smaller.
fn compress(body: &[u8]) -> Option<Vec<u8>> {
    if body.len() < COMPRESS_FROM {
        return None;
    }
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compressor = match cell.as_mut() {
            Some(c) => c,
            None => cell.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL).ok()?),
        };
        let frame = compressor.compress(body).ok()?;
        (frame.len() + 4 < body.len()).then_some(frame)
    })
}

/// An event record with tag `plain`, or `zstd` with its body compressed where that is
/// smaller.
fn event_with(plain: u8, zstd: u8, header: &EventHeader, body: &[u8]) -> Vec<u8> {
    match compress(body) {
        Some(frame) => {
            // The length first, so that decompression allocates once and a damaged frame is
            // caught by its length as well as by zstd.
            let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
            // Serializing a u32 into a Vec cannot fail.
            let mut out =
                postcard::to_extend(&len, with_tag(zstd, header, &[])).unwrap_or_default();
            out.extend_from_slice(&frame);
            out
        }
        None => with_tag(plain, header, body),
    }
}

/// Encodes an accepted event.
pub fn event(header: &EventHeader, body: &[u8]) -> Vec<u8> {
    event_with(TAG_EVENT, TAG_EVENT_ZSTD, header, body)
}

/// Encodes an event carried forward.
pub fn carried(header: &EventHeader, body: &[u8]) -> Vec<u8> {
    event_with(TAG_CARRIED, TAG_CARRIED_ZSTD, header, body)
}

/// Encodes a fast-lane delivery.
pub fn delivered(entry: &DeliveredEntry) -> Vec<u8> {
    with_tag(TAG_DELIVERED, entry, &[])
}

/// Decodes a record.
pub fn decode(bytes: &[u8]) -> Result<Entry<'_>, EntryError> {
    let (&tag, rest) = bytes.split_first().ok_or(EntryError::Empty)?;
    match tag {
        TAG_EVENT | TAG_CARRIED | TAG_EVENT_ZSTD | TAG_CARRIED_ZSTD => {
            let (header, rest) = postcard::take_from_bytes::<EventHeader>(rest)?;
            let body = if tag == TAG_EVENT || tag == TAG_CARRIED {
                Body::Plain(rest)
            } else {
                let (len, frame) = postcard::take_from_bytes::<u32>(rest)?;
                let len = len as usize;
                if len > MAX_BODY {
                    return Err(EntryError::TooLarge(len));
                }
                Body::Zstd { len, frame }
            };
            Ok(if tag == TAG_EVENT || tag == TAG_EVENT_ZSTD {
                Entry::Event(header, body)
            } else {
                Entry::Carried(header, body)
            })
        }
        TAG_DELIVERED => Ok(Entry::Delivered(postcard::from_bytes(rest)?)),
        other => Err(EntryError::UnknownTag(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> EventHeader {
        EventHeader {
            id: Uuid::now_v7(),
            kind: EventKind::View,
            received_at_ms: 1_700_000_000_000,
            routes: vec!["r".into()],
            jobs: vec![JobSeed {
                id: Uuid::now_v7(),
                destination: "crm".into(),
                routes: vec!["r".into()],
            }],
            dedupe: Some([7; 32]),
        }
    }

    #[test]
    fn records_round_trip_and_the_body_is_stored_as_is() {
        let h = header();
        let body = br#"{"id":1,"video_title":"caf\xc3\xa9"}"#;
        let bytes = event(&h, body);
        assert!(bytes.len() < body.len() + 120, "{}", bytes.len());
        assert_eq!(
            decode(&bytes).unwrap(),
            Entry::Event(h.clone(), Body::Plain(&body[..]))
        );
        assert_eq!(
            decode(&carried(&h, body)).unwrap(),
            Entry::Carried(h.clone(), Body::Plain(&body[..]))
        );
        let d = DeliveredEntry {
            job: h.jobs[0].id,
            event: h.id,
            attempt: AttemptRecord {
                attempt: 1,
                at_ms: 5,
                latency_ms: 2,
                status: Some(200),
                outcome: "delivered".into(),
                error: None,
            },
        };
        assert_eq!(decode(&delivered(&d)).unwrap(), Entry::Delivered(d));
        let job = h.fresh_jobs().next().unwrap();
        assert_eq!(
            (job.id, job.event_id, job.attempts),
            (h.jobs[0].id, h.id, 0)
        );
    }

    /// The sample view from Mindstamp's documentation.
    const VIEW: &[u8] = include_bytes!("../../tests/fixtures/view.json");

    fn body_of(bytes: &[u8]) -> Vec<u8> {
        match decode(bytes).unwrap() {
            Entry::Event(_, b) | Entry::Carried(_, b) => b.bytes().unwrap().into_owned(),
            Entry::Delivered(_) => panic!("not an event"),
        }
    }

    #[test]
    fn a_real_payload_is_stored_compressed_and_comes_back_byte_for_byte() {
        let h = header();
        let bytes = event(&h, VIEW);
        assert!(
            bytes.len() < VIEW.len() * 2 / 3,
            "{} bytes for a {}-byte view",
            bytes.len(),
            VIEW.len()
        );
        assert!(
            matches!(decode(&bytes).unwrap(), Entry::Event(ref got, Body::Zstd { len, .. }) if *got == h && len == VIEW.len())
        );
        assert_eq!(body_of(&bytes), VIEW);
        let copy = carried(&h, VIEW);
        assert!(matches!(
            decode(&copy).unwrap(),
            Entry::Carried(_, Body::Zstd { .. })
        ));
        assert_eq!(body_of(&copy), VIEW);
        // Random bytes do not compress: they are stored as they are.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise: Vec<u8> = (0..2000)
            .map(|_| {
                // xorshift64: bytes with no pattern to compress.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(
            matches!(decode(&event(&h, &noise)).unwrap(), Entry::Event(_, Body::Plain(b)) if b == &noise[..])
        );
    }

    #[test]
    fn a_damaged_compressed_body_is_an_error() {
        let mut bytes = event(&header(), VIEW);
        let n = bytes.len();
        bytes[n - 40] ^= 0xff;
        let Ok(Entry::Event(_, body)) = decode(&bytes) else {
            panic!("the header is intact");
        };
        match body.bytes() {
            Err(EntryError::Zstd(_) | EntryError::Length { .. }) => {}
            Ok(b) => assert_ne!(&b[..], VIEW, "a flipped byte went unnoticed"),
            Err(e) => panic!("unexpected error {e}"),
        }
        let whole = event(&header(), VIEW);
        let Ok(Entry::Event(_, Body::Zstd { frame, .. })) = decode(&whole) else {
            panic!("compressed");
        };
        let wrong = Body::Zstd {
            len: VIEW.len() + 1,
            frame,
        };
        assert!(
            wrong.bytes().is_err(),
            "a length that does not match is an error"
        );
    }

    #[test]
    fn unknown_and_truncated_records_are_errors_not_panics() {
        assert!(matches!(decode(&[9, 1, 2]), Err(EntryError::UnknownTag(9))));
        assert!(matches!(decode(&[]), Err(EntryError::Empty)));
        let bytes = event(&header(), b"{}");
        assert!(decode(&bytes[..10]).is_err());
    }
}
