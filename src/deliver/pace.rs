//! Pacing of one destination: its `rate_limit`, and the pause a receiver asks for with
//! `Retry-After`.
//!
//! Both are owned by the destination's worker, which simply takes no job while either says
//! "not yet"; so waiting is never an attempt, and one destination's waiting never holds up
//! another's worker. Sends are spaced evenly (`50/10s` sends one every 200 ms) rather than
//! in bursts: Slack allows "about one per second", not sixty at the top of each minute.

use std::time::Duration;

// tokio's clock (the system's monotonic clock unless a test pauses it).
use tokio::time::Instant;

pub use crate::destination::RateLimit;

/// The send clock of one destination.
#[derive(Debug, Default)]
pub struct Pacer {
    /// Earliest time the next send may start (rate limit).
    next_slot: Option<Instant>,
    /// A receiver's `Retry-After`: no send before this.
    paused_until: Option<Instant>,
}

impl Pacer {
    /// How long until a send may start (`None`: now).
    pub fn wait(&self, now: Instant) -> Option<Duration> {
        let ready = match (self.next_slot, self.paused_until) {
            (Some(a), Some(b)) => a.max(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return None,
        };
        (ready > now).then(|| ready - now)
    }

    /// Records a send starting at `now` under `limit`.
    pub fn sent(&mut self, now: Instant, limit: Option<RateLimit>) {
        self.next_slot = limit.map(|l| now + l.interval());
    }

    /// Pauses until `now + delay`. Returns true when this starts a pause (the worker logs
    /// it), false when a pause was already running (it is extended silently).
    pub fn pause(&mut self, now: Instant, delay: Duration) -> bool {
        let until = now + delay;
        let running = self.paused_until.is_some_and(|p| p > now);
        if self.paused_until.is_none_or(|p| until > p) {
            self.paused_until = Some(until);
        }
        !running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        let r = RateLimit::parse("1/s").unwrap();
        assert_eq!(r.interval(), Duration::from_secs(1));
        assert_eq!(
            RateLimit::parse("50/10s").unwrap().interval(),
            Duration::from_millis(200)
        );
        assert_eq!(
            RateLimit::parse("600/m").unwrap().interval(),
            Duration::from_millis(100)
        );
        assert_eq!(
            RateLimit::parse(" 5 / s ").unwrap().interval(),
            Duration::from_millis(200)
        );
        for bad in ["5", "0/s", "x/s", "5/", "5/fortnight", "5/0s"] {
            assert!(RateLimit::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sends_are_spaced_and_a_pause_is_reported_once() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        let limit = RateLimit::parse("5/s").ok();
        assert_eq!(p.wait(t0), None);
        p.sent(t0, limit);
        assert_eq!(p.wait(t0), Some(Duration::from_millis(200)));
        assert_eq!(p.wait(t0 + Duration::from_millis(200)), None);
        assert!(p.pause(t0, Duration::from_secs(2)));
        assert!(!p.pause(t0 + Duration::from_millis(10), Duration::from_secs(2)));
        assert_eq!(
            p.wait(t0 + Duration::from_secs(1)),
            Some(Duration::from_millis(1010))
        );
        // A shorter Retry-After during a pause does not shorten it.
        assert!(!p.pause(t0 + Duration::from_secs(1), Duration::from_millis(10)));
        assert_eq!(
            p.wait(t0 + Duration::from_secs(2)),
            Some(Duration::from_millis(10))
        );
        assert_eq!(p.wait(t0 + Duration::from_secs(3)), None);
        assert!(p.pause(t0 + Duration::from_secs(3), Duration::from_secs(1)));
    }

    /// What a worker does with its pacer, reduced to the pacing: wait while it says
    /// "not yet", then send. Returns when each send started, relative to the start.
    async fn send_paced(pacer: &mut Pacer, limit: Option<RateLimit>, n: usize) -> Vec<Duration> {
        let start = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..n {
            while let Some(wait) = pacer.wait(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
            sent.push(Instant::now() - start);
            pacer.sent(Instant::now(), limit);
        }
        sent
    }

    #[tokio::test(start_paused = true)]
    async fn with_time_paused_sends_are_exactly_one_interval_apart() {
        let mut pacer = Pacer::default();
        let sent = send_paced(&mut pacer, RateLimit::parse("50/10s").ok(), 4).await;
        let ms = |m| Duration::from_millis(m);
        assert_eq!(sent, [ms(0), ms(200), ms(400), ms(600)]);
        // Without a limit nothing waits.
        let mut free = Pacer::default();
        assert_eq!(send_paced(&mut free, None, 3).await, [ms(0); 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn with_time_paused_a_retry_after_holds_the_next_send_and_is_not_shortened() {
        let mut pacer = Pacer::default();
        let t0 = Instant::now();
        assert!(pacer.pause(t0, Duration::from_secs(2)));
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A shorter Retry-After halfway through does not bring the send forward.
        assert!(!pacer.pause(Instant::now(), Duration::from_millis(100)));
        let sent = send_paced(&mut pacer, RateLimit::parse("1/s").ok(), 2).await;
        // Relative to the start of send_paced, 500 ms after t0.
        assert_eq!(
            sent,
            [Duration::from_millis(1_500), Duration::from_millis(2_500)]
        );
        assert_eq!(Instant::now() - t0, Duration::from_secs(3));
    }
}
