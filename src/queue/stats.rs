//! Queue depth per destination and state, kept in memory.
//!
//! sled's `Tree::len` walks the whole tree, so neither the back-pressure check on every
//! request nor a metrics scrape can afford to count. The store counts once at open and then
//! adjusts these numbers after each transaction that moved a job, using what the
//! transaction itself saw (a job is counted out only if its `due` entry was really there),
//! so a retried transaction or a race between two operators cannot skew them.
//!
//! The counters are signed and only ever incremented or decremented, so updates commute: a
//! worker may record an attempt (pending -1, retrying +1) before the committer thread has
//! counted the job in (pending +1), and the sums still come out right. Readers see negative
//! transients as zero.

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
    by_destination: Mutex<BTreeMap<String, [i64; 3]>>,
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
    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, [i64; 3]>) -> R) -> R {
        let mut map = self
            .by_destination
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        f(&mut map)
    }

    fn index(slot: Slot) -> usize {
        match slot {
            Slot::Queued(JobState::Pending) => 0,
            Slot::Queued(JobState::Retrying) => 1,
            Slot::Dead => 2,
        }
    }

    fn depth(counts: &[i64; 3]) -> Depth {
        let n = |i: usize| u64::try_from(counts[i]).unwrap_or(0);
        Depth {
            pending: n(0),
            retrying: n(1),
            dead: n(2),
        }
    }

    fn adjust(&self, destination: &str, slot: Slot, by: i64) {
        self.with(|m| m.entry(destination.to_string()).or_default()[Self::index(slot)] += by);
    }

    /// Counts one job of `destination` into `slot`.
    pub fn add(&self, destination: &str, slot: Slot) {
        self.adjust(destination, slot, 1);
    }

    /// Counts `n` jobs of `destination` into `slot`.
    pub fn add_many(&self, destination: &str, slot: Slot, n: u64) {
        self.adjust(destination, slot, i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts one job of `destination` out of `slot`.
    pub fn remove(&self, destination: &str, slot: Slot) {
        self.adjust(destination, slot, -1);
    }

    /// Moves one job of `destination` from one slot to another.
    pub fn moved(&self, destination: &str, from: Slot, to: Slot) {
        self.remove(destination, from);
        self.add(destination, to);
    }

    /// Queued jobs (pending and retrying) of every destination together.
    pub fn queued(&self) -> u64 {
        self.with(|m| {
            m.values()
                .map(Self::depth)
                .map(|d| d.pending + d.retrying)
                .sum()
        })
    }

    /// Dead letters of every destination together.
    pub fn dead(&self) -> u64 {
        self.with(|m| m.values().map(|c| Self::depth(c).dead).sum())
    }

    /// A copy of every destination's counters.
    pub fn snapshot(&self) -> BTreeMap<String, Depth> {
        self.with(|m| m.iter().map(|(k, c)| (k.clone(), Self::depth(c))).collect())
    }

    /// The raw counters, to be saved at a clean stop.
    pub(super) fn export(&self) -> Vec<(String, [i64; 3])> {
        self.with(|m| m.iter().map(|(k, c)| (k.clone(), *c)).collect())
    }

    /// Replaces every counter with saved ones.
    pub(super) fn import(&self, saved: Vec<(String, [i64; 3])>) {
        self.with(|m| *m = saved.into_iter().collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_commute_even_when_a_job_moves_before_it_is_counted_in() {
        let s = QueueStats::default();
        // The worker records a failed attempt before the committer counts the job in.
        s.moved(
            "crm",
            Slot::Queued(JobState::Pending),
            Slot::Queued(JobState::Retrying),
        );
        assert_eq!(s.queued(), 1);
        s.add("crm", Slot::Queued(JobState::Pending));
        let d = s.snapshot()["crm"];
        assert_eq!((d.pending, d.retrying, d.dead), (0, 1, 0));
        s.moved("crm", Slot::Queued(JobState::Retrying), Slot::Dead);
        assert_eq!((s.queued(), s.dead()), (0, 1));
    }
}
