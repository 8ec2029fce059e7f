//! The operator's commands over the admin API: `status`, `dead list|show|retry|drop`,
//! `event show|list` and `replay` (the last two in [`super::history_cli`]). Human tables by default, the API's JSON with `--json`.
//!
//! They live in the library (not `main.rs`) so tests can drive them and `main` only
//! dispatches.

use std::fmt::Write as _;

use reqwest::Method;

use super::cli_render::{
    dead_detail, dead_table, event_detail, hold_line, retry_lines, status_table,
};
use super::client::{base_url_for, encode_query, AdminClient, ClientError};
use super::views::{HoldResult, RetryResult};
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
        Operation::Destination(command) => destination(&client, args, command, out).await,
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
        Operation::Event(EventCommand::Show { id }) => {
            let path = format!("/events/{}", encode_query(id));
            show(&client, args, &path, out, event_detail).await
        }
        Operation::Replay(r) => super::history_cli::replay(&client, args, r, out).await,
        Operation::Shadow { since } => {
            super::history_cli::shadow(&client, &args.config, since, out).await
        }
        Operation::Dead(command) => dead(&client, args, command, out).await,
    }
}

/// `destination hold|release NAME`.
async fn destination(
    client: &AdminClient,
    args: &AdminArgs,
    command: &DestinationCommand,
    out: &mut String,
) -> Result<(), CliError> {
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

/// `dead list|show|retry|drop`.
async fn dead(
    client: &AdminClient,
    args: &AdminArgs,
    command: &DeadCommand,
    out: &mut String,
) -> Result<(), CliError> {
    match command {
        DeadCommand::List { destination, limit } => {
            let mut path = format!("/dead?limit={limit}");
            if let Some(d) = destination {
                let _ = write!(path, "&destination={}", encode_query(d));
            }
            show(client, args, &path, out, dead_table).await
        }
        DeadCommand::Show { id } => {
            let path = format!("/dead/{}", encode_query(id));
            show(client, args, &path, out, dead_detail).await
        }
        DeadCommand::Retry {
            all: true,
            destination,
            ..
        } => {
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
        DeadCommand::Retry { ids, .. } => {
            let path = |id: &str| format!("/dead/{id}/retry");
            each(client, args, ids, Method::POST, path, "queued again", out).await
        }
        DeadCommand::Drop { ids } => {
            let path = |id: &str| format!("/dead/{id}");
            each(client, args, ids, Method::DELETE, path, "dropped", out).await
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
