//! What Mindstamp sends for each kind of webhook: the sample payloads (`examples/*.json`,
//! the same as the tests' fixtures) and the field tables read from them.
//!
//! `check` uses them to catch what no validation of the config alone can: a `match:` field
//! or a template variable that the route's kinds never carry (a typo such as `percentge`,
//! or `tag1` on an interaction, where Mindstamp sends tags on views only), and a template
//! that fails when rendered against a real payload of its kind.
//!
//! Mindstamp's fields are the sample's top-level keys. `variables` holds the video's own
//! custom variables, so any key below it is accepted.

use std::sync::OnceLock;

use serde_json::Value as Json;

use crate::event::EventKind;

/// The sample view payload, as Mindstamp documents it.
pub const VIEW: &str = include_str!("../examples/view.json");
/// The sample interaction payload.
pub const INTERACTION: &str = include_str!("../examples/interaction.json");
/// The sample lead payload.
pub const LEAD: &str = include_str!("../examples/lead.json");

/// Fields whose keys vary per video (custom variables): any sub-key is accepted.
const OPEN_FIELDS: [&str; 1] = ["variables"];

/// The sample payload of `kind`, parsed once.
pub fn sample(kind: EventKind) -> &'static Json {
    static SAMPLES: OnceLock<[Json; 3]> = OnceLock::new();
    let samples = SAMPLES.get_or_init(|| {
        // The samples are part of the source tree; a test parses each.
        EventKind::ALL.map(|k| serde_json::from_str(sample_text(k)).unwrap_or(Json::Null))
    });
    match EventKind::ALL.iter().position(|k| *k == kind) {
        Some(i) => &samples[i],
        None => {
            static ALERT_SAMPLE: OnceLock<Json> = OnceLock::new();
            ALERT_SAMPLE.get_or_init(|| serde_json::from_str(ALERT).unwrap_or(Json::Null))
        }
    }
}

/// The sample payload of `kind` as text, byte for byte as in `examples/`.
pub fn sample_text(kind: EventKind) -> &'static str {
    match kind {
        EventKind::View => VIEW,
        EventKind::Interaction => INTERACTION,
        EventKind::Lead => LEAD,
        EventKind::Alert => ALERT,
    }
}

/// What one of hookrouter's own alerts carries (`alert::message::Alert`), for templates of
/// alert destinations.
const ALERT: &str = r#"{"alert":"destination_held","text":"hookrouter: destination crm is held after 10 failures in a row (last error: HTTP 503). Its 120 queued jobs are kept; one probe is sent every 30s or more until it answers.","destination":"crm","state":"held","last_status":503,"last_error":"HTTP 503","count":10,"hint":"hookrouter destination release crm","at_ms":1764633600000}"#;

/// Where the sample of `kind` is in the source tree (and in the package's examples).
pub fn sample_path(kind: EventKind) -> &'static str {
    match kind {
        EventKind::View => "examples/view.json",
        EventKind::Interaction => "examples/interaction.json",
        EventKind::Lead => "examples/lead.json",
        EventKind::Alert => "(built in: hookrouter's alert payload)",
    }
}

/// The top-level fields of `kind`'s payloads, in the documented order.
pub fn fields(kind: EventKind) -> Vec<&'static str> {
    sample(kind)
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// Why a field path does not fit a kind's payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misfit {
    /// The first segment is not a field of the payload.
    NoSuchField,
    /// The path goes below a field that holds a plain value (a string, a number...).
    NotAnObject {
        /// The field that holds the plain value.
        field: String,
        /// What it holds: `a string`, `a number`...
        holds: &'static str,
    },
}

/// Does a dotted field path (`percentage`, `variables.plan`, `answers.0`) fit the payloads
/// of `kind`?
pub fn check_path(kind: EventKind, path: &str) -> Result<(), Misfit> {
    let mut segments = path.split('.');
    let first = segments.next().unwrap_or_default();
    let Some(mut value) = sample(kind).get(first) else {
        return Err(Misfit::NoSuchField);
    };
    if OPEN_FIELDS.contains(&first) {
        return Ok(());
    }
    let mut reached = first.to_string();
    for seg in segments {
        value = match value {
            Json::Object(m) => match m.get(seg) {
                Some(v) => v,
                None => return Ok(()),
            },
            // Any index of a list is fine; its elements look like the sample's first.
            Json::Array(items) if seg.parse::<usize>().is_ok() => match items.first() {
                Some(v) => v,
                None => return Ok(()),
            },
            // `null` in the sample says nothing about the type the field may hold.
            Json::Null => return Ok(()),
            other => {
                return Err(Misfit::NotAnObject {
                    field: reached,
                    holds: type_name(other),
                })
            }
        };
        reached.push('.');
        reached.push_str(seg);
    }
    Ok(())
}

fn type_name(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

/// `view`, `view or lead`, `view, interaction or lead`.
pub fn kinds_phrase(kinds: &[EventKind]) -> String {
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    match names.as_slice() {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_samples_parse_and_are_the_tests_fixtures() {
        for kind in EventKind::ALL {
            assert!(sample(kind).is_object(), "{kind}");
            assert!(fields(kind).contains(&"video_title"), "{kind}");
        }
        assert_eq!(VIEW, include_str!("../tests/fixtures/view.json"));
        assert_eq!(
            INTERACTION,
            include_str!("../tests/fixtures/interaction.json")
        );
        assert_eq!(LEAD, include_str!("../tests/fixtures/lead.json"));
    }

    #[test]
    fn paths_are_checked_per_kind() {
        assert_eq!(check_path(EventKind::View, "percentage"), Ok(()));
        assert_eq!(check_path(EventKind::View, "tag1"), Ok(()));
        assert_eq!(
            check_path(EventKind::Interaction, "tag1"),
            Err(Misfit::NoSuchField)
        );
        assert_eq!(check_path(EventKind::View, "variables.anything"), Ok(()));
        assert_eq!(check_path(EventKind::Interaction, "answers.2"), Ok(()));
        assert_eq!(
            check_path(EventKind::View, "viewer_name.first"),
            Err(Misfit::NotAnObject {
                field: "viewer_name".into(),
                holds: "a string"
            })
        );
        assert_eq!(check_path(EventKind::View, "tag2.x"), Ok(()));
    }
}
