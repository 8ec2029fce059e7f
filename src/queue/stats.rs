//! Queue depth per destination and state, kept in memory.
//!
//! sled's `Tree::len` walks the whole tree, so neither the back-pressure check on every
//! request nor a metrics scrape can afford to count. The store counts once at open and then
//! adjusts these numbers after each transaction that moved a job, using what the
//! transaction itself saw (a job is counted out only if its `due` entry was really there),
//! so a retried transaction or a race between two operators cannot skew them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::record::JobState;

/// Jobs of one destination, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Depth {
    /// Queued, not attempted yet (or retried by an operator and not attempted since).
    pub pending: u64,
    /// Queued after at least one failed attempt.
    pub retrying: u64,
    /// Dead letters waiting for an operator.
    pub dead: u64,
}

/// The counters of every destination; shared by all clones of the store.
#[derive(Debug, Default)]
pub struct QueueStats {
    by_destination: Mutex<BTreeMap<String, Depth>>,
}

/// One counted change of a job's place in the store.
#[derive(Debug, Clone, Copy)]
pub enum Slot {
    /// In the queue in this state.
    Queued(JobState),
    /// In the dead letters.
    Dead,
}

impl QueueStats {
    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, Depth>) -> R) -> R {
        let mut map = self
            .by_destination
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        f(&mut map)
    }

    fn field(depth: &mut Depth, slot: Slot) -> &mut u64 {
        match slot {
            Slot::Queued(JobState::Pending) => &mut depth.pending,
            Slot::Queued(JobState::Retrying) => &mut depth.retrying,
            Slot::Dead => &mut depth.dead,
        }
    }

    /// Counts one job of `destination` into `slot`.
    pub fn add(&self, destination: &str, slot: Slot) {
        self.with(|m| *Self::field(m.entry(destination.to_string()).or_default(), slot) += 1);
    }

    /// Counts one job of `destination` out of `slot`.
    pub fn remove(&self, destination: &str, slot: Slot) {
        self.with(|m| {
            if let Some(d) = m.get_mut(destination) {
                let f = Self::field(d, slot);
                *f = f.saturating_sub(1);
            }
        });
    }

    /// Moves one job of `destination` from one slot to another.
    pub fn moved(&self, destination: &str, from: Slot, to: Slot) {
        self.remove(destination, from);
        self.add(destination, to);
    }

    /// Queued jobs (pending and retrying) of every destination together.
    pub fn queued(&self) -> u64 {
        self.with(|m| m.values().map(|d| d.pending + d.retrying).sum())
    }

    /// Dead letters of every destination together.
    pub fn dead(&self) -> u64 {
        self.with(|m| m.values().map(|d| d.dead).sum())
    }

    /// A copy of every destination's counters.
    pub fn snapshot(&self) -> BTreeMap<String, Depth> {
        self.with(|m| m.clone())
    }
}
