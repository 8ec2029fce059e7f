//! The human side of the operator commands: the `status` table, dead letter lists and
//! details, retry results and an event's timeline, as plain text. (`--json` prints the
//! API's answer instead.)

use std::fmt::Write as _;

use super::table::{clip, render};
use super::views::{
    DeadLetterView, DeadList, EventView, HealthView, HoldResult, QueueView, RetryResult,
};

fn age(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) => humantime::format_duration(std::time::Duration::from_secs(s as u64)).to_string(),
    }
}

pub(super) fn hold_line(r: &HoldResult, verb: &str, out: &mut String) {
    let _ = match (verb, r.changed) {
        ("hold", true) => writeln!(
            out,
            "{} is held: nothing is sent to it until `hookrouter destination release {}`",
            r.destination, r.destination
        ),
        ("hold", false) => writeln!(out, "{} was already held by an operator", r.destination),
        (_, true) => writeln!(out, "{} is released: delivery resumes", r.destination),
        (_, false) => writeln!(out, "{} was not held ({})", r.destination, r.health.state),
    };
}

/// `held (operator) 5m` / `held (credentials refused) 1m` / `failing 30s` / `healthy`.
fn state_cell(health: Option<&HealthView>, now_ms: u64) -> String {
    let Some(h) = health else {
        return "-".into();
    };
    let mut cell = h.state.clone();
    if h.held_for_credentials {
        cell.push_str(" (credentials refused)");
    } else if h.held_by_operator {
        cell.push_str(" (operator)");
    }
    if h.state != "healthy" {
        let since = std::time::Duration::from_secs(now_ms.saturating_sub(h.since_ms) / 1000);
        let _ = write!(cell, " {}", humantime::format_duration(since));
    }
    cell
}

pub(super) fn status_table(q: &QueueView, out: &mut String) {
    let now = crate::queue::now_ms();
    let mut rows: Vec<Vec<String>> = q
        .destinations
        .iter()
        .map(|(name, d)| {
            vec![
                name.clone(),
                state_cell(d.health.as_ref(), now),
                d.pending.to_string(),
                d.retrying.to_string(),
                d.in_flight.to_string(),
                d.dead.to_string(),
                age(d.oldest_pending_age_seconds),
            ]
        })
        .collect();
    let t = &q.total;
    rows.push(vec![
        "TOTAL".into(),
        String::new(),
        t.pending.to_string(),
        t.retrying.to_string(),
        t.in_flight.to_string(),
        t.dead.to_string(),
        age(t.oldest_pending_age_seconds),
    ]);
    out.push_str(&render(
        &[
            "DESTINATION",
            "STATE",
            "PENDING",
            "RETRYING",
            "IN FLIGHT",
            "DEAD",
            "OLDEST PENDING",
        ],
        &rows,
    ));
    // What an operator needs next for a destination that is not healthy.
    for (name, d) in &q.destinations {
        let Some(h) = d.health.as_ref().filter(|h| h.state != "healthy") else {
            continue;
        };
        let error = h.last_error.as_deref().unwrap_or("no error recorded");
        let _ = writeln!(
            out,
            "{name}: {} after {} failures in a row; last error: {}",
            h.state,
            h.consecutive_failures,
            clip(error, 120)
        );
        if h.state == "held" {
            let probe = match h.next_probe_ms {
                Some(at) => format!(
                    "next probe in {}",
                    humantime::format_duration(std::time::Duration::from_secs(
                        at.saturating_sub(now) / 1000
                    ))
                ),
                None if h.held_for_credentials => {
                    "no probes: retrying cannot help until the credentials are fixed (then reload)"
                        .to_string()
                }
                None => "no probes while held by an operator".to_string(),
            };
            let _ = writeln!(
                out,
                "  {probe}; resume by hand: hookrouter destination release {name}"
            );
        }
    }
}

pub(super) fn dead_table(list: &DeadList, out: &mut String) {
    let rows: Vec<Vec<String>> = list
        .dead
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.destination.clone(),
                d.kind.clone(),
                d.attempts.to_string(),
                d.last_status.map_or("-".into(), |s| s.to_string()),
                d.dead_at.clone(),
                clip(&d.error, 60),
            ]
        })
        .collect();
    out.push_str(&render(
        &[
            "ID",
            "DESTINATION",
            "KIND",
            "ATTEMPTS",
            "STATUS",
            "DEAD AT",
            "ERROR",
        ],
        &rows,
    ));
    let _ = writeln!(
        out,
        "{} shown, {} dead letters in all",
        list.dead.len(),
        list.total
    );
}

pub(super) fn dead_detail(d: &DeadLetterView, out: &mut String) {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let _ = writeln!(out, "delivery id:    {}", d.id);
    let _ = writeln!(out, "event id:       {} ({})", d.event_id, d.kind);
    let _ = writeln!(out, "destination:    {}", d.destination);
    let _ = writeln!(out, "routes:         {}", d.routes.join(", "));
    let _ = writeln!(out, "attempts:       {}", d.attempts);
    let _ = writeln!(out, "first attempt:  {}", opt(&d.first_attempt_at));
    let _ = writeln!(out, "last attempt:   {}", opt(&d.last_attempt_at));
    let _ = writeln!(out, "dead since:     {}", d.dead_at);
    let _ = writeln!(
        out,
        "last status:    {}",
        d.last_status.map_or("-".into(), |s| s.to_string())
    );
    let _ = writeln!(out, "error:          {}", d.error);
    let _ = writeln!(
        out,
        "response:       {}",
        opt(&d.response_snippet.as_deref().map(|s| clip(s, 200)))
    );
    if let Some(body) = &d.body {
        let _ = writeln!(
            out,
            "body:\n{}",
            serde_json::to_string_pretty(body).unwrap_or_default()
        );
    }
}

pub(super) fn retry_lines(r: &RetryResult, out: &mut String) {
    for id in &r.retried {
        let _ = writeln!(out, "{id}: queued again");
    }
    for s in &r.skipped {
        let _ = writeln!(out, "{}: skipped: {}", s.id, s.reason);
    }
    if r.skipped_unlisted > 0 {
        let _ = writeln!(
            out,
            "(and {} more skipped, of destinations not in the config)",
            r.skipped_unlisted
        );
    }
    let _ = writeln!(
        out,
        "{} retried, {} skipped",
        r.retried.len(),
        r.skipped.len() as u64 + r.skipped_unlisted
    );
}

pub(super) fn event_detail(e: &EventView, out: &mut String) {
    let _ = writeln!(out, "event id:  {} ({})", e.id, e.kind);
    let _ = writeln!(out, "received:  {}", e.received_at);
    let _ = writeln!(out, "routes:    {}", e.routes.join(", "));
    for job in &e.jobs {
        let _ = writeln!(
            out,
            "\ndelivery {} to {}: {}",
            job.id, job.destination, job.status
        );
        if let Some(next) = &job.next_attempt_at {
            let _ = writeln!(out, "  next attempt: {next}");
        }
        if let Some(reason) = &job.dead_reason {
            let _ = writeln!(out, "  dead: {reason}");
        }
        let rows: Vec<Vec<String>> = job
            .attempts
            .iter()
            .map(|a| {
                vec![
                    a.attempt.to_string(),
                    a.at.clone(),
                    a.status.map_or("-".into(), |s| s.to_string()),
                    format!("{} ms", a.latency_ms),
                    a.outcome.to_string(),
                    clip(a.error.as_deref().unwrap_or(""), 60),
                ]
            })
            .collect();
        for line in render(&["#", "AT", "STATUS", "LATENCY", "OUTCOME", "ERROR"], &rows).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(by_operator: bool, for_credentials: bool) -> HealthView {
        HealthView {
            state: "held".into(),
            since_ms: 1_000,
            held_by_operator: by_operator,
            held_for_credentials: for_credentials,
            consecutive_failures: 10,
            last_status: None,
            last_error: None,
            last_success_ms: None,
            next_probe_ms: None,
        }
    }

    #[test]
    fn the_state_cell_says_who_or_what_holds_a_destination() {
        let now = 61_000;
        assert_eq!(state_cell(Some(&held(false, false)), now), "held 1m");
        assert_eq!(
            state_cell(Some(&held(true, false)), now),
            "held (operator) 1m"
        );
        assert_eq!(
            state_cell(Some(&held(true, true)), now),
            "held (credentials refused) 1m"
        );
        assert_eq!(state_cell(None, now), "-");
    }
}
