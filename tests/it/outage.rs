//! A destination that is down (connection refused) for a stretch spanning several retries,
//! then back: every job is delivered, none is dead-lettered, the failed attempts are spaced
//! as the retry policy says, and a healthy destination of the same events is not held up.

use std::time::{Duration, Instant};

use crate::common::{eventually, fixture_json, DownPort, Receiver, TestDaemon, KEY};

const EVENTS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_down_for_several_retries_gets_everything_when_back() {
    // A port nothing listens on: bound, then dropped, so connections are refused.
    let down = DownPort::reserve();
    let healthy = Receiver::start().await;
    let daemon = TestDaemon::start(&format!(
        r#"
retry: {{ initial_interval: 100ms, multiplier: 2.0, max_interval: 400ms, max_elapsed: 1h }}
# Every job attempted as it comes (no pacing of the failure streak): the retry spacing is
# what this test checks.
health: {{ failing_pace: 0s }}
destinations:
  crm: {{ url: "http://{down}/crm" }}
  audit: {{ url: "{audit}" }}
routes:
  - name: leads
    event: lead
    to: [crm, audit]
"#,
        audit = healthy.url("/audit")
    ))
    .await;
    let store = daemon.running().store().clone();
    let policy = daemon.running().config().destinations["crm"].retry.clone();

    let outage_started = Instant::now();
    for i in 0..EVENTS {
        let mut lead = fixture_json("lead.json");
        lead["id"] = serde_json::json!(format!("outage-{i}"));
        let (status, body) = daemon.post("lead", Some(KEY), lead.to_string()).await;
        assert_eq!(status, 200, "{body}");
    }
    // The healthy destination is not held up by the one that is down.
    healthy.wait_for(EVENTS, Duration::from_secs(10)).await;

    // Let the outage span several retries: 100 + 200 + 400 + 400 ms of base delay, and more.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let pending = store.queued_jobs("crm", 1000).unwrap();
    assert_eq!(pending.len(), EVENTS, "every crm job is still pending");
    let mut gaps_checked = 0;
    for queued in &pending {
        // The job and its attempts as of one moment: the worker keeps retrying meanwhile, so
        // read again if an attempt landed between the two reads.
        let (job, attempts) = loop {
            let before = store.job(&queued.id).unwrap().expect("still queued");
            let attempts = store.attempts(&queued.id).unwrap();
            let after = store.job(&queued.id).unwrap().expect("still queued");
            if before.attempts == after.attempts {
                break (after, attempts);
            }
        };
        assert!(
            attempts.len() >= 4,
            "job {} was tried only {} times in 1.8 s of outage",
            job.id,
            attempts.len()
        );
        assert_eq!(attempts.len() as u32, job.attempts);
        for (k, pair) in attempts.windows(2).enumerate() {
            assert_eq!(pair[0].outcome, "retry");
            assert!(pair[0]
                .error
                .as_deref()
                .unwrap_or("")
                .contains("connection"));
            // The gap after failed attempt k+1 is base(k+1) * (1 ± jitter); the worker may be
            // late (scheduling, a loaded machine) but never early.
            let base = policy.base_interval(k as u32 + 1).as_millis() as f64;
            let gap = pair[1].at_ms.saturating_sub(pair[0].at_ms) as f64;
            let low = base * (1.0 - policy.randomization_factor) - 2.0;
            let high = base * (1.0 + policy.randomization_factor) + 250.0;
            assert!(
                (low..=high).contains(&gap),
                "job {}: gap after attempt {} was {gap} ms; the policy allows {low}..{high} ms",
                job.id,
                k + 1
            );
            gaps_checked += 1;
        }
        // The next attempt is scheduled no later than max_interval * (1 + jitter) ahead.
        let last = attempts.last().unwrap();
        let ahead = job.next_attempt_at_ms.saturating_sub(last.at_ms) as f64;
        let cap = policy.max_interval.as_millis() as f64 * (1.0 + policy.randomization_factor);
        assert!(
            ahead <= cap + 50.0,
            "next attempt {ahead} ms after the last, cap {cap} ms"
        );
    }
    println!(
        "{gaps_checked} retry gaps checked against the policy after {:?} of outage",
        outage_started.elapsed()
    );

    // The destination comes back on the same port.
    let back = Receiver::start_on(down.release()).await;
    let got = back.wait_for(EVENTS, Duration::from_secs(10)).await;
    eventually(Duration::from_secs(5), "the queue to drain", || {
        store.pending_count() == 0
    })
    .await;
    assert_eq!(store.dead_count(), 0, "nothing was dead-lettered");
    let mut ids: Vec<String> = got
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), EVENTS, "each lead reached crm");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        back.requests().len(),
        EVENTS,
        "without a crash, each job is delivered exactly once"
    );
    daemon.stop().await;
}
