//! Prometheus metrics, served in the text format at the admin `/metrics`.
//!
//! `prometheus-client` (the Prometheus project's own Rust client) is used with one
//! [`Registry`] per running daemon rather than a process-global recorder: tests start several
//! daemons in one process, and each must count only its own traffic. Counters and histograms
//! are updated where things happen (ingress, delivery); queue gauges are read from the
//! store's counters at scrape time, so they can never drift from the store.
//!
//! The same calls feed [`recent`], the last few minutes kept in memory for the status page
//! (rates and percentiles that Prometheus leaves to PromQL).

pub mod ops;
pub mod recent;

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::config::AlertEvent;
use crate::event::EventKind;
use crate::health::{HealthBoard, HealthState};
use crate::queue::{now_ms, Store};

/// Due keys read per destination to find its oldest queued job at a scrape.
const OLDEST_SCAN_LIMIT: usize = 100_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    kind: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    destination: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DepthLabels {
    destination: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    destination: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    event: String,
}

type Latency = Family<DestinationLabels, Histogram, fn() -> Histogram>;

/// Every metric of one daemon; shared behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    webhooks: Family<WebhookLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
    depth: Family<DepthLabels, Gauge>,
    in_flight: Family<DestinationLabels, Gauge>,
    oldest: Family<DestinationLabels, Gauge<f64, AtomicU64>>,
    delivery_latency: Latency,
    ingest_latency: Latency,
    destination_state: Family<StateLabels, Gauge>,
    last_success: Family<DestinationLabels, Gauge<f64, AtomicU64>>,
    alerts_sent: Family<AlertLabels, Counter>,
    alerts_suppressed: Family<AlertLabels, Counter>,
    recent: recent::Recent,
    ops: ops::OpsMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// What became of one delivery attempt, for `hookrouter_deliveries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Accepted by the destination.
    Delivered,
    /// Failed; another attempt is scheduled.
    Retried,
    /// Dead-lettered.
    Dead,
}

impl DeliveryOutcome {
    fn recent(self) -> recent::Outcome {
        match self {
            DeliveryOutcome::Delivered => recent::Outcome::Delivered,
            DeliveryOutcome::Retried => recent::Outcome::Retried,
            DeliveryOutcome::Dead => recent::Outcome::Dead,
        }
    }

    fn label(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Retried => "retried",
            DeliveryOutcome::Dead => "dead",
        }
    }
}

/// Marks one delivery in flight for as long as it lives.
pub struct InFlight {
    gauge: Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

fn delivery_buckets() -> Histogram {
    // 5 ms .. ~41 s: one HTTP attempt, bounded by the destination's timeout.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

fn ingest_buckets() -> Histogram {
    // 10 ms .. ~12 h: from acceptance to delivery, retries and outages included.
    Histogram::new(exponential_buckets(0.01, 4.0, 12))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hookrouter");
        let ops = ops::OpsMetrics::register(&mut registry);
        let m = Metrics {
            ops,
            webhooks: Family::default(),
            rejected: Family::default(),
            deliveries: Family::default(),
            depth: Family::default(),
            in_flight: Family::default(),
            oldest: Family::default(),
            delivery_latency: Family::new_with_constructor(delivery_buckets as fn() -> Histogram),
            ingest_latency: Family::new_with_constructor(ingest_buckets as fn() -> Histogram),
            destination_state: Family::default(),
            last_success: Family::default(),
            alerts_sent: Family::default(),
            alerts_suppressed: Family::default(),
            recent: recent::Recent::default(),
            registry: Registry::default(),
        };
        m.register_families(&mut registry);
        // Present from the start, so `increase()` sees the first alert.
        for event in AlertEvent::ALL {
            let labels = AlertLabels {
                event: event.as_str().to_string(),
            };
            drop(m.alerts_sent.get_or_create(&labels));
            drop(m.alerts_suppressed.get_or_create(&labels));
        }
        Metrics { registry, ..m }
    }

    /// Registers the families this struct holds (the ops families register themselves).
    fn register_families(&self, registry: &mut Registry) {
        registry.register(
            "webhooks_received",
            "Webhooks received, by kind and outcome (accepted, unrouted, duplicate, rejected)",
            self.webhooks.clone(),
        );
        registry.register(
            "webhooks_rejected",
            "Webhooks rejected, by kind and reason (the error code of the answer)",
            self.rejected.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery attempts, by destination and outcome (deprecated: the same as \
             hookrouter_delivery_attempts_total, which replaces it; removed in the next release)",
            self.deliveries.clone(),
        );
        registry.register(
            "queue_depth",
            "Jobs by destination and state (pending, retrying, dead)",
            self.depth.clone(),
        );
        registry.register(
            "deliveries_in_flight",
            "Deliveries being attempted right now, by destination",
            self.in_flight.clone(),
        );
        registry.register(
            "queue_oldest_pending_age_seconds",
            "Age of the oldest queued job, by destination (0 when none is queued)",
            self.oldest.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "Duration of one delivery attempt, by destination",
            self.delivery_latency.clone(),
        );
        registry.register(
            "ingest_to_delivery_seconds",
            "Time from acceptance of an event to its successful delivery, by destination",
            self.ingest_latency.clone(),
        );
        registry.register(
            "destination_state",
            "Health of each destination: 1 for its current state (healthy, failing, held), 0 for the others",
            self.destination_state.clone(),
        );
        registry.register(
            "destination_last_success_timestamp_seconds",
            "Unix time of the destination's latest successful delivery (0 before the first)",
            self.last_success.clone(),
        );
        registry.register(
            "alerts_sent",
            "Alerts queued for the alert destinations, by event",
            self.alerts_sent.clone(),
        );
        registry.register(
            "alerts_suppressed",
            "Alerts not sent because alerts.max_per_hour was reached, by event",
            self.alerts_suppressed.clone(),
        );
    }

    /// Counts one alert queued.
    pub fn alert_sent(&self, event: &str) {
        self.alerts_sent
            .get_or_create(&AlertLabels {
                event: event.to_string(),
            })
            .inc();
    }

    /// Counts one alert not sent because of the hourly cap.
    pub fn alert_suppressed(&self, event: &str) {
        self.alerts_suppressed
            .get_or_create(&AlertLabels {
                event: event.to_string(),
            })
            .inc();
    }

    /// Counts one webhook answered with `outcome` (`accepted`, `unrouted`, `duplicate`), or
    /// rejected with `reason` when `outcome` is `rejected`.
    pub fn webhook(&self, kind: EventKind, outcome: &str, reason: Option<&str>) {
        self.recent.webhook(outcome, reason);
        let kind = kind.as_str().to_string();
        self.webhooks
            .get_or_create(&WebhookLabels {
                kind: kind.clone(),
                outcome: outcome.to_string(),
            })
            .inc();
        if let Some(reason) = reason {
            self.rejected
                .get_or_create(&RejectLabels {
                    kind,
                    reason: reason.to_string(),
                })
                .inc();
        }
    }

    /// Counts one delivery attempt's outcome and how long the attempt took.
    pub fn delivery(&self, destination: &str, outcome: DeliveryOutcome, attempt: Option<Duration>) {
        self.recent.delivery(destination, outcome.recent(), attempt);
        let labels = DeliveryLabels {
            destination: destination.to_string(),
            outcome: outcome.label().to_string(),
        };
        self.deliveries.get_or_create(&labels).inc();
        self.ops.attempts.get_or_create(&labels).inc();
        if let Some(d) = attempt {
            self.delivery_latency
                .get_or_create(&DestinationLabels {
                    destination: destination.to_string(),
                })
                .observe(d.as_secs_f64());
        }
    }

    /// Records the time from acceptance (`created_at_ms`) to a successful delivery.
    pub fn delivered_after(&self, destination: &str, created_at_ms: u64) {
        let ms = now_ms().saturating_sub(created_at_ms);
        self.ingest_latency
            .get_or_create(&DestinationLabels {
                destination: destination.to_string(),
            })
            .observe(Duration::from_millis(ms).as_secs_f64());
    }

    /// Notes that `destination` asked for a pause (`Retry-After`) of `delay` from now, for
    /// the status page; the worker itself holds the destination.
    pub fn paused(&self, destination: &str, delay: Duration) {
        self.recent.paused(destination, delay);
    }

    /// The last few minutes of traffic, for the status page.
    pub fn recent(&self) -> &recent::Recent {
        &self.recent
    }

    /// Marks a delivery to `destination` in flight until the guard is dropped.
    pub fn in_flight(&self, destination: &str) -> InFlight {
        let gauge = self.in_flight.get_or_create_owned(&DestinationLabels {
            destination: destination.to_string(),
        });
        gauge.inc();
        InFlight { gauge }
    }

    /// Deliveries in flight now, by destination (for `GET /queue`).
    pub fn in_flight_of(&self, destination: &str) -> i64 {
        self.in_flight
            .get_or_create(&DestinationLabels {
                destination: destination.to_string(),
            })
            .get()
    }

    /// Renders every metric in the Prometheus text format, after refreshing the queue gauges
    /// from `store` for `destinations` (the configured ones) and any with jobs left.
    pub fn render(
        &self,
        store: &Store,
        health: &HealthBoard,
        destinations: impl IntoIterator<Item = String>,
    ) -> Result<String, std::fmt::Error> {
        let healths = health.snapshot();
        let snapshot = store.stats().snapshot();
        let mut names: std::collections::BTreeSet<String> = destinations.into_iter().collect();
        // The configured destinations now, so those a reload added have their zeros too.
        self.preset(names.iter().map(String::as_str));
        self.refresh_store_size(store);
        names.extend(snapshot.keys().cloned());
        let now = now_ms();
        for name in names {
            let depth = snapshot.get(&name).copied().unwrap_or_default();
            for (state, n) in [
                ("pending", depth.pending),
                ("retrying", depth.retrying),
                ("dead", depth.dead),
            ] {
                self.depth
                    .get_or_create(&DepthLabels {
                        destination: name.clone(),
                        state: state.to_string(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            let age = match store.oldest_queued_age_ms(&name, now, OLDEST_SCAN_LIMIT) {
                Ok(age) => age.unwrap_or(0),
                Err(e) => {
                    tracing::warn!(destination = %name, error = %e, "cannot read the oldest queued job");
                    0
                }
            };
            let state = healths.get(&name).map_or(HealthState::Healthy, |h| h.state);
            for s in HealthState::ALL {
                self.destination_state
                    .get_or_create(&StateLabels {
                        destination: name.clone(),
                        state: s.as_str().to_string(),
                    })
                    .set(i64::from(s == state));
            }
            let last_success = healths
                .get(&name)
                .and_then(|h| h.last_success_ms)
                .map_or(0.0, |ms| Duration::from_millis(ms).as_secs_f64());
            self.last_success
                .get_or_create(&DestinationLabels {
                    destination: name.clone(),
                })
                .set(last_success);
            self.oldest
                .get_or_create(&DestinationLabels { destination: name })
                .set(Duration::from_millis(age).as_secs_f64());
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
