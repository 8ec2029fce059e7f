//! The offline commands, run as the real binary: `check` and `route`.

use std::process::Output;

use crate::common;
use crate::common::{text, write_file as write};

fn hookrouter(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Output {
    let cli = common::hookrouter(args).envs(env);
    match stdin {
        Some(bytes) => cli.stdin(bytes).output(),
        None => cli.output(),
    }
}

const CONFIG: &str = r#"
keys: ["${HR_TEST_KEY}"]
destinations:
  sales-slack:
    url: "https://hooks.slack.com/services/${HR_SLACK_PATH}"
  crm:
    url: https://crm.example.com/hooks
    headers: { Authorization: "Bearer ${HR_CRM_TOKEN}" }
routes:
  - name: engaged-viewers
    event: view
    match:
      video_token: aVOfEGmGrZlG
      percentage: { gte: 90 }
      tag1: [webinar, demo]
    to: [sales-slack, crm]
  - name: big-screens
    event: [view, interaction]
    match:
      screen_width: { gte: 1000 }
      secret_field: "${HR_MATCH_SECRET}"
    to: [crm]
    stop: true
  - name: every-lead
    event: lead
    to: [crm]
"#;

const SECRETS: [(&str, &str); 4] = [
    ("HR_TEST_KEY", "sekrit-key-123"),
    ("HR_SLACK_PATH", "T000/B000/XXXXSLACKTOKEN"),
    ("HR_CRM_TOKEN", "crm-token-456"),
    ("HR_MATCH_SECRET", "match-secret-789"),
];

fn assert_no_secret(s: &str) {
    for (_, secret) in SECRETS {
        assert!(!s.contains(secret), "a secret leaked: {secret} in\n{s}");
    }
}

#[test]
fn check_prints_a_summary_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "routes.yaml", CONFIG);
    let out = hookrouter(&["check", "--config", &config], None, &SECRETS);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("keys: 1 accepted X-KEY value(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("sales-slack  POST https://hooks.slack.com/…  format raw"),
        "{stdout}"
    );
    assert!(stdout.contains("headers: authorization"), "{stdout}");
    assert!(
        stdout.contains(
            "engaged-viewers  [view]  video_token == \"aVOfEGmGrZlG\" AND percentage >= 90 AND tag1 in [\"webinar\", \"demo\"]  -> sales-slack, crm"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("secret_field == <secret>"), "{stdout}");
    assert!(stdout.contains("(stop)"), "{stdout}");
    assert_no_secret(&stdout);
    assert_no_secret(&text(&out.stderr));
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let open = format!("server:\n  admin_listen: 0.0.0.0:9090\n{CONFIG}");
    let config = write(dir.path(), "routes.yaml", &open);
    let out = hookrouter(&["check", "--config", &config], None, &SECRETS);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("routes.yaml:2:3: server.admin_listen: is not a loopback address"),
        "{stderr}"
    );
    assert!(stderr.contains("set server.admin_token"), "{stderr}");
    // With a token it is fine, and so is loopback (v4 or v6) without one.
    for server in [
        "server:\n  admin_listen: 0.0.0.0:9090\n  admin_token: \"${HR_CRM_TOKEN}\"\n",
        "server:\n  admin_listen: 127.0.0.1:9090\n",
        "server:\n  admin_listen: \"[::1]:9090\"\n",
    ] {
        let config = write(dir.path(), "routes.yaml", &format!("{server}{CONFIG}"));
        let out = hookrouter(&["check", "--config", &config], None, &SECRETS);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{server}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn check_reports_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let bad = CONFIG
        .replace("percentage: { gte: 90 }", "percentage: { gte: high }")
        .replace("to: [crm]\n    stop", "to: [crn]\n    stop")
        .replace("event: lead", "event: leads");
    let config = write(dir.path(), "routes.yaml", &bad);
    let out = hookrouter(&["check", "--config", &config], None, &SECRETS);
    assert_eq!(out.status.code(), Some(64));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("routes.yaml:"))
        .collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(lines[0].ends_with("routes.yaml:14:21: route \"engaged-viewers\": match.percentage.gte: expected a number, found \"high\""), "{stderr}");
    assert!(
        lines[1].contains(
            "routes.yaml:22:10: route \"big-screens\": to.0: unknown destination \"crn\""
        ),
        "{stderr}"
    );
    assert!(
        lines[2].contains(
            "routes.yaml:25:5: route \"every-lead\": event: unknown event kind \"leads\""
        ),
        "{stderr}"
    );
    assert_no_secret(&stderr);

    // An unset variable is named, and nothing of the others' values is shown.
    let out = hookrouter(&["check", "--config", &config], None, &SECRETS[1..]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("keys.0: environment variable HR_TEST_KEY is not set"));
}

#[test]
fn route_dry_run_explains_why_and_reads_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "routes.yaml", CONFIG);
    let view = include_str!("../fixtures/view.json");
    let payload = write(dir.path(), "view.json", view);
    let out = hookrouter(
        &[
            "route",
            "--config",
            &config,
            "--event",
            "view",
            &payload,
            "--explain",
        ],
        None,
        &SECRETS,
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    // tag1 is "spring-campaign": engaged-viewers fails on it, and says so.
    assert!(
        stdout.starts_with("no route matches this view event"),
        "{stdout}"
    );
    assert!(
        stdout.contains("✗ route \"engaged-viewers\" [view] -> sales-slack, crm"),
        "{stdout}"
    );
    assert!(stdout.contains("✓ percentage >= 90   (saw 95)"), "{stdout}");
    assert!(
        stdout.contains("✗ tag1 in [\"webinar\", \"demo\"]   (saw \"spring-campaign\")"),
        "{stdout}"
    );
    assert!(
        stdout.contains("✓ screen_width >= 1000   (saw \"1792\")"),
        "{stdout}"
    );
    assert!(
        stdout.contains("✗ secret_field == <secret>   (saw (missing))"),
        "{stdout}"
    );
    assert!(stdout.contains("does not apply to view events"), "{stdout}");
    assert_no_secret(&stdout);

    // The same from stdin, with tag1 fixed, as JSON.
    let fixed = view.replace("\"spring-campaign\"", "\"webinar\"");
    let out = hookrouter(
        &["route", "--config", &config, "--event", "view", "--json"],
        Some(fixed.as_bytes()),
        &SECRETS,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["routes"], serde_json::json!(["engaged-viewers"]));
    assert_eq!(report["deliveries"][1]["destination"], "crm");
    assert!(report.get("explain").is_none());

    // --render shows each request as it would be sent, with secrets redacted.
    let out = hookrouter(
        &[
            "route", "--config", &config, "--event", "view", "--render", "--json",
        ],
        Some(fixed.as_bytes()),
        &SECRETS,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let to_crm = report["rendered"][1]["request"].as_str().unwrap();
    assert!(
        to_crm.starts_with("POST https://crm.example.com/hooks\n"),
        "{to_crm}"
    );
    assert!(to_crm.contains("authorization: <secret>"), "{to_crm}");
    assert!(to_crm.contains("x-hookrouter-event: view"), "{to_crm}");
    assert!(
        to_crm.ends_with(fixed.as_str()),
        "raw format sends the body byte for byte: {to_crm}"
    );
    let to_slack = report["rendered"][0]["request"].as_str().unwrap();
    assert!(
        to_slack.starts_with("POST https://hooks.slack.com/<secret>"),
        "{to_slack}"
    );
    assert_no_secret(&text(&out.stdout));

    // A payload that is not a JSON object is a data error (65), not a config error.
    let out = hookrouter(
        &["route", "--config", &config, "--event", "lead"],
        Some(b"[1]"),
        &SECRETS,
    );
    assert_eq!(out.status.code(), Some(65));
    assert!(text(&out.stderr).contains("must hold a JSON object"));
}
