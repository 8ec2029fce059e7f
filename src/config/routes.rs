//! `routes:` compiled into a [`RuleSet`]: each route deserialized on its own (so one bad
//! route does not hide the others' problems), its names, kinds and destinations checked,
//! its `match:` compiled by [`super::condition`].

use std::collections::BTreeSet;

use serde_yaml::Value as Yaml;

use super::{condition, deserialize_at, validate_expect, Ctx, OneOrMany, RawRoute};
use crate::event::EventKind;
use crate::route::{Condition, Route, RuleSet};

/// Compiles `routes:`; `destinations` are the names `to:` may use.
pub(super) fn compile_rules(
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
    RuleSet::new(routes)
}

/// One route at `path`; `None` when anything about it is wrong (each problem reported).
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
    let events = raw.event.map(|one_or_many| {
        let (kinds, all_known) = event_kinds(one_or_many, path, ctx);
        ok &= all_known;
        kinds
    });
    ok &= destinations_known(&raw.to, path, destinations, ctx);
    let condition = match &raw.conditions {
        Some(map) => condition::compile_map(map, &format!("{path}.match"), ctx),
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

/// The kinds `event:` names, and whether every name was a kind (each unknown one
/// reported).
fn event_kinds(names: OneOrMany, path: &str, ctx: &mut Ctx<'_>) -> (Vec<EventKind>, bool) {
    let names = match names {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    let mut kinds = Vec::new();
    let mut ok = true;
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
    (kinds, ok)
}

/// Does `to:` name at least one destination, each of them defined?
fn destinations_known(
    to: &[String],
    path: &str,
    destinations: &BTreeSet<String>,
    ctx: &mut Ctx<'_>,
) -> bool {
    let mut ok = true;
    if to.is_empty() {
        ctx.problems.push(
            &format!("{path}.to"),
            "a route needs at least one destination",
        );
        ok = false;
    }
    for (i, dest) in to.iter().enumerate() {
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
    ok
}
