//! The status page (issue 13). Over plain HTTP: it needs the admin token (a wrong one sees
//! no data), its login cookie is HttpOnly and SameSite=Strict and opens the page only, a
//! cross-site POST changes nothing, no secret is printed, and the dead-letter list filtered
//! by destination holds that destination's only. In a real headless Chromium against the
//! real binary: a wrong token sees no data; log in, see a failing destination's counts, its
//! health (`failing`) and its dead letter, a healthy one's health and p50/p99; a webhook
//! accepted after the page loaded shows up by the page's own refresh, with no reload;
//! another site's page posting a forged retry is refused; filter the dead letters by
//! destination, drop one (with the confirmation) and see it gone; retry the other (with the
//! confirmation) to a receiver that now answers 200, see the job delivered in the event's
//! timeline and its destination healthy again. After a restart, a delivered event is still
//! found by its Mindstamp id.
//!
//! `HOOKROUTER_SCREENSHOTS=docs/img cargo test --test it status_page::` writes the README's
//! screenshots from the browser run.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::browser::Browser;
use crate::common::{
    fixture, fixture_json, server_block, DaemonProcess, Receiver, Reply, TestDaemon, KEY,
};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);
const TOKEN: &str = "page-admin-t0ken";
/// A token in a destination's URL path, as Slack and many CRMs have; never shown.
const PATH_SECRET: &str = "path-s3cret-in-url";

/// Polls `check` until it yields a value; panics with `what` after [`WAIT`].
async fn until<T, F: Future<Output = Option<T>>>(what: &str, check: impl FnMut() -> F) -> T {
    common::until(WAIT, what, check).await
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A config with `crm` (whose receiver the test controls, a secret in its URL path) for
/// leads and `mailer` (on the same receiver) for interactions, retries over a fraction of a
/// second so a failure becomes a dead letter quickly.
fn crm_config(crm: &Receiver) -> String {
    format!(
        r#"
retry: {{ initial_interval: 20ms, multiplier: 2.0, max_interval: 50ms, max_elapsed: 300ms }}
destinations:
  crm: {{ url: "{}" }}
  mailer: {{ url: "{}" }}
routes:
  - {{ name: every-lead, event: lead, to: [crm] }}
  - {{ name: every-interaction, event: interaction, to: [mailer] }}
"#,
        crm.url(&format!("/hooks/{PATH_SECRET}")),
        crm.url("/mailer")
    )
}

/// The `Cookie` value a successful login sets (`name=value`), after checking its flags.
async fn log_in(client: &reqwest::Client, admin: &str) -> String {
    let r = client
        .post(format!("{admin}/login"))
        .header("origin", admin)
        .form(&[("token", TOKEN)])
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/");
    let set = r.headers()["set-cookie"]
        .to_str()
        .expect("text")
        .to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{flag} in {set}");
    }
    assert!(!set.contains(TOKEN), "the cookie is not the token: {set}");
    set.split(';').next().expect("name=value").to_string()
}

async fn status_and_json(r: reqwest::RequestBuilder) -> (StatusCode, Value, HeaderMap) {
    let r = r.send().await.expect("request");
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json, headers)
}

#[tokio::test]
async fn the_page_needs_the_token_shows_no_secret_and_refuses_cross_site_posts() {
    let crm = Receiver::start().await;
    crm.set_default(Reply::status(410).body("no such contact"));
    let dir = tempfile::tempdir().unwrap();
    let daemon =
        TestDaemon::start_with_server(dir, &format!("  admin_token: {TOKEN}\n"), &crm_config(&crm))
            .await;
    let (status, answer) = daemon.post("lead", Some(KEY), fixture("lead.json")).await;
    assert_eq!(status, 200, "{answer}");
    let event_id = answer["event_id"].as_str().unwrap().to_string();
    let store = daemon.running().store().clone();
    common::eventually(WAIT, "a dead letter", || store.dead_count() == 1).await;
    let admin = daemon.admin_url();
    let client = http();

    // Without the token: the login form, and no data.
    let (status, page, headers) = status_and_json(client.get(format!("{admin}/"))).await;
    assert_eq!(status, 401);
    let page = page.as_str().unwrap().to_string();
    assert!(page.contains("id=\"login-form\""), "{page}");
    assert!(!page.contains("crm"), "{page}");
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    assert_eq!(headers["x-frame-options"], "DENY");
    let overview = format!("{admin}/ui/overview");
    for request in [
        client.get(&overview),
        client.get(&overview).bearer_auth("wrong"),
        client
            .get(&overview)
            .header("cookie", "hookrouter_session=v1.1.AAAA"),
    ] {
        let (status, body, _) = status_and_json(request).await;
        assert_eq!(
            (status, &body["error"]),
            (StatusCode::UNAUTHORIZED, &Value::from("unauthorized"))
        );
        assert!(!body.to_string().contains("crm"), "{body}");
    }
    // A wrong token at the login form: refused, no cookie.
    let r = client
        .post(format!("{admin}/login"))
        .form(&[("token", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("That is not the admin token"));

    // The right one: a cookie that opens the page and its data, but not the JSON API.
    let cookie = log_in(&client, &admin).await;
    let (status, page, _) =
        status_and_json(client.get(format!("{admin}/")).header("cookie", &cookie)).await;
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("id=\"logout\""));
    let (status, o, _) = status_and_json(client.get(&overview).header("cookie", &cookie)).await;
    assert_eq!(status, 200, "{o}");
    let crm_row = &o["destinations"][0];
    assert_eq!(
        (&crm_row["name"], &crm_row["dead"]),
        (&Value::from("crm"), &Value::from(1))
    );
    assert_eq!(crm_row["url"], format!("http://{}/…", crm.addr));
    assert_eq!(crm_row["last_error"]["job"], "dead");
    assert_eq!(o["ingest"]["outcomes"]["accepted"]["since_start"], 1);
    assert!(o["store"]["size_bytes"].as_u64().unwrap() > 0, "{o}");
    let (status, _, _) = status_and_json(
        client
            .get(format!("{admin}/queue"))
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(status, 401, "the JSON API stays bearer-only");
    assert_eq!(o["config"]["last_reload"], Value::Null);
    // A reload refused, then one applied: the overview says how the last one went.
    daemon.rewrite_config("routes:\n  - { name: broken, to: [nowhere] }\n");
    let reload = || {
        client
            .post(format!("{admin}/reload"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
    };
    assert_eq!(status_and_json(reload()).await.0, 422);
    let (_, o, _) = status_and_json(client.get(&overview).header("cookie", &cookie)).await;
    let last = &o["config"]["last_reload"];
    assert_eq!(last["ok"], false, "{o}");
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains("unknown destination \"nowhere\""),
        "{o}"
    );
    daemon.rewrite_config(&crm_config(&crm));
    assert_eq!(status_and_json(reload()).await.0, 200);
    let (_, o, _) = status_and_json(client.get(&overview).header("cookie", &cookie)).await;
    assert_eq!(o["config"]["last_reload"]["ok"], true, "{o}");

    // The dead letter with its attempts; the event by our id and by Mindstamp's.
    let (_, dead, _) = status_and_json(
        client
            .get(format!("{admin}/ui/dead"))
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(
        (&dead["total"], &dead["matching"]),
        (&Value::from(1), &Value::from(1))
    );
    let letter = &dead["dead"][0];
    assert_eq!(letter["reason"], "permanent failure");
    assert_eq!(letter["response_snippet"], "no such contact");
    assert_eq!(letter["attempt_history"][0]["status"], 410);
    let (_, none, _) = status_and_json(
        client
            .get(format!("{admin}/ui/dead?reason=retries%20exhausted"))
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(
        (&none["matching"], &none["reasons"]["permanent failure"]),
        (&Value::from(0), &Value::from(1))
    );
    let mindstamp_id = fixture_json("lead.json")["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (q, by) in [
        (event_id.as_str(), "event_id"),
        (mindstamp_id.as_str(), "mindstamp_id"),
    ] {
        let (status, found, _) = status_and_json(
            client
                .get(format!("{admin}/ui/event?q={q}"))
                .header("cookie", &cookie),
        )
        .await;
        assert_eq!(status, 200, "{found}");
        let event = &found["event"];
        assert_eq!(
            (&found["matched_by"], &event["id"]),
            (&Value::from(by), &Value::from(event_id.as_str()))
        );
        assert_eq!(event["jobs"][0]["status"], "dead");
        assert!(
            event["explanation"]
                .as_str()
                .unwrap()
                .contains("✓ route \"every-lead\""),
            "{found}"
        );
    }
    let (status, _, _) = status_and_json(
        client
            .get(format!("{admin}/ui/event?q=nothing-like-it"))
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(status, 404);

    // Cross-site POSTs change nothing, whichever header gives them away.
    let retry = format!("{admin}/ui/dead/retry");
    let all = serde_json::json!({"all": true});
    let refused = [
        client
            .post(&retry)
            .header("cookie", &cookie)
            .header("x-hookrouter-page", "1")
            .header("origin", "https://evil.example")
            .json(&all),
        client
            .post(&retry)
            .header("cookie", &cookie)
            .header("x-hookrouter-page", "1")
            .header("sec-fetch-site", "cross-site")
            .json(&all),
        // A form on another site cannot add the page's header.
        client.post(&retry).header("cookie", &cookie).json(&all),
        // The JSON API too, token or not.
        client
            .post(format!("{admin}/dead/retry"))
            .bearer_auth(TOKEN)
            .header("origin", "http://127.0.0.1:1"),
        // And logging in from another site.
        client
            .post(format!("{admin}/login"))
            .header("sec-fetch-site", "cross-site")
            .form(&[("token", TOKEN)]),
    ];
    for request in refused {
        let (status, body, _) = status_and_json(request).await;
        assert_eq!(
            (status, &body["error"]),
            (StatusCode::FORBIDDEN, &Value::from("cross_site")),
            "{body}"
        );
    }
    assert_eq!(store.dead_count(), 1, "nothing was retried");

    // The page's own POST works: same origin, the page's header.
    crm.set_default(Reply::status(200));
    let (status, result, _) = status_and_json(
        client
            .post(&retry)
            .header("cookie", &cookie)
            .header("x-hookrouter-page", "1")
            .header("origin", &admin)
            .header("sec-fetch-site", "same-origin")
            .json(&serde_json::json!({"ids": [letter["id"]]})),
    )
    .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["retried"], serde_json::json!([letter["id"]]));
    crm.wait_for(2, WAIT).await;
    common::eventually(WAIT, "no dead letters", || store.dead_count() == 0).await;

    // Nothing the page serves holds a secret.
    for path in [
        "/",
        "/ui/overview",
        "/ui/dead",
        &format!("/ui/event?q={event_id}"),
    ] {
        let (_, body, _) = status_and_json(
            client
                .get(format!("{admin}{path}"))
                .header("cookie", &cookie),
        )
        .await;
        let text = body.to_string();
        assert!(
            !text.contains(PATH_SECRET) && !text.contains(TOKEN),
            "{path}: {text}"
        );
    }
    // Logging out clears the cookie.
    let r = client
        .post(format!("{admin}/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    daemon.stop().await;
}

#[tokio::test]
async fn without_a_token_the_page_is_open_its_bulk_actions_work_and_cross_site_posts_are_refused() {
    let crm = Receiver::start().await;
    crm.set_default(Reply::status(410));
    let daemon = TestDaemon::start(&crm_config(&crm)).await;
    for _ in 0..3 {
        daemon.post("lead", Some(KEY), fixture("lead.json")).await;
    }
    daemon
        .post("interaction", Some(KEY), fixture("interaction.json"))
        .await;
    let store = daemon.running().store().clone();
    common::eventually(WAIT, "four dead letters", || store.dead_count() == 4).await;
    let admin = daemon.admin_url();
    let client = http();

    // The dead-letter list filtered by destination: that destination's only, the others
    // still counted for the filter's choices.
    for (destination, kind, n) in [("crm", "lead", 3), ("mailer", "interaction", 1)] {
        let (status, page, _) =
            status_and_json(client.get(format!("{admin}/ui/dead?destination={destination}"))).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(
            (&page["matching"], &page["total"]),
            (&Value::from(n), &Value::from(4)),
            "{page}"
        );
        let listed = page["dead"].as_array().unwrap();
        assert_eq!(listed.len(), n, "{page}");
        for letter in listed {
            assert_eq!(
                (&letter["destination"], &letter["kind"]),
                (&Value::from(destination), &Value::from(kind)),
                "{page}"
            );
        }
        assert_eq!(
            page["destinations"],
            serde_json::json!({"crm": 3, "mailer": 1}),
            "{page}"
        );
    }
    let (_, unfiltered, _) = status_and_json(client.get(format!("{admin}/ui/dead"))).await;
    assert_eq!(
        unfiltered["dead"].as_array().unwrap().len(),
        4,
        "{unfiltered}"
    );
    let (status, page, _) = status_and_json(client.get(format!("{admin}/"))).await;
    assert_eq!(status, 200);
    assert!(
        !page.as_str().unwrap().contains("id=\"logout\""),
        "no login, no logout"
    );
    // Any web page could POST a form here before; now a browser's cross-site POST is refused.
    let (status, body, _) = status_and_json(
        client
            .post(format!("{admin}/dead/retry"))
            .header("sec-fetch-site", "cross-site")
            .header("origin", "https://evil.example"),
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::FORBIDDEN, &Value::from("cross_site"))
    );
    assert_eq!(store.dead_count(), 4);

    // The page's actions: bad selections are refused, one dropped, the rest retried by filter.
    let action = |verb: &str, body: Value| {
        client
            .post(format!("{admin}/ui/dead/{verb}"))
            .header("x-hookrouter-page", "1")
            .header("sec-fetch-site", "same-origin")
            .json(&body)
    };
    for (body, code) in [
        (serde_json::json!({}), "invalid_body"),
        (
            serde_json::json!({"all": true, "ids": ["x"]}),
            "invalid_body",
        ),
        (serde_json::json!({"every": true}), "invalid_body"),
        (serde_json::json!({"ids": ["not-a-uuid"]}), "invalid_id"),
    ] {
        let (status, answer, _) = status_and_json(action("retry", body.clone())).await;
        assert_eq!(
            (status, &answer["error"]),
            (StatusCode::BAD_REQUEST, &Value::from(code)),
            "{body}: {answer}"
        );
    }
    let letters = store.dead_letters().unwrap();
    let of = |destination: &str| -> Vec<String> {
        letters
            .iter()
            .filter(|l| l.job.destination == destination)
            .map(|l| l.job.id.to_string())
            .collect()
    };
    let (ids, mailer_ids) = (of("crm"), of("mailer"));
    assert_eq!((ids.len(), mailer_ids.len()), (3, 1));
    let (status, dropped, _) =
        status_and_json(action("drop", serde_json::json!({"ids": [ids[0]]}))).await;
    assert_eq!(status, 200, "{dropped}");
    assert_eq!(dropped["dropped"], serde_json::json!([ids[0]]));
    let (_, again, _) = status_and_json(action("drop", serde_json::json!({"ids": [ids[0]]}))).await;
    assert_eq!(again["skipped"][0]["id"], ids[0].as_str(), "{again}");
    crm.set_default(Reply::status(200));
    // A filter that matches nothing retries nothing; the right one retries the other two.
    let (_, none, _) = status_and_json(action(
        "retry",
        serde_json::json!({"all": true, "destination": "crm", "reason": "retries exhausted"}),
    ))
    .await;
    assert_eq!(none["retried"], serde_json::json!([]), "{none}");
    let (_, retried, _) = status_and_json(action(
        "retry",
        serde_json::json!({"all": true, "destination": "crm", "reason": "permanent failure"}),
    ))
    .await;
    let mut got: Vec<String> = retried["retried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    got.sort();
    let mut want = ids[1..].to_vec();
    want.sort();
    assert_eq!(got, want, "{retried}");
    // Only crm's: mailer's dead letter is still there.
    common::eventually(WAIT, "crm's dead letters retried", || {
        store.dead_count() == 1
    })
    .await;
    assert_eq!(
        store.dead_letters().unwrap()[0].job.id.to_string(),
        mailer_ids[0]
    );
    crm.wait_for(6, WAIT).await;

    // The CLI's requests (no browser headers) work as before.
    let (status, body) = daemon.admin(Method::POST, "/dead/retry").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["retried"], serde_json::json!(mailer_ids));
    common::eventually(WAIT, "no dead letters", || store.dead_count() == 0).await;
    daemon.stop().await;
}

#[tokio::test]
async fn an_event_from_before_a_restart_is_found_by_its_mindstamp_id() {
    let crm = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_with_server(dir, "", &crm_config(&crm)).await;
    let (status, answer) = daemon.post("lead", Some(KEY), fixture("lead.json")).await;
    assert_eq!(status, 200, "{answer}");
    let event_id = answer["event_id"].as_str().unwrap().to_string();
    crm.wait_for(1, WAIT).await;
    // Delivered, so not a dead letter; and the restart empties the memory of recent ids.
    let dir = daemon.stop().await;
    let daemon = TestDaemon::start_with_server(dir, "", &crm_config(&crm)).await;
    let mindstamp_id = fixture_json("lead.json")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, found, _) =
        status_and_json(http().get(format!("{}/ui/event?q={mindstamp_id}", daemon.admin_url())))
            .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["matched_by"], "mindstamp_id", "{found}");
    assert_eq!(found["matches"], serde_json::json!([event_id]), "{found}");
    assert_eq!(found["event"]["jobs"][0]["status"], "delivered", "{found}");
}

/// Where the browser run saves its screenshots (`HOOKROUTER_SCREENSHOTS`), if anywhere.
fn screenshot_dir() -> Option<PathBuf> {
    std::env::var_os("HOOKROUTER_SCREENSHOTS").map(|d| {
        let d = PathBuf::from(d);
        if d.is_absolute() {
            d
        } else {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(d)
        }
    })
}

/// Is `text` a latency as the page prints one (`15 ms`, `0.42 ms`, `1.20 s`), more than zero?
fn is_latency(text: &str) -> bool {
    text.strip_suffix(" ms")
        .or_else(|| text.strip_suffix(" s"))
        .and_then(|n| n.parse::<f64>().ok())
        .is_some_and(|n| n > 0.0)
}

/// Waits until nothing on the page matches `css`.
async fn until_absent(browser: &Browser, css: &str, what: &str) {
    let deadline = Instant::now() + WAIT;
    while browser.exists(css).await {
        assert!(Instant::now() < deadline, "{what}: {css:?} still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_a_dead_letter_is_seen_retried_and_delivered() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let started = Instant::now();
    let shots = screenshot_dir();
    // crm fails (500) until the test flips it; archive takes everything; slack asks to wait;
    // billing refuses (410) the one interaction sent to it.
    let (crm, archive, slack, billing) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    crm.set_default(Reply::status(500).body("{\"error\":\"crm is down for maintenance\"}"));
    archive.set_default(Reply::status(200).delay(Duration::from_millis(15)));
    slack.set_default(Reply::status(429).header("retry-after", "600"));
    billing.set_default(Reply::status(410).body("no such customer"));
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("routes.yaml");
    let config = format!(
        r#"{server}  admin_token: {TOKEN}
keys: [{KEY:?}]
retry: {{ initial_interval: 20ms, multiplier: 2.0, max_interval: 50ms, max_elapsed: 300ms }}
destinations:
  crm: {{ url: "{crm}" }}
  archive: {{ url: "{archive}" }}
  billing: {{ url: "{billing}" }}
  slack:
    url: "{slack}"
    retry: {{ initial_interval: 1s, max_interval: 10m, max_elapsed: 1h }}
routes:
  - {{ name: leads-to-crm, event: lead, match: {{ email: {{ exists: true }} }}, to: [crm] }}
  - {{ name: everything-archived, to: [archive] }}
  - {{ name: finished-views, event: view, match: {{ percentage: {{ gte: 90 }} }}, to: [slack] }}
  - {{ name: interactions-billed, event: interaction, to: [billing] }}
"#,
        server = server_block(&dir.path().join("data")),
        crm = crm.url(&format!("/hooks/{PATH_SECRET}")),
        archive = archive.url("/archive"),
        billing = billing.url("/billing"),
        slack = slack.url("/services/T000/B000/XXXX"),
    );
    std::fs::write(&config_path, config).unwrap();
    let mut daemon = DaemonProcess::spawn(&config_path);
    let admin = format!("http://{}", daemon.admin_addr.expect("admin address"));
    let client = http();
    let post = |kind: &'static str, key: &'static str, body: Vec<u8>| {
        let req = client
            .post(format!("http://{}/webhooks/{kind}", daemon.addr))
            .header("x-key", key)
            .header("content-type", "application/json")
            .body(body);
        async move {
            req.send()
                .await
                .expect("webhook")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let view = |id: &str, percentage: u64| {
        let mut view = fixture_json("view.json");
        view["id"] = Value::from(id);
        view["percentage"] = Value::from(percentage);
        view.to_string().into_bytes()
    };
    // Seven accepted (a lead, five views, an interaction), one refused.
    let lead = post("lead", KEY, fixture("lead.json")).await;
    let event_id = lead["event_id"].as_str().expect("accepted").to_string();
    for n in 0..5 {
        post("view", KEY, view(&format!("view-{n}"), 95)).await;
    }
    post("interaction", KEY, fixture("interaction.json")).await;
    post("lead", "wrong-key", fixture("lead.json")).await;
    let dead_of = |dead: &Value, destination: &str| -> Option<String> {
        dead["dead"]
            .as_array()?
            .iter()
            .find(|d| d["destination"] == destination)
            .and_then(|d| d["id"].as_str())
            .map(str::to_string)
    };
    let (dead_id, billing_dead) = until("the crm and billing dead letters", || async {
        let (_, dead, _) =
            status_and_json(client.get(format!("{admin}/dead")).bearer_auth(TOKEN)).await;
        Some((dead_of(&dead, "crm")?, dead_of(&dead, "billing")?))
    })
    .await;

    // A wrong token sees the form again, and no data.
    let c = &browser.client;
    c.goto(&format!("{admin}/")).await.expect("open the page");
    browser.find("#login-form").await;
    browser
        .find("#token")
        .await
        .send_keys("not-the-token")
        .await
        .unwrap();
    browser.click("#login").await;
    browser.find("#login-error").await;
    assert!(!browser.exists("#destinations").await);
    assert!(!c.source().await.unwrap().contains("crm"));

    // The right token: the overview with each destination's counts, health and latency.
    browser.find("#token").await.send_keys(TOKEN).await.unwrap();
    browser.click("#login").await;
    let cell = |destination: &str, class: &str| {
        format!("tr[data-destination=\"{destination}\"] td.{class}")
    };
    let accepted = "#ingest tr[data-name=\"accepted\"] td:nth-child(3)";
    browser
        .text_until(accepted, "seven webhooks accepted", |t| t == "7")
        .await;
    // It refreshes itself: a webhook accepted now shows up (below, while the rest is
    // checked) with no navigation and no reload (the mark set on this document would be
    // gone after one).
    let marked = c
        .execute(
            "document.body.dataset.mark = 'loaded once'; return document.body.dataset.mark",
            vec![],
        )
        .await
        .expect("mark the document");
    assert_eq!(marked, "loaded once");
    post("view", KEY, view("view-late", 10)).await;
    for destination in ["crm", "billing"] {
        browser
            .text_until(&cell(destination, "dead"), "a dead letter", |t| t == "1")
            .await;
    }
    browser
        .text_until(&cell("crm", "last-error"), "crm's last error", |t| {
            t.contains("gave up after")
        })
        .await;
    // crm failed every attempt (more than failing_after_failures, 3, in a row): failing;
    // archive delivered every one: healthy.
    browser
        .text_until(&cell("crm", "state"), "crm's health", |t| t == "failing")
        .await;
    browser
        .text_until(&cell("archive", "state"), "archive's health", |t| {
            t == "healthy"
        })
        .await;
    browser
        .text_until(&cell("slack", "state"), "slack's pause", |t| {
            t.contains("paused")
        })
        .await;
    browser
        .text_until(&cell("archive", "delivered-rate"), "archive's rate", |t| {
            t != "0"
        })
        .await;
    for quantile in ["p50", "p99"] {
        browser
            .text_until(&cell("archive", quantile), "archive's latency", is_latency)
            .await;
    }
    browser
        .text_until("#rejections", "the rejection", |t| {
            t.contains("invalid_key")
        })
        .await;
    let source = c.source().await.unwrap();
    assert!(!source.contains(PATH_SECRET) && !source.contains("XXXX") && !source.contains(TOKEN));
    // The eighth webhook, brought by the page's own refresh (every 5 s).
    browser
        .text_until(
            accepted,
            "the eighth webhook, by the page's own refresh",
            |t| t == "8",
        )
        .await;
    let mark = c
        .execute("return document.body.dataset.mark || null", vec![])
        .await
        .expect("read the mark");
    assert_eq!(mark, "loaded once", "the page was reloaded");
    browser.screenshot(shots.as_deref(), "overview.png").await;

    // Another site's page (another port: same site, so the SameSite=Strict cookie goes
    // along) posts a form to the retry action as soon as it loads: refused, nothing retried.
    let evil = Receiver::start().await;
    evil.set_default(
        Reply::status(200)
            .header("content-type", "text/html")
            .body(&format!(
                r#"<form method="post" action="{admin}/ui/dead/retry" enctype="text/plain">
                     <input type="hidden" name='{{"all":true,"x":"' value='"}}'></form>
                   <script>document.forms[0].submit()</script>"#
            )),
    );
    c.goto(&evil.url("/")).await.expect("open the other site");
    let deadline = Instant::now() + WAIT;
    loop {
        let source = c.source().await.unwrap_or_default();
        if source.contains("cross_site") {
            assert!(source.contains("Sec-Fetch-Site: same-site"), "{source}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the forged POST was not refused: {source}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, dead, _) =
        status_and_json(client.get(format!("{admin}/dead")).bearer_auth(TOKEN)).await;
    assert_eq!(dead["total"], 2, "nothing was retried: {dead}");
    c.goto(&format!("{admin}/"))
        .await
        .expect("back to the page");

    // Both dead letters; crm's with its attempts and response.
    browser.click("#nav-dead").await;
    let row = format!("tr.dead-row[data-id=\"{dead_id}\"]");
    let billing_row = format!("tr.dead-row[data-id=\"{billing_dead}\"]");
    browser
        .text_until(
            &format!("{row} td.destination"),
            "the dead letter's row",
            |t| t == "crm",
        )
        .await;
    browser
        .text_until(
            &format!("{billing_row} td.destination"),
            "billing's dead letter's row",
            |t| t == "billing",
        )
        .await;
    browser
        .text_until("#dead-summary", "both dead letters", |t| {
            t.starts_with("2 shown of 2 matching")
        })
        .await;
    browser.click(&format!("{row} details summary")).await;
    browser
        .text_until(&format!("{row} pre.snippet"), "the response snippet", |t| {
            t.contains("crm is down")
        })
        .await;
    browser
        .screenshot(shots.as_deref(), "dead-letters.png")
        .await;

    // Filtered to billing: crm's row goes. Drop billing's, with the confirmation: gone, and
    // nothing sent to billing.
    let filter = browser.find("#filter-destination").await;
    filter.select_by_value("billing").await.expect("filter");
    browser
        .text_until("#dead-summary", "the billing filter", |t| {
            t.starts_with("1 shown of 1 matching; 2 dead letters")
        })
        .await;
    until_absent(&browser, &row, "crm's row under the billing filter").await;
    browser.find(&billing_row).await;
    let billing_requests = billing.requests().len();
    browser
        .click(&format!("{billing_row} button.row-drop"))
        .await;
    browser
        .text_until("#confirm-text", "the drop's confirmation", |t| {
            t.starts_with("Drop delivery") && t.contains(&billing_dead)
        })
        .await;
    browser.click("#confirm-ok").await;
    browser
        .text_until("#dead-result", "the drop's result", |t| {
            t.starts_with("1 dropped")
        })
        .await;
    until_absent(&browser, &billing_row, "the dropped dead letter").await;
    browser.find("#no-dead").await;
    let (_, dead, _) =
        status_and_json(client.get(format!("{admin}/dead")).bearer_auth(TOKEN)).await;
    assert_eq!(
        (&dead["total"], &dead["dead"][0]["id"]),
        (&Value::from(1), &Value::from(dead_id.as_str())),
        "only crm's is left: {dead}"
    );
    assert_eq!(
        billing.requests().len(),
        billing_requests,
        "a drop sends nothing"
    );

    // Filtered to crm: its row; Retry with the confirmation.
    let filter = browser.find("#filter-destination").await;
    filter.select_by_value("crm").await.expect("filter");
    browser
        .text_until(
            &format!("{row} td.destination"),
            "crm's row under the crm filter",
            |t| t == "crm",
        )
        .await;
    browser
        .text_until("#dead-summary", "the crm filter", |t| {
            t.starts_with("1 shown of 1 matching; 1 dead letters")
        })
        .await;
    crm.set_default(Reply::status(200));
    let before = crm.requests().len();
    browser.click(&format!("{row} button.row-retry")).await;
    browser
        .text_until("#confirm-text", "the confirmation", |t| {
            t.starts_with("Retry delivery") && t.contains(&dead_id)
        })
        .await;
    browser.click("#confirm-ok").await;
    browser
        .text_until("#dead-result", "the retry's result", |t| {
            t.starts_with("1 queued again")
        })
        .await;
    crm.wait_for(before + 1, WAIT).await;
    browser.find("#no-dead").await;

    // The event, found by Mindstamp's id: the job delivered, after its failed attempts.
    browser.click("#nav-events").await;
    let mindstamp_id = fixture_json("lead.json")["id"]
        .as_str()
        .unwrap()
        .to_string();
    browser
        .find("#event-q")
        .await
        .send_keys(&mindstamp_id)
        .await
        .unwrap();
    browser.click("#event-go").await;
    let crm_job = format!("#event-card[data-event=\"{event_id}\"] .job[data-destination=\"crm\"][data-status=\"delivered\"]");
    let deadline = Instant::now() + WAIT;
    loop {
        let text = match c.find(fantoccini::Locator::Css(&crm_job)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.starts_with("crm") {
            assert!(
                text.contains("HTTP 500") && text.contains("HTTP 200"),
                "{text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "crm's job never showed as delivered"
        );
        // The page shows the event as it was when looked up: look again.
        browser.click("#event-go").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser
        .text_until("#event-card pre.explain", "the explanation", |t| {
            t.contains("✓ route \"leads-to-crm\"")
        })
        .await;
    browser.screenshot(shots.as_deref(), "events.png").await;

    // Back on the overview, no dead letter is left and crm, delivering again, is healthy;
    // logging out ends the session.
    browser.click("#nav-overview").await;
    for destination in ["crm", "billing"] {
        browser
            .text_until(&cell(destination, "dead"), "the dead letters gone", |t| {
                t == "0"
            })
            .await;
    }
    browser
        .text_until(&cell("crm", "state"), "crm's recovery", |t| t == "healthy")
        .await;
    browser.click("#logout").await;
    browser.find("#login-form").await;
    browser.close().await;
    assert!(daemon.terminate().success(), "{}", daemon.log());
    println!("browser test took {:?}", started.elapsed());
}
