//! The status page's event lookup: by our event id or by Mindstamp's own `id`, with the
//! event's jobs and attempts and the routing explanation `route --explain` gives.

use serde::Serialize;
use uuid::Uuid;

use super::handlers::AdminError;
use super::views::{EventView, JobView};
use super::AdminState;
use crate::ingress::recent::mindstamp_id;
use crate::inspect::{render_report, route_report};
use crate::queue::catalog::EventQuery;

/// Dead letters whose bodies are read when an id is not in the memory of recent events
/// (after a restart, say); each costs a read from the journal.
const DEAD_BODY_SCAN: usize = 2_000;
/// Events of one Mindstamp `id` listed when the journal is searched for it.
const JOURNAL_MATCHES: usize = 50;
/// Longest query taken.
const MAX_QUERY_LEN: usize = 200;

/// `GET /ui/event?q=...`.
#[derive(Debug, Clone, Serialize)]
pub struct Lookup {
    /// What was looked for.
    pub query: String,
    /// How it was found: `event_id` or `mindstamp_id`.
    pub matched_by: &'static str,
    /// Every event found, newest first (Mindstamp sends a view again as it is updated).
    pub matches: Vec<String>,
    /// The newest one, in full.
    pub event: EventPage,
}

/// One event in full.
#[derive(Debug, Clone, Serialize)]
pub struct EventPage {
    /// The event, its body, its jobs with every attempt.
    #[serde(flatten)]
    pub event: EventView,
    /// Which routes match and why, as `hookrouter route --explain` prints it, under the
    /// config in force now (it may have changed since the event arrived: `routes` says
    /// what matched then).
    pub explanation: String,
}

/// Events whose Mindstamp `id` is `id`: those accepted since start (from memory) and those
/// still dead letters; when neither knows it (an event from before a restart, or from
/// more than [`crate::ingress::recent::CAPACITY`] events ago), the journal's events kept
/// for `server.retention` are searched, newest first, as `event list --mindstamp-id` does.
fn by_mindstamp_id(state: &AdminState, id: &str) -> Result<Vec<Uuid>, AdminError> {
    let mut found = state.recent_ids.lookup(id);
    let mut seen = std::collections::HashSet::new();
    for letter in state.store.dead_letters_of(None, DEAD_BODY_SCAN)? {
        let event_id = letter.job.event_id;
        if found.contains(&event_id) || !seen.insert(event_id) {
            continue;
        }
        let Some(body) = state.store.load_body(&event_id)? else {
            continue;
        };
        let matches = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| mindstamp_id(&v))
            .is_some_and(|m| m == id);
        if matches {
            found.push(event_id);
        }
    }
    if found.is_empty() {
        let query = EventQuery {
            mindstamp_id: Some(id.to_string()),
            ..EventQuery::default()
        };
        let (events, _more) = state.store.list_events(&query, None, JOURNAL_MATCHES)?;
        found.extend(events.iter().map(|e| e.header.id));
    }
    Ok(found)
}

/// The event of `event_id` in full, if the store still has it.
fn event_page(state: &AdminState, event_id: &Uuid) -> Result<Option<EventPage>, AdminError> {
    let Some((event, body, story)) = state.store.event_story(event_id)? else {
        return Ok(None);
    };
    let jobs = story
        .iter()
        .map(|(job_id, status, attempts)| JobView::new(job_id, status.as_ref(), attempts))
        .collect();
    let explanation = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(payload) => {
            let config = state.config.load();
            render_report(&route_report(&config, event.kind, &payload, true))
        }
        Err(e) => format!("the stored body is not JSON ({e}); nothing to explain"),
    };
    Ok(Some(EventPage {
        event: EventView::new(&event, Some(&body), jobs),
        explanation,
    }))
}

/// Looks `query` up as our event id, then as Mindstamp's `id` (which may be a UUID too).
pub fn lookup(state: &AdminState, query: &str) -> Result<Lookup, AdminError> {
    let query = query.trim();
    if query.is_empty() || query.len() > MAX_QUERY_LEN {
        return Err(AdminError::InvalidBody(format!(
            "give an event id or a Mindstamp id (1 to {MAX_QUERY_LEN} characters)"
        )));
    }
    if let Ok(id) = Uuid::parse_str(query) {
        if let Some(event) = event_page(state, &id)? {
            return Ok(Lookup {
                query: query.to_string(),
                matched_by: "event_id",
                matches: vec![id.to_string()],
                event,
            });
        }
    }
    let mut ids = by_mindstamp_id(state, query)?;
    // Event ids are UUID v7: their order is the order they were accepted in.
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.dedup();
    let mut matches = Vec::new();
    let mut newest = None;
    for id in ids {
        if newest.is_none() {
            newest = event_page(state, &id)?;
            if newest.is_none() {
                continue; // purged after retention
            }
        }
        matches.push(id.to_string());
    }
    let event = newest.ok_or_else(|| AdminError::NoEventFor(query.to_string()))?;
    Ok(Lookup {
        query: query.to_string(),
        matched_by: "mindstamp_id",
        matches,
        event,
    })
}
