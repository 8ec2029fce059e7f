//! The metrics an operator's alerts need from the first scrape on (issue 16):
//!
//! - every label set preset to zero, for each configured destination (delivery outcomes,
//!   in flight, latencies) and each kind and refusal reason, at start and at every scrape
//!   (so after a reload too): `increase()` over a series that first appears at 1 misses that
//!   first dead letter;
//! - `hookrouter_delivery_attempts_total`, the honest name of what
//!   `hookrouter_deliveries_total` counts (attempts, by outcome); the old name is kept for
//!   one release;
//! - `hookrouter_build_info{version}`, `hookrouter_store_size_bytes` and
//!   `hookrouter_config_last_reload_successful`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::{DeliveryLabels, DestinationLabels, Metrics, RejectLabels, WebhookLabels};
use crate::event::EventKind;
use crate::queue::Store;

/// The outcomes of `hookrouter_webhooks_received_total`.
pub const WEBHOOK_OUTCOMES: [&str; 4] = ["accepted", "unrouted", "duplicate", "rejected"];

/// Every error code ingress answers a webhook with (the `reason` of
/// `hookrouter_webhooks_rejected_total`).
pub const REJECT_REASONS: [&str; 11] = [
    "missing_key",
    "invalid_key",
    "duplicate_key",
    "method_not_allowed",
    "body_too_large",
    "body_timeout",
    "bad_body",
    "invalid_json",
    "not_an_object",
    "queue_full",
    "store_unavailable",
];

/// The outcomes of a delivery attempt.
pub const DELIVERY_OUTCOMES: [&str; 3] = ["delivered", "retried", "dead"];

/// The metrics added to [`Metrics`] by this module.
pub struct OpsMetrics {
    pub(super) attempts: Family<DeliveryLabels, Counter>,
    store_size: Gauge,
    reload_ok: Gauge,
}

impl OpsMetrics {
    /// Creates and registers them in `registry`.
    pub(super) fn register(registry: &mut Registry) -> OpsMetrics {
        let ops = OpsMetrics {
            attempts: Family::default(),
            store_size: Gauge::default(),
            reload_ok: Gauge::default(),
        };
        ops.reload_ok.set(1);
        registry.register(
            "delivery_attempts",
            "Delivery attempts, by destination and outcome (delivered, retried, dead)",
            ops.attempts.clone(),
        );
        registry.register(
            "build",
            "The running hookrouter's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "store_size_bytes",
            "Bytes the store takes on disk (sled and the journal's segments)",
            ops.store_size.clone(),
        );
        registry.register(
            "config_last_reload_successful",
            "1 when the last config reload applied (or none was tried), 0 when it was refused",
            ops.reload_ok.clone(),
        );
        ops
    }
}

impl Metrics {
    /// Creates every labelled series of `destinations` and of every kind and refusal
    /// reason at zero, so the first increment is seen as one.
    pub fn preset<'a>(&self, destinations: impl IntoIterator<Item = &'a str>) {
        for kind in EventKind::ALL {
            let kind = kind.as_str().to_string();
            for outcome in WEBHOOK_OUTCOMES {
                let _ = self.webhooks.get_or_create(&WebhookLabels {
                    kind: kind.clone(),
                    outcome: outcome.to_string(),
                });
            }
            for reason in REJECT_REASONS {
                let _ = self.rejected.get_or_create(&RejectLabels {
                    kind: kind.clone(),
                    reason: reason.to_string(),
                });
            }
        }
        for destination in destinations {
            for outcome in DELIVERY_OUTCOMES {
                let labels = DeliveryLabels {
                    destination: destination.to_string(),
                    outcome: outcome.to_string(),
                };
                let _ = self.deliveries.get_or_create(&labels);
                let _ = self.ops.attempts.get_or_create(&labels);
            }
            let labels = DestinationLabels {
                destination: destination.to_string(),
            };
            let _ = self.in_flight.get_or_create(&labels);
            let _ = self.delivery_latency.get_or_create(&labels);
            let _ = self.ingest_latency.get_or_create(&labels);
        }
    }

    /// Records whether the last config reload applied.
    pub fn reload_result(&self, applied: bool) {
        self.ops.reload_ok.set(i64::from(applied));
    }

    /// Reads the store's size for `hookrouter_store_size_bytes`.
    pub(super) fn refresh_store_size(&self, store: &Store) {
        match store.size_on_disk() {
            Ok(bytes) => {
                self.ops
                    .store_size
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the store's size"),
        }
    }
}
