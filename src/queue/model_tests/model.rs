//! The model the store is checked against: where each accepted job is, and which states a
//! crash may leave it in.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::super::operator::JobStatus;
use super::super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Queued,
    Dead,
    /// Delivered or dropped (and maybe purged since).
    Done,
}

/// Which durable point makes a job's latest change survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// A Delivered record waiting for the next journal append.
    Journal,
    /// A sled write waiting for the next sled sync.
    Sled,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum How {
    Delivered,
    RetryPast,
    RetryFuture,
    Dead,
}

#[derive(Debug)]
pub(super) struct Job {
    pub(super) dest: &'static str,
    pub(super) event: Uuid,
    pub(super) body: Bytes,
    pub(super) kind: Kind,
    /// When it is due, while queued.
    pub(super) due_ms: u64,
    pub(super) held: bool,
    /// The states a crash may leave it in (always includes `kind`).
    pub(super) after_crash: Vec<Kind>,
    /// What its changes since the last durable point wait for.
    pub(super) pending: Option<Class>,
}

#[derive(Default)]
pub(super) struct Model {
    pub(super) jobs: HashMap<Uuid, Job>,
    /// Job ids in acceptance order, for picking.
    pub(super) order: Vec<Uuid>,
    /// De-duplication key -> the event first accepted under it.
    pub(super) firsts: HashMap<u8, Uuid>,
    /// Keys whose first event's segment may have been deleted: a restart may forget them.
    pub(super) at_risk: HashSet<u8>,
    /// Keys a restart may have forgotten: the next accept may be new or a duplicate.
    pub(super) uncertain: HashSet<u8>,
    pub(super) held: Vec<Lease>,
}

impl Model {
    pub(super) fn set(&mut self, id: &Uuid, kind: Kind, due_ms: u64, class: Class) {
        let job = self.jobs.get_mut(id).expect("a known job");
        assert!(
            job.pending.is_none() || job.pending == Some(class),
            "a job with a {:?} change pending changes through {class:?}",
            job.pending
        );
        job.kind = kind;
        job.due_ms = due_ms;
        if !job.after_crash.contains(&kind) {
            job.after_crash.push(kind);
        }
        job.pending = Some(class);
    }

    pub(super) fn durable(&mut self, class: Class) {
        for job in self.jobs.values_mut() {
            if job.pending == Some(class) {
                job.pending = None;
                job.after_crash = vec![job.kind];
            }
        }
    }

    pub(super) fn count(&self, kind: Kind) -> usize {
        self.jobs.values().filter(|j| j.kind == kind).count()
    }

    pub(super) fn check_counts(&self, store: &Store, step: &str) {
        assert_eq!(
            (store.pending_count(), store.dead_count()),
            (self.count(Kind::Queued), self.count(Kind::Dead)),
            "queued and dead counts after {step}"
        );
    }
}

/// What the store says of a job, and its due time when queued: as `event show` tells it
/// (a job waiting in the journal for the fast lane is found through its event).
pub(super) fn observe(store: &Store, id: &Uuid, event: &Uuid) -> (Kind, u64) {
    let status = match store.event_story(event).expect("event_story") {
        Some((_, _, jobs)) => jobs
            .into_iter()
            .find(|(job, _, _)| job == id)
            .and_then(|(_, status, _)| status),
        // The event is gone (past retention): so is every record of the job.
        None => None,
    };
    match status {
        Some(JobStatus::Queued(job)) => (Kind::Queued, job.next_attempt_at_ms),
        Some(JobStatus::Dead(_)) => (Kind::Dead, 0),
        Some(JobStatus::Settled(_)) | None => (Kind::Done, 0),
    }
}

/// Every job's state in the store is one the model allows (after a crash: any state since
/// its last durable point), and the model takes what the store has.
pub(super) fn check_all(store: &Store, model: &mut Model, crashed: bool) {
    for id in &model.order {
        let event = model.jobs[id].event;
        let (kind, due_ms) = observe(store, id, &event);
        let job = model.jobs.get_mut(id).expect("a known job");
        if crashed {
            assert!(
                job.after_crash.contains(&kind),
                "after a crash job {id} ({}) is {kind:?}; the model allows {:?} (it was {:?})",
                job.dest,
                job.after_crash,
                job.kind
            );
            job.kind = kind;
            job.due_ms = due_ms;
            job.after_crash = vec![kind];
            job.pending = None;
            job.held = false;
        } else {
            assert_eq!(kind, job.kind, "job {id} ({})", job.dest);
        }
        if job.kind != Kind::Done {
            assert_eq!(
                store.load_body(&job.event).expect("load_body").as_ref(),
                Some(&job.body),
                "the body of the event of {:?} job {id}",
                job.kind
            );
        }
    }
}
