//! The journal as the fast lane's overflow.
//!
//! When a destination's share of the lane is full, the jobs of newly accepted events for it
//! are not written anywhere else: their event record in the journal already says what is
//! needed to re-create them (job id, destination, routes). The store remembers only where
//! the first such event is ([`Overflow::from`]); from then on every new job of that
//! destination waits in the journal too, so that its jobs keep their order.
//! [`Store::refill_lane`] reads them back into the lane as room appears, and once it
//! reaches the journal's end the lane takes that destination's new jobs directly again.
//!
//! So a burst larger than the lane costs no write beyond the journal's (sled stays off the
//! happy path however far ingest runs ahead of delivery), the backlog costs memory only for
//! the lane's window of it, and one slow destination holds up no other (each has its own
//! position). The checkpoint never passes an [`Overflow::from`], so a restart replays these
//! events and re-creates their jobs as it does for the lane's.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use super::entry::{self, Entry};
use super::journal::{frame_len, Position};
use super::lane::LaneJob;
use super::record::JobState;
use super::{Store, StoreError, Writer};

/// Jobs one refill moves into the lane at most: a refill runs on the thread that leases,
/// so it stays short (reads of recently written records, from the page cache).
const REFILL_CHUNK: usize = 4096;
/// Jobs the lane holds at most of a destination whose jobs went back to the journal.
const TAKEN_BACK_WINDOW: usize = 256;
/// Bytes a refill reads from the journal at once.
const READ_RUN_BYTES: usize = 1 << 20;

/// The length of an event's body as stored (its byte budget in the lane).
fn header_body_len(body: &entry::Body<'_>) -> usize {
    match body {
        entry::Body::Plain(b) => b.len(),
        entry::Body::Zstd { len, .. } => *len,
    }
}

/// A refill's starting point (see [`Store::refill_lane`]).
struct Refill {
    from: Position,
    end: Position,
    skip: HashSet<Uuid>,
    recheck: Option<Recheck>,
    limit: usize,
}

/// What [`Store::walk_records`] does after one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Go on with the next record.
    Next,
    /// End the walk at this record.
    Stop,
    /// End the walk after this record.
    After,
}

/// One destination's jobs waiting in the journal because its share of the lane was full.
#[derive(Debug, Clone)]
pub(super) struct Overflow {
    /// The first event record with a job of this destination not in the lane yet; every
    /// later job of the destination is in the same case.
    pub from: Position,
    /// When the event at `from` was received (Unix ms): a bound on the age of the oldest
    /// job waiting here.
    pub from_ms: u64,
    /// Jobs waiting here.
    pub jobs: u64,
    /// Jobs of events after `from` that must not be re-created and are not counted in
    /// `jobs` (delivered, in sled, or in the lane already): found by a restart's replay, or
    /// by [`Store::push_back`] when lane jobs went back to the journal.
    pub skip: HashSet<Uuid>,
    /// Set for an overflow restored from its durable record at start-up: jobs before
    /// `Recheck::before` were counted when the record was written, and may have been
    /// delivered or moved to sled since (refilled after the record, before the stop).
    pub recheck: Option<Recheck>,
    /// Set once lane jobs of this destination went back to the journal for waiting too
    /// long ([`Store::push_back`]): from then on the lane takes only a small window of its
    /// jobs, so a slow destination does not cycle its backlog between lane and journal.
    pub taken_back: bool,
}

/// What a restored overflow's refill checks for the jobs its record counted (the replay
/// does not look them up): a job delivered (a Delivered record the replay found) or in
/// sled is dropped from the count instead of re-created.
#[derive(Debug, Clone)]
pub(super) struct Recheck {
    /// The journal's end when the record was written.
    pub before: Position,
    /// Jobs the replay found Delivered records for.
    pub delivered: Arc<HashSet<Uuid>>,
}

impl Overflow {
    /// Jobs start waiting in the journal from the event at `from`, received at `from_ms`.
    pub(crate) fn new(from: Position, from_ms: u64) -> Overflow {
        Overflow {
            from,
            from_ms,
            jobs: 0,
            skip: HashSet::new(),
            recheck: None,
            taken_back: false,
        }
    }
}

impl Store {
    /// Records whether any destination has jobs waiting in the journal; called with the
    /// writer held, after its overflow map changed.
    pub(super) fn note_overflow(&self, w: &Writer) {
        self.inner
            .any_overflow
            .store(!w.overflow.is_empty(), Ordering::Release);
    }

    /// Whether jobs of `destination` wait in the journal for room in the lane (without the
    /// writer's lock while no destination has any: the common case, asked at every lease).
    pub(super) fn overflowing(&self, destination: &str) -> bool {
        if !self.inner.any_overflow.load(Ordering::Acquire) {
            return false;
        }
        self.inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .overflow
            .contains_key(destination)
    }

    /// Refills the lane for every destination with jobs waiting in the journal, but the
    /// parked ones (their probe's lease refills what it needs).
    pub(super) fn refill_all(&self) -> Result<usize, StoreError> {
        let names = self.overflowed_destinations();
        let mut n = 0;
        for name in names.iter().filter(|d| !self.is_parked(d)) {
            n += self.refill_lane(name)?;
        }
        Ok(n)
    }

    /// Moves up to [`REFILL_CHUNK`] jobs of `destination` waiting in the journal into the
    /// lane, oldest first, while its share of the lane has room; returns how many.
    pub(super) fn refill_lane(&self, destination: &str) -> Result<usize, StoreError> {
        let i = &self.inner;
        // One refill at a time, so that two never re-create the same job.
        let _one = i.refilling.lock().unwrap_or_else(|p| p.into_inner());
        let Some(Refill {
            from,
            end,
            mut skip,
            recheck,
            limit,
        }) = self.refill_start(destination)
        else {
            return Ok(0);
        };
        let mut from_ms = None;
        let mut n = 0;
        // Jobs of a restored overflow found delivered or in sled on the way: counted, so
        // they leave the count.
        let mut settled = 0u64;
        let at = self.walk_records(from, end, "waiting for the fast lane", |pos, payload| {
            let Ok(Entry::Event(header, body)) = entry::decode(payload) else {
                return Step::Next;
            };
            let job = header
                .fresh_jobs()
                .find(|j| j.destination == destination && !skip.remove(&j.id));
            let Some(mut job) = job else {
                return Step::Next;
            };
            if let Some(r) = recheck.as_ref().filter(|r| pos < r.before) {
                if r.delivered.contains(&job.id) || self.in_sled(&job.id).unwrap_or(false) {
                    settled += 1;
                    return Step::Next;
                }
            }
            let room = i.lane.room(destination, header_body_len(&body));
            let Some(with_body) = room.filter(|_| n < limit) else {
                from_ms = Some(header.received_at_ms);
                return Step::Stop;
            };
            job.event_at = Some(pos);
            // The body is at hand: keep it while the lane's budget allows, so the lease
            // need not read the record again.
            let body = with_body
                .then(|| body.bytes().ok().map(|b| Bytes::from(b.into_owned())))
                .flatten();
            i.lane.push(LaneJob { job, body, at: pos });
            n += 1;
            if n == limit {
                // Stop after this one: the overflow goes on from the next record, its jobs
                // received no earlier than this one.
                from_ms = Some(header.received_at_ms);
                return Step::After;
            }
            Step::Next
        });
        self.refill_finish(destination, at, from_ms, skip, n as u64 + settled, settled);
        Ok(n)
    }

    /// Where a refill of `destination` starts, how many jobs it may take, and what it
    /// skips; `None` when nothing waits or the lane has its share already.
    fn refill_start(&self, destination: &str) -> Option<Refill> {
        let i = &self.inner;
        let parked = self.is_parked(destination);
        let waiting = i.lane.waiting_of(destination);
        let mut w = i.writer.lock().unwrap_or_else(|p| p.into_inner());
        let end = w.journal.end();
        let o = w.overflow.get_mut(destination)?;
        // A parked destination (held: see [`Store::park`]) gets one job at a time, for its
        // probe; one whose jobs went back to the journal for waiting too long gets a small
        // window. The rest of their queue stays in the journal.
        let limit = if parked {
            1
        } else if o.taken_back {
            TAKEN_BACK_WINDOW
        } else {
            REFILL_CHUNK + waiting
        }
        .saturating_sub(waiting);
        (limit > 0).then(|| Refill {
            from: o.from,
            end,
            skip: std::mem::take(&mut o.skip),
            recheck: o.recheck.clone(),
            limit,
        })
    }

    /// Moves `destination`'s overflow on to `at` after a refill took `gone` jobs out of it
    /// (`settled` of them found delivered or in sled), with the skip set left; removes it
    /// once it reached the journal's end.
    fn refill_finish(
        &self,
        destination: &str,
        at: Position,
        from_ms: Option<u64>,
        skip: HashSet<Uuid>,
        gone: u64,
        settled: u64,
    ) {
        let i = &self.inner;
        let mut w = i.writer.lock().unwrap_or_else(|p| p.into_inner());
        let caught_up = at >= w.journal.end();
        if let Some(o) = w.overflow.get_mut(destination) {
            o.jobs = o.jobs.saturating_sub(gone);
            o.from = at;
            if let Some(ms) = from_ms {
                o.from_ms = ms;
            }
            o.skip = skip;
            if o.recheck.as_ref().is_some_and(|r| at >= r.before) {
                o.recheck = None;
            }
            for _ in 0..settled {
                i.stats
                    .remove(destination, super::stats::Slot::Queued(JobState::Pending));
            }
            if caught_up {
                w.overflow.remove(destination);
                self.note_overflow(&w);
            }
        }
    }

    /// Reads the records from `from` up to `until` in runs (one read for many records,
    /// from the page cache when they are recent), handing each to `each` with its position,
    /// until `each` says [`Step::Stop`] (the walk ends at that record) or [`Step::After`]
    /// (it ends after it). A damaged stretch is logged (what the records are waiting for:
    /// `what`) and the walk goes on with the next segment: what follows the damage in this
    /// segment cannot be found by its length. Returns where the walk ended.
    pub(super) fn walk_records(
        &self,
        from: Position,
        until: Position,
        what: &str,
        mut each: impl FnMut(Position, &[u8]) -> Step,
    ) -> Position {
        let journal = &self.inner.journal;
        let mut at = from;
        while at < until {
            let len = journal.segment_len(at.segment).unwrap_or(0);
            if at.offset >= len {
                match journal.segment_after(at.segment) {
                    Some(next) => {
                        at = Position::start_of(next);
                        continue;
                    }
                    None => break,
                }
            }
            let stop = if at.segment == until.segment {
                until.offset.min(len)
            } else {
                len
            };
            let (records, damaged) = journal.read_run(at, stop, READ_RUN_BYTES);
            if records.is_empty() && damaged.is_ok() {
                break;
            }
            for (pos, payload) in records {
                let next = Position {
                    segment: pos.segment,
                    offset: pos.offset + frame_len(payload.len()),
                };
                match each(pos, &payload) {
                    Step::Next => at = next,
                    Step::Stop => return pos,
                    Step::After => return next,
                }
            }
            if let Err(e) = damaged {
                tracing::error!(segment = at.segment, offset = at.offset, error = %e, "journal: a record {what} cannot be read; going on with the next segment");
                match journal.segment_after(at.segment) {
                    Some(next) => at = Position::start_of(next),
                    None => break,
                }
            }
        }
        at
    }

    /// Destinations with jobs waiting in the journal for the lane.
    pub(super) fn overflowed_destinations(&self) -> Vec<String> {
        let w = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.overflow.keys().cloned().collect()
    }

    /// Whether job `job_id` of `destination`, of the event at `at`, waits in the journal for
    /// the lane (for one found nowhere else).
    pub(super) fn waits_in_journal(&self, destination: &str, job_id: &Uuid, at: Position) -> bool {
        let w = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.overflow
            .get(destination)
            .is_some_and(|o| at >= o.from && !o.skip.contains(job_id))
    }

    /// Jobs waiting in the journal per destination: a clean stop saves the queue counts
    /// without them, since the next start's replay counts them again.
    pub(super) fn overflowed_counts(&self) -> HashMap<String, u64> {
        let w = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.overflow
            .iter()
            .map(|(d, o)| (d.clone(), o.jobs))
            .collect()
    }

    /// Jobs of `destination` waiting in the journal for the lane, and a bound on when the
    /// oldest of them was received.
    pub(super) fn overflowed(&self, destination: &str) -> Option<(u64, u64)> {
        let w = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.overflow.get(destination).map(|o| (o.jobs, o.from_ms))
    }
}
