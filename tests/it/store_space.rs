//! Space is returned: with a short `server.retention`, the journal of a few thousand
//! delivered events shrinks to a fraction of its peak once retention has passed, and a dead
//! letter that outlives retention keeps its body readable after its segment is gone.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{eventually, fixture, fixture_json, Receiver, Reply, TestDaemon, KEY};
use reqwest::Method;

const EVENTS: usize = 3_000;
const SENDERS: usize = 16;

fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_shrinks_after_retention_and_a_dead_letter_keeps_its_body() {
    let (crm, gone) = (Receiver::start().await, Receiver::start().await);
    gone.set_default(Reply::status(410));
    let config = common::leads_delivered_views_dead(&crm, &gone);
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_with_server(dir, "  retention: 3s\n", &config).await;
    let data = daemon.dir().join("data");
    let journal = data.join("journal");

    // A dead letter first, in the first segment.
    let (status, view) = daemon.post("view", Some(KEY), fixture("view.json")).await;
    assert_eq!(status, 200, "{view}");
    let store = daemon.running().store().clone();
    eventually(Duration::from_secs(10), "a dead letter", || {
        store.dead_count() == 1
    })
    .await;
    let first_segment = journal.join(format!("{:020}.seg", 1));
    assert!(first_segment.exists());

    // Measure the journal and the data directory while a few thousand leads go through.
    let peak_journal = Arc::new(AtomicU64::new(0));
    let peak_total = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (pj, pt, on) = (peak_journal.clone(), peak_total.clone(), sampling.clone());
        let (journal, data) = (journal.clone(), data.clone());
        async move {
            while on.load(Ordering::Relaxed) {
                pj.fetch_max(bytes_under(&journal), Ordering::Relaxed);
                pt.fetch_max(bytes_under(&data), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let started = Instant::now();
    let addr = daemon.addr;
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            for n in (s..EVENTS).step_by(SENDERS) {
                let mut lead = fixture_json("lead.json");
                lead["id"] = serde_json::json!(format!("space-{n}"));
                let resp = client
                    .post(format!("http://{addr}/webhooks/lead"))
                    .header("X-KEY", KEY)
                    .body(lead.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    crm.wait_for(EVENTS, Duration::from_secs(60)).await;
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let (peak_journal, peak_total) = (
        peak_journal.load(Ordering::Relaxed),
        peak_total.load(Ordering::Relaxed),
    );
    println!(
        "{EVENTS} events in {:?}; peak: journal {peak_journal} B, data dir {peak_total} B",
        started.elapsed()
    );
    // Each record holds its body compressed with zstd level 1, as the journal stores it;
    // a third of them at once at least: retention (3 s) deletes the first segments while a
    // slow machine is still sending (a loaded 2-core box took 7 s for the 3,000), and the
    // sampler looks every 20 ms.
    let compressed = zstd::bulk::compress(fixture_json("lead.json").to_string().as_bytes(), 1)
        .unwrap()
        .len() as u64;
    assert!(
        peak_journal > (EVENTS as u64) * compressed / 3,
        "the journal held the events at its peak ({peak_journal} B, {compressed} B per body)"
    );

    // Retention passes: segments go whole, the dead letter's event carried forward.
    eventually(
        Duration::from_secs(15),
        "the journal to shrink to 20% of its peak",
        || bytes_under(&journal) * 5 <= peak_journal,
    )
    .await;
    let (after_journal, after_total) = (bytes_under(&journal), bytes_under(&data));
    println!("after retention: journal {after_journal} B, data dir {after_total} B");
    assert!(!first_segment.exists(), "the first segment was deleted");
    assert!(after_total <= peak_total, "{after_total} > {peak_total}");

    // The dead letter outlives retention with its body.
    let (status, list) = daemon.admin(Method::GET, "/dead").await;
    assert_eq!(status, 200, "{list}");
    let id = list["dead"][0]["id"].as_str().unwrap().to_string();
    let (status, shown) = daemon.admin(Method::GET, &format!("/dead/{id}")).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["body"], fixture_json("view.json"));
    let event_id: uuid::Uuid = view["event_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        store.load_body(&event_id).unwrap().as_deref(),
        Some(fixture("view.json").as_slice()),
        "byte for byte"
    );
    daemon.stop().await;
}
