//! The condition language of a route's `match:`, compiled once at load and evaluated
//! against each payload without allocation.
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
use serde_yaml::Value as Yaml;

use crate::config::Ctx;

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

const OPERATORS: &[&str] = &[
    "eq",
    "ne",
    "in",
    "not_in",
    "gt",
    "gte",
    "lt",
    "lte",
    "regex",
    "starts_with",
    "ends_with",
    "contains",
    "exists",
    "ignore_case",
];

impl Condition {
    /// Compiles a `match:` mapping found at `path`; problems go to `ctx`.
    pub fn compile_map(map: &serde_yaml::Mapping, path: &str, ctx: &mut Ctx<'_>) -> Condition {
        let mut all = Vec::with_capacity(map.len());
        for (key, value) in map {
            let Some(key) = key.as_str() else {
                ctx.problems.push(path, "condition keys must be strings");
                continue;
            };
            let kpath = format!("{path}.{key}");
            match key {
                "any" | "all" => {
                    let Some(items) = value.as_sequence() else {
                        ctx.problems
                            .push(&kpath, format!("{key} expects a list of condition maps"));
                        continue;
                    };
                    let mut children = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        let ipath = format!("{kpath}.{i}");
                        match item.as_mapping() {
                            Some(m) => children
                                .push(Condition::compile_map(m, &ipath, ctx).unwrap_single()),
                            None => ctx.problems.push(&ipath, "expected a condition map"),
                        }
                    }
                    // An empty list is a problem of its own, whatever else the file has wrong
                    // (a list of invalid maps has had each map reported already).
                    if items.is_empty() {
                        ctx.problems
                            .push(&kpath, format!("{key} needs at least one condition map"));
                    }
                    all.push(if key == "any" {
                        Condition::Any(children)
                    } else {
                        Condition::All(children)
                    });
                }
                "not" => match value.as_mapping() {
                    Some(m) => all.push(Condition::Not(Box::new(
                        Condition::compile_map(m, &kpath, ctx).unwrap_single(),
                    ))),
                    None => ctx.problems.push(&kpath, "not expects a condition map"),
                },
                field => {
                    if let Some(test) = FieldTest::compile(field, value, &kpath, ctx) {
                        all.push(Condition::Field(test));
                    }
                }
            }
        }
        Condition::All(all)
    }

    /// A map of one condition is that condition: nested `any:`/`all:`/`not:` items are
    /// usually one-key maps, and unwrapping them saves a level of evaluation per item.
    fn unwrap_single(self) -> Condition {
        match self {
            Condition::All(mut v) if v.len() == 1 => v.pop().unwrap_or(Condition::All(Vec::new())),
            other => other,
        }
    }

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

fn scalar_of(value: &Yaml) -> Option<Scalar> {
    match value {
        Yaml::String(s) => Some(Scalar::Str(s.clone(), parse_number(s))),
        Yaml::Number(n) => n.as_f64().map(Scalar::Num),
        Yaml::Bool(b) => Some(Scalar::Bool(*b)),
        _ => None,
    }
}

fn number_of(value: &Yaml) -> Option<f64> {
    match value {
        Yaml::Number(n) => n.as_f64(),
        Yaml::String(s) => parse_number(s),
        _ => None,
    }
}

impl FieldTest {
    fn compile(field: &str, value: &Yaml, path: &str, ctx: &mut Ctx<'_>) -> Option<FieldTest> {
        if field.is_empty() || field.split('.').any(str::is_empty) {
            ctx.problems.push(
                path,
                "a field name must not be empty or have empty dotted parts",
            );
            return None;
        }
        let ops = match value {
            Yaml::Mapping(m) => compile_ops(m, path, ctx)?,
            Yaml::Sequence(items) => vec![Op::In(scalars(items, path, ctx)?)],
            Yaml::Null => {
                ctx.problems.push(
                    path,
                    "a null value matches nothing; use `{ exists: false }` for a missing field",
                );
                return None;
            }
            other => match scalar_of(other) {
                Some(s) => vec![Op::Eq(s)],
                None => {
                    ctx.problems
                        .push(path, "expected a value, a list or a map of operators");
                    return None;
                }
            },
        };
        let secret = ctx
            .secrets
            .iter()
            .any(|s| s == path || s.starts_with(&format!("{path}.")));
        Some(FieldTest {
            path: field.to_string(),
            segments: field.split('.').map(str::to_string).collect(),
            ops,
            secret,
            slot: None,
        })
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

fn scalars(items: &[Yaml], path: &str, ctx: &mut Ctx<'_>) -> Option<Vec<Scalar>> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match scalar_of(item) {
            Some(s) => out.push(s),
            None => {
                ctx.problems.push(
                    &format!("{path}.{i}"),
                    "expected a string, number or boolean",
                );
                return None;
            }
        }
    }
    if out.is_empty() {
        ctx.problems.push(path, "an empty list matches nothing");
        return None;
    }
    Some(out)
}

fn compile_ops(map: &serde_yaml::Mapping, path: &str, ctx: &mut Ctx<'_>) -> Option<Vec<Op>> {
    let ignore_case = match map.get("ignore_case") {
        None => false,
        Some(Yaml::Bool(b)) => *b,
        Some(_) => {
            ctx.problems
                .push(&format!("{path}.ignore_case"), "expected true or false");
            false
        }
    };
    let mut ops = Vec::new();
    let mut ok = true;
    for (key, value) in map {
        let name = key.as_str().unwrap_or("?");
        let opath = format!("{path}.{name}");
        let shown = ctx.show(&opath, value);
        let text = |ctx: &mut Ctx<'_>| match value {
            Yaml::String(s) => Some(Text {
                value: if ignore_case {
                    s.to_lowercase()
                } else {
                    s.clone()
                },
                ignore_case,
            }),
            Yaml::Number(n) => Some(Text {
                value: n.to_string(),
                ignore_case,
            }),
            _ => {
                ctx.problems
                    .push(&opath, format!("expected a string, found {shown}"));
                None
            }
        };
        let number = |ctx: &mut Ctx<'_>| {
            let n = number_of(value);
            if n.is_none() {
                ctx.problems
                    .push(&opath, format!("expected a number, found {shown}"));
            }
            n
        };
        let op = match name {
            "ignore_case" => continue,
            "eq" | "ne" => match scalar_of(value) {
                Some(s) if name == "eq" => Some(Op::Eq(s)),
                Some(s) => Some(Op::Ne(s)),
                None => {
                    ctx.problems.push(
                        &opath,
                        format!("expected a string, number or boolean, found {shown}"),
                    );
                    None
                }
            },
            "in" | "not_in" => match value.as_sequence() {
                Some(items) => scalars(items, &opath, ctx).map(|s| {
                    if name == "in" {
                        Op::In(s)
                    } else {
                        Op::NotIn(s)
                    }
                }),
                None => {
                    ctx.problems
                        .push(&opath, format!("expected a list, found {shown}"));
                    None
                }
            },
            "gt" => number(ctx).map(Op::Gt),
            "gte" => number(ctx).map(Op::Gte),
            "lt" => number(ctx).map(Op::Lt),
            "lte" => number(ctx).map(Op::Lte),
            "regex" => match value.as_str() {
                Some(pattern) => match regex::RegexBuilder::new(pattern)
                    .case_insensitive(ignore_case)
                    .size_limit(1 << 20)
                    .build()
                {
                    Ok(re) => Some(Op::Regex(re)),
                    Err(e) => {
                        let detail = crate::lint::regex_error(&e, !ctx.secrets.contains(&opath));
                        ctx.problems
                            .push(&opath, format!("invalid regex: {detail}"));
                        None
                    }
                },
                None => {
                    ctx.problems
                        .push(&opath, format!("expected a regex string, found {shown}"));
                    None
                }
            },
            "starts_with" => text(ctx).map(Op::StartsWith),
            "ends_with" => text(ctx).map(Op::EndsWith),
            "contains" => text(ctx).map(Op::Contains),
            "exists" => match value {
                Yaml::Bool(b) => Some(Op::Exists(*b)),
                _ => {
                    ctx.problems
                        .push(&opath, format!("expected true or false, found {shown}"));
                    None
                }
            },
            other => {
                let hint = crate::lint::did_you_mean(other, OPERATORS.iter().copied())
                    .map(|s| format!(" (did you mean {s:?}?)"))
                    .unwrap_or_default();
                ctx.problems.push(
                    &opath,
                    format!(
                        "unknown operator {other:?}{hint}; expected one of {}",
                        OPERATORS.join(", ")
                    ),
                );
                None
            }
        };
        match op {
            Some(op) => ops.push(op),
            None => ok = false,
        }
    }
    if ops.is_empty() && ok {
        ctx.problems
            .push(path, "an operator map needs at least one operator");
        return None;
    }
    ok.then_some(ops)
}

/// A payload value as a number, if it is one or is a numeric string.
fn as_number(value: &Json) -> Option<f64> {
    match value {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => parse_number(s),
        _ => None,
    }
}

fn parse_number(s: &str) -> Option<f64> {
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
