//! The journal through the admin API: `GET /events` (list and find), `POST /replay`
//! (start one, or `dry_run=1`), `GET /replays`, `GET /replays/{id}` and
//! `POST /replays/{id}/cancel`, and the shadow test `POST /reload?dry_run=1`. Every parameter is a query parameter, as the other
//! endpoints take them.

use std::collections::BTreeMap;

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::handlers::{parse_id, parse_limit, AdminError};
use super::views::rfc3339;
use super::AdminState;
use crate::event::EventKind;
use crate::http_server::response::{json, JsonResponse};
use crate::queue::catalog::{EventQuery, EventStatus, FoundEvent};
use crate::queue::now_ms;
use crate::replay::{ReplayRecord, ReplaySpec};

type Answer = Result<JsonResponse, AdminError>;

/// Events listed when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;

/// `GET /events`: one page, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventList {
    /// The events of this page.
    pub events: Vec<EventSummary>,
    /// Pass as `before=` for the next (older) page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

/// One event in a list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventSummary {
    /// Our event id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// When it was received (RFC 3339).
    pub received_at: String,
    /// `unrouted`, `queued`, `dead`, `delivered` or `dropped`.
    pub status: String,
    /// Routes it matched when accepted.
    pub routes: Vec<String>,
    /// Its deliveries and where each stands.
    pub deliveries: Vec<DeliverySummary>,
}

/// One delivery of a listed event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliverySummary {
    /// Delivery id.
    pub id: String,
    /// Destination.
    pub destination: String,
    /// `queued`, `dead`, `delivered` or `dropped`.
    pub status: String,
}

/// `GET /replays`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplayList {
    /// Every replay operation, oldest first.
    pub replays: Vec<ReplayRecord>,
}

fn summary(e: &FoundEvent) -> EventSummary {
    EventSummary {
        id: e.header.id.to_string(),
        kind: e.header.kind.to_string(),
        received_at: rfc3339(e.header.received_at_ms),
        status: e.status.as_str().into(),
        routes: e.header.routes.clone(),
        deliveries: e
            .jobs
            .iter()
            .map(|j| DeliverySummary {
                id: j.seed.id.to_string(),
                destination: j.seed.destination.clone(),
                status: j.status.as_str().into(),
            })
            .collect(),
    }
}

/// A point in time as an operator gives it: a duration before now (`2h`, `30m`, `1d`) or
/// an RFC 3339 time (`2026-01-31T12:00:00Z`).
pub fn parse_time(value: &str, now_ms: u64, name: &str) -> Result<u64, AdminError> {
    if let Ok(d) = humantime::parse_duration(value) {
        let ago = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        return Ok(now_ms.saturating_sub(ago));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        if let Ok(d) = t.duration_since(std::time::UNIX_EPOCH) {
            return Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        }
    }
    Err(AdminError::InvalidQuery(format!(
        "{name} must be a duration before now (2h, 30m, 7d) or an RFC 3339 time, found {value:?}"
    )))
}

/// The filters of `GET /events` and `POST /replay`; `since` is required unless `allow_none`
/// (a replay by event ids), and then `None` means no selection by time.
fn parse_query(
    query: &BTreeMap<String, String>,
    allow_none: bool,
) -> Result<Option<EventQuery>, AdminError> {
    let now = now_ms();
    let Some(since) = query.get("since") else {
        let filters = [
            "until",
            "kind",
            "route",
            "destination",
            "status",
            "mindstamp_id",
        ];
        if let Some(f) = filters.iter().find(|f| query.contains_key(**f)) {
            return Err(AdminError::InvalidQuery(format!(
                "{f} filters events selected by time: give since too"
            )));
        }
        return if allow_none {
            Ok(None)
        } else {
            Err(AdminError::InvalidQuery(
                "since is required (2h, or an RFC 3339 time)".into(),
            ))
        };
    };
    let kind = match query.get("kind") {
        None => None,
        Some(k) => Some(k.parse::<EventKind>().map_err(|_| {
            AdminError::InvalidQuery(format!(
                "kind must be view, interaction or lead, found {k:?}"
            ))
        })?),
    };
    let status = match query.get("status") {
        None => None,
        Some(s) => Some(EventStatus::parse(s).ok_or_else(|| {
            AdminError::InvalidQuery(format!(
                "status must be delivered, dead, unrouted, queued or dropped, found {s:?}"
            ))
        })?),
    };
    Ok(Some(EventQuery {
        since_ms: parse_time(since, now, "since")?,
        until_ms: query
            .get("until")
            .map(|u| parse_time(u, now, "until"))
            .transpose()?,
        kind,
        route: query.get("route").cloned(),
        destination: query.get("destination").cloned(),
        status,
        mindstamp_id: query.get("mindstamp_id").cloned(),
    }))
}

fn flag(query: &BTreeMap<String, String>, name: &str) -> bool {
    query
        .get(name)
        .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes" | ""))
}

/// `GET /events?since=2h[&until=][&kind=][&route=][&destination=][&status=][&mindstamp_id=][&limit=][&before=]`.
pub async fn list_events(state: &AdminState, query: &BTreeMap<String, String>) -> Answer {
    let q = parse_query(query, false)?.unwrap_or_default();
    let limit = parse_limit(query, DEFAULT_LIMIT)?;
    let before = query
        .get("before")
        .map(|b| parse_id(b, "event"))
        .transpose()?;
    let store = state.store.clone();
    let (events, more) = tokio::task::spawn_blocking(move || store.list_events(&q, before, limit))
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))??;
    let next_before = more
        .then(|| events.last().map(|e| e.header.id.to_string()))
        .flatten();
    Ok(json(
        StatusCode::OK,
        &EventList {
            events: events.iter().map(summary).collect(),
            next_before,
        },
    ))
}

/// `POST /replay?events=ID,ID | since=...[&filters][&to=D][&dry_run=1][&explain=1]`.
pub async fn replay(state: &AdminState, query: &BTreeMap<String, String>) -> Answer {
    let events = match query.get("events") {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|id| parse_id(id, "event"))
            .collect::<Result<_, _>>()?,
    };
    let spec = ReplaySpec {
        events,
        query: parse_query(query, true)?,
        to: query.get("to").cloned(),
    };
    if flag(query, "dry_run") {
        let plan = state.replays.plan(spec, flag(query, "explain")).await?;
        return Ok(json(StatusCode::OK, &plan));
    }
    let record = state.replays.begin(spec).await?;
    Ok(json(StatusCode::ACCEPTED, &record))
}

/// `GET /replays`.
pub fn list_replays(state: &AdminState) -> Answer {
    Ok(json(
        StatusCode::OK,
        &ReplayList {
            replays: state.replays.list(),
        },
    ))
}

/// `GET /replays/{id}`.
pub fn show_replay(state: &AdminState, id: &str) -> Answer {
    let id = parse_id(id, "replay")?;
    let record = state
        .replays
        .get(&id)
        .ok_or(AdminError::Replay(crate::replay::ReplayError::NoReplay(id)))?;
    Ok(json(StatusCode::OK, &record))
}

/// `POST /replays/{id}/cancel`.
pub fn cancel_replay(state: &AdminState, id: &str) -> Answer {
    let id = parse_id(id, "replay")?;
    Ok(json(StatusCode::OK, &state.replays.cancel(&id)?))
}

/// Largest candidate config `POST /reload?dry_run=1` reads from its body.
const MAX_CANDIDATE_BYTES: usize = 4 << 20;

/// `POST /reload?dry_run=1[&since=24h][&name=NEW.yaml]`: a candidate config judged against
/// the events recorded since `since` ([`crate::shadow`]); nothing is reloaded or sent. The
/// candidate is the request body when there is one (`check --against-journal` sends it;
/// `name` is the file its problems are reported against, `${VAR}` are the daemon's), or
/// else the config file as it is now. `422 invalid_config` with every problem when it does
/// not load.
pub async fn reload_dry_run(
    state: &AdminState,
    query: &BTreeMap<String, String>,
    req: http::Request<hyper::body::Incoming>,
) -> Answer {
    use http_body_util::BodyExt;
    let since = query.get("since").map_or("24h", String::as_str);
    let since_ms = parse_time(since, now_ms(), "since")?;
    let current = state.config.load_full();
    let body = http_body_util::Limited::new(req.into_body(), MAX_CANDIDATE_BYTES)
        .collect()
        .await
        .map_err(|e| AdminError::InvalidBody(format!("reading the candidate config: {e}")))?
        .to_bytes();
    let candidate = if body.is_empty() {
        crate::config::Config::load(&current.source)
    } else {
        let text = std::str::from_utf8(&body)
            .map_err(|_| AdminError::InvalidBody("the candidate config is not UTF-8".into()))?;
        let name = query.get("name").map_or("candidate.yaml", String::as_str);
        crate::config::Config::from_yaml(
            text,
            std::path::Path::new(name),
            &crate::config::ProcessEnv,
        )
    }
    .map_err(AdminError::InvalidConfig)?;
    let store = state.store.clone();
    let report = tokio::task::spawn_blocking(move || {
        crate::shadow::report(&store, &current, &candidate, since_ms)
    })
    .await
    .map_err(|e| AdminError::Internal(e.to_string()))??;
    Ok(json(StatusCode::OK, &report))
}
