//! The operator's commands over the admin API: `status`, `dead list|show|retry|drop`,
//! `event show|list` and `replay` (the last two in [`super::history_cli`]). Human tables by default, the API's JSON with `--json`.
//!
//! They live in the library (not `main.rs`) so tests can drive them and `main` only
//! dispatches.

use std::fmt::Write as _;

use reqwest::Method;

use super::client::{base_url_for, encode_query, AdminClient, ClientError};
use super::table::{clip, render};
use super::views::{
    DeadLetterView, DeadList, EventView, HealthView, HoldResult, QueueView, RetryResult,
};
use crate::config::{admin_endpoint, ConfigError, DEFAULT_ADMIN_LISTEN};

// The arguments are defined with the rest of the command line, where `build.rs` can see them.
pub use crate::cli_args::{AdminArgs, DeadCommand, DestinationCommand, EventCommand, ReplayArgs};

/// One operator command.
#[derive(Debug, Clone)]
pub enum Operation {
    /// `status`.
    Status,
    /// `dead ...`.
    Dead(DeadCommand),
    /// `event ...`.
    Event(EventCommand),
    /// `destination hold|release`.
    Destination(DestinationCommand),
    /// `replay ...`.
    Replay(ReplayArgs),
    /// `check --against-journal --since T`: the config file (`--config`) judged against
    /// the running daemon's recorded events.
    Shadow {
        /// Events received since this.
        since: String,
    },
}

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The config could not be read for the admin address.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The API call failed.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// Some of several ids failed (each was reported already).
    #[error("{failed} of {total} failed")]
    Partial {
        /// How many failed.
        failed: usize,
        /// How many were asked for.
        total: usize,
    },
}

/// Connects to the admin API named by `args` (or the config file, or the default).
pub fn connect(args: &AdminArgs) -> Result<AdminClient, CliError> {
    let (base, token) = match &args.admin {
        Some(url) => (url.clone(), args.token.clone()),
        None => {
            let (addr, token) = if args.config.exists() {
                admin_endpoint(&args.config, args.token.is_none())?
            } else {
                (DEFAULT_ADMIN_LISTEN, None)
            };
            (
                base_url_for(addr),
                args.token
                    .clone()
                    .or_else(|| token.map(|t| t.expose().to_string())),
            )
        }
    };
    Ok(AdminClient::new(&base, token)?)
}

/// Runs `op`, writing what the operator reads to `out`.
pub async fn run(op: &Operation, args: &AdminArgs, out: &mut String) -> Result<(), CliError> {
    let client = connect(args)?;
    match op {
        Operation::Status => {
            show(&client, args, "/queue", out, status_table).await?;
            if !args.json {
                super::history_cli::status_replays(&client, out).await?;
            }
            Ok(())
        }
        Operation::Destination(command) => {
            let (name, verb) = match command {
                DestinationCommand::Hold { name } => (name, "hold"),
                DestinationCommand::Release { name } => (name, "release"),
            };
            let path = format!("/destinations/{}/{verb}", encode_query(name));
            let value = client.call(Method::POST, &path).await?;
            if args.json {
                push_json(out, &value);
            } else {
                let r: HoldResult = decode(value)?;
                hold_line(&r, verb, out);
            }
            Ok(())
        }
        Operation::Event(EventCommand::List {
            since,
            filters,
            limit,
            before,
        }) => {
            super::history_cli::event_list(
                &client,
                args,
                since,
                filters,
                *limit,
                before.as_deref(),
                out,
            )
            .await
        }
        Operation::Replay(r) => super::history_cli::replay(&client, args, r, out).await,
        Operation::Shadow { since } => {
            super::history_cli::shadow(&client, &args.config, since, out).await
        }
        Operation::Dead(DeadCommand::List { destination, limit }) => {
            let mut path = format!("/dead?limit={limit}");
            if let Some(d) = destination {
                let _ = write!(path, "&destination={}", encode_query(d));
            }
            show(&client, args, &path, out, dead_table).await
        }
        Operation::Dead(DeadCommand::Show { id }) => {
            show(
                &client,
                args,
                &format!("/dead/{}", encode_query(id)),
                out,
                dead_detail,
            )
            .await
        }
        Operation::Dead(DeadCommand::Retry {
            all: true,
            destination,
            ..
        }) => {
            let path = match destination {
                Some(d) => format!("/dead/retry?destination={}", encode_query(d)),
                None => "/dead/retry".to_string(),
            };
            let value = client.call(Method::POST, &path).await?;
            if args.json {
                push_json(out, &value);
            } else {
                let r: RetryResult = decode(value)?;
                retry_lines(&r, out);
            }
            Ok(())
        }
        Operation::Dead(DeadCommand::Retry { ids, .. }) => {
            each(
                &client,
                args,
                ids,
                Method::POST,
                |id| format!("/dead/{id}/retry"),
                "queued again",
                out,
            )
            .await
        }
        Operation::Dead(DeadCommand::Drop { ids }) => {
            each(
                &client,
                args,
                ids,
                Method::DELETE,
                |id| format!("/dead/{id}"),
                "dropped",
                out,
            )
            .await
        }
        Operation::Event(EventCommand::Show { id }) => {
            show(
                &client,
                args,
                &format!("/events/{}", encode_query(id)),
                out,
                event_detail,
            )
            .await
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ClientError> {
    serde_json::from_value(value).map_err(|e| ClientError::Decode(e.to_string()))
}

pub(super) fn push_json(out: &mut String, value: &serde_json::Value) {
    out.push_str(&serde_json::to_string_pretty(value).unwrap_or_default());
    out.push('\n');
}

async fn show<T: serde::de::DeserializeOwned>(
    client: &AdminClient,
    args: &AdminArgs,
    path: &str,
    out: &mut String,
    human: fn(&T, &mut String),
) -> Result<(), CliError> {
    let value = client.call(Method::GET, path).await?;
    if args.json {
        push_json(out, &value);
    } else {
        human(&decode(value)?, out);
    }
    Ok(())
}

/// Calls one endpoint per id; reports each, and fails if any failed.
async fn each(
    client: &AdminClient,
    args: &AdminArgs,
    ids: &[String],
    method: Method,
    path: impl Fn(&str) -> String,
    done: &str,
    out: &mut String,
) -> Result<(), CliError> {
    let mut failed = 0;
    let mut answers = Vec::new();
    for id in ids {
        match client.call(method.clone(), &path(&encode_query(id))).await {
            Ok(v) => {
                if args.json {
                    answers.push(v);
                } else {
                    let _ = writeln!(out, "{id}: {done}");
                }
            }
            Err(e @ ClientError::Unreachable { .. }) => return Err(e.into()),
            Err(e) => {
                failed += 1;
                if args.json {
                    answers.push(serde_json::json!({"id": id, "error": e.to_string()}));
                } else {
                    let _ = writeln!(out, "{id}: {e}");
                }
            }
        }
    }
    if args.json {
        push_json(out, &serde_json::Value::Array(answers));
    }
    if failed > 0 {
        return Err(CliError::Partial {
            failed,
            total: ids.len(),
        });
    }
    Ok(())
}

fn age(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) => humantime::format_duration(std::time::Duration::from_secs(s as u64)).to_string(),
    }
}

fn hold_line(r: &HoldResult, verb: &str, out: &mut String) {
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

/// `held (operator) 5m` / `failing 30s` / `healthy`.
fn state_cell(health: Option<&HealthView>, now_ms: u64) -> String {
    let Some(h) = health else {
        return "-".into();
    };
    let mut cell = h.state.clone();
    if h.held_by_operator {
        cell.push_str(" (operator)");
    }
    if h.state != "healthy" {
        let since = std::time::Duration::from_secs(now_ms.saturating_sub(h.since_ms) / 1000);
        let _ = write!(cell, " {}", humantime::format_duration(since));
    }
    cell
}

fn status_table(q: &QueueView, out: &mut String) {
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
                None => "no probes while held by an operator".to_string(),
            };
            let _ = writeln!(
                out,
                "  {probe}; resume by hand: hookrouter destination release {name}"
            );
        }
    }
}

fn dead_table(list: &DeadList, out: &mut String) {
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

fn dead_detail(d: &DeadLetterView, out: &mut String) {
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

fn retry_lines(r: &RetryResult, out: &mut String) {
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

fn event_detail(e: &EventView, out: &mut String) {
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
                    a.outcome.clone(),
                    clip(a.error.as_deref().unwrap_or(""), 60),
                ]
            })
            .collect();
        for line in render(&["#", "AT", "STATUS", "LATENCY", "OUTCOME", "ERROR"], &rows).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
}
