//! CRM destinations (issue 15) against a real OAuth token endpoint and a real receiver on
//! loopback: one token fetch for concurrent deliveries, a refresh before expiry, one
//! refresh and one retry after a 401, a rotated refresh token that survives `kill -9` of
//! the real binary, `invalid_grant` holding the destination, an encoded templated URL and
//! `success_on: [409]`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{
    eventually, fixture_json, response_json, DaemonProcess, Receiver, Recorded, Reply, TestDaemon,
    KEY,
};
use reqwest::Method;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

/// Millisecond retries, so failure paths finish quickly.
const RETRY: &str =
    "retry: { initial_interval: 20ms, multiplier: 2.0, max_interval: 200ms, max_elapsed: 1h }\n";

/// A token endpoint answer.
fn token(access: &str, expires_in: u64, refresh: Option<&str>) -> Reply {
    let mut body =
        json!({"access_token": access, "token_type": "bearer", "expires_in": expires_in});
    if let Some(r) = refresh {
        body["refresh_token"] = json!(r);
    }
    Reply::status(200)
        .header("content-type", "application/json")
        .body(&body.to_string())
}

fn lead(n: usize) -> String {
    let mut v = fixture_json("lead.json");
    v["id"] = json!(format!("lead-{n}"));
    v.to_string()
}

fn body_text(r: &Recorded) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The `crm` destination with OAuth2 at `tokens`, plus `extra` lines of its own.
fn oauth_config(crm: &Receiver, tokens: &Receiver, oauth_extra: &str, extra: &str) -> String {
    format!(
        r#"{RETRY}destinations:
  crm:
    url: "{}"
    concurrency: 8
    auth:
      oauth2:
        token_url: "{}"
        client_id: the-client
        client_secret: client-secret-value
{oauth_extra}{extra}routes:
  - {{ name: leads, event: lead, to: [crm] }}
"#,
        crm.url("/crm/v3/objects/contacts"),
        tokens.url("/oauth/token"),
    )
}

async fn queue(d: &TestDaemon) -> Value {
    let (status, q) = d.admin(Method::GET, "/queue").await;
    assert_eq!(status, 200, "{q}");
    q
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_share_one_token_fetch() {
    let crm = Receiver::start().await;
    let tokens = Receiver::start().await;
    // A slow token endpoint: every delivery is waiting for the token at once.
    tokens.set_default(token("access-one", 3600, None).delay(Duration::from_millis(800)));
    let config = oauth_config(
        &crm,
        &tokens,
        "        scopes: [crm.objects.contacts.write, crm.objects.contacts.read]\n",
        "",
    );
    let d = TestDaemon::start(&config).await;
    for n in 0..8 {
        let (status, body) = d.post("lead", Some(KEY), lead(n)).await;
        assert_eq!(status, 200, "{body}");
    }
    let got = crm.wait_for(8, WAIT).await;
    assert_eq!(tokens.requests().len(), 1, "one fetch for eight deliveries");
    for r in &got {
        assert_eq!(r.header("authorization"), "Bearer access-one");
    }
    let t = &tokens.requests()[0];
    assert_eq!(t.method, "POST");
    assert_eq!(
        t.header("content-type"),
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        body_text(t),
        "grant_type=client_credentials&client_id=the-client&client_secret=client-secret-value&scope=crm.objects.contacts.write%20crm.objects.contacts.read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_is_refreshed_before_the_next_call() {
    let crm = Receiver::start().await;
    let tokens = Receiver::start().await;
    // Two seconds of life: refreshed 0.2 s before it runs out.
    tokens.script([token("access-one", 2, None), token("access-two", 2, None)]);
    let config = oauth_config(
        &crm,
        &tokens,
        "        refresh_token: the-refresh-token\n",
        "",
    );
    let d = TestDaemon::start(&config).await;
    d.post("lead", Some(KEY), lead(1)).await;
    crm.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    d.post("lead", Some(KEY), lead(2)).await;
    let got = crm.wait_for(2, WAIT).await;
    let fetches = tokens.requests();
    assert_eq!(fetches.len(), 2, "one refresh");
    assert_eq!(got.len(), 2, "no request was refused and sent again");
    assert_eq!(got[0].header("authorization"), "Bearer access-one");
    assert_eq!(got[1].header("authorization"), "Bearer access-two");
    assert!(fetches[1].at < got[1].at, "refreshed before the call");
    assert_eq!(
        body_text(&fetches[0]),
        "grant_type=refresh_token&refresh_token=the-refresh-token&client_id=the-client&client_secret=client-secret-value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_refreshes_the_token_once_and_sends_once_more() {
    let crm = Receiver::start().await;
    let tokens = Receiver::start().await;
    tokens.script([
        token("access-one", 3600, None),
        token("access-two", 3600, None),
        token("access-three", 3600, None),
    ]);
    // The first job: refused, then taken. The second: refused twice (a dead letter: the
    // retry happens exactly once, and a 401 is permanent).
    crm.script([
        Reply::status(401),
        Reply::status(200),
        Reply::status(401),
        Reply::status(401).body("invalid token: Bearer access-three"),
    ]);
    let config = oauth_config(&crm, &tokens, "", "");
    let d = TestDaemon::start(&config).await;
    d.post("lead", Some(KEY), lead(1)).await;
    let got = crm.wait_for(2, WAIT).await;
    assert_eq!(got[0].header("authorization"), "Bearer access-one");
    assert_eq!(got[1].header("authorization"), "Bearer access-two");
    assert_eq!(
        got[0].header("x-hookrouter-delivery"),
        got[1].header("x-hookrouter-delivery")
    );
    assert_eq!(tokens.requests().len(), 2);

    d.post("lead", Some(KEY), lead(2)).await;
    let got = crm.wait_for(4, WAIT).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let q = queue(&d).await;
        if q["destinations"]["crm"]["dead"] == 1 {
            assert_eq!(q["destinations"]["crm"]["pending"], 0, "{q}");
            break;
        }
        assert!(Instant::now() < deadline, "no dead letter: {q}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(crm.requests().len(), 4, "sent again exactly once");
    assert_eq!(tokens.requests().len(), 3, "refreshed exactly once");
    assert_eq!(got[3].header("authorization"), "Bearer access-three");
    let (status, dead) = d.admin(Method::GET, "/dead?limit=10").await;
    assert_eq!(status, 200, "{dead}");
    let shown = dead.to_string();
    assert!(shown.contains("HTTP 401"), "{shown}");
    assert!(
        !shown.contains("access-three"),
        "the token is masked: {shown}"
    );
}

fn process_config(dir: &Path, crm: &Receiver, tokens: &Receiver) -> std::path::PathBuf {
    let path = dir.join("routes.yaml");
    let text = format!(
        r#"{}keys: ["{KEY}"]
{}"#,
        crate::common::server_block(&dir.join("data")),
        oauth_config(
            crm,
            tokens,
            "        refresh_token: configured-refresh-token\n",
            ""
        )
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn post_to(daemon: &DaemonProcess, body: String) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client
        .post(format!("http://{}/webhooks/lead", daemon.addr))
        .header("X-KEY", KEY)
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, body) = response_json(resp).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let crm = Receiver::start().await;
    let tokens = Receiver::start().await;
    // Every refresh rotates the refresh token (as Salesforce may): the old one is dead.
    tokens.script([
        token("access-before-crash", 3600, Some("rotated-refresh-token-2")),
        token("access-after-crash", 3600, Some("rotated-refresh-token-3")),
    ]);
    let config = process_config(dir.path(), &crm, &tokens);
    let mut daemon = DaemonProcess::spawn(&config);
    post_to(&daemon, lead(1)).await;
    crm.wait_for(1, WAIT).await;
    daemon.kill9();
    let before = daemon.log();

    let daemon = DaemonProcess::spawn(&config);
    post_to(&daemon, lead(2)).await;
    eventually(WAIT, "a delivery with the new token", || {
        crm.requests()
            .iter()
            .any(|r| r.header("authorization") == "Bearer access-after-crash")
    })
    .await;
    let fetches = tokens.requests();
    assert_eq!(fetches.len(), 2, "{fetches:?}");
    assert!(
        body_text(&fetches[0]).contains("refresh_token=configured-refresh-token&"),
        "{}",
        body_text(&fetches[0])
    );
    assert!(
        body_text(&fetches[1]).contains("refresh_token=rotated-refresh-token-2&"),
        "after the crash, the rotated token: {}",
        body_text(&fetches[1])
    );
    let mut daemon = daemon;
    daemon.kill9();
    let after = daemon.log();

    // An operator who writes a new refresh token into the config starts from it.
    tokens.script([token("access-new-config", 3600, None)]);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("configured-refresh-token", "operator-new-refresh-token"),
    )
    .unwrap();
    let daemon = DaemonProcess::spawn(&config);
    post_to(&daemon, lead(3)).await;
    eventually(WAIT, "a delivery under the new config's token", || {
        tokens.requests().len() == 3
    })
    .await;
    assert!(
        body_text(&tokens.requests()[2]).contains("refresh_token=operator-new-refresh-token&"),
        "{}",
        body_text(&tokens.requests()[2])
    );
    let log = format!("{before}{after}{}", daemon.log());
    assert!(log.contains("rotated the refresh token"), "{log}");
    for secret in [
        "rotated-refresh-token",
        "configured-refresh-token",
        "operator-new-refresh-token",
        "client-secret-value",
        "access-before-crash",
        "access-after-crash",
    ] {
        assert!(!log.contains(secret), "{secret} logged:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_holds_the_destination_and_alerts() {
    let crm = Receiver::start().await;
    let tokens = Receiver::start().await;
    let ops = Receiver::start().await;
    tokens.set_default(
        Reply::status(400)
            .header("content-type", "application/json")
            .body(
                r#"{"error":"invalid_grant","error_description":"expired access/refresh token"}"#,
            ),
    );
    let alerts = format!(
        "  ops: {{ url: \"{}\" }}\nalerts:\n  to: [ops]\n  on: [destination_held]\n",
        ops.url("/alerts")
    );
    let config = oauth_config(
        &crm,
        &tokens,
        "        refresh_token: revoked-token\n",
        &alerts,
    );
    let d = TestDaemon::start(&config).await;
    for n in 0..5 {
        d.post("lead", Some(KEY), lead(n)).await;
    }
    let deadline = Instant::now() + WAIT;
    let health = loop {
        let h = queue(&d).await["destinations"]["crm"]["health"].clone();
        if h["state"] == "held" {
            break h;
        }
        assert!(Instant::now() < deadline, "not held: {h}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let error = health["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("refused the credentials (invalid_grant: expired access/refresh token)"),
        "{health}"
    );
    assert!(!error.contains("revoked-token"), "{health}");
    assert!(health["next_probe_ms"].is_null(), "no probes: {health}");
    assert_eq!(health["held_for_credentials"], true, "{health}");
    // Nothing more is attempted: no job spends its retries on a refused grant.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let fetches = tokens.requests().len();
    assert!(fetches <= 2, "{fetches} token requests");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tokens.requests().len(), fetches, "held: no more fetches");
    assert!(crm.requests().is_empty());
    let q = queue(&d).await;
    assert_eq!(q["destinations"]["crm"]["dead"], 0, "{q}");
    let alert = ops.wait_for(1, WAIT).await;
    let alert: Value = serde_json::from_slice(&alert[0].body).unwrap();
    assert_eq!(alert["alert"], "destination_held", "{alert}");
    assert!(
        alert["text"]
            .as_str()
            .unwrap()
            .contains("its OAuth token endpoint refused the credentials"),
        "{alert}"
    );
    assert_eq!(alert["hint"], "hookrouter destination release crm");

    let out = crate::common::hookrouter(&["status", "--admin", &d.admin_url()])
        .env_remove(&["HOOKROUTER_ADMIN", "HOOKROUTER_ADMIN_TOKEN"])
        .output();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(table.contains("held (credentials refused)"), "{table}");

    // Fixed credentials, then a reload (the operator's "fixed it"): it releases the hold,
    // and every job is delivered.
    tokens.set_default(token("access-fixed", 3600, None));
    let (status, body) = d.admin(Method::POST, "/reload").await;
    assert_eq!(status, 200, "{body}");
    let got = crm.wait_for(5, WAIT).await;
    assert!(got
        .iter()
        .all(|r| r.header("authorization") == "Bearer access-fixed"));
    let health = queue(&d).await["destinations"]["crm"]["health"].clone();
    assert_eq!(
        (&health["state"], &health["held_for_credentials"]),
        (&Value::from("healthy"), &Value::from(false)),
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_templated_url_is_encoded_and_409_counts_as_delivered_where_configured() {
    let crm = Receiver::start().await;
    let plain = Receiver::start().await;
    crm.set_default(Reply::status(409).body(r#"{"message":"Contact already exists"}"#));
    plain.set_default(Reply::status(409));
    let config = format!(
        r#"{RETRY}destinations:
  upsert:
    url: "{}/sobjects/Lead/Mindstamp_Id__c/{{{{ id }}}}"
    method: PATCH
    success_on: [409]
    auth:
      bearer: {{ token: "pd-token-value" }}
  plain:
    url: "{}"
routes:
  - {{ name: leads, event: lead, to: [upsert, plain] }}
"#,
        crm.url(""),
        plain.url("/plain"),
    );
    let d = TestDaemon::start(&config).await;
    let mut event = fixture_json("lead.json");
    event["id"] = json!("a/b c?d#é");
    d.post("lead", Some(KEY), event.to_string()).await;
    let got = crm.wait_for(1, WAIT).await;
    assert_eq!(got[0].method, "PATCH");
    assert_eq!(
        got[0].path,
        "/sobjects/Lead/Mindstamp_Id__c/a%2Fb%20c%3Fd%23%C3%A9"
    );
    assert_eq!(got[0].header("authorization"), "Bearer pd-token-value");
    let deadline = Instant::now() + WAIT;
    loop {
        let q = queue(&d).await;
        let (u, p) = (&q["destinations"]["upsert"], &q["destinations"]["plain"]);
        if p["dead"] == 1 && u["pending"] == 0 {
            assert_eq!(u["dead"], 0, "409 is delivered for upsert: {q}");
            assert_eq!(u["retrying"], 0, "{q}");
            break;
        }
        assert!(Instant::now() < deadline, "{q}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(crm.requests().len(), 1, "delivered once, not retried");
}

#[test]
fn check_no_environment_validates_a_config_whose_secrets_are_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    std::fs::write(
        &path,
        r#"keys: ["${CRM_TEST_UNSET_KEY}"]
destinations:
  sf:
    url: "https://example.my.salesforce.com/services/data/v60.0/sobjects/Lead/Mindstamp_Id__c/{{ id }}"
    method: PATCH
    headers:
      X-Extra: "Bearer ${file:/run/credentials/hookrouter/nothing-here}"
    auth:
      oauth2:
        token_url: https://login.salesforce.com/services/oauth2/token
        client_id: "${CRM_TEST_UNSET_ID}"
        client_secret: { file: /run/credentials/hookrouter/nothing-here }
        refresh_token: "${CRM_TEST_UNSET_REFRESH}"
routes:
  - { name: leads, event: lead, to: [sf] }
"#,
    )
    .unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hookrouter"))
            .args(["check", "--config"])
            .arg(&path)
            .args(extra)
            .env_remove("HOOKROUTER_CONFIG")
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("CRM_TEST_UNSET_REFRESH is not set"), "{err}");
    assert!(err.contains("cannot read secret file"), "{err}");
    let out = run(&["--no-environment"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("no variable or secret file was read"), "{err}");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("auth oauth2"), "{summary}");
    // A real mistake is still one.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("token_url:", "token_uri:")).unwrap();
    let out = run(&["--no-environment"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("auth.oauth2.token_uri: unknown field"),
        "{err}"
    );
}

/// `hookrouter send` to an OAuth2 destination: a client-credentials token of its own; a
/// refresh-token grant is refused (the daemon holds the current refresh token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_fetches_a_client_credentials_token_and_leaves_refresh_tokens_alone() {
    let dir = tempfile::tempdir().unwrap();
    let crm = Receiver::start().await;
    let tokens = Receiver::start().await;
    tokens.set_default(token("access-for-send", 3600, None));
    let write = |oauth_extra: &str| {
        let path = dir.path().join("routes.yaml");
        let text = format!(
            "{}keys: [\"{KEY}\"]\n{}",
            crate::common::server_block(&dir.path().join("data")),
            oauth_config(&crm, &tokens, oauth_extra, "")
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let run = |path: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_hookrouter"))
                .args(["send", "--destination", "crm", "--config"])
                .arg(path)
                .env_remove("HOOKROUTER_CONFIG")
                .output()
                .unwrap()
        })
    };
    let out = run(write("")).await.unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(crm.requests().len(), 1);
    assert_eq!(
        crm.requests()[0].header("authorization"),
        "Bearer access-for-send"
    );
    assert!(!said.contains("access-for-send"), "{said}");

    let out = run(write("        refresh_token: the-daemons-token\n"))
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("send does not refresh its token"), "{err}");
    assert_eq!(tokens.requests().len(), 1, "no refresh from send");
    assert_eq!(crm.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_token_unless_the_oauth_settings_change() {
    let crm = Receiver::start().await;
    let tokens = Receiver::start().await;
    tokens.script([
        token("access-one", 3600, None),
        token("access-two", 3600, None),
    ]);
    let d = TestDaemon::start(&oauth_config(&crm, &tokens, "", "")).await;
    d.post("lead", Some(KEY), lead(1)).await;
    crm.wait_for(1, WAIT).await;
    // Another setting changes: the token stays.
    d.rewrite_config(&oauth_config(&crm, &tokens, "", "    timeout: 5s\n"));
    d.running().reload().expect("valid reload");
    d.post("lead", Some(KEY), lead(2)).await;
    let got = crm.wait_for(2, WAIT).await;
    assert_eq!(got[1].header("authorization"), "Bearer access-one");
    assert_eq!(tokens.requests().len(), 1);
    // The client changes: a new token, from the new client.
    let config = oauth_config(&crm, &tokens, "", "").replace("the-client", "another-client");
    d.rewrite_config(&config);
    d.running().reload().expect("valid reload");
    d.post("lead", Some(KEY), lead(3)).await;
    let got = crm.wait_for(3, WAIT).await;
    assert_eq!(got[2].header("authorization"), "Bearer access-two");
    let fetches = tokens.requests();
    assert_eq!(fetches.len(), 2);
    assert!(body_text(&fetches[1]).contains("client_id=another-client&"));
}
