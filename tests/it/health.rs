//! Destination health against real receivers: a failing destination is held (not
//! dead-lettered), probed at a growing interval, resumed when it answers again; alerts go
//! through the queue to an alert destination; dead letters come as one digest; a route
//! with `expect:` and no traffic alerts; a hold survives a restart.

use std::time::{Duration, Instant};

use crate::common;
use crate::common::{eventually, fixture, Receiver, Reply, TestDaemon, KEY};
use reqwest::Method;
use serde_json::Value;

/// The health of `destination` as `GET /queue` shows it.
async fn health(d: &TestDaemon, destination: &str) -> Value {
    let (status, q) = d.admin(Method::GET, "/queue").await;
    assert_eq!(status, 200, "{q}");
    q["destinations"][destination]["health"].clone()
}

async fn wait_state(d: &TestDaemon, destination: &str, state: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let h = health(d, destination).await;
        if h["state"] == state {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "{destination} not {state} after {timeout:?}: {h}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The alerts `ops` received, as JSON bodies (it is a raw-format destination).
fn alerts(ops: &Receiver) -> Vec<Value> {
    ops.requests()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("an alert is JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_is_held_probed_and_resumed_without_losing_a_job() {
    let crm = Receiver::start().await;
    crm.set_default(Reply::status(500));
    let ops = Receiver::start().await;
    // max_elapsed 4s: without the hold's pause on the budget, every job would be dead
    // long before the destination comes back.
    let d = TestDaemon::start(&format!(
        r#"
retry: {{ initial_interval: 100ms, max_interval: 200ms, max_elapsed: 4s }}
destinations:
  crm:
    url: "{crm}"
    health: {{ failing_after_failures: 3, hold_after_failures: 5, hold_after: 300ms, probe_every: 400ms, probe_max: 1600ms }}
  ops: {{ url: "{ops}" }}
routes:
  - {{ name: leads, event: lead, to: [crm] }}
alerts:
  to: [ops]
  on: [destination_failing, destination_held, destination_recovered]
"#,
        crm = crm.url("/crm"),
        ops = ops.url("/ops"),
    ))
    .await;
    for _ in 0..20 {
        let (status, body) = d.post("lead", Some(KEY), fixture("lead.json")).await;
        assert_eq!(status, 200, "{body}");
    }
    let held = wait_state(&d, "crm", "held", Duration::from_secs(30)).await;
    assert_eq!(held["held_by_operator"], false);
    assert!(
        held["consecutive_failures"].as_u64().unwrap() >= 5,
        "{held}"
    );
    assert!(
        held["last_error"].as_str().unwrap().contains("500"),
        "{held}"
    );
    // Deliveries started before the hold may still finish; count from a quiet moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = crm.requests().len();
    // Held for longer than max_elapsed: only probes reach the destination meanwhile.
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let probes: Vec<Instant> = crm.requests()[before..].iter().map(|r| r.at).collect();
    assert!(
        (2..=6).contains(&probes.len()),
        "expected a few probes in 4.5 s (after 0.4 s, then 0.8, 1.6, 1.6 s apart), got {}",
        probes.len()
    );
    let gaps: Vec<Duration> = probes.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, gap) in gaps.iter().enumerate() {
        assert!(
            *gap >= Duration::from_millis(600),
            "probe {} came {gap:?} after the one before: the interval must double from 400 ms",
            i + 1
        );
    }
    let (_, q) = d.admin(Method::GET, "/queue").await;
    assert_eq!(q["destinations"]["crm"]["dead"], 0, "{q}");
    assert_eq!(
        q["destinations"]["crm"]["pending"].as_u64().unwrap()
            + q["destinations"]["crm"]["retrying"].as_u64().unwrap(),
        20,
        "every job is kept while held: {q}"
    );
    let (_, metrics) = metrics_text(&d).await;
    assert!(
        metrics.contains(r#"hookrouter_destination_state{destination="crm",state="held"} 1"#),
        "{metrics}"
    );

    // The destination comes back: the next probe succeeds and every job is delivered.
    crm.set_default(Reply::status(200));
    wait_state(&d, "crm", "healthy", Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, q) = d.admin(Method::GET, "/queue").await;
        let c = &q["destinations"]["crm"];
        if c["pending"] == 0 && c["retrying"] == 0 {
            assert_eq!(c["dead"], 0, "no job was dead-lettered: {q}");
            break;
        }
        assert!(Instant::now() < deadline, "jobs still queued: {q}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = crm
        .requests()
        .iter()
        .filter(|r| r.header("x-hookrouter-event") == "lead")
        .map(|r| r.header("x-hookrouter-delivery"))
        .collect::<std::collections::HashSet<_>>();
    assert_eq!(delivered.len(), 20, "every job reached the destination");

    // The alert destination got failing, held and recovered, once each, in that order.
    eventually(Duration::from_secs(10), "three alerts", || {
        ops.requests().len() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = alerts(&ops);
    let kinds: Vec<&str> = got.iter().map(|a| a["alert"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "destination_failing",
            "destination_held",
            "destination_recovered"
        ]
    );
    for a in &got {
        assert_eq!(a["destination"], "crm");
        assert!(
            a["text"].as_str().unwrap().contains("destination crm"),
            "{a}"
        );
    }
    assert_eq!(got[1]["state"], "held");
    assert_eq!(got[1]["hint"], "hookrouter destination release crm");
    assert_eq!(got[1]["last_status"], 500);
    for r in ops.requests() {
        assert_eq!(r.header("x-hookrouter-event"), "alert");
    }
    let (_, metrics) = metrics_text(&d).await;
    assert!(
        metrics.contains(r#"hookrouter_alerts_sent_total{event="destination_held"} 1"#),
        "{metrics}"
    );
    d.stop().await;
}

async fn metrics_text(d: &TestDaemon) -> (u16, String) {
    let resp = reqwest::get(format!("{}/metrics", d.admin_url()))
        .await
        .expect("metrics");
    (resp.status().as_u16(), resp.text().await.expect("text"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_dead_letters_make_one_digest() {
    let gone = Receiver::start().await;
    gone.set_default(Reply::status(400).body("no such list"));
    let ops = Receiver::start().await;
    let d = TestDaemon::start(&format!(
        r#"
destinations:
  gone:
    url: "{gone}"
    health: {{ hold_after_failures: 0 }}
  ops: {{ url: "{ops}" }}
routes:
  - {{ name: views, event: view, to: [gone] }}
alerts:
  to: [ops]
  on: [dead_letter]
  digest_every: 8s
"#,
        gone = gone.url("/gone"),
        ops = ops.url("/ops"),
    ))
    .await;
    // Fifty at once, so they die within one digest window even on a slow machine.
    let client = reqwest::Client::new();
    let url = format!("http://{}/webhooks/view", d.addr);
    let posts: Vec<_> = (0..50)
        .map(|_| {
            let request = client
                .post(&url)
                .header("X-KEY", KEY)
                .header("content-type", "application/json")
                .body(fixture("view.json"));
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    for post in posts {
        assert_eq!(post.await.unwrap().unwrap(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, q) = d.admin(Method::GET, "/queue").await;
        if q["destinations"]["gone"]["dead"] == 50 {
            break;
        }
        assert!(Instant::now() < deadline, "not all dead yet: {q}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually(Duration::from_secs(15), "the digest", || {
        !ops.requests().is_empty()
    })
    .await;
    // No second message follows: the digest had all of them.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let got = alerts(&ops);
    assert_eq!(got.len(), 1, "one digest, not one message each: {got:?}");
    assert_eq!(got[0]["alert"], "dead_letter");
    assert_eq!(got[0]["count"], 50);
    let text = got[0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("hookrouter: 50 dead letters for gone in the last 8s"),
        "{text}"
    );
    assert_eq!(got[0]["hint"], "hookrouter dead list --destination gone");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_no_traffic_alerts_once_and_again_when_traffic_returns() {
    let crm = Receiver::start().await;
    let ops = Receiver::start().await;
    let d = TestDaemon::start(&format!(
        r#"
destinations:
  crm: {{ url: "{crm}" }}
  ops: {{ url: "{ops}", format: slack }}
routes:
  - name: leads
    event: lead
    to: [crm]
    expect: {{ at_least: 1, per: 2s }}
alerts:
  to: [ops]
"#,
        crm = crm.url("/crm"),
        ops = ops.url("/ops"),
    ))
    .await;
    eventually(Duration::from_secs(15), "the silence alert", || {
        !ops.requests().is_empty()
    })
    .await;
    // Said once, however long the silence lasts.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = alerts(&ops);
    assert_eq!(got.len(), 1, "{got:?}");
    // A Slack alert destination gets a Slack message: the alert's one line.
    let text = got[0]["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "hookrouter: route leads matched 0 events in the last 2s (expected at least 1)"
        ),
        "{text}"
    );
    let (status, _) = d.post("lead", Some(KEY), fixture("lead.json")).await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(15), "the traffic-back alert", || {
        ops.requests().len() >= 2
    })
    .await;
    let got = alerts(&ops);
    let text = got[1]["text"].as_str().unwrap();
    assert!(
        text.starts_with("hookrouter: route leads has traffic again (1 events"),
        "{text}"
    );
    d.stop().await;
}

fn hookrouter(args: &[&str]) -> std::process::Output {
    common::hookrouter(args)
        .env_remove(&["HOOKROUTER_ADMIN", "HOOKROUTER_ADMIN_TOKEN"])
        .output()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_hold_sends_nothing_survives_a_restart_and_is_released_by_the_cli() {
    let crm = Receiver::start().await;
    let rest = format!(
        r#"
destinations:
  crm: {{ url: "{}" }}
routes:
  - {{ name: leads, event: lead, to: [crm] }}
"#,
        crm.url("/crm")
    );
    let d = TestDaemon::start(&rest).await;
    let (status, body) = d.admin(Method::POST, "/destinations/nope/hold").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "unknown_destination");
    let (status, body) = d.admin(Method::GET, "/destinations/crm/hold").await;
    assert_eq!(status, 405, "{body}");

    let admin = d.admin_url();
    let out = hookrouter(&["destination", "hold", "crm", "--admin", &admin]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("crm is held"), "{said}");
    let (status, body) = d.admin(Method::POST, "/destinations/crm/hold").await;
    assert_eq!(status, 200);
    assert_eq!(body["changed"], false, "already held: {body}");

    for _ in 0..3 {
        let (status, _) = d.post("lead", Some(KEY), fixture("lead.json")).await;
        assert_eq!(status, 200);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        crm.requests().len(),
        0,
        "a held destination is sent nothing"
    );

    let status_out = hookrouter(&["status", "--admin", &admin]);
    let table = String::from_utf8_lossy(&status_out.stdout);
    assert!(table.contains("held (operator)"), "{table}");
    assert!(
        table.contains("resume by hand: hookrouter destination release crm"),
        "{table}"
    );

    // Across a restart it is still held, and its jobs are still queued.
    let dir = d.stop().await;
    let d = TestDaemon::start_in(dir, &rest).await;
    let h = health(&d, "crm").await;
    assert_eq!(h["state"], "held", "{h}");
    assert_eq!(h["held_by_operator"], true, "{h}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(crm.requests().len(), 0, "still held after the restart");

    let admin = d.admin_url();
    let out = hookrouter(&["destination", "release", "crm", "--admin", &admin]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("crm is released"));
    crm.wait_for(3, Duration::from_secs(15)).await;
    assert_eq!(health(&d, "crm").await["state"], "healthy");
    d.stop().await;
}

struct ReadmeEnv;

impl hookrouter::config::Env for ReadmeEnv {
    fn var(&self, name: &str) -> Option<String> {
        Some(match name {
            "SLACK_WEBHOOK_URL" | "OPS_SLACK_WEBHOOK_URL" => {
                "https://hooks.slack.com/services/T0/B0/X".to_string()
            }
            other => format!("value-of-{other}"),
        })
    }
}

/// The configuration reference is what operators copy: it loads, with its health, alerts
/// and expect settings as documented.
#[test]
fn the_readme_configuration_reference_loads_with_its_health_and_alerts() {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("## Configuration reference")
        .nth(1)
        .expect("the README has a configuration reference");
    let block = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("its first block is YAML");
    let config =
        hookrouter::config::Config::from_yaml(block, std::path::Path::new("README.md"), &ReadmeEnv)
            .unwrap_or_else(|e| panic!("the README's configuration reference is invalid:\n{e}"));
    assert_eq!(config.health.hold_after_failures, 10);
    assert_eq!(config.health.probe_max, Duration::from_secs(600));
    let alerts = config.alerts.as_ref().expect("alerts configured");
    assert_eq!(alerts.to, ["ops-slack"]);
    assert_eq!(alerts.on.len(), 5);
    assert_eq!(alerts.digest_every, Duration::from_secs(600));
    let every_lead = config
        .rules
        .routes()
        .iter()
        .find(|r| r.name == "every-lead")
        .expect("route every-lead");
    assert_eq!(
        every_lead.expect.map(|e| (e.at_least, e.per)),
        Some((1, Duration::from_secs(6 * 3600)))
    );
    assert_eq!(config.expect.len(), 1);
}

/// Mistakes in the new sections are config errors with their place.
#[test]
fn bad_health_and_alert_settings_are_reported_with_their_place() {
    let text = r#"
keys: ["k-1234"]
health: { probe_every: 1m, probe_max: 10s }
destinations:
  crm:
    url: "http://127.0.0.1:9/x"
    health: { failing_error_share: 2, hold_afterr: 1m }
routes:
  - name: leads
    event: lead
    to: [crm]
    expect: { at_least: 0, per: 1h }
alerts:
  to: [pager]
  on: [destination_down]
expect:
  video: { per: 1h }
"#;
    let err =
        hookrouter::config::Config::from_yaml(text, std::path::Path::new("r.yaml"), &ReadmeEnv)
            .expect_err("invalid");
    let shown = err.to_string();
    for needle in [
        "r.yaml:3:",
        "health.probe_max: must not be shorter than probe_every",
        "r.yaml:7:",
        "hold_afterr",
        "route \"leads\": expect.at_least: must be at least 1",
        "alerts.to.0: unknown destination \"pager\"",
        "alerts.on.0: unknown alert \"destination_down\"",
        "expect.video: unknown event kind",
    ] {
        assert!(shown.contains(needle), "missing {needle:?} in:\n{shown}");
    }
}
