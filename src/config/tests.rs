//! Unit tests of loading a whole config: defaults, every section's problems, positions.

use super::*;
use std::collections::HashMap;
use std::time::Duration;

fn load(text: &str) -> Result<Config, ConfigError> {
    let env = HashMap::from([("KEY".to_string(), "k1".to_string())]);
    Config::from_yaml(text, Path::new("routes.yaml"), &env)
}

const GOOD: &str = r#"
keys: ["${KEY}"]
retry: { initial_interval: 50ms }
destinations:
  crm:
    url: http://127.0.0.1:1/hook
    headers: { Authorization: "Bearer x" }
routes:
  - name: leads
    event: lead
    to: [crm]
"#;

#[test]
fn a_good_config_gets_defaults() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server.max_body_bytes, 1024 * 1024);
    assert_eq!(c.destinations["crm"].timeout, Duration::from_secs(10));
    assert_eq!(
        c.destinations["crm"].retry.initial_interval,
        Duration::from_millis(50)
    );
    assert_eq!(c.destinations["crm"].retry.multiplier, 2.0);
}

#[test]
fn every_problem_is_reported_with_line_and_route() {
    let text = r#"keys: [k]
server:
  listen: nowhere
destinations:
  crm:
    url: ftp://x
routes:
  - name: a
    to: [nope]
  - name: a
    to: [crm]
    match:
      percentage: { gte: high }
"#;
    let err = load(text).unwrap_err().to_string();
    assert!(
        err.contains("routes.yaml:3:3: server.listen: expected an address"),
        "{err}"
    );
    assert!(
        err.contains("routes.yaml:6:5: destination \"crm\": url: expected an http"),
        "{err}"
    );
    assert!(
        err.contains(
            "routes.yaml:9:10: route \"a\": to.0: unknown destination \"nope\" (defined: crm)"
        ),
        "{err}"
    );
    assert!(
        err.contains("routes.yaml:10:5: route \"a\": name: duplicate route name"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 5, "{err}");
    assert!(
            err.contains("routes.yaml:13:21: route \"a\": match.percentage.gte: expected a number, found \"high\""),
            "{err}"
        );
}

#[test]
fn an_unknown_field_is_reported_where_it_is() {
    let err = load("keys: [k]\nserver:\n  colour: blue\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("routes.yaml:3:3: server.colour: unknown field `colour`"),
        "{err}"
    );
    let err = load("keys: [k]\nroutes:\n  - name: r\n    to: []\n    retries: 3\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("routes.yaml:5:5: route \"r\": retries: unknown field"),
        "{err}"
    );
    // The rest of the route is still checked.
    assert!(
        err.contains("routes.yaml:4:5: route \"r\": to: a route needs at least one destination"),
        "{err}"
    );
}

#[test]
fn a_value_can_come_from_a_credential_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slack_url");
    std::fs::write(&file, "https://hooks.slack.com/services/T/B/X\n").unwrap();
    let text = format!(
        "keys: [k]\ndestinations:\n  s:\n    url: {{ file: {:?} }}\n",
        file.display().to_string()
    );
    let c = load(&text).unwrap();
    // The trailing newline is trimmed.
    assert_eq!(
        c.destinations["s"].url.as_str(),
        "https://hooks.slack.com/services/T/B/X"
    );
    let huge = dir.path().join("huge");
    std::fs::write(&huge, vec![b'x'; 70 * 1024]).unwrap();
    let err = load(&text.replace("slack_url", "huge"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("is larger than 65536 bytes"), "{err}");
    let missing = text.replace("slack_url", "nope");
    let err = load(&missing).unwrap_err().to_string();
    assert!(
        err.contains("destination \"s\": url: cannot read secret file"),
        "{err}"
    );
}

#[test]
fn an_unset_variable_is_an_error_and_no_secret_is_printed() {
    let text = "keys: [\"${NOT_SET}\"]\ndestinations:\n  d:\n    url: \"${KEY}\"\n";
    let err = load(text).unwrap_err().to_string();
    assert!(
        err.contains("keys.0: environment variable NOT_SET is not set"),
        "{err}"
    );
    assert!(!err.contains("k1"), "{err}");
}

#[test]
fn a_syntax_error_has_a_position() {
    let err = load("keys: [a\nroutes: {").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    assert!(err.to_string().starts_with("routes.yaml:"), "{err}");
}
