//! The store's tests of jobs waiting in the journal for the lane: order, a crash and a
//! clean stop, a stray due entry, a removed destination.

use uuid::Uuid;

use super::operator::JobStatus;
use super::tests::{attempt, lease_one, new_event, open_when_free, options, retry_of};
use super::*;

/// Leases every due job of `destination` (settling each as delivered), in order.
pub(crate) fn deliver_all(store: &Store, destination: &str) -> Vec<Lease> {
    let mut out = Vec::new();
    loop {
        let leases = store
            .lease(destination, now_ms(), 7, |_| false)
            .unwrap()
            .leases;
        if leases.is_empty() {
            return out;
        }
        for lease in leases {
            store
                .settle(
                    &lease,
                    Transition::Delivered {
                        attempt: attempt(1, 200),
                    },
                )
                .unwrap();
            out.push(lease);
        }
    }
}

#[test]
fn beyond_a_destinations_share_of_the_lane_its_jobs_wait_in_the_journal_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let small = StoreOptions {
        lane_capacity: 5,
        ..options()
    };
    let store = open_when_free(dir.path(), small.clone());
    // 30 events for crm, every third also for slack.
    let events: Vec<NewEvent> = (0..30)
        .map(|n| {
            new_event(if n % 3 == 0 {
                &["crm", "slack"]
            } else {
                &["crm"]
            })
        })
        .collect();
    for chunk in events.chunks(4) {
        store.commit_events(chunk).unwrap();
    }
    assert_eq!(store.pending_count(), 40);
    assert_eq!(store.lane_len(), 10, "five of each destination in memory");
    assert_eq!(store.inner.trees.jobs.len(), 0, "nothing went to sled");
    assert_eq!(store.overflowed("crm").map(|(n, _)| n), Some(25));
    // A job waiting in the journal is queued for `event show`.
    let (_, _, story) = store.event_story(&events[29].event.id).unwrap().unwrap();
    assert!(
        matches!(story[0].1, Some(JobStatus::Queued(_))),
        "{story:?}"
    );

    // slack is not held up by crm's backlog, and crm's jobs come in the order accepted,
    // each with its body.
    let slack = deliver_all(&store, "slack");
    assert_eq!(slack.len(), 10);
    let crm = deliver_all(&store, "crm");
    let want: Vec<Uuid> = events.iter().map(|e| e.jobs[0].id).collect();
    assert_eq!(crm.iter().map(|l| l.job.id).collect::<Vec<_>>(), want);
    for (lease, ev) in crm.iter().zip(&events) {
        assert_eq!(lease.body.as_ref(), Some(&ev.body));
    }
    assert_eq!(store.pending_count(), 0);
    assert!(store.overflowed("crm").is_none(), "caught up");
    assert_eq!(store.inner.trees.jobs.len(), 0, "still nothing in sled");

    // New events go to the lane directly again.
    store.commit_events(&[new_event(&["crm"])]).unwrap();
    assert_eq!(store.lane_len(), 1);
}

#[test]
fn jobs_waiting_in_the_journal_survive_a_crash_and_a_clean_stop_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let small = StoreOptions {
        lane_capacity: 3,
        ..options()
    };
    let store = open_when_free(dir.path(), small.clone());
    let events: Vec<NewEvent> = (0..12).map(|_| new_event(&["crm", "slack"])).collect();
    store.commit_events(&events).unwrap();
    // Two crm jobs delivered, one slack job retrying in sled.
    for lease in store.lease("crm", now_ms(), 2, |_| false).unwrap().leases {
        store
            .settle(
                &lease,
                Transition::Delivered {
                    attempt: attempt(1, 200),
                },
            )
            .unwrap();
    }
    let slack = lease_one(&store, "slack");
    store.settle(&slack, retry_of(&slack, 0)).unwrap();
    store.sync_settles().unwrap();
    store.flush().unwrap();
    assert_eq!(store.pending_count(), 22);

    // A crash: no close. Replay re-creates the rest, each once.
    drop(store);
    let store = open_when_free(dir.path(), small.clone());
    assert_eq!(store.pending_count(), 22, "after a crash");
    // The lane takes what was in it at the crash (a share at most); the rest waits in
    // the journal, counted by the overflow records the checkpoint carried.
    let waiting: u64 = ["crm", "slack"]
        .iter()
        .filter_map(|d| store.overflowed(d).map(|(n, _)| n))
        .sum();
    assert!(store.lane_len() <= 6, "{}", store.lane_len());
    assert_eq!(store.lane_len() as u64 + waiting, 21, "and one in sled");
    // A clean stop with jobs still waiting in the journal: counted once after it.
    store.close().unwrap();
    drop(store);
    let store = open_when_free(dir.path(), small);
    assert_eq!(store.pending_count(), 22, "after a clean stop");
    let crm = deliver_all(&store, "crm");
    let slack = deliver_all(&store, "slack");
    assert_eq!((crm.len(), slack.len()), (10, 12));
    let mut ids: Vec<Uuid> = crm.iter().chain(&slack).map(|l| l.job.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 22, "no job re-created twice");
    assert_eq!(store.pending_count(), 0);
}

#[test]
fn a_stray_due_entry_is_dropped_and_uncounted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_when_free(dir.path(), options());
    let ev = new_event(&["crm"]);
    store.commit_events(std::slice::from_ref(&ev)).unwrap();
    let lease = lease_one(&store, "crm");
    store.settle(&lease, retry_of(&lease, 0)).unwrap();
    assert_eq!(store.pending_count(), 1);
    // Its job record lost (a damaged store): only the due entry is left.
    store
        .inner
        .trees
        .jobs
        .remove(ev.jobs[0].id.as_bytes())
        .unwrap();
    let scan = store.lease("crm", now_ms(), 1, |_| false).unwrap();
    assert!(scan.leases.is_empty());
    assert_eq!(store.inner.trees.due.len(), 0, "the stray entry is gone");
    assert_eq!(store.pending_count(), 0, "and no longer counted");
}

#[test]
fn a_removed_destinations_jobs_waiting_in_the_journal_are_leased_for_retiring_too() {
    let dir = tempfile::tempdir().unwrap();
    let small = StoreOptions {
        lane_capacity: 2,
        ..options()
    };
    let store = open_when_free(dir.path(), small);
    let events: Vec<NewEvent> = (0..5).map(|_| new_event(&["gone"])).collect();
    store.commit_events(&events).unwrap();
    assert_eq!(store.lane_len(), 2);
    let mut seen = Vec::new();
    loop {
        let leases = store.lease_all("gone", 1000).unwrap();
        if leases.is_empty() {
            break;
        }
        for lease in leases {
            let letter = DeadLetter {
                job: lease.job.clone(),
                reason: "destination removed".into(),
                response_snippet: None,
                dead_at_ms: now_ms(),
            };
            store
                .settle(
                    &lease,
                    Transition::Dead {
                        letter,
                        attempt: None,
                    },
                )
                .unwrap();
            seen.push(lease.job.id);
        }
    }
    assert_eq!(
        seen.len(),
        5,
        "every job, those that waited in the journal too"
    );
    assert_eq!(store.pending_count(), 0);
    assert_eq!(store.dead_count(), 5);
}
