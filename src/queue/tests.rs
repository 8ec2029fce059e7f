//! The store's own tests: placement, settling, replay after a crash, space returned.

use std::time::Duration;

use bytes::Bytes;
use uuid::Uuid;

use super::*;
use crate::event::EventKind;

pub(crate) fn new_event(destinations: &[&str]) -> NewEvent {
    let id = Uuid::now_v7();
    let now = now_ms();
    let jobs: Vec<JobRecord> = destinations
        .iter()
        .map(|d| JobRecord::new(id, EventKind::Lead, d.to_string(), vec!["r".into()], now))
        .collect();
    NewEvent {
        event: EventRecord {
            id,
            kind: EventKind::Lead,
            received_at_ms: now,
            routes: vec!["r".into()],
            jobs: jobs.iter().map(|j| j.id).collect(),
            body_len: 2,
        },
        body: Bytes::from(format!("{{\"id\":\"{id}\"}}")),
        jobs,
        dedupe: None,
    }
}

pub(crate) fn options() -> StoreOptions {
    StoreOptions {
        segment_bytes: 64 * 1024,
        ..StoreOptions::new(1 << 20)
    }
}

/// An attempt numbered `n` that got `status` (2xx delivered, anything else a retry).
pub(crate) fn attempt(n: u32, status: u16) -> AttemptRecord {
    AttemptRecord {
        attempt: n,
        at_ms: now_ms(),
        latency_ms: 1,
        status: Some(status),
        outcome: if status < 300 { "delivered" } else { "retry" }.into(),
        error: (status >= 300).then(|| format!("HTTP {status}")),
    }
}

/// Opens the store in `dir`, waiting while the lock of one just dropped is still held (sled
/// lets its directory lock go from a background thread, a moment after the drop).
pub(crate) fn open_when_free(dir: &std::path::Path, options: StoreOptions) -> Store {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open(dir, options.clone()) {
            Ok(store) => return store,
            Err(StoreError::Sled(sled::Error::Io(e)))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("open {}: {e}", dir.display()),
        }
    }
}

/// The first due job of `destination`, leased.
pub(crate) fn lease_one(store: &Store, destination: &str) -> Lease {
    store
        .lease(destination, now_ms(), 1, |_| false)
        .unwrap()
        .leases
        .remove(0)
}

pub(crate) fn retry_of(lease: &Lease, in_ms: u64) -> Transition {
    let mut job = lease.job.clone();
    job.attempts += 1;
    job.next_attempt_at_ms = now_ms() + in_ms;
    Transition::Retry {
        job,
        attempt: attempt(lease.job.attempts + 1, 503),
    }
}

#[test]
fn a_delivered_lane_job_never_touches_sled_and_is_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let ev = new_event(&["crm"]);
    {
        let store = open_when_free(dir.path(), options());
        store.commit_events(std::slice::from_ref(&ev)).unwrap();
        let scan = store.lease("crm", now_ms(), 10, |_| false).unwrap();
        assert_eq!(scan.leases.len(), 1);
        assert!(scan.leases[0].from_lane());
        assert_eq!(scan.leases[0].body.as_ref(), Some(&ev.body));
        store
            .settle(
                &scan.leases[0],
                Transition::Delivered {
                    attempt: attempt(1, 200),
                },
            )
            .unwrap();
        assert_eq!(store.pending_count(), 0);
        assert_eq!(
            store.inner.trees.jobs.len() + store.inner.trees.done.len(),
            0
        );
        store.flush().unwrap();
        let story = store.event_story(&ev.event.id).unwrap().unwrap();
        assert!(
            matches!(&story.2[0].1, Some(operator::JobStatus::Settled(s)) if s.outcome == "delivered"),
            "{:?}",
            story.2
        );
        assert_eq!(story.2[0].2.len(), 1, "its one attempt");
    }
    let store = open_when_free(dir.path(), options());
    assert_eq!(
        store.pending_count(),
        0,
        "a delivered job is not sent again"
    );
    assert_eq!(
        store.event(&ev.event.id).unwrap().map(|e| e.id),
        Some(ev.event.id)
    );
}

#[test]
fn a_crash_before_the_checkpoint_replays_jobs_that_were_only_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (new_event(&["crm", "slack"]), new_event(&["crm"]));
    {
        let store = open_when_free(dir.path(), options());
        store.commit_events(&[a.clone(), b.clone()]).unwrap();
        // One job delivered, its record synced; one failed once (now in sled); the rest
        // only in memory. Then the process dies: no flush, no checkpoint.
        let crm = store.lease("crm", now_ms(), 1, |_| false).unwrap().leases;
        store
            .settle(
                &crm[0],
                Transition::Delivered {
                    attempt: attempt(1, 200),
                },
            )
            .unwrap();
        store.sync_settles().unwrap();
        let slack = store.lease("slack", now_ms(), 1, |_| false).unwrap().leases;
        store
            .settle(&slack[0], retry_of(&slack[0], 60_000))
            .unwrap();
        store.sync_sled().unwrap();
        assert_eq!(store.pending_count(), 2);
        drop(store);
    }
    let store = open_when_free(dir.path(), options());
    let depth = store.stats().snapshot();
    assert_eq!(
        (depth["crm"].pending, depth["slack"].retrying),
        (1, 1),
        "{depth:?}"
    );
    let crm = store.lease("crm", now_ms(), 10, |_| false).unwrap().leases;
    assert_eq!(crm.len(), 1);
    assert_eq!(
        crm[0].job.id, b.jobs[0].id,
        "the same delivery id as before the crash"
    );
    assert_eq!(crm[0].body.as_ref(), Some(&b.body));
    assert!(
        store
            .lease("slack", now_ms(), 10, |_| false)
            .unwrap()
            .leases
            .is_empty(),
        "not due yet"
    );
}

#[test]
fn a_retried_job_reads_its_body_from_the_journal_and_settles_in_sled() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_when_free(dir.path(), options());
    let ev = new_event(&["crm"]);
    store.commit_events(std::slice::from_ref(&ev)).unwrap();
    let lease = lease_one(&store, "crm");
    store.settle(&lease, retry_of(&lease, 0)).unwrap();
    assert_eq!(store.stats().snapshot()["crm"].retrying, 1);
    let again = store
        .lease("crm", now_ms() + 1, 1, |_| false)
        .unwrap()
        .leases
        .remove(0);
    assert!(!again.from_lane());
    assert_eq!(again.body.as_ref(), Some(&ev.body));
    store
        .settle(
            &again,
            Transition::Delivered {
                attempt: attempt(2, 200),
            },
        )
        .unwrap();
    assert_eq!(store.pending_count(), 0);
    assert_eq!(store.attempts(&lease.job.id).unwrap().len(), 2);
    assert!(matches!(
        store.job_status(&lease.job.id).unwrap(),
        Some(operator::JobStatus::Settled(_))
    ));
}

#[test]
fn duplicates_are_recognised_in_a_batch_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = housekeeping::DedupeKey {
        digest: [9; 32],
        window_ms: 3_600_000,
    };
    let mut first = new_event(&["crm"]);
    first.dedupe = Some(key.clone());
    let mut again = new_event(&["crm"]);
    again.dedupe = Some(key.clone());
    {
        let store = open_when_free(dir.path(), options());
        let out = store
            .commit_events(&[first.clone(), again.clone()])
            .unwrap();
        assert_eq!(out[0], Committed::New);
        assert_eq!(
            out[1],
            Committed::Duplicate {
                event_id: first.event.id
            }
        );
        drop(store);
    }
    let store = open_when_free(dir.path(), options());
    let mut third = new_event(&["crm"]);
    third.dedupe = Some(key);
    assert_eq!(
        store.commit_events(&[third]).unwrap()[0],
        Committed::Duplicate {
            event_id: first.event.id
        }
    );
    assert_eq!(store.pending_count(), 1);
}

#[test]
fn segments_past_retention_are_deleted_and_dead_letters_carried_forward() {
    let dir = tempfile::tempdir().unwrap();
    let small = StoreOptions {
        segment_bytes: 4096,
        ..options()
    };
    let store = open_when_free(dir.path(), small);
    store.set_retention(Duration::from_millis(1), Duration::from_secs(3600));
    let mut dead_event = None;
    for n in 0..400 {
        let ev = new_event(&["crm"]);
        store.commit_events(std::slice::from_ref(&ev)).unwrap();
        let lease = lease_one(&store, "crm");
        let t = if n == 3 {
            dead_event = Some(ev);
            Transition::Dead {
                letter: DeadLetter {
                    job: lease.job.clone(),
                    reason: "permanent failure: HTTP 410".into(),
                    response_snippet: None,
                    dead_at_ms: now_ms(),
                },
                attempt: Some(attempt(1, 410)),
            }
        } else {
            Transition::Delivered {
                attempt: attempt(1, 200),
            }
        };
        store.settle(&lease, t).unwrap();
    }
    let dead_event = dead_event.unwrap();
    let before = store.inner.journal.segments().len();
    assert!(before > 2, "{before} segments");
    store.flush().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let purged = store.maintain(now_ms() + 10_000).unwrap();
    assert!(purged.segments >= before - 1, "{purged:?} of {before}");
    assert!(store.inner.journal.segments().len() <= 2);
    // The dead letter's event was copied forward: its body is still there.
    let letter = store.dead_letter(&dead_event.jobs[0].id).unwrap().unwrap();
    assert_ne!(letter.job.event_at, dead_event.jobs[0].event_at);
    assert_eq!(
        store.load_body(&dead_event.event.id).unwrap(),
        Some(dead_event.body.clone())
    );
    store.retry_dead(&dead_event.jobs[0].id).unwrap().unwrap();
    let lease = lease_one(&store, "crm");
    assert_eq!(lease.body, Some(dead_event.body));
}

#[test]
fn beyond_the_byte_budget_lane_jobs_read_their_body_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let tight = StoreOptions {
        lane_capacity_bytes: 1,
        ..options()
    };
    let store = open_when_free(dir.path(), tight);
    let ev = new_event(&["crm", "slack"]);
    store.commit_events(std::slice::from_ref(&ev)).unwrap();
    assert_eq!(store.lane_len(), 2, "still in the lane, not in sled");
    assert_eq!(store.inner.trees.jobs.len(), 0);
    let lease = lease_one(&store, "crm");
    assert!(lease.from_lane());
    assert_eq!(lease.body, Some(ev.body.clone()));
    // Given back unattempted, it is leased again, body and all.
    store.unlease(vec![lease]);
    let again = lease_one(&store, "crm");
    assert_eq!(again.body, Some(ev.body));
    store
        .settle(
            &again,
            Transition::Delivered {
                attempt: attempt(1, 200),
            },
        )
        .unwrap();
    assert_eq!(store.lane_len(), 1);
}

#[test]
fn a_clean_close_puts_the_lane_back_into_the_journal_and_saves_the_counts_for_one_open() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (new_event(&["crm", "slack"]), new_event(&["crm"]));
    {
        let store = open_when_free(dir.path(), options());
        store.commit_events(&[a, b.clone()]).unwrap();
        let lease = lease_one(&store, "slack");
        store.settle(&lease, retry_of(&lease, 60_000)).unwrap();
        store.close().unwrap();
        assert_eq!(
            store.lane_len(),
            0,
            "the waiting jobs went back to the journal"
        );
        assert_eq!(store.inner.trees.jobs.len(), 1, "only the retry is in sled");
        assert!(matches!(
            store.commit_events(std::slice::from_ref(&b)),
            Err(StoreError::Closed)
        ));
    }
    let check = |store: &Store| {
        let depth = store.stats().snapshot();
        assert_eq!(
            (depth["crm"].pending, depth["slack"].retrying),
            (2, 1),
            "{depth:?}"
        );
        assert_eq!(
            store.refs_of(1),
            1,
            "the one sled job points into segment 1"
        );
        assert_eq!(store.overflowed("crm").map(|(n, _)| n), Some(2));
    };
    let store = open_when_free(dir.path(), options());
    check(&store);
    assert_eq!(store.lane_len(), 0, "nothing to replay after a clean stop");
    assert!(
        store.inner.trees.meta.get(b"counts").unwrap().is_none(),
        "saved counts serve one open"
    );
    drop(store);
    // Reopened without a clean stop: counted from the due index, the same.
    let store = open_when_free(dir.path(), options());
    check(&store);
    assert_eq!(
        store
            .lease("crm", now_ms(), 10, |_| false)
            .unwrap()
            .leases
            .len(),
        2
    );
}
