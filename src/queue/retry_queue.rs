//! How the retry queue's records are written in sled: a version byte, then postcard.

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;

use super::journal::Position;
use super::keys;
use super::record::{AttemptRecord, JobRecord, JobState};
use super::{Store, StoreError};

/// Jobs written to sled per transaction: small transactions keep sled's memory bounded
/// (its batches grow without bound, see `shared/notes` in the project history).
const QUEUE_CHUNK: usize = 1000;

/// The version of every value this code writes, but for the three below.
const VALUE_VERSION: u8 = 1;
/// A `jobs`, `dead` or `done` value with the job's attempt history in it: the record and
/// then its attempts, oldest first. One sled record per job instead of one more per
/// attempt (sled spends about 190 bytes of disk on every record, whatever its size).
/// Version-1 values of these trees have their attempts in `v2.attempts`, which is still read.
const VALUE_WITH_HISTORY: u8 = 2;

pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// Encodes a record for sled.
pub(super) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing our own plain structs into a Vec cannot fail.
    postcard::to_extend(v, vec![VALUE_VERSION]).unwrap_or_default()
}

/// Encodes a `jobs`, `dead` or `done` record with the attempts made so far.
pub(super) fn encode_with<T: Serialize>(v: &T, history: &[AttemptRecord]) -> Vec<u8> {
    // Serializing our own plain structs into a Vec cannot fail.
    postcard::to_extend(&(v, history), vec![VALUE_WITH_HISTORY]).unwrap_or_default()
}

/// Decodes a record written by [`encode`] or [`encode_with`] (its history left out).
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    decode_with(bytes).map(|(v, _)| v)
}

/// Decodes a record and the attempts it carries (none for a version-1 record).
pub(super) fn decode_with<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, Vec<AttemptRecord>), StoreError> {
    let corrupt = |e: postcard::Error| StoreError::Corrupt(e.to_string());
    match bytes.split_first() {
        Some((&VALUE_VERSION, rest)) => {
            Ok((postcard::from_bytes(rest).map_err(corrupt)?, Vec::new()))
        }
        Some((&VALUE_WITH_HISTORY, rest)) => postcard::from_bytes(rest).map_err(corrupt),
        Some((v, _)) => Err(StoreError::Corrupt(format!("unknown record version {v}"))),
        None => Err(StoreError::Corrupt("empty record".into())),
    }
}

/// [`decode`] inside a transaction.
pub(super) fn decode_tx<T: DeserializeOwned>(bytes: &[u8]) -> TxResult<T> {
    decode(bytes).map_err(ConflictableTransactionError::Abort)
}

/// [`decode_with`] inside a transaction.
pub(super) fn decode_with_tx<T: DeserializeOwned>(
    bytes: &[u8],
) -> TxResult<(T, Vec<AttemptRecord>)> {
    decode_with(bytes).map_err(ConflictableTransactionError::Abort)
}

/// The segment a job's event is in (0 when unknown: a job with no journal record).
pub(super) fn segment_of(job: &JobRecord) -> u64 {
    job.event_at.map_or(0, |p: Position| p.segment)
}

/// The value of a due entry: the job's state and its event's segment, so that opening the
/// store counts the queue and the references into each segment from the due index alone.
pub(super) fn due_value(state: JobState, segment: u64) -> [u8; 9] {
    let mut v = [0u8; 9];
    v[0] = match state {
        JobState::Pending => 0,
        JobState::Retrying => 1,
    };
    v[1..].copy_from_slice(&segment.to_be_bytes());
    v
}

/// Splits a due value.
pub(super) fn parse_due_value(value: &[u8]) -> Option<(JobState, u64)> {
    let state = match value.first()? {
        0 => JobState::Pending,
        1 => JobState::Retrying,
        _ => return None,
    };
    let segment = u64::from_be_bytes(value.get(1..9)?.try_into().ok()?);
    Some((state, segment))
}

/// Queues `job` in sled with the attempts it has had: its record and its due entry.
pub(super) fn queue_job(
    jobs: &TransactionalTree,
    due: &TransactionalTree,
    job: &JobRecord,
    history: &[AttemptRecord],
) -> TxResult<()> {
    jobs.insert(job.id.as_bytes(), encode_with(job, history))?;
    due.insert(
        keys::due_key(&job.destination, job.next_attempt_at_ms, &job.id),
        &due_value(job.state(), segment_of(job))[..],
    )?;
    Ok(())
}

impl Store {
    /// Queues `jobs` in sled (each job's record and due entry), a chunk per transaction,
    /// and counts their references into the journal. Their queue depth is not changed:
    /// they were counted when they were accepted.
    pub(super) fn queue_in_sled<'a>(
        &self,
        jobs: impl IntoIterator<Item = &'a JobRecord>,
    ) -> Result<usize, StoreError> {
        let t = &self.inner.trees;
        let jobs: Vec<&JobRecord> = jobs.into_iter().collect();
        for chunk in jobs.chunks(QUEUE_CHUNK) {
            (&t.jobs, &t.due)
                .transaction(|(jobs_tree, due)| -> TxResult<()> {
                    for job in chunk {
                        queue_job(jobs_tree, due, job, &[])?;
                    }
                    Ok(())
                })
                .map_err(StoreError::from)
                .map_err(|e| self.observe(e))?;
            for job in chunk {
                self.add_ref(segment_of(job), 1);
            }
        }
        Ok(jobs.len())
    }

    /// Up to `limit` jobs of `destination` queued in sled, in due order.
    pub(super) fn sled_jobs_of(
        &self,
        destination: &str,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let t = &self.inner.trees;
        let mut out = Vec::new();
        for item in t.due.scan_prefix(keys::due_prefix(destination)).take(limit) {
            let (key, _) = item?;
            if let Some((_, _, job_id)) = keys::parse_due_key(&key) {
                if let Some(bytes) = t.jobs.get(job_id.as_bytes())? {
                    out.push(decode(&bytes)?);
                }
            }
        }
        Ok(out)
    }

    /// Moves one reference from segment `old` to segment `new` (a record re-pointed).
    pub(super) fn move_ref(&self, old: u64, new: u64) {
        self.add_ref(old, -1);
        self.add_ref(new, 1);
    }
}

/// Removes `job`'s due entry; returns the job as stored, with its attempts, if it was
/// queued (a job can be gone already: dead-lettered by an operator or retired while its
/// attempt was in flight).
pub(super) fn unqueue(
    jobs: &TransactionalTree,
    due: &TransactionalTree,
    job: &JobRecord,
) -> TxResult<Option<(JobRecord, Vec<AttemptRecord>)>> {
    let key = keys::due_key(&job.destination, job.next_attempt_at_ms, &job.id);
    if due.remove(key)?.is_none() {
        return Ok(None);
    }
    match jobs.remove(job.id.as_bytes())? {
        Some(bytes) => Ok(Some(decode_with_tx(&bytes)?)),
        None => Ok(Some((job.clone(), Vec::new()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_values_round_trip_and_records_carry_a_version() {
        assert_eq!(
            parse_due_value(&due_value(JobState::Retrying, 77)),
            Some((JobState::Retrying, 77))
        );
        assert_eq!(parse_due_value(&[0]), None);
        let bytes = encode(&"x".to_string());
        assert_eq!(bytes[0], VALUE_VERSION);
        assert_eq!(decode::<String>(&bytes).unwrap(), "x");
        assert!(decode::<String>(&[9, 1, b'x']).is_err());
    }

    #[test]
    fn a_record_carries_its_attempts_and_an_earlier_one_reads_with_none() {
        let attempt = AttemptRecord {
            attempt: 1,
            at_ms: 5,
            latency_ms: 2,
            status: None,
            outcome: "retry".into(),
            error: Some("connection failed: refused".into()),
        };
        let bytes = encode_with(&"job".to_string(), std::slice::from_ref(&attempt));
        assert_eq!(bytes[0], VALUE_WITH_HISTORY);
        let (v, history): (String, _) = decode_with(&bytes).unwrap();
        assert_eq!((v.as_str(), history), ("job", vec![attempt]));
        assert_eq!(
            decode::<String>(&bytes).unwrap(),
            "job",
            "decode leaves the history out"
        );
        let (v, history): (String, _) = decode_with(&encode(&"old".to_string())).unwrap();
        assert_eq!((v.as_str(), history.len()), ("old", 0));
    }
}
