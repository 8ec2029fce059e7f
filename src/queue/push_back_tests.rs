//! Jobs going back from the lane to the journal, and the overflow records that let the
//! checkpoint pass them: a held destination's queue costs neither memory nor sled, and
//! a crash or a clean stop re-creates each of its jobs exactly once.

use std::collections::HashSet;

use uuid::Uuid;

use super::tests::{attempt, new_event, open_when_free};
use super::*;

fn options() -> StoreOptions {
    StoreOptions {
        segment_bytes: 64 * 1024,
        ..StoreOptions::new(1 << 20)
    }
}

/// Leases and delivers every job of `destination` until none is left; returns their ids.
fn deliver_all(store: &Store, destination: &str) -> Vec<Uuid> {
    super::overflow_tests::deliver_all(store, destination)
        .into_iter()
        .map(|lease| lease.job.id)
        .collect()
}

fn ids_of(events: &[NewEvent], destination: &str) -> HashSet<Uuid> {
    events
        .iter()
        .flat_map(|e| e.jobs.iter())
        .filter(|j| j.destination == destination)
        .map(|j| j.id)
        .collect()
}

/// 20 events for crm and slack, crm parked and its jobs taken back by a housekeeping pass.
fn parked_crm(dir: &std::path::Path) -> (Store, Vec<NewEvent>) {
    let store = open_when_free(dir, options());
    let events: Vec<NewEvent> = (0..20).map(|_| new_event(&["crm", "slack"])).collect();
    store.commit_events(&events).unwrap();
    assert_eq!(store.lane_len(), 40);
    store.park("crm", true);
    store.maintain(now_ms()).unwrap();
    (store, events)
}

#[test]
fn a_parked_destinations_jobs_wait_in_the_journal_and_the_checkpoint_passes_them() {
    let dir = tempfile::tempdir().unwrap();
    let (store, events) = parked_crm(dir.path());
    assert_eq!(store.lane_len(), 20, "only slack's jobs stay in memory");
    assert_eq!(store.overflowed("crm").map(|(n, _)| n), Some(20));
    assert_eq!(store.pending_count(), 40, "still queued, counted once");
    assert_eq!(store.inner.trees.jobs.len(), 0, "nothing went to sled");
    // slack delivered: the checkpoint goes to the journal's end although crm's jobs wait
    // in the journal behind it.
    assert_eq!(deliver_all(&store, "slack").len(), 20);
    store.flush().unwrap();
    let end = store.inner.writer.lock().unwrap().journal.end();
    assert_eq!(checkpoint::read(&store.inner.journal_dir), Some(end));
    // A parked destination gets one job at a time (its probe).
    let probe = store.lease("crm", now_ms(), 7, |_| false).unwrap().leases;
    assert_eq!(probe.len(), 1);

    // A crash, the probe in flight: every crm job comes back from the overflow record, once.
    drop(probe);
    drop(store);
    let store = open_when_free(dir.path(), options());
    assert_eq!(store.pending_count(), 20, "after a crash");
    let got = deliver_all(&store, "crm");
    assert_eq!(got.len(), 20, "each job once: {got:?}");
    assert_eq!(
        got.iter().copied().collect::<HashSet<_>>(),
        ids_of(&events, "crm")
    );
    assert_eq!(store.pending_count(), 0);
    assert!(store.overflowed("crm").is_none(), "caught up");
}

#[test]
fn a_probe_delivered_after_the_last_checkpoint_is_not_sent_again_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (store, events) = parked_crm(dir.path());
    store.flush().unwrap();
    // After the checkpoint: one probe delivered (its record durable), one failed into sled.
    let delivered = store.lease("crm", now_ms(), 1, |_| false).unwrap().leases;
    store
        .settle(
            &delivered[0],
            Transition::Delivered {
                attempt: attempt(1, 200),
            },
        )
        .unwrap();
    store.sync_settles().unwrap();
    let failed = store.lease("crm", now_ms(), 1, |_| false).unwrap().leases;
    let mut job = failed[0].job.clone();
    job.attempts = 1;
    job.next_attempt_at_ms = now_ms() + 3_600_000;
    store
        .settle(
            &failed[0],
            Transition::Retry {
                job,
                attempt: attempt(1, 503),
            },
        )
        .unwrap();
    store.inner.db.flush().unwrap();
    assert_eq!(store.pending_count(), 39);
    drop((delivered, failed));
    drop(store);

    let store = open_when_free(dir.path(), options());
    assert_eq!(store.pending_count(), 39, "counted exactly after the crash");
    store.park("crm", false);
    let got = deliver_all(&store, "crm");
    let want: HashSet<Uuid> = ids_of(&events, "crm");
    assert_eq!(
        got.len(),
        18,
        "neither the delivered probe nor the one in sled: {got:?}"
    );
    let got: HashSet<Uuid> = got.into_iter().collect();
    assert!(got.is_subset(&want));
    assert_eq!(
        store.pending_count(),
        20 + 1,
        "slack's twenty and the one retrying in sled"
    );
}

#[test]
fn after_a_clean_stop_a_parked_destinations_jobs_are_counted_once_and_replay_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, events) = parked_crm(dir.path());
    // Two more events while parked go straight to the journal.
    let later: Vec<NewEvent> = (0..2).map(|_| new_event(&["crm"])).collect();
    store.commit_events(&later).unwrap();
    assert_eq!(store.overflowed("crm").map(|(n, _)| n), Some(22));
    store.close().unwrap();
    drop(store);
    let store = open_when_free(dir.path(), options());
    assert_eq!(store.pending_count(), 42);
    assert_eq!(
        store.lane_len(),
        0,
        "nothing replayed into memory: slack's went back too"
    );
    let mut want = ids_of(&events, "crm");
    want.extend(ids_of(&later, "crm"));
    let got = deliver_all(&store, "crm");
    assert_eq!(got.len(), 22);
    assert_eq!(got.into_iter().collect::<HashSet<_>>(), want);
    assert_eq!(deliver_all(&store, "slack").len(), 20);
    assert_eq!(store.pending_count(), 0);
}

#[test]
fn jobs_taken_back_skip_the_ones_already_delivered_in_their_stretch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_when_free(dir.path(), options());
    let events: Vec<NewEvent> = (0..10).map(|_| new_event(&["crm"])).collect();
    store.commit_events(&events).unwrap();
    // The first three delivered, the fourth in flight, then crm is parked.
    let first = store.lease("crm", now_ms(), 3, |_| false).unwrap().leases;
    for lease in &first {
        store
            .settle(
                lease,
                Transition::Delivered {
                    attempt: attempt(1, 200),
                },
            )
            .unwrap();
    }
    let in_flight = store.lease("crm", now_ms(), 1, |_| false).unwrap().leases;
    store.park("crm", true);
    store.maintain(now_ms()).unwrap();
    assert_eq!(store.overflowed("crm").map(|(n, _)| n), Some(6));
    store
        .settle(
            &in_flight[0],
            Transition::Delivered {
                attempt: attempt(1, 200),
            },
        )
        .unwrap();
    store.park("crm", false);
    let got = deliver_all(&store, "crm");
    let want: HashSet<Uuid> = events[4..].iter().map(|e| e.jobs[0].id).collect();
    assert_eq!(got.into_iter().collect::<HashSet<_>>(), want);
    assert_eq!(store.pending_count(), 0);
}

#[test]
fn jobs_refilled_after_a_clean_restart_are_counted_once_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let small = StoreOptions {
        lane_capacity: 4,
        ..options()
    };
    let store = open_when_free(dir.path(), small.clone());
    let events: Vec<NewEvent> = (0..30).map(|_| new_event(&["crm", "slack"])).collect();
    for chunk in events.chunks(5) {
        store.commit_events(chunk).unwrap();
    }
    // Some crm jobs fail into sled, then crm is parked and its lane goes back.
    for lease in store.lease("crm", now_ms(), 2, |_| false).unwrap().leases {
        let mut job = lease.job.clone();
        job.attempts = 1;
        job.next_attempt_at_ms = now_ms() + 3_600_000;
        store
            .settle(
                &lease,
                Transition::Retry {
                    job,
                    attempt: attempt(1, 503),
                },
            )
            .unwrap();
    }
    store.park("crm", true);
    store.maintain(now_ms()).unwrap();
    assert_eq!(store.pending_count(), 60);
    store.close().unwrap();
    drop(store);
    // A clean restart; the lane refills (nothing parked now), then a crash.
    let store = open_when_free(dir.path(), small.clone());
    assert_eq!(store.pending_count(), 60, "after the clean stop");
    store.maintain(now_ms()).unwrap();
    assert!(store.lane_len() > 0);
    store.flush().unwrap();
    drop(store);
    let store = open_when_free(dir.path(), small);
    assert_eq!(store.pending_count(), 60, "after the crash");
    let crm = deliver_all(&store, "crm");
    let slack = deliver_all(&store, "slack");
    assert_eq!((crm.len(), slack.len()), (28, 30));
    assert_eq!(store.pending_count(), 2, "the two retrying in sled");
}
