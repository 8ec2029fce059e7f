//! The status page's overview: every destination with its queue, pause, recent rates and
//! latencies and last error; ingest; the store; the config. Built from what the store, the
//! metrics window and the reloader already know, on each request (the page polls it).

use std::collections::BTreeMap;

use serde::Serialize;

use super::handlers::queue_view;
use super::views::{rfc3339, DestinationQueue};
use super::AdminState;
use crate::inspect::safe_url;
use crate::metrics::recent::{self, DeliveryRates, IngestActivity, Latency};
use crate::queue::StoreError;

/// Queued jobs read per destination to find its latest error (jobs waiting for a retry
/// carry the error of their last attempt).
const QUEUED_ERROR_SCAN: usize = 500;
/// Dead letters read to find each destination's latest one.
const DEAD_ERROR_SCAN: usize = 10_000;

/// `GET /ui/overview`.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// When this was put together (RFC 3339).
    pub generated_at: String,
    /// The window the rates and latencies cover, in seconds.
    pub window_seconds: u64,
    /// Each configured destination, and each removed one that still has jobs.
    pub destinations: Vec<DestinationStatus>,
    /// Queue sums over all destinations.
    pub total: DestinationQueue,
    /// Webhooks by outcome and rejections by reason.
    pub ingest: IngestActivity,
    /// The store on disk.
    pub store: StoreStatus,
    /// The config in force.
    pub config: ConfigStatus,
}

/// One destination on the overview.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationStatus {
    /// Its name.
    pub name: String,
    /// Scheme and host only (paths and queries hold tokens), as `check` prints it; `None`
    /// for a destination no longer in the config.
    pub url: Option<String>,
    /// Its queue, and its health (`health.state`: healthy, failing, held).
    #[serde(flatten)]
    pub queue: DestinationQueue,
    /// Seconds left of a pause the destination asked for with `Retry-After`.
    pub paused_for_seconds: Option<f64>,
    /// Outcomes per minute over the window.
    pub per_minute: DeliveryRates,
    /// Attempt latencies over the window.
    pub latency: Latency,
    /// The latest error seen on a job still queued or dead.
    pub last_error: Option<LastError>,
}

/// The latest failure of one destination.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LastError {
    /// When (RFC 3339).
    pub at: String,
    /// What went wrong (the attempt's error, or why the job was dead-lettered).
    pub error: String,
    /// The HTTP status, if a response came back.
    pub status: Option<u16>,
    /// `retrying` (the job waits for another attempt) or `dead`.
    pub job: &'static str,
}

/// The store on disk.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStatus {
    /// Bytes used (sled and the journal), if it could be read.
    pub size_bytes: Option<u64>,
    /// Jobs in the fast lane (memory).
    pub fast_lane: usize,
}

/// The config in force.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigStatus {
    /// The file it was read from.
    pub file: String,
    /// Routes.
    pub routes: usize,
    /// Destinations.
    pub destinations: usize,
    /// When the daemon first loaded it (RFC 3339).
    pub loaded_at: String,
    /// The last reload (SIGHUP or `POST /reload`), if any.
    pub last_reload: Option<ReloadStatus>,
}

/// How the last reload went.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    /// When (RFC 3339).
    pub at: String,
    /// Whether it applied.
    pub ok: bool,
    /// The problems it found when refused (the previous config stayed).
    pub error: Option<String>,
}

/// `(at ms, error)` candidates for a destination's latest error.
type Latest = BTreeMap<String, (u64, LastError)>;

fn keep_latest(latest: &mut Latest, destination: &str, at_ms: u64, error: LastError) {
    let newer = latest.get(destination).is_none_or(|(at, _)| at_ms > *at);
    if newer {
        latest.insert(destination.to_string(), (at_ms, error));
    }
}

/// The latest error of each destination among its queued jobs and the dead letters.
fn latest_errors(state: &AdminState, names: &[String]) -> Result<Latest, StoreError> {
    let mut latest = Latest::new();
    // Fresh jobs in the fast lane come first in `queued_jobs` and carry no error.
    let scan = state.store.lane_len().min(QUEUED_ERROR_SCAN) + QUEUED_ERROR_SCAN;
    for name in names {
        for job in state.store.queued_jobs(name, scan)? {
            if let (Some(error), Some(at)) = (&job.last_error, job.last_attempt_at_ms) {
                let e = LastError {
                    at: rfc3339(at),
                    error: error.clone(),
                    status: job.last_status,
                    job: "retrying",
                };
                keep_latest(&mut latest, name, at, e);
            }
        }
    }
    for letter in state.store.dead_letters_of(None, DEAD_ERROR_SCAN)? {
        let e = LastError {
            at: rfc3339(letter.dead_at_ms),
            error: letter.reason.clone(),
            status: letter.job.last_status,
            job: "dead",
        };
        keep_latest(&mut latest, &letter.job.destination, letter.dead_at_ms, e);
    }
    Ok(latest)
}

/// The overview as it stands now.
pub fn build(state: &AdminState) -> Result<Overview, StoreError> {
    let queue = queue_view(state)?;
    let config = state.config.load();
    let names: Vec<String> = queue.destinations.keys().cloned().collect();
    let mut latest = latest_errors(state, &names)?;
    let recent = state.metrics.recent();
    let destinations = queue
        .destinations
        .into_iter()
        .map(|(name, q)| {
            let activity = recent.destination(&name);
            DestinationStatus {
                url: config.destinations.get(&name).map(|d| safe_url(d)),
                queue: q,
                paused_for_seconds: activity.paused_for_seconds,
                per_minute: activity.per_minute,
                latency: activity.latency,
                last_error: latest.remove(&name).map(|(_, e)| e),
                name,
            }
        })
        .collect();
    let history = state.reloader.history();
    let size_bytes = match state.store.size_on_disk() {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the store's size for the status page");
            None
        }
    };
    Ok(Overview {
        generated_at: rfc3339(crate::queue::now_ms()),
        window_seconds: recent::window().as_secs(),
        destinations,
        total: queue.total,
        ingest: recent.ingest(),
        store: StoreStatus {
            size_bytes,
            fast_lane: state.store.lane_len(),
        },
        config: ConfigStatus {
            file: config.source.display().to_string(),
            routes: config.rules.routes().len(),
            destinations: config.destinations.len(),
            loaded_at: rfc3339(history.loaded_at_ms),
            last_reload: history.last.map(|r| ReloadStatus {
                at: rfc3339(r.at_ms),
                ok: r.error.is_none(),
                error: r.error,
            }),
        },
    })
}
