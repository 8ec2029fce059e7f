//! De-duplication and retention: what keeps the store correct about repeats and bounded in
//! size.
//!
//! Both work through the `expiry` tree (see the [module doc](super)): every record that must
//! go away later gets an entry keyed by its expiry time, and [`run`] purges what is due, in
//! batches, off the async threads. Each purge re-checks its record in the same transaction,
//! so an entry made stale by a later change (a dead letter retried, a window reset) purges
//! nothing it should not.

use std::time::Duration;

use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::keys::{self, Expiring};
use super::record::{now_ms, DeadLetter, EventRecord, SeenRecord, SettledJob};
use super::stats::Slot;
use super::{decode, encode, Store, StoreError, TxResult};
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

/// Inside the commit transaction: the id of the copy accepted within the window, or `None`
/// after recording `event_id` as the first copy.
pub(super) fn check_seen(
    key: &DedupeKey,
    event_id: &Uuid,
    now: u64,
    seen: &TransactionalTree,
    expiry: &TransactionalTree,
) -> TxResult<Option<Uuid>> {
    if let Some(bytes) = seen.get(key.digest)? {
        let prior: SeenRecord = decode(&bytes).map_err(ConflictableTransactionError::Abort)?;
        if now < prior.at_ms.saturating_add(key.window_ms) {
            return Ok(Some(prior.event_id));
        }
    }
    let record = SeenRecord {
        event_id: *event_id,
        at_ms: now,
        expires_at_ms: now.saturating_add(key.window_ms),
    };
    seen.insert(&key.digest[..], encode(&record))?;
    expiry.insert(
        keys::expiry_key(record.expires_at_ms, Expiring::Seen, &key.digest),
        &[][..],
    )?;
    Ok(None)
}

/// Undoes [`check_seen`] for an event whose batch could not be persisted.
pub(super) fn forget_seen(
    key: &DedupeKey,
    event_id: &Uuid,
    seen: &TransactionalTree,
) -> TxResult<()> {
    if let Some(bytes) = seen.get(key.digest)? {
        let prior: SeenRecord = decode(&bytes).map_err(ConflictableTransactionError::Abort)?;
        if prior.event_id == *event_id {
            seen.remove(&key.digest[..])?;
        }
    }
    Ok(())
}

/// The trees that hold an event and its jobs, inside one transaction.
pub(super) struct EventTrees<'a> {
    /// `events`: the event records.
    pub events: &'a TransactionalTree,
    /// `bodies`: their body chunks.
    pub bodies: &'a TransactionalTree,
    /// `jobs`: queued jobs (an event with one here is not settled).
    pub jobs: &'a TransactionalTree,
    /// `dead`: dead letters (an event with one here is not settled).
    pub dead: &'a TransactionalTree,
    /// `done`: settled jobs, purged with their event.
    pub done: &'a TransactionalTree,
    /// `attempts`: attempt history, purged with its job.
    pub attempts: &'a TransactionalTree,
}

/// Is every job of `ev` settled (neither queued nor dead)?
fn is_settled(ev: &EventRecord, t: &EventTrees<'_>) -> TxResult<bool> {
    for job in &ev.jobs {
        if t.jobs.get(job.as_bytes())?.is_some() || t.dead.get(job.as_bytes())?.is_some() {
            return Ok(false);
        }
    }
    Ok(true)
}

fn load_event(event_id: &Uuid, t: &EventTrees<'_>) -> TxResult<Option<EventRecord>> {
    t.events
        .get(event_id.as_bytes())?
        .map(|b| decode(&b).map_err(ConflictableTransactionError::Abort))
        .transpose()
}

/// After one of its jobs settled: if the whole event is settled, purge it now
/// (`retention_ms == 0`) or schedule its purge.
pub(super) fn settle_event(
    event_id: &Uuid,
    t: &EventTrees<'_>,
    expiry: &TransactionalTree,
    now: u64,
    retention_ms: u64,
) -> TxResult<()> {
    let Some(ev) = load_event(event_id, t)? else {
        return Ok(());
    };
    if !is_settled(&ev, t)? {
        return Ok(());
    }
    if retention_ms == 0 {
        return purge_event(&ev, t);
    }
    expiry.insert(
        keys::expiry_key(
            now.saturating_add(retention_ms),
            Expiring::Event,
            event_id.as_bytes(),
        ),
        &[][..],
    )?;
    Ok(())
}

/// Removes an event, its body, its settled jobs and every attempt of them.
fn purge_event(ev: &EventRecord, t: &EventTrees<'_>) -> TxResult<()> {
    for job_id in &ev.jobs {
        if let Some(bytes) = t.done.get(job_id.as_bytes())? {
            let settled: SettledJob =
                decode(&bytes).map_err(ConflictableTransactionError::Abort)?;
            remove_attempts(job_id, settled.job.attempts, t.attempts)?;
            t.done.remove(job_id.as_bytes())?;
        }
    }
    t.events.remove(ev.id.as_bytes())?;
    let chunks = usize::try_from(ev.body_len)
        .unwrap_or(0)
        .div_ceil(keys::BODY_CHUNK);
    for n in 0..chunks {
        t.bodies.remove(&keys::body_key(
            &ev.id,
            u32::try_from(n).unwrap_or(u32::MAX),
        ))?;
    }
    Ok(())
}

fn remove_attempts(job_id: &Uuid, count: u32, attempts: &TransactionalTree) -> TxResult<()> {
    for n in 1..=count {
        attempts.remove(&keys::attempt_key(job_id, n))?;
    }
    Ok(())
}

/// What one purge pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Settled events (with their jobs and attempts).
    pub events: usize,
    /// Dead letters past `dead_retention`.
    pub dead: usize,
    /// De-duplication records past their window.
    pub seen: usize,
}

/// Records per tree, for diagnostics and tests (counting walks each tree: not for hot paths).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RecordCounts {
    /// Events (queued, dead or kept for retention).
    pub events: usize,
    /// Body chunks.
    pub bodies: usize,
    /// Queued jobs.
    pub jobs: usize,
    /// Attempt records.
    pub attempts: usize,
    /// Dead letters.
    pub dead: usize,
    /// Settled jobs kept for retention.
    pub done: usize,
    /// De-duplication records.
    pub seen: usize,
    /// Pending expiry entries.
    pub expiry: usize,
}

impl RecordCounts {
    /// True when every tree is empty: everything was delivered and purged.
    pub fn is_empty(&self) -> bool {
        *self == RecordCounts::default()
    }
}

impl Store {
    /// Counts the records in every tree (walks them all).
    pub fn record_counts(&self) -> RecordCounts {
        let i = &self.inner;
        RecordCounts {
            events: i.events.len(),
            bodies: i.bodies.len(),
            jobs: i.jobs.len(),
            attempts: i.attempts.len(),
            dead: i.dead.len(),
            done: i.done.len(),
            seen: i.seen.len(),
            expiry: i.expiry.len(),
        }
    }

    /// Purges up to [`PURGE_BATCH`] records whose expiry is at or before `now`; returns
    /// what went and whether more may be due.
    pub fn purge_expired(&self, now: u64) -> Result<(Purged, bool), StoreError> {
        let mut due_keys = Vec::with_capacity(PURGE_BATCH);
        let end = now.saturating_add(1).to_be_bytes();
        for item in self.inner.expiry.range(..end.to_vec()).take(PURGE_BATCH) {
            due_keys.push(item?.0);
        }
        let mut purged = Purged::default();
        for key in &due_keys {
            match keys::parse_expiry_key(key) {
                Some((_, Expiring::Event, id)) => {
                    if let Ok(id) = Uuid::from_slice(id) {
                        purged.events += usize::from(self.purge_settled_event(&id)?);
                    }
                }
                Some((_, Expiring::Dead, id)) => {
                    if let Ok(id) = Uuid::from_slice(id) {
                        purged.dead += usize::from(self.purge_dead(&id, now)?);
                    }
                }
                Some((_, Expiring::Seen, digest)) => {
                    purged.seen += usize::from(self.purge_seen(digest, now)?);
                }
                None => {}
            }
            self.inner.expiry.remove(key)?;
        }
        Ok((purged, due_keys.len() == PURGE_BATCH))
    }

    fn purge_settled_event(&self, event_id: &Uuid) -> Result<bool, StoreError> {
        let i = &self.inner;
        Ok(
            (&i.events, &i.bodies, &i.jobs, &i.dead, &i.done, &i.attempts).transaction(
                |(events, bodies, jobs, dead, done, attempts)| {
                    let t = EventTrees {
                        events,
                        bodies,
                        jobs,
                        dead,
                        done,
                        attempts,
                    };
                    let Some(ev) = load_event(event_id, &t)? else {
                        return Ok(false);
                    };
                    if !is_settled(&ev, &t)? {
                        return Ok(false);
                    }
                    purge_event(&ev, &t)?;
                    Ok(true)
                },
            )?,
        )
    }

    /// Removes a dead letter past `dead_retention` with its attempts, and its event if that
    /// leaves the event settled.
    fn purge_dead(&self, job_id: &Uuid, now: u64) -> Result<bool, StoreError> {
        let i = &self.inner;
        let keep_ms = self.dead_retention_ms();
        let gone: Option<DeadLetter> =
            (&i.events, &i.bodies, &i.jobs, &i.dead, &i.done, &i.attempts).transaction(
                |(events, bodies, jobs, dead, done, attempts)| {
                    let Some(bytes) = dead.get(job_id.as_bytes())? else {
                        return Ok(None);
                    };
                    let letter: DeadLetter =
                        decode(&bytes).map_err(ConflictableTransactionError::Abort)?;
                    // Dead-lettered again after a retry: a later expiry entry covers it.
                    if letter.dead_at_ms.saturating_add(keep_ms) > now {
                        return Ok(None);
                    }
                    dead.remove(job_id.as_bytes())?;
                    remove_attempts(job_id, letter.job.attempts, attempts)?;
                    let t = EventTrees {
                        events,
                        bodies,
                        jobs,
                        dead,
                        done,
                        attempts,
                    };
                    if let Some(ev) = load_event(&letter.job.event_id, &t)? {
                        if is_settled(&ev, &t)? {
                            purge_event(&ev, &t)?;
                        }
                    }
                    Ok(Some(letter))
                },
            )?;
        if let Some(letter) = &gone {
            i.stats.remove(&letter.job.destination, Slot::Dead);
        }
        Ok(gone.is_some())
    }

    fn purge_seen(&self, digest: &[u8], now: u64) -> Result<bool, StoreError> {
        let seen = &self.inner.seen;
        let Some(bytes) = seen.get(digest)? else {
            return Ok(false);
        };
        let record: SeenRecord = decode(&bytes)?;
        if record.expires_at_ms > now {
            return Ok(false);
        }
        // Compare-and-swap: a concurrent re-acceptance replaced the record; keep that one.
        Ok(seen
            .compare_and_swap(digest, Some(bytes), None::<&[u8]>)?
            .is_ok())
    }
}

/// How often [`run`] looks for expired records: a tenth of the shortest retention window,
/// between 200 ms and a minute, so short test windows purge promptly and long production
/// windows cost a scan a minute.
pub fn interval(windows: &[Duration]) -> Duration {
    windows
        .iter()
        .filter(|d| !d.is_zero())
        .min()
        .map_or(Duration::from_secs(60), |d| *d / 10)
        .clamp(Duration::from_millis(200), Duration::from_secs(60))
}

/// Purges expired records every `every()` until `shutdown`; store errors are logged and
/// retried at the next tick.
pub async fn run(
    store: Store,
    every: impl Fn() -> Duration + Send + 'static,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every()) => {}
        }
        let s = store.clone();
        let pass = tokio::task::spawn_blocking(move || {
            let mut total = Purged::default();
            loop {
                let (purged, more) = s.purge_expired(now_ms())?;
                total.events += purged.events;
                total.dead += purged.dead;
                total.seen += purged.seen;
                if !more {
                    return Ok::<_, StoreError>(total);
                }
            }
        })
        .await;
        match pass {
            Ok(Ok(total)) if total != Purged::default() => tracing::debug!(
                events = total.events,
                dead = total.dead,
                seen = total.seen,
                "purged expired records"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "purging expired records failed; will retry"),
            Err(e) => tracing::error!(error = %e, "the purge task failed"),
        }
    }
}
