//! `alerts:` and `expect:` validated: which alerts go to which destinations, and how much
//! traffic a route (or a kind) is expected to see.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_yaml::Value;

use super::raw::{RawAlerts, RawExpect};
use super::{deserialize_at, parse_duration, Problems};
use crate::event::EventKind;

/// What an alert is about; also the names used in `alerts.on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertEvent {
    /// A destination started failing.
    DestinationFailing,
    /// A destination was held (by its failures or an operator).
    DestinationHeld,
    /// A held or failing destination delivers again.
    DestinationRecovered,
    /// Jobs were dead-lettered (sent as a digest).
    DeadLetter,
    /// A route or kind saw less traffic than `expect:` says (and again when it returns).
    RouteSilent,
}

impl AlertEvent {
    /// Every alert event, in the order documented.
    pub const ALL: [AlertEvent; 5] = [
        AlertEvent::DestinationFailing,
        AlertEvent::DestinationHeld,
        AlertEvent::DestinationRecovered,
        AlertEvent::DeadLetter,
        AlertEvent::RouteSilent,
    ];

    /// The name in `alerts.on`, in alert payloads and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEvent::DestinationFailing => "destination_failing",
            AlertEvent::DestinationHeld => "destination_held",
            AlertEvent::DestinationRecovered => "destination_recovered",
            AlertEvent::DeadLetter => "dead_letter",
            AlertEvent::RouteSilent => "route_silent",
        }
    }
}

/// `alerts:` validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    /// Destinations that receive alerts (through the same queue and formats as events).
    pub to: Vec<String>,
    /// The alert events sent (all of them when `on:` is left out).
    pub on: Vec<AlertEvent>,
    /// Dead letters of one destination within this long make one digest message.
    pub digest_every: Duration,
    /// At most this many alerts an hour; the rest are logged and counted, not sent.
    pub max_per_hour: u32,
}

/// `expect:` (on a route or a kind), the route's own type.
pub use crate::route::Expectation;

/// `alerts:` at the top level, its destinations checked against `destinations`.
pub(super) fn validate_alerts(
    value: Option<&Value>,
    destinations: &std::collections::BTreeSet<String>,
    problems: &mut Problems,
) -> Option<AlertSettings> {
    let value = value.filter(|v| !v.is_null())?;
    let raw: RawAlerts = deserialize_at(value, "alerts", problems)?;
    if raw.to.is_empty() {
        problems.push(
            "alerts.to",
            "name at least one destination to send alerts to",
        );
    }
    for (i, name) in raw.to.iter().enumerate() {
        if !destinations.contains(name) {
            problems.push(
                &format!("alerts.to.{i}"),
                format!("unknown destination {name:?}"),
            );
        }
    }
    let on = match &raw.on {
        None => AlertEvent::ALL.to_vec(),
        Some(names) => {
            let mut on = Vec::new();
            for (i, name) in names.iter().enumerate() {
                match AlertEvent::ALL.iter().find(|e| e.as_str() == name) {
                    Some(e) => on.push(*e),
                    None => problems.push(
                        &format!("alerts.on.{i}"),
                        format!(
                            "unknown alert {name:?}; expected one of {}",
                            AlertEvent::ALL.map(AlertEvent::as_str).join(", ")
                        ),
                    ),
                }
            }
            on
        }
    };
    let digest_every = match raw.digest_every.as_deref().map(parse_duration) {
        None => Duration::from_secs(600),
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            problems.push("alerts.digest_every", "must be greater than zero");
            Duration::from_secs(600)
        }
        Some(Err(e)) => {
            problems.push("alerts.digest_every", e);
            Duration::from_secs(600)
        }
    };
    let max_per_hour = raw.max_per_hour.unwrap_or(60);
    if max_per_hour == 0 {
        problems.push(
            "alerts.max_per_hour",
            "must be at least 1 (leave `alerts:` out to send none)",
        );
    }
    Some(AlertSettings {
        to: raw.to,
        on,
        digest_every,
        max_per_hour,
    })
}

/// One `expect:` at `path` (routes compile theirs with it).
pub fn validate_expect(
    raw: &RawExpect,
    path: &str,
    problems: &mut Problems,
) -> Option<Expectation> {
    let at_least = raw.at_least.unwrap_or(1);
    if at_least == 0 {
        problems.push(&format!("{path}.at_least"), "must be at least 1");
        return None;
    }
    match parse_duration(&raw.per) {
        Ok(per) if !per.is_zero() => Some(Expectation { at_least, per }),
        Ok(_) => {
            problems.push(&format!("{path}.per"), "must be greater than zero");
            None
        }
        Err(e) => {
            problems.push(&format!("{path}.per"), e);
            None
        }
    }
}

/// `expect:` at the top level: one expectation per kind.
pub(super) fn validate_kind_expectations(
    value: Option<&Value>,
    problems: &mut Problems,
) -> BTreeMap<EventKind, Expectation> {
    let mut out = BTreeMap::new();
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return out;
    };
    let Some(raw): Option<BTreeMap<String, RawExpect>> = deserialize_at(value, "expect", problems)
    else {
        return out;
    };
    for (kind, raw) in raw {
        let path = format!("expect.{kind}");
        match kind.parse::<EventKind>() {
            Ok(k) => {
                if let Some(e) = validate_expect(&raw, &path, problems) {
                    out.insert(k, e);
                }
            }
            Err(e) => problems.push(&path, e.to_string()),
        }
    }
    out
}
