//! Mindstamp's own `id` of recently accepted events, mapped to the event ids we gave them,
//! so the status page can find an event by the id an operator sees in Mindstamp.
//!
//! The store is keyed by our event id only (its de-duplication digest also covers
//! `updated_at`, so it cannot answer "which events had this `id`"). This index is memory
//! only and bounded: it knows the last [`CAPACITY`] events accepted since the daemon
//! started; the page also searches dead letters, which matter most and outlive restarts.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::Value as Json;
use uuid::Uuid;

/// Events remembered (about 100 bytes each).
pub const CAPACITY: usize = 50_000;
/// Longest `id` remembered; a longer one is not an id Mindstamp sends.
const MAX_ID_LEN: usize = 200;

/// The index; shared by ingress (which records) and the admin page (which looks up).
#[derive(Debug, Default)]
pub struct RecentIds {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Each id's events, oldest first (so the one to forget is always at the front).
    by_id: HashMap<String, VecDeque<Uuid>>,
    /// Insertion order, to forget the oldest first.
    order: VecDeque<(String, Uuid)>,
}

/// A payload's `id` as text: a string as is, a number as written; `None` for anything else.
pub fn mindstamp_id(payload: &Json) -> Option<String> {
    let id = match payload.get("id")? {
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        _ => return None,
    };
    (!id.is_empty() && id.len() <= MAX_ID_LEN).then_some(id)
}

impl RecentIds {
    /// Remembers that the event with Mindstamp `id` was accepted as `event_id`.
    pub fn record(&self, id: String, event_id: Uuid) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.order.len() >= CAPACITY {
            if let Some((old, old_event)) = inner.order.pop_front() {
                if let Some(events) = inner.by_id.get_mut(&old) {
                    if events.front() == Some(&old_event) {
                        events.pop_front();
                    }
                    if events.is_empty() {
                        inner.by_id.remove(&old);
                    }
                }
            }
        }
        inner
            .by_id
            .entry(id.clone())
            .or_default()
            .push_back(event_id);
        inner.order.push_back((id, event_id));
    }

    /// Our event ids for Mindstamp `id`, oldest first.
    pub fn lookup(&self, id: &str) -> Vec<Uuid> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .by_id
            .get(id)
            .map(|events| events.iter().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_text_and_the_oldest_are_forgotten_first() {
        assert_eq!(
            mindstamp_id(&serde_json::json!({"id": 42})).as_deref(),
            Some("42")
        );
        assert_eq!(
            mindstamp_id(&serde_json::json!({"id": "v-1"})).as_deref(),
            Some("v-1")
        );
        assert_eq!(mindstamp_id(&serde_json::json!({"id": null})), None);
        assert_eq!(mindstamp_id(&serde_json::json!({"id": ""})), None);
        assert_eq!(mindstamp_id(&serde_json::json!({})), None);

        let index = RecentIds::default();
        let first = Uuid::now_v7();
        index.record("v-1".into(), first);
        let second = Uuid::now_v7();
        index.record("v-1".into(), second);
        assert_eq!(index.lookup("v-1"), [first, second]);
        for _ in 0..CAPACITY - 1 {
            index.record("other".into(), Uuid::now_v7());
        }
        assert_eq!(index.lookup("v-1"), [second]);
        index.record("other".into(), Uuid::now_v7());
        assert!(index.lookup("v-1").is_empty());
        assert_eq!(index.lookup("other").len(), CAPACITY);
    }
}
