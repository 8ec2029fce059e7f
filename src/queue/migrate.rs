//! Migration from the first store format, where sled held everything (events, bodies, jobs
//! as JSON, de-duplication records), to the journal and the compact retry queue.
//!
//! Carried over: every queued job and every dead letter, with their attempts, and the
//! events they need (copied into the journal). Not carried over, and logged with counts:
//! the history of events already settled, and the de-duplication records (an event Mindstamp
//! resends right after the upgrade is forwarded again: a duplicate, never a loss).
//!
//! The new trees have their own names (`v2.*`), and the old trees are dropped only after
//! everything is written and synced and the format is recorded, so a crash during the
//! migration leaves the old store whole: the next start clears the new trees and begins
//! again.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::checkpoint;
use super::entry::{self, EventHeader, JobSeed};
use super::journal::Position;
use super::keys::{self, Expiring};
use super::record::{AttemptRecord, DeadLetter, EventRecord, JobRecord};
use super::retry_queue::encode;
use super::{Store, StoreError};

/// The key in `v2.meta` that records the format.
pub(super) const FORMAT_KEY: &[u8] = b"format";
/// The format this code writes.
const FORMAT: u8 = 2;
/// The trees of the first format.
const OLD_TREES: [&str; 9] = [
    "events", "bodies", "jobs", "due", "attempts", "dead", "done", "expiry", "seen",
];
/// Events copied into the journal per append.
const BATCH: usize = 256;

fn json<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| {
        StoreError::Format(format!(
            "migrating the old store: a {what} record does not decode: {e}"
        ))
    })
}

/// Migrates a store of the first format, if that is what `store` opened; records the format
/// of a new store.
pub(super) fn run_if_needed(store: &Store) -> Result<(), StoreError> {
    let i = &store.inner;
    let meta = &i.trees.meta;
    if let Some(v) = meta.get(FORMAT_KEY)? {
        return match v.as_ref() {
            [FORMAT] => Ok(()),
            other => Err(StoreError::Format(format!(
                "the data directory holds store format {other:?}; this hookrouter reads format {FORMAT}: run the hookrouter that wrote it, or move the directory away"
            ))),
        };
    }
    let names = i.db.tree_names();
    let present: Vec<&str> = OLD_TREES
        .iter()
        .copied()
        .filter(|n| names.iter().any(|t| t.as_ref() == n.as_bytes()))
        .collect();
    let mut old_records = 0;
    for name in &present {
        old_records += i.db.open_tree(name)?.len();
    }
    if old_records > 0 {
        migrate(store)?;
    }
    for name in &present {
        i.db.drop_tree(name)?;
    }
    meta.insert(FORMAT_KEY, &[FORMAT][..])?;
    store.sync_sled()?;
    Ok(())
}

/// What the migration carried and what it left.
#[derive(Debug, Default)]
struct Carried {
    jobs: usize,
    dead: usize,
    events: usize,
    attempts: usize,
    missing_events: usize,
    settled_dropped: usize,
    identities_dropped: usize,
}

fn migrate(store: &Store) -> Result<(), StoreError> {
    let i = &store.inner;
    let t = &i.trees;
    let db = &i.db;
    tracing::warn!(data_dir = %i.journal_dir.parent().map_or_else(String::new, |p| p.display().to_string()), "the data directory holds the first store format; migrating it (queued jobs and dead letters are carried over)");
    // A previous attempt that did not finish: start again from the old trees.
    for tree in [&t.jobs, &t.due, &t.attempts, &t.dead, &t.done, &t.expiry] {
        tree.clear()?;
    }
    let old = |name: &str| db.open_tree(name);
    let (events, bodies, jobs, attempts, dead, done, seen) = (
        old("events")?,
        old("bodies")?,
        old("jobs")?,
        old("attempts")?,
        old("dead")?,
        old("done")?,
        old("seen")?,
    );
    let mut report = Carried {
        settled_dropped: done.len(),
        identities_dropped: seen.len(),
        ..Carried::default()
    };
    let mut queued: Vec<JobRecord> = Vec::new();
    for item in jobs.iter() {
        queued.push(json("job", &item?.1)?);
    }
    let mut letters: Vec<DeadLetter> = Vec::new();
    for item in dead.iter() {
        letters.push(json("dead letter", &item?.1)?);
    }
    // Every event still needed, with the jobs of it that are carried.
    let mut needed: BTreeMap<Uuid, Vec<JobSeed>> = BTreeMap::new();
    for job in queued.iter().chain(letters.iter().map(|l| &l.job)) {
        needed.entry(job.event_id).or_default().push(JobSeed {
            id: job.id,
            destination: job.destination.clone(),
            routes: job.routes.clone(),
        });
    }
    let positions = carry_events(store, &events, &bodies, &needed, &mut report)?;
    let carried: BTreeSet<Uuid> = queued
        .iter()
        .map(|j| j.id)
        .chain(letters.iter().map(|l| l.job.id))
        .collect();
    for job in &mut queued {
        job.event_at = positions.get(&job.event_id).copied();
    }
    report.jobs = store.queue_in_sled(&queued)?;
    carry_dead_letters(store, letters, &positions, &mut report)?;
    carry_attempts(store, &attempts, &carried, &mut report)?;
    finish(store, &report)
}

/// Appends to the journal every old event a carried job or dead letter needs (with its body
/// and only the carried jobs), in batches; returns where each went.
fn carry_events(
    store: &Store,
    events: &sled::Tree,
    bodies: &sled::Tree,
    needed: &BTreeMap<Uuid, Vec<JobSeed>>,
    report: &mut Carried,
) -> Result<BTreeMap<Uuid, Position>, StoreError> {
    let i = &store.inner;
    let mut positions: BTreeMap<Uuid, Position> = BTreeMap::new();
    let ids: Vec<Uuid> = needed.keys().copied().collect();
    for chunk in ids.chunks(BATCH) {
        let mut records = Vec::with_capacity(chunk.len());
        let mut carried_ids = Vec::with_capacity(chunk.len());
        for id in chunk {
            let Some(bytes) = events.get(id.as_bytes())? else {
                report.missing_events += 1;
                continue;
            };
            let ev: EventRecord = json("event", &bytes)?;
            let mut body = Vec::with_capacity(usize::try_from(ev.body_len).unwrap_or(0));
            for part in bodies.scan_prefix(id.as_bytes()) {
                body.extend_from_slice(&part?.1);
            }
            let seeds = needed.get(id).cloned().unwrap_or_default();
            let header = EventHeader {
                id: ev.id,
                kind: ev.kind,
                received_at_ms: ev.received_at_ms,
                routes: ev.routes,
                // The event's other jobs were settled; their history is not carried.
                jobs: seeds,
                dedupe: None,
            };
            records.push(entry::carried(&header, &body));
            carried_ids.push(*id);
        }
        let mut w = i.writer.lock().unwrap_or_else(|p| p.into_inner());
        let at = w.append(&i.journal_dir, i.segment_bytes, &records)?;
        for (id, p) in carried_ids.iter().zip(&at) {
            w.index.push(super::segments::IndexEntry {
                id: *id,
                offset: p.offset,
                dedupe: None,
            });
        }
        drop(w);
        report.events += at.len();
        positions.extend(carried_ids.into_iter().zip(at));
    }
    Ok(positions)
}

/// Writes the old dead letters into `v2.dead`, each pointing at its carried event, with
/// its expiry.
fn carry_dead_letters(
    store: &Store,
    letters: Vec<DeadLetter>,
    positions: &BTreeMap<Uuid, Position>,
    report: &mut Carried,
) -> Result<(), StoreError> {
    let t = &store.inner.trees;
    let keep = store.dead_retention_ms();
    for mut letter in letters {
        letter.job.event_at = positions.get(&letter.job.event_id).copied();
        t.dead.insert(letter.job.id.as_bytes(), encode(&letter))?;
        t.expiry.insert(
            keys::expiry_key(
                letter.dead_at_ms.saturating_add(keep),
                Expiring::Dead,
                letter.job.id.as_bytes(),
            ),
            &[][..],
        )?;
        report.dead += 1;
    }
    Ok(())
}

/// Copies the attempt records of the carried jobs.
fn carry_attempts(
    store: &Store,
    attempts: &sled::Tree,
    carried: &BTreeSet<Uuid>,
    report: &mut Carried,
) -> Result<(), StoreError> {
    let t = &store.inner.trees;
    for item in attempts.iter() {
        let (key, value) = item?;
        let Some(job) = key.get(..16).and_then(|k| Uuid::from_slice(k).ok()) else {
            continue;
        };
        if carried.contains(&job) {
            let a: AttemptRecord = json("attempt", &value)?;
            t.attempts.insert(key, encode(&a))?;
            report.attempts += 1;
        }
    }
    Ok(())
}

/// Makes the migration durable (sled's mark, sync, the checkpoint at the journal's end)
/// and logs what was carried.
fn finish(store: &Store, report: &Carried) -> Result<(), StoreError> {
    let i = &store.inner;
    let t = &i.trees;
    {
        let w = i.writer.lock().unwrap_or_else(|p| p.into_inner());
        // Nothing migrated is only in memory: replay can start after the copies.
        let end = w.journal.end();
        t.meta.insert(checkpoint::SLED_MARK, encode(&end))?;
        store.sync_sled()?;
        checkpoint::write(&i.journal_dir, end)?;
    }
    store.sync_sled()?;
    tracing::warn!(
        jobs = report.jobs,
        dead_letters = report.dead,
        events = report.events,
        attempts = report.attempts,
        events_missing = report.missing_events,
        settled_history_not_carried = report.settled_dropped,
        dedupe_identities_not_carried = report.identities_dropped,
        "migrated the store to the journal format"
    );
    if report.missing_events > 0 {
        tracing::error!(events = report.missing_events, "some queued jobs or dead letters had no event record in the old store; they will be dead-lettered as missing their body");
    }
    Ok(())
}
