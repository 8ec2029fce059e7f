//! Alerts: hookrouter tells someone when a destination starts failing, is held, recovers,
//! when jobs are dead-lettered (one digest per destination and `digest_every`, not one
//! message each), and when a route sees less traffic than its `expect:` says.
//!
//! Alerts are ordinary deliveries: each is an event of kind `alert` committed to the
//! journal with one job per destination in `alerts.to`, so it is durable, retried, paced
//! and formatted like any other (a Slack destination gets a Slack message). Two rules keep
//! an alert destination from alerting about itself in a loop: an alert about destination D
//! is never sent to D, and an alert's own dead letter raises no alert.
//!
//! Signals arrive through an unbounded channel ([`Alerts`], cheap to clone and never
//! blocking the delivery workers or the health board); one task ([`run`]) applies
//! `alerts.on`, the digest, the hourly cap (`max_per_hour`) and commits.

pub mod message;
pub mod silence;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;
use crate::event::EventKind;
use crate::health::HealthEvent;
use crate::metrics::Metrics;
use crate::queue::commit::Committer;
use crate::queue::record::{EventRecord, JobRecord};
use crate::queue::{now_ms, NewEvent, Store};
use crate::SharedConfig;
use message::Alert;
use silence::{Activity, Watch};

/// How often digests and traffic expectations are looked at.
const TICK: Duration = Duration::from_secs(1);

/// What the rest of the daemon reports to the alert task.
#[derive(Debug)]
enum Signal {
    Health(HealthEvent),
    DeadLetter { destination: String, reason: String },
}

/// The sending side: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct Alerts {
    tx: mpsc::UnboundedSender<Signal>,
}

/// The receiving side, handed to [`run`].
pub struct AlertInbox {
    rx: mpsc::UnboundedReceiver<Signal>,
}

/// A connected pair.
pub fn channel() -> (Alerts, AlertInbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Alerts { tx }, AlertInbox { rx })
}

impl Alerts {
    /// A destination's health changed.
    pub fn health(&self, event: &HealthEvent) {
        let _ = self.tx.send(Signal::Health(event.clone()));
    }

    /// A job of `kind` for `destination` was dead-lettered for `reason`. An alert's own
    /// dead letter is not reported (it would alert about alerts).
    pub fn dead_letter(&self, kind: EventKind, destination: &str, reason: &str) {
        if kind == EventKind::Alert {
            return;
        }
        let _ = self.tx.send(Signal::DeadLetter {
            destination: destination.to_string(),
            reason: reason.to_string(),
        });
    }
}

/// What the alert task needs besides its inbox.
pub struct AlertContext {
    /// The config in force (`alerts:`, `expect:`).
    pub config: SharedConfig,
    /// Where alerts are committed.
    pub committer: Committer,
    /// Queue depths for the messages.
    pub store: Store,
    /// Counts sent and suppressed alerts.
    pub metrics: Arc<Metrics>,
    /// Route matches, fed by ingress.
    pub activity: Arc<Activity>,
    /// Wakes the worker of a destination that was given a job.
    pub wake: Arc<dyn Fn(&str) + Send + Sync>,
}

/// Dead letters of one destination waiting for their digest.
struct Digest {
    first_ms: u64,
    count: u64,
    latest_reason: String,
}

/// Runs until `shutdown`; then sends the digests still open, so a stop loses none.
pub async fn run(mut inbox: AlertInbox, ctx: AlertContext, shutdown: CancellationToken) {
    let mut digests: HashMap<String, Digest> = HashMap::new();
    let mut sent: VecDeque<u64> = VecDeque::new();
    let mut watch = Watch::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            signal = inbox.rx.recv() => match signal {
                Some(Signal::Health(event)) => {
                    let queued = ctx.store.stats().snapshot().get(&event.destination).map_or(0, |d| d.pending + d.retrying);
                    let alert = message::health_alert(&event, queued, now_ms());
                    send(&ctx, &mut sent, alert).await;
                }
                Some(Signal::DeadLetter { destination, reason }) => {
                    let now = now_ms();
                    let d = digests.entry(destination).or_insert(Digest { first_ms: now, count: 0, latest_reason: String::new() });
                    d.count += 1;
                    d.latest_reason = reason;
                }
                None => break,
            },
            _ = tick.tick() => {
                let now = now_ms();
                let config = ctx.config.load_full();
                let every = config.alerts.as_ref().map_or(Duration::from_secs(600), |a| a.digest_every);
                let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
                let due: Vec<String> = digests
                    .iter()
                    .filter(|(_, d)| now.saturating_sub(d.first_ms) >= every_ms)
                    .map(|(name, _)| name.clone())
                    .collect();
                for name in due {
                    if let Some(d) = digests.remove(&name) {
                        let alert = message::dead_letter_digest(&name, d.count, every, &d.latest_reason, now);
                        send(&ctx, &mut sent, alert).await;
                    }
                }
                for change in watch.check(&config, &ctx.activity, now) {
                    let alert = message::traffic_alert(&change.subject, change.silent, change.count, change.expect.at_least, change.expect.per, now);
                    send(&ctx, &mut sent, alert).await;
                }
            }
        }
    }
    let now = now_ms();
    let every = ctx
        .config
        .load()
        .alerts
        .as_ref()
        .map_or(Duration::from_secs(600), |a| a.digest_every);
    for (name, d) in digests {
        let window = Duration::from_millis(now.saturating_sub(d.first_ms)).min(every);
        let alert = message::dead_letter_digest(&name, d.count, window, &d.latest_reason, now);
        send(&ctx, &mut sent, alert).await;
    }
}

/// Who receives `alert` under `config`: nobody when alerts are off or this event is not in
/// `alerts.on`; never the destination the alert is about.
fn recipients(config: &Config, alert: &Alert) -> Vec<String> {
    let Some(settings) = &config.alerts else {
        return Vec::new();
    };
    if !settings.on.contains(&alert.alert) {
        return Vec::new();
    }
    settings
        .to
        .iter()
        .filter(|to| alert.destination.as_ref() != Some(*to))
        .filter(|to| config.destinations.contains_key(*to))
        .cloned()
        .collect()
}

/// Commits `alert` for its recipients unless the hourly cap is reached (`sent` holds the
/// times of the alerts sent in the last hour).
async fn send(ctx: &AlertContext, sent: &mut VecDeque<u64>, alert: Alert) {
    let config = ctx.config.load_full();
    let to = recipients(&config, &alert);
    let event = alert.alert;
    if to.is_empty() {
        tracing::debug!(
            alert = alert.alert.as_str(),
            "no destination takes this alert"
        );
        return;
    }
    let now = now_ms();
    while sent.front().is_some_and(|&t| t + 3_600_000 <= now) {
        sent.pop_front();
    }
    let cap = config.alerts.as_ref().map_or(0, |a| a.max_per_hour);
    if sent.len() >= cap as usize {
        ctx.metrics.alert_suppressed(event.as_str());
        tracing::warn!(alert = alert.alert.as_str(), text = %alert.text, max_per_hour = cap, "alert not sent: the hourly cap (alerts.max_per_hour) is reached");
        return;
    }
    // Serializing plain data cannot fail.
    let body = Bytes::from(serde_json::to_vec(&alert).unwrap_or_default());
    let event_id = Uuid::now_v7();
    let routes = vec![format!("alert:{}", alert.alert.as_str())];
    let jobs: Vec<JobRecord> = to
        .iter()
        .map(|d| JobRecord::new(event_id, EventKind::Alert, d.clone(), routes.clone(), now))
        .collect();
    let new_event = NewEvent {
        event: EventRecord {
            id: event_id,
            kind: EventKind::Alert,
            received_at_ms: now,
            routes,
            jobs: jobs.iter().map(|j| j.id).collect(),
            body_len: body.len() as u64,
        },
        body,
        jobs,
        dedupe: None,
    };
    match ctx.committer.commit(new_event).await {
        Ok(_) => {
            sent.push_back(now);
            ctx.metrics.alert_sent(event.as_str());
            tracing::info!(alert = alert.alert.as_str(), %event_id, to = ?to, text = %alert.text, "alert queued");
            for d in &to {
                (ctx.wake)(d);
            }
        }
        Err(e) => {
            tracing::error!(alert = alert.alert.as_str(), text = %alert.text, error = %e, "cannot queue an alert");
        }
    }
}
