//! The operator's commands over the journal: `event list`, `replay` (with `--dry-run` and
//! `--cancel`), the replay lines of `status`, and `check --against-journal`.

use std::fmt::Write as _;

use reqwest::Method;

use super::cli::{push_json, CliError};
use super::client::{encode_query, AdminClient, ClientError};
use super::history::{EventList, ReplayList};
use super::table::{clip, render};
use super::views::rfc3339;
use crate::cli_args::{AdminArgs, EventFilters, ReplayArgs};
use crate::event::EventKind;
use crate::replay::{ReplayPlan, ReplayRecord, ReplayState};

/// Finished replays `status` still shows, besides the running ones.
const FINISHED_SHOWN: usize = 3;

/// The query string of `since` and `filters`, for `GET /events` and `POST /replay`.
fn filter_query(since: Option<&str>, f: &EventFilters) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    if let Some(s) = since {
        pairs.push(("since", s.to_string()));
    }
    if let Some(u) = &f.until {
        pairs.push(("until", u.clone()));
    }
    if let Some(k) = f.kind {
        pairs.push(("kind", EventKind::from(k).to_string()));
    }
    if let Some(r) = &f.route {
        pairs.push(("route", r.clone()));
    }
    if let Some(d) = &f.destination {
        pairs.push(("destination", d.clone()));
    }
    if let Some(s) = f.status {
        pairs.push(("status", s.as_str().to_string()));
    }
    if let Some(m) = &f.mindstamp_id {
        pairs.push(("mindstamp_id", m.clone()));
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode_query(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ClientError> {
    serde_json::from_value(value).map_err(|e| ClientError::Decode(e.to_string()))
}

/// `event list`.
pub(super) async fn event_list(
    client: &AdminClient,
    args: &AdminArgs,
    since: &str,
    filters: &EventFilters,
    limit: usize,
    before: Option<&str>,
    out: &mut String,
) -> Result<(), CliError> {
    let mut path = format!(
        "/events?{}&limit={limit}",
        filter_query(Some(since), filters)
    );
    if let Some(b) = before {
        let _ = write!(path, "&before={}", encode_query(b));
    }
    let value = client.call(Method::GET, &path).await?;
    if args.json {
        push_json(out, &value);
        return Ok(());
    }
    let list: EventList = decode(value)?;
    let rows: Vec<Vec<String>> = list
        .events
        .iter()
        .map(|e| {
            let deliveries: Vec<String> = e
                .deliveries
                .iter()
                .map(|d| format!("{}:{}", d.destination, d.status))
                .collect();
            vec![
                e.id.clone(),
                e.received_at.clone(),
                e.kind.clone(),
                e.status.clone(),
                clip(&e.routes.join(","), 40),
                clip(&deliveries.join(" "), 60),
            ]
        })
        .collect();
    out.push_str(&render(
        &["ID", "RECEIVED", "KIND", "STATUS", "ROUTES", "DELIVERIES"],
        &rows,
    ));
    match &list.next_before {
        Some(next) => {
            let _ = writeln!(
                out,
                "{} shown, newest first; older ones: add --before {next}",
                list.events.len()
            );
        }
        None => {
            let _ = writeln!(out, "{} shown, newest first", list.events.len());
        }
    }
    Ok(())
}

/// `replay ...`.
pub(super) async fn replay(
    client: &AdminClient,
    args: &AdminArgs,
    r: &ReplayArgs,
    out: &mut String,
) -> Result<(), CliError> {
    if let Some(id) = &r.cancel {
        let value = client
            .call(
                Method::POST,
                &format!("/replays/{}/cancel", encode_query(id)),
            )
            .await?;
        if args.json {
            push_json(out, &value);
        } else {
            let rec: ReplayRecord = decode(value)?;
            let _ = writeln!(
                out,
                "replay {} cancelled after {} of {} events ({} deliveries queued; those still queued are delivered)",
                rec.id,
                rec.processed,
                rec.selected,
                rec.jobs()
            );
        }
        return Ok(());
    }
    let mut path = if r.events.is_empty() {
        format!("/replay?{}", filter_query(r.since.as_deref(), &r.filters))
    } else {
        format!("/replay?events={}", encode_query(&r.events.join(",")))
    };
    if let Some(to) = &r.to {
        let _ = write!(path, "&to={}", encode_query(to));
    }
    if r.dry_run {
        path.push_str("&dry_run=1");
        if r.explain {
            path.push_str("&explain=1");
        }
    }
    let value = client.call(Method::POST, &path).await?;
    if args.json {
        push_json(out, &value);
    } else if r.dry_run {
        plan_lines(&decode(value)?, out);
    } else {
        let rec: ReplayRecord = decode(value)?;
        let _ = writeln!(
            out,
            "replay {} started: {} events selected; progress in `hookrouter status`, stop it with `hookrouter replay --cancel {}`",
            rec.id, rec.selected, rec.id
        );
    }
    Ok(())
}

fn plan_lines(plan: &ReplayPlan, out: &mut String) {
    for e in &plan.events {
        let to = if e.destinations.is_empty() {
            "nowhere".to_string()
        } else {
            e.destinations.join(", ")
        };
        let _ = writeln!(
            out,
            "{} {} {} -> {to}",
            e.event_id,
            rfc3339(e.received_at_ms),
            e.kind
        );
        if let Some(text) = &e.explain {
            for line in text.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    if !plan.complete {
        let _ = writeln!(
            out,
            "(the first {} events listed; the counts cover all)",
            plan.events.len()
        );
    }
    let rows: Vec<Vec<String>> = plan
        .destinations
        .iter()
        .map(|(d, n)| vec![d.clone(), n.to_string()])
        .collect();
    out.push_str(&render(&["DESTINATION", "WOULD SEND"], &rows));
    let _ = writeln!(
        out,
        "{} events selected, {} would be sent nowhere; dry run: nothing was sent",
        plan.selected, plan.not_sent
    );
}

/// The replay lines under `status`: running replays and the last few finished.
pub(super) async fn status_replays(client: &AdminClient, out: &mut String) -> Result<(), CliError> {
    let list: ReplayList = client.call_as(Method::GET, "/replays").await?;
    let running = list
        .replays
        .iter()
        .filter(|r| r.state == ReplayState::Running);
    let finished: Vec<&ReplayRecord> = list
        .replays
        .iter()
        .filter(|r| r.state != ReplayState::Running)
        .collect();
    let shown: Vec<&ReplayRecord> = running
        .chain(finished.iter().rev().take(FINISHED_SHOWN).rev().copied())
        .collect();
    if shown.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                format!("{:?}", r.state).to_lowercase(),
                format!("{}/{}", r.processed, r.selected),
                r.jobs().to_string(),
                r.spec
                    .to
                    .clone()
                    .unwrap_or_else(|| "(today's rules)".into()),
                rfc3339(r.created_at_ms),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&render(
        &["REPLAY", "STATE", "EVENTS", "DELIVERIES", "TO", "STARTED"],
        &rows,
    ));
    Ok(())
}

/// `check --against-journal`: sends the file at `path` as the candidate and prints the
/// shadow report.
pub(super) async fn shadow(
    client: &AdminClient,
    path: &std::path::Path,
    since: &str,
    out: &mut String,
) -> Result<(), CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        CliError::Config(crate::config::ConfigError::Read {
            path: path.display().to_string(),
            source,
        })
    })?;
    let query = format!(
        "/reload?dry_run=1&since={}&name={}",
        encode_query(since),
        encode_query(&path.display().to_string())
    );
    let report: crate::shadow::ShadowReport =
        decode(client.call_with(Method::POST, &query, Some(text)).await?)?;
    let _ = writeln!(
        out,
        "\nagainst the journal: {} events received since {} (now / with {}):",
        report.events,
        rfc3339(report.since_ms),
        path.display()
    );
    let counts = |m: &std::collections::BTreeMap<String, crate::shadow::Counts>| {
        m.iter()
            .map(|(k, c)| {
                let delta = i128::from(c.candidate) - i128::from(c.current);
                vec![
                    k.clone(),
                    c.current.to_string(),
                    c.candidate.to_string(),
                    format!("{delta:+}"),
                ]
            })
            .collect::<Vec<_>>()
    };
    out.push_str(&render(
        &["ROUTE", "NOW", "CANDIDATE", "CHANGE"],
        &counts(&report.routes),
    ));
    out.push('\n');
    out.push_str(&render(
        &["DESTINATION", "NOW", "CANDIDATE", "CHANGE"],
        &counts(&report.destinations),
    ));
    let _ = writeln!(
        out,
        "\n{} deliveries gained, {} lost; nothing was sent or reloaded",
        report.gained, report.lost
    );
    for (what, sample) in [
        ("lost", &report.lost_sample),
        ("gained", &report.gained_sample),
    ] {
        for c in sample {
            let _ = writeln!(
                out,
                "  {what}: {} ({}) -> {}",
                c.event_id, c.kind, c.destination
            );
        }
    }
    Ok(())
}
