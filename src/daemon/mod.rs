//! The daemon's life: [`start`] opens the store, starts delivery, binds both listeners and
//! says it is ready; [`Running::wait`] stops it in the order that loses nothing (listeners,
//! deliveries within the grace period, replays, the committer, then the store's final
//! flush).

mod error;

pub use error::RunError;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alert::{self, AlertInbox};
use crate::config::{Config, ConfigError, ServerSettings};
use crate::deliver::Dispatcher;
use crate::health::HealthBoard;
use crate::http_server::ListenerSettings;
use crate::ingress::{self, IngressState};
use crate::metrics::Metrics;
use crate::queue::commit::{Committer, CommitterThread};
use crate::queue::{self, Store, StoreOptions};
use crate::reload::{self, ReloadSummary, Reloader, SharedConfig};
use crate::{admin, notify, replay, startup};

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

/// The delivery side, started before any listener: what the listeners hand work to.
struct Delivery {
    metrics: Arc<Metrics>,
    health: HealthBoard,
    dispatcher: Dispatcher,
    alerts: AlertInbox,
}

/// Opens the store, starts delivery and binds the listener. Returns once the daemon is
/// ready to accept webhooks.
pub async fn start(config: Config) -> Result<Running, RunError> {
    reload::log_warnings(&config);
    let server = config.server.clone();
    let store = open_store(&server)?;
    let shutdown = CancellationToken::new();
    stop_when_the_store_fails(&store, &shutdown);
    let config: SharedConfig = Arc::new(ArcSwap::from_pointee(config));
    let delivery = start_delivery(&server, &store, &config, &shutdown)?;
    let (committer, committer_thread) =
        Committer::start(store.clone()).map_err(RunError::Thread)?;
    let (listener, addr) = bind("server.listen", server.listen).await?;
    let (admin_listener, admin_addr) = bind("server.admin_listen", server.admin_listen).await?;
    let Delivery {
        metrics,
        health,
        dispatcher,
        alerts,
    } = delivery;
    let parts = Parts {
        config: config.clone(),
        store: store.clone(),
        metrics,
        dispatcher: dispatcher.clone(),
        committer,
        recent_ids: Arc::new(ingress::recent::RecentIds::default()),
        activity: Arc::new(alert::silence::Activity::default()),
    };
    let alert_task = parts.alerts(alerts, shutdown.child_token());
    let ingress_state = parts.ingress(&server);
    let reloader = Reloader::new(config.clone(), dispatcher.clone(), store.clone());
    // Replays still running when the daemon stopped go on from where they were.
    let replays = replay::Replays::start(
        store.clone(),
        config.clone(),
        dispatcher.clone(),
        shutdown.child_token(),
    )
    .map_err(|e| RunError::Replays(e.to_string()))?;
    let admin_state = parts.admin(health, reloader.clone(), replays.clone());
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
    spawn_housekeeping(&tasks, &store, &config, &shutdown);
    notify::spawn_watchdog(dispatcher.heartbeats(), shutdown.child_token());
    tasks.spawn(ingress::serve(
        listener,
        ingress_state,
        listener_settings(&server),
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

/// What the listeners and the alerts share, once delivery and the committer run.
struct Parts {
    config: SharedConfig,
    store: Store,
    metrics: Arc<Metrics>,
    dispatcher: Dispatcher,
    committer: Committer,
    /// Mindstamp ids of recent events, filled by ingress, searched by the admin lookup.
    recent_ids: Arc<ingress::recent::RecentIds>,
    /// Route and kind match times, fed by ingress, read by the alerts' traffic check.
    activity: Arc<alert::silence::Activity>,
}

impl Parts {
    /// The alert task (not spawned yet): health changes, dead letters and the traffic
    /// check become alert events, committed as ingress commits webhooks.
    fn alerts(
        &self,
        inbox: AlertInbox,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> {
        let dispatcher = self.dispatcher.clone();
        alert::run(
            inbox,
            alert::AlertContext {
                config: self.config.clone(),
                committer: self.committer.clone(),
                store: self.store.clone(),
                metrics: self.metrics.clone(),
                activity: self.activity.clone(),
                wake: Arc::new(move |destination: &str| dispatcher.wake(destination)),
            },
            shutdown,
        )
    }

    /// What the webhook handler answers with.
    fn ingress(&self, server: &ServerSettings) -> Arc<IngressState> {
        Arc::new(IngressState {
            config: self.config.clone(),
            activity: self.activity.clone(),
            committer: self.committer.clone(),
            dispatcher: self.dispatcher.clone(),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            recent_ids: self.recent_ids.clone(),
            bodies: ingress::body::Budget::new(server.max_body_bytes),
        })
    }

    /// What the admin API and the status page answer with.
    fn admin(
        self,
        health: HealthBoard,
        reloader: Reloader,
        replays: replay::Replays,
    ) -> Arc<admin::AdminState> {
        Arc::new(admin::AdminState {
            store: self.store,
            config: self.config,
            dispatcher: self.dispatcher,
            metrics: self.metrics,
            health,
            reloader,
            recent_ids: self.recent_ids,
            replays,
        })
    }
}

/// Checks the data directory, then opens the store in it with the configured windows.
fn open_store(server: &ServerSettings) -> Result<Store, RunError> {
    let options = StoreOptions {
        retention: server.retention,
        dead_retention: server.dead_retention,
        dedupe_window: server.dedupe_window,
        ..StoreOptions::new(server.store_cache_bytes)
    };
    startup::check_data_dir(&server.data_dir).map_err(RunError::DataDir)?;
    Store::open(&server.data_dir, options).map_err(|error| RunError::Store {
        path: server.data_dir.display().to_string(),
        error,
    })
}

/// A store that can no longer write stops the daemon: its supervisor restarts it, and
/// sled reopens a working store once the cause is gone (see `Store::failed`).
fn stop_when_the_store_fails(store: &Store, shutdown: &CancellationToken) {
    let (failed, shutdown) = (store.failed(), shutdown.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = failed.cancelled() => {
                tracing::error!("stopping: the store cannot persist webhooks any more");
                shutdown.cancel();
            }
            _ = shutdown.cancelled() => {}
        }
    });
}

/// Metrics, the destinations' health (its changes feeding the alerts) and the dispatcher
/// with one worker per destination.
fn start_delivery(
    server: &ServerSettings,
    store: &Store,
    config: &SharedConfig,
    shutdown: &CancellationToken,
) -> Result<Delivery, RunError> {
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
    Ok(Delivery {
        metrics,
        health,
        dispatcher,
        alerts: alert_inbox,
    })
}

/// Binds `addr` (the value of `setting`) and reads back the address bound.
async fn bind(
    setting: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), RunError> {
    let bind_error = |error| RunError::Bind {
        setting,
        addr,
        error,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((listener, bound))
}

/// The webhook listener's connection limits.
fn listener_settings(server: &ServerSettings) -> ListenerSettings {
    ListenerSettings {
        header_read_timeout: server.header_read_timeout,
        max_connections: server.max_connections,
        shutdown_grace: server.shutdown_grace,
    }
}

/// Retention, purges and the de-duplication window, on the windows in force (a reload
/// changes them).
fn spawn_housekeeping(
    tasks: &TaskTracker,
    store: &Store,
    config: &SharedConfig,
    shutdown: &CancellationToken,
) {
    let windows = config.clone();
    tasks.spawn(queue::housekeeping::run(
        store.clone(),
        move || {
            let s = &windows.load().server;
            queue::housekeeping::interval(&[s.retention, s.dead_retention, s.dedupe_window])
        },
        shutdown.child_token(),
    ));
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
