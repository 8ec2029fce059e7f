//! The last few minutes of traffic, in memory, for the status page: delivery outcomes and
//! attempt latencies per destination, webhooks by outcome and rejections by reason, and the
//! `Retry-After` pause a destination asked for.
//!
//! Prometheus counters and histograms only grow, so "the rate over the last minutes" needs
//! two scrapes and PromQL; the page has neither. Counts go into [`SLOTS`] slots of
//! [`SLOT`] each (a ring that forgets a slot as time reuses it), and latencies into a
//! bounded list of recent samples, from which p50 and p99 are read exactly rather than
//! estimated from histogram buckets. Everything is keyed by a monotonic clock; the time is
//! passed in, so the arithmetic is tested without waiting.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Width of one counting slot.
pub const SLOT: Duration = Duration::from_secs(10);
/// Slots kept: with [`SLOT`], the window is five minutes.
pub const SLOTS: usize = 30;
/// Latency samples kept per destination; past this, the oldest are forgotten first, so a
/// busy destination's percentiles cover less than the window (the latest samples).
pub const MAX_SAMPLES: usize = 4096;

/// The window the page reports over.
pub fn window() -> Duration {
    SLOT * SLOTS as u32
}

/// Counts in the last [`SLOTS`] slots.
#[derive(Debug, Clone)]
struct Ring {
    /// `(slot number, count)`; a slot number is whole [`SLOT`]s since [`Recent::epoch`].
    slots: [(u64, u64); SLOTS],
    /// Every count since the start, for "since start" figures.
    total: u64,
}

impl Default for Ring {
    fn default() -> Self {
        Ring {
            slots: [(u64::MAX, 0); SLOTS],
            total: 0,
        }
    }
}

impl Ring {
    fn add(&mut self, slot: u64) {
        let cell = &mut self.slots[(slot % SLOTS as u64) as usize];
        if cell.0 != slot {
            *cell = (slot, 0);
        }
        cell.1 += 1;
        self.total += 1;
    }

    /// Counts of the slots still inside the window that ends in slot `now`.
    fn sum(&self, now: u64) -> u64 {
        let oldest = now.saturating_sub(SLOTS as u64 - 1);
        self.slots
            .iter()
            .filter(|(slot, _)| *slot != u64::MAX && *slot >= oldest && *slot <= now)
            .map(|(_, n)| n)
            .sum()
    }
}

/// What one destination did recently.
#[derive(Debug, Default)]
struct DestinationWindow {
    delivered: Ring,
    retried: Ring,
    dead: Ring,
    /// `(when, latency)` of recent attempts, oldest first.
    latencies: VecDeque<(Instant, Duration)>,
    /// Until when the destination's deliveries are paused (`Retry-After`).
    paused_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    destinations: BTreeMap<String, DestinationWindow>,
    /// Webhooks by outcome (`accepted`, `unrouted`, `duplicate`, `rejected`).
    webhooks: BTreeMap<String, Ring>,
    /// Rejected webhooks by reason (the error code answered).
    rejected: BTreeMap<String, Ring>,
}

/// The rolling window of one daemon (held by [`super::Metrics`]).
#[derive(Debug)]
pub struct Recent {
    epoch: Instant,
    state: Mutex<State>,
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            epoch: Instant::now(),
            state: Mutex::new(State::default()),
        }
    }
}

/// How a delivery attempt ended, as the window counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the destination.
    Delivered,
    /// Failed; another attempt is scheduled.
    Retried,
    /// Dead-lettered.
    Dead,
}

/// Per-minute rates of one destination's delivery outcomes over the window.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DeliveryRates {
    /// Delivered per minute.
    pub delivered: f64,
    /// Failed attempts that will be retried, per minute.
    pub retried: f64,
    /// Dead-lettered per minute.
    pub dead: f64,
}

/// Attempt latency percentiles over the window.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Samples they were read from.
    pub samples: usize,
    /// Median, in milliseconds (`None` without samples).
    pub p50_ms: Option<f64>,
    /// 99th percentile, in milliseconds.
    pub p99_ms: Option<f64>,
}

/// One destination's recent activity.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DestinationActivity {
    /// Outcomes per minute.
    pub per_minute: DeliveryRates,
    /// Attempt latencies.
    pub latency: Latency,
    /// Seconds left of a `Retry-After` pause, if one is running.
    pub paused_for_seconds: Option<f64>,
}

/// Webhooks of one outcome or rejection reason: per minute over the window, and since start.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Tally {
    /// Per minute over the window.
    pub per_minute: f64,
    /// Since the daemon started.
    pub since_start: u64,
}

/// Ingest activity: webhooks by outcome and rejections by reason.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct IngestActivity {
    /// By outcome (`accepted`, `unrouted`, `duplicate`, `rejected`).
    pub outcomes: BTreeMap<String, Tally>,
    /// By rejection reason (`invalid_key`, `body_too_large`...).
    pub rejections: BTreeMap<String, Tally>,
}

/// The `q` quantile (0..=1) of sorted `values`, nearest rank.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn per_minute(count: u64) -> f64 {
    count as f64 * 60.0 / window().as_secs_f64()
}

impl Recent {
    fn slot(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.epoch);
        since.as_secs() / SLOT.as_secs()
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state)
    }

    /// Records one delivery attempt's outcome (and its latency, when an attempt was made).
    pub fn delivery(&self, destination: &str, outcome: Outcome, latency: Option<Duration>) {
        self.delivery_at(Instant::now(), destination, outcome, latency);
    }

    fn delivery_at(
        &self,
        at: Instant,
        destination: &str,
        outcome: Outcome,
        latency: Option<Duration>,
    ) {
        let slot = self.slot(at);
        self.with(|s| {
            let d = s.destinations.entry(destination.to_string()).or_default();
            match outcome {
                Outcome::Delivered => d.delivered.add(slot),
                Outcome::Retried => d.retried.add(slot),
                Outcome::Dead => d.dead.add(slot),
            }
            if let Some(latency) = latency {
                if d.latencies.len() >= MAX_SAMPLES {
                    d.latencies.pop_front();
                }
                d.latencies.push_back((at, latency));
            }
        });
    }

    /// Records a `Retry-After` pause of `destination` for `delay` from now (a pause that
    /// ends later is kept).
    pub fn paused(&self, destination: &str, delay: Duration) {
        self.paused_at(Instant::now(), destination, delay);
    }

    fn paused_at(&self, at: Instant, destination: &str, delay: Duration) {
        let until = at + delay;
        self.with(|s| {
            let d = s.destinations.entry(destination.to_string()).or_default();
            if d.paused_until.is_none_or(|p| p < until) {
                d.paused_until = Some(until);
            }
        });
    }

    /// Records one webhook answered with `outcome`, and its `reason` when rejected.
    pub fn webhook(&self, outcome: &str, reason: Option<&str>) {
        self.webhook_at(Instant::now(), outcome, reason);
    }

    fn webhook_at(&self, at: Instant, outcome: &str, reason: Option<&str>) {
        let slot = self.slot(at);
        self.with(|s| {
            s.webhooks.entry(outcome.to_string()).or_default().add(slot);
            if let Some(reason) = reason {
                s.rejected.entry(reason.to_string()).or_default().add(slot);
            }
        });
    }

    /// What `destination` did in the window (all zero if nothing was recorded).
    pub fn destination(&self, destination: &str) -> DestinationActivity {
        self.destination_at(Instant::now(), destination)
    }

    fn destination_at(&self, now: Instant, destination: &str) -> DestinationActivity {
        let slot = self.slot(now);
        let since = now.checked_sub(window());
        self.with(|s| {
            let Some(d) = s.destinations.get_mut(destination) else {
                return DestinationActivity::default();
            };
            while d
                .latencies
                .front()
                .is_some_and(|(at, _)| since.is_some_and(|since| *at < since))
            {
                d.latencies.pop_front();
            }
            let mut ms: Vec<f64> = d
                .latencies
                .iter()
                .map(|(_, l)| l.as_micros() as f64 / 1000.0)
                .collect();
            ms.sort_by(f64::total_cmp);
            DestinationActivity {
                per_minute: DeliveryRates {
                    delivered: per_minute(d.delivered.sum(slot)),
                    retried: per_minute(d.retried.sum(slot)),
                    dead: per_minute(d.dead.sum(slot)),
                },
                latency: Latency {
                    samples: ms.len(),
                    p50_ms: quantile(&ms, 0.50),
                    p99_ms: quantile(&ms, 0.99),
                },
                paused_for_seconds: d
                    .paused_until
                    .filter(|until| *until > now)
                    .map(|until| (until - now).as_secs_f64()),
            }
        })
    }

    /// Webhooks by outcome and rejections by reason.
    pub fn ingest(&self) -> IngestActivity {
        self.ingest_at(Instant::now())
    }

    fn ingest_at(&self, now: Instant) -> IngestActivity {
        let slot = self.slot(now);
        let tally = |m: &BTreeMap<String, Ring>| {
            m.iter()
                .map(|(k, r)| {
                    let t = Tally {
                        per_minute: per_minute(r.sum(slot)),
                        since_start: r.total,
                    };
                    (k.clone(), t)
                })
                .collect()
        };
        self.with(|s| IngestActivity {
            outcomes: tally(&s.webhooks),
            rejections: tally(&s.rejected),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_count_the_window_only_and_forget_old_slots() {
        let r = Recent::default();
        let t0 = r.epoch;
        for _ in 0..30 {
            r.delivery_at(
                t0,
                "crm",
                Outcome::Delivered,
                Some(Duration::from_millis(5)),
            );
        }
        r.delivery_at(t0, "crm", Outcome::Retried, None);
        let a = r.destination_at(t0 + Duration::from_secs(1), "crm");
        // 30 in a five-minute window: 6 a minute.
        assert_eq!(a.per_minute.delivered, 6.0);
        assert_eq!(a.per_minute.retried, 0.2);
        assert_eq!(a.latency.samples, 30);
        // Past the window the slot no longer counts, even before it is reused.
        let later = t0 + window() + SLOT;
        let b = r.destination_at(later, "crm");
        assert_eq!(b.per_minute, DeliveryRates::default());
        assert_eq!(b.latency.samples, 0);
        // A slot reused a whole ring later starts from zero.
        r.delivery_at(later, "crm", Outcome::Delivered, None);
        assert_eq!(r.destination_at(later, "crm").per_minute.delivered, 0.2);
        assert_eq!(
            r.destination_at(later, "unknown"),
            DestinationActivity::default()
        );
    }

    #[test]
    fn percentiles_are_read_from_the_samples() {
        let r = Recent::default();
        let t0 = r.epoch;
        for ms in 1..=100 {
            r.delivery_at(
                t0,
                "crm",
                Outcome::Delivered,
                Some(Duration::from_millis(ms)),
            );
        }
        let l = r.destination_at(t0, "crm").latency;
        assert_eq!(
            (l.samples, l.p50_ms, l.p99_ms),
            (100, Some(50.0), Some(99.0))
        );
        // Bounded: the oldest samples go first.
        for _ in 0..MAX_SAMPLES {
            r.delivery_at(t0, "crm", Outcome::Delivered, Some(Duration::from_secs(1)));
        }
        let l = r.destination_at(t0, "crm").latency;
        assert_eq!((l.samples, l.p50_ms), (MAX_SAMPLES, Some(1000.0)));
    }

    #[test]
    fn a_pause_shows_until_it_ends_and_a_shorter_one_does_not_shorten_it() {
        let r = Recent::default();
        let t0 = r.epoch;
        r.paused_at(t0, "crm", Duration::from_secs(30));
        r.paused_at(t0, "crm", Duration::from_secs(5));
        let left = r
            .destination_at(t0 + Duration::from_secs(10), "crm")
            .paused_for_seconds;
        assert_eq!(left, Some(20.0));
        assert_eq!(
            r.destination_at(t0 + Duration::from_secs(31), "crm")
                .paused_for_seconds,
            None
        );
    }

    #[test]
    fn webhooks_are_tallied_by_outcome_and_rejection_reason() {
        let r = Recent::default();
        let t0 = r.epoch;
        r.webhook_at(t0, "accepted", None);
        r.webhook_at(t0, "rejected", Some("invalid_key"));
        r.webhook_at(t0 + window() * 2, "rejected", Some("invalid_key"));
        let i = r.ingest_at(t0 + window() * 2);
        assert_eq!(i.outcomes["accepted"].per_minute, 0.0);
        assert_eq!(i.outcomes["accepted"].since_start, 1);
        assert_eq!(
            i.rejections["invalid_key"],
            Tally {
                per_minute: 0.2,
                since_start: 2
            }
        );
    }
}
