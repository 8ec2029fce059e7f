//! systemd readiness, reload and watchdog notifications (`Type=notify`).
//!
//! The `sd-notify` crate sends the datagrams; it does nothing when `NOTIFY_SOCKET` is unset,
//! so the daemon behaves the same outside systemd. The watchdog keep-alive is not a timer
//! that pings regardless: it is sent only while every delivery worker has passed through
//! its loop recently ([`Heartbeats`]), so a wedged delivery loop stops the pings and systemd
//! restarts the service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// A healthy worker passes through its loop at least every few seconds (it never sleeps
/// longer than 5 s); one silent for this long is taken as wedged.
const MIN_STALE_AFTER: Duration = Duration::from_secs(15);

/// When each delivery worker last went round its loop; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Heartbeats {
    beats: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Heartbeats {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Instant>) -> R) -> R {
        let mut map = self.beats.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut map)
    }

    /// Worker `name` made progress now.
    pub fn beat(&self, name: &str) {
        self.with(|m| match m.get_mut(name) {
            Some(at) => *at = Instant::now(),
            None => {
                m.insert(name.to_string(), Instant::now());
            }
        });
    }

    /// Worker `name` ended on purpose (its destination was removed).
    pub fn forget(&self, name: &str) {
        self.with(|m| m.remove(name));
    }

    /// Workers that have not beaten for longer than `max_age`.
    pub fn stale(&self, max_age: Duration) -> Vec<String> {
        self.with(|m| {
            let mut names: Vec<String> = m
                .iter()
                .filter(|(_, at)| at.elapsed() > max_age)
                .map(|(n, _)| n.clone())
                .collect();
            names.sort();
            names
        })
    }
}

fn send(states: &[NotifyState<'_>], what: &str) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not tell systemd {what}");
    }
}

/// `READY=1`: the store is open, the rules are compiled and the listeners are bound.
pub fn ready() {
    send(&[NotifyState::Ready], "that hookrouter is ready");
}

/// `RELOADING=1` with `MONOTONIC_USEC`, before a reload (what `Type=notify-reload` expects,
/// and harmless under `Type=notify`).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(
            &[NotifyState::Reloading, now],
            "that hookrouter is reloading",
        ),
        Err(_) => send(&[NotifyState::Reloading], "that hookrouter is reloading"),
    }
}

/// `STOPPING=1`: shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping], "that hookrouter is stopping");
}

/// If systemd asked for a watchdog (`WATCHDOG_USEC`), sends `WATCHDOG=1` at a third of its
/// period for as long as no worker is stale, until `shutdown`.
pub fn spawn_watchdog(heartbeats: Heartbeats, shutdown: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (period / 3).max(Duration::from_millis(10));
    let stale_after = (period / 2).max(MIN_STALE_AFTER);
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            let stale = heartbeats.stale(stale_after);
            if stale.is_empty() {
                send(&[NotifyState::Watchdog], "that hookrouter is alive");
                warned = false;
            } else if !warned {
                tracing::error!(workers = ?stale, "delivery workers made no progress; withholding the watchdog keep-alive so systemd restarts hookrouter");
                warned = true;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_worker_is_stale_and_a_forgotten_one_is_not() {
        let h = Heartbeats::default();
        h.beat("crm");
        assert!(h.stale(Duration::from_secs(60)).is_empty());
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(h.stale(Duration::from_millis(5)), vec!["crm".to_string()]);
        h.forget("crm");
        assert!(h.stale(Duration::from_millis(5)).is_empty());
    }
}
