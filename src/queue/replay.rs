//! What the store keeps for replays: each operation's record (tree `v2.replays`, the
//! operation's own encoding, opaque here) and the jobs a replay creates.
//!
//! A replayed job is a new job (a new delivery id) of the event it replays, queued straight
//! in sled with its event's journal position, like a job that failed an attempt: so its
//! event's segment is kept (and carried forward) while it waits, and it is leased before
//! the fast lane's jobs. Each chunk of jobs and the operation's record (its cursor, its
//! counts) go into one sled transaction: after a crash either both are there or neither,
//! so a resumed replay neither skips an event nor queues one twice. What a crash can undo
//! is the delivery of a chunk whose transaction was not yet flushed: those events are
//! queued and sent again (at-least-once).

use sled::Transactional;
use uuid::Uuid;

use super::record::JobRecord;
use super::retry_queue::{queue_job, segment_of, TxResult};
use super::stats::Slot;
use super::{Store, StoreError};

/// The sled tree of replay operations: operation id (16 bytes) -> its record.
const REPLAYS_TREE: &str = "v2.replays";

impl Store {
    fn replays_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.inner.db.open_tree(REPLAYS_TREE)?)
    }

    /// Every replay operation's record, oldest first (ids are UUID v7).
    pub fn replay_records(&self) -> Result<Vec<(Uuid, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.replays_tree()?.iter() {
            let (key, value) = item?;
            if let Ok(id) = Uuid::from_slice(&key) {
                out.push((id, value.to_vec()));
            }
        }
        Ok(out)
    }

    /// Writes the record of replay `id` (durable with the next sled flush, about a second).
    pub fn save_replay(&self, id: &Uuid, record: &[u8]) -> Result<(), StoreError> {
        self.check_open()?;
        self.replays_tree()?
            .insert(id.as_bytes(), record)
            .map(|_| ())
            .map_err(|e| self.observe(e.into()))
    }

    /// Queues `jobs` (each with its event's `event_at`) in sled, due now, and writes the
    /// record of replay `id` in the same transaction.
    pub fn queue_replayed(
        &self,
        id: &Uuid,
        record: &[u8],
        jobs: &[JobRecord],
    ) -> Result<(), StoreError> {
        self.check_open()?;
        let t = &self.inner.trees;
        let replays = self.replays_tree()?;
        (&t.jobs, &t.due, &replays)
            .transaction(|(jobs_tree, due, replays)| -> TxResult<()> {
                for job in jobs {
                    queue_job(jobs_tree, due, job, &[])?;
                }
                replays.insert(&id.as_bytes()[..], record)?;
                Ok(())
            })
            .map_err(StoreError::from)
            .map_err(|e| self.observe(e))?;
        for job in jobs {
            self.add_ref(segment_of(job), 1);
            self.inner
                .stats
                .add(&job.destination, Slot::Queued(job.state()));
        }
        Ok(())
    }
}
