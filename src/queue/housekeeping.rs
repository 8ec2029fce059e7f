//! De-duplication, the checkpoint and retention: what keeps the store correct about repeats,
//! quick to restart and bounded in size.
//!
//! Identities for de-duplication are remembered in memory (rebuilt at start from the
//! journal's segment indexes) and forgotten after their window. Sled records that must go
//! away later get an `expiry` entry keyed by their expiry time; [`run`] purges what is due,
//! in batches, off the async threads, and each purge re-checks its record in the same
//! transaction, so an entry made stale by a later change (a dead letter retried) purges
//! nothing it should not. Journal segments go whole ([`super::segments`]).

use std::time::Duration;

use std::sync::atomic::Ordering;

use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use sled::transaction::TransactionalTree;
use sled::Transactional;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::checkpoint;
use super::ingest::uuid_ms;
use super::journal::Position;
use super::keys::{self, Expiring};
use super::overflow_records;
use super::record::{now_ms, DeadLetter, JobRecord, SettledJob};
use super::retry_queue::{decode_tx, encode, segment_of, TxResult};
use super::segments;
use super::stats::Slot;
use super::{Store, StoreError};
use crate::event::EventKind;

/// Records purged per transaction: small enough that a purge never holds up ingress.
const PURGE_BATCH: usize = 256;

/// The identity of an event for de-duplication, and how long it counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupeKey {
    /// SHA-256 of kind, `id` and `updated_at`.
    pub digest: [u8; 32],
    /// The window in force when the event arrived.
    pub window_ms: u64,
}

/// The de-duplication identity of a payload: its kind, `id` and `updated_at` (an updated
/// view has a new `updated_at` and is a new event). `None` when de-duplication is off or
/// the payload has no `id`, since then there is nothing to recognise a repeat by.
pub fn dedupe_key(kind: EventKind, payload: &Json, window: Duration) -> Option<DedupeKey> {
    if window.is_zero() {
        return None;
    }
    let id = payload.get("id").filter(|v| !v.is_null())?;
    let updated = payload.get("updated_at").unwrap_or(&Json::Null);
    let mut h = Sha256::new();
    h.update(kind.as_str().as_bytes());
    h.update([0]);
    h.update(id.to_string().as_bytes());
    h.update([0]);
    h.update(updated.to_string().as_bytes());
    Some(DedupeKey {
        digest: h.finalize().into(),
        window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
    })
}

/// What one purge pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Jobs settled through sled (with their attempts), past `retention`.
    pub settled: usize,
    /// Dead letters past `dead_retention`.
    pub dead: usize,
    /// De-duplication identities past their window.
    pub seen: usize,
    /// Journal segments deleted.
    pub segments: usize,
}

/// What one purge of one record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purge {
    /// Removed.
    Gone,
    /// Nothing to remove (already gone, or not yet expired).
    Nothing,
    /// Expired but needed until the checkpoint passes its event: try again next pass.
    Later,
}

/// Records in the store, for diagnostics and tests (counting walks trees and reads the
/// segment indexes: not for hot paths).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RecordCounts {
    /// Events in the journal (queued, dead, or kept for retention).
    pub events: usize,
    /// Queued jobs (fast lane and sled).
    pub jobs: usize,
    /// Attempt records in sled.
    pub attempts: usize,
    /// Dead letters.
    pub dead: usize,
    /// Jobs settled through sled, kept for retention.
    pub done: usize,
    /// Identities remembered for de-duplication.
    pub seen: usize,
    /// Pending expiry entries.
    pub expiry: usize,
}

impl RecordCounts {
    /// True when the store holds nothing: everything was delivered and purged.
    pub fn is_empty(&self) -> bool {
        *self == RecordCounts::default()
    }
}

impl Store {
    /// Counts the records of every kind (walks sled's trees and the segment indexes).
    pub fn record_counts(&self) -> RecordCounts {
        let i = &self.inner;
        let t = &i.trees;
        let (active, in_active) = {
            let w = i.writer.lock().unwrap_or_else(|p| p.into_inner());
            (w.journal.end().segment, w.index.len())
        };
        let sealed: usize = i
            .journal
            .segments()
            .iter()
            .filter(|s| s.seq < active)
            .map(|s| segments::read_index(&i.journal_dir, s.seq).map_or(0, |e| e.len()))
            .sum();
        RecordCounts {
            events: sealed + in_active,
            jobs: t.jobs.len() + i.lane.len(),
            attempts: t.attempts.len(),
            dead: t.dead.len(),
            done: t.done.len(),
            seen: i.dedupe.lock().unwrap_or_else(|p| p.into_inner()).len(),
            expiry: t.expiry.len(),
        }
    }

    /// Purges up to [`PURGE_BATCH`] sled records whose expiry is at or before `now`;
    /// returns what went and whether more may be due.
    pub fn purge_expired(&self, now: u64) -> Result<(Purged, bool), StoreError> {
        let t = &self.inner.trees;
        let mut due_keys = Vec::with_capacity(PURGE_BATCH);
        let end = now.saturating_add(1).to_be_bytes();
        for item in t.expiry.range(..end.to_vec()).take(PURGE_BATCH) {
            due_keys.push(item?.0);
        }
        // A record of a job whose event is at or after the checkpoint is what tells a replay
        // not to re-create the job: it waits until the checkpoint has passed its event.
        let checkpoint = *self
            .inner
            .checkpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut purged = Purged::default();
        for key in &due_keys {
            let mut later = None;
            match keys::parse_expiry_key(key) {
                Some((_, what @ Expiring::Settled, id)) => {
                    if let Ok(id) = Uuid::from_slice(id) {
                        match self.purge_settled(&id, checkpoint)? {
                            Purge::Gone => purged.settled += 1,
                            Purge::Nothing => {}
                            Purge::Later => later = Some((what, id)),
                        }
                    }
                }
                Some((_, what @ Expiring::Dead, id)) => {
                    if let Ok(id) = Uuid::from_slice(id) {
                        match self.purge_dead(&id, now, checkpoint)? {
                            Purge::Gone => purged.dead += 1,
                            Purge::Nothing => {}
                            Purge::Later => later = Some((what, id)),
                        }
                    }
                }
                None => {}
            }
            t.expiry.remove(key)?;
            if let Some((what, id)) = later {
                // Just past this pass's range: the next pass tries again.
                t.expiry.insert(
                    keys::expiry_key(now.saturating_add(1), what, id.as_bytes()),
                    &[][..],
                )?;
            }
        }
        Ok((purged, due_keys.len() == PURGE_BATCH))
    }

    /// Removes a job settled through sled, with its attempts; kept for now
    /// ([`Purge::Later`]) while its event is at or after `checkpoint`.
    fn purge_settled(&self, job_id: &Uuid, checkpoint: Position) -> Result<Purge, StoreError> {
        let t = &self.inner.trees;
        Ok((&t.done, &t.attempts).transaction(|(done, attempts)| {
            let Some(bytes) = done.get(job_id.as_bytes())? else {
                return Ok(Purge::Nothing);
            };
            let settled: SettledJob = decode_tx(&bytes)?;
            if replayable(&settled.job, checkpoint) {
                return Ok(Purge::Later);
            }
            done.remove(job_id.as_bytes())?;
            remove_attempts(job_id, settled.job.attempts, attempts)?;
            Ok(Purge::Gone)
        })?)
    }

    /// Removes a dead letter past `dead_retention` with its attempts; kept for now
    /// ([`Purge::Later`]) while its event is at or after `checkpoint`.
    fn purge_dead(
        &self,
        job_id: &Uuid,
        now: u64,
        checkpoint: Position,
    ) -> Result<Purge, StoreError> {
        let t = &self.inner.trees;
        let keep_ms = self.dead_retention_ms();
        let gone: Result<DeadLetter, Purge> =
            (&t.dead, &t.attempts).transaction(|(dead, attempts)| {
                let Some(bytes) = dead.get(job_id.as_bytes())? else {
                    return Ok(Err(Purge::Nothing));
                };
                let letter: DeadLetter = decode_tx(&bytes)?;
                // Dead-lettered again after a retry: a later expiry entry covers it.
                if letter.dead_at_ms.saturating_add(keep_ms) > now {
                    return Ok(Err(Purge::Nothing));
                }
                if replayable(&letter.job, checkpoint) {
                    return Ok(Err(Purge::Later));
                }
                dead.remove(job_id.as_bytes())?;
                remove_attempts(job_id, letter.job.attempts, attempts)?;
                Ok(Ok(letter))
            })?;
        match gone {
            Ok(letter) => {
                self.add_ref(segment_of(&letter.job), -1);
                self.inner.stats.remove(&letter.job.destination, Slot::Dead);
                Ok(Purge::Gone)
            }
            Err(kept) => Ok(kept),
        }
    }

    /// Forgets identities older than the de-duplication window.
    fn forget_old_identities(&self, now: u64) -> usize {
        let window = self.inner.dedupe_window_ms.load(Ordering::Relaxed);
        let mut map = self.inner.dedupe.lock().unwrap_or_else(|p| p.into_inner());
        let before = map.len();
        map.retain(|_, first| uuid_ms(first).saturating_add(window) > now);
        before - map.len()
    }

    /// Advances the checkpoint to the oldest journal position with a job only in memory
    /// (the jobs waiting in the journal are in the overflow records written with it): sled
    /// is flushed and synced first, so every job moved there before, and the records, are
    /// durable.
    pub(super) fn advance_checkpoint(&self) -> Result<(), StoreError> {
        let i = &self.inner;
        if i.failed.is_cancelled() {
            return Ok(());
        }
        // Jobs waiting in the journal do not hold the checkpoint back: their overflow
        // records, written with it, say where they are.
        let (at, records) = {
            // Not in the middle of a refill, which holds an overflow's skip set aside.
            let _one = i.refilling.lock().unwrap_or_else(|p| p.into_inner());
            let w = i.writer.lock().unwrap_or_else(|p| p.into_inner());
            let at = i.lane.oldest_live().unwrap_or_else(|| w.journal.end());
            (at, overflow_records::snapshot(&w))
        };
        let mut last = i.checkpoint.lock().unwrap_or_else(|p| p.into_inner());
        let mut saved = i.saved_overflow.lock().unwrap_or_else(|p| p.into_inner());
        if at == *last && records == *saved {
            return Ok(());
        }
        if records != *saved {
            self.save_overflow_records(&records)
                .map_err(|e| self.observe(e))?;
            *saved = records;
        }
        i.trees
            .meta
            .insert(checkpoint::SLED_MARK, encode(&at))
            .map_err(|e| self.observe(e.into()))?;
        self.sync_sled().map_err(|e| self.observe(e))?;
        checkpoint::write(&i.journal_dir, at).map_err(|e| self.observe(e.into()))?;
        *last = at;
        Ok(())
    }

    /// One housekeeping pass at `now`: delivered records made durable, jobs that waited too
    /// long moved to sled, the checkpoint advanced, journal segments past retention
    /// deleted, and expired sled records and identities purged.
    pub fn maintain(&self, now: u64) -> Result<Purged, StoreError> {
        self.inner
            .presence
            .check()
            .map_err(|e| self.observe(e.into()))?;
        self.sync_settles()?;
        let taken_back = self.push_back_waiting()?;
        self.refill_all()?;
        if taken_back > 0 {
            tracing::debug!(
                jobs = taken_back,
                "jobs waited too long in the fast lane (or their destination is held); they wait in the journal"
            );
        }
        self.advance_checkpoint()?;
        let mut total = Purged {
            segments: self.reclaim_segments(now)?,
            seen: self.forget_old_identities(now),
            ..Purged::default()
        };
        loop {
            let (purged, more) = self.purge_expired(now)?;
            total.settled += purged.settled;
            total.dead += purged.dead;
            if !more {
                return Ok(total);
            }
        }
    }
}

/// Whether a replay from `checkpoint` reads `job`'s event record (and would re-create the
/// job if sled had no record of it).
fn replayable(job: &JobRecord, checkpoint: Position) -> bool {
    job.event_at.is_some_and(|at| at >= checkpoint)
}

fn remove_attempts(job_id: &Uuid, count: u32, attempts: &TransactionalTree) -> TxResult<()> {
    for n in 1..=count {
        attempts.remove(&keys::attempt_key(job_id, n))?;
    }
    Ok(())
}

/// How often [`run`] passes: a tenth of the shortest retention window, between 200 ms and
/// a second (the checkpoint advances once a pass, which bounds what a restart replays).
pub fn interval(windows: &[Duration]) -> Duration {
    windows
        .iter()
        .filter(|d| !d.is_zero())
        .min()
        .map_or(Duration::from_secs(1), |d| *d / 10)
        .clamp(Duration::from_millis(200), Duration::from_secs(1))
}

/// How often housekeeping hands freed memory back to the system ([`crate::memory`]).
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Runs [`Store::maintain`] every `every()` until `shutdown`; store errors are logged and
/// retried at the next tick.
pub async fn run(
    store: Store,
    every: impl Fn() -> Duration + Send + 'static,
    shutdown: CancellationToken,
) {
    let mut last_trim = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every()) => {}
        }
        let s = store.clone();
        // Every few seconds, the memory a burst freed goes back to the system.
        let trim = last_trim.elapsed() >= TRIM_EVERY;
        if trim {
            last_trim = std::time::Instant::now();
        }
        let pass = move || {
            let purged = s.maintain(now_ms());
            if trim {
                crate::memory::release_free_heap();
            }
            purged
        };
        match tokio::task::spawn_blocking(pass).await {
            Ok(Ok(total)) if total != Purged::default() => tracing::debug!(
                settled = total.settled,
                dead = total.dead,
                seen = total.seen,
                segments = total.segments,
                "purged expired records"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "housekeeping failed; will retry"),
            Err(e) => tracing::error!(error = %e, "the housekeeping task failed"),
        }
    }
}
