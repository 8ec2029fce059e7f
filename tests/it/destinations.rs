//! Destinations that fit Slack and CRMs (issue 4), against real loopback receivers: body
//! formats and templates, pacing, Retry-After, per-destination classification, max_age and
//! signing.

use std::time::{Duration, Instant};

use crate::common;
use crate::common::{eventually, fixture, fixture_json, Receiver, Reply, TestDaemon, KEY};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// Millisecond retries, so failure paths finish quickly.
const RETRY: &str =
    "retry: { initial_interval: 20ms, multiplier: 2.0, max_interval: 5s, max_elapsed: 30s }\n";

fn body_json(r: &common::Recorded) -> Value {
    serde_json::from_slice(&r.body).expect("the destination got JSON")
}

/// A view fixture with its own id, so events are distinct.
fn view_numbered(n: usize) -> Vec<u8> {
    let mut v = fixture_json("view.json");
    v["id"] = json!(format!("view-{n}"));
    serde_json::to_vec(&v).expect("serializes")
}

#[tokio::test]
async fn slack_format_sends_exactly_the_expected_json_for_each_kind() {
    let slack = Receiver::start().await;
    let custom = Receiver::start().await;
    let config = format!(
        r#"{RETRY}destinations:
  slack:
    url: "{}"
    format: slack
  slack-custom:
    url: "{}"
    format: slack
    template: "{{{{ flag }}}} *{{{{ viewer_name | default('Someone') }}}}* watched *{{{{ video_title }}}}* ({{{{ percentage }}}}%)"
    blocks:
      - type: section
        text:
          type: mrkdwn
          text: "*{{{{ video_title }}}}*: {{{{ percentage }}}}% by {{{{ viewer_email }}}}"
      - type: context
        elements:
          - {{ type: plain_text, text: "{{{{ city }}}}, {{{{ country }}}}" }}
routes:
  - name: all
    to: [slack]
  - name: views
    event: view
    to: [slack-custom]
"#,
        slack.url("/services/T000/B000/XXXX"),
        custom.url("/custom")
    );
    let daemon = TestDaemon::start(&config).await;
    for kind in ["view", "interaction", "lead"] {
        let (status, answer) = daemon
            .post(kind, Some(KEY), fixture(&format!("{kind}.json")))
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    let got = slack.wait_for(3, WAIT).await;
    let by_kind = |kind: &str| {
        let r = got
            .iter()
            .find(|r| r.header("x-hookrouter-event") == kind)
            .unwrap_or_else(|| panic!("no {kind} message"));
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.method, "POST");
        body_json(r)
    };
    assert_eq!(
        by_kind("view"),
        json!({"text": "🇺🇸 *John Doe* watched *Interactive Video #9* (95%)"})
    );
    assert_eq!(
        by_kind("interaction"),
        json!({"text": "*John Doe* answered \u{201c}How can you get a good night's sleep?\u{201d} with *D. All of the Above* in *Interactive Video #9*"})
    );
    assert_eq!(
        by_kind("lead"),
        json!({"text": "New lead: *John Doe* (john.doe@example.com) from *Interactive Video #9*"})
    );

    let got = custom.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1, "only the view goes to slack-custom");
    assert_eq!(
        body_json(&got[0]),
        json!({
            "text": "🇺🇸 *John Doe* watched *Interactive Video #9* (95%)",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": "*Interactive Video #9*: 95% by john.doe@example.com"}},
                {"type": "context", "elements": [{"type": "plain_text", "text": "Flagami, United States"}]}
            ]
        })
    );
}

#[tokio::test]
async fn a_json_template_builds_a_hubspot_contact_with_a_bearer_token_and_a_signature() {
    let crm = Receiver::start().await;
    let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let config = format!(
        r#"{RETRY}destinations:
  hubspot:
    url: "{}"
    method: POST
    headers:
      Authorization: "Bearer pat-na1-test-token"
      X-Idempotency-Key: "{{{{ id }}}}"
    format: json
    body:
      properties:
        email: "{{{{ viewer_email }}}}"
        firstname: "{{{{ viewer_name | split(' ') | first }}}}"
        lastname: "{{{{ viewer_name | split(' ') | last }}}}"
        phone: "{{{{ viewer_phone }}}}"
        mindstamp_percentage: "{{{{ percentage }}}}"
        mindstamp_video: "{{{{ video_title }}}}"
        mindstamp_watched: "{{{{ elapsed }}}} s of {{{{ video_title }}}}"
    sign: {{ secret: "{secret}" }}
routes:
  - name: views
    event: view
    to: [hubspot]
"#,
        crm.url("/crm/v3/objects/contacts")
    );
    let daemon = TestDaemon::start(&config).await;
    let (status, answer) = daemon.post("view", Some(KEY), fixture("view.json")).await;
    assert_eq!(status, 200, "{answer}");

    let got = crm.wait_for(1, WAIT).await;
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/crm/v3/objects/contacts");
    assert_eq!(r.header("authorization"), "Bearer pat-na1-test-token");
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(
        r.header("x-idempotency-key"),
        "9bce33d1-120c-4bb5-8b5a-499896140f20"
    );
    assert_eq!(
        body_json(r),
        json!({"properties": {
            "email": "john.doe@example.com",
            "firstname": "John",
            "lastname": "Doe",
            "phone": "(321) 123-4567",
            "mindstamp_percentage": 95,
            "mindstamp_video": "Interactive Video #9",
            "mindstamp_watched": "172 s of Interactive Video #9"
        }})
    );
    // Standard Webhooks: webhook-id is the delivery id; the signature verifies.
    let id = r.header("webhook-id");
    assert_eq!(id, r.header("x-hookrouter-delivery"));
    let ts: u64 = r.header("webhook-timestamp").parse().expect("unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(ts.abs_diff(now) < 60, "{ts} vs {now}");
    let key = hookrouter::deliver::sign::SigningKey::parse(secret).expect("key");
    assert_eq!(r.header("webhook-signature"), key.sign(&id, ts, &r.body));
}

#[tokio::test]
async fn retry_after_pauses_only_that_destination() {
    let (crm, slack) = (Receiver::start().await, Receiver::start().await);
    crm.script([Reply::status(429).header("Retry-After", "2")]);
    let config = format!(
        r#"{RETRY}destinations:
  crm:
    url: "{}"
  slack:
    url: "{}"
routes:
  - name: all
    to: [crm, slack]
"#,
        crm.url("/crm"),
        slack.url("/slack")
    );
    let daemon = TestDaemon::start(&config).await;
    let (status, _) = daemon.post("view", Some(KEY), view_numbered(1)).await;
    assert_eq!(status, 200);
    let limited_at = crm.wait_for(1, WAIT).await[0].at;
    for n in 2..=3 {
        let (status, _) = daemon.post("view", Some(KEY), view_numbered(n)).await;
        assert_eq!(status, 200);
    }
    // The other destination keeps receiving at once.
    let to_slack = slack.wait_for(3, WAIT).await;
    for r in &to_slack {
        let after = r.at.saturating_duration_since(limited_at);
        assert!(
            after < Duration::from_millis(1000),
            "slack waited {after:?}"
        );
    }
    // crm: the 429'd job and the two new ones all wait for the pause, then go through.
    let to_crm = crm.wait_for(4, WAIT).await;
    eprintln!(
        "crm resumed {:?} after the 429; slack got its last {:?} after it",
        to_crm[1].at.duration_since(limited_at),
        to_slack[2].at.saturating_duration_since(limited_at)
    );
    for r in &to_crm[1..] {
        let after = r.at.duration_since(limited_at);
        assert!(
            after >= Duration::from_millis(1900) && after < Duration::from_millis(3500),
            "crm request {after:?} after the 429"
        );
    }
    let mut ids: Vec<String> = to_crm[1..]
        .iter()
        .map(|r| body_json(r)["id"].as_str().unwrap_or("").to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["view-1", "view-2", "view-3"]);
    eventually(WAIT, "the queue to drain", || {
        daemon.running().store().pending_count() == 0
    })
    .await;
    assert_eq!(daemon.running().store().dead_count(), 0);
}

#[tokio::test]
async fn a_rate_limit_of_5_per_second_spaces_20_jobs_over_about_4_seconds() {
    let slack = Receiver::start().await;
    let config = format!(
        r#"{RETRY}destinations:
  slack:
    url: "{}"
    rate_limit: 5/s
routes:
  - name: all
    to: [slack]
"#,
        slack.url("/slack")
    );
    let daemon = TestDaemon::start(&config).await;
    let posted = Instant::now();
    for n in 0..20 {
        let (status, _) = daemon.post("view", Some(KEY), view_numbered(n)).await;
        assert_eq!(status, 200);
    }
    let got = slack.wait_for(20, Duration::from_secs(15)).await;
    let span = got[19].at.duration_since(got[0].at);
    eprintln!("20 jobs at 5/s: first to last {span:?}");
    assert!(
        span >= Duration::from_millis(3000) && span < Duration::from_millis(6000),
        "20 jobs at 5/s took {span:?} (expected about 3.8 s)"
    );
    for pair in got.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(150), "two sends {gap:?} apart");
    }
    assert!(got[19].at.duration_since(posted) >= Duration::from_millis(3000));
    assert_eq!(got.len(), 20);
}

#[tokio::test]
async fn body_rules_decide_permanent_and_retryable_failures() {
    let (slack, salesforce) = (Receiver::start().await, Receiver::start().await);
    // A retryable status, but the body says it will never work.
    slack.set_default(Reply::status(503).body("channel_is_archived"));
    // A status that is permanent by default, but the body says "later".
    salesforce
        .script([Reply::status(403)
            .body(r#"[{"message":"limit","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#)]);
    let config = format!(
        r#"{RETRY}destinations:
  slack:
    url: "{}"
    format: slack
    permanent_if_body: "channel_is_archived|invalid_payload"
  salesforce:
    url: "{}"
    retry_if_body: "REQUEST_LIMIT_EXCEEDED"
routes:
  - name: leads
    event: lead
    to: [slack, salesforce]
"#,
        slack.url("/slack"),
        salesforce.url("/sf")
    );
    let daemon = TestDaemon::start(&config).await;
    let (status, _) = daemon.post("lead", Some(KEY), fixture("lead.json")).await;
    assert_eq!(status, 200);
    let store = daemon.running().store();
    eventually(WAIT, "the slack job to be dead-lettered", || {
        store.dead_count() == 1
    })
    .await;
    let letters = store.dead_letters().expect("dead letters");
    assert_eq!(letters[0].job.destination, "slack");
    assert!(
        letters[0].reason.contains("permanent_if_body"),
        "{}",
        letters[0].reason
    );
    assert_eq!(
        letters[0].response_snippet.as_deref(),
        Some("channel_is_archived")
    );
    // Salesforce's 403 was retried and then delivered.
    salesforce.wait_for(2, WAIT).await;
    eventually(WAIT, "the queue to drain", || store.pending_count() == 0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        slack.requests().len(),
        1,
        "a permanent failure is not retried"
    );
    assert_eq!(store.dead_count(), 1);
}

#[tokio::test]
async fn a_job_older_than_max_age_is_dead_lettered_as_stale_instead_of_sent() {
    let slack = Receiver::start().await;
    slack.script([Reply::status(500)]);
    let config = format!(
        r#"retry: {{ initial_interval: 600ms, multiplier: 2.0, max_interval: 5s, max_elapsed: 30s }}
destinations:
  slack:
    url: "{}"
    format: slack
    max_age: 200ms
routes:
  - name: views
    to: [slack]
"#,
        slack.url("/slack")
    );
    let daemon = TestDaemon::start(&config).await;
    let (status, _) = daemon.post("view", Some(KEY), fixture("view.json")).await;
    assert_eq!(status, 200);
    let store = daemon.running().store();
    // The first attempt fails; by the retry (600 ms later) the event is too old.
    eventually(WAIT, "the job to be dead-lettered", || {
        store.dead_count() == 1
    })
    .await;
    let letters = store.dead_letters().expect("dead letters");
    assert!(
        letters[0].reason.starts_with("stale: the event is"),
        "{}",
        letters[0].reason
    );
    assert!(
        letters[0].reason.contains("max_age 200ms"),
        "{}",
        letters[0].reason
    );
    assert_eq!(store.pending_count(), 0);
    assert_eq!(slack.requests().len(), 1, "the stale retry was not sent");
}

#[tokio::test]
async fn a_template_that_fails_at_delivery_time_dead_letters_with_the_reason() {
    let crm = Receiver::start().await;
    let config = format!(
        r#"{RETRY}destinations:
  crm:
    url: "{}"
    format: json
    body:
      properties:
        firstname: "{{{{ name | split(' ') | first }}}}"
routes:
  - name: all
    to: [crm]
"#,
        crm.url("/crm")
    );
    let daemon = TestDaemon::start(&config).await;
    // A view has viewer_name, not name: the filter meets an undefined value.
    let (status, _) = daemon.post("view", Some(KEY), fixture("view.json")).await;
    assert_eq!(status, 200);
    let store = daemon.running().store();
    eventually(WAIT, "the job to be dead-lettered", || {
        store.dead_count() == 1
    })
    .await;
    let letters = store.dead_letters().expect("dead letters");
    assert!(
        letters[0]
            .reason
            .starts_with("permanent failure: template error in body.properties.firstname:"),
        "{}",
        letters[0].reason
    );
    // The daemon is still fine: a lead (which has `name`) renders and is delivered.
    let (status, _) = daemon.post("lead", Some(KEY), fixture("lead.json")).await;
    assert_eq!(status, 200);
    let got = crm.wait_for(1, WAIT).await;
    assert_eq!(
        body_json(&got[0]),
        json!({"properties": {"firstname": "John"}})
    );
}
