//! What an alert says: one JSON payload per alert, with a one-line `text` (what a Slack
//! destination shows) and the facts behind it for any other receiver. Pure, so every
//! wording is tested.

use std::time::Duration;

use serde::Serialize;

use crate::config::AlertEvent;
use crate::health::{Change, HealthEvent};

/// The body of one alert, as queued and delivered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// What it is about: `destination_held`, `dead_letter`, ... in the payload.
    #[serde(serialize_with = "event_name")]
    pub alert: AlertEvent,
    /// One line an operator reads, with what to run next.
    pub text: String,
    /// The destination it is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The route it is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The destination's health, or `silent` / `resumed` for traffic alerts.
    pub state: String,
    /// The latest failure's HTTP status, if one came back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// The latest failure's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Failures in a row, dead letters in the digest, or events in the window.
    pub count: u64,
    /// The command that shows more.
    pub hint: String,
    /// When the alert was raised (Unix ms).
    pub at_ms: u64,
}

/// An alert event as its `alerts.on` name.
fn event_name<S: serde::Serializer>(event: &AlertEvent, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(event.as_str())
}

fn last_failure(event: &HealthEvent) -> String {
    let h = &event.health;
    match (&h.last_status, &h.last_error) {
        (_, Some(e)) => format!("last error: {e}"),
        (Some(s), None) => format!("last status: {s}"),
        (None, None) => "no error recorded".to_string(),
    }
}

fn short(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

/// The alert for a change of a destination's health; `queued` is its queue depth now.
pub fn health_alert(event: &HealthEvent, queued: u64, now_ms: u64) -> Alert {
    let h = &event.health;
    let d = &event.destination;
    let (alert, text, hint) = match event.change {
        Change::Failing => (
            AlertEvent::DestinationFailing,
            format!(
                "hookrouter: destination {d} is failing ({} failures in a row; {}). Every job is still attempted; {queued} queued.",
                h.consecutive_failures,
                last_failure(event)
            ),
            format!("hookrouter status; hookrouter dead list --destination {d}"),
        ),
        Change::Held { by_operator: false } => (
            AlertEvent::DestinationHeld,
            format!(
                "hookrouter: destination {d} is held after {} failures in a row ({}). Its {queued} queued jobs are kept; one probe is sent every {} or more until it answers.",
                h.consecutive_failures,
                last_failure(event),
                short(Duration::from_millis(h.probe_interval_ms))
            ),
            format!("hookrouter destination release {d}"),
        ),
        Change::Held { by_operator: true } => (
            AlertEvent::DestinationHeld,
            format!(
                "hookrouter: destination {d} was held by an operator. Its {queued} queued jobs are kept and nothing is sent until it is released."
            ),
            format!("hookrouter destination release {d}"),
        ),
        Change::CredentialsRefused => (
            AlertEvent::DestinationHeld,
            format!(
                "hookrouter: destination {d} is held: its OAuth token endpoint refused the credentials ({}). Its {queued} queued jobs are kept and nothing is sent until the credentials are fixed (auth.oauth2 in routes.yaml, then reload) and it is released.",
                last_failure(event)
            ),
            format!("hookrouter destination release {d}"),
        ),
        Change::Recovered { by_operator } => {
            let how = if by_operator {
                "was released by an operator"
            } else {
                "recovered"
            };
            (
                AlertEvent::DestinationRecovered,
                format!(
                    "hookrouter: destination {d} {how}; delivery resumes ({queued} queued)."
                ),
                "hookrouter status".to_string(),
            )
        }
    };
    Alert {
        alert,
        text,
        destination: Some(d.clone()),
        route: None,
        state: h.state.as_str().to_string(),
        last_status: h.last_status,
        last_error: h.last_error.clone(),
        count: u64::from(h.consecutive_failures),
        hint,
        at_ms: now_ms,
    }
}

/// The digest of `count` dead letters of `destination` over `window`, the latest of which
/// was dead-lettered for `latest_reason`.
pub fn dead_letter_digest(
    destination: &str,
    count: u64,
    window: Duration,
    latest_reason: &str,
    now_ms: u64,
) -> Alert {
    let letters = if count == 1 {
        "1 dead letter".to_string()
    } else {
        format!("{count} dead letters")
    };
    Alert {
        alert: AlertEvent::DeadLetter,
        text: format!(
            "hookrouter: {letters} for {destination} in the last {} (latest: {latest_reason}).",
            short(window)
        ),
        destination: Some(destination.to_string()),
        route: None,
        state: "dead".to_string(),
        last_status: None,
        last_error: Some(latest_reason.to_string()),
        count,
        hint: format!("hookrouter dead list --destination {destination}"),
        at_ms: now_ms,
    }
}

/// A route (or, with `route` like `kind lead`, a kind) whose traffic fell below its
/// `expect:`, or came back (`silent` false): `count` events in the last `per`.
pub fn traffic_alert(
    subject: &str,
    silent: bool,
    count: u64,
    at_least: u64,
    per: Duration,
    now_ms: u64,
) -> Alert {
    let text = if silent {
        format!(
            "hookrouter: {subject} matched {count} events in the last {} (expected at least {at_least}). Is the webhook still enabled in Mindstamp, and do the rules still match?",
            short(per)
        )
    } else {
        format!(
            "hookrouter: {subject} has traffic again ({count} events in the last {}).",
            short(per)
        )
    };
    Alert {
        alert: AlertEvent::RouteSilent,
        text,
        destination: None,
        route: Some(subject.to_string()),
        state: if silent { "silent" } else { "resumed" }.to_string(),
        last_status: None,
        last_error: None,
        count,
        hint: "hookrouter route --explain PAYLOAD.json; hookrouter status".to_string(),
        at_ms: now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{AttemptResult, DestinationHealth, HealthPolicy};

    fn held_event() -> HealthEvent {
        let policy = HealthPolicy {
            hold_after: Duration::ZERO,
            ..HealthPolicy::default()
        };
        let mut h = DestinationHealth::new(0);
        let mut change = None;
        for i in 0..10 {
            change = h
                .record(
                    &AttemptResult {
                        ok: false,
                        status: Some(503),
                        error: Some("HTTP 503 Service Unavailable".into()),
                        at_ms: i,
                        probe: false,
                    },
                    &policy,
                )
                .or(change);
        }
        HealthEvent {
            destination: "crm".into(),
            change: change.unwrap(),
            health: h,
        }
    }

    #[test]
    fn a_credentials_alert_says_what_was_refused_and_what_to_do() {
        let mut h = DestinationHealth::new(0);
        let change = h.hold_for_credentials(
            5,
            &HealthPolicy::default(),
            "the OAuth token endpoint refused the credentials (invalid_grant)".into(),
        );
        let event = HealthEvent {
            destination: "salesforce".into(),
            change: change.unwrap(),
            health: h,
        };
        let a = health_alert(&event, 7, 9);
        assert_eq!(a.alert, AlertEvent::DestinationHeld);
        assert!(
            a.text.contains("destination salesforce is held: its OAuth token endpoint refused the credentials (last error: the OAuth token endpoint refused the credentials (invalid_grant))"),
            "{}",
            a.text
        );
        assert!(a.text.contains("7 queued jobs are kept"), "{}", a.text);
        assert_eq!(a.hint, "hookrouter destination release salesforce");
    }

    #[test]
    fn a_held_alert_names_the_destination_the_error_and_the_way_out() {
        let a = health_alert(&held_event(), 1234, 99);
        assert_eq!(a.alert, AlertEvent::DestinationHeld);
        assert_eq!(a.state, "held");
        assert_eq!(a.count, 10);
        assert!(
            a.text.contains("destination crm is held after 10 failures"),
            "{}",
            a.text
        );
        assert!(a.text.contains("HTTP 503"), "{}", a.text);
        assert!(a.text.contains("1234 queued jobs are kept"), "{}", a.text);
        assert!(a.text.contains("every 30s"), "{}", a.text);
        assert_eq!(a.hint, "hookrouter destination release crm");
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["alert"], "destination_held", "named as in alerts.on");
        assert_eq!(json["destination"], "crm");
        assert_eq!(json["last_status"], 503);
        assert!(json.get("route").is_none());
    }

    #[test]
    fn a_digest_counts_and_says_where_to_look() {
        let a = dead_letter_digest("crm", 37, Duration::from_secs(600), "HTTP 400", 5);
        assert_eq!(
            a.text,
            "hookrouter: 37 dead letters for crm in the last 10m (latest: HTTP 400)."
        );
        assert_eq!(a.hint, "hookrouter dead list --destination crm");
        assert_eq!(a.alert, AlertEvent::DeadLetter);
        let one = dead_letter_digest("crm", 1, Duration::from_secs(60), "x", 5);
        assert!(one.text.starts_with("hookrouter: 1 dead letter for crm"));
    }

    #[test]
    fn traffic_alerts_say_silent_then_resumed() {
        let silent = traffic_alert("route leads", true, 0, 1, Duration::from_secs(7200), 1);
        assert_eq!(silent.state, "silent");
        assert!(
            silent
                .text
                .contains("route leads matched 0 events in the last 2h (expected at least 1)"),
            "{}",
            silent.text
        );
        let back = traffic_alert("route leads", false, 3, 1, Duration::from_secs(7200), 2);
        assert_eq!(back.state, "resumed");
        assert_eq!(back.alert, AlertEvent::RouteSilent);
    }
}
