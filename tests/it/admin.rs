//! The admin API and the operator CLI against a running daemon: a dead letter made by a 410
//! receiver is listed, shown, retried to a receiver that now answers 200, delivered, and its
//! whole history stays visible; bulk retry, drop, reload, the token, and the metrics.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{
    eventually, fixture, fixture_json, DownPort, Receiver, Reply, TestDaemon, KEY,
};
use reqwest::Method;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// Polls `check` until it yields a value; panics with `what` after [`WAIT`].
async fn until<T, F: Future<Output = Option<T>>>(what: &str, check: impl FnMut() -> F) -> T {
    common::until(WAIT, what, check).await
}

fn one_destination(crm: &Receiver) -> String {
    format!(
        r#"
retry: {{ initial_interval: 20ms, multiplier: 2.0, max_interval: 50ms, max_elapsed: 30s }}
destinations:
  crm:
    url: "{}"
routes:
  - name: every-lead
    event: lead
    to: [crm]
"#,
        crm.url("/crm")
    )
}

/// Waits until `GET /queue` shows `n` dead letters in all, and returns the answer.
async fn until_dead(daemon: &TestDaemon, n: u64) -> Value {
    until(&format!("{n} dead letters"), || async {
        let (status, q) = daemon.admin(Method::GET, "/queue").await;
        assert_eq!(status, 200, "{q}");
        (q["total"]["dead"] == n).then_some(q)
    })
    .await
}

#[tokio::test]
async fn a_dead_letter_is_listed_shown_retried_and_delivered_with_its_history() {
    let crm = Receiver::start().await;
    crm.set_default(Reply::status(410).body("gone for now"));
    let daemon = TestDaemon::start(&one_destination(&crm)).await;
    let (status, answer) = daemon.post("lead", Some(KEY), fixture("lead.json")).await;
    assert_eq!(status, 200, "{answer}");
    let event_id = answer["event_id"].as_str().unwrap().to_string();

    let queue = until_dead(&daemon, 1).await;
    let crm_q = &queue["destinations"]["crm"];
    assert_eq!(
        (&crm_q["pending"], &crm_q["retrying"], &crm_q["dead"]),
        (&Value::from(0), &Value::from(0), &Value::from(1)),
        "{queue}"
    );

    // GET /dead lists it with everything an operator needs.
    let (status, list) = daemon.admin(Method::GET, "/dead").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 1);
    let letter = &list["dead"][0];
    let id = letter["id"].as_str().unwrap().to_string();
    assert_eq!(letter["event_id"], event_id.as_str());
    assert_eq!(letter["kind"], "lead");
    assert_eq!(letter["destination"], "crm");
    assert_eq!(letter["routes"], serde_json::json!(["every-lead"]));
    assert_eq!(letter["attempts"], 1);
    assert_eq!(letter["last_status"], 410);
    assert!(
        letter["error"].as_str().unwrap().contains("410"),
        "{letter}"
    );
    assert_eq!(letter["response_snippet"], "gone for now");
    assert!(letter["first_attempt_at"].is_string() && letter["last_attempt_at"].is_string());
    assert!(letter.get("body").is_none(), "the list leaves bodies out");
    // Filters and limits.
    let (_, other) = daemon.admin(Method::GET, "/dead?destination=slack").await;
    assert_eq!(other["dead"], serde_json::json!([]));
    let (_, none) = daemon.admin(Method::GET, "/dead?limit=0").await;
    assert_eq!(
        (none["dead"].as_array().unwrap().len(), &none["total"]),
        (0, &Value::from(1))
    );

    // GET /dead/{id} has the original body.
    let (status, shown) = daemon.admin(Method::GET, &format!("/dead/{id}")).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["body"], fixture_json("lead.json"));

    // The receiver recovers; the retry keeps the delivery id and delivers.
    crm.set_default(Reply::status(200));
    let (status, retried) = daemon
        .admin(Method::POST, &format!("/dead/{id}/retry"))
        .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["retried"], serde_json::json!([id]));
    let got = crm.wait_for(2, WAIT).await;
    assert_eq!(got[0].header("x-hookrouter-delivery"), id);
    assert_eq!(got[1].header("x-hookrouter-delivery"), id);
    assert_eq!(got[1].body.as_ref(), fixture("lead.json").as_slice());

    // The event shows both attempts: the 410 and the 200.
    let event = until("the retried delivery to settle", || async {
        let (status, e) = daemon
            .admin(Method::GET, &format!("/events/{event_id}"))
            .await;
        assert_eq!(status, 200, "{e}");
        (e["jobs"][0]["status"] == "delivered").then_some(e)
    })
    .await;
    assert_eq!(event["kind"], "lead");
    assert_eq!(event["routes"], serde_json::json!(["every-lead"]));
    assert_eq!(event["body"], fixture_json("lead.json"));
    let attempts = event["jobs"][0]["attempts"].as_array().unwrap();
    let summary: Vec<(u64, u64, &str)> = attempts
        .iter()
        .map(|a| {
            (
                a["attempt"].as_u64().unwrap(),
                a["status"].as_u64().unwrap(),
                a["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(summary, [(1, 410, "permanent"), (2, 200, "delivered")]);
    assert!(attempts.iter().all(|a| a["latency_ms"].is_u64()));

    // It is no longer a dead letter.
    let (status, gone) = daemon.admin(Method::GET, &format!("/dead/{id}")).await;
    assert_eq!((status, &gone["error"]), (404, &Value::from("not_found")));
    let (status, again) = daemon
        .admin(Method::POST, &format!("/dead/{id}/retry"))
        .await;
    assert_eq!((status, &again["error"]), (404, &Value::from("not_found")));
    let queue = until_dead(&daemon, 0).await;
    assert_eq!(queue["total"]["pending"], 0);
    daemon.stop().await;
}

#[tokio::test]
async fn bulk_retry_by_destination_drop_and_the_error_answers() {
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    a.set_default(Reply::status(410));
    b.set_default(Reply::status(404));
    let config = format!(
        r#"
destinations:
  a: {{ url: "{}" }}
  b: {{ url: "{}" }}
routes:
  - {{ name: both, to: [a, b] }}
"#,
        a.url("/a"),
        b.url("/b")
    );
    let daemon = TestDaemon::start(&config).await;
    let mut events = Vec::new();
    for _ in 0..2 {
        let (status, answer) = daemon.post("lead", Some(KEY), fixture("lead.json")).await;
        assert_eq!(status, 200);
        events.push(answer["event_id"].as_str().unwrap().to_string());
    }
    until_dead(&daemon, 4).await;
    let (_, of_b) = daemon.admin(Method::GET, "/dead?destination=b").await;
    let b_ids: Vec<String> = of_b["dead"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(b_ids.len(), 2, "{of_b}");

    // Drop one of b's: it is gone from the dead letters, its history says "dropped".
    let (status, dropped) = daemon
        .admin(Method::DELETE, &format!("/dead/{}", b_ids[0]))
        .await;
    assert_eq!(
        (status, &dropped["dropped"]),
        (200, &Value::from(b_ids[0].as_str()))
    );
    let (status, _) = daemon
        .admin(Method::DELETE, &format!("/dead/{}", b_ids[0]))
        .await;
    assert_eq!(status, 404);
    let (_, list) = daemon.admin(Method::GET, "/dead").await;
    assert_eq!(list["total"], 3);

    // Retry all of a's: exactly those two come back, and are delivered.
    a.set_default(Reply::status(200));
    let (status, retried) = daemon
        .admin(Method::POST, "/dead/retry?destination=a")
        .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["retried"].as_array().unwrap().len(), 2, "{retried}");
    a.wait_for(4, WAIT).await;
    until_dead(&daemon, 1).await;

    // Retry everything left (b's other one).
    b.set_default(Reply::status(204));
    let (_, rest) = daemon.admin(Method::POST, "/dead/retry").await;
    assert_eq!(rest["retried"], serde_json::json!([b_ids[1]]));
    b.wait_for(3, WAIT).await;
    until_dead(&daemon, 0).await;

    let statuses = until("both events to settle", || async {
        let mut all = Vec::new();
        for e in &events {
            let (_, view) = daemon.admin(Method::GET, &format!("/events/{e}")).await;
            for job in view["jobs"].as_array().unwrap() {
                all.push(job["status"].as_str().unwrap().to_string());
            }
        }
        all.sort();
        (!all.iter().any(|s| s == "pending" || s == "retrying")).then_some(all)
    })
    .await;
    assert_eq!(statuses, ["delivered", "delivered", "delivered", "dropped"]);

    // Errors are JSON with a code, like ingress.
    for (method, path, status, code) in [
        (Method::GET, "/dead/not-a-uuid", 400, "invalid_id"),
        (Method::GET, "/dead?limit=many", 400, "invalid_limit"),
        // Capped: one answer never loads more than 1,000 records.
        (Method::GET, "/dead?limit=1001", 400, "invalid_limit"),
        (
            Method::GET,
            "/dead?limit=18446744073709551615",
            400,
            "invalid_limit",
        ),
        (
            Method::GET,
            "/ui/dead?limit=18446744073709551616",
            400,
            "invalid_limit",
        ),
        (
            Method::GET,
            "/events/0190b6a0-0000-7000-8000-000000000000",
            404,
            "not_found",
        ),
        (Method::PUT, "/queue", 405, "method_not_allowed"),
        (Method::GET, "/nothing/here", 404, "not_found"),
    ] {
        let (got, body) = daemon.admin(method.clone(), path).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{method} {path}: {body}"
        );
        assert!(body["message"].is_string());
    }
    let (status, health) = daemon.admin(Method::GET, "/healthz").await;
    assert_eq!((status, &health["status"]), (200, &Value::from("ok")));
    daemon.stop().await;
}

#[tokio::test]
async fn retry_all_goes_through_more_than_a_batch_and_lists_at_most_1000_skipped() {
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    a.set_default(Reply::status(410));
    b.set_default(Reply::status(410));
    let both = |with_b: bool| {
        format!(
            "destinations:\n  a: {{ url: \"{}\" }}\n{}routes:\n  - {{ name: all, to: [a{}] }}\n",
            a.url("/a"),
            if with_b {
                format!("  b: {{ url: \"{}\" }}\n", b.url("/b"))
            } else {
                String::new()
            },
            if with_b { ", b" } else { "" }
        )
    };
    let daemon = TestDaemon::start(&both(true)).await;
    // More than one batch of a's, and more of b's than a bulk retry names.
    const N: u64 = 1005;
    for _ in 0..N {
        let (status, _) = daemon.post("lead", Some(KEY), fixture("lead.json")).await;
        assert_eq!(status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, q) = daemon.admin(Method::GET, "/queue").await;
        if q["total"]["dead"] == 2 * N {
            break;
        }
        assert!(Instant::now() < deadline, "not all dead yet: {q}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // b leaves the config: its dead letters are skipped, the first 1,000 by id.
    daemon.rewrite_config(&both(false));
    let (status, reloaded) = daemon.admin(Method::POST, "/reload").await;
    assert_eq!(status, 200, "{reloaded}");
    a.set_default(Reply::status(200));
    let (status, r) = daemon.admin(Method::POST, "/dead/retry").await;
    assert_eq!(status, 200);
    let retried = r["retried"].as_array().unwrap();
    assert_eq!(retried.len() as u64, N, "every one of a's, in batches");
    let unique: std::collections::BTreeSet<&str> =
        retried.iter().filter_map(Value::as_str).collect();
    assert_eq!(unique.len() as u64, N, "none twice");
    assert_eq!(r["skipped"].as_array().unwrap().len(), 1000);
    assert_eq!(r["skipped_unlisted"], N - 1000);
    assert!(r["skipped"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("\"b\" is not in the config"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, q) = daemon.admin(Method::GET, "/queue").await;
        if q["total"]["dead"] == N && q["total"]["pending"] == 0 && q["total"]["retrying"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "a's not delivered: {q}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.stop().await;
}

#[tokio::test]
async fn reload_through_the_api_applies_a_good_file_and_refuses_a_bad_one() {
    let crm = Receiver::start().await;
    let daemon = TestDaemon::start(&one_destination(&crm)).await;
    let more = format!(
        "{}  slack: {{ url: \"{}\" }}\n",
        one_destination(&crm).replace(
            "routes:\n  - name: every-lead\n    event: lead\n    to: [crm]\n",
            ""
        ),
        crm.url("/slack")
    ) + "routes:\n  - { name: every-lead, event: lead, to: [crm, slack] }\n";
    daemon.rewrite_config(&more);
    let (status, summary) = daemon.admin(Method::POST, "/reload").await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["destinations_added"], serde_json::json!(["slack"]));
    assert_eq!(summary["routes_changed"], serde_json::json!(["every-lead"]));
    let (_, queue) = daemon.admin(Method::GET, "/queue").await;
    assert!(queue["destinations"]["slack"].is_object(), "{queue}");

    daemon.rewrite_config("routes:\n  - { name: broken, to: [nowhere] }\n");
    let (status, refused) = daemon.admin(Method::POST, "/reload").await;
    assert_eq!(
        (status, &refused["error"]),
        (422, &Value::from("invalid_config"))
    );
    assert!(refused["message"]
        .as_str()
        .unwrap()
        .contains("unknown destination \"nowhere\""));
    let (status, answer) = daemon.post("lead", Some(KEY), fixture("lead.json")).await;
    assert_eq!(
        (status, answer["deliveries"].as_u64()),
        (200, Some(2)),
        "the old rules stay"
    );
    crm.wait_for(2, WAIT).await;
    daemon.stop().await;
}

#[tokio::test]
async fn the_admin_token_guards_everything_but_health() {
    let crm = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon =
        TestDaemon::start_with_server(dir, "  admin_token: s3cret-admin\n", &one_destination(&crm))
            .await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &str, token: Option<&str>| {
        let mut req = client.get(format!("{}{path}", daemon.admin_url()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { common::response_json(req.send().await.unwrap()).await }
    };
    let (status, refused) = get("/queue", None).await;
    assert_eq!(
        (status, &refused["error"]),
        (401, &Value::from("unauthorized"))
    );
    assert_eq!(get("/dead", Some("wrong")).await.0, 401);
    assert_eq!(get("/queue", Some("s3cret-admin")).await.0, 200);
    assert_eq!(get("/healthz", None).await.0, 200);
    daemon.stop().await;
}

/// Prometheus text: `name{labels} value` lines, keyed by name and sorted labels.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let key = match series.split_once('{') {
            None => series.to_string(),
            Some((name, labels)) => {
                let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                labels.sort();
                format!("{name}{{{}}}", labels.join(","))
            }
        };
        out.insert(key, value);
    }
    out
}

#[tokio::test]
async fn metrics_count_webhooks_deliveries_and_queue_depth() {
    let (crm, slack) = (Receiver::start().await, Receiver::start().await);
    slack.set_default(Reply::status(410));
    crm.script([Reply::status(503)]);
    let config = format!(
        r#"
retry: {{ initial_interval: 20ms, multiplier: 2.0, max_interval: 50ms, max_elapsed: 30s }}
destinations:
  crm: {{ url: "{}" }}
  slack: {{ url: "{}" }}
routes:
  - {{ name: leads, event: lead, to: [crm] }}
  - {{ name: views, event: view, match: {{ percentage: {{ gte: 90 }} }}, to: [slack] }}
"#,
        crm.url("/crm"),
        slack.url("/slack")
    );
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_with_server(dir, "  dedupe_window: 1h\n", &config).await;
    let mut lead = fixture_json("lead.json");
    for n in 0..2 {
        lead["id"] = Value::from(format!("lead-{n}"));
        assert_eq!(
            daemon.post("lead", Some(KEY), lead.to_string()).await.1["status"],
            "accepted"
        );
    }
    // The same lead again: a duplicate.
    assert_eq!(
        daemon.post("lead", Some(KEY), lead.to_string()).await.1["status"],
        "duplicate"
    );
    assert_eq!(
        daemon.post("view", Some(KEY), fixture("view.json")).await.1["status"],
        "accepted"
    );
    let mut quiet = fixture_json("view.json");
    quiet["percentage"] = Value::from(10);
    assert_eq!(
        daemon.post("view", Some(KEY), quiet.to_string()).await.1["status"],
        "unrouted"
    );
    assert_eq!(
        daemon
            .post("lead", Some("wrong"), fixture("lead.json"))
            .await
            .0,
        401
    );
    assert_eq!(daemon.post("lead", None, fixture("lead.json")).await.0, 401);
    assert_eq!(daemon.post("lead", Some(KEY), "[1]").await.0, 400);

    crm.wait_for(3, WAIT).await;
    until_dead(&daemon, 1).await;
    let metrics = until("deliveries to be counted", || async {
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("{}/metrics", daemon.admin_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let m = parse_metrics(&resp.text().await.unwrap());
        let delivered =
            m.get("hookrouter_deliveries_total{destination=\"crm\",outcome=\"delivered\"}");
        (delivered == Some(&2.0)).then_some(m)
    })
    .await;
    let expect = [
        (
            "hookrouter_webhooks_received_total{kind=\"lead\",outcome=\"accepted\"}",
            2.0,
        ),
        (
            "hookrouter_webhooks_received_total{kind=\"lead\",outcome=\"duplicate\"}",
            1.0,
        ),
        (
            "hookrouter_webhooks_received_total{kind=\"view\",outcome=\"accepted\"}",
            1.0,
        ),
        (
            "hookrouter_webhooks_received_total{kind=\"view\",outcome=\"unrouted\"}",
            1.0,
        ),
        (
            "hookrouter_webhooks_received_total{kind=\"lead\",outcome=\"rejected\"}",
            3.0,
        ),
        (
            "hookrouter_webhooks_rejected_total{kind=\"lead\",reason=\"invalid_key\"}",
            1.0,
        ),
        (
            "hookrouter_webhooks_rejected_total{kind=\"lead\",reason=\"missing_key\"}",
            1.0,
        ),
        (
            "hookrouter_webhooks_rejected_total{kind=\"lead\",reason=\"not_an_object\"}",
            1.0,
        ),
        (
            "hookrouter_deliveries_total{destination=\"crm\",outcome=\"retried\"}",
            1.0,
        ),
        (
            "hookrouter_deliveries_total{destination=\"crm\",outcome=\"delivered\"}",
            2.0,
        ),
        (
            "hookrouter_deliveries_total{destination=\"slack\",outcome=\"dead\"}",
            1.0,
        ),
        (
            "hookrouter_queue_depth{destination=\"slack\",state=\"dead\"}",
            1.0,
        ),
        (
            "hookrouter_queue_depth{destination=\"crm\",state=\"pending\"}",
            0.0,
        ),
        (
            "hookrouter_queue_depth{destination=\"crm\",state=\"retrying\"}",
            0.0,
        ),
        (
            "hookrouter_queue_oldest_pending_age_seconds{destination=\"crm\"}",
            0.0,
        ),
        (
            "hookrouter_delivery_latency_seconds_count{destination=\"crm\"}",
            3.0,
        ),
        (
            "hookrouter_ingest_to_delivery_seconds_count{destination=\"crm\"}",
            2.0,
        ),
        ("hookrouter_deliveries_in_flight{destination=\"crm\"}", 0.0),
    ];
    for (series, value) in expect {
        assert_eq!(
            metrics.get(series),
            Some(&value),
            "{series} in {metrics:#?}"
        );
    }
    assert!(metrics.contains_key(
        "hookrouter_delivery_latency_seconds_bucket{destination=\"crm\",le=\"+Inf\"}"
    ));
    daemon.stop().await;
}

/// Runs the real binary with `args` and returns (exit code, stdout, stderr).
async fn cli(args: &[&str]) -> (i32, String, String) {
    common::admin_cli(args).await
}

#[tokio::test]
async fn the_cli_lists_shows_retries_and_drops_dead_letters_and_shows_events() {
    let crm = Receiver::start().await;
    crm.set_default(Reply::status(410).body("no such contact"));
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_with_server(
        dir,
        "  admin_token: ${ADMIN_TOKEN_FOR_CLI_TEST:-cli-token}\n",
        &one_destination(&crm),
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..2 {
        let mut lead = fixture_json("lead.json");
        lead["id"] = Value::from(format!("cli-{n}"));
        let (_, answer) = daemon.post("lead", Some(KEY), lead.to_string()).await;
        ids.push(answer["event_id"].as_str().unwrap().to_string());
    }
    let store = daemon.running().store().clone();
    eventually(WAIT, "two dead letters", || store.dead_count() == 2).await;
    // An operator's config file naming the admin address and token (as on the server).
    let ops_config = daemon.dir().join("ops.yaml");
    std::fs::write(
        &ops_config,
        format!(
            "server:\n  admin_listen: {}\n  admin_token: \"${{ADMIN_TOKEN_FOR_CLI_TEST:-cli-token}}\"\nkeys: [k]\n",
            daemon.running().admin_addr
        ),
    )
    .unwrap();
    let cfg = ops_config.to_str().unwrap();
    let admin = daemon.admin_url();

    let (code, out, err) = cli(&["status", "--config", cfg]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("DESTINATION  STATE    PENDING  RETRYING  IN FLIGHT  DEAD"),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["crm", "healthy", "0", "0", "0", "2", "-"]),
        "{out}"
    );

    // Without the token the API refuses, and the CLI says so with a non-zero exit.
    let (code, _, err) = cli(&["status", "--admin", &admin]).await;
    assert_eq!(code, 1);
    assert!(err.contains("401") && err.contains("unauthorized"), "{err}");

    let (code, out, err) = cli(&["dead", "list", "--config", cfg, "--destination", "crm"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 shown, 2 dead letters in all"), "{out}");
    let (code, json, _) = cli(&["dead", "list", "--config", cfg, "--json"]).await;
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&json).unwrap();
    let dead: Vec<String> = list["dead"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    for (id, letter) in dead.iter().zip(list["dead"].as_array().unwrap()) {
        assert!(out.contains(id.as_str()), "{out}");
        assert!(
            ids.iter().any(|e| letter["event_id"] == e.as_str()),
            "{letter}"
        );
    }

    let (code, out, _) = cli(&["dead", "show", &dead[0], "--config", cfg]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("delivery id:    {}", dead[0])),
        "{out}"
    );
    assert!(
        out.contains("last status:    410") && out.contains("no such contact"),
        "{out}"
    );
    assert!(
        out.contains("\"email\": \"john.doe@example.com\""),
        "the body is shown: {out}"
    );

    // Retry one to a receiver that now answers 200; drop the other.
    crm.set_default(Reply::status(200));
    let (code, out, err) = cli(&["dead", "retry", &dead[0], "--config", cfg]).await;
    assert_eq!(
        (code, out.trim()),
        (0, format!("{}: queued again", dead[0]).as_str()),
        "{err}"
    );
    crm.wait_for(3, WAIT).await;
    let (code, out, _) = cli(&["dead", "drop", &dead[1], "--config", cfg]).await;
    assert_eq!(
        (code, out.trim()),
        (0, format!("{}: dropped", dead[1]).as_str())
    );
    let (code, out, _) = cli(&["dead", "drop", &dead[1], "--config", cfg]).await;
    assert_eq!(code, 1);
    assert!(out.contains("404: not_found"), "{out}");
    eventually(WAIT, "no dead letters", || store.dead_count() == 0).await;

    // The event of the retried one: both attempts, delivered.
    let list_event = list["dead"][0]["event_id"].as_str().unwrap().to_string();
    let out = until("the retried delivery to show as delivered", || {
        let id = list_event.clone();
        let cfg = cfg.to_string();
        async move {
            let (code, out, _) = cli(&["event", "show", &id, "--config", &cfg]).await;
            assert_eq!(code, 0);
            out.contains(": delivered").then_some(out)
        }
    })
    .await;
    assert!(
        out.contains(&format!("event id:  {list_event} (lead)")),
        "{out}"
    );
    let attempt_rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() >= 5 && (w[0] == "1" || w[0] == "2"))
        .collect();
    assert_eq!(attempt_rows.len(), 2, "{out}");
    assert_eq!(
        (attempt_rows[0][2], attempt_rows[0][5]),
        ("410", "permanent"),
        "{out}"
    );
    assert_eq!(
        (attempt_rows[1][2], attempt_rows[1][5]),
        ("200", "delivered"),
        "{out}"
    );

    // Bulk retry with nothing left, then with a destination filter, as JSON.
    let (code, out, _) = cli(&[
        "dead",
        "retry",
        "--all",
        "--destination",
        "crm",
        "--config",
        cfg,
        "--json",
    ])
    .await;
    assert_eq!(code, 0);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["retried"], serde_json::json!([]));
    let (code, out, _) = cli(&["status", "--config", cfg, "--json"]).await;
    assert_eq!(code, 0);
    let q: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(q["total"]["dead"], 0);
    // A token on the command line: the config's token variable need not be set.
    let unset = daemon.dir().join("ops-unset.yaml");
    std::fs::write(
        &unset,
        format!(
            "server:\n  admin_listen: {}\n  admin_token: \"${{HOOKROUTER_TEST_UNSET_TOKEN}}\"\n",
            daemon.running().admin_addr
        ),
    )
    .unwrap();
    let unset = unset.to_str().unwrap();
    let (code, _, err) = cli(&["status", "--config", unset, "--token", "cli-token"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&["status", "--config", unset]).await;
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("HOOKROUTER_TEST_UNSET_TOKEN is not set"),
        "{err}"
    );
    // A daemon that is not there: a clear message and exit 1.
    let (code, _, err) = cli(&["status", "--admin", "http://127.0.0.1:9"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the admin API"), "{err}");
    daemon.stop().await;
}

#[tokio::test]
async fn queue_counts_survive_a_restart() {
    let gone = Receiver::start().await;
    gone.set_default(Reply::status(410));
    let down = DownPort::reserve();
    let config = format!(
        r#"
retry: {{ initial_interval: 10s, max_interval: 10s, max_elapsed: 1h }}
destinations:
  gone: {{ url: "{}" }}
  down: {{ url: "http://{down}/down" }}
routes:
  - {{ name: both, to: [gone, down] }}
"#,
        gone.url("/gone")
    );
    let daemon = TestDaemon::start(&config).await;
    for _ in 0..2 {
        assert_eq!(
            daemon.post("lead", Some(KEY), fixture("lead.json")).await.0,
            200
        );
    }
    let before = until("two dead and two retrying", || async {
        let (_, q) = daemon.admin(Method::GET, "/queue").await;
        let t = &q["total"];
        (t["dead"] == 2 && t["retrying"] == 2).then_some(q)
    })
    .await;
    let dir = daemon.stop().await;

    let daemon = TestDaemon::start_in(dir, &config).await;
    let (status, after) = daemon.admin(Method::GET, "/queue").await;
    assert_eq!(status, 200);
    for (dest, state) in [("gone", "dead"), ("down", "retrying"), ("down", "pending")] {
        assert_eq!(
            after["destinations"][dest][state], before["destinations"][dest][state],
            "{dest} {state}: {before} then {after}"
        );
    }
    assert!(
        after["destinations"]["down"]["oldest_pending_age_seconds"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_state_change_without_a_json_content_type_is_refused_and_changes_nothing() {
    let crm = Receiver::start().await;
    crm.set_default(Reply::status(410).body("gone"));
    let daemon = TestDaemon::start(&one_destination(&crm)).await;
    assert_eq!(
        daemon.post("lead", Some(KEY), fixture("lead.json")).await.0,
        200
    );
    until_dead(&daemon, 1).await;
    crm.set_default(Reply::status(200));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let retry = format!("{}/dead/retry", daemon.admin_url());
    // What an old browser (neither Sec-Fetch-Site nor Origin) would send from a form or a
    // no-cors fetch on another site's page, and a curl without the header.
    let refused = [
        client.post(&retry).form(&[("all", "1")]),
        client
            .post(&retry)
            .header("content-type", "text/plain;charset=UTF-8")
            .body("{}"),
        client
            .post(&retry)
            .header("content-type", "multipart/form-data; boundary=x")
            .body("--x--"),
        client.post(&retry),
        client.post(format!("{}/reload", daemon.admin_url())),
    ];
    for request in refused {
        let (status, body) = common::response_json(request.send().await.unwrap()).await;
        assert_eq!(
            (status, &body["error"]),
            (415, &Value::from("content_type")),
            "{body}"
        );
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("application/json"),
            "the answer says what to send: {body}"
        );
    }
    let (_, q) = daemon.admin(Method::GET, "/queue").await;
    assert_eq!(q["total"]["dead"], 1, "nothing was retried: {q}");
    // With the header (as the CLI sends it) it goes through.
    let (status, r) = common::response_json(
        client
            .post(&retry)
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["retried"].as_array().unwrap().len(), 1, "{r}");
    crm.wait_for(2, WAIT).await;
}
