//! Replay from the journal: unrouted events kept and replayed after a rule fix, a replay
//! `--since` to a new destination (exactly the matching events, once each, paced) whose dry
//! run sends nothing and counts the same, cancelling, a replay surviving `kill -9` midway,
//! and `event list` with its filters and pages.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::{
    admin_cli as cli, fixture_json, server_block, DaemonProcess, Receiver, Reply, TestDaemon, KEY,
};
use reqwest::Method;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn lead(id: &str) -> String {
    let mut lead = fixture_json("lead.json");
    lead["id"] = Value::from(id);
    lead.to_string()
}

fn view(id: &str) -> String {
    let mut view = fixture_json("view.json");
    view["id"] = Value::from(id);
    view.to_string()
}

/// The Mindstamp ids in the bodies a receiver got, with how many distinct delivery ids
/// each came with.
fn delivered_ids(receiver: &Receiver) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in receiver.requests() {
        let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
        let id = body["id"].as_str().unwrap_or_default().to_string();
        out.entry(id)
            .or_default()
            .insert(r.header("x-hookrouter-delivery"));
    }
    out
}

/// Waits until replay `id` is no longer running; returns its record.
async fn replay_finished(daemon: &TestDaemon, id: &str) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, record) = daemon.admin(Method::GET, &format!("/replays/{id}")).await;
        assert_eq!(status, 200, "{record}");
        if record["state"] != "running" {
            return record;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replay still running: {record}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `destination` has nothing queued or in flight.
async fn drained(daemon: &TestDaemon, destination: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, queue) = daemon.admin(Method::GET, "/queue").await;
        let d = &queue["destinations"][destination];
        if d["pending"] == 0 && d["retrying"] == 0 && d["in_flight"] == 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{queue}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rules_leads_to(crm: &Receiver, extra_dest: &str, extra_route: &str) -> String {
    format!(
        r#"
destinations:
  crm: {{ url: "{}" }}
{extra_dest}
routes:
  - {{ name: leads, event: lead, to: [crm] }}
{extra_route}
"#,
        crm.url("/crm")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_events_are_kept_listed_and_replayed_after_a_rule_fix() {
    let crm = Receiver::start().await;
    let daemon = TestDaemon::start(&rules_leads_to(&crm, "", "")).await;
    let mut unrouted = BTreeSet::new();
    for i in 0..3 {
        let (status, body) = daemon.post("view", Some(KEY), view(&format!("v{i}"))).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("unrouted")));
        let id = body["event_id"]
            .as_str()
            .expect("an unrouted event has an id");
        assert!(!id.is_empty(), "{body}");
        unrouted.insert(id.to_string());
    }
    for i in 0..2 {
        let (status, body) = daemon.post("lead", Some(KEY), lead(&format!("l{i}"))).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("accepted")));
    }
    crm.wait_for(2, WAIT).await;

    let (status, list) = daemon
        .admin(Method::GET, "/events?since=1h&status=unrouted")
        .await;
    assert_eq!(status, 200, "{list}");
    let listed: BTreeSet<String> = list["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, unrouted, "{list}");
    assert!(list["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["kind"] == "view" && e["deliveries"].as_array().unwrap().is_empty()));

    // The rule fix: views go to the CRM too. A replay of what is unrouted sends exactly
    // the three views, once each, and nothing to the leads again.
    daemon.rewrite_config(&rules_leads_to(
        &crm,
        "",
        "  - { name: views, event: view, to: [crm] }",
    ));
    daemon.running().reload().expect("valid reload");
    let (status, started) = daemon
        .admin(Method::POST, "/replay?since=1h&status=unrouted")
        .await;
    assert_eq!(status, 202, "{started}");
    // Selected by time; the status filter then leaves the two delivered leads out.
    assert_eq!(started["selected"], 5, "{started}");
    let record = replay_finished(&daemon, started["id"].as_str().unwrap()).await;
    assert_eq!(record["state"], "done", "{record}");
    assert_eq!(
        record["destinations"],
        serde_json::json!({"crm": 3}),
        "{record}"
    );
    assert_eq!(
        (record["processed"].as_u64(), record["not_sent"].as_u64()),
        (Some(5), Some(2))
    );
    crm.wait_for(5, WAIT).await;
    let got = delivered_ids(&crm);
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        ["l0", "l1", "v0", "v1", "v2"]
    );
    assert!(got.values().all(|d| d.len() == 1), "{got:?}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_since_backfills_a_new_destination_once_each_paced_and_the_dry_run_counts_the_same(
) {
    let (crm, crm2) = (Receiver::start().await, Receiver::start().await);
    let daemon = TestDaemon::start(&rules_leads_to(&crm, "", "")).await;
    let mut big = BTreeSet::new();
    for i in 0..8 {
        let mut body = fixture_json("lead.json");
        body["id"] = Value::from(format!("l{i}"));
        // Half of them are big deals: the new CRM's route takes only those.
        let deal = if i % 2 == 0 { 5000 } else { 10 };
        body["custom_id"] = Value::from(deal);
        if deal > 1000 {
            big.insert(format!("l{i}"));
        }
        let (status, _) = daemon.post("lead", Some(KEY), body.to_string()).await;
        assert_eq!(status, 200);
    }
    for i in 0..3 {
        daemon.post("view", Some(KEY), view(&format!("v{i}"))).await;
    }
    crm.wait_for(8, WAIT).await;

    daemon.rewrite_config(&rules_leads_to(
        &crm,
        &format!(
            "  crm2: {{ url: \"{}\", rate_limit: 5/s, concurrency: 1 }}",
            crm2.url("/crm2")
        ),
        "  - { name: big-deals, event: lead, match: { custom_id: { gt: 1000 } }, to: [crm2] }",
    ));
    daemon.running().reload().expect("valid reload");

    let (status, plan) = daemon
        .admin(Method::POST, "/replay?since=1h&to=crm2&dry_run=1&explain=1")
        .await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["selected"], 11, "{plan}");
    assert_eq!(
        plan["destinations"],
        serde_json::json!({"crm2": 4}),
        "{plan}"
    );
    assert_eq!(plan["not_sent"], 7, "{plan}");
    let events = plan["events"].as_array().unwrap();
    assert_eq!(events.len(), 11);
    assert!(
        events.iter().all(|e| e["explain"]
            .as_str()
            .is_some_and(|t| t.contains("big-deals"))),
        "{plan}"
    );

    let (status, started) = daemon.admin(Method::POST, "/replay?since=1h&to=crm2").await;
    assert_eq!(status, 202, "{started}");
    let record = replay_finished(&daemon, started["id"].as_str().unwrap()).await;
    assert_eq!(record["state"], "done", "{record}");
    assert_eq!(record["destinations"], plan["destinations"], "{record}");
    let requests = crm2.wait_for(4, WAIT).await;
    // Judged once crm2 has nothing left queued or in flight.
    drained(&daemon, "crm2").await;
    let got = delivered_ids(&crm2);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), big, "{got:?}");
    assert!(got.values().all(|d| d.len() == 1), "{got:?}");
    // Paced by crm2's own limit, 5/s: one every 200 ms at the most.
    let mut at: Vec<_> = requests.iter().map(|r| r.at).collect();
    at.sort();
    let span = at[at.len() - 1] - at[0];
    assert!(
        span >= Duration::from_millis(3 * 200 - 50),
        "4 deliveries at 5/s took only {span:?}"
    );
    // The CRM got nothing twice, and the new deliveries have ids of their own.
    assert_eq!(crm.requests().len(), 8);
    let old: BTreeSet<String> = crm
        .requests()
        .iter()
        .map(|r| r.header("x-hookrouter-delivery"))
        .collect();
    assert!(got.values().flatten().all(|d| !old.contains(d)));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_replay_queues_no_more() {
    let slow = Receiver::start().await;
    slow.set_default(Reply::status(200).delay(Duration::from_millis(100)));
    let daemon = TestDaemon::start(&format!(
        r#"
destinations:
  slow: {{ url: "{}", concurrency: 1 }}
routes:
  - {{ name: none, event: interaction, to: [slow] }}
"#,
        slow.url("/slow")
    ))
    .await;
    for i in 0..250 {
        daemon.post("lead", Some(KEY), lead(&format!("l{i}"))).await;
    }
    let (status, started) = daemon
        .admin(Method::POST, "/replay?since=1h&kind=lead&to=slow")
        .await;
    // Nothing routes leads to `slow` today: the replay sends nothing, and says so.
    assert_eq!(status, 202, "{started}");
    let record = replay_finished(&daemon, started["id"].as_str().unwrap()).await;
    assert_eq!(
        (record["processed"].as_u64(), record["not_sent"].as_u64()),
        (Some(250), Some(250))
    );

    daemon.rewrite_config(&format!(
        r#"
destinations:
  slow: {{ url: "{}", concurrency: 1 }}
routes:
  - {{ name: leads, event: lead, to: [slow] }}
"#,
        slow.url("/slow")
    ));
    daemon.running().reload().expect("valid reload");
    let (status, started) = daemon.admin(Method::POST, "/replay?since=1h").await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    let (status, cancelled) = daemon
        .admin(Method::POST, &format!("/replays/{id}/cancel"))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    let (status, again) = daemon
        .admin(Method::POST, &format!("/replays/{id}/cancel"))
        .await;
    assert_eq!(
        (status, again["error"].as_str()),
        (409, Some("not_running"))
    );
    let record = replay_finished(&daemon, &id).await;
    let jobs = record["destinations"]["slow"].as_u64().unwrap_or(0);
    assert!(
        jobs <= hookrouter::replay::WINDOW + 50,
        "a cancelled replay queued {jobs} deliveries"
    );
    // What it had queued is delivered, and nothing more.
    slow.wait_for(jobs as usize, WAIT).await;
    drained(&daemon, "slow").await;
    assert_eq!(slow.requests().len() as u64, jobs);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_survives_kill_9_midway_and_sends_each_event_under_one_delivery_id() {
    let slow = Receiver::start().await;
    slow.set_default(Reply::status(200).delay(Duration::from_millis(20)));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routes.yaml");
    let write = |routes: &str| {
        let text = format!(
            "{}keys: [{KEY}]\ndestinations:\n  slow: {{ url: \"{}\", concurrency: 1 }}\nroutes:\n{routes}",
            server_block(&dir.path().join("data")),
            slow.url("/slow")
        );
        std::fs::write(&config, text).unwrap();
    };
    write("  - { name: none, event: interaction, to: [slow] }\n");
    let mut daemon = DaemonProcess::spawn(&config);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    const EVENTS: usize = 300;
    for i in 0..EVENTS {
        let resp = client
            .post(format!("http://{}/webhooks/lead", daemon.addr))
            .header("X-KEY", KEY)
            .body(lead(&format!("l{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    write("  - { name: leads, event: lead, to: [slow] }\n");
    let admin = format!(
        "http://{}",
        daemon.admin_addr.expect("admin address logged")
    );
    // State changes need a JSON content type (no form can send one cross-site).
    let resp = client
        .post(format!("{admin}/reload"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let started: Value = client
        .post(format!("{admin}/replay?since=1h"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["id"].as_str().expect("replay id").to_string();
    // Midway: some delivered, most not yet queued (the replay keeps 100 queued at most).
    slow.wait_for(40, WAIT).await;
    daemon.kill9();
    let before = slow.requests().len();
    assert!(before < EVENTS, "the replay finished before the kill");

    let daemon = DaemonProcess::spawn(&config);
    let admin = format!(
        "http://{}",
        daemon.admin_addr.expect("admin address logged")
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let record = loop {
        let record: Value = client
            .get(format!("{admin}/replays/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if record["state"] != "running" {
            break record;
        }
        assert!(std::time::Instant::now() < deadline, "{record}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(record["state"], "done", "{record}");
    assert_eq!(record["processed"], EVENTS as u64, "{record}");
    assert_eq!(record["destinations"]["slow"], EVENTS as u64, "{record}");
    slow.wait_for(EVENTS, Duration::from_secs(120)).await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let queue: Value = client
            .get(format!("{admin}/queue"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if queue["total"]["pending"] == 0 && queue["total"]["retrying"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{queue}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = delivered_ids(&slow);
    assert_eq!(got.len(), EVENTS, "every event replayed");
    // A crash may resend a delivery (the same id: at-least-once); it never queues an
    // event twice under a second delivery id.
    let twice: Vec<_> = got.iter().filter(|(_, d)| d.len() > 1).collect();
    assert!(twice.is_empty(), "queued twice: {twice:?}");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_list_filters_pages_newest_first_and_explains_bad_queries() {
    let crm = Receiver::start().await;
    let daemon = TestDaemon::start(&rules_leads_to(&crm, "", "")).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (_, body) = daemon.post("lead", Some(KEY), lead(&format!("l{i}"))).await;
        ids.push(body["event_id"].as_str().unwrap().to_string());
    }
    daemon.post("view", Some(KEY), view("v0")).await;
    crm.wait_for(5, WAIT).await;
    // Delivered records settle with the next batch or within a second.
    let (_, page) = daemon
        .admin(Method::GET, "/events?since=1h&kind=lead&limit=2")
        .await;
    let page_ids: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(page_ids, [ids[4].as_str(), ids[3].as_str()], "{page}");
    let next = page["next_before"].as_str().expect("a next page");
    let (_, rest) = daemon
        .admin(
            Method::GET,
            &format!("/events?since=1h&kind=lead&limit=10&before={next}"),
        )
        .await;
    let rest_ids: Vec<&str> = rest["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        rest_ids,
        [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]
    );
    assert!(rest.get("next_before").is_none(), "{rest}");

    let (_, one) = daemon
        .admin(
            Method::GET,
            "/events?since=1h&mindstamp_id=l3&destination=crm",
        )
        .await;
    let one = one["events"].as_array().unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["id"], ids[3].as_str());
    assert_eq!(one[0]["status"], "delivered");
    assert_eq!(one[0]["deliveries"][0]["destination"], "crm");
    let (_, dead) = daemon
        .admin(Method::GET, "/events?since=1h&status=dead")
        .await;
    assert_eq!(dead["events"], serde_json::json!([]));
    let (_, older) = daemon.admin(Method::GET, "/events?since=1h&until=1h").await;
    assert_eq!(older["events"], serde_json::json!([]));

    for (query, code) in [
        ("", "invalid_query"),
        ("?since=yesterday", "invalid_query"),
        ("?since=1h&status=lost", "invalid_query"),
        ("?since=1h&kind=click", "invalid_query"),
        ("?since=1h&before=nope", "invalid_id"),
    ] {
        let (status, body) = daemon.admin(Method::GET, &format!("/events{query}")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
    }
    for (query, status, code) in [
        ("", 400, "invalid_replay"),
        ("?until=1h", 400, "invalid_query"),
        ("?since=1h&to=nowhere", 409, "unknown_destination"),
        (
            "?events=0190c0de-0000-7000-8000-000000000000",
            404,
            "not_found",
        ),
    ] {
        let (s, body) = daemon.admin(Method::POST, &format!("/replay{query}")).await;
        assert_eq!(
            (s, body["error"].as_str()),
            (status, Some(code)),
            "{query}: {body}"
        );
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_events_dry_runs_replays_one_and_shows_it_in_status() {
    let crm = Receiver::start().await;
    let daemon = TestDaemon::start(&rules_leads_to(&crm, "", "")).await;
    let (_, lead_answer) = daemon.post("lead", Some(KEY), lead("l0")).await;
    let lead_id = lead_answer["event_id"].as_str().unwrap().to_string();
    let (_, view_answer) = daemon.post("view", Some(KEY), view("v0")).await;
    let view_id = view_answer["event_id"].as_str().unwrap().to_string();
    crm.wait_for(1, WAIT).await;
    let admin = daemon.admin_url();
    let run = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(["--admin".to_string(), admin.clone()]);
        cli(all)
    };

    let (code, out, err) = run(&["event", "list", "--since", "1h", "--status", "unrouted"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&view_id) && !out.contains(&lead_id), "{out}");
    assert!(out.contains("1 shown, newest first"), "{out}");

    let (code, out, err) =
        run(&["replay", &view_id, "--to", "crm", "--dry-run", "--explain"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("{view_id} ")) && out.contains("-> nowhere"),
        "{out}"
    );
    assert!(
        out.contains("explanation:") && out.contains("leads"),
        "{out}"
    );
    assert!(
        out.contains("1 events selected, 1 would be sent nowhere"),
        "{out}"
    );

    let (code, out, err) = run(&["replay", &lead_id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 events selected"), "{out}");
    crm.wait_for(2, WAIT).await;
    let got = delivered_ids(&crm);
    assert_eq!(got["l0"].len(), 2, "the replay is a new delivery: {got:?}");
    let (code, out, err) = run(&["status"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("REPLAY") && out.contains("1/1"), "{out}");

    let (code, _, err) = run(&["replay", "--since", "1h", "--to", "nowhere"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("nowhere") && err.contains("not in the config"),
        "{err}"
    );
    let (code, _, err) = run(&["replay"]).await;
    assert_eq!(code, 2, "clap refuses a replay of nothing: {err}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_report_counts_exactly_what_an_edit_gains_and_loses_and_changes_nothing() {
    let crm = Receiver::start().await;
    let daemon = TestDaemon::start(&rules_leads_to(&crm, "", "")).await;
    let mut small = BTreeSet::new();
    let mut views = BTreeSet::new();
    for i in 0..4 {
        let mut body = fixture_json("lead.json");
        body["id"] = Value::from(format!("l{i}"));
        body["custom_id"] = Value::from(if i < 2 { 5000 } else { 10 });
        let (_, answer) = daemon.post("lead", Some(KEY), body.to_string()).await;
        if i >= 2 {
            small.insert(answer["event_id"].as_str().unwrap().to_string());
        }
    }
    for i in 0..2 {
        let (_, answer) = daemon.post("view", Some(KEY), view(&format!("v{i}"))).await;
        views.insert(answer["event_id"].as_str().unwrap().to_string());
    }
    crm.wait_for(4, WAIT).await;

    // The edit: only big deals reach the CRM now, and views start going there.
    daemon.rewrite_config(
        &rules_leads_to(&crm, "", "  - { name: views-crm, event: view, to: [crm] }").replace(
            "{ name: leads, event: lead, to: [crm] }",
            "{ name: leads, event: lead, match: { custom_id: { gt: 1000 } }, to: [crm] }",
        ),
    );
    let (status, report) = daemon
        .admin(Method::POST, "/reload?dry_run=1&since=1h")
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["events"], 6, "{report}");
    assert_eq!(
        report["routes"],
        serde_json::json!({
            "leads": {"current": 4, "candidate": 2},
            "views-crm": {"current": 0, "candidate": 2}
        }),
        "{report}"
    );
    assert_eq!(
        report["destinations"],
        serde_json::json!({"crm": {"current": 4, "candidate": 4}})
    );
    assert_eq!(
        (report["gained"].as_u64(), report["lost"].as_u64()),
        (Some(2), Some(2))
    );
    let ids = |key: &str| -> BTreeSet<String> {
        report[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["event_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("lost_sample"), small);
    assert_eq!(ids("gained_sample"), views);

    // The same from the command line, with the candidate in another file.
    let candidate = daemon.dir().join("candidate.yaml");
    std::fs::copy(&daemon.config_path, &candidate).unwrap();
    let (code, out, err) = cli(vec![
        "check".into(),
        "--config".into(),
        candidate.display().to_string(),
        "--against-journal".into(),
        "--since".into(),
        "1h".into(),
        "--admin".into(),
        daemon.admin_url(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("against the journal: 6 events"), "{out}");
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    assert_eq!(row("leads").as_deref(), Some("leads 4 2 -2"), "{out}");
    assert_eq!(
        row("views-crm").as_deref(),
        Some("views-crm 0 2 +2"),
        "{out}"
    );
    assert!(out.contains("2 deliveries gained, 2 lost"), "{out}");
    for id in &small {
        assert!(out.contains(&format!("lost: {id} (lead) -> crm")), "{out}");
    }

    // Nothing was reloaded or sent: a small lead still reaches the CRM, and only it.
    let mut body = fixture_json("lead.json");
    body["id"] = Value::from("after");
    body["custom_id"] = Value::from(10);
    daemon.post("lead", Some(KEY), body.to_string()).await;
    crm.wait_for(5, WAIT).await;
    drained(&daemon, "crm").await;
    assert_eq!(crm.requests().len(), 5);

    // A candidate that does not load is refused with its problems, as a reload would be.
    std::fs::write(&daemon.config_path, "routes: [").unwrap();
    let (status, body) = daemon.admin(Method::POST, "/reload?dry_run=1").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("invalid_config")),
        "{body}"
    );
    daemon.stop().await;
}
