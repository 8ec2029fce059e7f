//! What the store writes into the journal, and how it is encoded.
//!
//! A journal record is one tag byte, a [postcard] header, and for events the body byte for
//! byte after the header (not encoded again, so that decoding a header never copies a body).
//! The tag names the record kind and its version: a later format adds tags, it never
//! changes what an existing tag means.

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

/// A decoded journal record; event bodies borrow from the record's bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<'a> {
    /// An accepted event and its body.
    Event(EventHeader, &'a [u8]),
    /// A copy of an event whose jobs are all in sled.
    Carried(EventHeader, &'a [u8]),
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
}

fn with_tag<T: Serialize>(tag: u8, header: &T, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + body.len());
    out.push(tag);
    // Serializing our own plain structs into a Vec cannot fail.
    let mut out = postcard::to_extend(header, out).unwrap_or_else(|_| vec![tag]);
    out.extend_from_slice(body);
    out
}

/// Encodes an accepted event.
pub fn event(header: &EventHeader, body: &[u8]) -> Vec<u8> {
    with_tag(TAG_EVENT, header, body)
}

/// Encodes an event carried forward.
pub fn carried(header: &EventHeader, body: &[u8]) -> Vec<u8> {
    with_tag(TAG_CARRIED, header, body)
}

/// Encodes a fast-lane delivery.
pub fn delivered(entry: &DeliveredEntry) -> Vec<u8> {
    with_tag(TAG_DELIVERED, entry, &[])
}

/// Decodes a record.
pub fn decode(bytes: &[u8]) -> Result<Entry<'_>, EntryError> {
    let (&tag, rest) = bytes.split_first().ok_or(EntryError::Empty)?;
    match tag {
        TAG_EVENT | TAG_CARRIED => {
            let (header, body) = postcard::take_from_bytes::<EventHeader>(rest)?;
            Ok(if tag == TAG_EVENT {
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
        assert_eq!(decode(&bytes).unwrap(), Entry::Event(h.clone(), &body[..]));
        assert_eq!(
            decode(&carried(&h, body)).unwrap(),
            Entry::Carried(h.clone(), &body[..])
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

    #[test]
    fn unknown_and_truncated_records_are_errors_not_panics() {
        assert!(matches!(decode(&[9, 1, 2]), Err(EntryError::UnknownTag(9))));
        assert!(matches!(decode(&[]), Err(EntryError::Empty)));
        let bytes = event(&header(), b"{}");
        assert!(decode(&bytes[..10]).is_err());
    }
}
