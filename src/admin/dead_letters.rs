//! The dead letter endpoints: list, show, drop, and retry (one, a selection, or all of a
//! destination's in batches), each retry logged as the operator's.

use std::collections::BTreeMap;

use http::StatusCode;
use uuid::Uuid;

use super::error::{AdminError, Answer};
use super::handlers::{parse_id, parse_limit, DEFAULT_LIST_LIMIT, MAX_LIMIT, RETRY_BATCH};
use super::views::{body_json, DeadLetterView, DeadList, RetryResult, Skipped};
use super::AdminState;
use crate::http_server::response::json;
use crate::queue::{Store, StoreError};

pub(super) fn list_dead(state: &AdminState, query: &BTreeMap<String, String>) -> Answer {
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

pub(super) fn show_dead(state: &AdminState, id: &str) -> Answer {
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

pub(super) fn retry_one(state: &AdminState, id: &str) -> Answer {
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

pub(super) async fn retry_all(state: &AdminState, query: &BTreeMap<String, String>) -> Answer {
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

pub(super) fn drop_dead(state: &AdminState, id: &str) -> Answer {
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
