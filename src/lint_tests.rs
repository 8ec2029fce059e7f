//! Unit tests of the config lint: fields no routed kind carries, "did you mean", and
//! templates rendered against the sample payloads.

use super::*;
use std::collections::HashMap;
use std::path::Path;

fn warnings_of(text: &str) -> (Vec<String>, Result<(), String>) {
    let env: HashMap<String, String> = HashMap::new();
    let text = format!("keys: [k]\n{text}");
    match Config::from_yaml(&text, Path::new("routes.yaml"), &env) {
        Ok(c) => (c.warnings.iter().map(ToString::to_string).collect(), Ok(())),
        Err(e) => (Vec::new(), Err(e.to_string())),
    }
}

#[test]
fn did_you_mean_finds_typos_only() {
    let fields = ["percentage", "viewer_name", "tag1", "tag2"];
    assert_eq!(did_you_mean("percentge", fields), Some("percentage"));
    assert_eq!(did_you_mean("Viewer_Name", fields), Some("viewer_name"));
    assert_eq!(did_you_mean("tag", fields), Some("tag1"));
    assert_eq!(did_you_mean("country", fields), None);
    assert_eq!(did_you_mean("defualt", FILTERS), Some("default"));
}

#[test]
fn a_misspelt_field_and_a_field_of_another_kind_are_warnings() {
    let (w, ok) = warnings_of(
            "destinations:\n  d:\n    url: http://h/x\nroutes:\n  - name: r\n    event: view\n    match:\n      percentge: { gte: 80 }\n      variables.plan: pro\n    to: [d]\n  - name: clicks\n    event: interaction\n    match:\n      any:\n        - tag1: webinar\n        - not: { answers.0: x }\n    to: [d]\n",
        );
    assert_eq!(ok, Ok(()));
    assert_eq!(w.len(), 2, "{w:#?}");
    assert_eq!(
            w[0],
            "routes.yaml:9:7: route \"r\": match.percentge: \"percentge\" is not a field of view payloads, so this condition never sees a value; did you mean \"percentage\"?"
        );
    assert_eq!(
            w[1],
            "routes.yaml:16:11: route \"clicks\": match.any.0.tag1: \"tag1\" is not a field of interaction payloads (Mindstamp sends it with view events), so this condition never sees a value"
        );
}

#[test]
fn a_route_for_any_kind_warns_only_when_no_kind_has_the_field() {
    let (w, _) = warnings_of(
            "destinations:\n  d:\n    url: http://h/x\nroutes:\n  - name: r\n    match: { tag1: a, name: b, nope: c }\n    to: [d]\n",
        );
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].contains("\"nope\" is not a field of view, interaction or lead payloads"),
        "{w:#?}"
    );
}

#[test]
fn templates_are_checked_against_the_kinds_routed_to_them() {
    let (w, ok) = warnings_of(
        r#"destinations:
  hubspot:
    url: http://h/x
    format: json
    body:
      first: "{{ name | split(' ') | first }}"
      email: "{{ viewer_email }}"
      pct: "{{ payload.percentage }}"
      when: "{{ event }} {{ event_id }}"
      loop: "{% for a in answers | default([]) %}{{ a }}{% endfor %}"
      typed: "{{ percentage | round }}"
      bad: "{{ viewer_name | round }}"
routes:
  - name: views
    event: view
    to: [hubspot]
"#,
    );
    assert_eq!(ok, Ok(()));
    assert_eq!(w.len(), 3, "{w:#?}");
    // The failure to render body.first is what the missing field explains: not repeated.
    assert!(
            w[0].contains("body.first: \"name\" is not a field of view payloads (Mindstamp sends it with lead events), so this template never sees a value"),
            "{w:#?}"
        );
    assert!(
        w[1].contains("body.loop: \"answers\" is not a field of view payloads"),
        "{w:#?}"
    );
    assert!(
        w[2].contains("body.bad: fails to render for view events (invalid operation"),
        "{w:#?}"
    );
    assert!(w[2].contains("tried with examples/view.json"), "{w:#?}");
}

#[test]
fn a_templated_url_field_is_checked_against_the_routed_kinds() {
    let (warnings, result) = warnings_of(
            "destinations:\n  sf:\n    url: \"https://h/sobjects/Lead/Mindstamp_Id__c/{{ idd }}?e={{ event }}\"\nroutes:\n  - { name: l, event: lead, to: [sf] }\n",
        );
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("destination \"sf\": url:") && warnings[0].contains("\"id\""),
        "{warnings:?}"
    );
}

#[test]
fn an_unknown_filter_is_an_error_with_a_suggestion() {
    let (_, err) = warnings_of(
            "destinations:\n  s:\n    url: http://h/x\n    format: slack\n    template: \"{{ viewer_name | defualt('x') }}\"\nroutes:\n  - name: r\n    event: lead\n    to: [s]\n",
        );
    let err = err.unwrap_err();
    assert_eq!(
            err,
            "routes.yaml:6:5: destination \"s\": template: unknown filter \"defualt\"; did you mean \"default\"? (the template compiles, but every delivery that renders it would be dead-lettered)"
        );
    // Also when no route sends to the destination.
    let (_, err) = warnings_of(
            "destinations:\n  s:\n    url: http://h/x\n    format: slack\n    template: \"{% if percentage is numbr %}x{% endif %}\"\n",
        );
    assert!(err
        .unwrap_err()
        .contains("unknown test \"numbr\"; did you mean \"number\"?"),);
}
