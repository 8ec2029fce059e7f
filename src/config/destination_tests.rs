//! Unit tests of a destination's validation: every field's problems, as the whole config reports them.

use crate::config::{Config, ConfigError};
use std::collections::HashMap;
use std::path::Path;

fn load(destinations: &str) -> Result<Config, ConfigError> {
    let env = HashMap::from([("TOKEN".to_string(), "s3cret".to_string())]);
    let text = format!("keys: [k]\ndestinations:\n{destinations}");
    Config::from_yaml(&text, Path::new("routes.yaml"), &env)
}

#[test]
fn defaults_are_raw_post_and_the_usual_retry_statuses() {
    let c = load("  d:\n    url: http://h/x\n").unwrap();
    let d = &c.destinations["d"];
    assert_eq!(d.method, http::Method::POST);
    assert_eq!(d.format.to_string(), "raw");
    assert!(d.classify.retry_on.contains(429) && d.classify.retry_on.contains(502));
    assert!(!d.classify.retry_on.contains(404));
    assert!(d.rate_limit.is_none() && d.max_age.is_none() && d.sign.is_none());
    assert!(!d.uses_templates());
}

#[test]
fn every_new_field_is_checked_at_its_line() {
    let text = r#"  slack:
    url: http://h/x
    format: slack
    template: "{{ viewer_name | }}"
    blocks:
      - type: section
        text: { type: mrkdwn, text: "{% if %}" }
    rate_limit: fast
    retry_on: [429, "6xx"]
    permanent_if_body: "(unclosed"
    max_age: soon
    sign: { secret: "whsec_!!" }
  crm:
    url: http://h/y
    body: { a: 1 }
    headers:
      X-Key: "{{ a"
      Authorization: "Bearer ${TOKEN}{{"
"#;
    let err = load(text).unwrap_err().to_string();
    for expected in [
            "routes.yaml:6:5: destination \"slack\": template: syntax error",
            "routes.yaml:9:31: destination \"slack\": blocks.0.text.text: syntax error",
            "routes.yaml:10:5: destination \"slack\": rate_limit: expected a rate such as 1/s",
            "routes.yaml:11:21: destination \"slack\": retry_on.1: expected a status code",
            "routes.yaml:12:5: destination \"slack\": permanent_if_body: not a valid regular expression: unclosed group",
            "routes.yaml:13:5: destination \"slack\": max_age: expected a duration",
            "routes.yaml:14:13: destination \"slack\": sign.secret: the secret must be",
            "routes.yaml:17:5: destination \"crm\": body: body is only used with format: json",
            "routes.yaml:19:7: destination \"crm\": headers.X-Key: syntax error",
            "routes.yaml:20:7: destination \"crm\": headers.Authorization: template syntax error (the value is not shown",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in\n{err}");
        }
    assert!(!err.contains("s3cret"), "{err}");
    // The regex's caret diagram keeps its own two lines, under the problem.
    assert!(
        err.contains("unclosed group\n        (unclosed\n        ^\n"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 12, "{err}");
}

#[test]
fn json_needs_a_body_and_format_must_be_known() {
    let err = load(
        "  a:\n    url: http://h/x\n    format: json\n  b:\n    url: http://h/x\n    format: xml\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("routes.yaml:5:5: destination \"a\": format: format: json needs a body"),
        "{err}"
    );
    assert!(
        err.contains("routes.yaml:8:5: destination \"b\": format: expected raw, slack or json"),
        "{err}"
    );
}
