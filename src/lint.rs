//! What a config gets wrong about Mindstamp's payloads, found when it is loaded (so `check`
//! reports it, and `serve` logs it at start and on every reload).
//!
//! Validation proves the config is well-formed; these checks read it against what
//! Mindstamp actually sends ([`crate::payloads`]):
//! - a `match:` field that none of the route's kinds carries (a typo such as `percentge`, or
//!   `tag1` on an interaction route, while Mindstamp sends tags on views) is a warning,
//!   with a "did you mean";
//! - so is a template variable that none of the kinds routed to the destination carries;
//! - every template is rendered against the sample payload of each kind routed to its
//!   destination: an unknown filter or test fails every such delivery whatever the payload,
//!   so it is an error; any other failure (an undefined value given to a filter, a type
//!   error) is a warning naming the kinds it fails for.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::ErrorKind;
use serde_yaml::Value as Yaml;

use crate::config::{Config, Destination, Problems};
use crate::deliver::format::{context, DeliveryIds};
use crate::deliver::template::describe;
use crate::event::EventKind;
use crate::payloads::{self, kinds_phrase, Misfit};

/// The closest of `candidates` to `word`, if one is close enough to be a likely typo
/// (case is ignored; about one edit in three characters).
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let mut best: Option<(f64, &'a str)> = None;
    for candidate in candidates {
        if candidate == word {
            continue;
        }
        let other = candidate.to_lowercase();
        let distance = strsim::damerau_levenshtein(&lower, &other);
        let limit = (word.chars().count().max(candidate.chars().count()) / 3).max(1);
        let similarity = strsim::jaro_winkler(&lower, &other);
        if (distance <= limit || similarity >= 0.85) && best.is_none_or(|(s, _)| similarity > s) {
            best = Some((similarity, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// A regex compile error for a config message: the error first, then the pattern with its
/// caret diagram on lines of their own (regex's own layout, which one line would garble).
/// With `show_pattern` false (the pattern came from `${VAR}` or a file) only the error.
pub fn regex_error(e: &regex::Error, show_pattern: bool) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    match lines.as_slice() {
        [_heading, diagram @ .., last] if !diagram.is_empty() => {
            let mut out = last.trim().trim_start_matches("error: ").to_string();
            if show_pattern {
                for line in diagram {
                    out.push_str("\n    ");
                    out.push_str(line);
                }
            }
            out
        }
        _ => text.trim().replace('\n', " "),
    }
}

/// Names a template's context has besides the payload's fields, and minijinja's globals.
const CONTEXT_NAMES: [&str; 8] = [
    "event",
    "event_id",
    "delivery_id",
    "payload",
    "range",
    "dict",
    "debug",
    "namespace",
];

/// Filters a template can use (minijinja's built-ins and hookrouter's own), for the "did
/// you mean" of an unknown one.
const FILTERS: [&str; 46] = [
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "chain",
    "count",
    "d",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "format",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "slack_escape",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
];

/// Tests (`is number`), for the "did you mean" of an unknown one.
const TESTS: [&str; 27] = [
    "boolean",
    "defined",
    "divisibleby",
    "endingwith",
    "eq",
    "equalto",
    "escaped",
    "even",
    "false",
    "filter",
    "float",
    "ge",
    "gt",
    "in",
    "integer",
    "iterable",
    "le",
    "lower",
    "lt",
    "mapping",
    "ne",
    "none",
    "number",
    "odd",
    "sequence",
    "string",
    "undefined",
];

/// Runs every check on a validated `config` read from `root`: errors go to `problems`,
/// warnings to `warnings`, each at its path in the file.
pub fn check(root: &Yaml, config: &Config, problems: &mut Problems, warnings: &mut Problems) {
    match_fields(root, warnings);
    let routed = routed_kinds(config);
    for (name, dest) in &config.destinations {
        let kinds = routed.get(name.as_str());
        templates(name, dest, kinds, problems, warnings);
    }
}

/// The kinds each destination receives, from the routes that name it.
fn routed_kinds(config: &Config) -> BTreeMap<&str, BTreeSet<EventKind>> {
    let mut out: BTreeMap<&str, BTreeSet<EventKind>> = BTreeMap::new();
    for route in config.rules.routes() {
        let kinds = route.events.as_deref().unwrap_or(&EventKind::ALL);
        for to in &route.to {
            out.entry(to.as_str())
                .or_default()
                .extend(kinds.iter().copied());
        }
    }
    out
}

/// Why `field` fits none of `kinds`' payloads, or `None` when one of them carries it.
/// `what` says what would see no value (`this condition`, `this template`).
fn misfit(field: &str, kinds: &[EventKind], what: &str) -> Option<String> {
    let mut misfits = Vec::with_capacity(kinds.len());
    for kind in kinds {
        match payloads::check_path(*kind, field) {
            Ok(()) => return None,
            Err(m) => misfits.push(m),
        }
    }
    let phrase = kinds_phrase(kinds);
    if let Some(Misfit::NotAnObject {
        field: plain,
        holds,
    }) = misfits
        .iter()
        .find(|m| matches!(m, Misfit::NotAnObject { .. }))
    {
        return Some(format!(
            "{plain:?} holds {holds} in {phrase} payloads, so {field:?} is never there and \
             {what} never sees a value"
        ));
    }
    let first = field.split('.').next().unwrap_or(field);
    let elsewhere: Vec<EventKind> = EventKind::ALL
        .into_iter()
        .filter(|k| !kinds.contains(k) && payloads::check_path(*k, field).is_ok())
        .collect();
    let mut message = format!("{first:?} is not a field of {phrase} payloads");
    if !elsewhere.is_empty() {
        message.push_str(&format!(
            " (Mindstamp sends it with {} events)",
            kinds_phrase(&elsewhere)
        ));
    }
    message.push_str(&format!(", so {what} never sees a value"));
    let candidates: BTreeSet<&str> = kinds.iter().flat_map(|k| payloads::fields(*k)).collect();
    if let Some(s) = did_you_mean(first, candidates) {
        message.push_str(&format!("; did you mean {s:?}?"));
    }
    Some(message)
}

/// The kinds of a route's `event:` as written; `None` when one is not a kind (validation
/// has reported it).
fn route_kinds(event: Option<&Yaml>) -> Option<Vec<EventKind>> {
    match event {
        None | Some(Yaml::Null) => Some(EventKind::ALL.to_vec()),
        Some(Yaml::String(s)) => s.parse().ok().map(|k| vec![k]),
        Some(Yaml::Sequence(items)) => {
            let mut kinds: Vec<EventKind> = items
                .iter()
                .map(|i| i.as_str()?.parse().ok())
                .collect::<Option<_>>()?;
            kinds.sort();
            kinds.dedup();
            Some(kinds)
        }
        Some(_) => None,
    }
}

fn match_fields(root: &Yaml, warnings: &mut Problems) {
    let Some(routes) = root.get("routes").and_then(Yaml::as_sequence) else {
        return;
    };
    for (i, route) in routes.iter().enumerate() {
        let Some(kinds) = route_kinds(route.get("event")) else {
            continue;
        };
        if let Some(map) = route.get("match").and_then(Yaml::as_mapping) {
            walk_match(map, &format!("routes.{i}.match"), &kinds, warnings);
        }
    }
}

fn walk_match(map: &serde_yaml::Mapping, path: &str, kinds: &[EventKind], warnings: &mut Problems) {
    for (key, value) in map {
        let Some(key) = key.as_str() else { continue };
        let kpath = format!("{path}.{key}");
        match key {
            "any" | "all" => {
                for (j, item) in value.as_sequence().into_iter().flatten().enumerate() {
                    if let Some(m) = item.as_mapping() {
                        walk_match(m, &format!("{kpath}.{j}"), kinds, warnings);
                    }
                }
            }
            "not" => {
                if let Some(m) = value.as_mapping() {
                    walk_match(m, &kpath, kinds, warnings);
                }
            }
            field if !field.is_empty() => {
                if let Some(message) = misfit(field, kinds, "this condition") {
                    warnings.push(&kpath, message);
                }
            }
            _ => {}
        }
    }
}

/// The variables of template `name` that are payload fields (`payload.x` counts as `x`).
fn payload_variables(dest: &Destination, name: &str) -> BTreeSet<String> {
    dest.templates
        .variables(name)
        .into_iter()
        .filter_map(|v| match v.strip_prefix("payload.") {
            Some(rest) => Some(rest.to_string()),
            None if CONTEXT_NAMES.contains(&v.split('.').next().unwrap_or_default()) => None,
            None => Some(v),
        })
        .collect()
}

/// What the unknown name in an "unknown filter/test" error is, and its "did you mean".
fn unknown_name(e: &minijinja::Error) -> Option<String> {
    let (what, known): (&str, &[&str]) = match e.kind() {
        ErrorKind::UnknownFilter => ("filter", &FILTERS),
        ErrorKind::UnknownTest => ("test", &TESTS),
        _ => return None,
    };
    // minijinja's detail reads "filter defualt is unknown".
    let name = e
        .detail()
        .and_then(|d| d.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_string();
    let mut message = format!("unknown {what} {name:?}");
    if let Some(s) = did_you_mean(&name, known.iter().copied()) {
        message.push_str(&format!("; did you mean {s:?}?"));
    }
    message.push_str(
        " (the template compiles, but every delivery that renders it would be dead-lettered)",
    );
    Some(message)
}

/// A templated URL's fields: a misspelt one would dead-letter every delivery.
fn url_fields(
    dest_name: &str,
    url: &crate::destination::UrlTemplate,
    kinds: &[EventKind],
    warnings: &mut Problems,
) {
    let path = format!("destinations.{dest_name}.url");
    for var in url.variables() {
        let field = var.strip_prefix("payload.").unwrap_or(&var);
        if CONTEXT_NAMES.contains(&field.split('.').next().unwrap_or_default())
            && !var.starts_with("payload.")
        {
            continue;
        }
        if let Some(message) = misfit(field, kinds, "this URL") {
            warnings.push(&path, message);
        }
    }
}

fn templates(
    dest_name: &str,
    dest: &Destination,
    routed: Option<&BTreeSet<EventKind>>,
    problems: &mut Problems,
    warnings: &mut Problems,
) {
    // A destination no route sends to is still rendered with every kind, for the errors.
    let kinds: Vec<EventKind> = match routed {
        Some(k) => k.iter().copied().collect(),
        None => EventKind::ALL.to_vec(),
    };
    if let (Some(url), true) = (&dest.url_template, routed.is_some()) {
        url_fields(dest_name, url, &kinds, warnings);
    }
    let ids = DeliveryIds::now(uuid::Uuid::nil(), uuid::Uuid::nil());
    let mut names = dest.templates.names();
    names.sort();
    for name in names.iter().filter(|n| !n.starts_with("builtin.")) {
        let path = format!("destinations.{dest_name}.{name}");
        let mut flagged = false;
        if routed.is_some() {
            let mut seen = BTreeSet::new();
            for var in payload_variables(dest, name) {
                if let Some(message) = misfit(&var, &kinds, "this template") {
                    if seen.insert(message.clone()) {
                        warnings.push(&path, message);
                        flagged = true;
                    }
                }
            }
        }
        // Render failures by message, with the kinds they happen for.
        let mut failures: BTreeMap<String, Vec<EventKind>> = BTreeMap::new();
        for kind in &kinds {
            let ctx = context(*kind, payloads::sample(*kind), &ids);
            let Err(e) = dest.templates.render(name, &ctx) else {
                continue;
            };
            if let Some(message) = unknown_name(&e) {
                problems.push(&path, message);
                failures.clear();
                break;
            }
            // A variable the kind does not carry explains its own failure (undefined, or a
            // filter given nothing).
            if routed.is_none() || flagged {
                continue;
            }
            let mut message = describe(&e);
            if let Some(source) = std::error::Error::source(&e) {
                message.push_str(&format!(": {source}"));
            }
            failures.entry(message).or_default().push(*kind);
        }
        for (message, failed) in failures {
            let samples: Vec<&str> = failed.iter().map(|k| payloads::sample_path(*k)).collect();
            warnings.push(
                &path,
                format!(
                    "fails to render for {} events ({message}; tried with {}): such \
                     deliveries would be dead-lettered",
                    kinds_phrase(&failed),
                    samples.join(", ")
                ),
            );
        }
    }
}

#[cfg(test)]
#[path = "lint_tests.rs"]
mod tests;
