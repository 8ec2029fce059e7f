//! The jobs waiting in the journal, kept durably in sled's `v2.meta` with each checkpoint.
//!
//! A destination's [`Overflow`] is a position in the journal, a count and a skip set: a few
//! bytes however many jobs it stands for. Written (and synced with sled) just before each
//! checkpoint, it lets the checkpoint pass jobs that wait in the journal: a restart
//! replays the journal from the checkpoint, not from the oldest job of a destination that
//! has been down for a day. What the record says is exact as of the journal's end when it
//! was written (`upto`); the replay counts that destination's jobs after `upto` and
//! re-checks, lazily as they are refilled, those between the record's `from` and the
//! checkpoint (see [`super::overflow::Recheck`]).

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::journal::Position;
use super::overflow::Overflow;
use super::retry_queue::{decode, encode};
use super::{Store, StoreError, Writer};

/// Key prefix of an overflow record in `v2.meta`; the destination name follows.
const PREFIX: &[u8] = b"overflow/";

/// One destination's jobs waiting in the journal, as of the journal's end `upto`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct OverflowRecord {
    /// The first event record with a job of the destination waiting here.
    pub from: Position,
    /// When that event was received (Unix ms).
    pub from_ms: u64,
    /// The journal's end when this was written: every job counted is before it.
    pub upto: Position,
    /// Jobs waiting, all of them in events from `from` up to `upto`.
    pub jobs: u64,
    /// Jobs in that stretch not to re-create (and not counted).
    pub skip: Vec<Uuid>,
}

fn key(destination: &str) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(destination.as_bytes());
    k
}

/// The records for the overflows of `w`, taken under the writer's lock.
pub(super) fn snapshot(w: &Writer) -> Vec<(String, OverflowRecord)> {
    let upto = w.journal.end();
    let mut out: Vec<(String, OverflowRecord)> = w
        .overflow
        .iter()
        .map(|(name, o)| {
            let mut skip: Vec<Uuid> = o.skip.iter().copied().collect();
            skip.sort_unstable();
            (
                name.clone(),
                OverflowRecord {
                    from: o.from,
                    from_ms: o.from_ms,
                    upto,
                    jobs: o.jobs,
                    skip,
                },
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

impl OverflowRecord {
    /// The overflow this record restores, before the replay adds what came after `upto`.
    pub(crate) fn restore(&self) -> Overflow {
        let mut o = Overflow::new(self.from, self.from_ms);
        o.jobs = self.jobs;
        o.skip = self.skip.iter().copied().collect::<HashSet<Uuid>>();
        o
    }
}

impl Store {
    /// Replaces the stored overflow records with `records` (not synced: the checkpoint's
    /// sled sync that follows makes them durable before the checkpoint moves).
    pub(super) fn save_overflow_records(
        &self,
        records: &[(String, OverflowRecord)],
    ) -> Result<(), StoreError> {
        let meta = &self.inner.trees.meta;
        let keep: HashSet<Vec<u8>> = records.iter().map(|(name, _)| key(name)).collect();
        for item in meta.scan_prefix(PREFIX).keys() {
            let k = item?;
            if !keep.contains(k.as_ref()) {
                meta.remove(k)?;
            }
        }
        for (name, record) in records {
            meta.insert(key(name), encode(record))?;
        }
        Ok(())
    }

    /// The stored overflow records, by destination. One that does not decode is logged
    /// and left out: the replay then finds that destination's jobs from the checkpoint
    /// on only, so the record's older jobs are reported, never silently dropped.
    pub(super) fn overflow_records(&self) -> Result<HashMap<String, OverflowRecord>, StoreError> {
        let mut out = HashMap::new();
        for item in self.inner.trees.meta.scan_prefix(PREFIX) {
            let (k, v) = item?;
            let name = String::from_utf8_lossy(&k[PREFIX.len()..]).into_owned();
            match decode::<OverflowRecord>(&v) {
                Ok(record) => {
                    out.insert(name, record);
                }
                Err(e) => {
                    tracing::error!(destination = %name, error = %e, "the record of jobs waiting in the journal does not decode; those before the checkpoint cannot be found");
                }
            }
        }
        Ok(out)
    }
}
