//! Silence detection: the most common silent failure with Mindstamp is no traffic at all (a
//! video's webhook box left unticked, a rule edited so it never matches). Ingress notes
//! every match ([`Activity::matched`]); the alert task asks [`Watch::check`] once a second
//! whether a route (`expect:` on the route) or a kind (`expect:` at the top level) fell
//! below what it expects, and says so once, and again once traffic is back.
//!
//! Kept in memory only: after a restart a window starts afresh, so nothing is called
//! silent before one whole `per` has passed since the start.

use crate::config::{Config, Expectation};
use crate::event::EventKind;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Match times remembered per subject; `expect.at_least` is capped at this.
pub const MAX_AT_LEAST: u64 = 10_000;

/// Recent match times per route and per kind, fed by ingress.
#[derive(Debug, Default)]
pub struct Activity {
    times: Mutex<HashMap<String, VecDeque<u64>>>,
}

fn route_subject(route: &str) -> String {
    format!("route {route}")
}

fn kind_subject(kind: EventKind) -> String {
    format!("kind {kind}")
}

impl Activity {
    /// Notes that an event of `kind` arrived at `now_ms` and matched `routes`.
    pub fn matched(&self, kind: EventKind, routes: &[String], now_ms: u64) {
        let mut times = self.times.lock().unwrap_or_else(|p| p.into_inner());
        let subjects = routes
            .iter()
            .map(|r| route_subject(r))
            .chain(std::iter::once(kind_subject(kind)));
        for subject in subjects {
            let q = times.entry(subject).or_default();
            if q.len() as u64 >= MAX_AT_LEAST {
                q.pop_front();
            }
            q.push_back(now_ms);
        }
    }

    /// Matches of `subject` since `since_ms`.
    fn count_since(&self, subject: &str, since_ms: u64) -> u64 {
        let times = self.times.lock().unwrap_or_else(|p| p.into_inner());
        times.get(subject).map_or(0, |q| {
            q.iter().rev().take_while(|&&t| t >= since_ms).count() as u64
        })
    }
}

/// A change of a subject's traffic to alert about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficChange {
    /// `route NAME` or `kind lead`.
    pub subject: String,
    /// Fell silent (true) or came back (false).
    pub silent: bool,
    /// Events in the last window.
    pub count: u64,
    /// What was expected.
    pub expect: Expectation,
}

/// What the watcher remembers per subject.
#[derive(Debug, Clone, Copy)]
struct Watched {
    since_ms: u64,
    silent: bool,
}

/// Which subjects are silent; owned by the alert task.
#[derive(Debug, Default)]
pub struct Watch {
    subjects: HashMap<String, Watched>,
}

impl Watch {
    /// Compares every expectation of `config` with `activity` at `now_ms`.
    pub fn check(
        &mut self,
        config: &Config,
        activity: &Activity,
        now_ms: u64,
    ) -> Vec<TrafficChange> {
        let expectations: Vec<(String, Expectation)> = config
            .rules
            .routes()
            .iter()
            .filter_map(|r| Some((route_subject(&r.name), r.expect?)))
            .chain(config.expect.iter().map(|(k, e)| (kind_subject(*k), *e)))
            .collect();
        // Subjects no longer expected are forgotten (and start afresh if they return).
        self.subjects
            .retain(|s, _| expectations.iter().any(|(name, _)| name == s));
        let mut changes = Vec::new();
        for (subject, expect) in expectations {
            let watched = self.subjects.entry(subject.clone()).or_insert(Watched {
                since_ms: now_ms,
                silent: false,
            });
            let per = u64::try_from(expect.per.as_millis()).unwrap_or(u64::MAX);
            if now_ms.saturating_sub(watched.since_ms) < per && !watched.silent {
                continue;
            }
            let count = activity.count_since(&subject, now_ms.saturating_sub(per));
            let silent = count < expect.at_least.min(MAX_AT_LEAST);
            if silent != watched.silent {
                watched.silent = silent;
                changes.push(TrafficChange {
                    subject,
                    silent,
                    count,
                    expect,
                });
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Env};
    use std::path::Path;

    struct NoEnv;
    impl Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    fn config() -> Config {
        Config::from_yaml(
            r#"
keys: ["k-secret-1"]
destinations:
  crm: { url: "http://127.0.0.1:9/x" }
routes:
  - name: leads
    event: lead
    to: [crm]
    expect: { at_least: 2, per: 10s }
  - name: views
    event: view
    to: [crm]
expect:
  view: { per: 5s }
"#,
            Path::new("t.yaml"),
            &NoEnv,
        )
        .unwrap()
    }

    #[test]
    fn silent_once_after_a_whole_window_then_resumed_once() {
        let c = config();
        let a = Activity::default();
        let mut w = Watch::default();
        assert!(w.check(&c, &a, 0).is_empty());
        // One lead in the first window: fewer than two, but the window has not passed.
        a.matched(EventKind::Lead, &["leads".into()], 1_000);
        assert!(w.check(&c, &a, 4_000).is_empty());
        let changes = w.check(&c, &a, 10_000);
        let subjects: Vec<(&str, bool, u64)> = changes
            .iter()
            .map(|c| (c.subject.as_str(), c.silent, c.count))
            .collect();
        assert_eq!(subjects, [("route leads", true, 1), ("kind view", true, 0)]);
        assert!(w.check(&c, &a, 11_000).is_empty(), "said once");
        a.matched(EventKind::Lead, &["leads".into()], 11_500);
        a.matched(EventKind::Lead, &["leads".into()], 11_600);
        let back = w.check(&c, &a, 12_000);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].subject, "route leads");
        assert!(!back[0].silent);
        assert_eq!(back[0].count, 2, "the lead at 1 s is outside the window");
        assert!(w.check(&c, &a, 12_500).is_empty());
    }
}
