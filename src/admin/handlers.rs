//! The admin endpoints, one function each; [`route`] maps method and path to them.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use uuid::Uuid;

use super::dead_letters::{drop_dead, list_dead, retry_all, retry_one, show_dead};
pub(super) use super::error::AdminError;
use super::error::Answer;
use super::views::{
    DestinationQueue, EventView, HealthView, HoldResult, JobView, QueueView, ReloadView,
};
use super::{history, AdminState};
use crate::http_server::response::{json, JsonResponse};
use crate::queue::{now_ms, StoreError};

/// Dead letters listed when `limit` is not given.
pub(super) const DEFAULT_LIST_LIMIT: usize = 100;
/// Most records any `limit=` query parameter asks for (the dead letter lists): one answer
/// is built in memory, so a huge limit would load the whole store at once.
pub const MAX_LIMIT: usize = 1000;
/// Dead letters a bulk retry loads and requeues at a time, so retrying a million of them
/// never holds more than this many records.
pub(super) const RETRY_BATCH: usize = 1000;
/// Due keys read per destination to find its oldest queued job.
const OLDEST_SCAN_LIMIT: usize = 100_000;

/// Answers one authorized admin request.
pub async fn route(state: &AdminState, req: Request<Incoming>) -> JsonResponse {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = query_pairs(req.uri().query());
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let result = match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => {
            Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"})))
        }
        (&Method::GET, ["queue"]) => queue(state),
        (&Method::GET, ["metrics"]) => metrics(state),
        (&Method::GET, ["dead"]) => list_dead(state, &query),
        (&Method::POST, ["dead", "retry"]) => retry_all(state, &query).await,
        (&Method::GET, ["dead", id]) => show_dead(state, id),
        (&Method::DELETE, ["dead", id]) => drop_dead(state, id),
        (&Method::POST, ["dead", id, "retry"]) => retry_one(state, id),
        (&Method::GET, ["events", id]) => show_event(state, id),
        (&Method::GET, ["events"]) => history::list_events(state, &query).await,
        (&Method::POST, ["replay"]) => history::replay(state, &query).await,
        (&Method::GET, ["replays"]) => history::list_replays(state),
        (&Method::GET, ["replays", id]) => history::show_replay(state, id),
        (&Method::POST, ["replays", id, "cancel"]) => history::cancel_replay(state, id),
        (&Method::POST, ["reload"]) if query.contains_key("dry_run") => {
            history::reload_dry_run(state, &query, req).await
        }
        (&Method::POST, ["reload"]) => reload(state),
        (&Method::POST, ["destinations", name, "hold"]) => hold(state, name, true),
        (&Method::POST, ["destinations", name, "release"]) => hold(state, name, false),
        (_, ["healthz" | "queue" | "metrics" | "dead" | "reload"])
        | (_, ["events" | "replay" | "replays"])
        | (_, ["dead", _] | ["events", _] | ["replays", _])
        | (_, ["dead", _, "retry"] | ["replays", _, "cancel"])
        | (_, ["destinations", _, "hold" | "release"]) => {
            Err(AdminError::MethodNotAllowed { method, path })
        }
        _ => Err(AdminError::NotFound(path)),
    };
    result.unwrap_or_else(AdminError::into_response)
}

pub(super) fn query_pairs(query: Option<&str>) -> BTreeMap<String, String> {
    let Some(q) = query else {
        return BTreeMap::new();
    };
    // reqwest's Url (the `url` crate) decodes percent-escapes and `+` properly.
    reqwest::Url::parse(&format!("http://admin/?{q}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

/// The `limit=` query parameter: `default` when absent, refused when not a number or above
/// [`MAX_LIMIT`].
pub(super) fn parse_limit(
    query: &BTreeMap<String, String>,
    default: usize,
) -> Result<usize, AdminError> {
    let Some(l) = query.get("limit") else {
        return Ok(default);
    };
    // Digits beyond usize are still a number, only too large.
    if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) {
        return match l.parse::<usize>() {
            Ok(n) if n <= MAX_LIMIT => Ok(n),
            _ => Err(AdminError::LimitTooLarge(l.clone())),
        };
    }
    Err(AdminError::InvalidLimit(l.clone()))
}

pub(super) fn parse_id(id: &str, what: &'static str) -> Result<Uuid, AdminError> {
    Uuid::parse_str(id).map_err(|_| AdminError::InvalidId(id.to_string(), what))
}

fn queue(state: &AdminState) -> Answer {
    Ok(json(StatusCode::OK, &queue_view(state)?))
}

/// The queue of every configured destination and every destination with jobs left (for
/// `GET /queue` and the status page).
pub(super) fn queue_view(state: &AdminState) -> Result<QueueView, StoreError> {
    let snapshot = state.store.stats().snapshot();
    let config = state.config.load();
    let mut names: std::collections::BTreeSet<String> =
        config.destinations.keys().cloned().collect();
    names.extend(snapshot.keys().cloned());
    let now = now_ms();
    let mut view = QueueView::default();
    for name in names {
        let depth = snapshot.get(&name).copied().unwrap_or_default();
        let age_ms = state
            .store
            .oldest_queued_age_ms(&name, now, OLDEST_SCAN_LIMIT)?;
        let q = DestinationQueue {
            pending: depth.pending,
            retrying: depth.retrying,
            in_flight: u64::try_from(state.metrics.in_flight_of(&name)).unwrap_or(0),
            dead: depth.dead,
            oldest_pending_age_seconds: age_ms.map(|ms| ms as f64 / 1000.0),
            health: Some(HealthView::of(&state.health.get(&name, now))),
        };
        let t = &mut view.total;
        t.pending += q.pending;
        t.retrying += q.retrying;
        t.in_flight += q.in_flight;
        t.dead += q.dead;
        t.oldest_pending_age_seconds =
            match (t.oldest_pending_age_seconds, q.oldest_pending_age_seconds) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        view.destinations.insert(name, q);
    }
    Ok(view)
}

/// `POST /destinations/{name}/hold` (`hold`) and `.../release`: an operator's hold sends
/// nothing, not even probes, until it is released; a release also ends an automatic hold.
fn hold(state: &AdminState, name: &str, hold: bool) -> Answer {
    let config = state.config.load();
    let Some(dest) = config.destinations.get(name) else {
        return Err(AdminError::NoSuchDestination(name.to_string()));
    };
    let now = now_ms();
    let changed = if hold {
        state.health.hold(name, now, &dest.health)?
    } else {
        state.health.release(name, now)?
    };
    if !hold {
        // Its worker may be asleep for as long as the hold lasted.
        state.dispatcher.wake(name);
    }
    let verb = if hold { "hold" } else { "release" };
    tracing::info!(
        destination = name,
        changed,
        via = "api",
        "operator {verb} of a destination"
    );
    Ok(json(
        StatusCode::OK,
        &HoldResult {
            destination: name.to_string(),
            changed,
            health: HealthView::of(&state.health.get(name, now)),
        },
    ))
}

fn metrics(state: &AdminState) -> Answer {
    let names: Vec<String> = state.config.load().destinations.keys().cloned().collect();
    let last_reload = state.reloader.history().last;
    state
        .metrics
        .reload_result(last_reload.is_none_or(|r| r.error.is_none()));
    let text = state
        .metrics
        .render(&state.store, &state.health, names)
        .map_err(|e| AdminError::Internal(format!("rendering metrics: {e}")))?;
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(r)
}

fn show_event(state: &AdminState, id: &str) -> Answer {
    let id = parse_id(id, "event")?;
    let (event, body, story) = state
        .store
        .event_story(&id)?
        .ok_or(AdminError::NoEvent(id))?;
    let jobs = story
        .iter()
        .map(|(job_id, status, attempts)| JobView::new(job_id, status.as_ref(), attempts))
        .collect();
    Ok(json(
        StatusCode::OK,
        &EventView::new(&event, Some(&body), jobs),
    ))
}

fn reload(state: &AdminState) -> Answer {
    match state.reloader.reload() {
        Ok(s) => Ok(json(
            StatusCode::OK,
            &ReloadView {
                status: "reloaded".into(),
                routes_added: s.routes.added,
                routes_removed: s.routes.removed,
                routes_changed: s.routes.changed,
                destinations_added: s.destinations.added,
                destinations_removed: s.destinations.removed,
                destinations_changed: s.destinations.changed,
            },
        )),
        Err(e) => Err(AdminError::InvalidConfig(e)),
    }
}
