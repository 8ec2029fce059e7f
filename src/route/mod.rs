//! Compiled routing rules: which routes an event matches and which destinations receive it.
//!
//! Pure: no I/O, no clock. Every matching route fires, in file order, until a matching route
//! with `stop: true`; a destination named by several matching routes gets the event once,
//! remembering every route that named it.

pub mod condition;
pub mod explain;
mod index;

#[cfg(test)]
mod condition_tests;

use std::collections::BTreeSet;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

pub use condition::Condition;
use condition::Lookup;
use index::RouteIndex;

use crate::config::{deserialize_at, validate_expect, Ctx, Expectation, OneOrMany, RawRoute};
use crate::event::EventKind;

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

    /// Compiles `routes:`; `destinations` are the names `to:` may use.
    pub fn compile(
        value: Option<&Yaml>,
        destinations: &BTreeSet<String>,
        ctx: &mut Ctx<'_>,
    ) -> RuleSet {
        let mut routes = Vec::new();
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return RuleSet::default();
        };
        let Some(items) = value.as_sequence() else {
            ctx.problems.push("routes", "expected a list of routes");
            return RuleSet::default();
        };
        let mut seen = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("routes.{i}");
            let Some(raw) = deserialize_at::<RawRoute>(item, &path, ctx.problems) else {
                continue;
            };
            if let Some(route) = compile_route(raw, &path, destinations, &mut seen, ctx) {
                routes.push(route);
            }
        }
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

fn compile_route(
    raw: RawRoute,
    path: &str,
    destinations: &BTreeSet<String>,
    seen: &mut BTreeSet<String>,
    ctx: &mut Ctx<'_>,
) -> Option<Route> {
    let mut ok = true;
    if raw.name.trim().is_empty() {
        ctx.problems
            .push(&format!("{path}.name"), "a route needs a name");
        ok = false;
    } else if !seen.insert(raw.name.clone()) {
        ctx.problems.push(
            &format!("{path}.name"),
            format!("duplicate route name {:?}", raw.name),
        );
        ok = false;
    }
    let events = match raw.event {
        None => None,
        Some(one_or_many) => {
            let names = match one_or_many {
                OneOrMany::One(s) => vec![s],
                OneOrMany::Many(v) => v,
            };
            let mut kinds = Vec::new();
            for (i, n) in names.iter().enumerate() {
                match n.parse::<EventKind>() {
                    Ok(k) => kinds.push(k),
                    Err(e) => {
                        let p = if names.len() == 1 {
                            format!("{path}.event")
                        } else {
                            format!("{path}.event.{i}")
                        };
                        ctx.problems.push(&p, e.to_string());
                        ok = false;
                    }
                }
            }
            Some(kinds)
        }
    };
    if raw.to.is_empty() {
        ctx.problems.push(
            &format!("{path}.to"),
            "a route needs at least one destination",
        );
        ok = false;
    }
    for (i, dest) in raw.to.iter().enumerate() {
        if !destinations.contains(dest) {
            let known: Vec<&str> = destinations.iter().map(String::as_str).collect();
            ctx.problems.push(
                &format!("{path}.to.{i}"),
                format!(
                    "unknown destination {dest:?} (defined: {})",
                    known.join(", ")
                ),
            );
            ok = false;
        }
    }
    let condition = match &raw.conditions {
        Some(map) => Condition::compile_map(map, &format!("{path}.match"), ctx),
        None => Condition::All(Vec::new()),
    };
    let expect = raw.expect.as_ref().and_then(|e| {
        let expect = validate_expect(e, &format!("{path}.expect"), ctx.problems);
        ok &= expect.is_some();
        expect
    });
    ok.then_some(Route {
        name: raw.name,
        events,
        condition,
        to: raw.to,
        stop: raw.stop,
        expect,
    })
}
