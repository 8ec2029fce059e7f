//! hookrouter receives Mindstamp webhooks, checks that they are authentic, matches them
//! against the routes in `routes.yaml` and forwards each to its destinations through a
//! durable retry queue, so that nothing it acknowledged is ever lost.
//!
//! The modules, in the order a webhook passes through them:
//!
//! 1. [`config`]: `routes.yaml` parsed, expanded and validated into a [`config::Config`].
//! 2. [`ingress`]: the hyper listener and the tower service that answers each request.
//! 3. [`verify`]: the `X-KEY` check; only it produces a [`verify::Verified`] request.
//! 4. [`route`]: pure matching of the payload against the compiled rules.
//! 5. [`queue`]: the ingest journal, the fast lane and sled's retry queue, with the group
//!    committer; a request is answered 200 only after its event is in the journal and
//!    `fdatasync`ed.
//! 6. [`deliver`]: one worker per destination sends due jobs and records each outcome,
//!    with the credentials of [`auth`] (bearer, basic, OAuth2 tokens kept fresh).
//! 7. [`retry`]: the pure backoff policy that turns a failure into the next attempt time or
//!    a dead letter.
//!
//! [`echo`] is the little receiver operators use to try routes locally; [`inspect`] holds
//! `check` and `route`, the offline views of a config; [`init`] writes a production
//! skeleton. [`cli_args`] is the command line itself, which `build.rs` also compiles to
//! generate the shell completions and man pages.
//!
//! Operating it: [`admin`] (the admin API, the status page and the CLI), [`replay`]
//! (recorded events sent again through today's rules), [`shadow`] (a candidate config
//! judged against recorded traffic), [`metrics`]
//! (Prometheus), [`notify`] (systemd readiness and watchdog), and
//! [`queue::housekeeping`] (de-duplication and retention).
#![forbid(unsafe_code)]

pub mod admin;
pub mod alert;
pub mod auth;
pub mod cli_args;
pub mod config;
pub mod deliver;
pub mod echo;
pub mod event;
pub mod health;
pub mod ingress;
pub mod init;
pub mod inspect;
pub mod lint;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod payloads;
pub mod queue;
pub mod replay;
pub mod retry;
pub mod route;
pub mod send;
pub mod shadow;
pub mod startup;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use config::{Config, ConfigError};
use deliver::{DispatchError, Dispatcher};
use health::HealthBoard;
use ingress::{IngressState, ListenerSettings};
use metrics::Metrics;
use queue::commit::{Committer, CommitterThread};
use queue::{Store, StoreError, StoreOptions};

/// The config in force, swapped whole by a reload; readers take a snapshot per request.
pub type SharedConfig = Arc<ArcSwap<Config>>;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The data directory cannot be used (missing and not creatable, not writable).
    #[error("{0}")]
    DataDir(String),
    /// The store could not be opened (another hookrouter holds it, or sled failed).
    #[error("{}", startup::store_error(std::path::Path::new(path), error))]
    Store {
        /// The data directory.
        path: String,
        /// What the store said.
        error: StoreError,
    },
    /// A listener could not be bound.
    #[error("{}", startup::bind_error(setting, *addr, error))]
    Bind {
        /// `server.listen` or `server.admin_listen`.
        setting: &'static str,
        /// The configured address.
        addr: SocketAddr,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The committer thread could not be started.
    #[error("starting the committer thread: {0}")]
    Thread(std::io::Error),
    /// The delivery side could not start.
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    /// The final flush failed.
    #[error("final flush: {0}")]
    Flush(StoreError),
    /// The saved replay operations could not be read.
    #[error("reading the replay operations: {0}")]
    Replays(String),
    /// The store hit an I/O error that sled does not recover from without a restart.
    #[error("the store failed (see the error logged before); restart hookrouter once the disk has room again: nothing acknowledged is lost")]
    StoreFailed,
    /// Files of the store were deleted or replaced under the running daemon.
    #[error("the data directory was deleted or replaced while hookrouter was running (see the error logged before); restore it from a backup, or move what is left aside to start empty, then start hookrouter again")]
    StoreVanished,
}

impl RunError {
    /// The exit code this error calls for, when it is not the generic failure: 74
    /// (EX_IOERR) for a data directory that vanished under the daemon, 65 (EX_DATAERR) for
    /// a store found damaged at start. The systemd unit does not restart on either: a
    /// restart cannot repair them, and one on an empty directory would start afresh.
    pub fn exit_code(&self) -> Option<u8> {
        match self {
            RunError::StoreVanished => Some(74),
            RunError::Store {
                error: StoreError::Damaged { .. },
                ..
            } => Some(65),
            _ => None,
        }
    }
}

/// A running daemon: its address, and the handles to reload and stop it.
pub struct Running {
    /// The address the webhook listener is bound to (useful with port 0).
    pub addr: SocketAddr,
    /// The address the admin API is bound to.
    pub admin_addr: SocketAddr,
    config: SharedConfig,
    reloader: Reloader,
    dispatcher: Dispatcher,
    store: Store,
    shutdown: CancellationToken,
    /// Every task that holds the store (listeners, their connections, the purge), so
    /// `wait` can return only once sled's lock on the data directory is released.
    tasks: TaskTracker,
    committer: CommitterThread,
    replays: replay::Replays,
}

/// Opens the store, starts delivery and binds the listener. Returns once the daemon is
/// ready to accept webhooks.
pub async fn start(config: Config) -> Result<Running, RunError> {
    log_warnings(&config);
    let server = config.server.clone();
    let options = StoreOptions {
        retention: server.retention,
        dead_retention: server.dead_retention,
        dedupe_window: server.dedupe_window,
        ..StoreOptions::new(server.store_cache_bytes)
    };
    startup::check_data_dir(&server.data_dir).map_err(RunError::DataDir)?;
    let store = Store::open(&server.data_dir, options).map_err(|error| RunError::Store {
        path: server.data_dir.display().to_string(),
        error,
    })?;
    let shutdown = CancellationToken::new();
    // A store that can no longer write stops the daemon: its supervisor restarts it, and
    // sled reopens a working store once the cause is gone (see `Store::failed`).
    tokio::spawn({
        let (failed, shutdown) = (store.failed(), shutdown.clone());
        async move {
            tokio::select! {
                _ = failed.cancelled() => {
                    tracing::error!("stopping: the store cannot persist webhooks any more");
                    shutdown.cancel();
                }
                _ = shutdown.cancelled() => {}
            }
        }
    });
    let config: SharedConfig = Arc::new(ArcSwap::from_pointee(config));
    let metrics = Arc::new(Metrics::new());
    let health =
        HealthBoard::open(store.clone(), queue::now_ms()).map_err(|error| RunError::Store {
            path: server.data_dir.display().to_string(),
            error,
        })?;
    let (alerts, alert_inbox) = alert::channel();
    health.on_change({
        let alerts = alerts.clone();
        move |event| alerts.health(event)
    });
    metrics.preset(config.load().destinations.keys().map(String::as_str));
    let dispatcher = Dispatcher::new(
        store.clone(),
        config.clone(),
        shutdown.child_token(),
        metrics.clone(),
        health.clone(),
        alerts,
    )?;
    dispatcher.reconcile()?;
    let (committer, committer_thread) =
        Committer::start(store.clone()).map_err(RunError::Thread)?;
    let bind_error = |setting, addr| {
        move |error| RunError::Bind {
            setting,
            addr,
            error,
        }
    };
    let listener = TcpListener::bind(server.listen)
        .await
        .map_err(bind_error("server.listen", server.listen))?;
    let addr = listener
        .local_addr()
        .map_err(bind_error("server.listen", server.listen))?;
    let admin_listener = TcpListener::bind(server.admin_listen)
        .await
        .map_err(bind_error("server.admin_listen", server.admin_listen))?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(bind_error("server.admin_listen", server.admin_listen))?;
    let recent_ids = Arc::new(ingress::recent::RecentIds::default());
    let activity = Arc::new(alert::silence::Activity::default());
    let alert_task = alert::run(
        alert_inbox,
        alert::AlertContext {
            config: config.clone(),
            committer: committer.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            activity: activity.clone(),
            wake: Arc::new({
                let dispatcher = dispatcher.clone();
                move |destination: &str| dispatcher.wake(destination)
            }),
        },
        shutdown.child_token(),
    );
    let state = Arc::new(IngressState {
        config: config.clone(),
        activity,
        committer,
        dispatcher: dispatcher.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        recent_ids: recent_ids.clone(),
        bodies: ingress::body::Budget::new(server.max_body_bytes),
    });
    let reloader = Reloader {
        config: config.clone(),
        dispatcher: dispatcher.clone(),
        store: store.clone(),
        history: Arc::new(std::sync::Mutex::new(ReloadHistory {
            loaded_at_ms: queue::now_ms(),
            last: None,
        })),
    };
    // Replays still running when the daemon stopped go on from where they were.
    let replays = replay::Replays::start(
        store.clone(),
        config.clone(),
        dispatcher.clone(),
        shutdown.child_token(),
    )
    .map_err(|e| RunError::Replays(e.to_string()))?;
    let admin_state = Arc::new(admin::AdminState {
        store: store.clone(),
        config: config.clone(),
        dispatcher: dispatcher.clone(),
        metrics,
        health,
        reloader: reloader.clone(),
        recent_ids,
        replays: replays.clone(),
    });
    let tasks = TaskTracker::new();
    // With the listeners: on shutdown it sends the digests still open before the
    // committer stops.
    tasks.spawn(alert_task);
    tasks.spawn(admin::serve(
        admin_listener,
        admin_state,
        shutdown.child_token(),
        tasks.clone(),
    ));
    let windows = config.clone();
    tasks.spawn(queue::housekeeping::run(
        store.clone(),
        move || {
            let s = &windows.load().server;
            queue::housekeeping::interval(&[s.retention, s.dead_retention, s.dedupe_window])
        },
        shutdown.child_token(),
    ));
    notify::spawn_watchdog(dispatcher.heartbeats(), shutdown.child_token());
    let settings = ListenerSettings {
        header_read_timeout: server.header_read_timeout,
        max_connections: server.max_connections,
        shutdown_grace: server.shutdown_grace,
    };
    tasks.spawn(ingress::serve(
        listener,
        state,
        settings,
        shutdown.child_token(),
        tasks.clone(),
    ));
    tracing::info!(%addr, %admin_addr, data_dir = %server.data_dir.display(), pending = store.pending_count(), "hookrouter is ready");
    notify::ready();
    Ok(Running {
        addr,
        admin_addr,
        config,
        reloader,
        dispatcher,
        store,
        shutdown,
        tasks,
        committer: committer_thread,
        replays,
    })
}

/// What a reload changed, for the one log line an operator reads.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Route names added, removed and changed.
    pub routes: (Vec<String>, Vec<String>, Vec<String>),
    /// Destination names added, removed and changed.
    pub destinations: (Vec<String>, Vec<String>, Vec<String>),
}

impl Running {
    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The store (tests and admin tools read it).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Re-reads the config file; see [`Reloader::reload`].
    pub fn reload(&self) -> Result<ReloadSummary, ConfigError> {
        self.reloader.reload()
    }

    /// A token that stops the daemon when cancelled (signal handlers hold one).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, lets requests and deliveries in flight finish within the grace
    /// period, flushes the store and returns.
    pub async fn stop(self) -> Result<(), RunError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the shutdown token is cancelled, then stops as [`Running::stop`] does.
    pub async fn wait(self) -> Result<(), RunError> {
        self.shutdown.cancelled().await;
        notify::stopping();
        let grace = self.config.load().server.shutdown_grace;
        // The listeners stop accepting at once and give open connections the grace period.
        self.tasks.close();
        let listeners = tokio::time::timeout(grace + Duration::from_secs(1), self.tasks.wait());
        if listeners.await.is_err() {
            tracing::warn!("connections still open after the grace period were abandoned");
        }
        self.dispatcher.drain(grace).await;
        // A replay stops between chunks; its record says where to go on at the next start.
        self.replays.wait().await;
        let committer = self.committer;
        // Every ingress sender is gone once ingress has stopped, so the thread ends after
        // its last batch; if a stuck connection still holds one, do not wait forever.
        let joined = tokio::task::spawn_blocking(move || committer.join());
        let _ = tokio::time::timeout(grace, joined).await;
        if self.store.failed().is_cancelled() {
            if self.store.vanished() {
                return Err(RunError::StoreVanished);
            }
            return Err(RunError::StoreFailed);
        }
        self.store.close().map_err(RunError::Flush)?;
        tracing::info!(pending = self.store.pending_count(), "hookrouter stopped");
        Ok(())
    }
}

/// Reloads the config from its file; shared by SIGHUP (in `main`) and `POST /reload`.
#[derive(Clone)]
pub struct Reloader {
    config: SharedConfig,
    dispatcher: Dispatcher,
    store: Store,
    history: Arc<std::sync::Mutex<ReloadHistory>>,
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

impl Reloader {
    /// Re-reads the config file; on success swaps it in atomically (requests in flight keep
    /// the rules they started with) and lets every worker pick up its destination's new
    /// definition. On failure the old config stays. systemd hears RELOADING=1 before and
    /// READY=1 after, either way.
    ///
    /// The listen addresses and the data directory are read at start only; changing them
    /// needs a restart.
    pub fn reload(&self) -> Result<ReloadSummary, ConfigError> {
        notify::reloading();
        let result = self.swap();
        notify::ready();
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
        if let Err(e) = self.dispatcher.reconcile() {
            tracing::error!(error = %e, "reloaded, but could not start workers for new destinations");
        }
        Ok(summary)
    }
}

/// Logs what the config allows but should not (the development key), at start and after
/// every reload, so the journal says so whenever such a config comes into force.
fn log_warnings(config: &Config) {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
}

fn diff_names<T>(
    old: impl Iterator<Item = (String, T)>,
    new: impl Iterator<Item = (String, T)>,
    same: impl Fn(&T, &T) -> bool,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let old: std::collections::BTreeMap<String, T> = old.collect();
    let new: std::collections::BTreeMap<String, T> = new.collect();
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
    (added, removed, changed)
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
