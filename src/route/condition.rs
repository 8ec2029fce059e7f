//! The condition language of a route's `match:`: the compiled tree (built from YAML once at
//! load by [`crate::config`]) and its evaluation against each payload without allocation.
//!
//! Semantics (documented in the README's rules reference):
//! - A scalar is equality, a list is any-of, a mapping is operators that must all hold.
//! - Numbers compare numerically even when either side is a numeric string (`"95" == 95`);
//!   numeric operators (`gt`, `gte`, `lt`, `lte`) fail on values that are not numbers.
//! - A missing or `null` field satisfies only `exists: false`; every other operator,
//!   including `ne` and `not_in`, fails on it.
//! - On an array field, equality, `in` and `contains` hold when any element equals.
//! - `any:` (OR), `all:` (AND) and `not:` nest to any depth; dotted keys reach into nested
//!   objects (`variables.plan`).

use serde_json::Value as Json;

/// A compiled condition tree.
#[derive(Debug, Clone)]
pub enum Condition {
    /// Every child holds (a `match:` map, or `all:`).
    All(Vec<Condition>),
    /// At least one child holds (`any:`).
    Any(Vec<Condition>),
    /// The child does not hold (`not:`).
    Not(Box<Condition>),
    /// Tests on one field.
    Field(FieldTest),
}

/// The tests on one (possibly dotted) field; all must hold.
#[derive(Debug, Clone)]
pub struct FieldTest {
    /// The field as written (`variables.plan`).
    pub path: String,
    segments: Vec<String>,
    /// An operand came from `${VAR}`: never shown in `check` or `--explain` output.
    pub secret: bool,
    /// Index of this path in a [`Lookup`]'s cache, assigned when a rule set is built.
    slot: Option<usize>,
    /// The operators, all of which must hold.
    pub ops: Vec<Op>,
}

/// A literal in a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// A string literal, with its value as a number when it looks like one (`"95"`), parsed
    /// once at load so matching never parses literals.
    Str(String, Option<f64>),
    /// A number.
    Num(f64),
    /// `true` or `false`.
    Bool(bool),
}

impl Scalar {
    /// A string literal, with its value as a number when it looks like one, parsed once
    /// here so matching never parses literals.
    pub fn text(s: &str) -> Scalar {
        Scalar::Str(s.to_string(), parse_number(s))
    }
}

/// A string operand with its case rule.
#[derive(Debug, Clone)]
pub struct Text {
    /// The operand; lowercased when `ignore_case`.
    pub value: String,
    /// Compare case-insensitively.
    pub ignore_case: bool,
}

/// One operator on a field.
#[derive(Debug, Clone)]
pub enum Op {
    /// Equal (numerically when both sides are numbers).
    Eq(Scalar),
    /// Present and not equal.
    Ne(Scalar),
    /// Equal to one of these.
    In(Vec<Scalar>),
    /// Present and equal to none of these.
    NotIn(Vec<Scalar>),
    /// Greater than.
    Gt(f64),
    /// Greater than or equal.
    Gte(f64),
    /// Less than.
    Lt(f64),
    /// Less than or equal.
    Lte(f64),
    /// A regex search on the string value.
    Regex(regex::Regex),
    /// String prefix.
    StartsWith(Text),
    /// String suffix.
    EndsWith(Text),
    /// Substring, or on an array, any element equal.
    Contains(Text),
    /// Present and not null (`true`), or missing or null (`false`).
    Exists(bool),
}

impl Condition {
    /// Does the condition hold for `payload`?
    pub fn holds(&self, payload: &Json) -> bool {
        self.eval(&mut Lookup::new(payload, 0))
    }

    /// Does the condition hold, reading field values through `lookup`'s cache?
    pub fn eval(&self, lookup: &mut Lookup<'_>) -> bool {
        match self {
            Condition::All(c) => c.iter().all(|c| c.eval(lookup)),
            Condition::Any(c) => c.iter().any(|c| c.eval(lookup)),
            Condition::Not(c) => !c.eval(lookup),
            Condition::Field(t) => {
                let value = lookup.get(t).filter(|v| !v.is_null());
                t.ops.iter().all(|op| op.holds(value))
            }
        }
    }

    /// Gives every field path a cache slot, shared by equal paths across all routes, so a
    /// payload field is looked up once per event however many routes test it.
    pub fn assign_slots(&mut self, slots: &mut std::collections::HashMap<String, usize>) {
        match self {
            Condition::All(c) | Condition::Any(c) => {
                c.iter_mut().for_each(|c| c.assign_slots(slots))
            }
            Condition::Not(c) => c.assign_slots(slots),
            Condition::Field(t) => {
                let next = slots.len();
                t.slot = Some(*slots.entry(t.path.clone()).or_insert(next));
            }
        }
    }
}

/// The field values of one payload, each resolved at most once per event.
pub struct Lookup<'a> {
    payload: &'a Json,
    cache: Vec<Option<Option<&'a Json>>>,
}

impl<'a> Lookup<'a> {
    /// A lookup over `payload` with room for `slots` cached paths.
    pub fn new(payload: &'a Json, slots: usize) -> Self {
        Lookup {
            payload,
            cache: vec![None; slots],
        }
    }

    /// The value of `test`'s field (`None` when missing), from the cache when it has a slot.
    pub fn value(&mut self, test: &FieldTest) -> Option<&'a Json> {
        self.get(test)
    }

    fn get(&mut self, test: &FieldTest) -> Option<&'a Json> {
        let payload = self.payload;
        match test.slot.and_then(|i| self.cache.get_mut(i)) {
            Some(cached) => *cached.get_or_insert_with(|| test.lookup(payload)),
            None => test.lookup(payload),
        }
    }
}

impl FieldTest {
    /// The tests `ops` on `field` (dotted: `variables.plan`); `secret` when an operand came
    /// from `${VAR}`. Its cache slot is given when the rule set is built.
    pub fn new(field: &str, ops: Vec<Op>, secret: bool) -> FieldTest {
        FieldTest {
            path: field.to_string(),
            segments: field.split('.').map(str::to_string).collect(),
            ops,
            secret,
            slot: None,
        }
    }

    /// The field's value in `payload`, or `None` when missing.
    pub fn lookup<'a>(&self, payload: &'a Json) -> Option<&'a Json> {
        let mut cur = payload;
        for seg in &self.segments {
            cur = match cur {
                Json::Object(map) => map.get(seg)?,
                Json::Array(items) => items.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

/// A payload value as a number, if it is one or is a numeric string.
fn as_number(value: &Json) -> Option<f64> {
    match value {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => parse_number(s),
        _ => None,
    }
}

/// A number written as text (`"95"`, `" 2.5 "`), finite only.
pub fn parse_number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Equality between a payload value and a literal; arrays hold if any element is equal.
/// Numbers compare numerically when both sides are numbers or numeric strings.
fn equals(value: &Json, lit: &Scalar) -> bool {
    match (value, lit) {
        (Json::Array(items), _) => items.iter().any(|v| !v.is_array() && equals(v, lit)),
        (Json::String(a), Scalar::Str(b, None)) => a == b,
        (Json::String(a), Scalar::Str(b, Some(n))) => a == b || parse_number(a) == Some(*n),
        (Json::String(a), Scalar::Num(n)) => parse_number(a) == Some(*n),
        (Json::Number(a), Scalar::Num(n) | Scalar::Str(_, Some(n))) => a.as_f64() == Some(*n),
        (Json::Bool(a), Scalar::Bool(b)) => a == b,
        _ => false,
    }
}

/// A payload value as text for string operators (strings and numbers only).
fn as_text(value: &Json) -> Option<std::borrow::Cow<'_, str>> {
    match value {
        Json::String(s) => Some(std::borrow::Cow::Borrowed(s)),
        Json::Number(n) => Some(std::borrow::Cow::Owned(n.to_string())),
        _ => None,
    }
}

fn text_test(value: &Json, t: &Text, test: impl Fn(&str, &str) -> bool) -> bool {
    let Some(s) = as_text(value) else {
        return false;
    };
    if t.ignore_case {
        test(&s.to_lowercase(), &t.value)
    } else {
        test(&s, &t.value)
    }
}

impl Op {
    /// Does the operator hold for `value` (`None`: missing or null)?
    pub fn holds(&self, value: Option<&Json>) -> bool {
        let Some(value) = value else {
            return matches!(self, Op::Exists(false));
        };
        match self {
            Op::Exists(want) => *want,
            Op::Eq(lit) => equals(value, lit),
            Op::Ne(lit) => !equals(value, lit),
            Op::In(lits) => lits.iter().any(|l| equals(value, l)),
            Op::NotIn(lits) => !lits.iter().any(|l| equals(value, l)),
            Op::Gt(n) => as_number(value).is_some_and(|v| v > *n),
            Op::Gte(n) => as_number(value).is_some_and(|v| v >= *n),
            Op::Lt(n) => as_number(value).is_some_and(|v| v < *n),
            Op::Lte(n) => as_number(value).is_some_and(|v| v <= *n),
            Op::Regex(re) => as_text(value).is_some_and(|s| re.is_match(&s)),
            Op::StartsWith(t) => text_test(value, t, |s, p| s.starts_with(p)),
            Op::EndsWith(t) => text_test(value, t, |s, p| s.ends_with(p)),
            Op::Contains(t) => match value {
                Json::Array(items) => items.iter().any(|v| text_test(v, t, |s, p| s == p)),
                other => text_test(other, t, |s, p| s.contains(p)),
            },
        }
    }
}
