//! Each section deserialized on its own, with every problem at its exact path: serde's
//! errors placed where serde stopped, every unknown key reported; and the durations the
//! file writes as `50ms` or `1h 30m`.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use super::{unknown_fields, Problems};

/// Deserializes `value` into `T`, reporting a failure at the exact sub-path serde reached.
///
/// serde stops at the first unknown field of a mapping; every unknown field of that
/// mapping is reported (each with a "did you mean" when one is close), then they are left
/// out and deserialization goes on, so the other problems are found in the same run.
pub fn deserialize_at<T: DeserializeOwned>(
    value: &Value,
    path: &str,
    problems: &mut Problems,
) -> Option<T> {
    let mut value = value.clone();
    // Where unknown fields were removed (the path serde reported, the field last).
    let mut cleaned: Vec<Vec<String>> = Vec::new();
    // Each round removes at least one unknown field; the bound is a guard only.
    for _ in 0..256 {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => return Some(v),
            Err(err) => err,
        };
        let mut full = path.to_string();
        let mut segments = Vec::new();
        for seg in err.path().iter() {
            let s = match seg {
                serde_path_to_error::Segment::Seq { index } => index.to_string(),
                serde_path_to_error::Segment::Map { key } => key.clone(),
                serde_path_to_error::Segment::Enum { variant } => variant.clone(),
                serde_path_to_error::Segment::Unknown => continue,
            };
            if !full.is_empty() {
                full.push('.');
            }
            full.push_str(&s);
            segments.push(s);
        }
        let message = err.into_inner().to_string();
        if unknown_fields::report(&mut value, &segments, path, &message, problems) {
            cleaned.push(segments);
            continue;
        }
        // `sign: { secert: x }`: "missing field `secret`" would only repeat the "did you
        // mean" already given for the misspelt field.
        if !(message.starts_with("missing field")
            && cleaned
                .iter()
                .any(|c| c.len() == segments.len() + 1 && c.starts_with(&segments)))
        {
            report_at(&full, message, problems);
        }
        return None;
    }
    None
}

/// Records serde's `message` about the node at `full`.
fn report_at(full: &str, message: String, problems: &mut Problems) {
    // serde quotes the value it could not take (`invalid type: string "..."`): for an
    // expanded value, say where it came from and what was expected instead.
    let message = match problems.secret_origin(full) {
        Some(origin) => {
            let expected = message
                .rsplit_once(", expected ")
                .map(|(_, e)| format!(", expected {e}"))
                .unwrap_or_default();
            format!(
                "the value from {origin} does not fit here{expected} (the value is not \
                 shown: values from the environment and files are secret)"
            )
        }
        None => message,
    };
    problems.push(full, message);
}

/// Parses `50ms`, `1s`, `10m`, `24h` (and combinations such as `1h 30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("expected a duration such as 50ms, 1s, 10m or 24h, found {s:?} ({e})"))
}

pub(super) fn duration_or(
    value: Option<&String>,
    default: Duration,
    path: &str,
    problems: &mut Problems,
) -> Duration {
    match value.map(|s| parse_duration(s)) {
        None => default,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            problems.push(path, e);
            default
        }
    }
}
