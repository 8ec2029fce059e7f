//! The admin endpoints, one function each; [`route`] maps method and path to them.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use uuid::Uuid;

use super::views::{
    body_json, DeadLetterView, DeadList, DestinationQueue, EventView, HealthView, HoldResult,
    JobView, QueueView, ReloadView, RetryResult, Skipped,
};
use super::{history, AdminState};
use crate::config::ConfigError;
use crate::http_server::response::{error, json, JsonResponse};
use crate::queue::{now_ms, Store, StoreError};

/// Dead letters listed when `limit` is not given.
const DEFAULT_LIST_LIMIT: usize = 100;
/// Most records any `limit=` query parameter asks for (the dead letter lists): one answer
/// is built in memory, so a huge limit would load the whole store at once.
pub const MAX_LIMIT: usize = 1000;
/// Dead letters a bulk retry loads and requeues at a time, so retrying a million of them
/// never holds more than this many records.
const RETRY_BATCH: usize = 1000;
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

type Answer = Result<JsonResponse, AdminError>;

/// Why an admin request was refused or failed; each maps to a status and an error code.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The path segment is not a UUID.
    #[error("{0:?} is not a {1} id (a UUID)")]
    InvalidId(String, &'static str),
    /// `limit=` is not a number.
    #[error("limit must be a whole number, found {0:?}")]
    InvalidLimit(String),
    /// `limit=` is above [`MAX_LIMIT`].
    #[error("limit must be at most {MAX_LIMIT}, found {0}; page with destination filters, or use the retry and drop actions for bulk work")]
    LimitTooLarge(String),
    /// A request body is not what the endpoint takes.
    #[error("{0}")]
    InvalidBody(String),
    /// A query parameter is not what the endpoint takes.
    #[error("{0}")]
    InvalidQuery(String),
    /// A replay could not be started, found or cancelled.
    #[error(transparent)]
    Replay(#[from] crate::replay::ReplayError),
    /// No such dead letter.
    #[error("no dead letter {0} (retried, dropped or purged?)")]
    NoDeadLetter(Uuid),
    /// No such event.
    #[error("no event {0} (never accepted, or purged after server.retention)")]
    NoEvent(Uuid),
    /// No event has this id, ours or Mindstamp's.
    #[error("no event with the event id or Mindstamp id {0:?} (Mindstamp ids are known for events accepted since the daemon started, and for dead letters; events are purged after server.retention)")]
    NoEventFor(String),
    /// Retrying to a destination the config no longer has would only dead-letter again.
    #[error("destination {0:?} is not in the config; add it back (and reload) before retrying")]
    UnknownDestination(String),
    /// Hold or release of a destination the config does not have.
    #[error("no destination {0:?} in the config")]
    NoSuchDestination(String),
    /// `POST /reload` found errors in the file.
    #[error("the config was not reloaded; the previous rules stay in force:\n{0}")]
    InvalidConfig(ConfigError),
    /// Known path, wrong method.
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The method used.
        method: Method,
        /// The path.
        path: String,
    },
    /// Unknown path.
    #[error("no admin endpoint at {0}; see the README (Operating it)")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something else failed (a task panicked, metrics could not render).
    #[error("{0}")]
    Internal(String),
}

impl AdminError {
    /// The JSON error answer.
    pub fn into_response(self) -> JsonResponse {
        let (status, code) = match &self {
            AdminError::InvalidId(..) => (StatusCode::BAD_REQUEST, "invalid_id"),
            AdminError::InvalidLimit(_) | AdminError::LimitTooLarge(_) => {
                (StatusCode::BAD_REQUEST, "invalid_limit")
            }
            AdminError::InvalidBody(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            AdminError::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            AdminError::Replay(e) => replay_error(e),
            AdminError::NoDeadLetter(_)
            | AdminError::NoEvent(_)
            | AdminError::NoEventFor(_)
            | AdminError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AdminError::NoSuchDestination(_) => (StatusCode::NOT_FOUND, "unknown_destination"),
            AdminError::UnknownDestination(_) => (StatusCode::CONFLICT, "unknown_destination"),
            AdminError::InvalidConfig(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_config"),
            AdminError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            AdminError::Store(e) => {
                tracing::error!(error = %e, "admin request failed on the store");
                (StatusCode::INTERNAL_SERVER_ERROR, "store_error")
            }
            AdminError::Internal(e) => {
                tracing::error!(error = %e, "admin request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
        };
        error(status, code, self.to_string())
    }
}

/// The status and code of a replay error.
fn replay_error(e: &crate::replay::ReplayError) -> (StatusCode, &'static str) {
    use crate::replay::ReplayError as E;
    match e {
        E::NothingSelected | E::Ambiguous => (StatusCode::BAD_REQUEST, "invalid_replay"),
        E::UnknownDestination(_) => (StatusCode::CONFLICT, "unknown_destination"),
        E::UnknownEvents(_) | E::NoReplay(_) => (StatusCode::NOT_FOUND, "not_found"),
        E::NotRunning(..) => (StatusCode::CONFLICT, "not_running"),
        E::Store(e) => {
            tracing::error!(error = %e, "replay request failed on the store");
            (StatusCode::INTERNAL_SERVER_ERROR, "store_error")
        }
        E::Task(e) => {
            tracing::error!(error = %e, "replay request failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
        }
    }
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

fn list_dead(state: &AdminState, query: &BTreeMap<String, String>) -> Answer {
    let destination = query
        .get("destination")
        .map(String::as_str)
        .filter(|d| !d.is_empty());
    let limit = parse_limit(query, DEFAULT_LIST_LIMIT)?;
    let letters = state.store.dead_letters_of(destination, limit)?;
    let total = match destination {
        Some(d) => state.store.stats().snapshot().get(d).map_or(0, |x| x.dead),
        None => state.store.stats().dead(),
    };
    let list = DeadList {
        dead: letters
            .iter()
            .map(|l| DeadLetterView::new(l, None))
            .collect(),
        total,
    };
    Ok(json(StatusCode::OK, &list))
}

fn show_dead(state: &AdminState, id: &str) -> Answer {
    let id = parse_id(id, "delivery")?;
    let letter = state
        .store
        .dead_letter(&id)?
        .ok_or(AdminError::NoDeadLetter(id))?;
    let body = state.store.load_body(&letter.job.event_id)?;
    let view = DeadLetterView::new(&letter, body.as_deref().map(body_json));
    Ok(json(StatusCode::OK, &view))
}

fn destination_known(state: &AdminState, destination: &str) -> bool {
    state.config.load().destinations.contains_key(destination)
}

fn retry_one(state: &AdminState, id: &str) -> Answer {
    let id = parse_id(id, "delivery")?;
    let letter = state
        .store
        .dead_letter(&id)?
        .ok_or(AdminError::NoDeadLetter(id))?;
    if !destination_known(state, &letter.job.destination) {
        return Err(AdminError::UnknownDestination(letter.job.destination));
    }
    let job = state
        .store
        .retry_dead(&id)?
        .ok_or(AdminError::NoDeadLetter(id))?;
    state.dispatcher.wake(&job.destination);
    tracing::info!(delivery_id = %id, event_id = %job.event_id, destination = %job.destination, "dead letter retried by an operator");
    Ok(json(
        StatusCode::OK,
        &RetryResult {
            retried: vec![id.to_string()],
            ..RetryResult::default()
        },
    ))
}

/// Retries each of `ids` that is still a dead letter of a configured destination, and says
/// why it left the others alone (for the status page's selections). Runs off the async
/// threads, then wakes every worker.
pub(super) async fn retry_ids(
    state: &AdminState,
    ids: Vec<Uuid>,
) -> Result<RetryResult, AdminError> {
    let store = state.store.clone();
    let config = state.config.load_full();
    let result = tokio::task::spawn_blocking(move || -> Result<RetryResult, StoreError> {
        let mut result = RetryResult::default();
        for id in ids {
            let skip = |reason: String| Skipped {
                id: id.to_string(),
                reason,
            };
            let Some(letter) = store.dead_letter(&id)? else {
                result.skipped.push(skip(
                    "no such dead letter (retried, dropped or purged?)".into(),
                ));
                continue;
            };
            if !config.destinations.contains_key(&letter.job.destination) {
                result.skipped.push(skip(format!(
                    "destination {:?} is not in the config",
                    letter.job.destination
                )));
                continue;
            }
            match store.retry_dead(&id)? {
                Some(_) => result.retried.push(id.to_string()),
                None => result.skipped.push(skip(
                    "no such dead letter (retried, dropped or purged?)".into(),
                )),
            }
        }
        Ok(result)
    })
    .await
    .map_err(|e| AdminError::Internal(e.to_string()))??;
    retried_by_operator(state, &result, "status page");
    Ok(result)
}

/// After dead letters were put back in the queue: wakes every worker (the retried jobs are
/// due now) and logs what was done, and from where (`via`: the API or the status page).
fn retried_by_operator(state: &AdminState, result: &RetryResult, via: &'static str) {
    if let Err(e) = state.dispatcher.reconcile() {
        tracing::error!(error = %e, "could not wake the delivery workers");
    }
    tracing::info!(
        retried = result.retried.len(),
        skipped = result.skipped.len() as u64 + result.skipped_unlisted,
        via,
        "dead letters retried by an operator"
    );
}

async fn retry_all(state: &AdminState, query: &BTreeMap<String, String>) -> Answer {
    let destination = query.get("destination").cloned().filter(|d| !d.is_empty());
    let store = state.store.clone();
    let config = state.config.load_full();
    let result = tokio::task::spawn_blocking(move || -> Result<RetryResult, StoreError> {
        let mut result = RetryResult::default();
        // Destinations with dead letters (the counters, no scan), or the one asked for.
        let names: Vec<String> = match destination {
            Some(d) => vec![d],
            None => store
                .stats()
                .snapshot()
                .into_iter()
                .filter(|(_, depth)| depth.dead > 0)
                .map(|(name, _)| name)
                .collect(),
        };
        for name in names {
            if config.destinations.contains_key(&name) {
                retry_destination(&store, &name, &mut result)?;
            } else {
                skip_destination(&store, &name, &mut result)?;
            }
        }
        Ok(result)
    })
    .await
    .map_err(|e| AdminError::Internal(e.to_string()))??;
    retried_by_operator(state, &result, "api");
    Ok(json(StatusCode::OK, &result))
}

/// Requeues every dead letter of `destination`, [`RETRY_BATCH`] records at a time: each
/// batch leaves the dead letters as it is requeued, so the next read starts with the rest.
/// A job that fails again and comes back while this runs is not retried a second time.
fn retry_destination(
    store: &Store,
    destination: &str,
    result: &mut RetryResult,
) -> Result<(), StoreError> {
    let mut done = std::collections::HashSet::new();
    loop {
        // Jobs retried here that are dead again sit among the batch: read past them (up to
        // ten batches' worth; beyond that the operator retries again).
        let again = done.len().min(RETRY_BATCH * 10);
        let batch = store.dead_letters_of(Some(destination), again + RETRY_BATCH)?;
        let mut progressed = false;
        for letter in batch {
            let id = letter.job.id;
            if done.contains(&id) {
                continue;
            }
            if store.retry_dead(&id)?.is_some() {
                result.retried.push(id.to_string());
            }
            done.insert(id);
            progressed = true;
        }
        if !progressed {
            return Ok(());
        }
    }
}

/// Lists dead letters of a destination the config no longer has as skipped (retrying them
/// would only dead-letter them again): the first [`MAX_LIMIT`] by id, the rest counted.
fn skip_destination(
    store: &Store,
    destination: &str,
    result: &mut RetryResult,
) -> Result<(), StoreError> {
    let listed = store.dead_letters_of(Some(destination), MAX_LIMIT)?;
    let total = store
        .stats()
        .snapshot()
        .get(destination)
        .map_or(0, |d| d.dead);
    result.skipped_unlisted += total.saturating_sub(listed.len() as u64);
    let reason = format!("destination {destination:?} is not in the config");
    result
        .skipped
        .extend(listed.into_iter().map(|letter| Skipped {
            id: letter.job.id.to_string(),
            reason: reason.clone(),
        }));
    Ok(())
}

fn drop_dead(state: &AdminState, id: &str) -> Answer {
    let id = parse_id(id, "delivery")?;
    if !state.store.drop_dead(&id)? {
        return Err(AdminError::NoDeadLetter(id));
    }
    tracing::info!(delivery_id = %id, "dead letter dropped by an operator");
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"dropped": id.to_string()}),
    ))
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
