//! Model-based test of the store's contract: random sequences of accept / lease / settle /
//! operator verbs / flush / housekeeping / crash-and-reopen run against the real [`Store`]
//! and against a small in-memory model of what the store promises.
//!
//! The model knows, for every accepted job, where it is now (queued, dead or done) and the
//! states a crash may leave it in: everything since its last durable point. A delivery from
//! the fast lane is durable with the next journal append (any accept, `sync_settles`,
//! `flush`, `maintain`); anything written to sled with the next sled sync (`flush`,
//! `maintain`). sled also flushes on its own, so before a durable point either state may
//! come back. Checked:
//! - after every step, `pending_count()` and `dead_count()` match the model;
//! - every lease is a queued, due job of that destination not already held, with its
//!   event's body byte for byte, and a lease returns as many jobs as are due (up to the limit);
//! - after a crash, every job is in one of the states the model allows (nothing accepted is
//!   lost, a durable delivery or dead letter stays so, a delivery not yet durable may come
//!   back with the same id), and queued jobs and dead letters still have their bodies;
//! - a repeated de-duplication key is answered with the first event's id;
//! - at the end every job can be driven to delivered or dead.

use std::collections::HashSet;
use std::time::Duration;

use proptest::prelude::*;
use uuid::Uuid;

use super::housekeeping::DedupeKey;
use super::tests::{attempt, new_event};
use super::*;

mod model;
use model::*;

const DESTS: [&str; 3] = ["a", "b", "c"];
const DAY_MS: u64 = 24 * 3600 * 1000;
/// Long enough that no identity is forgotten by a `maintain` eight days ahead.
const DEDUPE_WINDOW_MS: u64 = 365 * DAY_MS;

fn options() -> StoreOptions {
    StoreOptions {
        // Small segments (a dozen events each) and a small lane: rotation, sealed indexes,
        // spills to sled at accept and carrying forward all happen within a few steps.
        segment_bytes: 2048,
        lane_capacity: 4,
        dedupe_window: Duration::from_millis(DEDUPE_WINDOW_MS),
        ..StoreOptions::new(1 << 20)
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A batch of events: destination mask (1..8) and an optional de-duplication key.
    Accept(Vec<(u8, Option<u8>)>),
    Lease {
        dest: usize,
        limit: usize,
    },
    Settle {
        pick: usize,
        how: How,
    },
    RetryDead(usize),
    DropDead(usize),
    Flush,
    SyncSettles,
    Maintain,
    /// `maintain` eight days ahead: past `retention`, so settled records are purged and
    /// sealed segments before the checkpoint deleted (records still needed carried forward).
    MaintainLater,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let how = prop_oneof![
        3 => Just(How::Delivered),
        2 => Just(How::RetryPast),
        1 => Just(How::RetryFuture),
        1 => Just(How::Dead),
    ];
    let event = (1u8..8, prop::option::weighted(0.3, 0u8..3));
    prop_oneof![
        4 => prop::collection::vec(event, 1..4).prop_map(Op::Accept),
        4 => (0usize..3, 1usize..4).prop_map(|(dest, limit)| Op::Lease { dest, limit }),
        5 => (any::<usize>(), how).prop_map(|(pick, how)| Op::Settle { pick, how }),
        1 => any::<usize>().prop_map(Op::RetryDead),
        1 => any::<usize>().prop_map(Op::DropDead),
        1 => Just(Op::Flush),
        1 => Just(Op::SyncSettles),
        1 => Just(Op::Maintain),
        1 => Just(Op::MaintainLater),
        2 => Just(Op::Crash),
    ]
}

fn accept(store: &Store, model: &mut Model, events: &[(u8, Option<u8>)]) {
    let batch: Vec<NewEvent> = events
        .iter()
        .map(|&(mask, key)| {
            let dests: Vec<&str> = (0..3)
                .filter(|b| mask & (1 << b) != 0)
                .map(|b| DESTS[b])
                .collect();
            let mut ev = new_event(&dests);
            ev.dedupe = key.map(|k| DedupeKey {
                digest: [k + 1; 32],
                window_ms: DEDUPE_WINDOW_MS,
            });
            ev
        })
        .collect();
    let outcomes = store.commit_events(&batch).expect("commit_events");
    assert_eq!(outcomes.len(), batch.len());
    // Any append carries the Delivered records waiting for one.
    model.durable(Class::Journal);
    for ((&(_, key), ev), outcome) in events.iter().zip(&batch).zip(outcomes) {
        let new = match key {
            Some(k) if model.uncertain.remove(&k) => match outcome {
                Committed::New => true,
                Committed::Duplicate { event_id } => {
                    assert_eq!(Some(&event_id), model.firsts.get(&k), "key {k}");
                    false
                }
            },
            Some(k) if model.firsts.contains_key(&k) => {
                assert_eq!(
                    outcome,
                    Committed::Duplicate {
                        event_id: model.firsts[&k]
                    },
                    "a repeat of key {k} answers with the first event's id"
                );
                false
            }
            _ => {
                assert_eq!(outcome, Committed::New, "an event with key {key:?}");
                true
            }
        };
        if !new {
            continue;
        }
        if let Some(k) = key {
            model.firsts.insert(k, ev.event.id);
            model.at_risk.remove(&k);
        }
        for job in &ev.jobs {
            let dest = DESTS
                .iter()
                .find(|d| **d == job.destination)
                .expect("a known destination");
            model.order.push(job.id);
            model.jobs.insert(
                job.id,
                Job {
                    dest,
                    event: ev.event.id,
                    body: ev.body.clone(),
                    kind: Kind::Queued,
                    due_ms: job.next_attempt_at_ms,
                    held: false,
                    after_crash: vec![Kind::Queued],
                    pending: None,
                },
            );
        }
    }
}

fn lease(store: &Store, model: &mut Model, dest: &'static str, limit: usize) {
    let now = now_ms();
    let held: HashSet<Uuid> = model.held.iter().map(|l| l.job.id).collect();
    let scan = store
        .lease(dest, now, limit, |id| held.contains(id))
        .expect("lease");
    let due = model
        .jobs
        .values()
        .filter(|j| j.dest == dest && j.kind == Kind::Queued && !j.held && j.due_ms <= now)
        .count();
    assert_eq!(
        scan.leases.len(),
        due.min(limit),
        "leases of {dest} (limit {limit}, {due} due)"
    );
    for l in scan.leases {
        let job = model
            .jobs
            .get_mut(&l.job.id)
            .expect("a leased job is known");
        assert_eq!(
            (job.kind, job.held, job.dest),
            (Kind::Queued, false, dest),
            "leased job {}",
            l.job.id
        );
        assert_eq!(l.body.as_ref(), Some(&job.body), "the body of {}", l.job.id);
        job.held = true;
        model.held.push(l);
    }
}

fn settle(store: &Store, model: &mut Model, pick: usize, how: How) {
    if model.held.is_empty() {
        return;
    }
    let lease = model.held.remove(pick % model.held.len());
    let now = now_ms();
    let n = lease.job.attempts + 1;
    let mut job = lease.job.clone();
    job.attempts = n;
    job.first_attempt_at_ms = job.first_attempt_at_ms.or(Some(now));
    job.last_attempt_at_ms = Some(now);
    let (transition, kind, due_ms) = match how {
        How::Delivered => (
            Transition::Delivered {
                attempt: attempt(n, 200),
            },
            Kind::Done,
            0,
        ),
        How::RetryPast | How::RetryFuture => {
            job.next_attempt_at_ms = match how {
                How::RetryPast => now - 1000,
                _ => now + 3_600_000,
            };
            job.last_status = Some(503);
            let due = job.next_attempt_at_ms;
            (
                Transition::Retry {
                    job,
                    attempt: attempt(n, 503),
                },
                Kind::Queued,
                due,
            )
        }
        How::Dead => (
            Transition::Dead {
                letter: DeadLetter {
                    job,
                    reason: "permanent failure: HTTP 410".into(),
                    response_snippet: None,
                    dead_at_ms: now,
                },
                attempt: Some(attempt(n, 410)),
            },
            Kind::Dead,
            0,
        ),
    };
    let class = if lease.from_lane() && kind == Kind::Done {
        Class::Journal
    } else {
        Class::Sled
    };
    store.settle(&lease, transition).expect("settle");
    model.jobs.get_mut(&lease.job.id).expect("known").held = false;
    model.set(&lease.job.id, kind, due_ms, class);
}

/// Opens the store again after dropping it. sled's I/O threads can hold its file lock for a
/// moment after the last handle is gone (a process that died holds none): wait for that.
fn reopen(dir: &std::path::Path) -> Store {
    super::tests::open_when_free(dir, options())
}

/// An operator's retry (with `retry`) or drop of the job `pick` names: it acts exactly on
/// dead letters.
fn operator_verb(store: &Store, model: &mut Model, pick: usize, retry: bool) {
    if model.order.is_empty() {
        return;
    }
    let id = model.order[pick % model.order.len()];
    let dead = model.jobs[&id].kind == Kind::Dead;
    if retry {
        let queued = store.retry_dead(&id).expect("retry_dead");
        assert_eq!(queued.is_some(), dead, "retry_dead of a {:?} job", {
            model.jobs[&id].kind
        });
        if let Some(job) = queued {
            assert_eq!(job.id, id);
            model.set(&id, Kind::Queued, job.next_attempt_at_ms, Class::Sled);
        }
    } else {
        let dropped = store.drop_dead(&id).expect("drop_dead");
        assert_eq!(dropped, dead, "drop_dead of a {:?} job", {
            model.jobs[&id].kind
        });
        if dropped {
            model.set(&id, Kind::Done, 0, Class::Sled);
        }
    }
}

/// Eventually every job can be delivered (or is dead): settles the leases held, then
/// leases and delivers until nothing is due.
fn drain(store: &Store, model: &mut Model) {
    // Eventually: every job can be delivered (or is dead), and then nothing is queued.
    for lease in std::mem::take(&mut model.held) {
        store
            .settle(
                &lease,
                Transition::Delivered {
                    attempt: attempt(lease.job.attempts + 1, 200),
                },
            )
            .expect("settle");
        model.jobs.get_mut(&lease.job.id).expect("known").kind = Kind::Done;
    }
    let later = now_ms() + 2 * 3_600_000;
    loop {
        let mut leased = 0;
        for dest in DESTS {
            for lease in store
                .lease(dest, later, 100, |_| false)
                .expect("lease")
                .leases
            {
                leased += 1;
                store
                    .settle(
                        &lease,
                        Transition::Delivered {
                            attempt: attempt(lease.job.attempts + 1, 200),
                        },
                    )
                    .expect("settle");
                model.jobs.get_mut(&lease.job.id).expect("known").kind = Kind::Done;
            }
        }
        if leased == 0 {
            break;
        }
    }
}

fn run(ops: &[Op]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path(), options()).expect("open");
    let mut model = Model::default();
    for (n, op) in ops.iter().enumerate() {
        let step = format!("step {n}: {op:?}");
        match op {
            Op::Accept(events) => accept(&store, &mut model, events),
            Op::Lease { dest, limit } => lease(&store, &mut model, DESTS[*dest], *limit),
            Op::Settle { pick, how } => settle(&store, &mut model, *pick, *how),
            Op::RetryDead(pick) => operator_verb(&store, &mut model, *pick, true),
            Op::DropDead(pick) => operator_verb(&store, &mut model, *pick, false),
            Op::Flush => {
                store.flush().expect("flush");
                model.durable(Class::Journal);
                model.durable(Class::Sled);
            }
            Op::SyncSettles => {
                store.sync_settles().expect("sync_settles");
                model.durable(Class::Journal);
            }
            Op::Maintain | Op::MaintainLater => {
                let now = match op {
                    Op::Maintain => now_ms(),
                    _ => now_ms() + 8 * DAY_MS,
                };
                let purged = store.maintain(now).expect("maintain");
                model.durable(Class::Journal);
                model.durable(Class::Sled);
                if purged.segments > 0 {
                    // An identity lives in its event's segment (and in memory): a segment
                    // deleted takes it away at the next restart.
                    let keys: Vec<u8> = model.firsts.keys().copied().collect();
                    model.at_risk.extend(keys);
                }
            }
            Op::Crash => {
                // No flush, no checkpoint; the leases held are lost with the process.
                drop(store);
                store = reopen(dir.path());
                model.held.clear();
                let risky: Vec<u8> = model.at_risk.drain().collect();
                model.uncertain.extend(risky);
                check_all(&store, &mut model, true);
            }
        }
        model.check_counts(&store, &step);
    }
    check_all(&store, &mut model, false);
    drain(&store, &mut model);
    assert_eq!(model.count(Kind::Queued), 0, "every queued job was leased");
    model.check_counts(&store, "draining");
    check_all(&store, &mut model, false);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_store_keeps_the_contract_of_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run(&ops);
    }
}
