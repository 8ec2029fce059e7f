//! Accepting a batch: de-duplication, one journal append, and placing each new job in the
//! fast lane (or, where its destination's share of the lane is full, leaving it in the journal).

use uuid::Uuid;

use super::entry::{self, EventHeader, JobSeed};
use super::journal::Position;
use super::lane::LaneJob;
use super::overflow::Overflow;
use super::record::now_ms;
use super::segments::{dedupe_slot, IndexEntry};
use super::stats::Slot;
use super::{Committed, NewEvent, Store, StoreError, Writer};

/// Milliseconds since the Unix epoch encoded in a UUID v7 (0 for other versions).
pub(super) fn uuid_ms(id: &Uuid) -> u64 {
    id.get_timestamp().map_or(0, |ts| {
        let (secs, nanos) = ts.to_unix();
        secs.saturating_mul(1000)
            .saturating_add(u64::from(nanos / 1_000_000))
    })
}

fn header_of(ev: &NewEvent) -> EventHeader {
    EventHeader {
        id: ev.event.id,
        kind: ev.event.kind,
        received_at_ms: ev.event.received_at_ms,
        routes: ev.event.routes.clone(),
        jobs: ev
            .jobs
            .iter()
            .map(|j| JobSeed {
                id: j.id,
                destination: j.destination.clone(),
                routes: j.routes.clone(),
            })
            .collect(),
        dedupe: ev.dedupe.as_ref().map(|d| d.digest),
    }
}

impl Store {
    /// The event accepted under `slot` within `window_ms` of `now`, if any.
    fn seen(&self, slot: u128, window_ms: u64, now: u64) -> Option<Uuid> {
        let map = self.inner.dedupe.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&slot)
            .copied()
            .filter(|first| now < uuid_ms(first).saturating_add(window_ms))
    }

    /// Writes a batch of events durably (one journal append and one `fdatasync`, together
    /// with the delivered records waiting since the last one) and queues their jobs. An
    /// event already accepted within its de-duplication window is not written and comes
    /// back as [`Committed::Duplicate`]. On failure nothing of the batch is queued.
    pub fn commit_events(&self, batch: &[NewEvent]) -> Result<Vec<Committed>, StoreError> {
        self.check_open()?;
        let now = now_ms();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut fresh: Vec<&NewEvent> = Vec::with_capacity(batch.len());
        let mut batch_slots = std::collections::HashMap::new();
        for ev in batch {
            if let Some(key) = &ev.dedupe {
                let slot = dedupe_slot(&key.digest);
                let first = batch_slots
                    .get(&slot)
                    .copied()
                    .or_else(|| self.seen(slot, key.window_ms, now));
                if let Some(event_id) = first {
                    outcomes.push(Committed::Duplicate { event_id });
                    continue;
                }
                batch_slots.insert(slot, ev.event.id);
            }
            outcomes.push(Committed::New);
            fresh.push(ev);
        }
        let settles =
            std::mem::take(&mut *self.inner.settles.lock().unwrap_or_else(|p| p.into_inner()));
        if fresh.is_empty() && settles.records.is_empty() {
            return Ok(outcomes);
        }
        let mut records = settles.records;
        let first_event = records.len();
        records.extend(
            fresh
                .iter()
                .map(|ev| entry::event(&header_of(ev), &ev.body)),
        );
        let i = &self.inner;
        let mut w = i.writer.lock().unwrap_or_else(|p| p.into_inner());
        let positions = w
            .append(&i.journal_dir, i.segment_bytes, &records)
            .map_err(|e| self.observe(e.into()))?;
        // Written to a file that was deleted or replaced meanwhile, it is not durable: the
        // batch is refused (503) and the store fails (see `presence`).
        let (active, path) = w.journal.active_file();
        super::presence::check_file(active, &path).map_err(|e| self.observe(e.into()))?;
        // Durable from here: the jobs are placed while the writer is held, so that the
        // checkpoint (computed under the same lock) never passes a job not yet placed.
        self.place(&fresh, &positions[first_event..], &mut w);
        drop(w);
        for at in settles.releases {
            i.lane.release(at);
        }
        if !settles.jobs.is_empty() {
            let mut unsynced = i.unsynced.lock().unwrap_or_else(|p| p.into_inner());
            for job in &settles.jobs {
                unsynced.remove(job);
            }
        }
        if !batch_slots.is_empty() {
            let mut map = i.dedupe.lock().unwrap_or_else(|p| p.into_inner());
            map.extend(batch_slots);
        }
        Ok(outcomes)
    }

    /// Puts the jobs of durable events in the lane; where a destination's share of it is
    /// full, that destination's jobs wait in the journal (see [`super::overflow`]) until
    /// the lane has caught up with them. Called with the writer held (`w`).
    fn place(&self, events: &[&NewEvent], positions: &[Position], w: &mut Writer) {
        let i = &self.inner;
        for (ev, &at) in events.iter().zip(positions) {
            w.index.push(IndexEntry {
                id: ev.event.id,
                offset: at.offset,
                dedupe: ev.dedupe.as_ref().map(|d| dedupe_slot(&d.digest)),
            });
            for job in &ev.jobs {
                i.stats.add(&job.destination, Slot::Queued(job.state()));
                let room = match w.overflow.get_mut(&job.destination) {
                    Some(o) => {
                        o.jobs += 1;
                        continue;
                    }
                    None => i.lane.room(&job.destination, ev.body.len()),
                };
                let Some(with_body) = room else {
                    let mut o = Overflow::new(at, ev.event.received_at_ms);
                    o.jobs = 1;
                    w.overflow.insert(job.destination.clone(), o);
                    self.note_overflow(w);
                    continue;
                };
                let mut job = job.clone();
                job.event_at = Some(at);
                i.lane.push(LaneJob {
                    job,
                    body: with_body.then(|| ev.body.clone()),
                    at,
                });
            }
        }
    }

    /// Appends the delivered records waiting for a batch, when no ingress batch came to
    /// carry them (an idle daemon still settles its deliveries durably).
    pub fn sync_settles(&self) -> Result<(), StoreError> {
        let empty = self
            .inner
            .settles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .records
            .is_empty();
        if empty {
            return Ok(());
        }
        self.commit_events(&[]).map(|_| ())
    }
}
