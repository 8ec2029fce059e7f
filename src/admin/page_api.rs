//! The status page's data and actions, under `/ui/` (authorized by [`super::page`]):
//!
//! | request | answer |
//! |---|---|
//! | `GET /ui/overview` | [`super::overview::Overview`] |
//! | `GET /ui/dead?destination=&reason=&limit=` | [`DeadPage`]: dead letters with their attempts |
//! | `GET /ui/event?q=` | [`super::lookup::Lookup`]: by our event id or Mindstamp's `id` |
//! | `POST /ui/dead/retry`, `POST /ui/dead/drop` | a [`Selection`] in, what was done out |
//!
//! Shapes of its own rather than the JSON API's because the page wants more per request
//! (a dead letter with its attempts, an event with its explanation); the records are the
//! API's views.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::dead_letters::retry_ids;
use super::handlers::{parse_id, parse_limit, query_pairs, AdminError};
use super::views::{AttemptView, DeadLetterView, RetryResult, Skipped};
use super::AdminState;
use crate::http_server::response::{json, JsonResponse};
use crate::queue::{DeadLetter, StoreError};

/// Dead letters shown when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;
/// Dead letters read to filter and count by reason.
const SCAN_LIMIT: usize = 100_000;
/// Most ids one action takes.
const MAX_IDS: usize = 10_000;
/// Largest action body read.
const MAX_BODY: usize = 1024 * 1024;

/// `GET /ui/dead`.
#[derive(Debug, Clone, Serialize)]
pub struct DeadPage {
    /// Dead letters matching the filters, oldest first, up to the limit.
    pub dead: Vec<DeadEntry>,
    /// How many match the filters.
    pub matching: usize,
    /// Dead letters in all.
    pub total: u64,
    /// Dead letters per destination (for the destination filter).
    pub destinations: BTreeMap<String, u64>,
    /// Dead letters per reason among those of the destination asked for (for the reason
    /// filter).
    pub reasons: BTreeMap<&'static str, usize>,
}

/// One dead letter with its attempts.
#[derive(Debug, Clone, Serialize)]
pub struct DeadEntry {
    /// The dead letter, as `GET /dead` shows it.
    #[serde(flatten)]
    pub letter: DeadLetterView,
    /// Its reason, classified (see [`reason_class`]).
    pub reason: &'static str,
    /// Every recorded attempt, oldest first.
    pub attempt_history: Vec<AttemptView>,
}

/// Which dead letters an action is for: the ids given, or every one matching the filters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Delivery ids.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Every dead letter matching `destination` and `reason` instead.
    #[serde(default)]
    pub all: bool,
    /// With `all`: only this destination's.
    #[serde(default)]
    pub destination: Option<String>,
    /// With `all`: only those of this reason class.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Answer of `POST /ui/dead/drop`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DropResult {
    /// Delivery ids dropped.
    pub dropped: Vec<String>,
    /// Ids that were not dead letters any more.
    pub skipped: Vec<Skipped>,
}

/// The kind of failure behind a dead letter, from the reason delivery wrote (`permanent
/// failure: HTTP 410`, `gave up after 5 attempts over 1h: HTTP 500`, ...), so the page can
/// filter by it.
pub fn reason_class(reason: &str) -> &'static str {
    if reason.starts_with("permanent failure") {
        "permanent failure"
    } else if reason.starts_with("gave up after") {
        "retries exhausted"
    } else if reason.starts_with("stale:") {
        "too old (max_age)"
    } else if reason.contains("was removed from the config") {
        "destination removed"
    } else {
        "other"
    }
}

fn filter(
    letters: Vec<DeadLetter>,
    reason: Option<&str>,
) -> (Vec<DeadLetter>, BTreeMap<&'static str, usize>) {
    let mut reasons = BTreeMap::new();
    let mut kept = Vec::new();
    for letter in letters {
        let class = reason_class(&letter.reason);
        *reasons.entry(class).or_default() += 1;
        if reason.is_none_or(|r| r == class) {
            kept.push(letter);
        }
    }
    (kept, reasons)
}

fn nonempty(v: Option<&String>) -> Option<&str> {
    v.map(String::as_str).filter(|s| !s.is_empty())
}

fn dead_page(state: &AdminState, query: &BTreeMap<String, String>) -> Result<DeadPage, AdminError> {
    let destination = nonempty(query.get("destination"));
    let reason = nonempty(query.get("reason"));
    let limit = parse_limit(query, DEFAULT_LIMIT)?;
    let (letters, reasons) = filter(
        state.store.dead_letters_of(destination, SCAN_LIMIT)?,
        reason,
    );
    let matching = letters.len();
    let dead = letters
        .iter()
        .take(limit)
        .map(|l| -> Result<DeadEntry, StoreError> {
            let attempts = state.store.attempts(&l.job.id)?;
            Ok(DeadEntry {
                letter: DeadLetterView::new(l, None),
                reason: reason_class(&l.reason),
                attempt_history: attempts.iter().map(AttemptView::from).collect(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let stats = state.store.stats();
    Ok(DeadPage {
        dead,
        matching,
        total: stats.dead(),
        destinations: stats
            .snapshot()
            .into_iter()
            .filter(|(_, d)| d.dead > 0)
            .map(|(name, d)| (name, d.dead))
            .collect(),
        reasons,
    })
}

async fn read_selection(req: Request<Incoming>) -> Result<Selection, AdminError> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| AdminError::InvalidBody(format!("could not read the body: {e}")))?
        .to_bytes();
    let selection: Selection = serde_json::from_slice(&body).map_err(|e| {
        AdminError::InvalidBody(format!(
            "expected {{\"ids\": [...]}} or {{\"all\": true, \"destination\": ..., \"reason\": ...}}: {e}"
        ))
    })?;
    // Exactly one of the two: ids, or all.
    let has_ids = !selection.ids.is_empty();
    if selection.all == has_ids {
        return Err(AdminError::InvalidBody(
            "give either ids or \"all\": true (with optional destination and reason)".into(),
        ));
    }
    if selection.ids.len() > MAX_IDS {
        return Err(AdminError::InvalidBody(format!(
            "at most {MAX_IDS} ids at once; use \"all\" with filters"
        )));
    }
    Ok(selection)
}

/// The delivery ids a selection names.
async fn selected_ids(state: &AdminState, s: Selection) -> Result<Vec<Uuid>, AdminError> {
    if !s.all {
        return s.ids.iter().map(|id| parse_id(id, "delivery")).collect();
    }
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || -> Result<Vec<Uuid>, StoreError> {
        let destination = s.destination.as_deref().filter(|d| !d.is_empty());
        let reason = s.reason.as_deref().filter(|r| !r.is_empty());
        // The same scan the page counted and showed its matches from.
        let (letters, _) = filter(store.dead_letters_of(destination, SCAN_LIMIT)?, reason);
        Ok(letters.iter().map(|l| l.job.id).collect())
    })
    .await
    .map_err(|e| AdminError::Internal(e.to_string()))?
    .map_err(AdminError::from)
}

async fn retry_selected(
    state: &AdminState,
    req: Request<Incoming>,
) -> Result<RetryResult, AdminError> {
    let selection = read_selection(req).await?;
    let ids = selected_ids(state, selection).await?;
    retry_ids(state, ids).await
}

async fn drop_selected(
    state: &AdminState,
    req: Request<Incoming>,
) -> Result<DropResult, AdminError> {
    let selection = read_selection(req).await?;
    let ids = selected_ids(state, selection).await?;
    let store = state.store.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<DropResult, StoreError> {
        let mut result = DropResult::default();
        for id in ids {
            if store.drop_dead(&id)? {
                result.dropped.push(id.to_string());
            } else {
                result.skipped.push(Skipped {
                    id: id.to_string(),
                    reason: "no such dead letter (retried, dropped or purged?)".into(),
                });
            }
        }
        Ok(result)
    })
    .await
    .map_err(|e| AdminError::Internal(e.to_string()))??;
    tracing::info!(
        dropped = result.dropped.len(),
        skipped = result.skipped.len(),
        "dead letters dropped by an operator on the status page"
    );
    Ok(result)
}

fn ok<T: Serialize>(value: &T) -> JsonResponse {
    json(StatusCode::OK, value)
}

/// Runs `read` (store scans of up to thousands of records) off the async threads.
async fn blocking<T: Serialize + Send + 'static>(
    state: &Arc<AdminState>,
    read: impl FnOnce(&AdminState) -> Result<T, AdminError> + Send + 'static,
) -> Result<JsonResponse, AdminError> {
    let state = state.clone();
    let value = tokio::task::spawn_blocking(move || read(&state))
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))??;
    Ok(ok(&value))
}

/// Answers one authorized `/ui/` request.
pub async fn route(state: &Arc<AdminState>, req: Request<Incoming>) -> JsonResponse {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = query_pairs(req.uri().query());
    let result = match (&method, path.as_str()) {
        (&Method::GET, "/ui/overview") => {
            blocking(state, |s| {
                super::overview::build(s).map_err(AdminError::from)
            })
            .await
        }
        (&Method::GET, "/ui/dead") => blocking(state, move |s| dead_page(s, &query)).await,
        (&Method::GET, "/ui/event") => {
            let q = query.get("q").cloned().unwrap_or_default();
            blocking(state, move |s| super::lookup::lookup(s, &q)).await
        }
        (&Method::POST, "/ui/dead/retry") => retry_selected(state, req).await.map(|r| ok(&r)),
        (&Method::POST, "/ui/dead/drop") => drop_selected(state, req).await.map(|r| ok(&r)),
        (_, "/ui/overview" | "/ui/dead" | "/ui/event" | "/ui/dead/retry" | "/ui/dead/drop") => {
            Err(AdminError::MethodNotAllowed { method, path })
        }
        _ => Err(AdminError::NotFound(path)),
    };
    result.unwrap_or_else(AdminError::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_classified_from_what_delivery_writes() {
        for (reason, class) in [
            ("permanent failure: HTTP 410", "permanent failure"),
            (
                "gave up after 5 attempts over 1h: HTTP 500",
                "retries exhausted",
            ),
            (
                "stale: the event is 2s old, older than max_age 1s",
                "too old (max_age)",
            ),
            (
                "destination \"crm\" was removed from the config",
                "destination removed",
            ),
            ("the event's body is missing from the store", "other"),
        ] {
            assert_eq!(reason_class(reason), class, "{reason}");
        }
    }
}
