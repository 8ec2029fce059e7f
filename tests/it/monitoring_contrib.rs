//! The monitoring files shipped in `contrib/`: the Prometheus rule file
//! (`contrib/prometheus/alerts.yml`) and the Grafana dashboard (`contrib/grafana/hookrouter.json`).
//! Both are parsed and held to their structure (every alert has an expression, a `for:`, a
//! severity and annotations that say what to run; the dashboard has the datasource and
//! destination variables and the panels operators look for), and every metric name their
//! PromQL uses is compared with what a real daemon exposes at `/metrics` after a webhook went
//! through it, so a renamed metric breaks this test rather than a silent dashboard.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{fixture, Receiver, TestDaemon, KEY};
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

/// Metric names the rule file and the dashboard may use before the daemon exposes them (a
/// branch adding them not merged yet): none now. A name listed here that the daemon does
/// expose fails the test, so the list never goes stale.
const EXPECTED_TO_BE_ADDED: &[&str] = &[];

/// The alerts operators were promised (README, "Monitoring").
const REQUIRED_ALERTS: &[&str] = &[
    "HookrouterDown",
    "HookrouterConfigReloadFailed",
    "HookrouterUnauthorizedWebhooks",
    "HookrouterNoWebhooks",
    "HookrouterDestinationHeld",
    "HookrouterDestinationFailing",
    "HookrouterDestinationNoSuccess",
    "HookrouterQueueOldestPendingAge",
    "HookrouterDeadLetters",
];

/// The panels operators look for: what each shows, a piece of its query, the panel types
/// that may show it.
const REQUIRED_PANELS: &[(&str, &str, &[&str])] = &[
    (
        "ingest rate by outcome",
        "by (outcome) (rate(hookrouter_webhooks_received_total",
        GRAPH,
    ),
    (
        "rejections by reason",
        "by (reason) (rate(hookrouter_webhooks_rejected_total",
        GRAPH,
    ),
    (
        "deliveries by outcome per destination",
        "by (destination, outcome) (rate(hookrouter_deliveries_total",
        GRAPH,
    ),
    (
        "queue depth by state",
        "by (destination, state) (hookrouter_queue_depth",
        GRAPH,
    ),
    (
        "oldest pending age",
        "hookrouter_queue_oldest_pending_age_seconds",
        GRAPH,
    ),
    (
        "latency p50",
        "histogram_quantile(0.5, sum by (destination, le) (rate(hookrouter_delivery_latency_seconds_bucket",
        GRAPH,
    ),
    (
        "latency p99",
        "histogram_quantile(0.99, sum by (destination, le) (rate(hookrouter_delivery_latency_seconds_bucket",
        GRAPH,
    ),
    (
        "destination health state",
        "hookrouter_destination_state",
        &["state-timeline", "stat"],
    ),
    ("alerts sent", "hookrouter_alerts_sent_total", GRAPH),
];

const GRAPH: &[&str] = &["timeseries"];

const SEVERITIES: &[&str] = &["critical", "warning", "info"];

const WAIT: Duration = Duration::from_secs(10);

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One alerting rule, as the test needs it.
struct Alert {
    name: String,
    expr: String,
    rule: Yaml,
}

fn alerts() -> Vec<Alert> {
    let path = contrib("prometheus/alerts.yml");
    let doc: Yaml = serde_yaml::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    let groups = doc["groups"].as_sequence().expect("a `groups:` list");
    assert!(!groups.is_empty(), "no rule groups");
    let mut out = Vec::new();
    for group in groups {
        let gname = group["name"].as_str().expect("every group has a name");
        let rules = group["rules"]
            .as_sequence()
            .unwrap_or_else(|| panic!("group {gname} has no `rules:` list"));
        assert!(!rules.is_empty(), "group {gname} is empty");
        for rule in rules {
            let name = rule["alert"]
                .as_str()
                .unwrap_or_else(|| panic!("group {gname}: a rule without `alert:`: {rule:?}"));
            let expr = rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no `expr`"));
            out.push(Alert {
                name: name.to_string(),
                expr: expr.to_string(),
                rule: rule.clone(),
            });
        }
    }
    out
}

fn dashboard() -> Json {
    let path = contrib("grafana/hookrouter.json");
    serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Json) -> Vec<&Json> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("a `panels` list") {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

/// Every PromQL expression of the dashboard: panel targets and template variable queries,
/// each with where it comes from.
fn dashboard_exprs(dashboard: &Json) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_else(|| {
                panic!("panel {:?}: a target without `expr`", p["title"].as_str())
            });
            let title = p["title"].as_str().unwrap_or("(untitled)");
            out.push((format!("panel {title:?}"), expr.to_string()));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] == "query" {
            let q = v["query"].as_str().or(v["query"]["query"].as_str());
            let name = v["name"].as_str().unwrap_or("(unnamed)");
            out.push((format!("variable {name:?}"), q.unwrap_or("").to_string()));
        }
    }
    out
}

/// The `hookrouter_...` metric names an expression mentions (`[a-z_]` after the prefix, not
/// preceded by a name character).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut from = 0;
    while let Some(at) = expr[from..].find("hookrouter_").map(|i| i + from) {
        let end = expr[at..]
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .map_or(expr.len(), |i| i + at);
        let glued = at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        if !glued {
            names.insert(expr[at..end].to_string());
        }
        from = end;
    }
    names
}

/// Whether brackets and quotes pair up: a cheap guard against a broken edit (promtool, when
/// installed, parses the expressions for real).
fn balanced(expr: &str) -> bool {
    let mut stack = Vec::new();
    let mut quoted = false;
    for c in expr.chars() {
        match c {
            '"' => quoted = !quoted,
            _ if quoted => {}
            '(' | '{' | '[' => stack.push(c),
            ')' | '}' | ']' => {
                let open = match c {
                    ')' => '(',
                    '}' => '{',
                    _ => '[',
                };
                if stack.pop() != Some(open) {
                    return false;
                }
            }
            _ => {}
        }
    }
    stack.is_empty() && !quoted
}

#[test]
fn every_alert_has_an_expression_a_duration_a_severity_and_says_what_to_do() {
    let alerts = alerts();
    let mut seen = BTreeSet::new();
    for a in &alerts {
        let name = &a.name;
        assert!(seen.insert(name.clone()), "alert {name} is defined twice");
        assert!(!a.expr.trim().is_empty(), "{name}: empty expr");
        assert!(balanced(&a.expr), "{name}: unbalanced expr {:?}", a.expr);
        let for_ = a.rule["for"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no `for:` (an alert must hold before it fires)"));
        let held = humantime::parse_duration(for_)
            .unwrap_or_else(|e| panic!("{name}: `for: {for_}` is not a duration: {e}"));
        assert!(
            held >= Duration::from_secs(60),
            "{name}: `for: {for_}` under a minute"
        );
        let severity = a.rule["labels"]["severity"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no labels.severity"));
        assert!(
            SEVERITIES.contains(&severity),
            "{name}: severity {severity:?} is not one of {SEVERITIES:?}"
        );
        let note = |key: &str| {
            a.rule["annotations"][key]
                .as_str()
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| panic!("{name}: no annotations.{key}"))
                .to_string()
        };
        let (summary, description) = (note("summary"), note("description"));
        // A command to run, in backquotes: `hookrouter dead list ...`, `systemctl ...`.
        assert!(
            description.matches('`').count() >= 2,
            "{name}: the description names no command to run: {description:?}"
        );
        if a.expr.contains("destination") {
            assert!(
                summary.contains("$labels.destination")
                    && description.contains("$labels.destination"),
                "{name}: is about one destination but does not name it in summary and description"
            );
        }
    }
    for required in REQUIRED_ALERTS {
        assert!(seen.contains(*required), "alert {required} is missing");
    }
    let readme = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"));
    for a in &alerts {
        assert!(
            readme.contains(&format!("| `{}` |", a.name)),
            "README's Monitoring table does not list {}",
            a.name
        );
    }
    let down = alerts.iter().find(|a| a.name == "HookrouterDown").unwrap();
    assert_eq!(down.expr.trim(), r#"up{job="hookrouter"} == 0"#);
    let age = alerts
        .iter()
        .find(|a| a.name == "HookrouterQueueOldestPendingAge")
        .unwrap();
    assert!(age.expr.contains("> 900"), "oldest pending over 15 minutes");
}

#[test]
fn the_dashboard_has_its_variables_and_the_panels_operators_look_for() {
    let d = dashboard();
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion 36 or later"
    );
    assert_eq!(
        d["uid"], "hookrouter",
        "a stable uid, so a re-import replaces it"
    );
    assert!(
        d["id"].is_null(),
        "no database id: Grafana assigns one on import"
    );

    let vars: BTreeMap<&str, &Json> = d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| (v["name"].as_str().expect("variable name"), v))
        .collect();
    let ds = vars.get("datasource").expect("a `datasource` variable");
    assert_eq!(
        (&ds["type"], &ds["query"]),
        (&"datasource".into(), &"prometheus".into())
    );
    let dest = vars.get("destination").expect("a `destination` variable");
    // A string (Grafana 9's form, which later versions migrate) or Grafana 10's object.
    let dest_query = dest["query"]
        .as_str()
        .or(dest["query"]["query"].as_str())
        .unwrap_or_default();
    assert!(
        dest_query.starts_with("label_values(hookrouter_queue_depth")
            && dest_query.ends_with(", destination)"),
        "destination values from hookrouter_queue_depth: {dest_query:?}"
    );

    let mut ids = BTreeSet::new();
    let mut kinds = BTreeMap::<String, Vec<String>>::new();
    for p in panels(&d) {
        let title = p["title"].as_str().expect("every panel has a title");
        let id = p["id"].as_u64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} used twice");
        for key in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][key].is_u64(), "{title}: gridPos.{key}");
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "{title}: uses the datasource variable"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "{title}: target datasource"
            );
            let r = t["refId"].as_str().expect("refId");
            assert!(refs.insert(r), "{title}: refId {r} twice");
            let expr = t["expr"].as_str().expect("expr");
            assert!(balanced(expr), "{title}: unbalanced expr {expr:?}");
            if expr.contains("rate(") || expr.contains("increase(") {
                assert!(
                    expr.contains("[$__rate_interval]"),
                    "{title}: rates over $__rate_interval, which follows the scrape interval: {expr:?}"
                );
            }
            kinds
                .entry(expr.to_string())
                .or_default()
                .push(p["type"].as_str().unwrap_or_default().to_string());
        }
    }
    let uses = |needle: &str, panel_types: &[&str]| {
        kinds.iter().any(|(expr, types)| {
            expr.contains(needle) && types.iter().any(|t| panel_types.contains(&t.as_str()))
        })
    };
    for (what, needle, types) in REQUIRED_PANELS {
        assert!(
            uses(needle, types),
            "no {what} panel ({types:?} with {needle:?})"
        );
    }
}

/// The histogram families of a Prometheus text exposition (`# TYPE name histogram`).
fn histogram_families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" histogram"))
        .map(str::to_string)
        .collect()
}

/// The names of the samples in a Prometheus text exposition, histogram series (`_bucket`,
/// `_sum`, `_count`) folded into their family.
fn exposed_names(text: &str, histograms: &BTreeSet<String>) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| fold_histogram(l.split(['{', ' ']).next().unwrap_or_default(), histograms))
        .collect()
}

/// The value of the sample `series` (name and labels as the daemon writes them).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn fold_histogram(name: &str, histograms: &BTreeSet<String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if histograms.contains(base) {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

/// Starts a daemon, drives one lead to a receiver and one refused webhook through it, and
/// returns its `/metrics` once the delivery is counted.
async fn scrape_after_traffic() -> String {
    let crm = Receiver::start().await;
    let daemon = TestDaemon::start(&format!(
        "destinations:\n  crm: {{ url: \"{}\" }}\nroutes:\n  - {{ name: leads, event: lead, to: [crm] }}\n",
        crm.url("/crm")
    ))
    .await;
    let (status, body) = daemon.post("lead", Some(KEY), fixture("lead.json")).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &"accepted".into()),
        "{body}"
    );
    let (status, body) = daemon
        .post("lead", Some("wrong"), fixture("lead.json"))
        .await;
    assert_eq!(status, 401, "{body}");
    crm.wait_for(1, WAIT).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let resp = client
            .get(format!("{}/metrics", daemon.admin_url()))
            .send()
            .await
            .expect("admin /metrics answers");
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.expect("metrics body");
        let delivered = r#"hookrouter_deliveries_total{destination="crm",outcome="delivered"}"#;
        if sample(&text, delivered) == Some(1.0) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the delivery was never counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    daemon.stop().await;
    text
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_use_is_exposed_by_the_daemon() {
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for a in alerts() {
        for m in metric_names(&a.expr) {
            used.entry(m)
                .or_default()
                .insert(format!("alert {}", a.name));
        }
    }
    for (place, expr) in dashboard_exprs(&dashboard()) {
        for m in metric_names(&expr) {
            used.entry(m)
                .or_default()
                .insert(format!("dashboard {place}"));
        }
    }
    assert!(used.len() >= 8, "too few metric names found: {used:?}");

    let text = scrape_after_traffic().await;
    let histograms = histogram_families(&text);
    let exposed = exposed_names(&text, &histograms);
    assert!(
        exposed.contains("hookrouter_queue_depth")
            && histograms.contains("hookrouter_delivery_latency_seconds"),
        "the scrape looks wrong:\n{text}"
    );
    let mut unknown = Vec::new();
    for (name, places) in &used {
        let family = fold_histogram(name, &histograms);
        if !exposed.contains(&family) && !EXPECTED_TO_BE_ADDED.contains(&family.as_str()) {
            unknown.push(format!("{name} (in {places:?})"));
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics the daemon does not expose:\n  {}\nexposed: {exposed:?}",
        unknown.join("\n  ")
    );
    let unused: Vec<&&str> = EXPECTED_TO_BE_ADDED
        .iter()
        .filter(|m| !used.contains_key(**m))
        .collect();
    assert!(
        unused.is_empty(),
        "EXPECTED_TO_BE_ADDED lists {unused:?}, which neither file uses"
    );
    let landed: Vec<&&str> = EXPECTED_TO_BE_ADDED
        .iter()
        .filter(|m| exposed.contains(**m))
        .collect();
    assert!(
        landed.is_empty(),
        "the daemon now exposes {landed:?}: remove them from EXPECTED_TO_BE_ADDED"
    );
}

/// `promtool` (Debian's `prometheus` package) parses the rule file and every dashboard
/// expression for real, and runs `alerts_test.yml`. Skipped when it is not installed: the
/// checks above do not depend on it.
#[test]
fn promtool_accepts_the_rules_and_the_dashboard_queries_when_installed() {
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    if Command::new(&promtool).arg("--version").output().is_err() {
        eprintln!("promtool not found: skipped (apt-get install prometheus, or set PROMTOOL)");
        return;
    }
    let run = |args: &[&str]| {
        let out = Command::new(&promtool)
            .args(args)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let rules = contrib("prometheus/alerts.yml");
    run(&["check", "rules", rules.to_str().unwrap()]);
    run(&[
        "test",
        "rules",
        contrib("prometheus/alerts_test.yml").to_str().unwrap(),
    ]);

    // The dashboard's queries as recording rules, Grafana's variables given sample values.
    let dir = tempfile::tempdir().unwrap();
    let mut recorded = Vec::new();
    for (n, (place, expr)) in dashboard_exprs(&dashboard()).into_iter().enumerate() {
        if place.starts_with("variable") {
            continue; // label_values() is Grafana's, not PromQL
        }
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*")
            .replace("$destination", ".*");
        recorded
            .push(serde_json::json!({ "record": format!("dashboard:query_{n}"), "expr": expr }));
    }
    let file = dir.path().join("dashboard_rules.yml");
    let groups = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": recorded }] });
    std::fs::write(&file, groups.to_string()).unwrap();
    run(&["check", "rules", file.to_str().unwrap()]);
}
