//! Crash under load: the real binary takes 2,000 webhooks over 16 concurrent connections and
//! is `kill -9`ed at three random moments, each time restarted on the same data directory.
//!
//! Checked afterwards, by each payload's unique `id`:
//! - every webhook answered 200 reaches every destination its routes name;
//! - no webhook answered with an error status is ever delivered;
//! - nothing reaches a destination its routes do not name, and nothing unknown arrives;
//! - duplicates are printed, and each must straddle a kill (delivered before it, sent again
//!   after the restart): only a delivery whose outcome was not yet on disk may repeat.
//!
//! Requests cut off by a kill got no answer: they may or may not be delivered (the client
//! must send them again); the test allows either. Set `CRASH_SEED` to replay a run.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{fixture_json, DaemonProcess, Receiver, Rng, TestConfig, KEY};

const WEBHOOKS: usize = 2_000;
const CONNECTIONS: usize = 16;
const KILLS: usize = 3;

/// What the sender learned about one webhook.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// 200 with this many deliveries.
    Accepted,
    /// An error status: must never be delivered.
    Refused(u16),
    /// No answer (connection refused or cut by the kill): may or may not be delivered.
    Unanswered,
}

fn write_config(dir: &Path, receiver: &Receiver) -> PathBuf {
    TestConfig::new(&dir.join("data"))
        .without("dedupe_window")
        .rest(&format!(
            r#"retry: {{ initial_interval: 50ms, multiplier: 2.0, max_interval: 500ms, max_elapsed: 1h }}
destinations:
  a: {{ url: "{a}" }}
  b: {{ url: "{b}" }}
routes:
  - name: views
    event: view
    to: [a, b]
  - name: leads
    event: lead
    to: [b]
  - name: interactions
    event: interaction
    to: [a]
"#,
            a = receiver.url("/a"),
            b = receiver.url("/b"),
        ))
        .write_in(dir)
}

/// Webhook `n`: its kind, body, and the destinations its routes name.
fn webhook(n: usize) -> (&'static str, String, &'static [&'static str]) {
    let (kind, fixture, dests): (_, _, &'static [&'static str]) = match n % 3 {
        0 => ("view", "view.json", &["/a", "/b"]),
        1 => ("lead", "lead.json", &["/b"]),
        _ => ("interaction", "interaction.json", &["/a"]),
    };
    let mut body = fixture_json(fixture);
    body["id"] = serde_json::json!(format!("crash-{n}"));
    (kind, body.to_string(), dests)
}

/// One of the 16 senders: takes the next webhook number, posts it to the daemon in force,
/// records the answer. While the daemon is down (`addr` is None) it waits without taking one.
async fn sender(
    next: Arc<AtomicUsize>,
    addr: Arc<Mutex<Option<SocketAddr>>>,
    answers: Arc<Mutex<HashMap<usize, Answer>>>,
) {
    // One connection per sender, as a webhook source with a keep-alive pool would use.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let Some(target) = *addr.lock().unwrap() else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let n = next.fetch_add(1, Ordering::SeqCst);
        if n >= WEBHOOKS {
            return;
        }
        let (kind, body, dests) = webhook(n);
        let answer = match client
            .post(format!("http://{target}/webhooks/{kind}"))
            .header("X-KEY", KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.json::<serde_json::Value>().await {
                    Ok(json) if status == 200 => {
                        assert_eq!(json["deliveries"], dests.len(), "webhook {n}: {json}");
                        Answer::Accepted
                    }
                    Ok(_) => Answer::Refused(status),
                    // The status line arrived but the body was cut by the kill.
                    Err(_) if status == 200 => Answer::Unanswered,
                    Err(_) => Answer::Refused(status),
                }
            }
            Err(_) => Answer::Unanswered,
        };
        answers.lock().unwrap().insert(n, answer);
    }
    panic!("sender did not finish within 120 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_webhooks_survive_three_kill_9s_under_load() {
    let started = Instant::now();
    let (mut rng, _) = Rng::from_env("CRASH_SEED");
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let config = write_config(dir.path(), &receiver);

    let first = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || DaemonProcess::spawn(&config))
            .await
            .unwrap()
    };
    let addr = Arc::new(Mutex::new(Some(first.addr)));
    let mut daemon = Some(first);
    let next = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(Mutex::new(HashMap::new()));
    let senders: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(sender(next.clone(), addr.clone(), answers.clone())))
        .collect();

    // Kill k happens once a random number of webhooks in the k-th third of the run is out.
    let mut kills = Vec::new();
    for k in 0..KILLS {
        let span = (WEBHOOKS / KILLS) as u64;
        let threshold = k as u64 * span + span / 5 + rng.below(span / 2);
        let deadline = Instant::now() + Duration::from_secs(60);
        while (next.load(Ordering::SeqCst) as u64) < threshold {
            assert!(Instant::now() < deadline, "load stalled before kill {k}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
        let mut victim = daemon.take().unwrap();
        victim.kill9();
        kills.push(Instant::now());
        *addr.lock().unwrap() = None;
        println!(
            "kill {} at webhook ~{} ({:?} into the run)",
            k + 1,
            next.load(Ordering::SeqCst),
            started.elapsed()
        );
        drop(victim);
        let config = config.clone();
        let restarted = tokio::task::spawn_blocking(move || DaemonProcess::spawn(&config))
            .await
            .unwrap();
        *addr.lock().unwrap() = Some(restarted.addr);
        daemon = Some(restarted);
    }
    for s in senders {
        s.await.unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    assert_eq!(answers.len(), WEBHOOKS, "every webhook was sent once");

    // Every acknowledged webhook, at every destination its routes name.
    let mut expected = 0;
    for (n, a) in &answers {
        if *a == Answer::Accepted {
            expected += webhook(*n).2.len();
        }
    }
    let accepted = answers.values().filter(|a| **a == Answer::Accepted).count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|(_, a)| matches!(a, Answer::Refused(_)))
        .collect();
    let unanswered = answers
        .values()
        .filter(|a| **a == Answer::Unanswered)
        .count();
    println!(
        "{accepted} accepted, {} refused, {unanswered} unanswered; waiting for {expected} deliveries",
        refused.len()
    );
    assert!(
        accepted >= WEBHOOKS / 2,
        "too few webhooks were accepted ({accepted}) for the test to mean much"
    );
    let has_all = |got: &BTreeMap<(usize, String), Vec<Instant>>| {
        answers.iter().all(|(n, a)| {
            *a != Answer::Accepted
                || webhook(*n)
                    .2
                    .iter()
                    .all(|d| got.contains_key(&(*n, d.to_string())))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = deliveries(&receiver);
    while !has_all(&got) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        got = deliveries(&receiver);
    }
    // Give anything that should not come a moment to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    got = deliveries(&receiver);

    let mut missing = Vec::new();
    for (n, a) in &answers {
        if *a == Answer::Accepted {
            for d in webhook(*n).2 {
                if !got.contains_key(&(*n, d.to_string())) {
                    missing.push(format!("crash-{n} -> {d}"));
                }
            }
        }
    }
    let mut wrong = Vec::new();
    let mut duplicates = Vec::new();
    for ((n, dest), times) in &got {
        match answers.get(n) {
            None => wrong.push(format!("crash-{n} -> {dest}: never sent")),
            Some(Answer::Refused(s)) => wrong.push(format!("crash-{n} -> {dest}: answered {s}")),
            Some(_) if !webhook(*n).2.contains(&dest.as_str()) => {
                wrong.push(format!("crash-{n} -> {dest}: no route names it"))
            }
            Some(_) => {}
        }
        if times.len() > 1 {
            let explained = times
                .windows(2)
                .all(|w| kills.iter().any(|k| w[0] <= *k && *k <= w[1]));
            duplicates.push((format!("crash-{n} -> {dest}"), times.len(), explained));
        }
    }
    println!(
        "{} duplicate deliveries (each delivered before a kill and again after the restart):",
        duplicates.len()
    );
    for (what, count, explained) in &duplicates {
        println!(
            "  {what}: {count} times{}",
            if *explained { "" } else { " NOT ACROSS A KILL" }
        );
    }
    let log = daemon.as_ref().map(|d| d.log()).unwrap_or_default();
    drop(daemon);
    assert!(
        missing.is_empty(),
        "{} acknowledged deliveries lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(
        wrong.is_empty(),
        "deliveries that must not exist: {wrong:?}"
    );
    assert!(
        duplicates.iter().all(|d| d.2),
        "a duplicate without a crash in between: {duplicates:?}\nlog tail:\n{}",
        log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    println!("crash_under_load took {:?}", started.elapsed());
}

/// Deliveries by (webhook number, destination path), with their arrival times.
fn deliveries(receiver: &Receiver) -> BTreeMap<(usize, String), Vec<Instant>> {
    let mut out: BTreeMap<(usize, String), Vec<Instant>> = BTreeMap::new();
    for r in receiver.requests() {
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let id = json["id"].as_str().unwrap();
        let n: usize = id.strip_prefix("crash-").unwrap().parse().unwrap();
        out.entry((n, r.path.clone())).or_default().push(r.at);
    }
    out
}
