//! The mistakes a new user makes in the first hour, caught by `check` before they cost an
//! event (issue 16): a misspelt payload field, a field of another kind, an unknown template
//! filter; `--strict` and `--json`; `route --render` failing loudly.

use std::path::Path;
use std::process::Output;

use crate::common;
use crate::common::{text, write_file};

fn hookrouter(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let cli = common::hookrouter(args).env_remove(&["JOURNAL_STREAM"]);
    match stdin {
        Some(bytes) => cli.stdin(bytes).output(),
        None => cli.output(),
    }
}

fn write(dir: &Path, contents: &str) -> String {
    write_file(dir, "routes.yaml", contents)
}

const MISTAKES: &str = r#"keys: [a-real-key-1234]
destinations:
  sales-slack:
    url: http://127.0.0.1:9/hook
    format: slack
    template: "*{{ viewer_name }}* watched {{ video_title }}"
routes:
  - name: engaged-viewers
    event: view
    match:
      percentge: { gte: 80 }
    to: [sales-slack]
  - name: webinar-clicks
    event: interaction
    match:
      tag1: webinar
    to: [sales-slack]
"#;

#[test]
fn a_typo_and_a_field_of_another_kind_are_warnings_and_strict_fails_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), MISTAKES);
    let out = hookrouter(&["check", "--config", &config], None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(text(&out.stdout).contains("routes.yaml: OK"));
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("routes.yaml:"))
        .collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0].ends_with(
            "routes.yaml:11:7: route \"engaged-viewers\": match.percentge: \"percentge\" is not a field of view payloads, so this condition never sees a value; did you mean \"percentage\"?"
        ),
        "{stderr}"
    );
    assert!(
        warnings[1].ends_with(
            "routes.yaml:16:7: route \"webinar-clicks\": match.tag1: \"tag1\" is not a field of interaction payloads (Mindstamp sends it with view events), so this condition never sees a value"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 warnings (--strict makes them errors)"),
        "{stderr}"
    );

    let out = hookrouter(&["check", "--strict", "--config", &config], None);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("match.percentge"));

    // --json: the same warnings, with their places, for scripts.
    let out = hookrouter(&["check", "--json", "--config", &config], None);
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["errors"], serde_json::json!([]));
    assert_eq!(report["warnings"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(report["warnings"][0]["line"], 11);
    assert_eq!(report["warnings"][0]["col"], 7);
    assert_eq!(
        report["warnings"][0]["label"],
        "route \"engaged-viewers\": match.percentge"
    );
    assert_eq!(
        report["routes"],
        serde_json::json!(["engaged-viewers", "webinar-clicks"])
    );
    let out = hookrouter(&["check", "--json", "--strict", "--config", &config], None);
    assert_eq!(out.status.code(), Some(64));

    // Fixed, the config is clean even with --strict.
    let fixed = MISTAKES
        .replace("percentge", "percentage")
        .replace("tag1: webinar", "parent_type: question");
    let config = write(dir.path(), &fixed);
    let out = hookrouter(&["check", "--strict", "--config", &config], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn an_unknown_filter_is_an_error_and_every_unknown_key_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let bad = MISTAKES
        .replace(
            "{{ video_title }}",
            "{{ video_title | defualt('a video') }}",
        )
        .replace(
            "    format: slack\n",
            "    format: slack\n    timout: 5s\n    retires: 3\n",
        );
    let config = write(dir.path(), &bad);
    let out = hookrouter(&["check", "--config", &config], None);
    assert_eq!(out.status.code(), Some(64));
    let stderr = text(&out.stderr);
    for expected in [
        "routes.yaml:6:5: destination \"sales-slack\": timout: unknown field `timout` (did you mean `timeout`?)",
        "routes.yaml:7:5: destination \"sales-slack\": retires: unknown field `retires` (did you mean `retry`?)",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in\n{stderr}");
    }
    // The template is checked once the destination is valid.
    let config = write(
        dir.path(),
        &MISTAKES.replace(
            "{{ video_title }}",
            "{{ video_title | defualt('a video') }}",
        ),
    );
    let out = hookrouter(&["check", "--config", &config], None);
    assert_eq!(out.status.code(), Some(64));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "routes.yaml:6:5: destination \"sales-slack\": template: unknown filter \"defualt\"; did you mean \"default\"?"
        ),
        "{stderr}"
    );
    let out = hookrouter(&["check", "--json", "--config", &config], None);
    assert_eq!(out.status.code(), Some(64));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["errors"][0]["line"], 6, "{report}");
}

#[test]
fn a_bad_regex_keeps_its_caret_diagram() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        &MISTAKES.replace(
            "percentge: { gte: 80 }",
            "viewer_email: { regex: \"(acme\" }",
        ),
    );
    let out = hookrouter(&["check", "--config", &config], None);
    assert_eq!(out.status.code(), Some(64));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "routes.yaml:11:23: route \"engaged-viewers\": match.viewer_email.regex: invalid regex: unclosed group\n        (acme\n        ^\n"
        ),
        "{stderr}"
    );
}

#[test]
fn route_render_exits_65_when_a_request_cannot_be_rendered() {
    let dir = tempfile::tempdir().unwrap();
    // A lead has `name`, not `viewer_name`: the template cannot be rendered for it.
    let config = write(
        dir.path(),
        &MISTAKES
            .replace("event: interaction", "event: lead")
            .replace("tag1: webinar", "email: { exists: true }"),
    );
    let lead = std::fs::read("tests/fixtures/lead.json").unwrap();
    let out = hookrouter(
        &["route", "--config", &config, "--event", "lead", "--render"],
        Some(&lead),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(65), "{stdout}");
    assert!(
        stdout
            .contains("cannot render (the job would be dead-lettered): template error in template"),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("1 of 1 requests could not be rendered"),
        "{}",
        text(&out.stderr)
    );
    // `check` warned about it beforehand.
    let out = hookrouter(&["check", "--config", &config], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains(
            "routes.yaml:6:5: destination \"sales-slack\": template: fails to render for lead events (undefined value"
        ),
        "{}",
        text(&out.stderr)
    );
    // A payload that renders exits 0.
    let view = std::fs::read("tests/fixtures/view.json").unwrap();
    let out = hookrouter(
        &["route", "--config", &config, "--event", "view", "--render"],
        Some(&view),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}
