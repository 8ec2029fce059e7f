//! Compiled routing rules: which routes an event matches and which destinations receive it.
//! They are compiled from `routes.yaml` by [`crate::config`]; nothing here reads YAML.
//!
//! Pure: no I/O, no clock. Every matching route fires, in file order, until a matching route
//! with `stop: true`; a destination named by several matching routes gets the event once,
//! remembering every route that named it.

pub mod condition;
pub mod explain;
mod index;

use serde_json::Value as Json;

pub use condition::Condition;
use condition::Lookup;
use index::RouteIndex;

use crate::event::EventKind;

/// `expect:`: at least `at_least` events every `per`, else a `route_silent` (or, on a
/// kind, `kind_silent`) alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expectation {
    /// Fewest events expected in a window.
    pub at_least: u64,
    /// The window.
    pub per: std::time::Duration,
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Unique name, used in logs, responses and job records.
    pub name: String,
    /// The kinds this route applies to; `None` means every kind.
    pub events: Option<Vec<EventKind>>,
    /// The `match:` conditions (an `All`; empty means always).
    pub condition: Condition,
    /// Destination names, in the order written.
    pub to: Vec<String>,
    /// When this route matches, later routes are not evaluated.
    pub stop: bool,
    /// `expect:`: fewer matches than this in a window is a `route_silent` alert.
    pub expect: Option<Expectation>,
}

impl Route {
    /// Does this route apply to `kind` and hold for `payload`?
    pub fn matches(&self, kind: EventKind, payload: &Json) -> bool {
        self.events.as_ref().is_none_or(|k| k.contains(&kind)) && self.condition.holds(payload)
    }
}

/// All routes of a config, in file order.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    routes: Vec<Route>,
    /// Number of distinct field paths, the size of a [`Lookup`]'s cache.
    slots: usize,
    /// Skips routes that cannot match (wrong kind, guard value absent).
    index: RouteIndex,
}

/// One destination an event goes to, with the routes that sent it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Destination name.
    pub destination: String,
    /// Matching routes that named it, in file order.
    pub routes: Vec<String>,
}

/// What routing decided for one event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Matching routes, in file order.
    pub routes: Vec<String>,
    /// One entry per distinct destination, in first-named order.
    pub deliveries: Vec<Delivery>,
}

impl RuleSet {
    /// The routes, in file order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Decides where an event of `kind` with `payload` goes.
    pub fn decide(&self, kind: EventKind, payload: &Json) -> Decision {
        let mut decision = Decision::default();
        let mut lookup = Lookup::new(payload, self.slots);
        for i in self.index.candidates(kind, &mut lookup).iter() {
            let Some(route) = self.routes.get(i) else {
                break;
            };
            if !route.condition.eval(&mut lookup) {
                continue;
            }
            decision.routes.push(route.name.clone());
            for dest in &route.to {
                match decision
                    .deliveries
                    .iter_mut()
                    .find(|d| &d.destination == dest)
                {
                    Some(d) => d.routes.push(route.name.clone()),
                    None => decision.deliveries.push(Delivery {
                        destination: dest.clone(),
                        routes: vec![route.name.clone()],
                    }),
                }
            }
            if route.stop {
                break;
            }
        }
        decision
    }

    /// The rule set of `routes`, in file order: every field path gets its cache slot and
    /// the routes their index.
    pub fn new(mut routes: Vec<Route>) -> RuleSet {
        let mut slots = std::collections::HashMap::new();
        for route in &mut routes {
            route.condition.assign_slots(&mut slots);
        }
        RuleSet {
            index: RouteIndex::build(&routes),
            routes,
            slots: slots.len(),
        }
    }
}
