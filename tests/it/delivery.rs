//! The end-to-end path: accepted webhooks reach the destinations their routes name, byte for
//! byte, with the documented headers; failures are retried or dead-lettered as the policy says.

use std::time::Duration;

use crate::common::{
    eventually, fixture, fixture_json, DownPort, Receiver, Reply, TestDaemon, KEY,
};

const WAIT: Duration = Duration::from_secs(10);

fn two_destinations(slack: &Receiver, crm: &Receiver) -> String {
    format!(
        r#"
retry: {{ initial_interval: 20ms, multiplier: 2.0, max_interval: 100ms, max_elapsed: 30s }}
destinations:
  sales-slack:
    url: "{}"
  crm:
    url: "{}"
    headers: {{ Authorization: "Bearer crm-token" }}
routes:
  - name: engaged-viewers
    event: view
    match:
      video_token: aVOfEGmGrZlG
      percentage: {{ gte: 90 }}
      tag1: [webinar, spring-campaign]
    to: [sales-slack, crm]
  - name: crm-views
    event: view
    match:
      percentage: {{ gte: 50 }}
    to: [crm]
  - name: every-lead
    event: lead
    to: [crm]
  - name: answers
    event: interaction
    match:
      parent_type: question
    to: [sales-slack]
"#,
        slack.url("/slack"),
        crm.url("/crm")
    )
}

#[tokio::test]
async fn a_matching_view_reaches_both_destinations_byte_for_byte_once_each() {
    let (slack, crm) = (Receiver::start().await, Receiver::start().await);
    let daemon = TestDaemon::start(&two_destinations(&slack, &crm)).await;
    let body = fixture("view.json");

    let (status, answer) = daemon.post("view", Some(KEY), body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "accepted");
    assert_eq!(
        answer["routes"],
        serde_json::json!(["engaged-viewers", "crm-views"])
    );
    // crm is named by two matching routes but gets the event once.
    assert_eq!(answer["deliveries"], 2);
    let event_id = answer["event_id"].as_str().unwrap().to_string();

    let to_slack = slack.wait_for(1, WAIT).await;
    let to_crm = crm.wait_for(1, WAIT).await;
    for (got, path) in [(&to_slack[0], "/slack"), (&to_crm[0], "/crm")] {
        assert_eq!(got.method, "POST");
        assert_eq!(got.path, path);
        assert_eq!(
            got.body.as_ref(),
            body.as_slice(),
            "body must be forwarded byte for byte"
        );
        assert_eq!(got.header("content-type"), "application/json");
        assert_eq!(got.header("x-hookrouter-event"), "view");
        assert_eq!(
            got.header("user-agent"),
            format!("hookrouter/{}", env!("CARGO_PKG_VERSION"))
        );
        assert!(uuid::Uuid::parse_str(&got.header("x-hookrouter-delivery")).is_ok());
        assert!(
            got.headers.get("x-key").is_none(),
            "the X-KEY secret must never be forwarded"
        );
    }
    assert_eq!(to_crm[0].header("authorization"), "Bearer crm-token");
    assert_eq!(to_slack[0].header("authorization"), "");
    assert_ne!(
        to_slack[0].header("x-hookrouter-delivery"),
        to_crm[0].header("x-hookrouter-delivery")
    );

    // Delivered jobs leave the queue; no duplicate arrives later.
    let store = daemon.running().store().clone();
    eventually(WAIT, "the queue to drain", || store.pending_count() == 0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!((slack.requests().len(), crm.requests().len()), (1, 1));
    assert!(!event_id.is_empty());
    daemon.stop().await;
}

#[tokio::test]
async fn routes_filter_by_kind_and_conditions() {
    let (slack, crm) = (Receiver::start().await, Receiver::start().await);
    let daemon = TestDaemon::start(&two_destinations(&slack, &crm)).await;

    // A view below every threshold matches nothing: 200 unrouted, nothing sent.
    let mut low = fixture_json("view.json");
    low["percentage"] = serde_json::json!(10);
    let (status, answer) = daemon.post("view", Some(KEY), low.to_string()).await;
    assert_eq!(
        (
            status,
            answer["status"].as_str(),
            answer["deliveries"].as_u64()
        ),
        (200, Some("unrouted"), Some(0))
    );

    // "95" as a string still compares as a number; tag1 outside the list fails that route.
    let mut mid = fixture_json("view.json");
    mid["percentage"] = serde_json::json!("95");
    mid["tag1"] = serde_json::json!("other");
    let (_, answer) = daemon.post("view", Some(KEY), mid.to_string()).await;
    assert_eq!(answer["routes"], serde_json::json!(["crm-views"]));

    // A null tag1 matches no condition.
    let mut null_tag = fixture_json("view.json");
    null_tag["tag1"] = serde_json::Value::Null;
    let (_, answer) = daemon.post("view", Some(KEY), null_tag.to_string()).await;
    assert_eq!(answer["routes"], serde_json::json!(["crm-views"]));

    let (_, answer) = daemon.post("lead", Some(KEY), fixture("lead.json")).await;
    assert_eq!(answer["routes"], serde_json::json!(["every-lead"]));
    let (_, answer) = daemon
        .post("interaction", Some(KEY), fixture("interaction.json"))
        .await;
    assert_eq!(answer["routes"], serde_json::json!(["answers"]));

    let crm_got = crm.wait_for(3, WAIT).await;
    let slack_got = slack.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut kinds: Vec<String> = crm
        .requests()
        .iter()
        .map(|r| r.header("x-hookrouter-event"))
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["lead", "view", "view"], "{crm_got:?}");
    assert_eq!(slack.requests().len(), 1, "{slack_got:?}");
    assert_eq!(slack_got[0].header("x-hookrouter-event"), "interaction");
    daemon.stop().await;
}

#[tokio::test]
async fn server_errors_are_retried_with_the_same_delivery_id() {
    let crm = Receiver::start().await;
    crm.script([Reply::status(500), Reply::status(503)]);
    let config = format!(
        r#"
retry: {{ initial_interval: 50ms, multiplier: 2.0, max_interval: 1s, max_elapsed: 30s }}
destinations:
  crm: {{ url: "{}" }}
routes:
  - name: every-lead
    to: [crm]
"#,
        crm.url("/crm")
    );
    let daemon = TestDaemon::start(&config).await;
    let (status, _) = daemon.post("lead", Some(KEY), fixture("lead.json")).await;
    assert_eq!(status, 200);
    let got = crm.wait_for(3, WAIT).await;
    let ids: Vec<String> = got
        .iter()
        .map(|r| r.header("x-hookrouter-delivery"))
        .collect();
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    // Backoff: the second retry waits about twice as long as the first (jitter ±50%).
    let first_gap = got[1].at - got[0].at;
    let second_gap = got[2].at - got[1].at;
    assert!(first_gap >= Duration::from_millis(25), "{first_gap:?}");
    assert!(second_gap >= Duration::from_millis(50), "{second_gap:?}");
    let store = daemon.running().store().clone();
    eventually(WAIT, "the delivered job to leave the queue", || {
        store.pending_count() == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        crm.requests().len(),
        3,
        "delivered after two retries, then never again"
    );
    assert_eq!(store.dead_count(), 0);
    daemon.stop().await;
}

#[tokio::test]
async fn a_permanent_failure_is_dead_lettered_at_once_with_what_happened() {
    let crm = Receiver::start().await;
    crm.script([Reply::status(410).body("channel_is_archived")]);
    let config = format!(
        r#"
retry: {{ initial_interval: 10ms, max_interval: 50ms }}
destinations:
  crm: {{ url: "{}" }}
routes:
  - name: every-lead
    event: lead
    to: [crm]
"#,
        crm.url("/crm")
    );
    let daemon = TestDaemon::start(&config).await;
    let (_, answer) = daemon.post("lead", Some(KEY), fixture("lead.json")).await;
    let event_id = answer["event_id"].as_str().unwrap().to_string();
    crm.wait_for(1, WAIT).await;
    let store = daemon.running().store().clone();
    eventually(WAIT, "a dead letter", || store.dead_count() == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(crm.requests().len(), 1, "a 410 is not retried");
    assert_eq!(store.pending_count(), 0);

    let letters = store.dead_letters().unwrap();
    let letter = &letters[0];
    assert_eq!(letter.job.event_id.to_string(), event_id);
    assert_eq!(letter.job.destination, "crm");
    assert_eq!(letter.job.routes, ["every-lead"]);
    assert_eq!(letter.job.attempts, 1);
    assert_eq!(letter.job.last_status, Some(410));
    assert!(letter.reason.contains("410"), "{}", letter.reason);
    assert_eq!(
        letter.response_snippet.as_deref(),
        Some("channel_is_archived")
    );
    assert!(letter.job.first_attempt_at_ms.is_some() && letter.job.last_attempt_at_ms.is_some());
    // The event and its body stay for a later replay.
    let body = store
        .load_body(&letter.job.event_id)
        .unwrap()
        .expect("body kept");
    assert_eq!(body.as_ref(), fixture("lead.json").as_slice());
    assert_eq!(store.attempts(&letter.job.id).unwrap().len(), 1);
    daemon.stop().await;
}

#[tokio::test]
async fn exhausting_max_elapsed_dead_letters() {
    let crm = Receiver::start().await;
    crm.set_default(Reply::status(503));
    let config = format!(
        r#"
retry: {{ initial_interval: 20ms, multiplier: 1.5, max_interval: 50ms, max_elapsed: 300ms }}
destinations:
  crm: {{ url: "{}" }}
routes:
  - name: every-lead
    to: [crm]
"#,
        crm.url("/crm")
    );
    let daemon = TestDaemon::start(&config).await;
    daemon.post("lead", Some(KEY), fixture("lead.json")).await;
    let store = daemon.running().store().clone();
    eventually(WAIT, "the job to be given up", || store.dead_count() == 1).await;
    let letter = &store.dead_letters().unwrap()[0];
    assert!(
        letter.reason.starts_with("gave up after"),
        "{}",
        letter.reason
    );
    assert!(letter.job.attempts >= 3, "{}", letter.job.attempts);
    assert_eq!(letter.job.attempts as usize, crm.requests().len());
    daemon.stop().await;
}

#[tokio::test]
async fn jobs_survive_a_graceful_restart_and_go_to_the_current_url() {
    let dead_port = DownPort::reserve();
    let config = |url: &str| {
        format!(
            r#"
retry: {{ initial_interval: 50ms, max_interval: 200ms, max_elapsed: 1h }}
destinations:
  crm: {{ url: "{url}" }}
routes:
  - name: every-lead
    to: [crm]
"#
        )
    };
    let daemon = TestDaemon::start(&config(&format!("http://{dead_port}/crm"))).await;
    for _ in 0..3 {
        let (status, _) = daemon.post("lead", Some(KEY), fixture("lead.json")).await;
        assert_eq!(status, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(daemon.running().store().pending_count(), 3);
    let dir = daemon.stop().await;

    // Restart on the same store with the destination fixed.
    let crm = Receiver::start().await;
    let daemon = TestDaemon::start_in(dir, &config(&crm.url("/crm"))).await;
    let got = crm.wait_for(3, WAIT).await;
    assert!(got
        .iter()
        .all(|r| r.body.as_ref() == fixture("lead.json").as_slice()));
    let store = daemon.running().store().clone();
    eventually(WAIT, "the queue to drain", || store.pending_count() == 0).await;
    daemon.stop().await;
}
