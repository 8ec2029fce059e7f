//! Unit tests of the condition language: every operator, the coercions, null handling,
//! nesting, and the error messages with their positions.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::{json, Value as Json};

use super::condition::compile_map;
use crate::config::{Config, Ctx, Problems};
use crate::route::condition::Condition;

fn compile(yaml: &str) -> Condition {
    let map: serde_yaml::Mapping = serde_yaml::from_str(yaml).expect("test yaml");
    let mut problems = Problems::default();
    let secrets = HashSet::new();
    let mut ctx = Ctx {
        problems: &mut problems,
        secrets: &secrets,
    };
    let c = compile_map(&map, "routes.0.match", &mut ctx);
    assert!(problems.is_empty(), "{problems:?}");
    c
}

fn holds(yaml: &str, payload: Json) -> bool {
    compile(yaml).holds(&payload)
}

fn view() -> Json {
    json!({
        "percentage": 95, "screen_width": "1792", "tag1": "webinar", "tag2": null,
        "viewer_email": "Jane@Acme.com", "video_title": "Onboarding: part 1",
        "answers": ["A. No", "D. All of the Above"], "correct": true,
        "variables": {"plan": "pro", "seats": "12", "nested": {"deep": 7}},
        "country": "Canada", "correctness": 85
    })
}

#[test]
fn equality_and_its_shorthands() {
    assert!(holds("tag1: webinar", view()));
    assert!(!holds("tag1: demo", view()));
    assert!(holds("tag1: [demo, webinar]", view()));
    assert!(!holds("tag1: [demo, other]", view()));
    assert!(holds("tag1: { eq: webinar }", view()));
    assert!(holds("correct: true", view()));
    assert!(!holds("correct: false", view()));
    assert!(
        !holds("correct: \"true\"", view()),
        "a boolean is not the string \"true\""
    );
}

#[test]
fn numbers_and_numeric_strings_compare_numerically() {
    assert!(holds("percentage: 95", view()));
    assert!(holds("percentage: \"95\"", view()));
    assert!(holds("percentage: 95.0", view()));
    assert!(holds("screen_width: 1792", view()), "\"1792\" == 1792");
    assert!(holds("screen_width: { gte: 1000, lt: 2000 }", view()));
    assert!(!holds("screen_width: { gt: 1792 }", view()));
    assert!(holds("screen_width: { lte: 1792 }", view()));
    assert!(holds("percentage: { gt: 90, lte: 95 }", view()));
    assert!(!holds("percentage: { gte: 50, lt: 90 }", view()));
    // Numeric operators fail on values that are not numbers.
    assert!(!holds("tag1: { gt: 0 }", view()));
    assert!(!holds("variables: { gt: 0 }", view()));
    assert!(!holds("correct: { gte: 0 }", view()));
}

#[test]
fn ne_in_and_not_in() {
    assert!(holds("tag1: { ne: internal }", view()));
    assert!(!holds("tag1: { ne: webinar }", view()));
    assert!(holds("tag1: { in: [a, webinar] }", view()));
    assert!(holds("percentage: { in: [\"95\", 100] }", view()));
    assert!(holds("tag1: { not_in: [a, b] }", view()));
    assert!(!holds("tag1: { not_in: [webinar] }", view()));
}

#[test]
fn null_and_missing_match_only_exists_false() {
    for field in ["tag2", "nope"] {
        for cond in [
            format!("{field}: x"),
            format!("{field}: {{ ne: x }}"),
            format!("{field}: {{ not_in: [x] }}"),
            format!("{field}: {{ gte: 0 }}"),
            format!("{field}: {{ regex: '.*' }}"),
            format!("{field}: {{ contains: '' }}"),
            format!("{field}: {{ starts_with: '' }}"),
            format!("{field}: {{ exists: true }}"),
        ] {
            assert!(
                !holds(&cond, view()),
                "{cond} must not hold on a null/missing field"
            );
        }
        assert!(holds(&format!("{field}: {{ exists: false }}"), view()));
    }
    assert!(holds("tag1: { exists: true }", view()));
    assert!(!holds("tag1: { exists: false }", view()));
}

#[test]
fn string_operators_with_and_without_case() {
    assert!(holds("video_title: { starts_with: Onboarding }", view()));
    assert!(!holds("video_title: { starts_with: onboarding }", view()));
    assert!(holds(
        "video_title: { starts_with: onboarding, ignore_case: true }",
        view()
    ));
    assert!(holds("video_title: { ends_with: part 1 }", view()));
    assert!(holds(
        "video_title: { ends_with: PART 1, ignore_case: true }",
        view()
    ));
    assert!(holds("video_title: { contains: ': part' }", view()));
    assert!(!holds("video_title: { contains: ': PART' }", view()));
    assert!(holds(
        "viewer_email: { regex: '@(acme|globex)\\.com$', ignore_case: true }",
        view()
    ));
    assert!(!holds(
        "viewer_email: { regex: '@(acme|globex)\\.com$' }",
        view()
    ));
    assert!(holds("viewer_email: { regex: '^Jane@' }", view()));
    // Numbers are searched as their decimal text.
    assert!(holds("percentage: { regex: '^9' }", view()));
}

#[test]
fn arrays_hold_when_any_element_equals() {
    assert!(holds("answers: { contains: D. All of the Above }", view()));
    assert!(
        !holds("answers: { contains: All of the Above }", view()),
        "contains on an array is element equality"
    );
    assert!(holds(
        "answers: { contains: d. all of the above, ignore_case: true }",
        view()
    ));
    assert!(holds("answers: \"A. No\"", view()));
    assert!(holds("answers: [x, \"A. No\"]", view()));
}

#[test]
fn dotted_paths_reach_into_nested_objects() {
    assert!(holds("variables.plan: pro", view()));
    assert!(holds("variables.seats: { gte: 10 }", view()));
    assert!(holds("variables.nested.deep: 7", view()));
    assert!(!holds("variables.nested.missing: 7", view()));
    assert!(!holds("variables.plan.deeper: pro", view()));
    assert!(holds("answers.1: D. All of the Above", view()));
}

#[test]
fn any_all_and_not_nest() {
    let yaml = r#"
any:
  - { country: "United States" }
  - { country: Canada, correctness: { gte: 80 } }
not: { tag5: test }
"#;
    assert!(holds(yaml, view()));
    let mut low = view();
    low["correctness"] = json!(10);
    assert!(!holds(yaml, low));
    assert!(!holds("not: { tag1: webinar }", view()));
    assert!(holds("not: { tag1: demo }", view()));
    let deep = r#"
all:
  - any:
      - not: { any: [ { tag1: demo }, { tag1: x } ] }
      - tag1: never
  - not: { not: { percentage: 95 } }
"#;
    assert!(holds(deep, view()));
    assert!(holds("{}", view()), "an empty match always holds");
}

fn problems_of(route_match: &str) -> String {
    let text = format!("keys: [k]\ndestinations:\n  d: {{ url: \"http://127.0.0.1:1/\" }}\nroutes:\n  - name: engaged-viewers\n    to: [d]\n    match:\n{route_match}");
    match Config::from_yaml(
        &text,
        Path::new("routes.yaml"),
        &HashMap::<String, String>::new(),
    ) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_name_line_column_route_and_field() {
    let err = problems_of("      percentage: { gte: high }\n");
    assert_eq!(
        err,
        "routes.yaml:8:21: route \"engaged-viewers\": match.percentage.gte: expected a number, found \"high\""
    );
    let err = problems_of("      email: { regex: '([a-z' }\n");
    assert!(
        err.starts_with(
            "routes.yaml:8:16: route \"engaged-viewers\": match.email.regex: invalid regex:"
        ),
        "{err}"
    );
    let err = problems_of("      tag1: { equals: x }\n");
    assert!(err.starts_with("routes.yaml:8:15: route \"engaged-viewers\": match.tag1.equals: unknown operator \"equals\""), "{err}");
    let err = problems_of("      tag1: ~\n");
    assert!(
        err.contains("8:7: route \"engaged-viewers\": match.tag1: a null value matches nothing"),
        "{err}"
    );
    let err = problems_of("      any: { tag1: x }\n");
    assert!(
        err.contains("match.any: any expects a list of condition maps"),
        "{err}"
    );
    let err = problems_of("      tag1: { exists: yes please }\n");
    assert!(
        err.contains("match.tag1.exists: expected true or false"),
        "{err}"
    );
    // An empty list is reported even beside another problem.
    let err = problems_of("      a: { gt: x }\n      any: []\n");
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(
        err.contains("match.any: any needs at least one condition map"),
        "{err}"
    );
    // Several problems are all reported, in file order.
    let err = problems_of("      a: { gt: x }\n      b: { lt: y }\n");
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(
        err.lines().next().unwrap().starts_with("routes.yaml:8:"),
        "{err}"
    );
    assert!(
        err.lines().nth(1).unwrap().starts_with("routes.yaml:9:"),
        "{err}"
    );
}

#[test]
fn stop_ends_evaluation_and_destinations_are_deduplicated() {
    let text = r#"
keys: [k]
destinations:
  a: { url: "http://127.0.0.1:1/" }
  b: { url: "http://127.0.0.1:1/" }
routes:
  - { name: first, match: { tag1: webinar }, to: [a] }
  - { name: second, to: [a, b], stop: true }
  - { name: third, to: [b] }
"#;
    let c =
        Config::from_yaml(text, Path::new("r.yaml"), &HashMap::<String, String>::new()).unwrap();
    let d = c.rules.decide(crate::event::EventKind::View, &view());
    assert_eq!(d.routes, ["first", "second"]);
    assert_eq!(d.deliveries.len(), 2);
    assert_eq!(d.deliveries[0].destination, "a");
    assert_eq!(d.deliveries[0].routes, ["first", "second"]);
    assert_eq!(d.deliveries[1].routes, ["second"]);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn leaf() -> impl Strategy<Value = String> {
        let field = prop::sample::select(vec![
            "percentage",
            "tag1",
            "tag2",
            "nope",
            "variables.seats",
            "answers",
        ]);
        let op = prop::sample::select(vec![
            "{ gte: 50 }",
            "{ lt: 90 }",
            "webinar",
            "[a, webinar]",
            "{ ne: x }",
            "{ exists: true }",
            "{ exists: false }",
            "{ contains: A. No }",
            "{ regex: '^[0-9]+$' }",
            "95",
            "{ not_in: [webinar] }",
        ]);
        (field, op).prop_map(|(f, o)| format!("{f}: {o}"))
    }

    fn payload() -> impl Strategy<Value = Json> {
        let value = prop_oneof![
            Just(Json::Null),
            (0i64..120).prop_map(|n| json!(n)),
            (0i64..120).prop_map(|n| json!(n.to_string())),
            prop::sample::select(vec!["webinar", "a", "x", "A. No"]).prop_map(|s| json!(s)),
            Just(json!(["A. No", "B"])),
        ];
        (value.clone(), value.clone(), value.clone(), value).prop_map(|(p, t1, t2, s)| {
            json!({"percentage": p, "tag1": t1, "tag2": t2, "answers": s, "variables": {"seats": p}})
        })
    }

    proptest! {
        #[test]
        fn not_inverts(cond in leaf(), payload in payload()) {
            let plain = compile(&cond).holds(&payload);
            let negated = compile(&format!("not: {{ {cond} }}")).holds(&payload);
            prop_assert_eq!(negated, !plain);
        }

        #[test]
        fn any_of_one_is_the_condition(cond in leaf(), payload in payload()) {
            let plain = compile(&cond).holds(&payload);
            let any = compile(&format!("any: [ {{ {cond} }} ]")).holds(&payload);
            let all = compile(&format!("all: [ {{ {cond} }} ]")).holds(&payload);
            prop_assert_eq!(any, plain);
            prop_assert_eq!(all, plain);
        }
    }
}

mod index_properties {
    use super::*;
    use crate::event::EventKind;
    use proptest::prelude::*;

    /// A rule set of routes drawn from shapes the index treats differently: string
    /// equalities and lists (guards), numeric-looking literals (not guards), other operators.
    fn rules() -> impl Strategy<Value = Vec<(String, Option<&'static str>, bool)>> {
        let cond = prop::sample::select(vec![
            "tag1: webinar",
            "tag1: demo",
            "tag1: [demo, webinar]",
            "tag1: \"95\"",
            "tag1: [a, \"7\"]",
            "video_token: tok1",
            "video_token: tok2",
            "percentage: { gte: 50 }",
            "tag1: { ne: demo }",
            "tag1: webinar, percentage: { lt: 90 }",
            "any: [ { tag1: demo }, { video_token: tok1 } ]",
            "tag2: { exists: false }",
            "answers: A",
        ]);
        let kind = prop::sample::select(vec![
            None,
            Some("view"),
            Some("lead"),
            Some("[view, interaction]"),
        ]);
        prop::collection::vec(
            (
                cond.prop_map(str::to_string),
                kind,
                prop::bool::weighted(0.15),
            ),
            0..12,
        )
    }

    fn value() -> impl Strategy<Value = Json> {
        prop_oneof![
            Just(Json::Null),
            Just(json!("webinar")),
            Just(json!("demo")),
            Just(json!("tok1")),
            Just(json!("95")),
            Just(json!(95)),
            Just(json!(7)),
            Just(json!(true)),
            Just(json!(["demo", "x"])),
            Just(json!(["A"])),
            Just(json!({"a": 1})),
        ]
    }

    proptest! {
        #[test]
        fn the_index_never_changes_a_decision(
            routes in rules(),
            tag1 in value(), token in value(), answers in value(), pct in 0i64..100,
            kind in prop::sample::select(vec![EventKind::View, EventKind::Interaction, EventKind::Lead]),
        ) {
            let mut text = String::from("keys: [k]\ndestinations:\n  d: { url: \"http://127.0.0.1:1/\" }\nroutes:\n");
            for (i, (cond, kind, stop)) in routes.iter().enumerate() {
                let kind = kind.map(|k| format!(", event: {k}")).unwrap_or_default();
                text.push_str(&format!("  - {{ name: r{i}, match: {{ {cond} }}, to: [d]{kind}, stop: {stop} }}\n"));
            }
            let config = Config::from_yaml(&text, Path::new("p.yaml"), &HashMap::<String, String>::new())
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            let payload = json!({"tag1": tag1, "video_token": token, "answers": answers, "percentage": pct});
            let mut naive = Vec::new();
            for r in config.rules.routes() {
                if r.matches(kind, &payload) {
                    naive.push(r.name.clone());
                    if r.stop { break; }
                }
            }
            prop_assert_eq!(config.rules.decide(kind, &payload).routes, naive);
        }
    }
}
