//! The config in force and its reload: the [`SharedConfig`] every stage reads a snapshot
//! of, and the [`Reloader`] that swaps it whole, shared by SIGHUP (in `main`) and
//! `POST /reload`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::{Config, ConfigError};
use crate::deliver::Dispatcher;
use crate::queue::{self, Store};

/// The config in force, swapped whole by a reload; readers take a snapshot per request.
pub type SharedConfig = Arc<ArcSwap<Config>>;

/// Reloads the config from its file; shared by SIGHUP (in `main`) and `POST /reload`.
#[derive(Clone)]
pub struct Reloader {
    config: SharedConfig,
    dispatcher: Dispatcher,
    store: Store,
    history: Arc<Mutex<ReloadHistory>>,
}

/// When the config in force was loaded and how the last reload went, for the status page
/// (a reload by SIGHUP leaves only a log line otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadHistory {
    /// When the daemon first loaded its config (Unix ms).
    pub loaded_at_ms: u64,
    /// The last reload attempted, if any.
    pub last: Option<LastReload>,
}

/// One reload attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastReload {
    /// When it ran (Unix ms).
    pub at_ms: u64,
    /// `None` when it applied; the problems found when it was refused.
    pub error: Option<String>,
}

/// What a reload changed, for the one log line an operator reads and the `POST /reload`
/// answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Routes, by name.
    pub routes: NameChanges,
    /// Destinations, by name.
    pub destinations: NameChanges,
}

/// The names added, removed and changed between two configs, each list sorted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NameChanges {
    /// In the new config only.
    pub added: Vec<String>,
    /// In the old config only.
    pub removed: Vec<String>,
    /// In both, defined differently.
    pub changed: Vec<String>,
}

impl Reloader {
    /// A reloader of `config` that hands new destinations to `dispatcher` and the new
    /// retention and de-duplication windows to `store`; the config counts as loaded now.
    pub fn new(config: SharedConfig, dispatcher: Dispatcher, store: Store) -> Reloader {
        Reloader {
            config,
            dispatcher,
            store,
            history: Arc::new(Mutex::new(ReloadHistory {
                loaded_at_ms: queue::now_ms(),
                last: None,
            })),
        }
    }

    /// Re-reads the config file; on success swaps it in atomically (requests in flight keep
    /// the rules they started with) and lets every worker pick up its destination's new
    /// definition. On failure the old config stays. systemd hears RELOADING=1 before and
    /// READY=1 after, either way.
    ///
    /// The listen addresses and the data directory are read at start only; changing them
    /// needs a restart.
    pub fn reload(&self) -> Result<ReloadSummary, ConfigError> {
        crate::notify::reloading();
        let result = self.swap();
        crate::notify::ready();
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.last = Some(LastReload {
            at_ms: queue::now_ms(),
            error: result.as_ref().err().map(ToString::to_string),
        });
        result
    }

    /// When the config was loaded and how the last reload went.
    pub fn history(&self) -> ReloadHistory {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn swap(&self) -> Result<ReloadSummary, ConfigError> {
        let current = self.config.load_full();
        let next = Config::load(&current.source)?;
        log_warnings(&next);
        let summary = summarize(&current, &next);
        self.store
            .set_retention(next.server.retention, next.server.dead_retention);
        self.store.set_dedupe_window(next.server.dedupe_window);
        self.config.store(Arc::new(next));
        self.dispatcher.release_credential_holds();
        if let Err(e) = self.dispatcher.reconcile() {
            tracing::error!(error = %e, "reloaded, but could not start workers for new destinations");
        }
        Ok(summary)
    }
}

/// Logs what the config allows but should not (the development key), at start and after
/// every reload, so the journal says so whenever such a config comes into force.
pub(crate) fn log_warnings(config: &Config) {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
}

/// The names of `old` and `new`, compared by what `same` says of their definitions.
fn diff_names<T>(
    old: impl Iterator<Item = (String, T)>,
    new: impl Iterator<Item = (String, T)>,
    same: impl Fn(&T, &T) -> bool,
) -> NameChanges {
    let old: BTreeMap<String, T> = old.collect();
    let new: BTreeMap<String, T> = new.collect();
    let added = new
        .keys()
        .filter(|k| !old.contains_key(*k))
        .cloned()
        .collect();
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    let changed = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_some_and(|o| !same(o, v)))
        .map(|(k, _)| k.clone())
        .collect();
    NameChanges {
        added,
        removed,
        changed,
    }
}

fn summarize(old: &Config, new: &Config) -> ReloadSummary {
    let routes = |c: &Config| {
        c.rules
            .routes()
            .iter()
            .map(|r| (r.name.clone(), format!("{r:?}")))
            .collect::<Vec<_>>()
    };
    let dests = |c: &Config| {
        c.destinations
            .iter()
            .map(|(k, d)| (k.clone(), d.fingerprint()))
            .collect::<Vec<_>>()
    };
    ReloadSummary {
        routes: diff_names(routes(old).into_iter(), routes(new).into_iter(), |a, b| {
            a == b
        }),
        destinations: diff_names(dests(old).into_iter(), dests(new).into_iter(), |a, b| {
            a == b
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[(&str, u8)]) -> impl Iterator<Item = (String, u8)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), *v))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn names_are_sorted_into_added_removed_and_changed() {
        let changes = diff_names(
            names(&[("kept", 1), ("gone", 1), ("edited", 1)]),
            names(&[("new", 1), ("kept", 1), ("edited", 2)]),
            |a, b| a == b,
        );
        assert_eq!(
            changes,
            NameChanges {
                added: vec!["new".into()],
                removed: vec!["gone".into()],
                changed: vec!["edited".into()],
            }
        );
    }
}
