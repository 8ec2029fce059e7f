//! The fast lane: freshly accepted jobs waiting in memory, delivered from there.
//!
//! A job is born here when its event is durable in the journal, and on a healthy
//! destination it never leaves memory: its delivery is recorded as a small journal record.
//! A job that fails an attempt moves to sled (the retry queue); one that waits longer than
//! the lane allows, or whose destination is held, goes back to the journal
//! ([`super::push_back`]). The lane holds at most `capacity` jobs per destination; beyond that a
//! destination's new jobs wait in the journal ([`super::overflow`]). So the lane is bounded,
//! holds only young jobs, and one slow destination cannot fill it for the others.
//!
//! The lane also tells the checkpoint how far the journal is settled: [`Lane::oldest_live`]
//! is the position of the oldest event that still has a job only here (waiting, in flight,
//! or delivered with its record not yet synced). Everything before it is delivered
//! durably or in sled, so start-up replays the journal from there.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;

use super::journal::Position;
use super::record::JobRecord;

/// A job in the lane, with its event's body (while the lane's byte budget allows; else the
/// body is read from the journal when the job is leased) and where that event is.
#[derive(Debug, Clone)]
pub struct LaneJob {
    /// The job.
    pub job: JobRecord,
    /// Its event's body (shared between the event's jobs), if the lane holds it.
    pub body: Option<Bytes>,
    /// Its event's journal record.
    pub at: Position,
}

#[derive(Debug)]
struct Waiting {
    job: LaneJob,
    since: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// Jobs waiting for a worker, per destination, oldest first.
    waiting: HashMap<String, VecDeque<Waiting>>,
    /// Jobs a worker holds: job id -> the job (for `event show` and the oldest age).
    leased: HashMap<Uuid, LaneJob>,
    /// Jobs not yet settled durably, per event position.
    live: BTreeMap<Position, u32>,
    /// Waiting plus leased.
    len: usize,
    /// Waiting (not leased), per destination: what the lane's bound is about. Leased jobs
    /// are bounded by each destination's concurrency, and a lease must never wait for its
    /// own destination's earlier leases to end.
    waiting_of: HashMap<String, usize>,
    /// Body bytes the lane holds (a body shared by an event's jobs counts once per job).
    bytes: usize,
}

impl State {
    fn count(&mut self, destination: &str, by: isize) {
        match self.waiting_of.get_mut(destination) {
            Some(n) => {
                *n = n.saturating_add_signed(by);
                if *n == 0 {
                    self.waiting_of.remove(destination);
                }
            }
            None if by > 0 => {
                self.waiting_of
                    .insert(destination.to_string(), by.unsigned_abs());
            }
            None => {}
        }
    }
}

/// The fast lane; shared by the committer, the workers and the checkpoint.
#[derive(Debug)]
pub struct Lane {
    state: Mutex<State>,
    capacity: usize,
    capacity_bytes: usize,
}

impl Lane {
    /// A lane that holds at most `capacity` waiting jobs per destination (and those in
    /// flight) and `capacity_bytes` of their bodies in all.
    pub fn new(capacity: usize, capacity_bytes: usize) -> Lane {
        Lane {
            state: Mutex::new(State::default()),
            capacity,
            capacity_bytes,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether one more job of `destination` fits (it has fewer than `capacity` waiting):
    /// `None` if not, `Some(true)` with its
    /// body of `body_len` bytes, `Some(false)` only without it (the byte budget is spent;
    /// the body stays in the journal and is read when the job is leased).
    pub fn room(&self, destination: &str, body_len: usize) -> Option<bool> {
        self.with(|s| {
            (s.waiting_of.get(destination).copied().unwrap_or(0) < self.capacity)
                .then(|| s.bytes.saturating_add(body_len) <= self.capacity_bytes)
        })
    }

    /// Jobs in the lane (waiting or leased).
    pub fn len(&self) -> usize {
        self.with(|s| s.len)
    }

    /// Whether the lane holds no job.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a job; it counts as live until [`Lane::release`].
    pub fn push(&self, job: LaneJob) {
        self.with(|s| {
            *s.live.entry(job.at).or_default() += 1;
            s.len += 1;
            s.count(&job.job.destination, 1);
            s.bytes += job.body.as_ref().map_or(0, Bytes::len);
            s.waiting
                .entry(job.job.destination.clone())
                .or_default()
                .push_back(Waiting {
                    job,
                    since: Instant::now(),
                });
        });
    }

    /// Leases up to `limit` waiting jobs of `destination`, oldest first.
    pub fn take(&self, destination: &str, limit: usize) -> Vec<LaneJob> {
        self.with(|s| {
            let Some(queue) = s.waiting.get_mut(destination) else {
                return Vec::new();
            };
            let n = limit.min(queue.len());
            let taken: Vec<LaneJob> = queue.drain(..n).map(|w| w.job).collect();
            if queue.is_empty() {
                s.waiting.remove(destination);
            }
            for job in &taken {
                s.leased.insert(job.job.id, job.clone());
            }
            s.count(destination, -(taken.len() as isize));
            taken
        })
    }

    /// Ends the lease of `job_id`: its outcome is being recorded. The job stays live until
    /// [`Lane::release`] is called for its position.
    pub fn finish(&self, job_id: &Uuid) -> bool {
        self.with(|s| match s.leased.remove(job_id) {
            Some(job) => {
                s.len -= 1;
                s.bytes -= job.body.as_ref().map_or(0, Bytes::len);
                true
            }
            None => false,
        })
    }

    /// Puts the leased jobs `job_ids` back at the front of their queue, in order (a worker
    /// could not start them).
    pub fn put_back(&self, job_ids: &[Uuid]) {
        let now = Instant::now();
        self.with(|s| {
            for id in job_ids.iter().rev() {
                // The lane's own copy, as it was counted when it came in.
                if let Some(job) = s.leased.remove(id) {
                    s.count(&job.job.destination, 1);
                    s.waiting
                        .entry(job.job.destination.clone())
                        .or_default()
                        .push_front(Waiting { job, since: now });
                }
            }
        });
    }

    /// One job of the event at `at` is settled durably (or safe in sled).
    pub fn release(&self, at: Position) {
        self.with(|s| {
            if let Some(n) = s.live.get_mut(&at) {
                *n -= 1;
                if *n == 0 {
                    s.live.remove(&at);
                }
            }
        });
    }

    /// Jobs of `destination` waiting for a worker (not leased).
    pub fn waiting_of(&self, destination: &str) -> usize {
        self.with(|s| s.waiting_of.get(destination).copied().unwrap_or(0))
    }

    /// The oldest event position that still has a job only in memory.
    pub fn oldest_live(&self) -> Option<Position> {
        self.with(|s| s.live.keys().next().copied())
    }

    /// Takes out every waiting job that has waited at least `longer_than` (or all waiting
    /// jobs of `destination` with `Duration::ZERO`), to put back into the journal. They stay live
    /// until released.
    pub fn take_waiting(&self, destination: Option<&str>, longer_than: Duration) -> Vec<LaneJob> {
        let now = Instant::now();
        self.with(|s| {
            let mut out = Vec::new();
            s.waiting.retain(|dest, queue| {
                if destination.is_some_and(|d| d != dest) {
                    return true;
                }
                while queue
                    .front()
                    .is_some_and(|w| now.duration_since(w.since) >= longer_than)
                {
                    if let Some(w) = queue.pop_front() {
                        out.push(w.job);
                    }
                }
                !queue.is_empty()
            });
            s.len -= out.len();
            for job in &out {
                s.count(&job.job.destination, -1);
            }
            s.bytes -= out
                .iter()
                .map(|j| j.body.as_ref().map_or(0, Bytes::len))
                .sum::<usize>();
            out
        })
    }

    /// Destinations with jobs in the lane.
    pub fn destinations(&self) -> Vec<String> {
        self.with(|s| {
            let mut names: Vec<String> = s.waiting.keys().cloned().collect();
            names.extend(s.leased.values().map(|j| j.job.destination.clone()));
            names.sort();
            names.dedup();
            names
        })
    }

    /// The job `job_id`, if it is in the lane.
    pub fn job(&self, job_id: &Uuid) -> Option<JobRecord> {
        self.with(|s| {
            s.leased.get(job_id).map(|j| j.job.clone()).or_else(|| {
                s.waiting
                    .values()
                    .flatten()
                    .find(|w| w.job.job.id == *job_id)
                    .map(|w| w.job.job.clone())
            })
        })
    }

    /// Up to `limit` jobs of `destination` in the lane: waiting ones, oldest first, then
    /// those in flight.
    pub fn jobs_of(&self, destination: &str, limit: usize) -> Vec<JobRecord> {
        self.with(|s| {
            let waiting = s
                .waiting
                .get(destination)
                .into_iter()
                .flatten()
                .map(|w| w.job.job.clone());
            let leased = s
                .leased
                .values()
                .filter(|j| j.job.destination == destination)
                .map(|j| j.job.clone());
            waiting.chain(leased).take(limit).collect()
        })
    }

    /// Creation time (Unix ms) of the oldest job of `destination` in the lane.
    pub fn oldest_created_ms(&self, destination: &str) -> Option<u64> {
        self.with(|s| {
            let waiting = s
                .waiting
                .get(destination)
                .and_then(|q| q.front())
                .map(|w| w.job.job.created_at_ms);
            let leased = s
                .leased
                .values()
                .filter(|j| j.job.destination == destination)
                .map(|j| j.job.created_at_ms)
                .min();
            waiting.into_iter().chain(leased).min()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn job(dest: &str, at: u64) -> LaneJob {
        LaneJob {
            job: JobRecord::new(Uuid::now_v7(), EventKind::View, dest.into(), vec![], 1),
            body: Some(Bytes::from_static(b"{}")),
            at: Position {
                segment: 1,
                offset: at,
            },
        }
    }

    #[test]
    fn the_oldest_live_position_holds_until_every_job_of_it_is_released() {
        let lane = Lane::new(2, 1 << 20);
        lane.push(job("a", 16));
        lane.push(job("b", 16));
        lane.push(job("a", 90));
        assert_eq!(lane.room("a", 2), None, "a has its two");
        assert_eq!(
            lane.room("b", 2),
            Some(true),
            "a full share of a leaves b room"
        );
        assert_eq!(
            Lane::new(10, 5).room("a", 6),
            Some(false),
            "over the byte budget, jobs come in without their body"
        );
        assert_eq!(Lane::new(10, 6).room("a", 6), Some(true));
        let taken = lane.take("a", 10);
        assert_eq!(taken.len(), 2);
        assert_eq!(lane.len(), 3, "leased jobs are in the lane");
        assert_eq!(
            lane.room("a", 2),
            Some(true),
            "a's leased jobs leave room for the next ones"
        );
        lane.put_back(&[taken[1].job.id]);
        assert_eq!(lane.room("a", 2), Some(true));
        assert_eq!(lane.take("a", 1)[0].job.id, taken[1].job.id);
        assert!(lane.finish(&taken[0].job.id));
        assert!(!lane.finish(&taken[0].job.id), "a lease ends once");
        assert_eq!(lane.len(), 2);
        lane.release(taken[0].at);
        // b's job of the same event is still waiting.
        assert_eq!(lane.oldest_live().map(|p| p.offset), Some(16));
        let b = lane.take_waiting(Some("b"), Duration::ZERO);
        assert_eq!(b.len(), 1);
        lane.release(b[0].at);
        assert_eq!(lane.oldest_live().map(|p| p.offset), Some(90));
        lane.finish(&taken[1].job.id);
        lane.release(taken[1].at);
        assert_eq!(lane.oldest_live(), None);
        assert_eq!(lane.len(), 0);
        assert!(lane.destinations().is_empty());
    }
}
