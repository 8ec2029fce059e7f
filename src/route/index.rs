//! A pre-filter that lets `decide` skip most routes without evaluating them.
//!
//! Operators write many routes of the same shape: one per video token, per campaign tag, per
//! plan. Each such route has a top-level equality (or `in` list) on a string field, and at
//! most one value of that field can satisfy it. The index groups routes by that field and
//! value, so for an event only the routes whose value matches (and the routes without such
//! a guard) are evaluated; with a kind filter applied the same way, a thousand routes cost
//! a handful of bit operations plus the few real candidates. Evaluation order, `stop`, and
//! the semantics of every condition are unchanged: a candidate is still evaluated in full.

use std::collections::HashMap;

use serde_json::Value as Json;

use super::condition::{Condition, FieldTest, Lookup, Op, Scalar};
use super::Route;
use crate::event::EventKind;

/// A fixed-size set of route indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Bits(Vec<u64>);

impl Bits {
    fn empty(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }

    /// Removes every member of `other`.
    fn remove_all(&mut self, other: &Bits) {
        self.0.iter_mut().zip(&other.0).for_each(|(a, b)| *a &= !b);
    }

    /// Removes every member of `guarded` that is not in `keep`.
    fn keep_only(&mut self, guarded: &Bits, keep: &Bits) {
        for ((a, g), k) in self.0.iter_mut().zip(&guarded.0).zip(&keep.0) {
            *a &= !g | k;
        }
    }

    /// The members, ascending.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(w * 64 + i)
            })
        })
    }
}

/// Routes guarded by a string equality on one field.
#[derive(Debug, Clone)]
struct Guard {
    /// The field (its lookup slot is shared with the routes' own tests).
    field: FieldTest,
    /// Every route guarded on this field.
    guarded: Bits,
    /// For each value, the guarded routes it can satisfy.
    by_value: HashMap<String, Bits>,
    /// Empty set, to keep only unguarded routes when the value matches no bucket.
    none: Bits,
}

/// The pre-filter of a rule set.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteIndex {
    /// Routes that may match each kind; hookrouter's own alerts (the last) match none.
    by_kind: [Bits; 4],
    guards: Vec<Guard>,
}

fn kind_index(kind: EventKind) -> usize {
    match kind {
        EventKind::View => 0,
        EventKind::Interaction => 1,
        EventKind::Lead => 2,
        EventKind::Alert => 3,
    }
}

/// The top-level string equality of a route, if it has one: the field and the values that
/// can satisfy it. Numeric-looking literals are left out (`"95"` also equals the number 95).
fn guard_of(route: &Route) -> Option<(&FieldTest, Vec<&str>)> {
    let Condition::All(children) = &route.condition else {
        return None;
    };
    children.iter().find_map(|c| {
        let Condition::Field(test) = c else {
            return None;
        };
        test.ops.iter().find_map(|op| {
            let values: Vec<&str> = match op {
                Op::Eq(Scalar::Str(s, None)) => vec![s.as_str()],
                Op::In(list) => list
                    .iter()
                    .map(|s| match s {
                        Scalar::Str(s, None) => Some(s.as_str()),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()?,
                _ => return None,
            };
            Some((test, values))
        })
    })
}

impl RouteIndex {
    /// Indexes `routes` (after their field slots are assigned).
    pub(crate) fn build(routes: &[Route]) -> RouteIndex {
        let n = routes.len();
        let mut by_kind = [(); 4].map(|()| Bits::empty(n));
        let mut guards: Vec<Guard> = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            for kind in EventKind::ALL {
                if route.events.as_ref().is_none_or(|k| k.contains(&kind)) {
                    by_kind[kind_index(kind)].set(i);
                }
            }
            let Some((field, values)) = guard_of(route) else {
                continue;
            };
            let at = match guards.iter().position(|g| g.field.path == field.path) {
                Some(at) => at,
                None => {
                    guards.push(Guard {
                        field: field.clone(),
                        guarded: Bits::empty(n),
                        by_value: HashMap::new(),
                        none: Bits::empty(n),
                    });
                    guards.len() - 1
                }
            };
            let guard = &mut guards[at];
            guard.guarded.set(i);
            for v in values {
                guard
                    .by_value
                    .entry(v.to_string())
                    .or_insert_with(|| Bits::empty(n))
                    .set(i);
            }
        }
        RouteIndex { by_kind, guards }
    }

    /// The routes worth evaluating for an event: those that apply to `kind` and whose guard,
    /// if any, the payload's value can satisfy.
    pub(crate) fn candidates(&self, kind: EventKind, lookup: &mut Lookup<'_>) -> Bits {
        let mut out = self.by_kind[kind_index(kind)].clone();
        for g in &self.guards {
            match lookup.value(&g.field) {
                Some(Json::String(s)) => {
                    out.keep_only(&g.guarded, g.by_value.get(s.as_str()).unwrap_or(&g.none))
                }
                // Equality on an array holds when any element equals: no pruning.
                Some(Json::Array(_)) => {}
                // Missing, null, numbers, booleans and objects equal no non-numeric string.
                _ => out.remove_all(&g.guarded),
            }
        }
        out
    }
}
